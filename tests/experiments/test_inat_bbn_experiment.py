"""The inat_bbn experiment in-process on a tiny embedded long-tailed set: BBN, plain, class-balanced, COT."""

import json

import pytest
import torch

from fgvc_lib.data.datasets import DataError
from fgvc_lib.experiments.inat_bbn import InatBBNExperiment, run

TINY = dict(
    synth_classes=6,
    synth_max_per_class=12,
    synth_imbalance=6.0,
    synth_val_per_class=2,
    synth_size=48,
    img_size=32,
    batch_size=8,
    epochs=2,
    lr_steps=[1],
    num_workers=0,
    cam_images=2,
    progress=False,
)


def test_bbn_run_records_alpha_groups_and_crops(tmp_path):
    result = run(dict(TINY, run_dir=str(tmp_path / "r"), epochs=3))
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    # 3 epochs, official rule: div = 3 -> alpha = 1, 1 - 1/9, 1 - 4/9
    assert [r["bbn_alpha"] for r in result.history] == pytest.approx([1.0, 8 / 9, 5 / 9])
    assert [r["lr"] for r in result.history] == pytest.approx([0.01, 0.001, 0.001])
    for key in ("top1_error", "top5_acc", "head_acc", "tail_acc", "crop_iou", "crop_top1_acc"):
        assert key in metrics, key
    assert 0.0 <= metrics["crop_iou"] <= 1.0
    assert metrics["top1_error"] == pytest.approx(1 - metrics["top1_acc"])
    for name in ("learning_curves", "bbn_alpha", "per_class_accuracy", "cam_crops"):
        assert (tmp_path / "r" / "figures" / f"{name}.png").is_file(), name


@pytest.mark.parametrize(
    "extra",
    [
        dict(method="plain"),
        dict(method="plain", sampler="balanced"),
        dict(method="cot"),
        dict(method="bbn", alpha="0"),
        dict(
            method="bbn",
            model="antialiased_resnet50",
            pretrained=False,
            img_size=64,
            batch_size=4,
            epochs=1,
            cam_crop=False,
        ),
    ],
    ids=["plain", "balanced", "cot", "alpha0", "antialiased"],
)
def test_methods_run(tmp_path, extra):
    result = run(dict(TINY, run_dir=str(tmp_path / "r"), **extra))
    assert result.metrics["epochs_run"] == extra.get("epochs", TINY["epochs"])
    if extra.get("alpha") == "0":
        assert all(r["bbn_alpha"] == 0.0 for r in result.history)


def test_cot_resume_restores_the_complement_optimizer(tmp_path):
    exp = InatBBNExperiment(dict(TINY, method="cot", run_dir=str(tmp_path / "r"), cam_crop=False))
    exp.trainer.epochs = 1
    exp.trainer.fit(exp.train_loader, exp.val_loader)
    state = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=False)
    assert state["strategy"]["complement_optimizer"]["state"]  # momentum buffers were saved
    resumed = InatBBNExperiment(
        dict(TINY, method="cot", run_dir=str(tmp_path / "r"), resume=True, cam_crop=False)
    )
    assert resumed.trainer.epoch == 1 and resumed.strategy.complement_optimizer.state_dict()["state"]


def test_bad_json_is_recorded(tmp_path):
    root = tmp_path / "inat"
    root.mkdir()
    (root / "train2019.json").write_text("{not json")
    (root / "val2019.json").write_text("{}")
    with pytest.raises(DataError, match="train2019.json"):
        InatBBNExperiment(dict(TINY, data_root=str(root), run_dir=str(tmp_path / "r")))
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "failed"
