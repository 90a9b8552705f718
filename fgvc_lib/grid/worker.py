"""One run of a grid, in whatever process executes it (a pool worker or a submitit job): the papermill call
(:func:`execute_run`, kernel port clashes retried), its outcome settled from ``metrics.json`` (a failure the
notebook did not record is written there), and the job's setup (:func:`run_job`: GPU and CPU threads)."""

from __future__ import annotations

import os
import random
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import execution
from ..runs import write_metrics
from .plan import _read_json

PORT_CLASH_MARKERS = ("Address already in use", "Kernel died before replying to kernel_info")


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
    """Worker body: ``execution.execute_notebook`` into ``run_dir`` (port clashes retried), then settle the
    outcome. Never raises for a failing run."""
    start = time.time()
    error = tb = None
    injected = {**values, "run_dir": str(run_dir)}
    try:
        retry_port_clash(
            lambda: execution.execute_notebook(notebook, injected, progress=False), retries=retries
        )
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
