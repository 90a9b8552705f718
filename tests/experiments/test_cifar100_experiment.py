"""The cifar100 experiment in-process on a tiny embedded set: every loss, the schedule, ECE, CAM."""

import json

import pytest

from fgvc_lib.data.datasets import DataError
from fgvc_lib.data.synth.cifar import write_cifar100
from fgvc_lib.experiments.cifar100 import Cifar100Experiment, run


@pytest.mark.parametrize("loss", ["ce", "mc", "focal", "flsd53"])
def test_each_loss_runs_and_reports_calibration(tmp_path, loss, tiny_params):
    result = run(tiny_params("cifar100", loss=loss, run_dir=str(tmp_path / "r")))
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["params"]["loss"] == loss
    assert 0.0 <= metrics["ece"] <= 1.0 and metrics["num_classes"] == 100
    assert metrics["top1_error"] == pytest.approx(1 - metrics["top1_acc"])
    assert metrics["top5_acc"] >= metrics["top1_acc"]
    for name in ("learning_curves", "lr", "reliability", "cam_grid"):
        assert (tmp_path / "r" / "figures" / f"{name}.png").is_file(), name
    assert len(result.history) == 2


def test_exponential_decay_matches_formula(tmp_path, tiny_params):
    result = run(
        tiny_params(
            "cifar100",
            epochs=4,
            lr=1e-3,
            lr_decay=0.5,
            lr_period=2,
            cam_images=0,
            run_dir=str(tmp_path / "r"),
        )
    )
    assert [r["lr"] for r in result.history] == pytest.approx([1e-3 * 0.5 ** (e / 2) for e in range(4)])


def test_swin_behind_upsampling(tmp_path, tiny_params):
    result = run(
        tiny_params(
            "cifar100",
            model="swin_tiny_patch4_window7_224",
            pretrained=False,
            epochs=1,
            loss="flsd53",
            run_dir=str(tmp_path / "r"),
        )
    )
    assert result.metrics["epochs_run"] == 1 and (tmp_path / "r" / "figures" / "cam_grid.png").is_file()


def test_real_format_data_root(tmp_path, tiny_params):
    root = write_cifar100(tmp_path / "data", train_per_class=1, test_per_class=1, seed=3)
    exp = Cifar100Experiment(
        tiny_params("cifar100", data_root=str(root), batch_size=16, run_dir=str(tmp_path / "r"))
    )
    assert exp.summary()["train / test images"] == (100, 100)


def test_broken_data_root_is_recorded(tmp_path, tiny_params):
    root = write_cifar100(tmp_path / "data", train_per_class=1, test_per_class=1, seed=3)
    (root / "cifar-100-python" / "test").unlink()
    with pytest.raises(DataError, match="test"):
        Cifar100Experiment(tiny_params("cifar100", data_root=str(root), run_dir=str(tmp_path / "r")))
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "failed"
