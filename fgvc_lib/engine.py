"""The one Trainer: one loop that fires events; steps change the optimisation step, callbacks do the rest.

The loop (``fit``): per epoch reseed, ``before_epoch``, every batch to the device (uint8 batches through the
batch transform), the step (``fgvc_lib.steps``: plain, SAM, feature losses, BBN, COT), the training metrics
(``fgvc_lib.scores``, on the device), ``after_batch``; then validation and the history row, ``after_epoch``.
LR schedules, the OHEM ratio, BBN's alpha, the NaN guard, history / checkpoints, the epoch line and progress
display are callbacks (``fgvc_lib.callbacks``), so any step runs with any schedule.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed as ddp
from .callbacks import (
    Callback,
    Checkpointer,
    EpochEnd,
    EpochLog,
    LRScheduleCallback,
    NaNGuard,
    OHEMSchedule,
    ProgressBar,
)
from .fileio import atomic_write
from .optim import LRSchedule
from .scores import SCORES, Scores
from .steps import (  # noqa: F401 - the steps' public names stay importable from here
    BBNStrategy,
    COTStrategy,
    FeatureLossStrategy,
    SAMStrategy,
    TrainStrategy,
    create_strategy,
    list_strategies,
    register_strategy,
)
from .steps import unwrap as _unwrap


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing or does not fit the model."""


