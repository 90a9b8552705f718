"""Parameter grids over one notebook: expand a YAML grid, validate every run, execute the runs in worker
processes with papermill (optionally one GPU per worker), resume, and report.

Grid YAML format::

    notebook: cifar100            # notebooks/<notebook>.ipynb and its params class (config.params_class)
    name: cifar100_table1         # optional; default: the file stem. Runs go to outputs/runs/<name>/<run-id>/
    base: {epochs: 200, lr: 1.0e-3}   # parameters shared by every run
    axes:                         # optional: cartesian product over these keys (each a non-empty list)
      batch_size: [32, 64]
      loss: [ce, mc]
    rows:                         # optional: explicit runs (each merged over base)
      - {model: swin_base_patch4_window12_384, batch_size: 64, loss: focal, lr: 3.0e-5, img_size: 384}
    grids:                        # optional: a union of sub-grids, each with its own base/axes/rows
      - axes: {...}               #   (a sub-grid's base is merged over the top-level base)
      - rows: [...]
    presets:                      # optional: `--preset tiny` applies these to every run
      tiny:
        base: {epochs: 2}         # overrides applied after the run's own values
        replace: {model: {swin_base_patch4_window12_384: swin_tiny_patch4_window7_224}}  # substitutions
    compare: [loss, model]        # optional: axes to draw comparison figures for (default: every key that varies)
    metric: val_acc               # optional: history.csv column for the comparison figures (default val_acc)
    executor:                     # optional: where the runs execute (``fgvc grid`` options override it)
      kind: slurm                 #   local (default: worker processes) | slurm | submitit-local
      partition: gpu              #   the keys below are for slurm / submitit-local (see ExecutorConfig)
      gpus_per_job: 1
      cpus_per_job: 8
      time_min: 240
      mem_gb: 32
      array_parallelism: 16
      slurm: {account: myproj, qos: normal}   # extra sbatch settings (slurm_additional_parameters)

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
only runs what is missing. Earlier folders are never deleted: a failed run that is retried, or a folder left
by an interrupted run, is renamed to ``<run-id>.failed-<time>`` / ``<run-id>.interrupted-<time>`` first.

GPUs: ``gpus`` are indexes into the devices this process sees (the entries of its ``CUDA_VISIBLE_DEVICES``
when set); each worker process takes one from a queue and sets ``CUDA_VISIBLE_DEVICES`` before any kernel
starts (the kernel inherits it), so ``device: auto`` in the notebook means that GPU.

Executors: ``local`` runs the runs in a pool of worker processes. ``slurm`` hands them to submitit
(``AutoExecutor(folder=<grid folder>/submitit, cluster="slurm")``) as ONE job array, one papermill run per
job and GPU; ``submitit-local`` uses submitit's local executor (each job a local subprocess, at most
``array_parallelism`` - default ``jobs`` - at a time, GPUs handed out as by the pool). Every job executes
:func:`execute_run` (through :func:`run_job`, which pins the job's GPU and CPU threads first, as the pool's
initializer does), so run ids, skipping, retries, ``grid.yaml`` and the report are the same whatever the
executor; a job that dies without a result is recorded ``failed`` with the job's error and its log path.
SLURM jobs are listed in ``<grid folder>/submitit/jobs.json`` until their run has a ``metrics.json``: with
``wait=False`` (``--no-wait``) the runner submits and returns, and :func:`write_report` (``fgvc report``)
later records jobs that died without a result; a rerun of the grid refuses to start a run whose job is
still queued or running.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import itertools
import json
import multiprocessing
import os
import queue as _queue
import random
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import PARAMS_BY_NOTEBOOK, ParameterError, params_class
from .registry import did_you_mean
from .runs import METRIC_KEYS, outputs_root, write_metrics, write_text_atomic

TOP_KEYS = ("notebook", "name", "base", "axes", "rows", "grids", "presets", "compare", "metric", "executor")
SUBGRID_KEYS = ("base", "axes", "rows")
PRESET_KEYS = ("base", "replace")
#: Parameters that do not change a run's result: left out of its id, its identity and the readable id part.
ID_EXCLUDED = ("run_dir", "progress", "resume", "device", "num_workers")
STATUSES = ("finished", "failed", "skipped", "planned", "submitted")
PORT_CLASH_MARKERS = ("Address already in use", "Kernel died before replying to kernel_info")
READABLE_ID_MAX = 80
READABLE_VALUE_MAX = 24
_MOVED_ASIDE = re.compile(r"\.(failed|interrupted)-\d{8}-\d{6}(-\d+)?$")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._=-]+")


# ---------------------------------------------------------------------------------------------- the spec
@dataclass
class GridSpec:
    """A parsed grid file (see the module docstring for the YAML format)."""

    notebook: str
    name: str
    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    grids: list[dict[str, Any]] = field(default_factory=list)  # each {'base': {}, 'axes': {}, 'rows': []}
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # each {'base': {}, 'replace': {}}
    compare: list[str] | None = None
    metric: str = "val_acc"
    executor: dict[str, Any] = field(default_factory=dict)  # the checked `executor:` mapping as written
    path: Path | None = None

    @property
    def where(self) -> str:
        """How errors name this grid: its file, else its name."""
        return str(self.path) if self.path else f"grid '{self.name}'"

    def to_dict(self) -> dict[str, Any]:
        """The spec as a grid YAML mapping (without ``path``)."""
        data: dict[str, Any] = {"notebook": self.notebook, "name": self.name, "base": self.base}
        for key in ("axes", "rows", "grids", "presets", "compare", "executor"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        data["metric"] = self.metric
        return copy.deepcopy(data)

    @classmethod
    def from_dict(cls, data: Any, path: str | Path | None = None) -> GridSpec:
        """Check the structure of a grid mapping (keys, types) and normalise it; parameters are checked by
        :func:`validate_runs`."""
        where = str(path) if path else "grid"
        if not isinstance(data, dict):
            raise ParameterError(f"{where}: expected a mapping with 'notebook' and 'base'/'axes'/'rows'")
        _check_keys(data, TOP_KEYS, f"{where}: unknown top-level key")
        notebook = data.get("notebook")
        if not isinstance(notebook, str) or not notebook:
            raise ParameterError(
                f"{where}: 'notebook' is required (one of: {', '.join(PARAMS_BY_NOTEBOOK)}), got {notebook!r}"
            )
        try:
            params_class(notebook)
        except ParameterError as exc:
            raise ParameterError(f"{where}: {exc}") from None
        name = data.get("name", Path(path).stem if path else notebook + "_grid")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", name):
            raise ParameterError(f"{where}: 'name' must be a folder name ([A-Za-z0-9._-]), got {name!r}")
        if name in PARAMS_BY_NOTEBOOK:
            raise ParameterError(
                f"{where}: grid name {name!r} would share outputs/runs/{name}/ with single `fgvc run {name}` "
                f"runs; set `name:` in the grid file (e.g. {name}_grid)"
            )
        grids = data.get("grids") or []
        if not isinstance(grids, list):
            raise ParameterError(f"{where}: 'grids' must be a list of sub-grids, got {type(grids).__name__}")
        subgrids = []
        for i, sub in enumerate(grids):
            label = f"{where}: grids[{i}]"
            if not isinstance(sub, dict):
                raise ParameterError(f"{label}: expected a mapping with base/axes/rows")
            _check_keys(sub, SUBGRID_KEYS, f"{label}: unknown key")
            subgrids.append(
                {
                    "base": _mapping(sub.get("base"), f"{label}: 'base'"),
                    "axes": _axes(sub.get("axes"), label),
                    "rows": _rows(sub.get("rows"), label),
                }
            )
        presets: dict[str, dict[str, Any]] = {}
        for pname, preset in _mapping(data.get("presets"), f"{where}: 'presets'").items():
            label = f"{where}: preset '{pname}'"
            preset = _mapping(preset, label)
            _check_keys(preset, PRESET_KEYS, f"{label}: unknown key")
            replace = _mapping(preset.get("replace"), f"{label}: 'replace'")
            for key, subst in replace.items():
                _mapping(subst, f"{label}: replace of '{key}' (old value: new value)")
            presets[str(pname)] = {
                "base": _mapping(preset.get("base"), f"{label}: 'base'"),
                "replace": {k: dict(v or {}) for k, v in replace.items()},
            }
        compare = data.get("compare")
        if isinstance(compare, str):
            compare = [compare]
        if compare is not None and not (
            isinstance(compare, list) and all(isinstance(c, str) for c in compare)
        ):
            raise ParameterError(f"{where}: 'compare' must be a list of parameter names, got {compare!r}")
        metric = data.get("metric", "val_acc")
        if not isinstance(metric, str) or not metric:
            raise ParameterError(f"{where}: 'metric' must be a history.csv column name, got {metric!r}")
        return cls(
            notebook=notebook,
            name=name,
            base=_mapping(data.get("base"), f"{where}: 'base'"),
            axes=_axes(data.get("axes"), where),
            rows=_rows(data.get("rows"), where),
            grids=subgrids,
            presets=presets,
            compare=compare,
            metric=metric,
            executor=check_executor(data.get("executor"), f"{where}: executor"),
            path=Path(path) if path else None,
        )


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], prefix: str) -> None:
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            raise ParameterError(
                f"{prefix} '{key}'{did_you_mean(str(key), allowed)} (allowed: {', '.join(allowed)})"
            )


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParameterError(f"{what} must be a mapping of name: value, got {type(value).__name__}")
    return {str(k) if not isinstance(k, (int, float, bool)) else k: v for k, v in value.items()}


def _axes(value: Any, where: str) -> dict[str, list[Any]]:
    axes = _mapping(value, f"{where}: 'axes'")
    for key, values in axes.items():
        if not isinstance(values, list):
            raise ParameterError(
                f"{where}: axis '{key}' must be a list of values, got {values!r} ({type(values).__name__}); "
                f"a single value belongs in 'base'"
            )
        if not values:
            raise ParameterError(f"{where}: axis '{key}' is an empty list (it would make zero runs)")
    return axes


def _rows(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ParameterError(f"{where}: 'rows' must be a list of mappings, got {type(value).__name__}")
    return [_mapping(row, f"{where}: rows[{i}]") for i, row in enumerate(value)]


def load_grid(path: str | Path) -> GridSpec:
    """Read and structurally check a grid YAML file (ParameterError naming the key and the file)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParameterError(f"grid file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"grid file {path} is not valid YAML: {exc}") from None
    return GridSpec.from_dict(data, path)


# ---------------------------------------------------------------------------------------------- executors
EXECUTOR_KINDS = ("local", "slurm", "submitit-local")
#: key -> (accepted types, minimum, what the error says is expected); ``slurm`` (a mapping) is checked apart.
_EXECUTOR_FIELDS: dict[str, tuple[tuple[type, ...], float | None, str]] = {
    "partition": ((str,), None, "a partition name"),
    "gpus_per_job": ((int,), 0, "an integer >= 0"),
    "cpus_per_job": ((int,), 1, "an integer >= 1"),
    "time_min": ((int,), 1, "an integer number of minutes >= 1"),
    "mem_gb": ((int, float), 0, "a number of GB > 0"),
    "array_parallelism": ((int,), 1, "an integer >= 1"),
}
EXECUTOR_KEYS = ("kind", *_EXECUTOR_FIELDS, "slurm")
DEFAULT_TIME_MIN = 240
_SBATCH_VALUE_TYPES = (str, int, float, bool)


def check_executor(value: Any, where: str = "executor") -> dict[str, Any]:
    """Check an ``executor:`` mapping (grid file or command-line overrides; ``None`` values mean "not given"
    and are dropped); returns it normalised. ParameterError names the key and suggests the closest one."""
    data = {k: v for k, v in _mapping(value, where).items() if v is not None}
    _check_keys(data, EXECUTOR_KEYS, f"{where}: unknown key")
    kind = data.get("kind")
    if kind is not None and kind not in EXECUTOR_KINDS:
        raise ParameterError(
            f"{where}: unknown kind {kind!r}{did_you_mean(str(kind), EXECUTOR_KINDS)} "
            f"(kinds: {', '.join(EXECUTOR_KINDS)})"
        )
    for key, (types, minimum, expected) in _EXECUTOR_FIELDS.items():
        if key not in data:
            continue
        item = data[key]
        bad_type = isinstance(item, bool) or not isinstance(item, types)
        if bad_type or (minimum is not None and (item < minimum or (key == "mem_gb" and item <= 0))):
            raise ParameterError(f"{where}: '{key}' must be {expected}, got {item!r} ({type(item).__name__})")
        if key == "partition" and not item.strip():
            raise ParameterError(f"{where}: 'partition' must be {expected}, got an empty string")
    if "slurm" in data:
        extra = _mapping(data["slurm"], f"{where}: 'slurm' (extra sbatch settings)")
        for key, item in extra.items():
            if not isinstance(key, str) or not isinstance(item, _SBATCH_VALUE_TYPES):
                raise ParameterError(
                    f"{where}: slurm setting {key!r} must be a name with a single value (text, number or "
                    f"true), got {item!r} ({type(item).__name__})"
                )
        data["slurm"] = dict(extra)
    return data


@dataclass(frozen=True)
class ExecutorConfig:
    """Where a grid's runs execute: ``local`` worker processes, SLURM through submitit, or submitit's local
    executor. ``gpus_per_job`` None means 1 on SLURM and, for ``submitit-local``, 1 when GPUs are visible;
    ``array_parallelism`` None means SLURM's / submitit's default on SLURM and ``jobs`` for submitit-local."""

    kind: str = "local"
    partition: str | None = None
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    time_min: int = DEFAULT_TIME_MIN
    mem_gb: float | None = None
    array_parallelism: int | None = None
    slurm: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str = "executor") -> ExecutorConfig:
        return cls(**check_executor(data, where))

    @property
    def uses_submitit(self) -> bool:
        return self.kind != "local"

    def to_dict(self) -> dict[str, Any]:
        """The settings that differ from the defaults (a valid ``executor:`` mapping)."""
        default = ExecutorConfig()
        out = {k: getattr(self, k) for k in EXECUTOR_KEYS if getattr(self, k) != getattr(default, k)}
        return {"kind": self.kind, **out}

    def submitit_parameters(self, job_name: str) -> dict[str, Any]:
        """``update_parameters`` keywords of ``submitit.AutoExecutor`` for this configuration. SLURM gets the
        resources; submitit-local only the name and the time limit (GPUs are pinned by :func:`run_job`)."""
        params: dict[str, Any] = {"name": job_name, "timeout_min": self.time_min}
        if self.kind != "slurm":
            return params
        gpus = 1 if self.gpus_per_job is None else self.gpus_per_job
        params.update(nodes=1, tasks_per_node=1)
        if gpus > 0:  # a CPU-only job asks for no GPU at all (not --gpus-per-node=0)
            params["gpus_per_node"] = gpus
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.cpus_per_job is not None:
            params["cpus_per_task"] = self.cpus_per_job
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.array_parallelism is not None:
            params["slurm_array_parallelism"] = self.array_parallelism
        if self.slurm:
            params["slurm_additional_parameters"] = dict(self.slurm)
        return params

    def describe(self) -> str:
        """One line for the runner's log."""
        if self.kind == "slurm":
            gpus = 1 if self.gpus_per_job is None else self.gpus_per_job
            parts = [f"partition {self.partition or '(default)'}", f"{gpus} GPU(s)"]
            parts += [f"{self.cpus_per_job} CPUs"] if self.cpus_per_job else []
            parts += [f"{self.mem_gb:g} GB"] if self.mem_gb else []
            parts += [f"{self.time_min} min per job"]
            parts += [f"array parallelism {self.array_parallelism}"] if self.array_parallelism else []
            parts += [", ".join(f"--{k}={v}" for k, v in self.slurm.items())] if self.slurm else []
            return "slurm: " + ", ".join(parts)
        return self.kind


