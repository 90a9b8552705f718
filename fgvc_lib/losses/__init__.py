"""Loss registry (timm-style): ``register_loss`` / ``create_loss`` / ``list_losses``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from fgvc_lib.registry import check_kwargs, unknown_name_error

__all__ = ["register_loss", "create_loss", "list_losses", "OHEMLoss"]

_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a loss class or factory under ``name``; duplicate names are an error."""

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _LOSSES:
            raise ValueError(f"Loss {name!r} is already registered")
        _LOSSES[name] = factory
        return factory

    return decorator


def list_losses() -> list[str]:
    """Sorted names of all registered losses."""
    return sorted(_LOSSES)


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered as ``name`` with ``kwargs`` (unknown kwargs raise TypeError)."""
    if name not in _LOSSES:
        raise unknown_name_error("loss", name, list_losses())
    factory = _LOSSES[name]
    check_kwargs("loss", name, factory, kwargs)
    return factory(**kwargs)


@register_loss("ce")
def _cross_entropy(label_smoothing: float = 0.0) -> nn.Module:
    """Plain cross entropy (mean over the batch) with optional label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


from fgvc_lib.losses.complement import ComplementEntropy as ComplementEntropy  # noqa: E402  ('complement')
from fgvc_lib.losses.focal import AdaptiveFocalLoss as AdaptiveFocalLoss  # noqa: E402  (registers flsd5x)
from fgvc_lib.losses.focal import FocalLoss as FocalLoss  # noqa: E402  (registers 'focal')
from fgvc_lib.losses.mc_loss import MCLoss as MCLoss  # noqa: E402  (registers 'mc'; needs num_classes)
from fgvc_lib.losses.multilabel import BCEMultiLabel as BCEMultiLabel  # noqa: E402  (registers 'bce', 'mse')
from fgvc_lib.losses.ohem import OHEMLoss  # noqa: E402  (registers 'ohem'; needs register_loss above)