# ---------------------------------------------------------------------------------------------- helpers
def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda > mps > cpu; anything else is passed to torch.device (errors name the value)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(
            f"parameter 'device': expected auto, cpu, cuda, cuda:N or mps, got {name!r}"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"parameter 'device': {name!r} asked for, but no CUDA device is available")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Only deterministic kernels (an error names any op that has none); cuDNN autotuning off."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = not enabled and torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic = enabled


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file."""
    return atomic_write(path, lambda fh: torch.save(obj, fh), mode="wb")


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: bool | str | None, device: torch.device) -> torch.dtype | None:
    """``amp`` parameter -> autocast dtype: False/'off' none, True/'bf16' bfloat16, 'fp16' float16 (CUDA)."""
    key = "off" if amp is None or amp is False else "bf16" if amp is True else str(amp).lower()
    if key not in AMP_DTYPES:
        raise ValueError(f"parameter 'amp': expected off, bf16 or fp16 (or true/false), got {amp!r}")
    if key == "fp16" and device.type != "cuda":
        raise ValueError(f"parameter 'amp': fp16 autocast needs a CUDA device (device is {device}); use bf16")
    if device.type not in ("cpu", "cuda"):
        return None
    return AMP_DTYPES[key]


# ---------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Train a classifier; one history row per epoch; ``best.pt`` by the validation selection metric (top-1,
    or micro-F1 for multi-label), ``last.pt`` every epoch.

    ``scheduler`` (an ``LRSchedule``), ``ohem_schedule`` (keep ratio per 0-based epoch), the step's own
    callbacks, ``callbacks`` (``Callback`` objects, or plain ``fn(trainer, row)`` called after each epoch),
    and the built-ins (NaN guard, checkpoints with ``run_dir``, the epoch line with ``log``, a progress bar
    with ``progress``) all hang on the same events. ``task``: 'single' or 'multilabel' picks the metrics
    (``fgvc_lib.scores``); ``scores`` overrides them.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: nn.Module,
        *,
        epochs: int,
        scheduler: LRSchedule | None = None,
        strategy: TrainStrategy | None = None,
        device: str | torch.device = "cpu",
        run_dir: str | Path | None = None,
        seed: int = 0,
        progress: bool = True,
        grad_clip: float | None = None,
        amp: bool | str = False,
        log: Callable[[str], None] | None = print,
        checkpoint_extra: dict[str, Any] | None = None,
        checkpoint_meta: dict[str, Any] | None = None,
        task: str = "single",
        scores: Callable[..., Scores] | None = None,
        channels_last: bool = False,
        compile: bool = False,  # noqa: A002 - the parameter name users know from torch.compile
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        eval_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        ohem_schedule: Callable[[int], float] | None = None,
        callbacks: Iterable[Callback | Callable[[Any, dict[str, float]], None]] = (),
        check_every: int = 50,
    ):
        self.device = ddp.rank_device(torch.device(device))
        self.channels_last = bool(channels_last)
        self.amp_dtype = amp_dtype(amp, self.device)
        self.strategy = strategy or TrainStrategy()
        if self.amp_dtype is torch.float16 and not getattr(self.strategy, "supports_fp16", True):
            raise ValueError(f"parameter 'amp': fp16 does not work with the {self.strategy.name} step; use bf16")
        # fp16 needs loss scaling; bf16 has fp32's range and does not
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.dist = ddp.dist_env() if ddp.is_distributed() else ddp.DistEnv()
        if self.dist.enabled:
            if self.device.type == "cuda":  # BatchNorm statistics over the global batch, as one process
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.model = torch.compile(model) if compile else model
        # uint8 image batches (decode-once cache) become normalised floats on the device
        self.batch_transform = batch_transform
        self.eval_transform = eval_transform
        self.optimizer = optimizer
        self.loss_fn = loss_fn.to(self.device) if isinstance(loss_fn, nn.Module) else loss_fn
        self.epochs = epochs
        self.scheduler = scheduler
        self.run_dir = Path(run_dir) if run_dir else None
        self.seed = seed
        self.progress = progress
        self.grad_clip = grad_clip
        self.log = (log or (lambda msg: None)) if self.dist.is_main else (lambda msg: None)
        self.checkpoint_extra = dict(checkpoint_extra or {})
        # what prediction needs (model spec, classes, preprocessing, task): ``fgvc_lib.predict``
        self.checkpoint_meta = dict(checkpoint_meta or {})
        if scores is None:
            if task not in SCORES:
                raise ValueError(f"task: expected 'single' or 'multilabel', got {task!r}")
            scores = SCORES[task]
        self.task = task
        self.train_scores, self.eval_scores = scores(), scores(evaluation=True)
        self.history: list[dict[str, float]] = []
        self.last_train: dict[str, Any] = {}
        #: (logits, targets) of the latest ``evaluate`` (CPU), so a report needs no second pass over the split
        self.last_predictions: tuple[torch.Tensor, torch.Tensor] | None = None
        self.steps_per_epoch: int | None = None
        self.epoch = 0  # epochs completed
        self.best_metric = -math.inf
        self.best_epoch = 0
        built_in: list[Callback] = [NaNGuard(check_every), Checkpointer()]
        if scheduler is not None:
            built_in.append(LRScheduleCallback(scheduler))
        if ohem_schedule is not None:
            built_in.append(OHEMSchedule(ohem_schedule))
        if log is not None:
            built_in.append(EpochLog())
        if progress:
            built_in.append(ProgressBar())
        self.callbacks: list[Callback] = []
        for cb in [*built_in, *self.strategy.callbacks(), *callbacks]:
            self.add_callback(cb)

    # ------------------------------------------------------------------ events
    def add_callback(self, callback: Callback | Callable[[Any, dict[str, float]], None]) -> Callback:
        """Add a callback (a plain ``fn(trainer, row)`` is called after every epoch)."""
        cb = callback if isinstance(callback, Callback) else EpochEnd(callback)
        self.callbacks.append(cb)
        self.callbacks.sort(key=lambda c: c.order)  # stable: same order keeps insertion order
        return cb

    def fire(self, event: str, *args: Any) -> None:
        """Call ``event`` on every callback, in ``order``."""
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    # ------------------------------------------------------------------ pieces the steps call
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def compute_loss(self, *args: torch.Tensor) -> torch.Tensor:
        """``loss_fn(*args)``; fires ``after_loss``."""
        loss = self.loss_fn(*args)
        self.fire("after_loss", loss)
        return loss

    def clip_gradients(self) -> None:
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled under fp16; fires ``before_backward`` / ``after_backward``."""
        self.fire("before_backward")
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        self.fire("after_backward")

    def step(self, optimizer: torch.optim.Optimizer | None = None, *, clip: bool = True) -> None:
        """Optimizer step after backward: gradients averaged across ranks when the step bypassed the DDP
        wrapper, unscaled (fp16), clipped, then stepped; fires ``before_step`` / ``after_step``."""
        optimizer = optimizer or self.optimizer
        self.fire("before_step")
        if self.dist.enabled and getattr(self.strategy, "bypasses_wrapper", False):
            ddp.average_gradients(_unwrap(self.model))
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if clip:
            self.clip_gradients()
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        self.fire("after_step")

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / "checkpoints" if self.run_dir else None

    def save(self, state: dict[str, Any], path: str | Path) -> Path:
        return atomic_torch_save(state, path)

    def _to_device(self, batch: Any, transform: Callable | None = None) -> tuple[torch.Tensor, ...]:
        """Move a batch to the device (non-blocking from pinned memory on CUDA); uint8 image batches go
        through ``transform`` there (batched augmentation / normalisation); images become channels_last."""
        non_blocking = self.device.type == "cuda"
        out = []
        for t in batch:
            t = t.to(self.device, non_blocking=non_blocking)
            if t.ndim == 4 and t.dtype == torch.uint8:
                if transform is None:
                    raise TypeError(
                        "the loader yields uint8 images (decode-once cache) but the trainer has no batch "
                        "transform to normalise them (pass batch_transform / eval_transform)"
                    )
                t = transform(t)
            if self.channels_last and t.ndim == 4 and t.is_floating_point():
                t = t.contiguous(memory_format=torch.channels_last)
            out.append(t)
        return tuple(out)

    # ------------------------------------------------------------------ training
    def fit(self, train_loader: Iterable, val_loader: Iterable | None = None) -> list[dict[str, float]]:
        """Train from ``self.epoch`` to ``self.epochs``; returns the history (one dict per epoch)."""
        self.steps_per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else None
        self.fire("before_fit")
        while self.epoch < self.epochs:
            index = self.epoch
            # Each epoch draws from its own seed, so a resumed run repeats the uninterrupted one.
            seed_everything(self.seed * 1000 + index)
            generator = getattr(train_loader, "generator", None)
            if isinstance(generator, torch.Generator):  # shuffling order and worker seeds
                generator.manual_seed(self.seed * 1000 + index)
            for part in (getattr(train_loader, "dataset", None), getattr(train_loader, "sampler", None)):
                if hasattr(part, "set_epoch"):  # per-epoch draws of samplers / BBN's reversed pairs
                    part.set_epoch(index)
            self.fire("before_epoch", index)
            lr = self.lr
            start = time.perf_counter()
            train = self.last_train = self._train_epoch(train_loader)
            row: dict[str, float] = {"epoch": index + 1, "train_loss": train["loss"]}
            row |= self.train_scores.row("train", train)
            if val_loader is not None:
                val = self.evaluate(val_loader)
                row |= {"val_loss": val["loss"], **self.eval_scores.row("val", val)}
            row["lr"] = lr
            for cb in self.callbacks:
                row |= cb.history_fields(self)
            row["seconds"] = time.perf_counter() - start
            self.history.append(row)
            self.epoch = index + 1
            key = self.train_scores.selection
            metric = row.get(f"val_{key}", row[f"train_{key}"])
            if metric > self.best_metric:
                self.best_metric, self.best_epoch = metric, index + 1
            self.fire("after_epoch", row)
        self.fire("after_fit")
        return self.history

    def _train_epoch(self, loader: Iterable) -> dict[str, Any]:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self.train_scores.reset(self.device)
        seen = 0
        for step, batch in enumerate(loader):
            self.fire("before_batch", step)
            x, y, *extra = self._to_device(batch, self.batch_transform)
            loss, logits = self.strategy.train_step(self, x, y, *extra)
            loss_sum += loss.double() * y.shape[0]
            self.train_scores.update(logits, self.strategy.metric_targets(y, tuple(extra)))
            seen += y.shape[0]
            self.fire("after_batch", step, loss, logits)
        self.fire("after_train_epoch")
        totals = torch.cat([loss_sum.view(1), self.train_scores.sums(),
                            torch.tensor([seen], dtype=torch.float64, device=self.device)])
        if self.dist.enabled:  # epoch sums over all ranks
            ddp.all_reduce_sum(totals)
        seen = int(totals[-1])
        if seen == 0:
            raise ValueError("the training loader yielded no batches (batch_size larger than the training set?)")
        return {"loss": float(totals[0]) / seen, **self.train_scores.result(totals[1:-1], seen)}

    def diverged(self, index: int, step: int | None) -> None:
        where = f"epoch {index + 1}" + (f", step {step + 1}" if step is not None else "")
        last = self.checkpoint_dir / "last.pt" if self.checkpoint_dir else None
        if last is not None and last.is_file():
            kept = f"the last good checkpoint is kept ({last})"
        else:  # only say "kept" about a file that exists
            kept = "no checkpoint was written (no epoch had finished)" if last else "no checkpoint (no run_dir)"
        raise TrainingDiverged(f"training loss became NaN/inf at {where}; training stopped, {kept}. Lower `lr`?")

    def write_history(self, path: str | Path) -> Path:
        """Write the history as CSV (atomic)."""
        fields: list[str] = []
        for row in self.history:
            fields += [k for k in row if k not in fields]

        def write(fh: Any) -> None:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.history)

        return atomic_write(path, write, newline="")

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and targets for a whole loader (on the CPU)."""
        self.model.eval()
        model = _unwrap(self.model) if self.dist.enabled else self.model  # no DDP hooks in evaluation
        logits, targets = [], []
        for batch in loader:
            x, y = self._to_device(batch[:2], self.eval_transform)
            with self.autocast():
                out = model(x)
            logits.append(out.float())
            targets.append(y)
        logits_t, targets_t = torch.cat(logits), torch.cat(targets)
        sampler = getattr(loader, "sampler", None)
        if self.dist.enabled and isinstance(sampler, ddp.ShardedSampler) and not sampler.pad:
            total = len(sampler.inner)  # each rank predicted every W-th item: put them back in order
            logits_t = ddp.gather_interleaved(logits_t, total)
            targets_t = ddp.gather_interleaved(targets_t, total)
        return logits_t.cpu(), targets_t.cpu()

    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Single-label: mean cross-entropy, top-1 and top-5 accuracy. Multilabel: the training loss,
        exact-match accuracy ('top1') and micro-F1 ('f1') at threshold 0.5."""
        self.fire("before_eval")
        logits, targets = self.predict(loader)
        self.last_predictions = (logits, targets)
        scores = self.eval_scores
        scores.reset(logits.device)
        scores.update(logits, [(1.0, targets)])
        results = scores.result(scores.sums(), len(targets))
        results["loss"] = scores.eval_loss(
            logits, targets, lambda a, b: self.loss_fn(a.to(self.device), b.to(self.device))
        )
        results = {"loss": results.pop("loss"), **results}
        self.fire("after_eval", results)
        return results

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        model = _unwrap(self.model)
        return {
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": self.epoch,
            "history": self.history,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "rng": _rng_state(),
            "strategy": self.strategy.state_dict(),
            "num_classes": getattr(model, "num_classes", None),
            "model_name": getattr(model, "name", type(model).__name__),
            "meta": dict(self.checkpoint_meta),
            **self.checkpoint_extra,
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        model = _unwrap(self.model)
        ours, theirs = getattr(model, "num_classes", None), state.get("num_classes")
        if ours is not None and theirs is not None and ours != theirs:
            raise CheckpointError(
                f"{source}: checkpoint has {theirs} classes, the model has {ours}; expected a checkpoint of a "
                f"{ours}-class model (same data and classes): use a new run_dir instead of resume"
            )
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{source}: checkpoint does not fit the model: {str(exc)[:300]}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.strategy.load_state_dict(state.get("strategy") or {})
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])
        _set_rng_state(state["rng"])

    def update_checkpoint_meta(self, **fields: Any) -> list[Path]:
        """Add ``fields`` to ``checkpoint_meta`` (e.g. multi-label thresholds found after training) and to the
        ``meta`` of the checkpoints already written (rank 0; atomic rewrite). Returns the files rewritten."""
        self.checkpoint_meta.update(fields)
        written: list[Path] = []
        if self.checkpoint_dir is not None and self.dist.is_main:
            for path in (self.checkpoint_dir / "best.pt", self.checkpoint_dir / "last.pt"):
                if path.is_file():
                    state = torch.load(path, map_location="cpu", weights_only=False)
                    state["meta"] = {**(state.get("meta") or {}), **fields}
                    written.append(self.save(state, path))
        ddp.barrier()
        return written

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"resume asked for, but there is no checkpoint at {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # truncated file, not a checkpoint at all, pickle from elsewhere
            raise CheckpointError(
                f"{path}: cannot read checkpoint ({type(exc).__name__}: {str(exc)[:200]}); expected a file "
                f"written by the Trainer (checkpoints/last.pt or best.pt)"
            ) from None
        if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
            raise CheckpointError(f"{path}: not a Trainer checkpoint; expected a dict with 'model' and 'epoch'")
        self.load_state_dict(state, source=str(path))

    def resume(self) -> None:
        """Continue from ``run_dir/checkpoints/last.pt``."""
        if self.checkpoint_dir is None:
            raise CheckpointError("resume asked for, but the trainer has no run_dir")
        self.load_checkpoint(self.checkpoint_dir / "last.pt")
        self.log(f"resumed from {self.checkpoint_dir / 'last.pt'} after epoch {self.epoch}")

    def load_best(self) -> None:
        """Load the weights of ``best.pt`` (if it exists) into the model."""
        if self.checkpoint_dir is None or not (self.checkpoint_dir / "best.pt").is_file():
            return
        state = torch.load(self.checkpoint_dir / "best.pt", map_location="cpu", weights_only=False)
        _unwrap(self.model).load_state_dict(state["model"])