def resolve_executor(
    spec: GridSpec, overrides: Mapping[str, Any] | ExecutorConfig | None = None
) -> ExecutorConfig:
    """The grid file's ``executor:`` with command-line ``overrides`` on top (``None`` values: not given; a
    ``slurm`` mapping is merged key by key). Overrides are checked like the file, named "command line"."""
    if isinstance(overrides, ExecutorConfig):
        return overrides
    given = check_executor(dict(overrides or {}), "command line executor options")
    merged = {**spec.executor, **{k: v for k, v in given.items() if k != "slurm"}}
    if given.get("slurm"):
        merged["slurm"] = {**spec.executor.get("slurm", {}), **given["slurm"]}
    return ExecutorConfig.from_dict(merged, f"{spec.where}: executor")


# ---------------------------------------------------------------------------------------------- expansion
def _canonical(values: Mapping[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _expand_part(base: Mapping[str, Any], axes: Mapping[str, list[Any]], rows: list[dict]) -> list[dict]:
    if not axes and not rows:
        return [dict(base)]
    runs = []
    if axes:  # product() of no axes would be one empty combination
        runs = [{**base, **dict(zip(axes, c, strict=True))} for c in itertools.product(*axes.values())]
    return runs + [{**base, **row} for row in rows]


def apply_preset(run: Mapping[str, Any], preset: Mapping[str, Any]) -> dict[str, Any]:
    """``replace`` substitutions on the run's values, then the preset's ``base`` overrides.

    A substitution whose new value is a mapping sets several parameters for the runs that match, after
    ``base`` (e.g. ``model: {efficientnet-b4: {model: tf_efficientnet_lite0, pretrained: true}}``)."""
    out = dict(run)
    bundles: dict[str, Any] = {}
    for key, substitutions in preset.get("replace", {}).items():
        if key in out:
            for old, new in substitutions.items():
                if _same(out[key], old):
                    if isinstance(new, Mapping):
                        bundles.update(new)
                    else:
                        out[key] = new
                    break
    out.update(preset.get("base", {}))
    out.update(bundles)
    return out


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

    from .cli import notebook_path

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
            raise ParameterError(
                f"{label}: parameter '{key}' is not in the parameters cell of notebooks/{spec.notebook}.ipynb "
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
    without ID_EXCLUDED keys; the same in every process and invocation."""
    digest = hashlib.sha1(_identity(params).encode("utf-8")).hexdigest()[:8]
    parts = []
    for key in varying:
        if key in ID_EXCLUDED:
            continue
        value = _UNSAFE_ID_CHARS.sub("-", _short_value(params.get(key))).strip("-")[:READABLE_VALUE_MAX]
        parts.append(f"{_UNSAFE_ID_CHARS.sub('-', key)}={value or 'none'}")
    readable = re.sub(r"-{2,}", "-", "-".join(parts))[:READABLE_ID_MAX].strip("-.")
    return f"{readable}-{digest}" if readable else digest


# ---------------------------------------------------------------------------------------------- records
@dataclass
class RunRecord:
    """One run of a grid: where it goes, its resolved params and what happened."""

    run_id: str
    run_dir: Path
    params: dict[str, Any]
    status: str = "planned"  # finished | failed | skipped | planned | submitted (not waited for)
    error: str | None = None
    seconds: float = 0.0
    overrides: dict[str, Any] = field(default_factory=dict)  # the values injected into the notebook
    job_id: str | None = None  # the submitit job that ran it (slurm / submitit-local executors)

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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
        record.params = {**params, "run_dir": str(record.run_dir)}
        records.append(record)
    return records, varying


# ---------------------------------------------------------------------------------------------- workers
def is_port_clash(exc: BaseException) -> bool:
    """A kernel start that failed because of a ZMQ port race (worth retrying)."""
    from papermill.exceptions import PapermillExecutionError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PapermillExecutionError):
            return False  # the notebook's own code failed
        if any(marker in str(current) for marker in PORT_CLASH_MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return False


def retry_port_clash(
    fn: Callable[[], Any],
    *,
    retries: int = 3,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Call ``fn``; retry up to ``retries`` times (growing, jittered pause) when it fails with a port clash."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == retries or not is_port_clash(exc):
                raise
            sleep(backoff * (attempt + 1) + random.uniform(0.0, backoff))
    raise AssertionError("unreachable")


def error_text(exc: BaseException) -> str:
    """``ename: evalue`` of a failing notebook cell, else ``Type: message``."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}"


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def settle_run(
    notebook: str,
    params: dict[str, Any],
    run_dir: str | Path,
    error: str | None,
    seconds: float,
    tb: str | None = None,
) -> dict[str, Any]:
    """The outcome of one run from its ``metrics.json``; when the run failed and the notebook did not record
    it (died before writing ``metrics.json``, or failed after writing ``finished``), ``metrics.json`` is
    (re)written with status ``failed``, the error, notebook and params (other keys kept)."""
    run_dir = Path(run_dir)
    metrics = _read_json(run_dir / "metrics.json")
    if error is None:
        if metrics and metrics.get("status") == "finished":
            return {"status": "finished", "error": None, "seconds": seconds, "metrics": _numeric(metrics)}
        error = "the notebook finished without writing metrics.json with status 'finished'"
    if not metrics or metrics.get("status") != "failed":
        kept = {
            k: v
            for k, v in (metrics or {}).items()
            if k not in ("notebook", "params", "status", "seconds", "error")
        }
        if tb and "traceback" not in kept:
            kept["traceback"] = tb
        run_dir.mkdir(parents=True, exist_ok=True)
        write_metrics(
            run_dir,
            notebook=notebook,
            params=(metrics or {}).get("params") or params,
            status="failed",
            seconds=float((metrics or {}).get("seconds") or seconds),
            error=error,
            **kept,
        )
    return {"status": "failed", "error": error, "seconds": seconds, "metrics": _numeric(metrics or {})}


def execute_run(
    notebook: str, values: dict[str, Any], params: dict[str, Any], run_dir: str, retries: int = 3
) -> dict[str, Any]:
    """Worker body: ``cli.execute_notebook`` into ``run_dir`` (port clashes retried), then settle the outcome.
    Never raises for a failing run."""
    from . import cli

    start = time.time()
    error = tb = None
    injected = {**values, "run_dir": str(run_dir)}
    try:
        retry_port_clash(lambda: cli.execute_notebook(notebook, injected, progress=False), retries=retries)
    except Exception as exc:
        error, tb = error_text(exc), traceback.format_exc(limit=20)
    return settle_run(notebook, params, run_dir, error, time.time() - start, tb)


def _pin_process(cuda_visible: str | None, threads: int) -> None:
    """A share of the CPU cores (unless the environment already says) and one GPU (a CUDA_VISIBLE_DEVICES
    value; None leaves it as it is) for this process and the kernels it starts (they inherit the environment)."""
    if threads > 0:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))
    if cuda_visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(cuda_visible)


def _init_worker(gpu_queue: Any, threads: int) -> None:
    """Pool initializer: take one GPU (a CUDA_VISIBLE_DEVICES value) and a share of the CPU cores before this
    worker starts any kernel (kernels inherit the environment)."""
    try:
        value = gpu_queue.get(timeout=30)
    except _queue.Empty:
        value = None
    _pin_process(value, threads)


def run_job(
    notebook: str,
    values: dict[str, Any],
    params: dict[str, Any],
    run_dir: str,
    cuda_visible: str | None = None,
    threads: int = 0,
) -> dict[str, Any]:
    """Body of one submitit job: the pool worker's setup (GPU, CPU threads; on SLURM the threads default to
    ``SLURM_CPUS_PER_TASK`` and the GPU is the one SLURM allocated), then :func:`execute_run`."""
    if threads <= 0:
        slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
        threads = int(slurm_cpus) if slurm_cpus.isdigit() else 0
    _pin_process(cuda_visible, threads)
    return execute_run(notebook, values, params, run_dir)


def threads_per_job(jobs: int) -> int:
    """CPU threads each of ``jobs`` parallel runs gets, so that they do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def cuda_visible_value(gpu: int) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` entry for index ``gpu`` of the devices this process sees."""
    if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0:
        raise ValueError(f"gpus: expected GPU indexes >= 0, got {gpu!r}")
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    if parent is None or not parent.strip():
        return str(gpu)
    entries = [e.strip() for e in parent.split(",") if e.strip()]
    if gpu >= len(entries):
        raise ValueError(f"gpus: index {gpu} but only {len(entries)} visible (CUDA_VISIBLE_DEVICES={parent})")
    return entries[gpu]


def default_gpus() -> list[int]:
    """All CUDA devices torch sees (indexes), else none."""
    try:
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    except Exception:
        return []


def worker_pool(jobs: int, gpus: list[int] | None) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes; with ``gpus``, each pins itself to one of them (round-robin)."""
    ctx = multiprocessing.get_context("spawn")
    gpu_queue = ctx.Queue()
    for i in range(jobs):
        gpu_queue.put(cuda_visible_value(gpus[i % len(gpus)]) if gpus else None)
    threads = threads_per_job(jobs) if jobs > 1 else 0
    return ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(gpu_queue, threads)
    )


# ---------------------------------------------------------------------------------------------- the runner
def _log_line(record: RunRecord, metrics: Mapping[str, Any], done: int, total: int) -> str:
    line = f"[{done}/{total}] {record.run_id}: {record.status} in {record.seconds:.1f} s"
    if record.status == "finished":
        shown = [
            f"{k} {metrics[k]:.4g}" for k in ("top1_acc", "top5_acc", "micro_f1", "val_loss") if k in metrics
        ]
        return line + (" (" + ", ".join(shown) + ")" if shown else "")
    return line + f" - {_shorten(record.error or '', 160)}"


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


def _record_outcome(record: RunRecord, outcome: Mapping[str, Any]) -> None:
    record.status, record.error = outcome["status"], outcome["error"]
    record.seconds = float(outcome["seconds"])


def _run_local(
    spec: GridSpec, todo: list[RunRecord], jobs: int, gpus: list[int], progress: bool, log: Callable
) -> None:
    """The ``local`` executor: ``jobs`` worker processes of :func:`worker_pool`."""
    from tqdm import tqdm

    workers = min(jobs, len(todo))
    pool = worker_pool(workers, gpus)
    bar = tqdm(total=len(todo), desc=f"grid {spec.name}", unit="run", disable=not progress)
    try:
        futures: dict[Future, RunRecord] = {
            pool.submit(execute_run, spec.notebook, r.overrides, r.params, str(r.run_dir)): r for r in todo
        }
        for done, future in enumerate(as_completed(futures), start=1):
            record = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # the worker process itself died (BrokenProcessPool ...)
                outcome = settle_run(spec.notebook, record.params, record.run_dir, error_text(exc), 0.0)
            _record_outcome(record, outcome)
            bar.update(1)
            with tqdm.external_write_mode():
                log(_log_line(record, outcome.get("metrics", {}), done, len(todo)))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------- submitit jobs
#: Seconds between two looks at the jobs (a look is a stat of each result file; sacct is rate-limited by submitit).
POLL_SECONDS = {"slurm": 5.0, "submitit-local": 0.5}
_JOB_ERROR_LINE = 200


def submitit_folder(grid_dir: str | Path) -> Path:
    """``<grid folder>/submitit``: submitit's pickles and the jobs' logs (``<job id>_<task>_log.{out,err}``)."""
    return Path(grid_dir) / "submitit"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    return lines[-1] if lines else ""


def job_error(job: Any, exc: BaseException) -> str:
    """What a job that produced no outcome died of, for ``metrics.json`` and the report: the last line of the
    trace (its function raised) or its state and the last line of its error log (it died / was killed), and
    the log's path."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    text = str(exc)
    log_path = getattr(getattr(job, "paths", None), "stderr", None)
    if isinstance(exc, FailedJobError):
        parts = re.split(r"\n-{10,}\n", text)
        detail = "failed: " + _last_line(parts[1] if len(parts) > 1 else text)
    elif isinstance(exc, UncompletedJobError):
        state = re.search(r"\(state: ([^)]*)\)", text)
        detail = f"ended without a result (state: {state.group(1) if state else 'unknown'})"
        try:
            last = _last_line(Path(log_path).read_text(errors="replace")[-20000:]) if log_path else ""
        except OSError:
            last = ""
        detail += f"; last log line: {_shorten(last, _JOB_ERROR_LINE)}" if last else ""
    else:
        detail = f"failed: {type(exc).__name__}: {_shorten(_last_line(text) or text, _JOB_ERROR_LINE)}"
    where = f" (log: {log_path})" if log_path else ""
    return f"submitit job {getattr(job, 'job_id', '?')} {detail}{where}"


def _job_outcome(notebook: str, params: dict[str, Any], run_dir: str | Path, job: Any) -> dict[str, Any]:
    """The outcome of a done job: what :func:`execute_run` returned in it, else (the job died, timed out, was
    cancelled ...) the run settled as failed with :func:`job_error`, exactly as a dead local worker is."""
    try:
        outcome = job.result()
        if not isinstance(outcome, dict) or "status" not in outcome:
            raise TypeError(f"the job returned {outcome!r} instead of a run outcome")
        return outcome
    except Exception as exc:
        return settle_run(notebook, params, run_dir, job_error(job, exc), 0.0, tb=str(exc))


def _jobs_file(grid_dir: Path) -> Path:
    return submitit_folder(grid_dir) / "jobs.json"


def _read_jobs(grid_dir: Path) -> dict[str, dict[str, Any]]:
    data = _read_json(_jobs_file(grid_dir)) or {}
    jobs = data.get("jobs")
    return {str(k): v for k, v in jobs.items() if isinstance(v, dict)} if isinstance(jobs, dict) else {}


def _write_jobs(grid_dir: Path, entries: Mapping[str, dict[str, Any]]) -> None:
    path = _jobs_file(grid_dir)
    if not entries:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"cluster": "slurm", "jobs": dict(entries)}
    write_text_atomic(path, json.dumps(payload, indent=1, default=str) + "\n")


