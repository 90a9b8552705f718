"""The grid file: parsing and structural checks of a grid YAML (:class:`GridSpec`, :func:`load_grid`) and of
its ``executor:`` block (:class:`ExecutorConfig`, with the command-line overrides of :func:`resolve_executor`).
The runs' parameters are checked against the notebook when they are planned (:mod:`fgvc_lib.grid.plan`).

Grid YAML format::

    notebook: cifar100            # a notebook declared in fgvc_lib.catalog (its .ipynb and params class)
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
    metric: val_acc               # optional: what `fgvc report` draws and sorts by: a history.csv column (curves,
                                  #   best epoch's value) or a metrics.json key (default val_acc)
    published:                    # optional: the report's figures, shown next to the reproduced ones
      source: cifar100 report, Table 1 (test accuracy)        #   (format: fgvc_lib.grid.published)
      rows:
        - {match: {model: swin_base_patch4_window12_384, loss: focal}, top1_acc: 0.9356}
    executor:                     # optional: where the runs execute (``fgvc grid`` options override it)
      kind: slurm                 #   local (default: worker processes) | slurm | submitit-local
      partition: gpu              #   the keys below are for slurm / submitit-local (see ExecutorConfig)
      gpus_per_job: 1
      cpus_per_job: 8
      time_min: 240
      mem_gb: 32
      array_parallelism: 16
      slurm: {account: myproj, qos: normal}   # extra sbatch settings (slurm_additional_parameters)
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import notebook_names
from ..config import ParameterError, params_class, read_yaml_file
from ..registry import did_you_mean

TOP_KEYS = ("notebook", "name", "base", "axes", "rows", "grids", "presets", "compare", "metric", "executor",
            "published")
SUBGRID_KEYS = ("base", "axes", "rows")
PRESET_KEYS = ("base", "replace")


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
    published: dict[str, Any] = field(default_factory=dict)  # {'source': ..., 'rows': [...]}: grid.published
    path: Path | None = None

    @property
    def where(self) -> str:
        """How errors name this grid: its file, else its name."""
        return str(self.path) if self.path else f"grid '{self.name}'"

    def to_dict(self) -> dict[str, Any]:
        """The spec as a grid YAML mapping (without ``path``)."""
        data: dict[str, Any] = {"notebook": self.notebook, "name": self.name, "base": self.base}
        for key in ("axes", "rows", "grids", "presets", "compare", "executor", "published"):
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
                f"{where}: 'notebook' is required (one of: {', '.join(notebook_names())}), got {notebook!r}"
            )
        try:
            params_class(notebook)
        except ParameterError as exc:
            raise ParameterError(f"{where}: {exc}") from None
        name = data.get("name", Path(path).stem if path else notebook + "_grid")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", name):
            raise ParameterError(f"{where}: 'name' must be a folder name ([A-Za-z0-9._-]), got {name!r}")
        if name in notebook_names():
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
        published = data.get("published")
        if published is not None:
            from .published import check_published

            published = check_published(published, where, notebook)
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
            published=copy.deepcopy(published or {}),
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
    from ..param_paths import resolve_grid_paths  # relative paths in the file: against its folder

    return GridSpec.from_dict(resolve_grid_paths(read_yaml_file(path, "grid file"), path.resolve().parent), path)


# ---------------------------------------------------------------------------------------------- executor:
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
