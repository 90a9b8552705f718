"""The speed options end to end: decode-once cache, batched augmentation, channels_last + bf16 autocast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fgvc_lib.experiments.bird import BirdExperiment
from fgvc_lib.experiments.cifar100 import Cifar100Experiment
from fgvc_lib.experiments.inat_bbn import InatBBNExperiment
from fgvc_lib.experiments.multilabel import MultilabelExperiment
from fgvc_lib.runs import outputs_root

COMMON = dict(epochs=2, num_workers=0, cam_images=2, progress=False, device="cpu")
CASES = {
    "bird": (BirdExperiment, dict(synth_classes=3, synth_per_class=8, synth_size=48, img_size=32, batch_size=4)),
    "cifar100": (Cifar100Experiment, dict(synth_train_per_class=2, synth_test_per_class=1, upsample_size=32,
                                          batch_size=32)),
    "inat_bbn": (InatBBNExperiment, dict(synth_classes=6, synth_max_per_class=12, synth_imbalance=6.0,
                                         synth_val_per_class=2, synth_size=48, img_size=32, batch_size=8,
                                         lr_steps=[1])),
    "multilabel": (MultilabelExperiment, dict(synth_images=120, synth_size=48, img_size=32, batch_size=16)),
}


def _run(name: str, tmp_path: Path, **extra):
    cls, params = CASES[name]
    run_dir = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
    exp = cls({**COMMON, **params, **extra, "run_dir": str(run_dir)})
    result = exp.run()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_run"] == 2
    cam = {"inat_bbn": "cam_crops", "multilabel": "cam_labels"}.get(name, "cam_grid")
    assert (run_dir / "figures" / f"{cam}.png").is_file()  # CAMs on cached pixels made model inputs
    return exp, result, metrics


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_augment_runs_every_notebook(name, tmp_path):
    exp, result, _ = _run(name, tmp_path, batch_augment=True)
    x, *_ = next(iter(exp.train_loader))
    assert x.dtype == torch.uint8  # the loader ships bytes; the trainer augments and normalises them
    train_tf, eval_tf = exp.batch_transforms()
    assert exp.trainer.batch_transform is train_tf and exp.trainer.eval_transform is eval_tf
    size = exp.params.img_size
    assert train_tf(x).shape == (x.shape[0], 3, size, size) and train_tf(x).dtype == torch.float32
    if hasattr(exp, "figure_augmentations"):  # the augmentation figure shows batch-augmented samples
        exp.figure_augmentations(n=4)
        assert (result.run_dir / "figures" / "augmentations.png").is_file()
    if name != "cifar100":  # cifar's arrays are decoded already; the files of the others are cached
        assert any((outputs_root() / "cache").glob(f"{name}-*"))


def test_cache_is_built_once_and_reused_by_the_next_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FGVC_OUTPUTS", str(tmp_path / "own-outputs"))  # no cache from earlier tests
    _run("bird", tmp_path, cache=True)
    built = capsys.readouterr().out
    assert "decoding" in built
    exp, _, _ = _run("bird", tmp_path, cache=True)
    again = capsys.readouterr().out
    assert "decoding" not in again and "reusing" in again
    x, _ = exp.train_set[0]
    assert x.dtype == torch.float32  # cache without batch_augment: the per-sample preset on cached pixels


def test_cache_gives_the_same_evaluation_as_decoding(tmp_path):
    """Eval transform = Resize((s, s)) of the decoded file; the cache stores exactly that, so the same model
    scores the same with and without the cache."""
    plain, _, _ = _run("bird", tmp_path, augment="none", epochs=2)
    cached, _, _ = _run("bird", tmp_path, augment="none", epochs=2, cache=True)
    a, ya = plain.trainer.predict(plain.val_loader)
    cached.model.load_state_dict(plain.model.state_dict())
    b, yb = cached.trainer.predict(cached.val_loader)
    assert torch.equal(ya, yb)
    torch.testing.assert_close(a, b, atol=2e-2, rtol=0)  # PIL resize of the file vs of the cached pixels


def test_channels_last_and_bf16_autocast_on_the_cpu(tmp_path):
    exp, _, metrics = _run("bird", tmp_path, amp="bf16", channels_last=True)
    assert exp.trainer.amp_dtype is torch.bfloat16
    convs = [m for m in exp.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs if c.weight.ndim == 4)
    assert 0.0 <= metrics["top1_acc"] <= 1.0


def test_fp16_needs_cuda(tmp_path):
    cls, params = CASES["bird"]
    with pytest.raises(ValueError, match="parameter 'amp': fp16 autocast needs a CUDA device"):
        cls({**COMMON, **params, "amp": "fp16", "run_dir": str(tmp_path / "fp16")})
