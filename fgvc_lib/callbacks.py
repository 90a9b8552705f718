"""Trainer callbacks: everything that only reads or schedules, outside the optimisation step.

Events, in the order the Trainer fires them (each a method of :class:`Callback`, all optional)::

    before_fit
      before_epoch(epoch_index)           # 0-based
        before_batch(step)                # per training batch
          after_loss, before_backward, after_backward, before_step, after_step   # fired by the step
        after_batch(step, loss, logits)
        after_train_epoch                 # every training batch done
        before_eval, after_eval(results)  # validation (also from Trainer.evaluate)
        history_fields() -> dict          # extra columns of this epoch's history row
      after_epoch(row)                    # the row is complete (history appended)
    after_fit

Built-ins: :class:`LRScheduleCallback` (drives an ``LRSchedule``), :class:`OHEMSchedule` (the OHEM keep ratio
per epoch), :class:`BBNAlpha` (BBN's cumulative-learning alpha), :class:`NaNGuard`, :class:`Checkpointer`
(``history.csv``, ``best.pt``, ``last.pt``), :class:`EpochLog` (one line per epoch), :class:`ProgressBar`
(tqdm, never touches the loader), :class:`LiveLearningCurves` (a figure that updates in Jupyter). Display
callbacks only read: a display option never changes what is computed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from . import distributed as ddp

# fgvc_lib.engine.Trainer and fgvc_lib.optim.LRSchedule; not imported here, so the engine can import this module
Trainer = Any
LRSchedule = Any


class Callback:
    """Base class: override the events you need. ``order``: lower runs first within an event."""

    order = 0

    def before_fit(self, trainer: Trainer) -> None: ...
    def before_epoch(self, trainer: Trainer, epoch_index: int) -> None: ...
    def before_batch(self, trainer: Trainer, step: int) -> None: ...
    def after_loss(self, trainer: Trainer, loss: torch.Tensor) -> None: ...
    def before_backward(self, trainer: Trainer) -> None: ...
    def after_backward(self, trainer: Trainer) -> None: ...
    def before_step(self, trainer: Trainer) -> None: ...
    def after_step(self, trainer: Trainer) -> None: ...
    def after_batch(self, trainer: Trainer, step: int, loss: torch.Tensor, logits: torch.Tensor) -> None: ...
    def after_train_epoch(self, trainer: Trainer) -> None: ...
    def before_eval(self, trainer: Trainer) -> None: ...
    def after_eval(self, trainer: Trainer, results: dict[str, float]) -> None: ...
    def after_epoch(self, trainer: Trainer, row: dict[str, float]) -> None: ...
    def after_fit(self, trainer: Trainer) -> None: ...

    def history_fields(self, trainer: Trainer) -> dict[str, float]:
        """Extra columns for the epoch's history row."""
        return {}


class EpochEnd(Callback):
    """A plain function ``fn(trainer, row)`` called after every epoch (what ``Trainer(callbacks=[fn])`` wraps)."""

    order = 100

    def __init__(self, fn: Callable[[Trainer, dict[str, float]], None]):
        self.fn = fn

    def after_epoch(self, trainer: Trainer, row: dict[str, float]) -> None:
        self.fn(trainer, row)


# ---------------------------------------------------------------------------------------------- schedules
class LRScheduleCallback(Callback):
    """Drives an ``LRSchedule``: ``step_batch`` after every training batch, ``step_epoch`` after validation
    (with the validation loss, else the training loss, for ReduceLROnPlateau)."""

    order = -10  # before the epoch's row is logged and checkpointed

    def __init__(self, schedule: LRSchedule):
        self.schedule = schedule

    def after_batch(self, trainer: Trainer, step: int, loss: torch.Tensor, logits: torch.Tensor) -> None:
        self.schedule.step_batch()

    def after_epoch(self, trainer: Trainer, row: dict[str, float]) -> None:
        self.schedule.step_epoch(row.get("val_loss", row["train_loss"]))


