"""Where a grid's runs execute, behind one interface: :class:`Executor` (``describe`` for the runner's log,
``run`` to execute the pending runs and record each outcome), implemented by :class:`LocalExecutor` (a pool of
worker processes) and :class:`SubmititExecutor` (submitit: SLURM job arrays or local jobs); the SLURM jobs of
a grid are tracked in ``<grid folder>/submitit/jobs.json`` (:func:`settle_submitted`).

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

Ctrl-C (SIGINT to the ``fgvc grid`` process, or to its whole process group from a terminal): no queued run
starts after it; the running ones are stopped and recorded ``interrupted`` in their ``metrics.json``
(:func:`~fgvc_lib.grid.worker.settle_interrupted`; their checkpoints stay), then :class:`GridInterrupted` is
raised. A second Ctrl-C stops waiting for them. SLURM jobs are not stopped: they keep running on the cluster.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import multiprocessing
import os
import queue as _queue
import re
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any

from ..runs import write_text_atomic
from .plan import RunRecord, _read_json, _shorten
from .spec import ExecutorConfig, GridSpec
from .worker import (
    _pin_process,
    _worker_setup,
    error_text,
    execute_run,
    run_job,
    settle_interrupted,
    settle_run,
)

#: Seconds between two looks at the jobs (a look is a stat of each result file; sacct is rate-limited by submitit).
POLL_SECONDS = {"slurm": 5.0, "submitit-local": 0.5}
_JOB_ERROR_LINE = 200
#: Seconds Ctrl-C waits for the running runs to stop and record themselves before giving up on them.
INTERRUPT_WAIT_SECONDS = 120.0


class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the grid: no queued run started after it, the running runs were recorded ``interrupted``
    (``records`` is every run of the plan, each with its status; ``note`` says what keeps running, if
    anything, e.g. SLURM jobs)."""

    def __init__(self, records: list[RunRecord] | None = None, note: str = ""):
        super().__init__(note or "grid interrupted")
        self.records = list(records or [])
        self.note = note

    def summary(self, grid_dir: str | Path, resume: str) -> str:
        """One line: what finished, what was interrupted (and kept), what did not start, and the command that
        resumes."""
        counts: dict[str, int] = {}
        for record in self.records:
            state = "not started" if record.status == "planned" else record.status
            counts[state] = counts.get(state, 0) + 1
        order = ("finished", "skipped", "failed", "interrupted", "submitted", "not started")
        done = ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))
        note = f"; {self.note}" if self.note else ""
        return (
            f"interrupted: {done or 'nothing ran'}; every run folder is kept in {grid_dir} (interrupted runs "
            f"keep their checkpoints){note}; resume with: {resume}"
        )


# ---------------------------------------------------------------------------------------------- the interface
class Executor:
    """Executes a grid's pending runs. ``gpus`` are indexes into the devices this process sees (checked here,
    before anything is created); ``run`` records each run's outcome in its :class:`RunRecord` (status, error,
    seconds, job id) and logs one line per run."""

    def __init__(
        self,
        spec: GridSpec,
        config: ExecutorConfig,
        grid_dir: Path,
        *,
        jobs: int = 1,
        gpus: list[int] | None = None,
        progress: bool = True,
        log: Callable[[str], Any] = print,
    ):
        self.spec, self.config, self.grid_dir = spec, config, Path(grid_dir)
        self.jobs, self.gpus, self.progress, self.log = jobs, list(gpus or []), progress, log
        self.slots = [cuda_visible_value(g) for g in self.gpus]  # CUDA_VISIBLE_DEVICES values

    def describe(self, pending: int) -> str:
        """How ``pending`` runs will execute, for the runner's log line."""
        raise NotImplementedError

    def run(self, todo: list[RunRecord], *, wait: bool = True) -> None:
        """Execute ``todo``; with ``wait=False`` (SLURM only) submit them and return (status ``submitted``)."""
        raise NotImplementedError

    @property
    def _pinned(self) -> str:
        return f", GPUs {','.join(self.slots)}" if self.slots else ""

    def _progress_bar(self, total: int) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, desc=f"grid {self.spec.name}", unit="run", disable=not self.progress)

    def _conclude(
        self, record: RunRecord, outcome: Mapping[str, Any], done: int, total: int, bar: Any
    ) -> None:
        """Record a run's outcome, advance the bar and log its line."""
        from tqdm import tqdm

        record.status, record.error = outcome["status"], outcome["error"]
        record.seconds = float(outcome["seconds"])
        bar.update(1)
        with tqdm.external_write_mode():
            self.log(_log_line(record, outcome.get("metrics", {}), done, total))


def make_executor(spec: GridSpec, config: ExecutorConfig, grid_dir: Path, **options: Any) -> Executor:
    """The executor of ``config.kind`` (``options``: jobs, gpus, progress, log of :class:`Executor`)."""
    cls = LocalExecutor if config.kind == "local" else SubmititExecutor
    return cls(spec, config, grid_dir, **options)


