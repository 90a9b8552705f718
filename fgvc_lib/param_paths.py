"""Which parameters are paths, and what a relative one means.

A relative path given on the command line (``-p data_root data/x``, ``--run-dir runs/a``) is relative to the
working folder of the command; one written in a parameter file (``-f parameters/x.yaml``) or a grid file is
relative to that file's folder. Both are made absolute before anything runs, so the notebook (executed inside
its run folder) finds the same files and ``params.yaml`` records the absolute path. An empty value keeps its
meaning (``data_root: ""`` is the embedded data set).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The parameters that name files or folders, in every notebook (fgvc_lib.config); a plugin's params class may
#: mark more with field metadata ``{"path": True}`` (see :func:`path_params`).
PATH_PARAMS: tuple[str, ...] = ("data_root", "csv", "weights", "run_dir")


def path_params(params_cls: type | None = None) -> tuple[str, ...]:
    """:data:`PATH_PARAMS` plus the fields of ``params_cls`` whose metadata says ``path``."""
    names = list(PATH_PARAMS)
    fields = getattr(params_cls, "__dataclass_fields__", {}) if params_cls is not None else {}
    names += [name for name, f in fields.items() if f.metadata.get("path") and name not in names]
    return tuple(names)


def resolve_path(value: Any, base: str | Path) -> Any:
    """``value`` made absolute against ``base`` when it is a non-empty relative path (``~`` expanded);
    anything else (empty, not text) unchanged."""
    if not isinstance(value, (str, Path)) or str(value).strip() == "":
        return value
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        path = Path(base).expanduser().resolve() / path
    return str(path.resolve())


def resolve_param_paths(
    values: Mapping[str, Any], base: str | Path, names: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """A copy of ``values`` with every path parameter (``names``, default :data:`PATH_PARAMS`) made absolute
    against ``base``."""
    names = PATH_PARAMS if names is None else names
    return {k: resolve_path(v, base) if k in names else v for k, v in values.items()}


def resolve_grid_paths(data: Any, base: str | Path, names: tuple[str, ...] | None = None) -> Any:
    """A grid file's mapping with the path parameters resolved against ``base`` (its folder) wherever a run's
    values come from: ``base``, ``axes`` values, ``rows``, each of ``grids``, and presets' ``base`` and
    ``replace`` (both sides of a substitution). Anything that is not of the expected shape is left for the
    grid's own checks."""
    if not isinstance(data, dict):
        return data
    names = PATH_PARAMS if names is None else names
    data = copy.deepcopy(data)

    def values(mapping: Any) -> Any:
        return resolve_param_paths(mapping, base, names) if isinstance(mapping, dict) else mapping

    def axes(mapping: Any) -> Any:
        if not isinstance(mapping, dict):
            return mapping
        return {k: [resolve_path(v, base) for v in vs] if k in names and isinstance(vs, list) else vs
                for k, vs in mapping.items()}

    def rows(items: Any) -> Any:
        return [values(row) for row in items] if isinstance(items, list) else items

    def block(mapping: dict[str, Any]) -> None:
        if "base" in mapping:
            mapping["base"] = values(mapping["base"])
        if "axes" in mapping:
            mapping["axes"] = axes(mapping["axes"])
        if "rows" in mapping:
            mapping["rows"] = rows(mapping["rows"])

    block(data)
    grids = data.get("grids")
    for sub in grids if isinstance(grids, list) else []:
        if isinstance(sub, dict):
            block(sub)
    presets = data.get("presets")
    for preset in presets.values() if isinstance(presets, dict) else []:
        if not isinstance(preset, dict):
            continue
        if "base" in preset:
            preset["base"] = values(preset["base"])
        replace = preset.get("replace")
        if isinstance(replace, dict):
            for key, subst in replace.items():
                if isinstance(subst, dict):  # old value -> new value, or -> a mapping of several parameters
                    replace[key] = {
                        (resolve_path(old, base) if key in names else old): (
                            values(new) if isinstance(new, dict) else resolve_path(new, base) if key in names
                            else new
                        )
                        for old, new in subst.items()
                    }
    return data