class OHEMSchedule(Callback):
    """Sets the OHEM loss's keep ratio before each epoch from ``schedule(epoch_index)``; column ``ohem_ratio``.
    Works with any step (plain, SAM, ...): the loss reads its ratio."""

    def __init__(self, schedule: Callable[[int], float]):
        self.schedule = schedule
        self.ratio = 1.0

    def before_epoch(self, trainer: Trainer, epoch_index: int) -> None:
        if not hasattr(trainer.loss_fn, "ratio"):
            raise TypeError("the OHEM schedule needs a loss with a `ratio` attribute (loss: ohem)")
        self.ratio = float(self.schedule(epoch_index))
        trainer.loss_fn.ratio = max(self.ratio, 1e-12)

    def history_fields(self, trainer: Trainer) -> dict[str, float]:
        return {"ohem_ratio": self.ratio}


class BBNAlpha(Callback):
    """BBN's cumulative-learning alpha: ``alpha_fn(1-based epoch)`` set on the BBN step before each epoch;
    columns ``bbn_alpha`` and the accuracy against each sampler's labels (``train_acc_uniform``,
    ``train_acc_reversed``), whose alpha-weighted mean is ``train_acc``."""

    def __init__(self, alpha_fn: Callable[[int], float]):
        self.alpha_fn = alpha_fn

    def before_epoch(self, trainer: Trainer, epoch_index: int) -> None:
        trainer.strategy.alpha = float(self.alpha_fn(epoch_index + 1))

    def history_fields(self, trainer: Trainer) -> dict[str, float]:
        fields = {"bbn_alpha": float(trainer.strategy.alpha)}
        parts = trainer.last_train.get("parts")
        if parts and len(parts) == 2:
            fields |= {"train_acc_uniform": parts[0], "train_acc_reversed": parts[1]}
        return fields


# ---------------------------------------------------------------------------------------------- safety, files
class NaNGuard(Callback):
    """Stops training within ``check_every`` steps of the first non-finite loss. The first bad step is tracked
    on the device (no host sync per step) and read every ``check_every`` steps and at the end of the epoch."""

    def __init__(self, check_every: int = 50):
        self.check_every = max(1, int(check_every))
        self.first_bad: torch.Tensor | None = None

    def before_epoch(self, trainer: Trainer, epoch_index: int) -> None:
        self.first_bad = torch.full((), -1, device=trainer.device, dtype=torch.long)
        self.epoch_index = epoch_index

    def after_batch(self, trainer: Trainer, step: int, loss: torch.Tensor, logits: torch.Tensor) -> None:
        bad = (self.first_bad < 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)
        if step % self.check_every == 0:
            self._check(trainer)

    def after_train_epoch(self, trainer: Trainer) -> None:
        self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        if self.first_bad is not None and int(self.first_bad) >= 0:
            trainer.diverged(self.epoch_index, int(self.first_bad))


class Checkpointer(Callback):
    """After every epoch (rank 0 only): ``history.csv``, ``checkpoints/best.pt`` when the selection metric
    improved, ``checkpoints/last.pt``; every file written atomically."""

    order = 50  # after the schedules stepped, so last.pt resumes exactly

    def after_epoch(self, trainer: Trainer, row: dict[str, float]) -> None:
        if trainer.run_dir is not None and trainer.dist.is_main:
            trainer.write_history(trainer.run_dir / "history.csv")
            state = trainer.state_dict()
            if trainer.best_epoch == int(row["epoch"]):
                trainer.save(state, trainer.checkpoint_dir / "best.pt")
            trainer.save(state, trainer.checkpoint_dir / "last.pt")
        ddp.barrier()  # other ranks read best.pt / last.pt only after rank 0 wrote them


