"""The inat_bbn experiment in-process on a tiny embedded long-tailed set: BBN, plain, class-balanced, COT."""

import json
import math

import numpy as np
import pytest
import torch

from fgvc_lib.data.datasets import DataError
from fgvc_lib.experiments.inat_bbn import InatBBNExperiment, run


def test_bbn_run_records_alpha_groups_and_crops(tmp_path, tiny_params):
    result = run(tiny_params("inat_bbn", run_dir=str(tmp_path / "r"), epochs=3))
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
def test_methods_run(tmp_path, extra, tiny_params):
    params = tiny_params("inat_bbn", run_dir=str(tmp_path / "r"), **extra)
    exp = InatBBNExperiment(params)
    result = exp.run()
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["status"] == "finished" and m["epochs_run"] == params["epochs"] == len(result.history)
    if extra.get("alpha") == "0":
        assert all(r["bbn_alpha"] == 0.0 for r in result.history)
    # counts are the split sizes of the embedded long-tailed set
    k, counts = params["synth_classes"], exp.train_counts
    assert m["num_classes"] == k and len(counts) == k and counts.max() == params["synth_max_per_class"]
    assert m["train_images"] == int(counts.sum()) == len(exp.train_set)
    assert m["val_images"] == k * params["synth_val_per_class"] == len(exp.val_set)
    # accuracies recomputed from the final model's validation predictions
    logits, targets = exp.trainer.predict(exp.val_loader)
    correct, y = (logits.argmax(1) == targets).numpy(), targets.numpy()
    per_class = np.array([correct[y == c].mean() for c in range(k)])
    assert m["top1_acc"] == pytest.approx(correct.mean()) and m["top1_error"] == pytest.approx(
        1 - correct.mean()
    )
    # head (n > many) / medium / tail (n < few) split the classes; on the balanced validation split their
    # class-weighted mean is the overall accuracy
    many, few = m["many_shot"], m["few_shot"]
    assert few <= many
    groups = {"head": counts > many, "medium": (counts >= few) & (counts <= many), "tail": counts < few}
    assert sum(int(members.sum()) for members in groups.values()) == k
    for name, members in groups.items():
        if members.any():
            assert m[f"{name}_acc"] == pytest.approx(per_class[members].mean()), name
        else:
            assert math.isnan(m[f"{name}_acc"]), name
    weighted = sum(m[f"{g}_acc"] * int(members.sum()) for g, members in groups.items() if members.any())
    assert weighted / k == pytest.approx(m["top1_acc"])
    figures = {p.stem for p in (tmp_path / "r" / "figures").glob("*.png")}
    assert {"learning_curves", "lr", "per_class_accuracy"} <= figures
    assert ("bbn_alpha" in figures) == (params["method"] == "bbn")
    assert ("cam_crops" in figures) == params.get("cam_crop", True)
    assert ("crop_top1_acc" in m) == params.get("cam_crop", True)


def test_cot_resume_restores_the_complement_optimizer(tmp_path, tiny_params):
    exp = InatBBNExperiment(
        tiny_params("inat_bbn", method="cot", run_dir=str(tmp_path / "r"), cam_crop=False)
    )
    exp.trainer.epochs = 1
    exp.trainer.fit(exp.train_loader, exp.val_loader)
    state = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=False)
    assert state["strategy"]["complement_optimizer"]["state"]  # momentum buffers were saved
    resumed = InatBBNExperiment(
        tiny_params("inat_bbn", method="cot", run_dir=str(tmp_path / "r"), resume=True, cam_crop=False)
    )
    assert resumed.trainer.epoch == 1 and resumed.strategy.complement_optimizer.state_dict()["state"]


def test_bad_json_is_recorded(tmp_path, tiny_params):
    root = tmp_path / "inat"
    root.mkdir()
    (root / "train2019.json").write_text("{not json")
    (root / "val2019.json").write_text("{}")
    with pytest.raises(DataError, match="train2019.json"):
        InatBBNExperiment(tiny_params("inat_bbn", data_root=str(root), run_dir=str(tmp_path / "r")))
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "failed"
