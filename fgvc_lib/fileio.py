"""The one way the workbook writes a file: into a temporary file beside it, then ``os.replace`` (atomic on one
file system). A reader sees the old file or the new one, never half of one; a failed write leaves no temp file
and the old file untouched."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO], Any], *, mode: str = "w", **open_kwargs: Any) -> Path:
    """Open a temp file next to ``path`` (``mode`` ``"w"`` text, ``"wb"`` binary), let ``write(fh)`` fill it,
    then rename it over ``path``. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        with open(tmp, mode, **open_kwargs) as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text))
