"""Trainer speed options: autocast dtype parsing, channels_last, batch transforms on uint8 batches, compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fgvc_lib.engine import Trainer, _unwrap, amp_dtype


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def _batches(n=4, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    if dtype == torch.uint8:
        xs = torch.randint(0, 256, (n * 8, 3, 12, 12), generator=g, dtype=torch.uint8)
    else:
        xs = torch.rand(n * 8, 3, 12, 12, generator=g)
    ys = torch.arange(n * 8) % 3
    return [(xs[i : i + 8], ys[i : i + 8]) for i in range(0, n * 8, 8)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(False, None), (None, None), ("off", None), (True, torch.bfloat16), ("bf16", torch.bfloat16),
     ("BF16", torch.bfloat16)],
)
def test_amp_values(value, expected):
    assert amp_dtype(value, torch.device("cpu")) is expected


def test_amp_errors_name_the_parameter():
    with pytest.raises(ValueError, match=r"parameter 'amp': expected off, bf16 or fp16 .* got 'fp8'"):
        amp_dtype("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        amp_dtype("fp16", torch.device("cpu"))


def test_bf16_autocast_runs_the_forward_in_bf16():
    seen = []
    model = _model()
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), epochs=1,
                      amp="bf16", progress=False, log=None)
    trainer.fit(_batches())
    assert set(seen) == {torch.bfloat16}
    assert next(model.parameters()).dtype == torch.float32  # weights stay fp32


def test_channels_last_model_and_inputs():
    seen = []
    model = _model()
    model[0].register_forward_pre_hook(lambda m, i: seen.append(i[0].is_contiguous(memory_format=torch.channels_last)))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), epochs=1,
                      channels_last=True, progress=False, log=None)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    trainer.fit(_batches())
    assert seen and all(seen)


def test_uint8_batches_go_through_the_batch_transforms():
    calls = {"train": 0, "eval": 0}

    def make(kind):
        def tf(x):
            assert x.dtype == torch.uint8
            calls[kind] += 1
            return x.float() / 255

        return tf

    model = _model()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), epochs=1,
                      batch_transform=make("train"), eval_transform=make("eval"), progress=False, log=None)
    trainer.fit(_batches(dtype=torch.uint8), _batches(2, dtype=torch.uint8))
    assert calls == {"train": 4, "eval": 2}
    bare = Trainer(_model(), torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), epochs=1,
                   progress=False, log=None)
    with pytest.raises(TypeError, match="uint8 images .* no batch transform"):
        bare.fit(_batches(dtype=torch.uint8))


def test_compiled_model_trains_and_saves_plain_weights(tmp_path):
    model = _model()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), epochs=1,
                      compile=True, run_dir=tmp_path, progress=False, log=None)
    assert trainer.model is not model and _unwrap(trainer.model) is model
    trainer.fit(_batches())
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert set(state["model"]) == set(model.state_dict())  # no _orig_mod. prefixes: loadable without compile
