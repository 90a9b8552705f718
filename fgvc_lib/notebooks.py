"""Run a notebook from Python, as ``fgvc run`` does: ``fgvc_lib.notebooks.run("bird", {"epochs": 1})``.

It executes the notebook with papermill into its own run folder, writes the HTML report next to the executed
notebook and returns the run folder, after the same checks as the CLI (parameter names, types and ranges, model
and preset names, the device on this machine) and with the same run-folder rules (a new folder per run, a lock
while it executes, ``resume`` from ``params.yaml``; :mod:`fgvc_lib.execution`). Calling
``papermill.execute_notebook`` directly works too (the notebook checks its parameters itself), but leaves no
HTML and gives back the notebook, not the run folder.

    from fgvc_lib.notebooks import run
    from fgvc_lib.run_summary import run_summary

    run_dir = run("bird", {"epochs": 1, "lr_steps": "15,30"}, files=["parameters/bird.yaml"])
    print("\\n".join(run_summary(run_dir)))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["run"]


def run(
    notebook: str,
    params: Mapping[str, Any] | None = None,
    *,
    files: Iterable[str | Path] = (),
    run_dir: str | Path | None = None,
    html: bool = True,
    quiet: bool = False,
) -> Path:
    """Execute ``notebook`` (a name: ``bird``, ``cifar100``, ``inat_bbn``, ``multilabel`` or one declared in
    :mod:`fgvc_lib.catalog`) with the parameter files ``files`` (later wins), then ``params`` on top, into
    ``run_dir`` (default: a new ``outputs/runs/<notebook>/<run-id>/``); returns the run folder, which holds the
    executed notebook, its HTML (unless ``html`` is false), ``metrics.json`` and the rest.

    The notebook's printed lines (the per-epoch line) are echoed on stdout as they come unless ``quiet``.
    Relative paths in ``params`` and ``run_dir`` are against the working folder, those in a file against the
    file's folder. Raises :class:`~fgvc_lib.config.ParameterError` before anything starts for a bad value,
    :class:`~fgvc_lib.execution.NotebookFailed` (one line; the traceback in the run's log) when a cell raises,
    and :class:`~fgvc_lib.execution.RunInterrupted` (``.summary()``: what was kept and how to resume) on Ctrl-C.
    """
    from .config import check_device, params_class
    from .execution import execute_notebook, interrupt_once, load_values, prepare_values, print_line

    values = load_values([str(f) for f in files], None, notebook=notebook)
    values.update(params or {})
    if run_dir is not None:
        values["run_dir"] = str(Path(run_dir).expanduser().resolve())
    check_device(params_class(notebook).from_dict(prepare_values(notebook, dict(values))).device)
    with interrupt_once():
        return execute_notebook(notebook, values, html=html, echo=None if quiet else print_line)
