"""The one Trainer: fit / evaluate / predict with pluggable training strategies (plain, OHEM, SAM).

A strategy owns what happens in one optimisation step; the Trainer owns the loop, history, LR schedule,
checkpoints (atomic ``last.pt`` / ``best.pt``) and resume. Later notebooks add strategies (BBN mixing,
COT alternation) with ``register_strategy`` instead of copying the loop.
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
import torch.nn.functional as F
from torch import nn

from . import distributed as ddp
from .fileio import atomic_write
from .optim import LRSchedule, bn_stats_frozen
from .registry import unknown_name_error


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing or does not fit the model."""


# ---------------------------------------------------------------------------------------------- strategies
class TrainStrategy:
    """One optimisation step on a batch. Subclasses override ``train_step`` and optionally the hooks."""

    name = "plain"
    bypasses_wrapper = False  # True: train_step calls the unwrapped model (no DDP gradient hooks)
    supports_fp16 = True  # False: the step cannot work with a GradScaler

    def on_epoch_start(self, trainer: Trainer, epoch_index: int) -> None:
        """Called before each epoch (0-based index)."""

    def history_fields(self) -> dict[str, float]:
        """Extra per-epoch values for the history (e.g. the OHEM ratio)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Strategy state that must survive a resume (e.g. a second optimizer)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def train_step(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (detached mean loss, detached logits). ``extra`` holds further batch items (BBN's second
        sample)."""
        trainer.optimizer.zero_grad(set_to_none=True)
        with trainer.autocast():
            logits = trainer.model(x)
            loss = trainer.loss_fn(logits, y)
        trainer.backward(loss)
        trainer.step()
        return loss.detach(), logits.detach()


class OHEMStrategy(TrainStrategy):
    """Plain step with an OHEM loss whose keep ratio follows a per-epoch schedule."""

    name = "ohem"

    def __init__(self, schedule: Callable[[int], float]):
        self.schedule = schedule
        self.ratio = 1.0

    def on_epoch_start(self, trainer: Trainer, epoch_index: int) -> None:
        if not hasattr(trainer.loss_fn, "ratio"):
            raise TypeError("the OHEM strategy needs a loss with a `ratio` attribute (loss: ohem)")
        self.ratio = float(self.schedule(epoch_index))
        trainer.loss_fn.ratio = max(self.ratio, 1e-12)

    def history_fields(self) -> dict[str, float]:
        return {"ohem_ratio": self.ratio}


