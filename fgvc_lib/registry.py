"""Shared pieces of the name -> factory registries (losses, optimizers, schedulers, presets, strategies, CAM)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


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


def accepted_kwargs(factory: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``factory`` accepts (None: it takes ``**kwargs``, so anything)."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def options_from(source: Any, factory: Callable[..., Any], rename: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The adapter from a parameters object (dataclass or mapping) to a factory's keyword arguments: every
    field whose name (after ``rename``: parameter name -> argument name) the factory accepts. A factory that
    takes ``**kwargs`` gets only the renamed fields (it cannot say what it accepts)."""
    values = dict(source) if isinstance(source, Mapping) else dict(vars(source))
    rename = dict(rename or {})
    accepted = accepted_kwargs(factory)
    out: dict[str, Any] = {}
    for key, value in values.items():
        arg = rename.get(key, key)
        if (accepted is None and key in rename) or (accepted is not None and arg in accepted):
            out[arg] = value
    return out


class Registry(Generic[T]):
    """A name -> factory table: ``register`` (decorator or call; a second registration of a name is an error
    unless ``replace=True``), ``get`` (an unknown name fails with the registered names and the closest one),
    ``create`` (options the factory does not take are a TypeError naming them, never dropped) and
    ``create_from`` (options picked from a parameters object by name, see :func:`options_from`)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, factory: T | None = None, *, replace: bool = False) -> Any:
        def add(obj: T) -> T:
            if not isinstance(name, str) or not name:
                raise ValueError(f"{self.kind} name: expected a non-empty string, got {name!r}")
            if name in self._items and not replace and self._items[name] is not obj:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered ({_describe(self._items[name])}); "
                    "pass replace=True to override it"
                )
            self._items[name] = obj
            return obj

        return add if factory is None else add(factory)

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise unknown_name_error(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory = self.get(name)
        check_kwargs(self.kind, name, factory, kwargs)
        return factory(*args, **kwargs)

    def create_from(
        self, name: str, params: Any, *args: Any, rename: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Any:
        """``create(name, *args, **options_from(params) | kwargs)``: explicit keywords win."""
        factory = self.get(name)
        return self.create(name, *args, **{**options_from(params, factory, rename), **kwargs})


def _describe(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
