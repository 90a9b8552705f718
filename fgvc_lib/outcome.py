"""How a run ended, read from and written to its ``metrics.json``: :func:`settle_run` (finished, or a failure
the notebook did not record, written as ``failed``) and :func:`settle_interrupted` (Ctrl-C: ``interrupted``,
the checkpoints kept so a rerun resumes). Shared by ``fgvc run`` (:mod:`fgvc_lib.execution`) and the grid
workers (:mod:`fgvc_lib.grid.worker`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .runs import _jsonable, write_metrics, write_text_atomic


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


def _history_rows(run_dir: Path) -> int:
    try:
        lines = (run_dir / "history.csv").read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    return max(0, len([line for line in lines if line.strip()]) - 1)


def settle_interrupted(
    notebook: str, params: dict[str, Any], run_dir: str | Path, seconds: float
) -> dict[str, Any]:
    """The outcome of a run stopped by Ctrl-C: ``metrics.json`` says ``interrupted`` (other keys it had are
    kept; a run that had just finished stays finished), with the epochs done and the checkpoint kept, so a
    rerun of the grid resumes it."""
    run_dir = Path(run_dir)
    metrics = _read_json(run_dir / "metrics.json") or {}
    if metrics.get("status") == "finished":
        return settle_run(notebook, params, run_dir, None, seconds)
    epochs = _history_rows(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    kept = f"; {last} kept after epoch {epochs}" if last.is_file() else "; no checkpoint yet"
    error = f"interrupted (Ctrl-C){kept}"
    payload = {
        **metrics,
        "notebook": notebook,
        "params": metrics.get("params") or params,
        "status": "interrupted",
        "seconds": round(float(metrics.get("seconds") or seconds), 2),
        "error": error,
        "epochs_run": epochs,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "metrics.json", json.dumps(_jsonable(payload), indent=2) + "\n")
    return {"status": "interrupted", "error": error, "seconds": seconds, "metrics": {"epochs_run": epochs}}