def _slurm_job(folder: Path, job_id: str) -> Any:
    """A handle on a SLURM job submitted earlier (state through sacct, result and logs from ``folder``)."""
    import submitit

    return submitit.SlurmJob(folder=folder, job_id=job_id)


def settle_submitted(grid_dir: str | Path, log: Callable[[str], Any] = print) -> dict[str, str]:
    """Look at the SLURM jobs of ``<grid>/submitit/jobs.json`` whose run has no ``metrics.json`` yet: a job
    that is done without having written it (killed, timed out, out of memory, cancelled) is recorded as a
    failed run (:func:`settle_run`, the job's error and log path); entries whose run has concluded are dropped.
    Returns ``{run_id: "<job id> (<state>)"}`` of the jobs still queued or running."""
    grid_dir = Path(grid_dir)
    entries = _read_jobs(grid_dir)
    if not entries:
        return {}
    open_entries = {
        rid: e for rid, e in entries.items() if _read_json(Path(e["run_dir"]) / "metrics.json") is None
    }
    # build every handle first: submitit asks sacct once for all registered jobs
    handles = {
        rid: _slurm_job(submitit_folder(grid_dir), str(e["job_id"])) for rid, e in open_entries.items()
    }
    active: dict[str, str] = {}
    for rid, entry in open_entries.items():
        job = handles[rid]
        if not job.done():
            active[rid] = f"{entry['job_id']} ({job.state})"
            continue
        outcome = _job_outcome(entry["notebook"], entry["params"], entry["run_dir"], job)
        log(
            f"{rid}: SLURM job {entry['job_id']} {outcome['status']}"
            + (f" - {_shorten(outcome['error'], 240)}" if outcome.get("error") else "")
        )
    _write_jobs(grid_dir, {rid: e for rid, e in entries.items() if rid in active})
    return active


