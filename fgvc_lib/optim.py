"""Optimizers (SGD/Adam/AdamW and SAM), BatchNorm helpers for SAM, and LR schedules behind one stepping API.

Two registries (:class:`fgvc_lib.registry.Registry`): ``OPTIMIZERS`` and ``SCHEDULERS``, with the timm-style
wrappers ``register_optimizer`` / ``create_optimizer`` / ``list_optimizers`` and ``register_scheduler`` /
``create_scheduler`` / ``list_schedulers``. An unknown name is a ValueError listing the choices; an option a
factory does not take (e.g. ``rho`` for ``sgd``, ``momentum`` for ``adam``) is a TypeError naming it.

Every keyword is named after the experiment parameter that sets it (``fgvc_lib.config``), so an experiment
builds both without branching on the name::

    optimizer = OPTIMIZERS.create_from(p.optimizer, p, model.parameters())
    scheduler = SCHEDULERS.create_from(p.scheduler, p, optimizer, steps_per_epoch=len(train_loader))

Optimizers, ``factory(params, **options)``:

- ``sgd``: lr, momentum (0.9), weight_decay (0), nesterov (False)
- ``adam`` / ``adamw``: lr, weight_decay (0), betas ((0.9, 0.999)), eps (1e-8)
- ``sam`` (SGD base): lr, momentum (0.9), weight_decay (0), nesterov (False), rho (0.05)
- ``sam_adamw``: lr, weight_decay (0), betas, eps, rho (0.05)

LR schedules, ``factory(optimizer, *, epochs, steps_per_epoch, **options)`` (a SAM optimizer is scheduled
through its base optimizer; ``lr_min`` is always the lowest LR):

- ``none``: no option
- ``plateau`` (steps on the validation loss): factor (0.5), patience (4), cooldown (1), threshold (1e-4),
  lr_min (0)
- ``cosine`` (per epoch, over ``epochs``): lr_min (0)
- ``cosine_restarts`` (per batch): t0 (epochs per cycle; default epochs // 4), t_mult (1), lr_min (0)
- ``exponential`` (per epoch, lr0 * lr_decay ** (epoch / lr_period)): lr_decay (0.8), lr_period (3)
- ``onecycle`` (per batch, peak = the optimizer's LR): pct_start (0.3), div_factor (25), lr_min (lowest LR at
  the end; default peak / div_factor / 1e4) or final_div_factor (not both), base_momentum (0.85),
  max_momentum (0.95), cycle_momentum (True)
- ``multistep`` (per epoch): lr_steps (epochs at which the LR is multiplied by lr_gamma; required, may be
  empty), lr_gamma (0.1)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer, lr_scheduler

from .registry import Registry

__all__ = [
    "SAM",
    "disable_running_stats",
    "enable_running_stats",
    "bn_stats_frozen",
    "OPTIMIZERS",
    "register_optimizer",
    "create_optimizer",
    "list_optimizers",
    "LRSchedule",
    "SCHEDULERS",
    "register_scheduler",
    "create_scheduler",
    "list_schedulers",
]


# --------------------------------------------------------------------------------------------------- SAM


class SAM(Optimizer):
    """Sharpness-aware minimization around ``base_optimizer_cls`` (param_groups are shared with the base).

    Use ``first_step`` / ``second_step`` around a second forward-backward, or ``step(closure)``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer_cls: type[Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        **base_kwargs: Any,
    ) -> None:
        if not rho >= 0.0:
            raise ValueError(f"SAM rho must be >= 0, got rho={rho!r}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self._perturbed: list[Tensor] | None = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the (shared) param_groups, filling SAM's and the base optimizer's defaults."""
        if not hasattr(self, "base_optimizer"):  # called from Optimizer.__init__
            super().add_param_group(param_group)
            return
        param_group.setdefault("rho", self.defaults["rho"])
        param_group.setdefault("adaptive", self.defaults["adaptive"])
        self.base_optimizer.add_param_group(param_group)

    def _grad_norm(self) -> Tensor:
        norms: list[Tensor] = []
        device: torch.device | None = None
        for group in self.param_groups:
            adaptive = group.get("adaptive", self.defaults["adaptive"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                if device is None:
                    device = p.device
                g = p.grad * p.abs() if adaptive else p.grad
                acc = torch.promote_types(g.dtype, torch.float32)  # fp16/bf16 grads: no overflow in the norm
                norms.append(torch.linalg.vector_norm(g, dtype=acc).to(device))
        if not norms:
            return torch.zeros(())
        return torch.linalg.vector_norm(torch.stack(norms))

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save w and move to w + e, e = rho * g / ||g|| (adaptive: rho * w^2 * g / || |w| * g ||)."""
        if self._perturbed is not None:
            raise RuntimeError(
                "SAM.first_step() called twice; call second_step() to restore the weights first"
            )
        grad_norm = self._grad_norm()
        perturbed: list[Tensor] = []
        for group in self.param_groups:
            adaptive = group.get("adaptive", self.defaults["adaptive"])
            scale = group.get("rho", self.defaults["rho"]) / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "old_p" in state:
                    state["old_p"].copy_(p)
                else:
                    state["old_p"] = p.detach().clone()
                e = p.grad * scale.to(device=p.device, dtype=p.dtype)
                if adaptive:
                    e = e * p.square()
                p.add_(e)
                perturbed.append(p)
        self._perturbed = perturbed
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w and apply the base optimizer's update with the gradient taken at w + e."""
        if self._perturbed is None:
            raise RuntimeError("SAM.second_step() called without a preceding first_step()")
        for p in self._perturbed:
            p.copy_(self.state[p]["old_p"])
        self._perturbed = None
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Both SAM steps (call after the first backward); ``closure`` redoes forward + backward."""
        if closure is None:
            raise RuntimeError(
                "SAM.step() requires a closure that recomputes the loss and calls backward(); "
                "alternatively call first_step() and second_step() yourself"
            )
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict (SAM's saved weights are transient)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the base optimizer's state and re-share its (new) param_groups."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


def _batchnorms(model: nn.Module) -> Iterator[nn.modules.batchnorm._BatchNorm]:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            yield m


def disable_running_stats(model: nn.Module) -> None:
    """Set every BatchNorm's momentum to 0 (running stats frozen), remembering momentum and batch count."""
    for m in _batchnorms(model):
        if "_sam_saved_bn" in m.__dict__:
            continue  # already frozen: keep the original values
        nbt = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
        m.__dict__["_sam_saved_bn"] = (m.momentum, nbt)
        m.momentum = 0.0


def enable_running_stats(model: nn.Module) -> None:
    """Undo :func:`disable_running_stats`: restore momentum and ``num_batches_tracked``."""
    for m in _batchnorms(model):
        saved = m.__dict__.pop("_sam_saved_bn", None)
        if saved is None:
            continue
        m.momentum, nbt = saved
        if nbt is not None and m.num_batches_tracked is not None:
            m.num_batches_tracked.copy_(nbt)


@contextlib.contextmanager
def bn_stats_frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager for SAM's second pass: BatchNorm running statistics stay those of the first pass."""
    disable_running_stats(model)
    try:
        yield model
    finally:
        enable_running_stats(model)


# --------------------------------------------------------------------------------------------- optimizers

OPTIMIZERS: Registry[Callable[..., Optimizer]] = Registry("optimizer")
"""``factory(params, **options) -> Optimizer`` by name (options: see the module docstring)."""

register_optimizer = OPTIMIZERS.register  # register_optimizer(name, factory=None, *, replace=False)
create_optimizer = OPTIMIZERS.create  # create_optimizer(name, params, **options); unknown options: TypeError
list_optimizers = OPTIMIZERS.names

_BETAS = (0.9, 0.999)


@register_optimizer("sgd")
def _sgd(
    params: Iterable[Any], *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False
) -> Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


@register_optimizer("adam")
def _adam(
    params: Iterable[Any], *, lr: float, weight_decay: float = 0.0, betas: Sequence[float] = _BETAS, eps: float = 1e-8
) -> Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


@register_optimizer("adamw")
def _adamw(
    params: Iterable[Any], *, lr: float, weight_decay: float = 0.0, betas: Sequence[float] = _BETAS, eps: float = 1e-8
) -> Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


@register_optimizer("sam")
def _sam_sgd(
    params: Iterable[Any],
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    rho: float = 0.05,
) -> Optimizer:
    return SAM(
        params, torch.optim.SGD, rho=rho, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )


@register_optimizer("sam_adamw")
def _sam_adamw(
    params: Iterable[Any],
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: Sequence[float] = _BETAS,
    eps: float = 1e-8,
    rho: float = 0.05,
) -> Optimizer:
    return SAM(
        params, torch.optim.AdamW, rho=rho, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay
    )


# ------------------------------------------------------------------------------------------- LR schedules


class LRSchedule:
    """One LR schedule behind ``step_batch()`` (after every optimizer step) and ``step_epoch(val_loss)``.

    ``interval`` says what drives it: ``none``, ``batch``, ``epoch`` or ``val_loss`` (ReduceLROnPlateau).
    """

    def __init__(
        self,
        name: str,
        optimizer: Optimizer,
        scheduler: Any | None = None,
        *,
        interval: str = "none",
        steps_per_epoch: int = 1,
        fractional_epochs: bool = False,
        max_batch_steps: int | None = None,
    ) -> None:
        if interval not in ("none", "batch", "epoch", "val_loss"):
            raise ValueError(f"interval must be one of (none, batch, epoch, val_loss), got {interval!r}")
        self.name = name
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.interval = interval
        self.steps_per_epoch = steps_per_epoch
        self.fractional_epochs = fractional_epochs
        self.max_batch_steps = max_batch_steps
        self.epoch = 0  # completed epochs (step_epoch calls)
        self.batch_in_epoch = 0  # step_batch calls since the last step_epoch
        self.total_batches = 0  # step_batch calls overall

    @property
    def lr(self) -> float:
        """Current learning rate of parameter group 0."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step_batch(self) -> None:
        """Advance after one optimizer step (no-op for epoch-driven schedules)."""
        self.batch_in_epoch += 1
        self.total_batches += 1
        if self.interval != "batch" or self.scheduler is None:
            return
        if self.fractional_epochs:
            frac = min(self.batch_in_epoch, self.steps_per_epoch) / self.steps_per_epoch
            self.scheduler.step(self.epoch + frac)
        elif self.max_batch_steps is None or self.total_batches <= self.max_batch_steps:
            self.scheduler.step()  # past max_batch_steps (e.g. onecycle's total_steps) the final LR is held

    def step_epoch(self, val_loss: float | None = None) -> None:
        """Advance after an epoch's validation; ``val_loss`` is required by (and only used by) ``plateau``."""
        if self.interval == "val_loss":
            if val_loss is None:
                raise ValueError(f"LR schedule {self.name!r} steps on validation loss: pass val_loss=...")
            self.scheduler.step(float(val_loss))
        elif self.interval == "epoch" and self.scheduler is not None:
            self.scheduler.step()
        self.epoch += 1
        self.batch_in_epoch = 0

    def state_dict(self) -> dict[str, Any]:
        """Counters plus the wrapped torch scheduler's state."""
        return {
            "name": self.name,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "total_batches": self.total_batches,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output and re-apply the saved LRs to the optimizer."""
        if state_dict.get("name") != self.name:
            raise ValueError(f"state_dict is for LR schedule {state_dict.get('name')!r}, not {self.name!r}")
        self.epoch = int(state_dict["epoch"])
        self.batch_in_epoch = int(state_dict["batch_in_epoch"])
        self.total_batches = int(state_dict["total_batches"])
        if self.scheduler is not None and state_dict["scheduler"] is not None:
            self.scheduler.load_state_dict(state_dict["scheduler"])
            last = getattr(self.scheduler, "_last_lr", None)
            if last is not None and len(last) == len(self.optimizer.param_groups):
                for group, lr in zip(self.optimizer.param_groups, last, strict=True):
                    group["lr"] = lr

    def __repr__(self) -> str:
        return f"LRSchedule({self.name!r}, interval={self.interval!r}, lr={self.lr:.6g}, epoch={self.epoch})"


class _ScheduleRegistry(Registry[Callable[..., LRSchedule]]):
    """LR schedules: ``create`` (and so ``create_from``) checks ``epochs`` / ``steps_per_epoch`` and schedules
    a SAM optimizer through its base optimizer (they share the param groups)."""

    def create(self, name: str, optimizer: Optimizer, /, *args: Any, **kwargs: Any) -> LRSchedule:
        factory = self.check(name, optimizer, *args, **kwargs)
        for key in ("epochs", "steps_per_epoch"):
            if key in kwargs and int(kwargs[key]) < 1:
                raise ValueError(f"LR scheduler {name!r}: {key} must be >= 1, got {kwargs[key]!r}")
        if isinstance(optimizer, SAM):
            optimizer = optimizer.base_optimizer
        return factory(optimizer, *args, **kwargs)


SCHEDULERS = _ScheduleRegistry("LR scheduler")
"""``factory(optimizer, *, epochs, steps_per_epoch, **options) -> LRSchedule`` by name (see the module docstring)."""

register_scheduler = SCHEDULERS.register  # register_scheduler(name, factory=None, *, replace=False)
create_scheduler = SCHEDULERS.create  # create_scheduler(name, optimizer, *, epochs, steps_per_epoch, **options)
list_schedulers = SCHEDULERS.names


def _initial_lrs(optimizer: Optimizer) -> list[float]:
    return [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]


@register_scheduler("none")
def _none(optimizer: Optimizer, *, epochs: int, steps_per_epoch: int) -> LRSchedule:
    return LRSchedule("none", optimizer)


@register_scheduler("plateau")
def _plateau(
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    factor: float = 0.5,
    patience: int = 4,
    cooldown: int = 1,
    threshold: float = 1e-4,
    lr_min: float = 0.0,
) -> LRSchedule:
    sched = lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=factor,
        patience=patience,
        cooldown=cooldown,
        threshold=threshold,
        min_lr=lr_min,
    )
    return LRSchedule("plateau", optimizer, sched, interval="val_loss")


@register_scheduler("cosine_restarts")
def _cosine_restarts(
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    t0: int | None = None,
    t_mult: int = 1,
    lr_min: float = 0.0,
) -> LRSchedule:
    t0 = max(1, epochs // 4) if t0 is None else t0
    sched = lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=t0, T_mult=t_mult, eta_min=lr_min)
    return LRSchedule(
        "cosine_restarts",
        optimizer,
        sched,
        interval="batch",
        steps_per_epoch=steps_per_epoch,
        fractional_epochs=True,
    )


@register_scheduler("cosine")
def _cosine(optimizer: Optimizer, *, epochs: int, steps_per_epoch: int, lr_min: float = 0.0) -> LRSchedule:
    sched = lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=lr_min)
    return LRSchedule("cosine", optimizer, sched, interval="epoch")


@register_scheduler("exponential")
def _exponential(
    optimizer: Optimizer, *, epochs: int, steps_per_epoch: int, lr_decay: float = 0.8, lr_period: float = 3
) -> LRSchedule:
    if lr_period <= 0:
        raise ValueError(f"exponential LR schedule needs lr_period > 0, got lr_period={lr_period!r}")

    def decay(epoch: int) -> float:
        return lr_decay ** (epoch / lr_period)

    sched = lr_scheduler.LambdaLR(optimizer, decay)
    return LRSchedule("exponential", optimizer, sched, interval="epoch")


@register_scheduler("onecycle")
def _onecycle(
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float | None = None,
    lr_min: float | None = None,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    cycle_momentum: bool = True,
) -> LRSchedule:
    """The LR ends at peak / div_factor / final_div_factor; ``lr_min`` sets that end LR instead (from the
    first group's peak: final_div_factor = max(peak / div_factor / max(lr_min, 1e-12), 1))."""
    total = epochs * steps_per_epoch
    peaks = _initial_lrs(optimizer)
    if lr_min is not None and final_div_factor is not None:
        raise ValueError("LR scheduler 'onecycle': give lr_min or final_div_factor, not both")
    if lr_min is not None:
        final_div_factor = max(peaks[0] / div_factor / max(lr_min, 1e-12), 1.0)
    sched = lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=peaks,
        total_steps=total,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=1e4 if final_div_factor is None else final_div_factor,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        cycle_momentum=cycle_momentum,
    )
    return LRSchedule(
        "onecycle",
        optimizer,
        sched,
        interval="batch",
        steps_per_epoch=steps_per_epoch,
        max_batch_steps=total - 1,
    )


@register_scheduler("multistep")
def _multistep(
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    lr_steps: Sequence[int],
    lr_gamma: float = 0.1,
) -> LRSchedule:
    """The LR is multiplied by ``lr_gamma`` in each (1-based) epoch of ``lr_steps`` (none: a constant LR).

    As BBN's loop, which steps its MultiStepLR before each 1-based epoch, so ``LR_STEP [120, 160]`` takes effect
    in epochs 120 and 160. This schedule steps after each epoch, so its milestones are ``lr_steps - 1``."""
    sched = lr_scheduler.MultiStepLR(optimizer, milestones=[int(m) - 1 for m in lr_steps], gamma=lr_gamma)
    return LRSchedule("multistep", optimizer, sched, interval="epoch")
