"""Notebook execution: the papermill call, HTML export, parameter loading.

``fgvc run``, ``fgvc train`` and the grid's workers all come through here; the notebook file of a name is the
one its declaration in :mod:`fgvc_lib.catalog` gives (a declared ``path`` wins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .catalog import get_notebook
from .config import ParameterError, params_class, read_yaml_file
from .runs import prepare_run_dir, project_root


def notebook_path(name: str) -> Path:
    """The notebook file of a declared notebook (:mod:`fgvc_lib.catalog`): its declared ``path``, else
    ``notebooks/<name>.ipynb`` of the checkout this package lives in, else of the current project."""
    declaration = get_notebook(name)
    path = declaration.notebook_path()
    if path.is_file():
        return path
    if declaration.path:
        raise FileNotFoundError(f"notebook {name!r}: its declared file {path} does not exist")
    fallback = project_root() / "notebooks" / f"{name}.ipynb"
    if fallback.is_file():
        return fallback
    raise FileNotFoundError(
        f"notebook notebooks/{name}.ipynb not found next to fgvc_lib or in {project_root()}"
    )


def _overrides(pairs: list[list[str]] | None) -> dict[str, Any]:
    """``-p key value`` pairs; values are parsed as YAML scalars (3 -> int, true -> bool, 1e-3 -> float)."""
    values: dict[str, Any] = {}
    for key, raw in pairs or []:
        try:
            values[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            values[key] = raw
    return values


def load_values(files: list[str] | None, pairs: list[list[str]] | None) -> dict[str, Any]:
    """Parameter files (later wins), then ``-p key value`` overrides: what ``fgvc run`` and ``fgvc train`` pass on."""
    values: dict[str, Any] = {}
    for file in files or []:
        path = Path(file)
        if not path.is_file():
            raise ParameterError(f"parameter file {file}: does not exist")
        data = read_yaml_file(path) or {}
        if not isinstance(data, dict):
            raise ParameterError(f"parameter file {file}: expected a mapping of name: value")
        values.update(data)
    values.update(_overrides(pairs))
    return values


def execute_notebook(
    notebook: str,
    values: dict[str, Any],
    *,
    progress: bool = False,
    html: bool = True,
    log_output: bool = False,
) -> Path:
    """Validate ``values`` against the notebook's parameter class, make the run folder and execute the
    notebook there with papermill (executed ``.ipynb`` + ``.html`` land in the run folder). Returns it."""
    import papermill as pm

    cls = params_class(notebook)
    params = cls.from_dict(values)  # fail before a kernel starts
    source = notebook_path(notebook)
    run_dir = prepare_run_dir(notebook, params.run_dir, resume=params.resume)
    injected = {k: params.to_dict()[k] for k in values}
    injected["run_dir"] = str(run_dir)
    injected.setdefault("progress", progress)
    output = run_dir / f"{notebook}.ipynb"
    try:
        pm.execute_notebook(
            str(source),
            str(output),
            parameters=injected,
            kernel_name="python3",
            progress_bar=progress,
            log_output=log_output,
            cwd=str(run_dir),
        )
    finally:
        if html and output.exists():
            export_html(output)
    return run_dir


def report_title(notebook_file: str | Path) -> str:
    """``<notebook> - <run id>``: the notebook's name and its run folder's name (``bird - 20240101-120000``)."""
    notebook_file = Path(notebook_file)
    run_id = notebook_file.resolve().parent.name
    return f"{notebook_file.stem} - {run_id}" if run_id else notebook_file.stem


def export_html(notebook_file: str | Path, title: str | None = None) -> Path:
    """Render an executed notebook to HTML next to it, titled ``title`` (default :func:`report_title`)."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook_file = Path(notebook_file)
    resources = {"metadata": {"name": title or report_title(notebook_file)}}
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook_file, as_version=4), resources=resources)
    out = notebook_file.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out
