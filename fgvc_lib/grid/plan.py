"""Planning a grid: its runs (axes product, rows, sub-grids, presets), each checked against the notebook,
their run ids and folders, what is left to run, and ``grid.yaml``.

Runs are ``product(axes)`` + ``rows`` + each sub-grid's runs, in that order; a grid part with neither axes
nor rows is one run of its base. Duplicates are removed (same values after the preset; again after
resolution: same typed, defaults-filled parameters). Every run is checked against the notebook's typed
parameter class and against the names of its ``parameters`` cell (``papermill.inspect_notebook``: papermill
itself only warns on unknown names) before any run starts; errors are ``ParameterError`` naming the key and
the grid file. ``run_dir`` is set by the runner and may not appear in a grid.

Layout: ``outputs/runs/<name>/<run-id>/`` per run (the run folder of ``fgvc run``), ``grid.yaml`` (the spec
and preset used, run ids in plan order), ``summary.csv``, ``summary.md`` and ``figures/compare_<axis>.png``.
A run id is ``<varying key=value ...>-<sha1[:8] of the resolved parameters>``; a folder whose
``metrics.json`` says ``finished`` (or ``failed``, unless ``retry_failed``) is skipped, so rerunning a grid
only runs what is missing. A run that did not end (``interrupted`` by Ctrl-C, or killed: no status) and has
``checkpoints/last.pt`` is resumed in its folder (``resume: true``). Earlier folders are never deleted: a
failed run that is retried, or an unfinished one without a checkpoint, is renamed to
``<run-id>.failed-<time>`` / ``<run-id>.interrupted-<time>`` first.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..catalog import get_notebook
from ..config import ParameterError, params_class
from ..execution import notebook_path
from ..outcome import _read_json  # noqa: F401 (the grid modules read run files with it)
from ..registry import did_you_mean
from ..runs import outputs_root, write_text_atomic
from .presets import _same, apply_preset  # noqa: F401 (re-exported)
from .spec import GridSpec

#: Parameters that do not change a run's result: left out of its id, its identity and the readable id part.
ID_EXCLUDED = ("run_dir", "progress", "resume", "device", "num_workers")
STATUSES = ("finished", "failed", "interrupted", "skipped", "planned", "submitted")
READABLE_ID_MAX = 80
READABLE_VALUE_MAX = 40
_MOVED_ASIDE = re.compile(r"\.(failed|interrupted)-\d{8}-\d{6}(-\d+)?$")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._=-]+")


# ---------------------------------------------------------------------------------------------- expansion
def _canonical(values: Mapping[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)


def _expand_part(base: Mapping[str, Any], axes: Mapping[str, list[Any]], rows: list[dict]) -> list[dict]:
    if not axes and not rows:
        return [dict(base)]
    runs = []
    if axes:  # product() of no axes would be one empty combination
        runs = [{**base, **dict(zip(axes, c, strict=True))} for c in itertools.product(*axes.values())]
    return runs + [{**base, **row} for row in rows]


def expand_grid(spec: GridSpec, preset: str | None = None) -> list[dict[str, Any]]:
    """The grid's runs as plain dicts (axes product, rows, sub-grids; preset applied; duplicates removed).
    Pure: nothing is checked against the notebook here."""
    if preset is not None and preset not in spec.presets:
        known = ", ".join(spec.presets) or "none defined"
        raise ParameterError(
            f"{spec.where}: unknown preset '{preset}'{did_you_mean(preset, spec.presets)} (presets: {known})"
        )
    runs = []
    if spec.axes or spec.rows or not spec.grids:
        runs += _expand_part(spec.base, spec.axes, spec.rows)
    for sub in spec.grids:
        runs += _expand_part({**spec.base, **sub["base"]}, sub["axes"], sub["rows"])
    if preset is not None:
        runs = [apply_preset(run, spec.presets[preset]) for run in runs]
    unique: dict[str, dict[str, Any]] = {}
    for run in runs:
        unique.setdefault(_canonical(run), copy.deepcopy(run))
    return list(unique.values())


# ---------------------------------------------------------------------------------------------- validation
_NAMES_CACHE: dict[tuple[str, float], frozenset[str]] = {}


def notebook_parameter_names(notebook: str) -> frozenset[str]:
    """Names in the notebook's ``parameters`` cell, via ``papermill.inspect_notebook`` (cached by mtime)."""
    import papermill as pm

    path = notebook_path(notebook)
    key = (str(path), path.stat().st_mtime)
    if key not in _NAMES_CACHE:
        _NAMES_CACHE[key] = frozenset(pm.inspect_notebook(str(path)))
    return _NAMES_CACHE[key]