def _remember_jobs(grid_dir: Path, pairs: list[tuple[RunRecord, Any]], notebook: str) -> None:
    entries = _read_jobs(grid_dir)
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    for record, job in pairs:
        entries[record.run_id] = {
            "job_id": str(job.job_id),
            "run_dir": str(record.run_dir),
            "notebook": notebook,
            "params": record.params,
            "submitted": stamp,
        }
    _write_jobs(grid_dir, entries)


def _local_slots(parallelism: int, gpus: list[int], gpus_per_job: int | None) -> list[str | None]:
    """The CUDA_VISIBLE_DEVICES value of each of the ``parallelism`` submitit-local job slots: round-robin over
    ``gpus`` as the pool's workers (``gpus_per_job`` of them each); "" (no GPU) without GPUs or with 0."""
    per_job = 1 if gpus_per_job is None else gpus_per_job
    if not gpus or per_job == 0:
        return [""] * parallelism
    values = [cuda_visible_value(g) for g in gpus]
    return [
        ",".join(values[(i * per_job + j) % len(values)] for j in range(per_job)) for i in range(parallelism)
    ]


def _run_submitit(
    spec: GridSpec,
    todo: list[RunRecord],
    config: ExecutorConfig,
    grid_dir: Path,
    *,
    jobs: int,
    gpus: list[int],
    progress: bool,
    wait: bool,
    log: Callable[[str], Any],
) -> None:
    """The ``slurm`` and ``submitit-local`` executors: one submitit job per run, each running :func:`run_job`.
    SLURM: every run in ONE job array (``map_array``); submitit-local: ``array_parallelism`` (default ``jobs``)
    local jobs at a time, a new one submitted as one ends. Then wait and record each outcome."""
    import submitit
    from tqdm import tqdm

    slurm = config.kind == "slurm"
    folder = submitit_folder(grid_dir)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm" if slurm else "local")
    executor.update_parameters(**config.submitit_parameters(f"fgvc-{spec.name}"))
    queue = list(todo)
    running: list[tuple[RunRecord, Any, int]] = []  # (record, job, local slot)
    if slurm:
        n = len(queue)
        submitted = executor.map_array(
            run_job,
            [spec.notebook] * n,
            [r.overrides for r in queue],
            [r.params for r in queue],
            [str(r.run_dir) for r in queue],
            [None] * n,
            [config.cpus_per_job or 0] * n,
        )
        _remember_jobs(grid_dir, list(zip(queue, submitted, strict=True)), spec.notebook)
        for record, job in zip(queue, submitted, strict=True):
            record.status, record.job_id = "submitted", str(job.job_id)
            running.append((record, job, -1))
        array = str(submitted[0].job_id).split("_")[0]
        ids = submitted[0].job_id if n == 1 else f"{submitted[0].job_id} .. {submitted[-1].job_id}"
        log(f"submitted {n} run(s) to SLURM as job array {array} ({ids}); logs in {folder}")
        queue = []
        if not wait:
            log(f"not waiting: `squeue -j {array}` shows them; once they are done: fgvc report {grid_dir}")
            return
    parallelism = 0 if slurm else min(config.array_parallelism or jobs, len(todo))
    slots = _local_slots(parallelism, gpus, config.gpus_per_job)
    threads = threads_per_job(parallelism) if parallelism > 1 else 0  # as the pool's workers
    free = list(range(parallelism))
    bar = tqdm(total=len(todo), desc=f"grid {spec.name}", unit="run", disable=not progress)
    done = 0
    try:
        while queue or running:
            while queue and free:
                record, slot = queue.pop(0), free.pop(0)
                job = executor.submit(
                    run_job,
                    spec.notebook,
                    record.overrides,
                    record.params,
                    str(record.run_dir),
                    slots[slot],
                    threads,
                )
                record.job_id = str(job.job_id)
                running.append((record, job, slot))
            ended = [item for item in running if item[1].done()]
            for item in ended:
                running.remove(item)
                record, job, slot = item
                if slot >= 0:
                    free.append(slot)
                outcome = _job_outcome(spec.notebook, record.params, record.run_dir, job)
                _record_outcome(record, outcome)
                done += 1
                bar.update(1)
                with tqdm.external_write_mode():
                    log(_log_line(record, outcome.get("metrics", {}), done, len(todo)))
            if not ended:
                time.sleep(POLL_SECONDS[config.kind])
    except BaseException:
        if slurm:
            array = str(running[0][1].job_id).split("_")[0] if running else "?"
            log(
                f"stopped waiting: the SLURM jobs keep running (scancel {array} stops them); "
                f"once they are done: fgvc report {grid_dir}"
            )
        else:
            for _, job, _ in running:
                job.cancel(check=False)
        raise
    finally:
        bar.close()
        if slurm:  # the jobs waited for have concluded: only the others stay listed
            waited = {r.run_id for r in todo} - {r.run_id for r, _, _ in running}
            _write_jobs(grid_dir, {k: v for k, v in _read_jobs(grid_dir).items() if k not in waited})


