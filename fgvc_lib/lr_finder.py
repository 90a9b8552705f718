"""LR range test (Smith 2015; fastai's ``lr_find`` is the anchor): train on the training batches while the LR
grows exponentially from ``start_lr`` to ``end_lr``, record the smoothed loss, suggest an LR, then put
everything back exactly as it was.

    result = exp.lr_find()                   # or lr_find(trainer, train_loader)
    result.suggestions                       # {'valley': 3.2e-03, 'steep': 1.1e-03}
    result.plot()                            # loss vs LR (log axis) with the suggestions marked

- **Sweep**: iteration ``i`` of ``n`` uses ``start_lr * (end_lr / start_lr) ** (i / (n - 1))`` (every parameter
  group scaled alike, so discriminative LRs keep their ratios); the loader is cycled if it has fewer batches.
  Each step is the run's own training step (plain, SAM, BBN, COT ...), so the test measures what ``fit`` does.
- **Smoothing**: an exponential moving average of the batch loss with bias correction,
  ``avg = beta * avg + (1 - beta) * loss``, ``smoothed = avg / (1 - beta ** (i + 1))`` (``beta`` 0.98).
- **Divergence**: the sweep stops once the smoothed loss exceeds ``diverge`` (4) times the best one so far, or is
  not finite.
- **Suggestions** (on the curve without its first 10 % and last few points, where the smoothing warms up and the
  loss explodes):

  - ``valley``: the longest valley of the curve - the longest sequence of points whose loss keeps falling
    (a longest decreasing subsequence, so small bumps do not end it) - and the LR in its middle (geometric
    middle of its LR range). Far enough down the descent to learn fast, well before the bottom where the loss
    turns; the robust default (fastai's default too).
  - ``steep``: where the loss falls fastest, the minimum of ``d loss / d log10(lr)``. Often a little more
    conservative; noisy when the curve is.
  - ``minimum``: the LR of the lowest loss divided by 10 (the older rule of thumb: one decade before the loss
    stops improving).

- **Restored exactly**: model parameters and buffers (BatchNorm statistics), gradients, optimizer state (the LR
  too), the LR schedule, the step's state (e.g. COT's second optimizer), the loss's state (OHEM's keep ratio),
  the fp16 GradScaler, the RNG states (Python, NumPy, torch, CUDA) and the generators of the loader and its
  sampler. The Trainer's batch / epoch events are not fired (no schedule steps, history, checkpoints or
  progress); only the events the step itself fires (``after_loss`` ... ``after_step``) are.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

# ---------------------------------------------------------------------------------------------- suggestions
Suggestion = Callable[[np.ndarray, np.ndarray], int]


def _trimmed(n: int) -> slice:
    """The part of the curve suggestions look at: without the first 10 % (smoothing warm-up) and, when
    there are enough points, the last 5 (the loss exploding)."""
    start = n // 10
    end = n - 5 if n - 5 - start >= 5 else n
    return slice(start, end)


def valley_index(lrs: np.ndarray, losses: np.ndarray) -> int:
    """Index of the middle (geometric, on the LR axis) of the longest decreasing run of ``losses``."""
    n = len(losses)
    if n < 2:
        return 0
    length, first = [1] * n, list(range(n))  # longest decreasing subsequence ending at i, and where it starts
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and length[j] + 1 > length[i]:
                length[i], first[i] = length[j] + 1, first[j]
    end = int(np.argmax(length))
    start = first[end]
    middle = math.exp((math.log(lrs[start]) + math.log(lrs[end])) / 2)
    return int(np.argmin(np.abs(np.log(lrs) - math.log(middle))))


def steep_index(lrs: np.ndarray, losses: np.ndarray) -> int:
    """Index of the steepest descent: the minimum of ``d loss / d log10(lr)``."""
    if len(losses) < 3:
        return int(np.argmin(losses))
    return int(np.argmin(np.gradient(losses, np.log10(lrs))))


def minimum_index(lrs: np.ndarray, losses: np.ndarray) -> int:
    """Index of the lowest loss (the suggestion is its LR / 10)."""
    return int(np.argmin(losses))


SUGGESTIONS: dict[str, tuple[Suggestion, float]] = {
    "valley": (valley_index, 1.0),
    "steep": (steep_index, 1.0),
    "minimum": (minimum_index, 0.1),
}
"""name -> (index function on the trimmed curve, factor applied to that point's LR)."""


def suggest(lrs: Iterable[float], losses: Iterable[float], names: Iterable[str] = ("valley", "steep")
            ) -> dict[str, tuple[float, float]]:
    """name -> (suggested LR, the smoothed loss at the point it was read from)."""
    lrs_a, losses_a = np.asarray(list(lrs), float), np.asarray(list(losses), float)
    part = _trimmed(len(lrs_a))
    x, y = lrs_a[part], losses_a[part]
    out = {}
    for name in names:
        if name not in SUGGESTIONS:
            raise ValueError(f"LR suggestion: unknown {name!r}, expected one of ({', '.join(SUGGESTIONS)})")
        if len(x) == 0:
            continue
        fn, factor = SUGGESTIONS[name]
        i = fn(x, y)
        out[name] = (float(x[i] * factor), float(y[i]))
    return out


# ---------------------------------------------------------------------------------------------- result
@dataclass
class LRFinderResult:
    """The sweep: ``lrs`` and smoothed ``losses`` per iteration (``raw_losses`` unsmoothed), the suggested LRs
    and the points they were read from, and whether the sweep stopped at divergence."""

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestions: dict[str, float]
    points: dict[str, tuple[float, float]] = field(default_factory=dict)
    stopped_early: bool = False
    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = 100

    def to_dict(self) -> dict[str, Any]:
        def finite(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "suggestions": self.suggestions,
            "start_lr": self.start_lr, "end_lr": self.end_lr, "num_iter": self.num_iter,
            "iterations_run": len(self.lrs), "stopped_early": self.stopped_early,
            "lrs": self.lrs, "losses": [finite(v) for v in self.losses],
            "raw_losses": [finite(v) for v in self.raw_losses],
        }

    def plot(self, title: str = "") -> Figure:
        """Smoothed loss against LR (log axis, one labelled tick per decade), raw losses faint, each suggestion
        marked and named with its value; the divergence tail is cut off the y range."""
        from matplotlib.ticker import LogLocator, NullFormatter

        fig = Figure(figsize=(7, 4.2))
        ax = fig.subplots()
        lrs, losses = np.asarray(self.lrs), np.asarray(self.losses)
        ax.plot(lrs, self.raw_losses, color="0.75", lw=0.8, label="batch loss")
        ax.plot(lrs, losses, color="tab:blue", lw=1.8, label="smoothed loss")
        colors = {"valley": "tab:green", "steep": "tab:red", "minimum": "tab:purple"}
        for name, (lr, loss) in self.points.items():
            ax.plot([lr], [loss], "o", ms=9, color=colors.get(name, "black"),
                    label=f"{name}: {self.suggestions[name]:.2e}")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=30))
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e"))
        ax.xaxis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10) * 0.1, numticks=30))
        ax.xaxis.set_minor_formatter(NullFormatter())
        finite = losses[np.isfinite(losses)]
        if finite.size:
            best = int(np.nanargmin(np.where(np.isfinite(losses), losses, np.nan)))
            top = float(np.nanmax(losses[: best + 1][np.isfinite(losses[: best + 1])]))
            low = float(finite.min())
            pad = 0.1 * max(top - low, 1e-3)
            ax.set_ylim(low - pad, top + 3 * pad)
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        end = "stopped at divergence" if self.stopped_early else "full sweep"
        ax.set_title(title or f"LR finder: {len(self.lrs)} iterations, {end}")
        ax.grid(alpha=0.3, which="major")
        ax.legend(loc="upper left", fontsize=9)
        fig.tight_layout()
        return fig


