"""The inat_bbn experiment in-process on a tiny embedded long-tailed set: BBN, plain, class-balanced, COT."""

import json
import math

import numpy as np
import pytest
import torch

from fgvc_lib.cam import box_iou
from fgvc_lib.crops import EvalGeometry, crop_resize
from fgvc_lib.data.datasets import DataError, load_rgb
from fgvc_lib.experiments.inat_bbn import InatBBNExperiment, run


def _check_saved_crops(run_dir, metrics, *, scale, source):
    """``cam_crops.json`` against the metrics: IoU and accuracies recomputed from the saved boxes and predictions;
    the CAM boxes mapped to original pixels by the stretch of the eval transform (``scale`` = original / input)."""
    saved = json.loads((run_dir / "cam_crops.json").read_text())
    assert saved["crop_source"] == source
    rows = saved["images"]
    assert rows and all(row["object_box"] is not None for row in rows)
    for row in rows:
        width, height = row["original_size"]
        x, y, w, h = row["input_box"]
        assert row["crop_box"] == pytest.approx([x * scale, y * scale, w * scale, h * scale], abs=1e-3)
        cx, cy, cw, ch = row["crop_box"]
        assert 0 <= cx and 0 <= cy and cx + cw <= width + 1e-3 and cy + ch <= height + 1e-3
        assert row["iou"] == pytest.approx(box_iou(row["crop_box"], row["object_box"]), abs=1e-6)
    assert metrics["crop_iou"] == pytest.approx(np.mean([row["iou"] for row in rows]), abs=1e-6)
    assert metrics["crop_top1_acc"] == pytest.approx(np.mean([r["crop_pred"] == r["label"] for r in rows]))
    assert metrics["uncropped_top1_acc_same_images"] == pytest.approx(
        np.mean([r["pred"] == r["label"] for r in rows])
    )
    return rows


def test_bbn_run_records_alpha_groups_and_crops(tmp_path, tiny_params):
    exp = InatBBNExperiment(tiny_params("inat_bbn", run_dir=str(tmp_path / "r"), epochs=3))
    result = exp.run()
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

    # CAM crops cut from the 48 px originals (tiny: synth_size 48, img_size 32): boxes x 1.5 in original pixels
    p = exp.params
    assert p.crop_source == "original" and exp.crop_geometry() == EvalGeometry.stretch(p.img_size)
    rows = _check_saved_crops(tmp_path / "r", metrics, scale=48 / 32, source="original")
    assert {tuple(row["original_size"]) for row in rows} == {(48, 48)}
    # the figure: the original file at full size, its CAM on the input, the crop cut from the file
    axes = result.figures["cam_crops"].axes
    original, cam, crop = (ax.images[0].get_array() for ax in axes[:3])
    assert original.shape[:2] == (48, 48) and cam.shape[:2] == crop.shape[:2] == (32, 32)
    file = load_rgb(exp.data_root / rows[0]["file"])
    expected = np.asarray(crop_resize(file, rows[0]["crop_box"], 32), dtype=np.float32) / 255
    assert np.abs(np.asarray(crop) - expected).max() < 2 / 255

    # the ablation on the same model and CAM boxes: crops of the resized inputs; the same boxes and IoU
    p.crop_source = "resized"
    resized = exp._cam_crops()
    assert resized["crop_iou"] == pytest.approx(metrics["crop_iou"])
    assert resized["uncropped_top1_acc_same_images"] == metrics["uncropped_top1_acc_same_images"]
    assert [r["crop_box"] for r in _check_saved_crops(tmp_path / "r", resized, scale=1.5, source="resized")] == [
        r["crop_box"] for r in rows
    ]


def test_cached_crops_map_through_the_cache(tmp_path, tiny_params):
    """cache at 40 px (a stretch of the 48 px files), eval Resize to 32: the boxes still map by 48 / 32."""
    params = tiny_params("inat_bbn", run_dir=str(tmp_path / "r"), epochs=1, cache=True, cache_size=40)
    metrics = run(params).metrics
    assert json.loads((tmp_path / "r" / "cam_crops.json").read_text())["geometry"] == repr(
        EvalGeometry.stretch(32, cache_size=40)
    )
    _check_saved_crops(tmp_path / "r", metrics, scale=48 / 32, source="original")


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
