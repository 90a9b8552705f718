"""The reports' published figures, which ``fgvc report`` puts next to the reproduced ones.

Two places hold them; both give metric names as ``metrics.json`` has them (``top1_acc``, ``top1_error``,
``micro_f1`` ...) with values in the same units (fractions: 72.53 % is ``0.7253``):

- a grid file's ``published:`` block (copied into the grid folder's ``grid.yaml``), one entry per table row::

      published:
        source: cifar100 report, Table 1 (test accuracy)    # what the figures are, where they come from
        rows:
          - {match: {model: efficientnet-b4, batch_size: 32, loss: ce}, top1_acc: 0.8857}

  A row applies to the grid's runs whose parameters have its ``match`` values (names checked against the
  notebook's parameters). With a preset the match goes through the preset's substitutions, so the CPU
  stand-ins of ``--preset tiny`` line up with their rows (the report says they are stand-ins);

- ``parameters/published/<file>`` for a single-run report parameter file ``parameters/<file>`` (a parameter
  file holds parameters only, so its figures sit beside it)::

      source: bird report, section 3.1 (test accuracy)
      top1_acc: 0.7253

  A run matches when its parameters equal the file's (resolved, defaults filled in) on every parameter that
  defines the experiment: paths, devices, workers, seeds, speed and display options do not
  (:data:`NOT_DEFINING`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import PROJECT_ROOT, get_notebook, notebook_names
from ..config import ParameterError, params_class, read_yaml_file
from ..param_paths import path_params
from ..registry import did_you_mean

PUBLISHED_DIR = PROJECT_ROOT / "parameters" / "published"
#: Parameters that say where, how fast or how visibly a run executes, not what it measures.
NOT_DEFINING = frozenset({
    "run_dir", "resume", "device", "num_workers", "progress", "download", "seed", "amp", "channels_last",
    "compile", "cache", "cache_size", "batch_augment", "deterministic", "cam_images", "cam_layer", "cam_method",
    "pointing_part", "pointing_radius", "cam_crop", "crop_margin", "crop_source", "crop_threshold", "ece_bins",
    "many_shot", "few_shot",
})
_METRIC = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclass
class Published:
    """The published figures of one setting: ``figures`` (metric -> value), the parameters a run must have
    (``match``), ``source`` (what and where) and ``origin`` (the file or grid row that says so)."""

    figures: dict[str, float]
    match: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    origin: str = ""


def check_figures(entry: Mapping[str, Any], where: str, reserved: tuple[str, ...] = ("source",)) -> dict[str, float]:
    """The ``metric: value`` pairs of an entry (keys outside ``reserved``): metric names in metrics.json's
    style, finite numbers. ParameterError naming the entry otherwise; an entry without figures too."""
    if "source" in entry and not isinstance(entry["source"], str):
        raise ParameterError(f"{where}: 'source' must be text, got {entry['source']!r}")
    figures = {}
    for key, value in entry.items():
        if key in reserved:
            continue
        if not isinstance(key, str) or not _METRIC.match(key):
            raise ParameterError(f"{where}: {key!r} is not a metric name (metrics.json keys such as top1_acc)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ParameterError(f"{where}: published {key} must be a number, got {value!r}")
        figures[key] = float(value)
    if not figures:
        raise ParameterError(f"{where}: no published figure (metric: value, e.g. top1_acc: 0.7253)")
    return figures


def check_published(value: Any, where: str, notebook: str) -> dict[str, Any]:
    """Check a grid file's ``published:`` block (module docstring); returns it as written. ``match`` names
    must be parameters of ``notebook``."""
    if not isinstance(value, dict):
        raise ParameterError(f"{where}: 'published' must be a mapping with 'source' and 'rows'")
    for key in value:
        if key not in ("source", "rows"):
            raise ParameterError(f"{where}: 'published': unknown key {key!r}{did_you_mean(str(key), ['source', 'rows'])}"
                                 f" (allowed: source, rows)")
    if not isinstance(value.get("source", ""), str):
        raise ParameterError(f"{where}: 'published': 'source' must be text")
    rows = value.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ParameterError(f"{where}: 'published': 'rows' must be a non-empty list of {{match: {{...}}, "
                             f"metric: value}}")
    known = params_class(notebook).field_types()
    for i, row in enumerate(rows):
        label = f"{where}: published rows[{i}]"
        if not isinstance(row, dict) or not isinstance(row.get("match"), dict) or not row["match"]:
            raise ParameterError(f"{label}: expected {{match: {{parameter: value, ...}}, metric: value}}")
        for name in row["match"]:
            if name not in known:
                raise ParameterError(f"{label}: match: unknown parameter {name!r} for notebook '{notebook}'"
                                     f"{did_you_mean(str(name), known)}")
        check_figures(row, label, reserved=("match", "source"))
    return value


def grid_published(spec: Mapping[str, Any], preset: str | None = None) -> list[Published]:
    """The published rows of a grid spec (a ``grid.yaml`` record's ``spec``), matches taken through
    ``preset``'s substitutions when the runs used one."""
    from .presets import apply_preset

    block = spec.get("published") or {}
    presets = spec.get("presets") or {}
    out = []
    for row in block.get("rows") or []:
        match = dict(row.get("match") or {})
        if preset and preset in presets:
            match = {k: v for k, v in apply_preset(match, presets[preset]).items() if k in match}
        out.append(Published(
            figures={k: float(v) for k, v in row.items() if k not in ("match", "source")},
            match=match, source=str(row.get("source") or block.get("source") or ""),
            origin=f"the published: block of grid {spec.get('name') or ''}".rstrip()))
    return out


def _notebook_of_file(name: str) -> str | None:
    for notebook in notebook_names():
        if name in get_notebook(notebook).report_files:
            return notebook
    return None


def load_published_file(path: str | Path) -> tuple[str, Published]:
    """``(notebook, Published)`` of ``parameters/published/<file>``: its figures, and as ``match`` the
    defining parameters of ``parameters/<file>`` (resolved, defaults filled in)."""
    path = Path(path)
    notebook = _notebook_of_file(path.name)
    params_file = path.parent.parent / path.name
    if notebook is None or not params_file.is_file():
        raise ParameterError(f"{path}: names no report parameter file of a notebook (expected parameters/"
                             f"{path.name} listed in a notebook's report_files)")
    entry = read_yaml_file(path, "published figures file")
    if not isinstance(entry, dict):
        raise ParameterError(f"{path}: expected a mapping of source: text and metric: value")
    figures = check_figures(entry, str(path))
    values = read_yaml_file(params_file) or {}
    if not isinstance(values, dict) or "notebook" in values:
        raise ParameterError(f"{path}: {params_file.name} is a grid file; its figures go in its published: block")
    cls = params_class(notebook)
    resolved = cls.from_dict(values).to_dict()
    skip = NOT_DEFINING | set(path_params(cls))
    match = {k: v for k, v in resolved.items() if k not in skip and not k.startswith("synth_")}
    return notebook, Published(figures, match, str(entry.get("source") or ""), f"parameters/{path.name}")


def run_published(notebook: str, folder: str | Path | None = None) -> list[Published]:
    """The published figures of ``notebook``'s single-run report files (``folder``: PUBLISHED_DIR)."""
    out = []
    for path in sorted(Path(folder or PUBLISHED_DIR).glob("*.yaml")):
        if _notebook_of_file(path.name) == notebook:
            out.append(load_published_file(path)[1])
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) != isinstance(b, str):  # "0" (an alpha axis value) and 0.0 (a resolved number)
        try:
            return math.isclose(float(a), float(b))
        except (TypeError, ValueError):
            return False
    return a == b


def matches(params: Mapping[str, Any], match: Mapping[str, Any]) -> bool:
    """``params`` has every ``match`` value (a run that does not record one of them does not match)."""
    return bool(match) and all(k in params and _same(params[k], v) for k, v in match.items())


def find_published(params: Mapping[str, Any], entries: list[Published]) -> Published | None:
    """The first entry whose ``match`` the run's ``params`` meet."""
    return next((e for e in entries if matches(params, e.match)), None)
