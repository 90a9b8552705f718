"""Shared pieces of the name -> factory registries (losses, optimizers, schedulers, presets, strategies, CAM).

One policy everywhere: a second registration of a name is an error (``replace=True`` overrides), an unknown name
fails with the registered names and the closest one, and an option a factory does not take is a TypeError naming
it (never dropped). ``Registry.create_from(name, params, ...)`` passes a factory exactly the fields of a parameters
object whose names it takes, so factories name their keywords after the experiment parameters (``lr``, ``momentum``,
``weight_decay``, ``epochs`` ...) and callers need not branch on the name to build the arguments."""

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


def _signature(factory: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have none: nothing can be checked
        return None


def _keyword_names(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword names ``factory`` accepts, in order (None: it takes ``**kwargs`` or has no signature)."""
    sig = _signature(factory)
    if sig is None or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return [n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_kwargs(kind: str, name: str, factory: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    """Raise TypeError naming any keyword ``factory`` does not accept (no-op if it takes ``**kwargs``)."""
    accepted = _keyword_names(factory)
    if accepted is None:
        return
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise TypeError(
            f"Unknown argument(s) {', '.join(repr(k) for k in unknown)} for {kind} {name!r}; "
            f"accepted: ({', '.join(accepted)})"
        )


def accepted_kwargs(factory: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``factory`` accepts (None: it takes ``**kwargs``, so anything)."""
    accepted = _keyword_names(factory)
    return None if accepted is None else set(accepted)


def _fields(source: Any) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, (list, tuple)):  # several sources: later ones win
        return {k: v for part in source for k, v in _fields(part).items()}
    return dict(vars(source))


def options_from(source: Any, factory: Callable[..., Any], rename: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The adapter from a parameters object (dataclass or mapping, or a list of them: later ones win) to a
    factory's keyword arguments: every field whose name (after ``rename``: parameter name -> argument name) the
    factory accepts. A factory that takes ``**kwargs`` gets only the renamed fields (it cannot say what it
    accepts). A list lets a caller offer values that only some factories take, e.g.
    ``[params, {"num_classes": k}]``: unlike an explicit keyword, an offered value a factory does not take is
    not an error."""
    values = _fields(source)
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
    ``create`` (options the factory does not take are a TypeError naming them, never dropped; a missing
    required one is a TypeError naming the entry) and ``create_from`` (options picked from a parameters object
    by name, see :func:`options_from`). ``accepts(name)`` lists the keywords an entry takes.

    Subclasses may override :meth:`create` (``create_from`` goes through it) to prepare arguments, and
    :meth:`factory_of` when an entry is not itself the factory (e.g. a record holding one)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, factory: T | None = None, *, replace: bool = False) -> Any:
        """Register ``factory`` under ``name`` and return it; without ``factory``, a decorator doing that."""

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

    def factory_of(self, name: str) -> Callable[..., Any]:
        """The callable ``create(name, ...)`` calls (the registered object itself by default)."""
        return self.get(name)  # type: ignore[return-value]

    def accepts(self, name: str) -> list[str] | None:
        """Keyword names entry ``name`` takes, in order (None: it takes ``**kwargs``)."""
        return _keyword_names(self.factory_of(name))

    def check(self, name: str, /, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        """The factory of ``name`` after checking the call: an option it does not take, a missing required
        argument or too many positional ones is a TypeError naming the entry."""
        factory = self.factory_of(name)
        check_kwargs(self.kind, name, factory, kwargs)
        sig = _signature(factory)
        if sig is not None:
            try:
                sig.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{self.kind} {name!r}: {exc}") from None
        return factory

    def create(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        return self.check(name, *args, **kwargs)(*args, **kwargs)

    def options(
        self, name: str, params: Any, rename: Mapping[str, str] | None = None, *, positional: int = 0
    ) -> dict[str, Any]:
        """The keywords ``create_from(name, params, *args)`` passes: the fields of ``params`` entry ``name``
        takes, less the parameters the ``positional`` leading arguments fill (a field named ``optimizer`` does not
        go to a scheduler's ``optimizer`` argument)."""
        factory = self.factory_of(name)
        options = options_from(params, factory, rename)
        sig = _signature(factory)
        if sig is not None and positional:
            for p in list(sig.parameters.values())[:positional]:
                if p.kind is p.VAR_POSITIONAL:
                    break
                options.pop(p.name, None)
        return options

    def create_from(
        self, name: str, params: Any, /, *args: Any, rename: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Any:
        """``create(name, *args, **options_from(params) | kwargs)``: explicit keywords win (and are checked);
        ``params`` is a dataclass, a mapping or a list of them (see :func:`options_from`)."""
        options = self.options(name, params, rename, positional=len(args))
        return self.create(name, *args, **{**options, **kwargs})


def _describe(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
