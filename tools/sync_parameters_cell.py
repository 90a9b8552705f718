"""Rewrite a notebook's `parameters` cell from its typed dataclass (one `name: type = default  # help` per line).

    .venv/bin/python tools/sync_parameters_cell.py bird cifar100

The dataclass in fgvc_lib/config.py is the source of truth; tests/test_config.py checks the two agree.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path

import nbformat

from fgvc_lib.config import params_class

ROOT = Path(__file__).resolve().parents[1]


def parameters_source(notebook: str) -> str:
    cls = params_class(notebook)
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        origin = typing.get_origin(tp)
        type_name = tp.__name__ if isinstance(tp, type) else ("list" if origin is list else "str")
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = json.dumps(value) if isinstance(value, str) else repr(value)
        lines.append(f"{f.name}: {type_name} = {default}  # {f.metadata['help']}")
    return "\n".join(lines)


def sync(notebook: str) -> Path:
    """``notebook``: a notebook name (``bird``) or the path of its ``.ipynb``."""
    notebook = Path(notebook).name.removesuffix(".ipynb")
    path = ROOT / "notebooks" / f"{notebook}.ipynb"
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{path}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    cells[0].source = parameters_source(notebook)
    for cell in nb.cells:  # committed notebooks carry no outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    for name in sys.argv[1:] or ["bird", "cifar100", "inat_bbn", "multilabel"]:
        print(f"synced {sync(name)}")
