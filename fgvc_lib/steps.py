"""Training steps: what happens in one optimisation step on a batch (the Trainer owns the loop).

Only what changes the step itself is a step: the plain step, SAM's two passes, the feature-map losses (MC loss),
BBN's two-branch forward, COT's second optimiser. Everything that only reads or schedules (LR schedules, the OHEM
keep ratio, BBN's alpha, history, checkpoints, the NaN guard, progress) is a callback (``fgvc_lib.callbacks``),
so any step composes with any schedule (SAM + OHEM).

A step returns ``(detached mean loss, detached logits)``; ``metric_targets`` says which labels the training
metrics score the logits against (BBN: both samplers' labels, weighted by alpha, as the official combiner).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .callbacks import BBNAlpha, Callback
from .models.bbn import bbn_mixed_loss
from .optim import bn_stats_frozen
from .registry import Registry

Trainer = Any  # fgvc_lib.engine.Trainer; not imported here, so the engine can import this module

Targets = list[tuple[float, torch.Tensor]]


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


class TrainStrategy:
    """The plain step. Subclasses override ``train_step`` (and, if needed, the other methods)."""

    name = "plain"
    bypasses_wrapper = False  # True: train_step calls the unwrapped model (no DDP gradient hooks)
    supports_fp16 = True  # False: the step cannot work with a GradScaler

    def callbacks(self) -> list[Callback]:
        """Callbacks the step needs (e.g. BBN's alpha schedule); the Trainer adds them."""
        return []

    def metric_targets(self, y: torch.Tensor, extra: tuple[torch.Tensor, ...]) -> Targets:
        """(weight, labels) pairs the training metrics score the logits against."""
        return [(1.0, y)]

    def state_dict(self) -> dict[str, Any]:
        """Step state that must survive a resume (e.g. a second optimizer)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def train_step(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        trainer.optimizer.zero_grad(set_to_none=True)
        with trainer.autocast():
            logits = trainer.model(x)
            loss = trainer.compute_loss(logits, y)
        trainer.backward(loss)
        trainer.step()
        return loss.detach(), logits.detach()


class SAMStrategy(TrainStrategy):
    """Sharpness-aware minimisation: ascent step, second forward/backward at w + e, descent step.

    BatchNorm running statistics are updated by the first pass only. Works with any loss (OHEM too: both
    passes use the loss's current keep ratio).
    """

    name = "sam"
    supports_fp16 = False  # the ascent step reads raw gradients; use amp: bf16

    def train_step(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        opt = trainer.optimizer
        if not hasattr(opt, "first_step"):
            raise TypeError("the SAM step needs optimizer: sam")
        opt.zero_grad(set_to_none=True)
        with trainer.autocast():
            logits = trainer.model(x)
            loss = trainer.compute_loss(logits, y)
        trainer.backward(loss)
        opt.first_step(zero_grad=True)
        with bn_stats_frozen(trainer.model), trainer.autocast():
            second = trainer.compute_loss(trainer.model(x), y)
        trainer.backward(second)
        trainer.clip_gradients()
        opt.second_step(zero_grad=True)
        trainer.fire("after_step")
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
        model = unwrap(trainer.model)
        if not hasattr(model, "forward_with_features"):
            raise TypeError(f"loss needs feature maps, but {type(model).__name__} has no forward_with_features")
        trainer.optimizer.zero_grad(set_to_none=True)
        with trainer.autocast():
            logits, features = model.forward_with_features(x)
            loss = trainer.compute_loss(logits, features, y)
        trainer.backward(loss)
        trainer.step()
        return loss.detach(), logits.detach()


class BBNStrategy(TrainStrategy):
    """Bilateral-branch step: uniform batch -> f_c, reversed batch -> f_r, one classifier on
    ``2 * cat(alpha f_c, (1 - alpha) f_r)``, loss ``alpha L(z, y_c) + (1 - alpha) L(z, y_r)``.

    ``alpha`` is set before each epoch by the :class:`~fgvc_lib.callbacks.BBNAlpha` callback (from
    ``alpha_fn``, which takes the 1-indexed epoch as the official code). The loader yields (x_c, y_c, x_r, y_r).
    Training accuracy is the official combiner's: ``alpha acc(z, y_c) + (1 - alpha) acc(z, y_r)``.
    """

    name = "bbn"
    bypasses_wrapper = True

    def __init__(self, alpha_fn: Callable[[int], float] | None = None):
        self.alpha_fn = alpha_fn
        self.alpha = 1.0

    def callbacks(self) -> list[Callback]:
        return [BBNAlpha(self.alpha_fn)] if self.alpha_fn is not None else []

    def metric_targets(self, y: torch.Tensor, extra: tuple[torch.Tensor, ...]) -> Targets:
        return [(self.alpha, y), (1.0 - self.alpha, extra[1])] if len(extra) == 2 else [(1.0, y)]

    def train_step(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(extra) != 2:
            raise TypeError("the BBN step needs batches (x_c, y_c, x_r, y_r) from a reversed-pair dataset")
        x_r, y_r = extra
        model = unwrap(trainer.model)
        a = self.alpha
        trainer.optimizer.zero_grad(set_to_none=True)
        with trainer.autocast():
            logits = model.mix(model.branch_features(x, "c"), model.branch_features(x_r, "r"), a)
            loss = bbn_mixed_loss(logits, y, y_r, a, loss_fn=trainer.compute_loss)
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

    def train_step(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = TrainStrategy.train_step(self, trainer, x, y)
        for group, main in zip(self.complement_optimizer.param_groups, trainer.optimizer.param_groups, strict=True):
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


STRATEGIES: Registry[Callable[..., TrainStrategy]] = Registry("strategy")
for _cls in (TrainStrategy, SAMStrategy, FeatureLossStrategy, BBNStrategy, COTStrategy):
    STRATEGIES.register(_cls.name, _cls)


def register_strategy(name: str, *, replace: bool = False) -> Callable:
    """Decorator: register a step factory under ``name`` (a second one of the same name is an error)."""
    return STRATEGIES.register(name, replace=replace)


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def create_strategy(name: str, **kwargs: Any) -> TrainStrategy:
    return STRATEGIES.create(name, **kwargs)
