"""The one way the workbook writes a file: into a temporary file beside it, then ``os.replace`` (atomic on one
file system). A reader sees the old file or the new one, never half of one; a failed write leaves no temp file
and the old file untouched.

A write that fails because the disk is full, the folder is read-only or not ours to write raises
:class:`OutputWriteError`: one line naming the file and the cause (and, for a full disk, the free space)."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

#: errno values that mean "this output cannot be written here" (not a bug of the caller).
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class OutputWriteError(RuntimeError):
    """An output file cannot be written (disk full, read-only, no permission); the message names the path."""

    def __init__(self, message: str, path: Path, errno_: int | None = None):
        super().__init__(message)
        self.path = Path(path)
        self.errno = errno_


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_space(path: str | Path) -> int | None:
    """Free bytes on the file system of ``path`` (its nearest existing parent); None when unknown."""
    for folder in (Path(path), *Path(path).parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def describe_write_error(path: str | Path, exc: OSError) -> str:
    """``cannot write <path>: <cause>`` with the free space for a full disk and what to do."""
    path = Path(path)
    cause = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        free = free_space(path)
        room = f"{human_bytes(free)} free on that file system" if free is not None else "free space unknown"
        return f"cannot write {path}: {cause} ({room}); free some space or write the outputs elsewhere"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"cannot write {path}: {cause}; expected a folder this user can write to (set FGVC_OUTPUTS or "
            f"run_dir to a writable folder)"
        )
    return f"cannot write {path}: {cause}"


def output_error(path: str | Path, exc: OSError) -> OutputWriteError:
    """The :class:`OutputWriteError` of a failed write of ``path``."""
    return OutputWriteError(describe_write_error(path, exc), Path(path), exc.errno)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # the original error matters more; a read-only folder cannot hold a new temp file anyway


def atomic_write(path: str | Path, write: Callable[[IO], Any], *, mode: str = "w", **open_kwargs: Any) -> Path:
    """Open a temp file next to ``path`` (``mode`` ``"w"`` text, ``"wb"`` binary), let ``write(fh)`` fill it,
    then rename it over ``path``. Parent folders are created. A full disk or a read-only folder raises
    :class:`OutputWriteError` naming ``path``; the temp file is removed whatever happens."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode, **open_kwargs) as fh:
            write(fh)
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        if exc.errno in OUTPUT_ERRNOS:
            raise output_error(path, exc) from exc
        raise
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text))


def save_figure_atomic(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """``fig.savefig`` as PNG through :func:`atomic_write` (no half-written or stray temp image on failure)."""
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight"), mode="wb")
