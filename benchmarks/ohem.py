"""OHEM loss: the vectorised ``OHEMLoss`` (per-sample CE + top-k) against the report's per-sample loop.

The loop form (written here only, as the report's code did it): each sample's cross entropy computed one
at a time, the losses sorted in Python, the top-k averaged with a Python loop. Both are timed forward +
backward on the same logits (200 classes, batch 64 and 256, keep ratio 0.7); before timing, the benchmark
checks that both give the same loss and the same gradient. Ratio: loop time / OHEMLoss time, the smaller
of the two batch sizes.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .common import RESULTS_DIR, entry_point, interleave, median, result_writer, spreads, worst_ratio

NAME = "ohem"
GOAL = ">= 20x"
write = result_writer(NAME, GOAL, "OHEMLoss fwd+bwd vs per-sample Python loop (200 classes)")


def ohem_loop(logits: torch.Tensor, target: torch.Tensor, ratio: float) -> torch.Tensor:
    """The report's form: per-sample CE one at a time, Python sort, top-k averaged in a Python loop."""
    losses = []
    for i in range(logits.shape[0]):
        losses.append(F.cross_entropy(logits[i : i + 1], target[i : i + 1]))
    order = sorted(range(len(losses)), key=lambda i: losses[i].detach().item(), reverse=True)
    keep = max(1, math.floor(ratio * len(losses) + 1e-9))
    total = losses[order[0]]
    for i in order[1:keep]:
        total = total + losses[i]
    return total / keep


def check_same(batch: int, classes: int, ratio: float, seed: int = 0) -> dict[str, float]:
    """Loss and gradient of both forms on the same logits must agree (raises AssertionError if not)."""
    from fgvc_lib.losses.ohem import OHEMLoss

    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, classes, generator=g) * 3
    target = torch.randint(0, classes, (batch,), generator=g)
    a, b = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    loss_a = OHEMLoss(ratio)(a, target)
    loss_a.backward()
    loss_b = ohem_loop(b, target, ratio)
    loss_b.backward()
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6), (loss_a.item(), loss_b.item())
    assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), float((a.grad - b.grad).abs().max())
    return {
        "loss_abs_diff": float((loss_a - loss_b).detach().abs()),
        "grad_max_abs_diff": float((a.grad - b.grad).abs().max()),
    }


def _timer(fn: Any, logits: torch.Tensor, target: torch.Tensor, ratio: float, calls: int) -> Any:
    """Seconds per forward+backward call, averaged over ``calls`` calls."""

    def run() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            logits.grad = None
            fn(logits, target, ratio).backward()
        return (time.perf_counter() - start) / calls

    return run


def run(quick: bool = False, out: str | Path = RESULTS_DIR) -> dict[str, Any]:
    from fgvc_lib.losses.ohem import OHEMLoss

    torch.set_num_threads(1)  # small tensors: one thread is what both forms use anyway, and it is steadier
    classes, ratio = 200, 0.7
    batches = (16, 64) if quick else (64, 256)
    reps = 3 if quick else 41
    loss = OHEMLoss(ratio)

    def vectorised(logits: torch.Tensor, target: torch.Tensor, r: float) -> torch.Tensor:
        loss.ratio = r
        return loss(logits, target)

    figures: dict[str, Any] = {}
    ratios = {}
    for batch in batches:
        checks = check_same(batch, classes, ratio)
        g = torch.Generator().manual_seed(batch)
        logits = (torch.randn(batch, classes, generator=g) * 3).requires_grad_(True)
        target = torch.randint(0, classes, (batch,), generator=g)
        # about 10-20 ms per side and round: many short rounds, so a burst of other jobs spoils few of them
        vector_calls, loop_calls = (10, 2) if quick else (100, max(2, 640 // batch))
        times = interleave(
            {
                "loop": _timer(ohem_loop, logits, target, ratio, loop_calls),
                "ohem_loss": _timer(vectorised, logits, target, ratio, vector_calls),
            },
            reps,
        )
        t_loop, t_vec = median(times["loop"]), median(times["ohem_loss"])
        ratios[batch] = t_loop / t_vec
        figures[f"batch{batch}"] = {
            "loop_ms_per_call": t_loop * 1e3,
            "ohem_loss_ms_per_call": t_vec * 1e3,
            "ratio": ratios[batch],
            **spreads(times, "loop", "ohem_loss"),
            **checks,
        }
    worst, summary = worst_ratio(ratios, "batch {}")
    return write(
        out,
        ratio=worst,
        figures=figures,
        settings={
            "classes": classes,
            "keep_ratio": ratio,
            "batches": list(batches),
            "reps": reps,
            "calls_per_rep": {
                "ohem_loss": 10 if quick else 100,
                "loop": "2" if quick else "max(2, 640 // batch)",
            },
            "device": "cpu",
            "torch_threads": 1,
            "ratio_is": "loop time / OHEMLoss time (forward+backward), the smaller over the batch sizes",
        },
        quick=quick,
        summary=summary,
        checks="loss and logits gradient allclose between the two forms at every batch size",
    )


main = entry_point(NAME, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