# ---------------------------------------------------------------------------------------------- display
def epoch_line(row: dict[str, float], epochs: int, improved: bool) -> str:
    parts = [f"epoch {int(row['epoch'])}/{epochs}", f"train_loss {row['train_loss']:.4f}",
             f"train_acc {row['train_acc']:.3f}"]
    if "val_loss" in row:
        parts += [f"val_loss {row['val_loss']:.4f}", f"val_acc {row['val_acc']:.3f}"]
    if "val_f1" in row:
        parts.append(f"val_f1 {row['val_f1']:.3f}")
    parts += [f"lr {row['lr']:.3g}", f"{row['seconds']:.1f}s"]
    return "  ".join(parts) + ("  *" if improved else "")


class EpochLog(Callback):
    """One line per epoch through ``trainer.log`` (``*`` marks a new best)."""

    order = 40

    def after_epoch(self, trainer: Trainer, row: dict[str, float]) -> None:
        trainer.log(epoch_line(row, trainer.epochs, trainer.best_epoch == int(row["epoch"])))


#: Set (to "1") in the environment of a kernel that ``fgvc run`` or a grid executes headless: no progress bar.
HEADLESS_ENV = "FGVC_HEADLESS"


class ProgressBar(Callback):
    """One tqdm bar for the whole fit (a widget in Jupyter when ipywidgets is there), reset at the start of each
    training epoch and advanced after each batch, so a notebook keeps one bar output, not one per epoch. It never
    wraps or iterates the loader (a bar that did advanced the loader's seeded generator and changed results),
    and it reads ``len(loader)`` only. A text bar is cleared after each training epoch, so the epoch line and
    evaluation print on a clean line."""

    def __init__(self) -> None:
        self.bar: Any = None

    def before_fit(self, trainer: Trainer) -> None:
        self._close()  # a bar left open by an earlier fit that raised

    def before_epoch(self, trainer: Trainer, epoch_index: int) -> None:
        description = f"epoch {epoch_index + 1}/{trainer.epochs}"
        if self.bar is not None:
            self.bar.set_description(description, refresh=False)
            self.bar.reset(total=trainer.steps_per_epoch)
            return
        if os.environ.get(HEADLESS_ENV):  # executed by `fgvc run` / a grid: the epoch lines say it all, and a
            return  # bar saved into the executed notebook would only show its last, stale state
        try:  # widget bars in Jupyter when ipywidgets is there, plain text bars otherwise
            import ipywidgets  # noqa: F401
            from tqdm.auto import tqdm
        except ImportError:
            from tqdm import tqdm
        self.bar = tqdm(total=trainer.steps_per_epoch, desc=description, leave=False, dynamic_ncols=True)

    def after_batch(self, trainer: Trainer, step: int, loss: torch.Tensor, logits: torch.Tensor) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def after_train_epoch(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.clear()  # text bars only (a widget's clear does nothing)

    def after_fit(self, trainer: Trainer) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (papermill's included)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class LiveLearningCurves(Callback):
    """In a Jupyter kernel: one learning-curve figure that is redrawn in place after every epoch (one output
    through a display handle, also in a notebook papermill executes; display only; outside a kernel it does
    nothing). The figure is sent as a PNG, so it shows whatever matplotlib backend the kernel has (``Agg``
    included, where a Figure object would display as its text repr)."""

    order = 60

    def __init__(self, title: str = "") -> None:
        self.title = title
        self.handle: Any = None

    def after_epoch(self, trainer: Trainer, row: dict[str, float]) -> None:
        if not in_notebook() or not trainer.dist.is_main:
            return
        import io

        from IPython.display import Image, display

        from .plots import learning_curves

        fig = learning_curves(trainer.history, title=f"{self.title} (epoch {int(row['epoch'])}/{trainer.epochs})")
        png = io.BytesIO()
        fig.savefig(png, format="png", bbox_inches="tight")  # a pyplot-free Figure: nothing to close
        image = Image(data=png.getvalue(), format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)

    def after_fit(self, trainer: Trainer) -> None:
        self.handle = None