def run_grid(
    spec: GridSpec | str | Path,
    *,
    preset: str | None = None,
    jobs: int = 1,
    dry_run: bool = False,
    retry_failed: bool = False,
    gpus: list[int] | None = None,
    progress: bool = True,
    log: Callable[[str], Any] = print,
    executor: Mapping[str, Any] | ExecutorConfig | None = None,
    wait: bool = True,
) -> list[RunRecord]:
    """Validate every run, then execute the missing ones; a failed run does not stop the others. Writes
    ``grid.yaml`` and the report; returns the records in plan order. ``dry_run`` returns the plan
    (``planned`` / ``skipped``) and creates nothing.

    ``executor``: overrides of the grid file's ``executor:`` block (a mapping of its keys, None values = not
    given) or an :class:`ExecutorConfig`. ``local``: ``jobs`` worker processes, one GPU each when ``gpus``;
    ``slurm`` / ``submitit-local``: submitit jobs (see the module docstring). ``wait=False`` (SLURM only):
    submit, return the records as ``submitted`` and write no report (``fgvc report`` builds it later)."""
    if not isinstance(spec, GridSpec):
        spec = load_grid(spec)
    if jobs < 1:
        raise ValueError(f"jobs: expected >= 1, got {jobs}")
    config = resolve_executor(spec, executor)
    if not wait and config.kind != "slurm":
        raise ValueError(f"--no-wait is for the slurm executor (this grid runs with '{config.kind}')")
    if config.kind == "slurm" and gpus:
        raise ValueError("--gpus picks GPUs of this machine; SLURM jobs get --gpus-per-job GPUs each")
    grid_dir = grid_folder(spec)
    active = {} if dry_run else settle_submitted(grid_dir, log=log)
    records, _ = plan_runs(spec, preset, retry_failed=retry_failed)
    if dry_run:
        return records
    todo = [r for r in records if r.status == "planned"]
    busy = [f"{r.run_id}: job {active[r.run_id]}" for r in todo if r.run_id in active]
    if busy:
        raise RuntimeError(
            f"{len(busy)} run(s) of grid {spec.name} are still queued or running on SLURM "
            f"({'; '.join(busy[:5])}{' ...' if len(busy) > 5 else ''}); wait for them (fgvc report {grid_dir}) "
            f"or scancel them and rerun. If those jobs are gone, delete {_jobs_file(grid_dir)}"
        )
    if config.kind == "slurm":
        gpus = []
    elif gpus is None:
        gpus = default_gpus() if todo else []
    slots = [cuda_visible_value(g) for g in gpus]  # bad indexes fail before anything is created
    grid_dir.mkdir(parents=True, exist_ok=True)
    _write_grid_record(spec, preset, records, grid_dir)
    for record in todo:
        old = _existing_folder(grid_dir, record.run_id)
        if old is not None:
            state = (_read_json(old / "metrics.json") or {}).get("status")
            moved = _move_aside(old, "failed" if state == "failed" else "interrupted")
            log(
                f"{old.name}: earlier {'failed' if state == 'failed' else 'unfinished'} run moved to {moved.name}"
            )
    skipped = len(records) - len(todo)
    pinned = f", GPUs {','.join(slots)}" if slots else ""
    if config.kind == "local":
        how = f"jobs {jobs}{pinned}"
    elif config.kind == "submitit-local":
        how = f"submitit-local, {min(config.array_parallelism or jobs, max(1, len(todo)))} at a time{pinned}"
    else:
        how = config.describe()
    log(
        f"grid {spec.name}: {len(records)} runs, {len(todo)} to run, {skipped} skipped (done before) "
        f"-> {grid_dir} ({how})"
    )
    if todo and config.kind == "local":
        _run_local(spec, todo, jobs, gpus, progress, log)
    elif todo:
        _run_submitit(
            spec, todo, config, grid_dir, jobs=jobs, gpus=gpus, progress=progress, wait=wait, log=log
        )
        if not wait:
            return records
    write_report(grid_dir, compare=spec.compare, metric=spec.metric, log=log)
    return records


