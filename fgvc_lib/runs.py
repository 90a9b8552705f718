"""Run folders, the embedded-data location and ``metrics.json``: what every notebook writes, written safely."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from .fileio import OUTPUT_ERRNOS, OutputWriteError, describe_write_error, write_text_atomic

METRIC_KEYS = (
    "top1_acc",
    "top5_acc",
    "top1_error",
    "val_loss",
    "ece",
    "micro_f1",
    "macro_f1",
    "exact_match",
    "baseline_all_negative_acc",
    "pointing_game",
    "crop_iou",
    "head_acc",
    "medium_acc",
    "tail_acc",
    "threshold_global",
)


class RunDirError(RuntimeError):
    """The run folder cannot be used (not writable, in use, or holds an earlier run's results)."""


class RunInUse(RunDirError):
    """Another process holds the run folder's lock (a run is executing there)."""


def project_root(start: str | Path | None = None) -> Path:
    """The workbook checkout containing ``start`` (default: cwd), found by its ``pyproject.toml`` + ``fgvc_lib``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "fgvc_lib").is_dir():
            return folder
    return here


def outputs_root() -> Path:
    """``$FGVC_OUTPUTS`` if set, else ``<project>/outputs`` (so notebooks run from notebooks/ write there too)."""
    env = os.environ.get("FGVC_OUTPUTS")
    return Path(env).expanduser().resolve() if env else project_root() / "outputs"


def embedded_data_dir(name: str) -> Path:
    """Where a generated embedded data set lives (git-ignored)."""
    return outputs_root() / "data" / name


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) held for the ``with`` block; other processes wait."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_embedded_data(
    name: str, is_complete: Callable[[Path], bool], write: Callable[[Path], Any]
) -> Path:
    """The embedded data set ``name``, generated once: parallel runs (grid workers) wait on a lock instead of
    writing the same files at the same time. The folder name carries the renderer's version, so a set drawn by
    an older renderer is not reused (it stays where it is). A folder that cannot be written (read-only, disk
    full) is a RunDirError naming it."""
    from .data.synth.render import RENDER_VERSION

    name = f"{name}-render{RENDER_VERSION}"
    root = embedded_data_dir(name)
    if is_complete(root):
        return root
    try:
        with file_lock(root.parent / f".{name}.lock"):
            if not is_complete(root):
                write(root)
    except OutputWriteError as exc:
        raise RunDirError(f"embedded data folder {root}: {exc}; or point `data_root` at a data set") from None
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRNOS:
            raise
        where = exc.filename or root
        raise RunDirError(
            f"embedded data folder {root}: {describe_write_error(where, exc)}; or point `data_root` at "
            f"a data set"
        ) from None
    return root


def new_run_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _check_writable(folder: Path) -> None:
    probe = folder / f".write-test-{os.getpid()}"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(
            f"run_dir {folder} is not writable ({exc.strerror}); expected a folder this user can write to, "
            "choose another `run_dir`"
        ) from None


_ADVICE = {
    "run_dir": "choose another `run_dir`",
    "outputs folder": "set FGVC_OUTPUTS to a writable folder or pass `run_dir`",
}


def _make_dirs(folder: Path, what: str) -> None:
    """``mkdir -p`` with a RunDirError naming the folder, the cause (a file in the way) and what to do."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        cause = f"{exc.strerror}: {blocker} is a file" if blocker is not None else exc.strerror
        raise RunDirError(
            f"{what} {folder} cannot be created ({cause}); expected a writable folder path, {_ADVICE[what]}"
        ) from None


#: What marks a folder as holding a run (a new run is refused there unless ``resume``).
RUN_FILES = ("metrics.json", "params.yaml", "checkpoints/last.pt")


def earlier_run_files(folder: Path) -> list[str]:
    """The files of :data:`RUN_FILES` that ``folder`` holds (an earlier run's)."""
    return [name for name in RUN_FILES if (folder / name).exists()]


def prepare_run_dir(notebook: str, run_dir: str | Path = "", *, resume: bool = False) -> Path:
    """Create the run folder: ``run_dir`` if given, else ``outputs/runs/<notebook>/<run-id>``, and take its
    lock (:func:`acquire_run_lock`; a folder another process is running in is refused with a
    :class:`RunInUse` naming it and the holder). A folder holding an earlier run (:data:`RUN_FILES`) is never
    reused unless ``resume``. The lock is held until :func:`release_run_dir` or the process ends.
    """
    if run_dir:
        folder = Path(run_dir).expanduser().resolve()
        _make_dirs(folder, "run_dir")
    else:
        if resume:
            raise RunDirError("resume: true needs the `run_dir` of the run to continue")
        base = outputs_root() / "runs" / notebook
        _make_dirs(base, "outputs folder")
        while True:
            folder = base / new_run_id()
            try:
                folder.mkdir()
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise RunDirError(
                    f"outputs folder {base} is not writable ({exc.strerror}); expected a folder this user "
                    f"can write to, {_ADVICE['outputs folder']}"
                ) from None
    _check_writable(folder)
    acquire_run_lock(folder)
    try:
        held = earlier_run_files(folder)
        if run_dir and held and not resume:
            raise RunDirError(
                f"run_dir {folder} already holds a run ({', '.join(held)}); pick a new run_dir, leave it empty "
                f"for a fresh run id, or set resume: true to continue it"
            )
        for sub in ("figures", "checkpoints"):
            try:
                (folder / sub).mkdir(exist_ok=True)
            except OSError as exc:
                raise RunDirError(f"run_dir {folder}: {describe_write_error(folder / sub, exc)}") from None
    except BaseException:
        release_run_dir(folder)
        raise
    return folder


# ---------------------------------------------------------------------------------------------- run lock
RUN_LOCK = ".fgvc-run.lock"
#: A process that executes a notebook for its parent (the papermill kernel of ``fgvc run``, a grid run)
#: finds the parent's lock token here and shares the parent's lock instead of being refused.
LOCK_TOKEN_ENV = "FGVC_RUN_LOCK_TOKEN"

_held: dict[Path, list[Any]] = {}  # folder -> [open lock file or None (the parent's lock), hold count, token]


def _read_holder(path: Path) -> dict[str, Any]:
    for _ in range(20):  # the holder writes its details right after taking the lock
        try:
            data = json.loads(path.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            return data
        time.sleep(0.05)
    return {}


def _in_use(folder: Path, holder: dict[str, Any]) -> RunInUse:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    since = f", started {holder['started']}" if holder.get("started") else ""
    return RunInUse(
        f"run_dir {folder} is in use by a running run ({who}{since}); wait for it to end or choose another "
        f"run_dir"
    )


def acquire_run_lock(folder: str | Path) -> str:
    """Take the run folder's lock: an ``flock`` on ``<folder>/.fgvc-run.lock`` (pid, host, start time and a
    token inside), held by this process, released by :func:`release_run_dir` or when the process ends (a
    kill -9 too, so a stale file never blocks). Re-entrant within a process. A process whose environment
    carries the holder's token (:data:`LOCK_TOKEN_ENV`) shares the lock. Returns the token."""
    folder = Path(folder).resolve()
    if folder in _held:
        _held[folder][1] += 1
        return _held[folder][2]
    path = folder / RUN_LOCK
    try:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open while the run executes
    except OSError as exc:
        raise RunDirError(f"run_dir {folder}: {describe_write_error(path, exc)}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        holder = _read_holder(path)
        token = os.environ.get(LOCK_TOKEN_ENV, "")
        if token and holder.get("token") == token:  # our parent (fgvc run, a grid worker) holds it for us
            _held[folder] = [None, 1, token]
            return token
        raise _in_use(folder, holder) from None
    token = secrets.token_hex(8)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "token": token}
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(info) + "\n")
        handle.flush()
    except OSError as exc:
        handle.close()
        raise RunDirError(f"run_dir {folder}: {describe_write_error(path, exc)}") from None
    _held[folder] = [handle, 1, token]
    return token


def release_run_dir(folder: str | Path) -> None:
    """Give back one hold of the run folder's lock (the lock is released with the last one)."""
    folder = Path(folder).resolve()
    entry = _held.get(folder)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[folder]
    if entry[0] is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(entry[0], fcntl.LOCK_UN)
        entry[0].close()


def run_lock_holder(folder: str | Path) -> dict[str, Any] | None:
    """Who holds the run folder's lock (pid, host, started), or None when no other process does."""
    folder = Path(folder).resolve()
    path = folder / RUN_LOCK
    if folder in _held or not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(path)
                token = os.environ.get(LOCK_TOKEN_ENV, "")
                return None if token and holder.get("token") == token else holder
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def check_not_in_use(folder: str | Path) -> None:
    """RunInUse when another process is running in ``folder`` (before reading or writing anything there)."""
    holder = run_lock_holder(folder)
    if holder is not None:
        raise _in_use(Path(folder).resolve(), holder)


@contextlib.contextmanager
def lock_shared_with_children(folder: str | Path) -> Iterator[None]:
    """While the block runs, child processes (the notebook's kernel) share this process's lock of ``folder``
    through :data:`LOCK_TOKEN_ENV`."""
    entry = _held.get(Path(folder).resolve())
    previous = os.environ.get(LOCK_TOKEN_ENV)
    if entry is not None:
        os.environ[LOCK_TOKEN_ENV] = entry[2]
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(LOCK_TOKEN_ENV, None)
        else:
            os.environ[LOCK_TOKEN_ENV] = previous


@contextlib.contextmanager
def staged_replace(out: Path, names: Sequence[str], prefix: str) -> Iterator[Path]:
    """Write a set of files/folders into a temporary folder inside ``out``, then swap each ``tmp/<name>`` onto
    ``out/<name>`` (the data-set writers: a failure in the body changes nothing in ``out``).

    The last name is the completeness marker: its old version is moved away first and its new one placed last,
    so an interrupted swap never looks complete. Replaced entries are moved aside and deleted after the swap.
    Temporary folders are ``<prefix>tmp-<pid>`` / ``<prefix>old-<pid>`` and removed whatever happens."""
    pid = os.getpid()
    tmp, old = out / f"{prefix}tmp-{pid}", out / f"{prefix}old-{pid}"
    for folder in (tmp, old):
        shutil.rmtree(folder, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        old.mkdir()
        *rest, marker = [out / name for name in names]
        for target in (marker, *rest):
            if target.exists() or target.is_symlink():
                os.replace(target, old / target.name)
        for target in (*rest, marker):
            os.replace(tmp / target.name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, float) and value != value:  # NaN -> null keeps the file valid JSON
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_metrics(
    run_dir: str | Path,
    *,
    notebook: str,
    params: dict[str, Any],
    status: str,
    seconds: float,
    error: str | None = None,
    **metrics: Any,
) -> Path:
    """Write ``metrics.json`` with the shared keys (DESIGN.md) plus the run's flat metrics."""
    if status not in ("finished", "failed", "running"):
        raise ValueError(f"status: expected finished, failed or running, got {status!r}")
    payload: dict[str, Any] = {
        "notebook": notebook,
        "params": params,
        "status": status,
        "seconds": round(seconds, 2),
    }
    if error:
        payload["error"] = error
    payload.update(metrics)
    return write_text_atomic(Path(run_dir) / "metrics.json", json.dumps(_jsonable(payload), indent=2) + "\n")


def write_params(run_dir: str | Path, params: dict[str, Any]) -> Path:
    """The resolved parameters as ``params.yaml`` in the run folder."""
    return write_text_atomic(
        Path(run_dir) / "params.yaml", yaml.safe_dump(_jsonable(params), sort_keys=False)
    )


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "metrics.json").read_text())