# ---------------------------------------------------------------------------------------------- state
def _generators(loader: Any) -> list[torch.Generator]:
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                  getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


class _Snapshot:
    """Everything a training step changes, copied (tensors cloned) so it can be put back exactly."""

    def __init__(self, trainer: Any, loader: Any):
        from .steps import unwrap

        self.trainer = trainer
        self.model = unwrap(trainer.model)
        # on the CPU: no second copy of the weights in GPU memory (load_state_dict copies them back exactly)
        self.model_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in self.model.parameters()]
        self.training = self.model.training
        self.optimizer = copy.deepcopy(trainer.optimizer.state_dict())
        self.scheduler = copy.deepcopy(trainer.scheduler.state_dict()) if trainer.scheduler is not None else None
        self.strategy = copy.deepcopy(trainer.strategy.state_dict())
        self.strategy_attrs = {k: v for k, v in vars(trainer.strategy).items() if isinstance(v, (int, float, bool))}
        loss_fn = trainer.loss_fn
        self.loss_state = copy.deepcopy(loss_fn.state_dict()) if isinstance(loss_fn, torch.nn.Module) else None
        self.loss_attrs = {k: v for k, v in vars(loss_fn).items() if isinstance(v, (int, float, bool))}
        self.scaler = copy.deepcopy(trainer.scaler.state_dict()) if trainer.scaler is not None else None
        self.rng = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
                    torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        self.generators = [(g, g.get_state()) for g in _generators(loader)]

    def restore(self) -> None:
        t = self.trainer
        self.model.load_state_dict(self.model_state)
        for p, g in zip(self.model.parameters(), self.grads, strict=True):
            p.grad = g
        self.model.train(self.training)
        t.optimizer.load_state_dict(self.optimizer)
        if self.scheduler is not None:
            t.scheduler.load_state_dict(self.scheduler)
        t.strategy.load_state_dict(self.strategy)
        for k, v in self.strategy_attrs.items():
            setattr(t.strategy, k, v)
        if self.loss_state is not None:
            t.loss_fn.load_state_dict(self.loss_state)
        for k, v in self.loss_attrs.items():
            setattr(t.loss_fn, k, v)
        if self.scaler is not None:
            t.scaler.load_state_dict(self.scaler)
        random.setstate(self.rng[0])
        np.random.set_state(self.rng[1])
        torch.set_rng_state(self.rng[2])
        if self.rng[3] is not None:
            torch.cuda.set_rng_state_all(self.rng[3])
        for gen, state in self.generators:
            gen.set_state(state)


