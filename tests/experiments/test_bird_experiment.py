"""The bird experiment end to end in-process, on a tiny embedded set (fast paths of every option)."""

import json

import pytest

from fgvc_lib.config import ParameterError
from fgvc_lib.data.datasets import DataError
from fgvc_lib.experiments.bird import BirdExperiment, embedded_bird_root, run
from fgvc_lib.models import PretrainedWeightsUnavailable


def test_embedded_data_is_generated_once_and_reused():
    root = embedded_bird_root(3, 6, 48)
    stamp = (root / "images.txt").stat().st_mtime_ns
    assert embedded_bird_root(3, 6, 48) == root
    assert (root / "images.txt").stat().st_mtime_ns == stamp
    assert len((root / "images.txt").read_text().splitlines()) == 18


def test_split_files_are_the_seeded_70_30_split(tmp_path, tiny_params):
    exp = BirdExperiment(tiny_params("bird", run_dir=str(tmp_path / "a"), synth_per_class=20))
    train = (tmp_path / "a" / "splits" / "train.txt").read_text().splitlines()
    val = (tmp_path / "a" / "splits" / "val.txt").read_text().splitlines()
    assert len(train) + len(val) == 30 and len(val) == 9  # 3 classes x 10 training images, 30 % held out
    assert all(line.startswith("images/") and line.split()[-1] in {"0", "1", "2"} for line in train + val)
    again = BirdExperiment(tiny_params("bird", run_dir=str(tmp_path / "b"), synth_per_class=20))
    assert (tmp_path / "b" / "splits" / "val.txt").read_text().splitlines() == val
    other = BirdExperiment(tiny_params("bird", run_dir=str(tmp_path / "c"), synth_per_class=20, seed=1))
    assert (tmp_path / "c" / "splits" / "val.txt").read_text().splitlines() != val
    assert exp.summary()["train / val / test images"] == (21, 9, 30)
    assert again.data.num_classes == 3 and other.data.format == "cub"


@pytest.mark.parametrize(
    "extra",
    [
        dict(optimizer="sam", label_smoothing=0.1, scheduler="cosine_restarts", t0=1),
        dict(ensemble="logits", model="resnet18", model_b="tf_efficientnet_lite0", pretrained=False),
        dict(
            ensemble="concat", model="tf_efficientnet_lite0", model_b="resnet18", pretrained=False, lr=0.002
        ),
        dict(loss="ohem", ohem_schedule="step", augment="bird"),
    ],
    ids=["sam", "ensemble-logits", "ensemble-concat", "ohem-step"],
)
def test_options_run_end_to_end(tmp_path, extra, tiny_params):
    result = run(tiny_params("bird", run_dir=str(tmp_path / "r"), **extra))
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_run"] == 2
    assert 0.0 <= metrics["top1_acc"] <= 1.0 and metrics["eval_split"] == "test"
    assert set(result.figures) >= {"learning_curves", "lr", "cam_grid"}
    assert (tmp_path / "r" / "figures" / "cam_grid.png").stat().st_size > 1000


def test_ohem_history_records_ratio(tmp_path, tiny_params):
    result = run(
        tiny_params("bird", epochs=4, run_dir=str(tmp_path / "r"), loss="ohem", ohem_schedule="cyclical")
    )
    assert [r["ohem_ratio"] for r in result.history] == [1.0, 0.5, 0.5, 0.25]
    assert (tmp_path / "r" / "figures" / "ohem_ratio.png").is_file()


def test_resume_continues_to_the_same_history(tmp_path, tiny_params):
    full = run(tiny_params("bird", epochs=3, run_dir=str(tmp_path / "full")))
    exp = BirdExperiment(tiny_params("bird", epochs=3, run_dir=str(tmp_path / "part")))
    exp.trainer.epochs = 2  # as if killed after two epochs
    exp.trainer.fit(exp.train_loader, exp.val_loader)
    resumed = run(tiny_params("bird", epochs=3, run_dir=str(tmp_path / "part"), resume=True))
    assert len(resumed.history) == 3
    for a, b in zip(full.history, resumed.history, strict=False):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_acc"] == pytest.approx(b["val_acc"])


def test_failure_is_recorded_and_names_the_path(tmp_path, tiny_params):
    with pytest.raises(DataError, match="does not exist"):
        BirdExperiment(tiny_params("bird", run_dir=str(tmp_path / "r"), data_root=str(tmp_path / "nowhere")))
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "nowhere" in metrics["error"]


def test_pretrained_weights_that_cannot_be_had_fail_clearly(tmp_path, tiny_params):
    with pytest.raises(PretrainedWeightsUnavailable, match="download: true"):
        BirdExperiment(tiny_params("bird", run_dir=str(tmp_path / "r"), model="resnet50", pretrained=True))


def test_batch_larger_than_training_split(tmp_path, tiny_params):
    with pytest.raises(ParameterError, match="'batch_size': 64 is larger than the training split"):
        BirdExperiment(tiny_params("bird", run_dir=str(tmp_path / "r"), batch_size=64))


def test_inconsistent_options_are_rejected(tmp_path, tiny_params):
    with pytest.raises(ParameterError, match="'ohem_schedule'.*needs loss: ohem"):
        BirdExperiment(tiny_params("bird", run_dir=str(tmp_path / "a"), ohem_schedule="step"))


def test_sam_with_ohem_cyclical_runs_through_fgvc_train(tmp_path, tiny_params):
    """SAM is a step, OHEM's keep ratio a callback: they compose (refused before for no technical reason)."""
    import json
    import subprocess
    import sys

    args = [sys.executable, "-m", "fgvc_lib.cli", "train", "bird", "-p", "optimizer", "sam", "-p", "loss", "ohem",
            "-p", "ohem_schedule", "cyclical", "-p", "run_dir", str(tmp_path / "run")]
    for key, value in tiny_params("bird", epochs=3).items():
        args += ["-p", key, json.dumps(value) if isinstance(value, (list, bool)) else str(value)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_run"] == 3
    assert metrics["params"]["optimizer"] == "sam" and metrics["params"]["ohem_schedule"] == "cyclical"
    lines = (tmp_path / "run" / "history.csv").read_text().splitlines()
    ratios = [float(line.split(",")[lines[0].split(",").index("ohem_ratio")]) for line in lines[1:]]
    from fgvc_lib.losses.ohem import create_ohem_schedule

    assert ratios == pytest.approx([create_ohem_schedule("cyclical", 3)(e) for e in range(3)])
