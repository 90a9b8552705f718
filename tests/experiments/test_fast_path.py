"""The speed options end to end: decode-once cache, batched augmentation, channels_last + bf16 autocast."""

from __future__ import annotations

import json

import pytest
import torch

from fgvc_lib.experiments.bird import BirdExperiment
from fgvc_lib.experiments.cifar100 import Cifar100Experiment
from fgvc_lib.experiments.inat_bbn import InatBBNExperiment
from fgvc_lib.experiments.multilabel import MultilabelExperiment
from fgvc_lib.runs import outputs_root

EXPERIMENTS = {
    "bird": BirdExperiment,
    "cifar100": Cifar100Experiment,
    "inat_bbn": InatBBNExperiment,
    "multilabel": MultilabelExperiment,
}
EXTRA = {"bird": dict(synth_per_class=8)}  # on top of conftest's tiny parameters


@pytest.fixture
def build(tmp_path, tiny_params):
    """``build(name, **extra)``: the experiment on tiny CPU parameters, in a fresh run folder under tmp_path."""

    def make(name: str, **extra):
        run_dir = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
        params = tiny_params(name, device="cpu", **{**EXTRA.get(name, {}), **extra}, run_dir=str(run_dir))
        return EXPERIMENTS[name](params)

    return make


@pytest.fixture
def run_experiment(build):
    """``run_experiment(name, **extra)``: build and run it; (experiment, result, metrics.json)."""

    def run(name: str, **extra):
        exp = build(name, **extra)
        result = exp.run()
        metrics = json.loads((result.run_dir / "metrics.json").read_text())
        assert metrics["status"] == "finished" and metrics["epochs_run"] == 2
        cam = {"inat_bbn": "cam_crops", "multilabel": "cam_labels"}.get(name, "cam_grid")
        assert (
            result.run_dir / "figures" / f"{cam}.png"
        ).is_file()  # CAMs on cached pixels made model inputs
        return exp, result, metrics

    return run


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_batch_augment_runs_every_notebook(name, run_experiment):
    exp, result, _ = run_experiment(name, batch_augment=True)
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


def test_cache_is_built_once_and_reused_by_the_next_run(tmp_path, capsys, monkeypatch, run_experiment):
    monkeypatch.setenv("FGVC_OUTPUTS", str(tmp_path / "own-outputs"))  # no cache from earlier tests
    run_experiment("bird", cache=True)
    built = capsys.readouterr().out
    assert "decoding" in built
    exp, _, _ = run_experiment("bird", cache=True)
    again = capsys.readouterr().out
    assert "decoding" not in again and "reusing" in again
    x, _ = exp.train_set[0]
    assert x.dtype == torch.float32  # cache without batch_augment: the per-sample preset on cached pixels


def test_cache_gives_the_same_evaluation_as_decoding(run_experiment):
    """Eval transform = Resize((s, s)) of the decoded file; the cache stores exactly that, so the same model
    scores the same with and without the cache."""
    plain, _, _ = run_experiment("bird", augment="none", epochs=2)
    cached, _, _ = run_experiment("bird", augment="none", epochs=2, cache=True)
    a, ya = plain.trainer.predict(plain.val_loader)
    cached.model.load_state_dict(plain.model.state_dict())
    b, yb = cached.trainer.predict(cached.val_loader)
    assert torch.equal(ya, yb)
    torch.testing.assert_close(a, b, atol=2e-2, rtol=0)  # PIL resize of the file vs of the cached pixels


def test_channels_last_and_bf16_autocast_on_the_cpu(run_experiment):
    exp, _, metrics = run_experiment("bird", amp="bf16", channels_last=True)
    assert exp.trainer.amp_dtype is torch.bfloat16
    convs = [m for m in exp.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(
        c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs if c.weight.ndim == 4
    )
    # evaluating again: the first convolution gets channels_last inputs and computes in bfloat16 ...
    seen = []
    hook = convs[0].register_forward_hook(
        lambda m, inputs, out: seen.append(
            (inputs[0].is_contiguous(memory_format=torch.channels_last), out.dtype)
        )
    )
    try:
        final = exp.trainer.evaluate(exp.test_loader)
    finally:
        hook.remove()
    assert seen and all(seen_cl and dtype is torch.bfloat16 for seen_cl, dtype in seen), seen
    # ... and scores exactly what metrics.json recorded for the test split
    assert metrics["eval_split"] == "test" and metrics["test_images"] == len(exp.test_loader.dataset)
    assert final["top1"] == pytest.approx(metrics["top1_acc"]) and final["top5"] == pytest.approx(
        metrics["top5_acc"]
    )
    assert metrics["top1_error"] == pytest.approx(1 - metrics["top1_acc"])


def test_fp16_needs_cuda(build):
    with pytest.raises(ValueError, match="parameter 'amp': fp16 autocast needs a CUDA device"):
        build("bird", amp="fp16")