def _describe(run: Mapping[str, Any], limit: int = 100) -> str:
    text = ", ".join(f"{k}: {v!r}" for k, v in run.items())
    return "{" + (text if len(text) <= limit else text[: limit - 3] + "...") + "}"


def _check_names(keys: Iterable[str], spec: GridSpec, label: str) -> None:
    cls = params_class(spec.notebook)
    fields = cls.field_types()
    names = notebook_parameter_names(spec.notebook)
    for key in keys:
        if key not in fields:
            raise ParameterError(
                f"{label}: unknown parameter '{key}' for notebook '{spec.notebook}'{did_you_mean(key, fields)}"
            )
        if key not in names:
            where = get_notebook(spec.notebook).path or f"notebooks/{spec.notebook}.ipynb"
            raise ParameterError(
                f"{label}: parameter '{key}' is not in the parameters cell of {where} "
                f"(papermill would only warn and run the default)"
            )


def _resolve(spec: GridSpec, runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(values as given, resolved params) per run; duplicates after resolution removed."""
    cls = params_class(spec.notebook)
    for key in spec.compare or []:
        _check_names([key], spec, f"{spec.where}: compare")
    for pname, preset in spec.presets.items():
        label = f"{spec.where}: preset '{pname}'"
        _check_names([*preset["base"], *preset["replace"]], spec, label)
        try:
            cls.from_dict(preset["base"])
        except ParameterError as exc:
            raise ParameterError(f"{label}: {exc}") from None
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    seen: set[str] = set()
    for i, run in enumerate(runs):
        label = f"{spec.where}: run {i + 1}/{len(runs)} {_describe(run)}"
        if "run_dir" in run:
            raise ParameterError(
                f"{label}: parameter 'run_dir' is set by the grid runner (outputs/runs/{spec.name}/<run-id>); "
                f"remove it from the grid"
            )
        _check_names(run, spec, label)
        try:
            params = cls.from_dict(run).to_dict()
        except ParameterError as exc:
            raise ParameterError(f"{label}: {exc}") from None
        identity = _identity(params)
        if identity not in seen:
            seen.add(identity)
            out.append((run, params))
    return out


def validate_runs(spec: GridSpec, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check every run (typed params class + the notebook's parameters cell) and the presets / compare keys;
    return the resolved (typed, defaults-filled) params, duplicates after resolution removed."""
    return [params for _, params in _resolve(spec, runs)]


# ---------------------------------------------------------------------------------------------- run ids
def _identity(params: Mapping[str, Any]) -> str:
    return _canonical({k: v for k, v in params.items() if k not in ID_EXCLUDED})


def varying_keys(runs: list[Mapping[str, Any]]) -> list[str]:
    """Keys (outside ID_EXCLUDED) whose values differ between runs, in first-seen order."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run if k not in keys and k not in ID_EXCLUDED]
    return [k for k in keys if len({_canonical({"v": run.get(k)}) for run in runs}) > 1]


def _short_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if value in ("", None):
        return "none"
    if isinstance(value, (list, tuple)):
        return "+".join(_short_value(v) for v in value)
    return str(value)


def run_id(params: Mapping[str, Any], varying: list[str]) -> str:
    """``<key=value-...>-<hash8>``: readable varying values plus sha1 of the canonical JSON of ``params``
    without ID_EXCLUDED keys; the same in every process and invocation.

    Values are never cut: a ``key=value`` part whose value is longer than READABLE_VALUE_MAX, or that would
    take the readable part past READABLE_ID_MAX, is left out whole (the hash still tells the runs apart)."""
    digest = hashlib.sha1(_identity(params).encode("utf-8")).hexdigest()[:8]
    readable = ""
    for key in varying:
        if key in ID_EXCLUDED:
            continue
        value = re.sub(r"-{2,}", "-", _UNSAFE_ID_CHARS.sub("-", _short_value(params.get(key)))).strip("-.")
        part = f"{_UNSAFE_ID_CHARS.sub('-', key)}={value or 'none'}"
        if len(value) > READABLE_VALUE_MAX or len(readable) + len(part) + 1 > READABLE_ID_MAX:
            continue
        readable = f"{readable}-{part}" if readable else part
    return f"{readable}-{digest}" if readable else digest


def _shorten(text: str, limit: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- records
@dataclass
class RunRecord:
    """One run of a grid: where it goes, its resolved params and what happened."""

    run_id: str
    run_dir: Path
    params: dict[str, Any]
    status: str = "planned"  # finished | failed | interrupted | skipped | planned | submitted (not waited for)
    error: str | None = None
    seconds: float = 0.0
    overrides: dict[str, Any] = field(default_factory=dict)  # the values injected into the notebook
    job_id: str | None = None  # the submitit job that ran it (slurm / submitit-local executors)
    resume: bool = False  # planned to continue an interrupted run from its checkpoints/last.pt

    def to_dict(self) -> dict[str, Any]:
        out = {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 2),
            "params": self.params,
        }
        return {**out, "job_id": self.job_id} if self.job_id else out


def grid_folder(spec: GridSpec) -> Path:
    """``outputs/runs/<name>/``."""
    return outputs_root() / "runs" / spec.name


def _existing_folder(grid_dir: Path, rid: str) -> Path | None:
    """The folder of this run: ``rid`` itself, or an earlier folder with the same hash (the readable part
    changes when the grid gains a varying key)."""
    exact = grid_dir / rid
    if exact.is_dir():
        return exact
    digest = rid.rsplit("-", 1)[-1]
    if grid_dir.is_dir():
        for folder in sorted(grid_dir.iterdir()):
            if folder.is_dir() and (folder.name == digest or folder.name.endswith("-" + digest)):
                return folder
    return None


def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _move_aside(folder: Path, why: str) -> Path:
    """Rename ``folder`` to ``<name>.<why>-<time>`` (never overwriting)."""
    target = folder.with_name(f"{folder.name}.{why}-{_timestamp()}")
    n = 1
    while target.exists():
        target = folder.with_name(f"{folder.name}.{why}-{_timestamp()}-{n}")
        n += 1
    folder.rename(target)
    return target


def plan_runs(
    spec: GridSpec, preset: str | None = None, *, retry_failed: bool = False
) -> tuple[list[RunRecord], list[str]]:
    """Validated records (``planned``, or ``skipped`` when their folder holds a finished run, or a failed one
    without ``retry_failed``) and the varying keys. Creates nothing."""
    pairs = _resolve(spec, expand_grid(spec, preset))
    varying = varying_keys([params for _, params in pairs])
    # ids name the most-swept keys first, so truncation drops the near-constant ones
    distinct = {k: len({_canonical({"v": p.get(k)}) for _, p in pairs}) for k in varying}
    id_keys = sorted(varying, key=lambda k: -distinct[k])
    grid_dir = grid_folder(spec)
    records = []
    for values, params in pairs:
        rid = run_id(params, id_keys)
        folder = _existing_folder(grid_dir, rid)
        record = RunRecord(rid, grid_dir / rid, params, overrides=dict(values))
        previous = _read_json(folder / "metrics.json") if folder else None
        state = (previous or {}).get("status")
        if folder is not None and (state == "finished" or (state == "failed" and not retry_failed)):
            record.run_id, record.run_dir, record.status = folder.name, folder, "skipped"
            record.error = previous.get("error") if state == "failed" else None
            record.seconds = float(previous.get("seconds") or 0.0)
        elif folder is not None and is_resumable(folder):
            record.run_id, record.run_dir, record.resume = folder.name, folder, True
            record.overrides["resume"] = True
        record.params = {**params, "run_dir": str(record.run_dir), **({"resume": True} if record.resume else {})}
        records.append(record)
    return records, varying


def is_resumable(folder: Path) -> bool:
    """A run folder of a run that did not end (``metrics.json`` says ``interrupted``, or has no status: the
    process was killed) and that has a checkpoint to continue from."""
    state = (_read_json(folder / "metrics.json") or {}).get("status")
    return state in (None, "interrupted", "running") and (folder / "checkpoints" / "last.pt").is_file()


def _write_grid_record(spec: GridSpec, preset: str | None, records: list[RunRecord], grid_dir: Path) -> Path:
    record = {
        "source": str(spec.path.resolve()) if spec.path else None,
        "preset": preset,
        "written": _dt.datetime.now().isoformat(timespec="seconds"),
        "spec": spec.to_dict(),
        "runs": [r.run_id for r in records],
    }
    text = yaml.safe_dump(json.loads(json.dumps(record, default=str)), sort_keys=False)
    return write_text_atomic(grid_dir / "grid.yaml", text)


def grid_record(grid_dir: str | Path) -> dict[str, Any]:
    """``grid.yaml`` of a grid folder as written by :func:`run_grid` (empty when absent)."""
    path = Path(grid_dir) / "grid.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def format_plan(records: list[RunRecord]) -> str:
    """One line per planned record: status, run id and the varying values."""
    varying = varying_keys([r.params for r in records])
    lines = []
    for r in records:
        values = " ".join(f"{k}={_short_value(r.params.get(k))}" for k in varying)
        status = "resume" if r.resume and r.status == "planned" else r.status
        lines.append(f"{status:8s} {r.run_id}  {values}".rstrip())
    return "\n".join(lines)
