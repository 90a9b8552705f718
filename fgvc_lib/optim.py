"""Optimizers (SGD/Adam/AdamW and SAM), BatchNorm helpers for SAM, and LR schedules behind one stepping API.

Registries follow the timm style: ``create_optimizer`` / ``list_optimizers`` and ``create_scheduler`` /
``list_schedulers``; unknown names raise ``ValueError`` listing the choices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer, lr_scheduler

from .registry import check_kwargs, unknown_name_error

__all__ = [
    "SAM",
    "disable_running_stats",
    "enable_running_stats",
    "bn_stats_frozen",
    "register_optimizer",
    "create_optimizer",
    "list_optimizers",
    "LRSchedule",
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

_OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {}


def register_optimizer(name: str) -> Callable[[Callable[..., Optimizer]], Callable[..., Optimizer]]:
    """Decorator registering ``factory(params, **hparams) -> Optimizer`` under ``name``."""

    def decorator(factory: Callable[..., Optimizer]) -> Callable[..., Optimizer]:
        if name in _OPTIMIZERS:
            raise ValueError(f"Optimizer {name!r} is already registered")
        _OPTIMIZERS[name] = factory
        return factory

    return decorator


def list_optimizers() -> list[str]:
    """Sorted names of all registered optimizers."""
    return sorted(_OPTIMIZERS)


def create_optimizer(
    name: str,
    params: Iterable[Any],
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    rho: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    nesterov: bool = False,
) -> Optimizer:
    """Build optimizer ``name``; hyper-parameters it does not use (e.g. ``rho`` for ``sgd``) are ignored."""
    if name not in _OPTIMIZERS:
        raise unknown_name_error("optimizer", name, list_optimizers())
    hp = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, rho=rho, betas=tuple(betas), eps=eps)
    return _OPTIMIZERS[name](params, nesterov=nesterov, **hp)


@register_optimizer("sgd")
def _sgd(
    params: Iterable[Any], *, lr: float, weight_decay: float, momentum: float, nesterov: bool, **_: Any
) -> Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


@register_optimizer("adam")
def _adam(
    params: Iterable[Any], *, lr: float, weight_decay: float, betas: tuple, eps: float, **_: Any
) -> Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


@register_optimizer("adamw")
def _adamw(
    params: Iterable[Any], *, lr: float, weight_decay: float, betas: tuple, eps: float, **_: Any
) -> Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


@register_optimizer("sam")
def _sam_sgd(
    params: Iterable[Any],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
    rho: float,
    **_: Any,
) -> Optimizer:
    return SAM(
        params,
        torch.optim.SGD,
        rho=rho,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
    )


@register_optimizer("sam_adamw")
def _sam_adamw(
    params: Iterable[Any], *, lr: float, weight_decay: float, betas: tuple, eps: float, rho: float, **_: Any
) -> Optimizer:
    return SAM(params, torch.optim.AdamW, rho=rho, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


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


_SCHEDULERS: dict[str, Callable[..., LRSchedule]] = {}


def register_scheduler(name: str) -> Callable[[Callable[..., LRSchedule]], Callable[..., LRSchedule]]:
    """Decorator registering ``factory(optimizer, *, epochs, steps_per_epoch, **kw) -> LRSchedule``."""

    def decorator(factory: Callable[..., LRSchedule]) -> Callable[..., LRSchedule]:
        if name in _SCHEDULERS:
            raise ValueError(f"LR scheduler {name!r} is already registered")
        _SCHEDULERS[name] = factory
        return factory

    return decorator


def list_schedulers() -> list[str]:
    """Sorted names of all registered LR schedules."""
    return sorted(_SCHEDULERS)


def create_scheduler(
    name: str, optimizer: Optimizer, *, epochs: int, steps_per_epoch: int, **kw: Any
) -> LRSchedule:
    """Build LR schedule ``name``; a SAM optimizer is scheduled through its base optimizer (shared groups)."""
    if name not in _SCHEDULERS:
        raise unknown_name_error("LR scheduler", name, list_schedulers())
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"epochs and steps_per_epoch must be >= 1, got {epochs} and {steps_per_epoch}")
    factory = _SCHEDULERS[name]
    check_kwargs("LR scheduler", name, factory, {"epochs": 0, "steps_per_epoch": 0, **kw})
    if isinstance(optimizer, SAM):
        optimizer = optimizer.base_optimizer
    return factory(optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **kw)


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
    min_lr: float = 0.0,
) -> LRSchedule:
    sched = lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=factor,
        patience=patience,
        cooldown=cooldown,
        threshold=threshold,
        min_lr=min_lr,
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
    eta_min: float = 0.0,
) -> LRSchedule:
    t0 = max(1, epochs // 4) if t0 is None else t0
    sched = lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=t0, T_mult=t_mult, eta_min=eta_min)
    return LRSchedule(
        "cosine_restarts",
        optimizer,
        sched,
        interval="batch",
        steps_per_epoch=steps_per_epoch,
        fractional_epochs=True,
    )


@register_scheduler("cosine")
def _cosine(optimizer: Optimizer, *, epochs: int, steps_per_epoch: int, eta_min: float = 0.0) -> LRSchedule:
    sched = lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=eta_min)
    return LRSchedule("cosine", optimizer, sched, interval="epoch")


@register_scheduler("exponential")
def _exponential(
    optimizer: Optimizer, *, epochs: int, steps_per_epoch: int, factor: float = 0.8, period: float = 3
) -> LRSchedule:
    if period <= 0:
        raise ValueError(f"exponential LR schedule needs period > 0, got period={period!r}")

    def decay(epoch: int) -> float:
        return factor ** (epoch / period)

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
    final_div_factor: float = 1e4,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    cycle_momentum: bool = True,
) -> LRSchedule:
    total = epochs * steps_per_epoch
    sched = lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=_initial_lrs(optimizer),
        total_steps=total,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
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
    milestones: Sequence[int] | None = None,
    gamma: float = 0.1,
) -> LRSchedule:
    if milestones is None:
        raise TypeError("LR scheduler 'multistep' needs milestones=[epoch, ...]")
    sched = lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    return LRSchedule("multistep", optimizer, sched, interval="epoch")
