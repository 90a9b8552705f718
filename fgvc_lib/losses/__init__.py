"""Loss registry (timm-style): ``register_loss`` / ``create_loss`` / ``list_losses``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["register_loss", "create_loss", "list_losses", "OHEMLoss"]

_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def _unknown_name_error(kind: str, name: str, choices: list[str]) -> ValueError:
    """Build the ``Unknown <kind> 'name'`` error with the closest registered name, if any."""
    msg = f"Unknown {kind} {name!r}, expected one of ({', '.join(choices)})"
    close = difflib.get_close_matches(str(name), choices, n=1)
    if close:
        msg += f"; did you mean {close[0]!r}?"
    return ValueError(msg)


def _check_kwargs(kind: str, name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Raise TypeError naming any keyword ``factory`` does not accept (no-op if it takes ``**kwargs``)."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise TypeError(
            f"Unknown argument(s) {', '.join(repr(k) for k in unknown)} for {kind} {name!r}; "
            f"accepted: ({', '.join(accepted)})"
        )


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
        raise _unknown_name_error("loss", name, list_losses())
    factory = _LOSSES[name]
    _check_kwargs("loss", name, factory, kwargs)
    return factory(**kwargs)


@register_loss("ce")
def _cross_entropy(label_smoothing: float = 0.0) -> nn.Module:
    """Plain cross entropy (mean over the batch) with optional label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


from fgvc_lib.losses.ohem import OHEMLoss  # noqa: E402  (registers 'ohem'; needs register_loss above)
