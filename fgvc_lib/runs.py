"""Run folders, the embedded-data location and ``metrics.json``: what every notebook writes, written safely."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from .fileio import write_text_atomic

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
    """The run folder cannot be used (not writable, or holds an earlier run's results)."""


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
    an older renderer is not reused (it stays where it is)."""
    from .data.synth.render import RENDER_VERSION

    name = f"{name}-render{RENDER_VERSION}"
    root = embedded_data_dir(name)
    if is_complete(root):
        return root
    with file_lock(root.parent / f".{name}.lock"):
        if not is_complete(root):
            write(root)
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


def prepare_run_dir(notebook: str, run_dir: str | Path = "", *, resume: bool = False) -> Path:
    """Create the run folder: ``run_dir`` if given, else ``outputs/runs/<notebook>/<run-id>``.

    A folder holding a finished or failed run (its ``metrics.json``) is never reused unless ``resume``.
    """
    if run_dir:
        folder = Path(run_dir).expanduser().resolve()
        _make_dirs(folder, "run_dir")
        if (folder / "metrics.json").exists() and not resume:
            raise RunDirError(
                f"run_dir {folder} already holds a run (metrics.json); pick a new run_dir, leave it empty for a "
                f"fresh run id, or set resume: true to continue it"
            )
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
    (folder / "figures").mkdir(exist_ok=True)
    (folder / "checkpoints").mkdir(exist_ok=True)
    return folder


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
