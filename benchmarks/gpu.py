"""GPU training throughput: ResNet-50 at 224 px through the Trainer with AMP + channels_last against fp32.

Sides (one model copy each, same initial weights, SGD momentum 0.9, batch 128 of synthetic images already on
the GPU, 20 steps per round, rounds interleaved after a warm-up round, ``cudnn.benchmark`` on):
``Trainer(amp=False)`` (PyTorch's defaults: cuDNN convolutions may use TF32, matmuls do not),
``Trainer(amp="bf16", channels_last=True)`` and ``Trainer(amp="fp16", channels_last=True)`` (autocast +
GradScaler). Ratio: bf16 + channels_last images/s / fp32 images/s (fp16 in the figures).

Share of the GPU's peak: achieved FLOP/s = images/s x 3 x 4.1 GFLOP (forward + backward of ResNet-50 at
224 px, one multiply-add counted as 2 FLOPs) against the device's dense peak from the table below (NVIDIA
datasheets, no sparsity): the AMP sides against the bf16/fp16 tensor-core peak, the fp32 side against the
TF32 peak (convolutions) and the plain FP32 peak. A device missing from the table gets no share.

Without a CUDA device the result is written with ``"ratio": null`` and ``"skipped": "no CUDA device"``.
``--device cpu`` runs the same code on the CPU with tiny settings (to check the code path; no fp16 side).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .common import RESULTS_DIR, entry_point, fit_one_epoch, interleave, result_writer, throughput

NAME = "gpu"
GOAL = "report (AMP + channels_last vs fp32; share of peak)"
write = result_writer(
    NAME, GOAL, "ResNet-50 224 px training: Trainer AMP bf16 + channels_last vs fp32 (CUDA)"
)
GFLOP_PER_IMAGE_TRAIN = 3 * 4.1  # ResNet-50 at 224 px: ~4.1 GFLOP forward, backward ~2x forward

# Dense peak TFLOP/s by device-name fragment (first match wins: more specific names first).
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    ("H100 NVL", {"bf16": 835.0, "fp16": 835.0, "tf32": 417.5, "fp32": 60.0}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # SXM5 (HBM3)
    ("H200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.1, "fp16": 362.1, "tf32": 183.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    ("V100", {"fp16": 125.0, "fp32": 15.7}),
    ("T4", {"fp16": 65.0, "fp32": 8.1}),
)


def peak_for(device_name: str) -> tuple[str, dict[str, float]] | None:
    for fragment, peaks in PEAK_TFLOPS:
        if fragment.lower() in device_name.lower():
            return fragment, peaks
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_epoch(
    model: torch.nn.Module, optimizer: Any, batches: list, device: torch.device, **options: Any
) -> Any:
    def run() -> float:
        _sync(device)
        start = time.perf_counter()
        fit_one_epoch(model, optimizer, batches, device, **options)
        _sync(device)
        return time.perf_counter() - start

    return run


def skipped(quick: bool, out: str | Path, reason: str) -> dict[str, Any]:
    return write(
        out,
        ratio=None,
        figures={},
        settings={"model": "resnet50", "img_size": 224},
        quick=quick,
        summary=f"skipped: {reason}",
        skipped=reason,
    )


def run(quick: bool = False, out: str | Path = RESULTS_DIR, device: str = "auto") -> dict[str, Any]:
    from fgvc_lib.models.factory import create_model

    if device == "auto":
        if not torch.cuda.is_available():
            return skipped(quick, out, "no CUDA device")
        device = "cuda"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    tiny = quick or dev.type != "cuda"
    size, batch, steps, reps = (64, 4, 2, 1) if tiny else (224, 128, 20, 5)
    torch.manual_seed(0)
    base = create_model("resnet50", 1000, pretrained=False)
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(batch, 3, size, size, generator=g).to(dev),
            torch.randint(0, 1000, (batch,), generator=g).to(dev),
        )
        for _ in range(min(steps, 4))
    ]
    batches = [batches[i % len(batches)] for i in range(steps)]

    def side(**options: Any) -> Any:
        model = copy.deepcopy(base).to(dev)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        return trainer_epoch(model, optimizer, batches, dev, **options)

    fns = {"fp32": side(), "bf16_cl": side(amp="bf16", channels_last=True)}
    if dev.type == "cuda":
        fns["fp16_cl"] = side(amp="fp16", channels_last=True)
    times = interleave(fns, reps)
    ips, rates = throughput(times, steps * batch)
    figures: dict[str, Any] = dict(rates)
    ratio = ips["bf16_cl"] / ips["fp32"]
    figures["bf16_cl_vs_fp32"] = ratio
    if "fp16_cl" in ips:
        figures["fp16_cl_vs_fp32"] = ips["fp16_cl"] / ips["fp32"]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    flops_per_image = GFLOP_PER_IMAGE_TRAIN * 1e9 * (size / 224) ** 2
    tflops = {key: value * flops_per_image / 1e12 for key, value in ips.items()}
    figures |= {f"{key}_achieved_tflops": value for key, value in tflops.items()}
    match = peak_for(name) if dev.type == "cuda" else None
    shares: dict[str, float | None] = {}
    if match is not None:
        fragment, peaks = match
        figures["peak_table_entry"] = fragment
        figures["peak_tflops"] = peaks
        for key, dtype in (("bf16_cl", "bf16"), ("fp16_cl", "fp16")):
            if key in tflops and dtype in peaks:
                shares[f"{key}_share_of_{dtype}_peak"] = tflops[key] / peaks[dtype]
        for dtype in ("tf32", "fp32"):
            if dtype in peaks:
                shares[f"fp32_share_of_{dtype}_peak"] = tflops["fp32"] / peaks[dtype]
    figures |= shares
    summary = f"{ratio:.3g}x bf16+channels_last / fp32"
    if "bf16_cl_share_of_bf16_peak" in shares:
        summary += f"; {100 * shares['bf16_cl_share_of_bf16_peak']:.0f} % of {name}'s bf16 peak"
    elif dev.type == "cuda":
        summary += f"; peak of {name} not in the table"
    return write(
        out,
        ratio=ratio,
        figures=figures,
        settings={
            "model": "resnet50",
            "img_size": size,
            "batch": batch,
            "steps_per_rep": steps,
            "reps": reps,
            "device": name,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "gflop_per_image_train": GFLOP_PER_IMAGE_TRAIN * (size / 224) ** 2,
            "ratio_is": "images/s Trainer(amp='bf16', channels_last=True) / images/s Trainer fp32",
        },
        quick=quick,
        summary=summary,
    )


def _more(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA or skip), cuda, cuda:N, or cpu (tiny run, checks the code)",
    )


main = entry_point(NAME, __doc__, run, _more, options=("device",))


if __name__ == "__main__":
    sys.exit(main())
