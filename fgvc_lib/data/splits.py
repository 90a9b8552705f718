"""Seeded train/validation splits, written as ``relative/path label`` list files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..fileio import atomic_write
from .datasets import DataError

T = TypeVar("T")


def random_split(items: Sequence[T], val_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Uniformly random split (the bird report's 70/30): ``round(val_fraction * n)`` items go to validation."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = int(round(val_fraction * len(items)))
    val_idx = set(order[:n_val].tolist())
    train = [it for i, it in enumerate(items) if i not in val_idx]
    val = [it for i, it in enumerate(items) if i in val_idx]
    return train, val


def write_list_file(path: str | Path, items: Sequence[tuple[str, int]]) -> Path:
    """Write ``relative/path label`` lines atomically (temp file + rename); inner spaces in paths are fine."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for rel, _ in items:
        if "\n" in rel or "\r" in rel or rel != rel.strip():
            raise DataError(f"{rel!r}: paths in list file {path} must not contain line breaks or edge spaces")
    return atomic_write(path, lambda fh: fh.writelines(f"{rel} {int(label)}\n" for rel, label in items))


def read_list_file(path: str | Path, num_classes: int | None = None) -> list[tuple[str, int]]:
    """Read a list file of ``relative/path label`` lines; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: list file does not exist; expected lines '<relative/path> <label>'")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); expected lines '<relative/path> <label>'") from None
    items = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{path}:{lineno}: expected 2 fields '<relative/path> <label>', got {line!r}")
        try:
            label = int(parts[1])
        except ValueError:
            raise DataError(f"{path}:{lineno}: expected an integer label, got {parts[1]!r}") from None
        if label < 0:
            raise DataError(f"{path}:{lineno}: expected a label >= 0, got {label}")
        if num_classes is not None and label >= num_classes:
            raise DataError(
                f"{path}:{lineno}: label {label} outside the class list (0..{num_classes - 1}); "
                f"expected a label below num_classes={num_classes}"
            )
        items.append((parts[0], label))
    return items


def write_train_val_split(
    items: Sequence[tuple[str, int]], out_dir: str | Path, val_fraction: float, seed: int
) -> tuple[Path, Path]:
    """Split ``items`` with a seed and write ``train.txt`` and ``val.txt`` into ``out_dir``."""
    train, val = random_split(items, val_fraction, seed)
    out_dir = Path(out_dir)
    return write_list_file(out_dir / "train.txt", train), write_list_file(out_dir / "val.txt", val)