class SAMStrategy(TrainStrategy):
    """Sharpness-aware minimisation: ascent step, second forward/backward at w + e, descent step.

    BatchNorm running statistics are updated by the first pass only.
    """

    name = "sam"
    supports_fp16 = False  # the ascent step reads raw gradients; use amp: bf16

    def train_step(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        opt = trainer.optimizer
        if not hasattr(opt, "first_step"):
            raise TypeError("the SAM strategy needs optimizer: sam")
        opt.zero_grad(set_to_none=True)
        with trainer.autocast():
            logits = trainer.model(x)
            loss = trainer.loss_fn(logits, y)
        loss.backward()
        opt.first_step(zero_grad=True)
        with bn_stats_frozen(trainer.model), trainer.autocast():
            trainer.loss_fn(trainer.model(x), y).backward()
        trainer.clip_gradients()
        opt.second_step(zero_grad=True)
        return loss.detach(), logits.detach()


class FeatureLossStrategy(TrainStrategy):
    """A loss that also needs the last feature map: ``loss_fn(logits, features, target)`` (MC loss).

    The model must offer ``forward_with_features(x) -> (logits, (B, C, H, W) features)``.
    """

    name = "features"
    bypasses_wrapper = True  # calls the unwrapped model: gradients are averaged by hand under DDP

    def train_step(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model = _unwrap(trainer.model)
        if not hasattr(model, "forward_with_features"):
            raise TypeError(
                f"loss needs feature maps, but {type(model).__name__} has no forward_with_features"
            )
        trainer.optimizer.zero_grad(set_to_none=True)
        with trainer.autocast():
            logits, features = model.forward_with_features(x)
            loss = trainer.loss_fn(logits, features, y)
        trainer.backward(loss)
        trainer.step()
        return loss.detach(), logits.detach()


class BBNStrategy(TrainStrategy):
    """Bilateral-branch step: uniform batch -> f_c, reversed batch -> f_r, one classifier on
    ``2 * cat(alpha f_c, (1 - alpha) f_r)``, loss ``alpha CE(z, y_c) + (1 - alpha) CE(z, y_r)``.

    ``alpha_fn`` takes the 1-indexed epoch (as the official code). The loader yields (x_c, y_c, x_r, y_r).
    """

    name = "bbn"
    bypasses_wrapper = True

    def __init__(self, alpha_fn: Callable[[int], float]):
        self.alpha_fn = alpha_fn
        self.alpha = 1.0

    def on_epoch_start(self, trainer: Trainer, epoch_index: int) -> None:
        self.alpha = float(self.alpha_fn(epoch_index + 1))

    def history_fields(self) -> dict[str, float]:
        return {"bbn_alpha": self.alpha}

    def train_step(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(extra) != 2:
            raise TypeError(
                "the BBN strategy needs batches (x_c, y_c, x_r, y_r) from a reversed-pair dataset"
            )
        x_r, y_r = extra
        model = _unwrap(trainer.model)
        a = self.alpha
        trainer.optimizer.zero_grad(set_to_none=True)
        with trainer.autocast():
            logits = model.mix(model.branch_features(x, "c"), model.branch_features(x_r, "r"), a)
            loss = a * trainer.loss_fn(logits, y) + (1 - a) * trainer.loss_fn(logits, y_r)
        trainer.backward(loss)
        trainer.step()
        return loss.detach(), logits.detach()


class COTStrategy(TrainStrategy):
    """Complement objective training as the official code: a cross-entropy step, then a second forward on
    the same batch (updated weights) with the complement entropy and its own optimizer (same LR schedule)."""

    name = "cot"

    def __init__(self, complement_loss: nn.Module, complement_optimizer: torch.optim.Optimizer):
        self.complement_loss = complement_loss
        self.complement_optimizer = complement_optimizer
        self.last_complement = 0.0

    def train_step(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = TrainStrategy.train_step(self, trainer, x, y)
        for group, main in zip(
            self.complement_optimizer.param_groups, trainer.optimizer.param_groups, strict=True
        ):
            group["lr"] = main["lr"]  # the complement optimizer follows the same schedule
        self.complement_optimizer.zero_grad(set_to_none=True)
        with trainer.autocast():
            complement = self.complement_loss(trainer.model(x), y)
        trainer.backward(complement)
        trainer.step(self.complement_optimizer, clip=False)
        return loss, logits

    def state_dict(self) -> dict[str, Any]:
        return {"complement_optimizer": self.complement_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "complement_optimizer" in state:
            self.complement_optimizer.load_state_dict(state["complement_optimizer"])


_STRATEGIES: dict[str, Callable[..., TrainStrategy]] = {
    "plain": TrainStrategy,
    "ohem": OHEMStrategy,
    "sam": SAMStrategy,
    "features": FeatureLossStrategy,
    "bbn": BBNStrategy,
    "cot": COTStrategy,
}


def register_strategy(name: str) -> Callable:
    def wrap(factory: Callable[..., TrainStrategy]) -> Callable[..., TrainStrategy]:
        _STRATEGIES[name] = factory
        return factory

    return wrap


def list_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def create_strategy(name: str, **kwargs: Any) -> TrainStrategy:
    if name not in _STRATEGIES:
        raise unknown_name_error("strategy", name, list_strategies())
    return _STRATEGIES[name](**kwargs)


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


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


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
    """Train a classifier; one history row per epoch; ``best.pt`` by validation top-1, ``last.pt`` every epoch."""

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
        amp: bool = False,
        log: Callable[[str], None] | None = print,
        checkpoint_extra: dict[str, Any] | None = None,
        task: str = "single",
        channels_last: bool = False,
        compile: bool = False,  # noqa: A002 - the parameter name users know from torch.compile
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        eval_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        callbacks: Iterable[Callable[[Trainer, dict[str, float]], None]] = (),
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
        self.callbacks = list(callbacks)
        self.check_every = max(1, int(check_every))
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
        if task not in ("single", "multilabel"):
            raise ValueError(f"task: expected 'single' or 'multilabel', got {task!r}")
        # multilabel: sigmoid outputs, 0/1 target vectors; accuracy = exact match at 0.5, plus micro-F1
        self.task = task
        self.history: list[dict[str, float]] = []
        self.epoch = 0  # epochs completed
        self.best_metric = -math.inf
        self.best_epoch = 0

    # ------------------------------------------------------------------ small pieces
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def clip_gradients(self) -> None:
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled under fp16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer | None = None, *, clip: bool = True) -> None:
        """Optimizer step after backward: gradients averaged across ranks when the strategy bypassed the DDP
        wrapper, unscaled (fp16), clipped, then stepped."""
        optimizer = optimizer or self.optimizer
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

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / "checkpoints" if self.run_dir else None

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

    def _bar(self, loader: Iterable, desc: str) -> Iterable:
        if not self.progress:
            return loader
        try:  # widget bars in Jupyter when ipywidgets is there, plain text bars otherwise
            import ipywidgets  # noqa: F401
            from tqdm.auto import tqdm
        except ImportError:
            from tqdm import tqdm

        return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)

    # ------------------------------------------------------------------ training
    def fit(self, train_loader: Iterable, val_loader: Iterable | None = None) -> list[dict[str, float]]:
        """Train from ``self.epoch`` to ``self.epochs``; returns the history (one dict per epoch)."""
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
            self.strategy.on_epoch_start(self, index)
            lr = self.lr
            start = time.perf_counter()
            train = self._train_epoch(train_loader, index)
            row: dict[str, float] = {
                "epoch": index + 1,
                "train_loss": train["loss"],
                "train_acc": train["top1"],
            }
            if self.task == "multilabel":
                row["train_f1"] = train["f1"]
            if val_loader is not None:
                val = self.evaluate(val_loader)
                row.update(val_loss=val["loss"], val_acc=val["top1"])
                row.update({"val_f1": val["f1"]} if self.task == "multilabel" else {"val_top5": val["top5"]})
            row["lr"] = lr
            row.update(self.strategy.history_fields())
            row["seconds"] = time.perf_counter() - start
            self.history.append(row)
            self.epoch = index + 1
            if self.scheduler is not None:
                self.scheduler.step_epoch(row.get("val_loss", row["train_loss"]))
            self._after_epoch(row)
            for callback in self.callbacks:
                callback(self, row)
        return self.history

    def _train_epoch(self, loader: Iterable, index: int) -> dict[str, float]:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        counts = torch.zeros(3, device=self.device, dtype=torch.long)  # multilabel tp, fp, fn
        # first step whose loss was not finite, tracked on the device: no host sync per step; checked every
        # ``check_every`` steps (and at the end), so training stops within that many steps of a NaN
        first_bad = torch.full((), -1, device=self.device, dtype=torch.long)
        seen = 0
        step = -1
        for step, batch in enumerate(self._bar(loader, f"epoch {index + 1}/{self.epochs}")):
            x, y, *extra = self._to_device(batch, self.batch_transform)
            loss, logits = self.strategy.train_step(self, x, y, *extra)
            if self.scheduler is not None:
                self.scheduler.step_batch()
            bad = (first_bad < 0) & ~torch.isfinite(loss)
            first_bad = torch.where(bad, torch.full_like(first_bad, step), first_bad)
            if step % self.check_every == 0 and int(first_bad) >= 0:
                self._diverged(index, int(first_bad))
            loss_sum += loss.float() * y.shape[0]
            if self.task == "multilabel":
                pred, truth = logits > 0, y > 0.5
                correct += (pred == truth).all(1).sum()
                counts += torch.stack([(pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()])
            else:
                correct += (logits.argmax(1) == y).sum()
            seen += y.shape[0]
        if step >= 0 and int(first_bad) >= 0:
            self._diverged(index, int(first_bad))
        if self.dist.enabled:  # epoch sums over all ranks
            totals = torch.cat([loss_sum.double().view(1), correct.double().view(1), counts.double(),
                                torch.tensor([seen], dtype=torch.float64, device=self.device)])
            ddp.all_reduce_sum(totals)
            loss_sum, correct, counts, seen = totals[0], totals[1], totals[2:5], int(totals[5])
        if seen == 0:
            raise ValueError(
                "the training loader yielded no batches (batch_size larger than the training set?)"
            )
        out = {"loss": float(loss_sum) / seen, "top1": float(correct) / seen}
        if self.task == "multilabel":
            tp, fp, fn = (float(v) for v in counts)
            out["f1"] = 2 * tp / max(2 * tp + fp + fn, 1.0)
        return out

    def _diverged(self, index: int, step: int | None) -> None:
        where = f"epoch {index + 1}" + (f", step {step + 1}" if step is not None else "")
        raise TrainingDiverged(
            f"training loss became NaN/inf at {where}; training stopped, the last good checkpoint is kept "
            f"({self.checkpoint_dir / 'last.pt' if self.checkpoint_dir else 'no run_dir'}). Lower `lr`?"
        )

    def _after_epoch(self, row: dict[str, float]) -> None:
        parts = [
            f"epoch {int(row['epoch'])}/{self.epochs}",
            f"train_loss {row['train_loss']:.4f}",
            f"train_acc {row['train_acc']:.3f}",
        ]
        if "val_loss" in row:
            parts += [f"val_loss {row['val_loss']:.4f}", f"val_acc {row['val_acc']:.3f}"]
        parts += [f"lr {row['lr']:.3g}", f"{row['seconds']:.1f}s"]
        key = "f1" if self.task == "multilabel" else "acc"
        metric = row.get(f"val_{key}", row[f"train_{key}"])
        improved = metric > self.best_metric
        if improved:
            self.best_metric, self.best_epoch = metric, int(row["epoch"])
            parts.append("*")
        self.log("  ".join(parts))
        if self.run_dir is not None and self.dist.is_main:  # only rank 0 writes
            self.write_history(self.run_dir / "history.csv")
            state = self.state_dict()
            if improved:
                atomic_torch_save(state, self.checkpoint_dir / "best.pt")
            atomic_torch_save(state, self.checkpoint_dir / "last.pt")
        ddp.barrier()  # other ranks read best.pt / last.pt only after rank 0 wrote them

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
        logits, targets = self.predict(loader)
        if self.task == "multilabel":
            pred, truth = logits > 0, targets > 0.5
            tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
            with torch.no_grad():
                loss = self.loss_fn(logits.to(self.device), targets.to(self.device).float())
            return {
                "loss": float(loss),
                "top1": float((pred == truth).all(1).float().mean()),
                "f1": float(2 * tp / max(int(2 * tp + fp + fn), 1)),
            }
        k = min(5, logits.shape[1])
        top5 = logits.topk(k, dim=1).indices.eq(targets[:, None]).any(1).float().mean()
        return {
            "loss": float(F.cross_entropy(logits, targets)),
            "top1": float((logits.argmax(1) == targets).float().mean()),
            "top5": float(top5),
        }

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