# ---------------------------------------------------------------------------------------------- report
def _scan(grid_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(folder name, metrics.json) of the run folders of the latest plan (grid.yaml's run ids, in plan order);
    of every run folder when there is no grid.yaml. Runs of an older plan or another preset stay on disk."""
    entries = []
    planned = set(grid_record(grid_dir).get("runs") or [])
    for folder in sorted(p for p in grid_dir.iterdir() if p.is_dir()):
        if _MOVED_ASIDE.search(folder.name) or (planned and folder.name not in planned):
            continue
        metrics = _read_json(folder / "metrics.json")
        if metrics is not None:
            entries.append((folder.name, metrics))
    seen = {name for name, _ in entries}
    for rid, job in _read_jobs(grid_dir).items():  # SLURM jobs not concluded: a row without metrics
        if rid not in seen and (not planned or rid in planned):
            entries.append((rid, {"status": "submitted", "params": job.get("params") or {}}))
    record = grid_record(grid_dir)
    order = {rid: i for i, rid in enumerate(record.get("runs") or [])}
    entries.sort(key=lambda e: (order.get(e[0], len(order)), e[0]))
    return entries


def grid_record(grid_dir: str | Path) -> dict[str, Any]:
    """``grid.yaml`` of a grid folder as written by :func:`run_grid` (empty when absent)."""
    path = Path(grid_dir) / "grid.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _frame(entries: list[tuple[str, dict[str, Any]]]) -> Any:
    import pandas as pd

    params = [m.get("params") if isinstance(m.get("params"), dict) else {} for _, m in entries]
    varying = varying_keys(params)
    numeric: list[str] = []
    for _, metrics in entries:
        numeric += [k for k in _numeric(metrics) if k not in numeric]
    preferred = [k for k in (*METRIC_KEYS, "seconds", "epochs_run", "best_epoch") if k in numeric]
    numeric = preferred + sorted(k for k in numeric if k not in preferred)
    rows = []
    for (name, metrics), p in zip(entries, params, strict=True):
        row: dict[str, Any] = {"run_id": name, "status": metrics.get("status"), "error": metrics.get("error")}
        row.update({k: _cell(p.get(k)) for k in varying})
        row.update({k: _numeric(metrics).get(k) for k in numeric})
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "status", "error", *varying, *numeric])


def _cell(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def collect_runs(grid_dir: str | Path) -> Any:
    """A ``pandas.DataFrame``, one row per run folder with a ``metrics.json``: run_id, status, error, the
    varying params and every numeric top-level key of ``metrics.json``."""
    return _frame(_scan(Path(grid_dir)))


def _shorten(text: str, limit: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"
    return str(value)


def markdown_table(df: Any, param_cols: list[str], title: str = "") -> str:
    """Varying params + status + main metrics (+ shortened error when a run failed) as Markdown."""
    metric_cols = [
        k
        for k in (*METRIC_KEYS, "best_epoch", "epochs_run", "seconds")
        if k != "top1_error" and k in df.columns and df[k].notna().any()
    ]
    cols = ["run_id", *param_cols, "status", *metric_cols]
    if "error" in df.columns and df["error"].notna().any():
        cols.append("error")
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    lines = [f"# {title}", ""] if title else []
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    lines += [f"{len(df)} runs" + (f": {summary}" if summary else ""), ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for _, row in df.iterrows():
        cells = []
        for col in cols:
            value = row[col]
            text = _shorten(value, 100) if col == "error" and isinstance(value, str) else _format(value)
            cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _history(folder: Path, metric: str) -> tuple[list[float], list[float]] | None:
    import pandas as pd

    path = folder / "history.csv"
    if not path.is_file():
        return None
    try:
        hist = pd.read_csv(path)
    except (OSError, ValueError):
        return None
    if metric not in hist.columns or hist.empty:
        return None
    epochs = hist["epoch"] if "epoch" in hist.columns else pd.Series(range(1, len(hist) + 1))
    return [float(e) for e in epochs], [float(v) for v in hist[metric]]


def compare_figure(
    grid_dir: Path, entries: list[tuple[str, dict[str, Any]]], axis: str, varying: list[str], metric: str
) -> Any:
    """``metric`` per epoch, one line per run, coloured by ``axis``' value (None when no run has history)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    lines = []
    for name, metrics in entries:
        curve = _history(grid_dir / name, metric)
        if curve is not None:
            lines.append((metrics.get("params") or {}, curve))
    if not lines:
        return None
    values: list[str] = []
    others = [k for k in varying if k != axis]
    combos: list[str] = []
    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]
    styles = ["-", "--", ":", "-."]
    for params, (epochs, ys) in lines:
        value = _short_value(params.get(axis))
        rest = ", ".join(f"{k}={_short_value(params.get(k))}" for k in others)
        values += [value] if value not in values else []
        combos += [rest] if rest not in combos else []
        label = f"{axis}={value}" + (f" ({rest})" if rest else "")
        ax.plot(
            epochs,
            ys,
            label=label,
            color=colors[values.index(value) % len(colors)],
            linestyle=styles[combos.index(rest) % len(styles)],
            marker="o",
            markersize=3,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch by {axis}")
    last = max(max(epochs) for _, (epochs, _) in lines)
    if last <= 20:
        ax.set_xticks(range(1, int(last) + 1))
        ax.set_xlim(0.5, last + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def write_report(
    grid_dir: str | Path,
    compare: list[str] | None = None,
    metric: str = "val_acc",
    log: Callable[[str], Any] = print,
) -> dict[str, Path]:
    """``summary.csv``, ``summary.md`` and ``figures/compare_<axis>.png`` per compared axis (default: every
    varying key) in ``grid_dir``; returns their paths (figures only where some run has ``metric`` history).
    SLURM jobs submitted without waiting are looked at first (:func:`settle_submitted`): those that died are
    recorded failed, those still queued or running are rows with status ``submitted``."""
    from .plots import save_figure

    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise FileNotFoundError(f"grid folder {grid_dir} does not exist (run the grid first)")
    active = settle_submitted(grid_dir, log=log)
    if active:
        log(f"{len(active)} run(s) still queued or running on SLURM; run this again once they are done")
    entries = _scan(grid_dir)
    df = _frame(entries)
    varying = varying_keys([m.get("params") or {} for _, m in entries])
    out = {"summary_csv": grid_dir / "summary.csv", "summary_md": grid_dir / "summary.md"}
    write_text_atomic(out["summary_csv"], df.to_csv(index=False))
    write_text_atomic(out["summary_md"], markdown_table(df, varying, title=f"Grid {grid_dir.name}"))
    for axis in compare if compare is not None else varying:
        fig = compare_figure(grid_dir, entries, axis, varying, metric)
        if fig is not None:
            out[f"compare_{axis}"] = save_figure(fig, grid_dir / "figures" / f"compare_{axis}.png")
    return out


def format_plan(records: list[RunRecord]) -> str:
    """One line per planned record: status, run id and the varying values."""
    varying = varying_keys([r.params for r in records])
    lines = []
    for r in records:
        values = " ".join(f"{k}={_short_value(r.params.get(k))}" for k in varying)
        lines.append(f"{r.status:8s} {r.run_id}  {values}".rstrip())
    return "\n".join(lines)
