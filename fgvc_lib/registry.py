"""Shared pieces of the name -> factory registries (losses, optimizers, schedulers, presets, strategies, CAM)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any


def closest(name: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The ``n`` choices most similar to ``name`` (difflib), best first."""
    return difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=cutoff)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` or an empty string."""
    close = closest(name, choices)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_name_error(kind: str, name: str, choices: Iterable[str]) -> ValueError:
    """``Unknown <kind> 'name', expected one of (...)`` plus the closest registered name, if any."""
    choices = list(choices)
    return ValueError(
        f"Unknown {kind} {name!r}, expected one of ({', '.join(choices)}){did_you_mean(name, choices)}"
    )


def check_kwargs(kind: str, name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> None:
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
