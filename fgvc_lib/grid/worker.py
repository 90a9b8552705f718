"""One run of a grid, in whatever process executes it (a pool worker or a submitit job): the papermill call
(:func:`execute_run`, kernel port clashes retried), its outcome settled from ``metrics.json`` (a failure the
notebook did not record is written there), and the job's setup (:func:`run_job`: GPU and CPU threads).

Ctrl-C: while a run executes, the first SIGINT stops it (papermill shuts its kernel down) and the run is
recorded ``interrupted`` (:func:`settle_interrupted`: its checkpoints stay, a rerun of the grid resumes it);
later ones are ignored until the run is settled. A pool worker ignores SIGINT between runs, and a run that
would start after the grid was told to stop (the pool's ``stop`` event) does not start.

In a worker or job, what a run prints (papermill, its kernel) goes to :func:`run_log`, not the console."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import execution
from ..outcome import _numeric, error_text, settle_interrupted, settle_run  # noqa: F401 (re-exported)
from ..runs import RunInUse

#: The pool's "stop" event in a worker process (set by :func:`~fgvc_lib.grid.executors.worker_pool`'s
#: initializer): once set, :func:`execute_run` starts no run.
_STOP_EVENT: Any = None
#: True in a pool worker or submitit job: the output of a run (papermill's, its kernel's) goes to
#: ``<grid folder>/logs/<run id>.log`` instead of the console (:func:`run_log`).
_LOG_TO_FILE = False
#: Outcome of a run that did not start because the grid was stopped first.
NOT_STARTED = {"status": "planned", "error": None, "seconds": 0.0, "metrics": {}}

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


class _Sigint:
    """While a run executes: the first SIGINT raises KeyboardInterrupt (and is remembered), later ones are
    ignored; outside, the previous handler is back (a pool worker's: ignore)."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.seen = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def armed(self) -> Iterator[_Sigint]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def run_log(run_dir: str | Path) -> Path:
    """``<grid folder>/logs/<run id>.log``: what a run executed by a worker or job printed (its kernel's
    warnings and errors included), appended to by each attempt."""
    run_dir = Path(run_dir)
    return run_dir.parent / "logs" / f"{run_dir.name}.log"


@contextlib.contextmanager
def _output_to(path: Path | None) -> Iterator[None]:
    """File descriptors 1 and 2 of this process (inherited by the kernel it starts) appended to ``path``."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "ab") as handle:
            os.dup2(handle.fileno(), 1)
            os.dup2(handle.fileno(), 2)
            try:
                yield
            finally:
                gc.collect()  # what papermill left behind (an interrupted run's tasks) reports into the log too
                sys.stdout.flush()
                sys.stderr.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def execute_run(
    notebook: str, values: dict[str, Any], params: dict[str, Any], run_dir: str, retries: int = 3
) -> dict[str, Any]:
    """Worker body: ``execution.execute_notebook`` into ``run_dir`` (port clashes retried), then settle the
    outcome. Never raises for a failing run; Ctrl-C during the run makes it ``interrupted``; a run the grid
    was stopped before returns :data:`NOT_STARTED` without touching anything."""
    start = time.time()
    error = tb = None
    injected = {**values, "run_dir": str(run_dir)}
    sigint = _Sigint()
    try:
        with sigint.armed():
            if _STOP_EVENT is not None and _STOP_EVENT.is_set():  # checked once SIGINT is armed: no race
                return dict(NOT_STARTED)
            try:
                with _output_to(run_log(run_dir) if _LOG_TO_FILE else None):
                    retry_port_clash(
                        lambda: execution.execute_notebook(notebook, injected, progress=False), retries=retries
                    )
            except RunInUse as exc:  # another process runs in this folder: its files are not ours to mark
                return {"status": "failed", "error": error_text(exc), "seconds": time.time() - start, "metrics": {}}
            except Exception as exc:
                error, tb = error_text(exc), traceback.format_exc(limit=20)
    except KeyboardInterrupt:
        sigint.seen = True
    if sigint.seen:
        return settle_interrupted(notebook, params, run_dir, time.time() - start)
    return settle_run(notebook, params, run_dir, error, time.time() - start, tb)


def _worker_setup(stop: Any = None) -> None:
    """A pool worker ignores SIGINT between runs (Ctrl-C reaches it through :func:`execute_run` only) and
    keeps the grid's ``stop`` event."""
    global _STOP_EVENT, _LOG_TO_FILE
    _STOP_EVENT, _LOG_TO_FILE = stop, True
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    global _LOG_TO_FILE
    _LOG_TO_FILE = True
    _pin_process(cuda_visible, threads)
    return execute_run(notebook, values, params, run_dir)
