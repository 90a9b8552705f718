"""The GPU paths: autocast (bf16, fp16 + GradScaler), channels_last, pinned memory with non-blocking copies,
SyncBatchNorm + DistributedDataParallel over NCCL, a whole experiment on the device.

All marked ``cuda``: they skip without a CUDA device (CI) and ``make gpu-check`` runs them (``pytest -m cuda``).
"""

from __future__ import annotations

import json
import math
import socket

import pytest
import torch
from torch import nn

from fgvc_lib import distributed as ddp
from fgvc_lib.engine import Trainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2),
    )


def _batches(n: int = 12, batch: int = 16, pin: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two classes that differ in the mean of the red channel: learnable in a few steps."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        y = torch.randint(0, 2, (batch,), generator=g)
        x = torch.randn(batch, 3, 16, 16, generator=g)
        x[:, 0] += (2 * y - 1).view(-1, 1, 1).float() * 1.5
        out.append((x.pin_memory(), y.pin_memory()) if pin else (x, y))
    return out


def _trainer(model: nn.Module, **options) -> Trainer:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return Trainer(model, optimizer, nn.CrossEntropyLoss(), device="cuda", progress=False, log=None, **options)


def test_fp16_channels_last_grad_scaler_learns():
    trainer = _trainer(_net(), epochs=4, amp="fp16", channels_last=True)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    conv = trainer.model[0].weight
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    history = trainer.fit(_batches(pin=True), _batches(4))
    losses = [row["train_loss"] for row in history]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]
    assert history[-1]["val_acc"] >= 0.9
    scale = trainer.scaler.get_scale()
    assert math.isfinite(scale) and scale > 0
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_runs_convolutions_in_low_precision(amp, dtype):
    trainer = _trainer(_net(), epochs=1, amp=amp, channels_last=True)
    x = torch.randn(4, 3, 16, 16, device="cuda").contiguous(memory_format=torch.channels_last)
    with trainer.autocast():
        assert trainer.model[0](x).dtype == dtype
    assert trainer.model(x).dtype == torch.float32  # outside autocast: fp32 again


def test_bf16_training_follows_fp32():
    fp32, bf16 = (_trainer(_net(), epochs=2, **opts) for opts in ({}, {"amp": "bf16", "channels_last": True}))
    a, b = fp32.fit(_batches()), bf16.fit(_batches())
    for row_a, row_b in zip(a, b, strict=True):
        assert row_b["train_loss"] == pytest.approx(row_a["train_loss"], rel=0.1)


def test_pinned_batches_move_non_blocking_and_intact():
    trainer = _trainer(_net(), epochs=1, channels_last=True)
    x, y = _batches(1, pin=True)[0]
    assert x.is_pinned()
    xd, yd = trainer._to_device((x, y))
    torch.cuda.synchronize()
    assert xd.is_cuda and yd.is_cuda
    assert xd.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(xd.cpu(), x) and torch.equal(yd.cpu(), y)


def test_uint8_batches_are_augmented_on_the_device():
    from fgvc_lib.data.batch_transforms import build_batch_transform

    seen = []
    transform = build_batch_transform("bird", 32, train=True)

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.device.type)
        return transform.to(x.device)(x)

    trainer = _trainer(_net(), epochs=1, batch_transform=spy, eval_transform=spy)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=g).pin_memory(),
                torch.randint(0, 2, (8,), generator=g)) for _ in range(3)]
    history = trainer.fit(batches)
    assert seen == ["cuda"] * 3 and math.isfinite(history[0]["train_loss"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_on_nccl_converts_batchnorm_to_sync(monkeypatch):
    """One GPU: a one-rank NCCL group, with the Trainer told it is distributed, takes the DDP path (SyncBatchNorm,
    DistributedDataParallel with the device id, gathered evaluation). Cross-GPU sync needs two GPUs."""
    import torch.distributed as dist

    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(ddp, "is_distributed", lambda: True)
        monkeypatch.setattr(ddp, "dist_env", lambda: ddp.DistEnv(0, 2, 0))
        trainer = _trainer(_net(), epochs=2, amp="bf16", channels_last=True)
        assert isinstance(trainer.model, nn.parallel.DistributedDataParallel)
        assert trainer.model.device_ids == [0]
        inner = trainer.model.module
        assert sum(isinstance(m, nn.SyncBatchNorm) for m in inner.modules()) == 2
        assert not any(type(m) is nn.BatchNorm2d for m in inner.modules())
        history = trainer.fit(_batches(), _batches(4))
        assert history[-1]["train_loss"] < history[0]["train_loss"]
        assert history[-1]["val_acc"] >= 0.75
    finally:
        dist.destroy_process_group()


def test_bird_experiment_fp16_batch_augment_on_cuda(tmp_path):
    from fgvc_lib.experiments.bird import BirdExperiment

    values = dict(synth_classes=3, synth_per_class=12, synth_size=48, img_size=32, batch_size=8, epochs=2,
                  num_workers=0, cam_images=2, progress=False, amp="fp16", channels_last=True, batch_augment=True,
                  device="cuda", model="resnet18", pretrained=False, run_dir=str(tmp_path / "run"))
    experiment = BirdExperiment(values)
    result = experiment.run()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_run"] == 2
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    assert experiment.trainer.scaler is not None
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert state["model"].keys() == experiment.model.state_dict().keys()
