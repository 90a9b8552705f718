"""Running a grid: plan it, move earlier unfinished folders aside, execute the pending runs with the grid's
executor, and write ``grid.yaml`` and the report (:func:`run_grid`, behind ``fgvc grid``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..config import ParameterError, check_device
from .executors import GridInterrupted, _jobs_file, default_gpus, make_executor, settle_submitted
from .plan import (
    RunRecord,
    _existing_folder,
    _move_aside,
    _read_json,
    _write_grid_record,
    grid_folder,
    plan_runs,
)
from .report import write_report
from .spec import ExecutorConfig, GridSpec, load_grid, resolve_executor


def run_grid(
    spec: GridSpec | str | Path,
    *,
    preset: str | None = None,
    jobs: int = 1,
    dry_run: bool = False,
    retry_failed: bool = False,
    gpus: list[int] | None = None,
    progress: bool = True,
    log: Callable[[str], Any] = print,
    executor: Mapping[str, Any] | ExecutorConfig | None = None,
    wait: bool = True,
) -> list[RunRecord]:
    """Validate every run, then execute the missing ones; a failed run does not stop the others. Writes
    ``grid.yaml`` and the report; returns the records in plan order. ``dry_run`` returns the plan
    (``planned`` / ``skipped``) and creates nothing.

    ``executor``: overrides of the grid file's ``executor:`` block (a mapping of its keys, None values = not
    given) or an :class:`ExecutorConfig`. ``local``: ``jobs`` worker processes, one GPU each when ``gpus``;
    ``slurm`` / ``submitit-local``: submitit jobs (see :mod:`fgvc_lib.grid.executors`). ``wait=False`` (SLURM only):
    submit, return the records as ``submitted`` and write no report (``fgvc report`` builds it later)."""
    if not isinstance(spec, GridSpec):
        spec = load_grid(spec)
    if jobs < 1:
        raise ValueError(f"jobs: expected >= 1, got {jobs}")
    config = resolve_executor(spec, executor)
    if not wait and config.kind != "slurm":
        raise ValueError(f"--no-wait is for the slurm executor (this grid runs with '{config.kind}')")
    if config.kind == "slurm" and gpus:
        raise ValueError("--gpus picks GPUs of this machine; SLURM jobs get --gpus-per-job GPUs each")
    grid_dir = grid_folder(spec)
    active = {} if dry_run else settle_submitted(grid_dir, log=log)
    records, _ = plan_runs(spec, preset, retry_failed=retry_failed)
    if config.kind != "slurm":  # runs on this machine: their device must be here
        _check_devices(spec, records, pinned=bool(gpus) if gpus is not None else bool(default_gpus()))
    if dry_run:
        return records
    todo = [r for r in records if r.status == "planned"]
    busy = [f"{r.run_id}: job {active[r.run_id]}" for r in todo if r.run_id in active]
    if busy:
        raise RuntimeError(
            f"{len(busy)} run(s) of grid {spec.name} are still queued or running on SLURM "
            f"({'; '.join(busy[:5])}{' ...' if len(busy) > 5 else ''}); wait for them (fgvc report {grid_dir}) "
            f"or scancel them and rerun. If those jobs are gone, delete {_jobs_file(grid_dir)}"
        )
    if config.kind == "slurm":
        gpus = []
    elif gpus is None:
        gpus = default_gpus() if todo else []
    # bad GPU indexes fail here, before anything is created
    backend = make_executor(spec, config, grid_dir, jobs=jobs, gpus=gpus, progress=progress, log=log)
    grid_dir.mkdir(parents=True, exist_ok=True)
    _write_grid_record(spec, preset, records, grid_dir)
    for record in todo:
        old = None if record.resume else _existing_folder(grid_dir, record.run_id)
        if old is not None:
            state = (_read_json(old / "metrics.json") or {}).get("status")
            moved = _move_aside(old, "failed" if state == "failed" else "interrupted")
            log(
                f"{old.name}: earlier {'failed' if state == 'failed' else 'unfinished'} run moved to {moved.name}"
            )
    skipped = len(records) - len(todo)
    log(
        f"grid {spec.name}: {len(records)} runs, {len(todo)} to run, {skipped} skipped (done before) "
        f"-> {grid_dir} ({backend.describe(len(todo))})"
    )
    resumed = [r.run_id for r in todo if r.resume]
    if resumed:
        log(f"resuming {len(resumed)} interrupted run(s) from their checkpoints: {', '.join(resumed)}")
    if todo:
        try:
            backend.run(todo, wait=wait)
        except GridInterrupted as stop:
            stop.records = records
            raise
        if not wait:
            return records
    write_report(grid_dir, compare=spec.compare, metric=spec.metric, log=log)
    return records


def _check_devices(spec: GridSpec, records: list[RunRecord], *, pinned: bool) -> None:
    """Each run's ``device`` must exist on this machine (ParameterError naming the run and the device); with
    GPUs pinned per worker (``--gpus``) a worker sees one GPU, so only ``cuda`` / ``cuda:0`` are valid."""
    for record in records:
        if record.status != "planned":
            continue
        device = str(record.params.get("device", "auto"))
        try:
            check_device(device)
            if pinned and device.startswith("cuda:") and device != "cuda:0":
                raise ParameterError.of(
                    "device", f"{device!r}: each grid worker sees one GPU (--gpus pins it); use cuda or auto"
                )
        except ParameterError as exc:
            raise ParameterError(f"{spec.where}: run {record.run_id}: {exc}", key=exc.key) from None