def _log_line(record: RunRecord, metrics: Mapping[str, Any], done: int, total: int) -> str:
    line = f"[{done}/{total}] {record.run_id}: {record.status} in {record.seconds:.1f} s"
    if record.status == "finished":
        shown = [
            f"{k} {metrics[k]:.4g}" for k in ("top1_acc", "top5_acc", "micro_f1", "val_loss") if k in metrics
        ]
        return line + (" (" + ", ".join(shown) + ")" if shown else "")
    return line + f" - {_shorten(record.error or '', 160)}"


# ---------------------------------------------------------------------------------------------- local workers
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


def _init_worker(gpu_queue: Any, threads: int, stop: Any = None) -> None:
    """Pool initializer: take one GPU (a CUDA_VISIBLE_DEVICES value) and a share of the CPU cores before this
    worker starts any kernel (kernels inherit the environment); SIGINT only reaches a running run."""
    _worker_setup(stop)
    try:
        value = gpu_queue.get(timeout=30)
    except _queue.Empty:
        value = None
    _pin_process(value, threads)


def worker_pool(jobs: int, gpus: list[int] | None, stop: Any = None) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes; with ``gpus``, each pins itself to one of them (round-robin).
    ``stop``: an event of the spawn context; once set, the workers start no run."""
    ctx = multiprocessing.get_context("spawn")
    gpu_queue = ctx.Queue()
    for i in range(jobs):
        gpu_queue.put(cuda_visible_value(gpus[i % len(gpus)]) if gpus else None)
    threads = threads_per_job(jobs) if jobs > 1 else 0
    return ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(gpu_queue, threads, stop)
    )


class LocalExecutor(Executor):
    """The ``local`` executor: ``jobs`` worker processes of :func:`worker_pool`."""

    def describe(self, pending: int) -> str:
        return f"jobs {self.jobs}{self._pinned}"

    def run(self, todo: list[RunRecord], *, wait: bool = True) -> None:
        """At most ``jobs`` runs are handed to the pool at a time (a run handed over has started or is about
        to), so Ctrl-C leaves nothing queued in the pool: see :meth:`_interrupt`."""
        notebook = self.spec.notebook
        workers = min(self.jobs, len(todo))
        stop = multiprocessing.get_context("spawn").Event()
        pool = worker_pool(workers, self.gpus, stop)
        bar = self._progress_bar(len(todo))
        queue, futures = list(todo), {}
        self._done = 0
        try:
            try:
                while queue or futures:
                    while queue and len(futures) < workers:
                        r = queue.pop(0)
                        futures[pool.submit(execute_run, notebook, r.overrides, r.params, str(r.run_dir))] = r
                    ended, _ = wait_futures(futures, return_when=FIRST_COMPLETED)
                    for future in ended:
                        self._settle_future(futures.pop(future), future, len(todo), bar)
            except KeyboardInterrupt:
                self._interrupt(pool, stop, futures, len(todo), bar)
                raise GridInterrupted() from None
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
        pool.shutdown(wait=True)

    def _settle_future(self, record: RunRecord, future: Future, total: int, bar: Any) -> None:
        try:
            outcome = future.result()
        except Exception as exc:  # the worker process itself died (BrokenProcessPool ...)
            outcome = settle_run(self.spec.notebook, record.params, record.run_dir, error_text(exc), 0.0)
        if outcome["status"] == "planned":  # the grid was stopped before it started
            return
        self._done += 1
        self._conclude(record, outcome, self._done, total, bar)

    def _interrupt(
        self, pool: ProcessPoolExecutor, stop: Any, futures: dict[Future, RunRecord], total: int, bar: Any
    ) -> None:
        """Ctrl-C: no run starts any more (``stop``), the running ones get SIGINT (a terminal's Ctrl-C already
        sent it to the whole process group; a worker acts on the first only) and settle ``interrupted``; a
        second Ctrl-C, or runs that take longer than INTERRUPT_WAIT_SECONDS, end the waiting: their workers
        are terminated and the runs recorded ``interrupted`` here."""
        stop.set()
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for process in processes:
            with contextlib.suppress(OSError):  # already gone
                os.kill(process.pid, signal.SIGINT)
        self.log(f"Ctrl-C: stopping {len(futures)} running run(s); no queued run starts (Ctrl-C again: stop now)")
        try:
            for future in as_completed(list(futures), timeout=INTERRUPT_WAIT_SECONDS):
                self._settle_future(futures.pop(future), future, total, bar)
        except (KeyboardInterrupt, FuturesTimeout):
            for process in processes:
                with contextlib.suppress(OSError):  # already gone
                    process.terminate()
            for future, record in list(futures.items()):
                futures.pop(future)
                outcome = settle_interrupted(self.spec.notebook, record.params, record.run_dir, 0.0)
                self._done += 1
                self._conclude(record, outcome, self._done, total, bar)


# ---------------------------------------------------------------------------------------------- submitit jobs
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


class SubmititExecutor(Executor):
    """The ``slurm`` and ``submitit-local`` executors: one submitit job per run, each running :func:`run_job`.
    SLURM: every run in ONE job array (``map_array``); submitit-local: ``array_parallelism`` (default ``jobs``)
    local jobs at a time, a new one submitted as one ends. Then wait and record each outcome."""

    @property
    def slurm(self) -> bool:
        return self.config.kind == "slurm"

    def describe(self, pending: int) -> str:
        if self.slurm:
            return self.config.describe()
        parallelism = min(self.config.array_parallelism or self.jobs, max(1, pending))
        return f"submitit-local, {parallelism} at a time{self._pinned}"

    def run(self, todo: list[RunRecord], *, wait: bool = True) -> None:
        import submitit

        config, grid_dir, spec, log = self.config, self.grid_dir, self.spec, self.log
        slurm = self.slurm
        folder = submitit_folder(grid_dir)
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm" if slurm else "local")
        executor.update_parameters(**config.submitit_parameters(f"fgvc-{spec.name}"))
        queue = list(todo)
        running: list[tuple[RunRecord, Any, int]] = []  # (record, job, local slot)
        if slurm:
            running = self._submit_array(executor, queue)
            queue = []
            if not wait:
                array = str(running[0][1].job_id).split("_")[0]
                log(
                    f"not waiting: `squeue -j {array}` shows them; once they are done: fgvc report {grid_dir}"
                )
                return
        parallelism = 0 if slurm else min(config.array_parallelism or self.jobs, len(todo))
        slots = _local_slots(parallelism, self.gpus, config.gpus_per_job)
        threads = threads_per_job(parallelism) if parallelism > 1 else 0  # as the pool's workers
        free = list(range(parallelism))
        bar = self._progress_bar(len(todo))
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
                    done += 1
                    self._conclude(record, outcome, done, len(todo), bar)
                if not ended:
                    time.sleep(POLL_SECONDS[config.kind])
        except BaseException as exc:
            if slurm:
                array = str(running[0][1].job_id).split("_")[0] if running else "?"
                note = (
                    f"the SLURM jobs keep running (scancel {array} stops them); once they are done: "
                    f"fgvc report {grid_dir}"
                )
                log(f"stopped waiting: {note}")
                if isinstance(exc, KeyboardInterrupt):
                    raise GridInterrupted(note=note) from None
                raise
            for _, job, _ in running:
                job.cancel(check=False)  # submitit-local: SIGINT, the run settles 'interrupted'
            if not isinstance(exc, KeyboardInterrupt):
                raise
            for record, outcome in self._stopped_jobs(running):
                done += 1
                self._conclude(record, outcome, done, len(todo), bar)
            raise GridInterrupted() from None
        finally:
            bar.close()
            if slurm:  # the jobs waited for have concluded: only the others stay listed
                waited = {r.run_id for r in todo} - {r.run_id for r, _, _ in running}
                _write_jobs(grid_dir, {k: v for k, v in _read_jobs(grid_dir).items() if k not in waited})

    def _stopped_jobs(self, running: list[tuple[RunRecord, Any, int]]) -> list[tuple[RunRecord, dict[str, Any]]]:
        """The outcomes of cancelled local jobs: what each returned (``interrupted``, or ``finished`` if it
        just had), else - no result within INTERRUPT_WAIT_SECONDS, or a second Ctrl-C - ``interrupted``
        recorded here."""
        deadline = time.time() + INTERRUPT_WAIT_SECONDS
        out = []
        for record, job, _ in running:
            outcome = None
            try:
                while not job.done() and time.time() < deadline:
                    time.sleep(0.2)
                outcome = job.result() if job.done() else None
            except KeyboardInterrupt:
                deadline = 0.0
            except Exception:
                outcome = None
            if not isinstance(outcome, dict) or "status" not in outcome:
                outcome = settle_interrupted(self.spec.notebook, record.params, record.run_dir, 0.0)
            out.append((record, outcome))
        return out

    def _submit_array(self, executor: Any, queue: list[RunRecord]) -> list[tuple[RunRecord, Any, int]]:
        """Every run of ``queue`` in ONE SLURM job array, remembered in ``jobs.json``; (record, job, -1) each."""
        n = len(queue)
        submitted = executor.map_array(
            run_job,
            [self.spec.notebook] * n,
            [r.overrides for r in queue],
            [r.params for r in queue],
            [str(r.run_dir) for r in queue],
            [None] * n,
            [self.config.cpus_per_job or 0] * n,
        )
        _remember_jobs(self.grid_dir, list(zip(queue, submitted, strict=True)), self.spec.notebook)
        running = []
        for record, job in zip(queue, submitted, strict=True):
            record.status, record.job_id = "submitted", str(job.job_id)
            running.append((record, job, -1))
        array = str(submitted[0].job_id).split("_")[0]
        ids = submitted[0].job_id if n == 1 else f"{submitted[0].job_id} .. {submitted[-1].job_id}"
        self.log(
            f"submitted {n} run(s) to SLURM as job array {array} ({ids}); logs in {submitit_folder(self.grid_dir)}"
        )
        return running