def _cycle(loader: Iterable) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("lr_find: the training loader yielded no batches")


# ---------------------------------------------------------------------------------------------- the sweep
def lr_find(
    trainer: Any,
    loader: Iterable,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
    suggestions: Iterable[str] = ("valley", "steep"),
) -> LRFinderResult:
    """Run the LR range test with ``trainer``'s model, optimizer, loss and step on ``loader``'s batches; see the
    module docstring. Everything the steps change is restored afterwards, also when the sweep fails."""
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr_find: expected 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    if num_iter < 2:
        raise ValueError(f"lr_find: num_iter must be >= 2, got {num_iter}")
    if not 0 <= beta < 1:
        raise ValueError(f"lr_find: beta must be in [0, 1), got {beta}")
    groups = trainer.optimizer.param_groups
    base = float(groups[0]["lr"]) or 1.0
    ratios = [float(g["lr"]) / base if base else 1.0 for g in groups]
    snapshot = _Snapshot(trainer, loader)
    lrs: list[float] = []
    losses: list[float] = []
    raw: list[float] = []
    stopped = False
    try:
        trainer.model.train()
        avg, best = 0.0, math.inf
        batches = _cycle(loader)
        for i in range(num_iter):
            lr = start_lr * (end_lr / start_lr) ** (i / (num_iter - 1))
            for group, ratio in zip(groups, ratios, strict=True):
                group["lr"] = lr * ratio
            x, y, *extra = trainer._to_device(next(batches), trainer.batch_transform)
            loss, _ = trainer.strategy.train_step(trainer, x, y, *extra)
            value = float(loss)
            avg = beta * avg + (1 - beta) * value
            smoothed = avg / (1 - beta ** (i + 1))
            lrs.append(lr)
            raw.append(value)
            losses.append(smoothed)
            if not math.isfinite(smoothed) or smoothed > diverge * best:
                stopped = True
                break
            best = min(best, smoothed)
    finally:
        snapshot.restore()
    finite = [(a, b) for a, b in zip(lrs, losses, strict=True) if math.isfinite(b)]
    points = suggest([a for a, _ in finite], [b for _, b in finite], suggestions) if finite else {}
    return LRFinderResult(
        lrs=lrs, losses=losses, raw_losses=raw,
        suggestions={name: lr for name, (lr, _) in points.items()},
        points={name: (lr / SUGGESTIONS[name][1], loss) for name, (lr, loss) in points.items()},
        stopped_early=stopped, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter,
    )


# ---------------------------------------------------------------------------------------------- CLI
def lr_find_command(args: Any) -> int:
    """Build the experiment (its parameter file, params.yaml and splits go into the output folder), sweep, write
    ``lr_find.png`` and ``lr_find.json``, print the suggestions."""
    import json

    from .catalog import get_notebook
    from .config import params_class
    from .execution import load_values
    from .fileio import write_text_atomic
    from .plots import save_figure
    from .runs import new_run_id, outputs_root

    values = load_values(args.file, args.param)
    out = Path(args.out) if args.out else outputs_root() / "lr_find" / f"{args.notebook}-{new_run_id()}"
    values.update(run_dir=str(out), resume=False)
    params = params_class(args.notebook).from_dict(values)
    exp = get_notebook(args.notebook).experiment_class()(params)
    names = [n.strip() for n in args.suggest.split(",") if n.strip()]
    result = exp.lr_find(args.start_lr, args.end_lr, args.num_iter, suggestions=names)
    title = f"LR finder: {args.notebook}, {params.model}, {getattr(params, 'optimizer', '')} (lr: {params.lr:g})"
    figure = save_figure(result.plot(title=title), out / "lr_find.png")
    payload = {"notebook": args.notebook, "params": params.to_dict(), **result.to_dict()}
    write_text_atomic(out / "lr_find.json", json.dumps(payload, indent=1) + "\n")
    end = "stopped at divergence" if result.stopped_early else "full sweep"
    print(f"{len(result.lrs)} iterations from {args.start_lr:g} to {result.lrs[-1]:.3g} ({end}); "
          f"the parameters' lr is {params.lr:g}")
    for name, lr in result.suggestions.items():
        print(f"suggested lr ({name}): {lr:.3g}")
    print(f"plot: {figure}\nsuggestions: {out / 'lr_find.json'}")
    return 0
