"""Resuming a run: the run's own ``params.yaml`` is the reference.

``-p resume true`` continues the run in ``run_dir`` with the parameters it was started with: the ones not given
on the resume command are taken from its ``params.yaml``; a given one that differs is refused (naming each key
with its old and new value), except those meant to change between attempts (:data:`RESUME_MAY_CHANGE`: more
``epochs``, where it runs, how fast data loads, what is displayed). ``fgvc run``, ``fgvc train``, grid workers
and the experiment itself (:func:`check_resume_params`, for a notebook run by hand) apply the same rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .config import ExperimentParams, ParameterError, coerce
from .distributed import is_main_process
from .param_paths import path_params, resolve_path
from .runs import RunDirError, check_not_in_use

#: Parameters a resume may change: ``epochs`` (only to more), where the run executes, how data loads, what is
#: displayed, and the resume bookkeeping itself. Anything else would silently mix two configurations.
RESUME_MAY_CHANGE: tuple[str, ...] = ("epochs", "device", "num_workers", "progress", "resume", "run_dir", "download")


def earlier_params(run_dir: str | Path) -> dict[str, Any] | None:
    """The parameters an earlier run in ``run_dir`` was started with: its ``params.yaml`` (else the ``params``
    of its ``metrics.json``); None when the folder holds neither. An unreadable file is a ParameterError naming
    it."""
    folder = Path(run_dir)
    path = folder / "params.yaml"
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ParameterError(f"{path}: cannot read the earlier run's parameters ({_one_line(exc)})") from None
        if not isinstance(data, dict):
            raise ParameterError(f"{path}: expected a mapping of name: value (the earlier run's parameters)")
        return data
    metrics = folder / "metrics.json"
    if metrics.is_file():
        try:
            data = json.loads(metrics.read_text(encoding="utf-8")).get("params")
        except (OSError, ValueError, AttributeError):
            return None
        return data if isinstance(data, dict) else None
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _canonical(cls: type[ExperimentParams], key: str, value: Any, base: Path) -> Any:
    """``value`` as the parameter's type (paths absolute against ``base``) for comparing; the raw value if it
    does not convert."""
    try:
        value = coerce(key, value, cls.field_types()[key])
    except (ParameterError, TypeError):
        return value
    if key in path_params(cls):
        value = resolve_path(value, base)
    return value


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def resume_differences(
    cls: type[ExperimentParams], earlier: Mapping[str, Any], new: Mapping[str, Any], base: str | Path = "."
) -> list[str]:
    """``key: old -> new`` for each parameter in both ``earlier`` and ``new`` that a resume may not change
    (``epochs`` only to fewer); relative paths in ``new`` are taken against ``base``."""
    types_ = cls.field_types()
    base = Path(base)
    out = []
    for key, value in new.items():
        if key not in types_ or key not in earlier or (key in RESUME_MAY_CHANGE and key != "epochs"):
            continue
        old, now = _canonical(cls, key, earlier[key], base), _canonical(cls, key, value, base)
        if key == "epochs":
            if isinstance(old, int) and isinstance(now, int) and now < old:
                out.append(f"epochs: {old} -> {now} (a resume may only add epochs)")
        elif old != now:
            out.append(f"{key}: {_show(old)} -> {_show(now)}")
    return out


def _refusal(folder: Path, diffs: list[str]) -> ParameterError:
    may = "epochs (more), " + ", ".join(k for k in RESUME_MAY_CHANGE if k not in ("epochs", "resume", "run_dir"))
    return ParameterError(
        f"resume of {folder}: parameters differ from its params.yaml: {'; '.join(diffs)}. A resume continues "
        f"the same run; only {may} may change (start a new run_dir for other values)"
    )


def resume_values(cls: type[ExperimentParams], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` for a run; when they ask for ``resume``: the run's ``params.yaml`` with ``values`` on top,
    after checking the folder is not in use and that no given value differs where it may not
    (ParameterError naming each key, old and new value). Paths in ``values`` must already be absolute."""
    values = dict(values)
    given = cls.from_dict(values)  # a bad value is named before the folder is looked at
    if not given.resume:
        return values
    if not given.run_dir:
        raise RunDirError("resume: true needs the `run_dir` of the run to continue")
    folder = Path(given.run_dir).expanduser().resolve()
    if is_main_process():  # under torchrun, rank 0 takes the lock; the other ranks must not see it as "in use"
        check_not_in_use(folder)
    earlier = earlier_params(folder)
    if earlier is None:
        return values  # nothing to continue from: the trainer says there is no checkpoint
    diffs = resume_differences(cls, earlier, values)
    if diffs:
        raise _refusal(folder, diffs)
    types_ = cls.field_types()
    merged = {k: v for k, v in earlier.items() if k in types_ and k not in ("run_dir", "resume")}
    merged.update(values)
    return merged


def check_resume_params(run_dir: str | Path, params: ExperimentParams) -> None:
    """The experiment's own check before it resumes (a notebook run by hand, papermill): every parameter that
    may not change equals the run's ``params.yaml``; ParameterError naming the differences otherwise."""
    earlier = earlier_params(run_dir)
    if earlier is None:
        return
    diffs = resume_differences(type(params), earlier, params.to_dict(), Path.cwd())
    if diffs:
        raise _refusal(Path(run_dir), diffs)
