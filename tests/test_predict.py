"""fgvc_lib.predict: checkpoint meta, Predictor.from_run reproducing the run's own evaluation, `fgvc predict`."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from fgvc_lib.cli import main
from fgvc_lib.engine import CheckpointError
from fgvc_lib.experiments.bird import BirdExperiment
from fgvc_lib.predict import Predictor, build_model, collect_images


def _bird_run(folder, tiny_params, **extra):
    exp = BirdExperiment(tiny_params("bird", run_dir=str(folder), **extra))
    exp.run()  # trains, then loads best.pt and evaluates it on the test split
    logits, _ = exp.trainer.predict(exp.test_loader)
    files = [exp.data.root / r.relpath for r in exp.test_records]
    return exp, logits, files


@pytest.fixture(scope="module")
def bird_run(tmp_path_factory, tiny_params):
    """A tiny bird run, its test-split eval logits (best checkpoint, as its metrics) and the test files."""
    return _bird_run(tmp_path_factory.mktemp("predict") / "bird", tiny_params, epochs=3)


def test_predictor_reproduces_the_runs_own_evaluation(bird_run):
    exp, logits, files = bird_run
    predictor = Predictor.from_run(exp.run_dir)  # best.pt, as the run's evaluation
    mine = predictor.logits(files)
    assert torch.allclose(mine, logits, atol=1e-5, rtol=0), float((mine - logits).abs().max())
    table = predictor.predict(files, topk=3)
    assert list(table["pred_index"]) == logits.argmax(1).tolist()
    assert list(table["class_1"]) == [exp.classes[i] for i in logits.argmax(1).tolist()]
    probs = torch.softmax(logits, 1)
    assert np.allclose(table["prob_1"], probs.max(1).values.numpy(), atol=1e-5)
    assert (table["prob_1"] >= table["prob_2"]).all() and (table["prob_2"] >= table["prob_3"]).all()


def test_checkpoints_carry_what_prediction_needs(bird_run):
    exp = bird_run[0]
    for name in ("best", "last"):
        meta = torch.load(exp.run_dir / "checkpoints" / f"{name}.pt", weights_only=False)["meta"]
        assert meta["notebook"] == "bird" and meta["task"] == "single"
        assert meta["model"] == {"builder": "model", "name": exp.params.model, "num_classes": 3, "options": {}}
        assert meta["classes"] == list(exp.classes) and meta["num_classes"] == 3
        pre = meta["preprocessing"]
        assert pre["input_size"] == [3, exp.params.img_size, exp.params.img_size]
        assert pre["mean"] == list(exp.mean) and pre["std"] == list(exp.std)  # lite0: 0.5, not ImageNet's
        assert pre["interpolation"] == "bilinear" and pre["crop_mode"] == "squash" and pre["crop_pct"] == 1.0
        assert pre["cache_size"] == 0 and pre["tensor_resize"] is False
        assert meta["cam"] == {"method": exp.params.cam_method, "layer": exp.params.cam_layer}


def test_checkpoint_without_meta_still_resumes_and_predicts(bird_run, tmp_path):
    exp, logits, files = bird_run
    old = tmp_path / "old"
    shutil.copytree(exp.run_dir, old)
    for name in ("best", "last"):  # as written before checkpoints had meta
        state = torch.load(old / "checkpoints" / f"{name}.pt", weights_only=False)
        del state["meta"]
        torch.save(state, old / "checkpoints" / f"{name}.pt")
    predictor = Predictor.from_run(old)
    assert predictor.meta["model"]["name"] == exp.params.model and predictor.classes == list(exp.classes)
    assert torch.allclose(predictor.logits(files), logits, atol=1e-5, rtol=0)
    exp.trainer.load_checkpoint(old / "checkpoints" / "last.pt")  # resume reads it as before
    assert exp.trainer.epoch == 3


def test_fgvc_predict_writes_the_csv_and_cam_overlays(bird_run, tmp_path, capsys):
    exp, logits, files = bird_run
    folder = tmp_path / "new images"
    (folder / "sub").mkdir(parents=True)
    for i, f in enumerate(files[:4]):  # a folder (searched recursively, sorted) of files the run evaluated
        shutil.copy(f, folder / ("sub" if i % 2 else "") / f"img{i}.jpg")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(exp.run_dir), str(folder), str(files[5]), "--topk", "2", "--cam",
                 "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", "pred_index", "class_1", "prob_1", "class_2", "prob_2"]
    expected = logits.argmax(1).tolist()
    assert list(table["pred_index"]) == [expected[i] for i in (0, 2, 1, 3, 5)]  # img0, img2, sub/img1, sub/img3
    cams = sorted((tmp_path / "preds_cams").glob("*.png"))
    assert len(cams) == 5 and cams[0].stat().st_size > 100
    assert "5 images" in capsys.readouterr().out


def test_cams_of_the_predicted_class(bird_run):
    exp, logits, files = bird_run
    predictor = Predictor.from_run(exp.run_dir)
    maps, xs = predictor.cams(files[:2])
    size = exp.params.img_size
    assert maps.shape == (2, size, size) and xs.shape == (2, 3, size, size)
    assert 0.0 <= maps.min() and maps.max() <= 1.0
    overlays = predictor.cam_overlays(files[:2], targets=[0, 1])
    assert overlays[0].shape == (size, size, 3) and overlays[0].dtype == np.uint8


def test_missing_checkpoint_and_inputs_are_clear_errors(bird_run, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Predictor.from_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="no image files"):
        collect_images([tmp_path])
    assert main(["predict", str(bird_run[0].run_dir), str(tmp_path / "nope.jpg")]) == 2
    assert "no such image" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [dict(cache=True, cache_size=40), dict(batch_augment=True)],
                         ids=["cache", "batch-augment"])
def test_cached_and_batched_eval_paths_are_reproduced(tmp_path, tiny_params, extra):
    exp, logits, files = _bird_run(tmp_path / "r", tiny_params, epochs=1, cam_images=0, **extra)
    predictor = Predictor.from_run(exp.run_dir)
    assert predictor.preprocessing.cache_size == extra.get("cache_size", exp.params.img_size)
    assert predictor.preprocessing.tensor_resize is bool(extra.get("batch_augment"))
    assert torch.allclose(predictor.logits(files), logits, atol=1e-5, rtol=0)


def test_multilabel_run_predicts_labels_above_its_thresholds(tmp_path, tiny_params):
    from fgvc_lib.experiments.multilabel import MultilabelExperiment

    exp = MultilabelExperiment(tiny_params("multilabel", run_dir=str(tmp_path / "ml"), epochs=1, cam_images=0))
    result = exp.run()  # multi-label evaluates the last epoch's model
    logits, _ = exp.trainer.predict(exp.val_loader)
    files = [exp.data.root / exp.data.files[i] for i in exp.val_idx]
    meta = torch.load(exp.run_dir / "checkpoints" / "last.pt", weights_only=False)["meta"]
    assert meta["task"] == "multilabel" and meta["thresholds"]["global"] == result.metrics["threshold_global"]
    predictor = Predictor.from_run(exp.run_dir, "last")
    assert torch.allclose(predictor.logits(files), logits, atol=1e-5, rtol=0)
    table = predictor.predict(files, threshold="per_label")
    probs = torch.sigmoid(logits).numpy()
    per_label = result.metrics["thresholds_per_label"]
    on = probs >= np.array([per_label[c] for c in exp.labels])[None, :]
    assert list(table["n_labels"]) == on.sum(1).tolist()
    assert table["labels"].fillna("").tolist() == [";".join(c for c, v in zip(exp.labels, row, strict=True) if v)
                                                   for row in on]
    assert np.allclose(table[[f"prob_{c}" for c in exp.labels]].to_numpy(), probs, atol=1e-5)


@pytest.mark.parametrize(
    "notebook, extra, builder",
    [("inat_bbn", dict(method="bbn", model="resnet18", pretrained=False), "bbn"),
     ("cifar100", dict(model="resnet18", pretrained=False), "model"),
     ("bird", dict(ensemble="logits", model="resnet18", model_b="tf_efficientnet_lite0", pretrained=False),
      "ensemble")],
    ids=["bbn", "cifar100-upsample", "bird-ensemble"],
)
def test_model_spec_rebuilds_every_notebooks_network(tmp_path, tiny_params, notebook, extra, builder):
    from fgvc_lib.catalog import get_notebook

    exp = get_notebook(notebook).experiment_class()(tiny_params(notebook, run_dir=str(tmp_path / "r"), **extra))
    spec = exp.trainer.checkpoint_meta["model"]
    assert spec["builder"] == builder
    if notebook == "cifar100":
        assert spec["options"] == {"upsample_size": exp.params.upsample_size}
    rebuilt = build_model(spec)
    rebuilt.load_state_dict(exp.model.state_dict())  # strict: same architecture, same keys and shapes
    x = torch.randn(2, 3, exp.params.img_size, exp.params.img_size)
    exp.model.eval()
    assert torch.allclose(rebuilt.eval()(x), exp.model(x), atol=1e-5)
