"""Training step: the ``Trainer`` against a bare hand-written PyTorch loop, and the Trainer's
``channels_last=True, amp="bf16"`` against its fp32 default on this machine.

Same model architecture and initial weights (three copies of one ``create_model`` network, one per side),
same SGD settings, same batches already in memory (a list of CPU ``(x, y)`` tensors as the loader), same
number of steps. One repetition is one epoch over the list: ``Trainer(..., epochs=1).fit(batches)`` (no
validation loader; the per-epoch reseeding, loss/accuracy bookkeeping and NaN check included) or the bare
loop (``zero_grad``, forward, ``cross_entropy``, ``backward``, ``step``). The three sides run interleaved.
Ratios are images/s over images/s: Trainer / bare (goal >= 0.97x) and Trainer bf16+channels_last / Trainer
fp32 (no goal: on a CPU without bfloat16 units it may well be < 1; the CPU's flags are recorded).
Runs with one torch thread (steadier on a shared machine).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .common import (
    RESULTS_DIR,
    bf16_support,
    entry_point,
    fit_one_epoch,
    interleave,
    result_writer,
    throughput,
)

NAME = "step"
GOAL = ">= 0.97x"
write = result_writer(
    NAME, GOAL, "Trainer.fit vs bare PyTorch loop (resnet18, CPU); Trainer bf16+channels_last vs fp32"
)


def make_batches(steps: int, batch: int, size: int, classes: int, seed: int = 0) -> list[tuple[Any, Any]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(steps)
    ]


def bare_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list) -> float:
    """The hand-written loop: seconds for one pass over ``batches``."""
    start = time.perf_counter()
    model.train()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def trainer_epoch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list, **options: Any
) -> float:
    """A fresh one-epoch Trainer over the same model/optimizer (construction included; it is cheap)."""
    start = time.perf_counter()
    fit_one_epoch(model, optimizer, batches, "cpu", **options)
    return time.perf_counter() - start


def run(quick: bool = False, out: str | Path = RESULTS_DIR) -> dict[str, Any]:
    from fgvc_lib.models.factory import create_model

    # One intra-op thread: with two threads on a shared 2-core machine, any other job stalls every op on
    # its slower thread and the timings scatter; one thread leaves a core to the neighbours.
    torch.set_num_threads(1)
    model_name, classes = "resnet18", 10
    size, batch, steps, reps = (32, 8, 2, 2) if quick else (64, 32, 3, 15)
    torch.manual_seed(0)
    base = create_model(model_name, classes, pretrained=False)
    batches = make_batches(steps, batch, size, classes)

    def side(**options: Any) -> Any:
        model = copy.deepcopy(base)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
        if options.pop("bare", False):
            return lambda: bare_epoch(model, optimizer, batches)
        return lambda: trainer_epoch(model, optimizer, batches, **options)

    fns = {"bare": side(bare=True), "trainer": side()}
    fast_options = {"channels_last": True, "amp": "bf16"}
    notes = []
    try:  # the options are newer than the Trainer itself: skip that comparison where they are missing
        probe = copy.deepcopy(base)
        trainer_epoch(probe, torch.optim.SGD(probe.parameters(), lr=0.0), batches[:1], **fast_options)
        fns["trainer_bf16_cl"] = side(**fast_options)
    except TypeError as exc:
        notes.append(f"Trainer(channels_last=True, amp='bf16') not available: {exc}")
    times = interleave(fns, reps)
    ips, rates = throughput(times, steps * batch, seconds_key="s_per_epoch")
    figures: dict[str, Any] = dict(rates)
    ratio = ips["trainer"] / ips["bare"]
    figures["trainer_vs_bare"] = ratio
    # the fastest round of each side: the least disturbed by other jobs (a cross-check of the medians)
    figures["trainer_vs_bare_of_fastest_rounds"] = min(times["bare"]) / min(times["trainer"])
    summary = f"{ratio:.3g}x (Trainer / bare loop)"
    if "trainer_bf16_cl" in ips:
        fast = ips["trainer_bf16_cl"] / ips["trainer"]
        figures["bf16_channels_last_vs_fp32"] = fast
        summary += f"; bf16+channels_last / fp32: {fast:.3g}x (no goal)"
    else:
        figures["bf16_channels_last_vs_fp32"] = None
    cpu_bf16 = bf16_support()
    summary += f" [CPU amx_bf16={cpu_bf16['amx_bf16']}, avx512_bf16={cpu_bf16['avx512_bf16']}]"
    return write(
        out,
        ratio=ratio,
        figures=figures,
        settings={
            "model": model_name,
            "classes": classes,
            "img_size": size,
            "batch": batch,
            "steps_per_rep": steps,
            "reps": reps,
            "optimizer": "SGD(lr=0.01, momentum=0.9, weight_decay=1e-5)",
            "device": "cpu",
            "torch_threads": 1,
            "fast_options": fast_options,
            "cpu_bf16": cpu_bf16,
            "ratio_is": "Trainer images/s / bare loop images/s (fp32); second ratio in figures, no goal",
        },
        quick=quick,
        summary=summary,
        notes=notes,
    )


main = entry_point(NAME, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
