"""CIFAR-100 in its real python format: a reader, the row layout and a torchvision bridge.

On disk (as distributed by the CIFAR authors): ``<root>/cifar-100-python/{train,test,meta}``, each a pickle
of a dict. ``train``/``test``: ``filenames`` (list of str), ``batch_label`` (str), ``fine_labels`` (list of
int 0..99), ``coarse_labels`` (list of int 0..19) and ``data`` (uint8 N x 3072: the 1024 red values, then
1024 green, then 1024 blue, each plane a row-major 32 x 32 image). ``meta``: ``fine_label_names`` (100 str)
and ``coarse_label_names`` (20 str). Pickles written by Python 2 load with str keys under
``encoding='latin1'``; re-saved copies may hold bytes keys and bytes names, which the reader accepts too.

The synthetic writer of this format is :func:`fgvc_lib.data.synth.cifar.write_cifar100`.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fgvc_lib.data.datasets import DataError

BASE_FOLDER = "cifar-100-python"
"""Folder of the official archive that holds ``train``, ``test`` and ``meta``."""

SPLITS: tuple[str, ...] = ("train", "test")
NUM_FINE = 100
NUM_COARSE = 20
IMAGE_SIZE = 32
ROW_LENGTH = 3 * IMAGE_SIZE * IMAGE_SIZE

_REQUIRED_SPLIT_KEYS = ("data", "fine_labels", "filenames")

# ------------------------------------------------------------------------------------------ layout helpers


def to_cifar_rows(images: np.ndarray) -> np.ndarray:
    """N x 32 x 32 x 3 (HWC) uint8 images -> N x 3072 rows (R plane, G plane, B plane, row-major)."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"images: expected an N x 32 x 32 x 3 array, got shape {images.shape}")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), ROW_LENGTH))


def from_cifar_rows(rows: np.ndarray) -> np.ndarray:
    """N x 3072 rows -> N x 32 x 32 x 3 (HWC) uint8 images; the inverse of :func:`to_cifar_rows`."""
    rows = np.asarray(rows, dtype=np.uint8)
    return np.ascontiguousarray(rows.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1))


# ------------------------------------------------------------------------------------------ reader


@dataclass
class CifarArrays:
    """One CIFAR-100 split in memory: HWC uint8 images, int64 labels and the class names."""

    images: np.ndarray
    fine_labels: np.ndarray
    coarse_labels: np.ndarray | None
    filenames: list[str]
    fine_names: list[str]
    coarse_names: list[str]

    def __len__(self) -> int:
        return len(self.images)


def _check_split(split: object) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    return str(split)


def _base_folder(root: str | os.PathLike[str]) -> Path:
    """``root/cifar-100-python`` or ``root`` itself when it is that folder; DataError if root is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: CIFAR-100 data root does not exist; expected a folder holding {BASE_FOLDER}/ "
            "(train, test, meta) or that folder itself"
        )
    nested = root / BASE_FOLDER
    if nested.is_dir():
        return nested
    if root.name == BASE_FOLDER or any((root / name).is_file() for name in ("train", "test", "meta")):
        return root
    return nested


def _text(value: object) -> object:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _load_dict(path: Path, which: str) -> dict[str, Any]:
    """Unpickle a CIFAR file (latin1, like torchvision) and turn bytes keys into str keys."""
    if not path.is_file():
        raise DataError(f"{path}: CIFAR-100 '{which}' file is missing; expected it at {path}")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DataError(
            f"{path}: cannot read the CIFAR-100 '{which}' file ({type(exc).__name__}: {exc}); "
            "expected a python pickle"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"{path}: the CIFAR-100 '{which}' pickle holds a {type(obj).__name__}; expected a dict"
        )
    return {_text(key): value for key, value in obj.items()}  # type: ignore[misc]


def _require(d: dict[str, Any], key: str, path: Path) -> Any:
    if key not in d:
        found = ", ".join(repr(k) for k in d) or "none"
        raise DataError(f"{path}: missing key '{key}' (keys found: {found})")
    return d[key]


def _names(d: dict[str, Any], key: str, count: int, path: Path) -> list[str]:
    value = _require(d, key, path)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, bytes)) for v in value):
        raise DataError(f"{path}: key '{key}' must be a list of strings, got {type(value).__name__}")
    if len(value) != count:
        raise DataError(f"{path}: key '{key}' has {len(value)} names; expected {count}")
    names = [str(_text(v)) for v in value]
    first: dict[str, int] = {}
    repeated = [
        f"{name!r} (index {first[name]} and {i})"
        for i, name in enumerate(names)
        if first.setdefault(name, i) != i
    ]
    if repeated:
        raise DataError(
            f"{path}: key '{key}' repeats names: {', '.join(repeated)}; expected {count} distinct names"
        )
    return names


def _data(d: dict[str, Any], path: Path) -> np.ndarray:
    value = _require(d, "data", path)
    try:
        arr = np.asarray(value)
    except Exception:  # ragged nested lists
        arr = np.asarray([], dtype=object)
    if arr.ndim != 2 or arr.shape[1] != ROW_LENGTH or arr.dtype.kind not in "iu":
        raise DataError(
            f"{path}: key 'data' has shape {arr.shape} and dtype {arr.dtype}; expected an N x {ROW_LENGTH} "
            "uint8 array (1024 R, 1024 G, 1024 B values per 32x32 image)"
        )
    if arr.dtype != np.uint8 and arr.size and (arr.min() < 0 or arr.max() > 255):
        raise DataError(f"{path}: key 'data' has values in {arr.min()}..{arr.max()}; expected 0..255 (uint8)")
    return arr.astype(np.uint8, copy=False)


def _labels(d: dict[str, Any], key: str, n: int, count: int, path: Path) -> np.ndarray:
    value = _require(d, key, path)
    try:
        labels = np.asarray(value)
    except Exception:
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"{path}: key '{key}' must be a list of integers, got {type(value).__name__}")
    if len(labels) != n:
        raise DataError(f"{path}: key '{key}' has {len(labels)} labels but 'data' has {n} images")
    bad = np.flatnonzero((labels < 0) | (labels >= count))
    if bad.size:
        i = int(bad[0])
        more = f" ({bad.size} labels outside, first shown)" if bad.size > 1 else ""
        raise DataError(
            f"{path}: key '{key}' index {i}: label {labels[i]} is outside the class list{more}; "
            f"expected 0..{count - 1}"
        )
    return labels.astype(np.int64)


def _filenames(d: dict[str, Any], n: int, path: Path) -> list[str]:
    value = _require(d, "filenames", path)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, bytes)) for v in value):
        raise DataError(f"{path}: key 'filenames' must be a list of strings, got {type(value).__name__}")
    if len(value) != n:
        raise DataError(f"{path}: key 'filenames' has {len(value)} names but 'data' has {n} images")
    return [str(_text(v)) for v in value]


def _meta_names(base: Path) -> tuple[list[str], list[str]]:
    path = base / "meta"
    meta = _load_dict(path, "meta")
    fine = _names(meta, "fine_label_names", NUM_FINE, path)
    coarse = _names(meta, "coarse_label_names", NUM_COARSE, path) if "coarse_label_names" in meta else []
    return fine, coarse


def read_cifar100(root: str | os.PathLike[str], split: str) -> CifarArrays:
    """Read ``root/cifar-100-python/{split}`` and ``meta`` (``root`` may also be that folder itself).

    Accepts str or bytes keys and names. ``coarse_labels`` and ``coarse_label_names`` are optional
    (``None`` / ``[]`` when absent); everything else is required and checked. Pickles can run code when
    loaded: read only files you trust (the same holds for torchvision's loader).
    """
    split = _check_split(split)
    base = _base_folder(root)
    path = base / split
    d = _load_dict(path, split)
    fine_names, coarse_names = _meta_names(base)
    for key in _REQUIRED_SPLIT_KEYS:
        _require(d, key, path)
    rows = _data(d, path)
    n = len(rows)
    if n == 0:
        raise DataError(f"{path}: key 'data' holds no images; expected an N x {ROW_LENGTH} array with N > 0")
    fine = _labels(d, "fine_labels", n, NUM_FINE, path)
    coarse = _labels(d, "coarse_labels", n, NUM_COARSE, path) if "coarse_labels" in d else None
    return CifarArrays(
        images=from_cifar_rows(rows),
        fine_labels=fine,
        coarse_labels=coarse,
        filenames=_filenames(d, n, path),
        fine_names=fine_names,
        coarse_names=coarse_names,
    )


# ------------------------------------------------------------------------------------------ torchvision


def is_official_cifar100(root: str | os.PathLike[str]) -> bool:
    """True when ``train``, ``test`` and ``meta`` are present with torchvision's MD5 sums (the real set)."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import check_integrity

    try:
        base = _base_folder(root)
    except DataError:
        return False
    cls = tvd.CIFAR100
    expected = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
    return all(check_integrity(str(base / name), md5) for name, md5 in expected)


def load_cifar100(root: str | os.PathLike[str], split: str, *, download: bool = False) -> CifarArrays:
    """Load a CIFAR-100 split: the official files through torchvision, anything else with our reader.

    When the official files are present (:func:`is_official_cifar100`) or ``download`` is True,
    ``torchvision.datasets.CIFAR100`` loads (and, only with ``download=True``, downloads) the split and
    checks its MD5 sums; images, fine labels and fine names come from it. Coarse labels, coarse names and
    filenames are then read from the verified pickles themselves (torchvision drops them); when those files
    are absent (possible only with a stand-in for torchvision) they are ``None``, ``[]`` and generated
    names. Otherwise (e.g. the synthetic set of :func:`fgvc_lib.data.synth.cifar.write_cifar100`)
    :func:`read_cifar100` is used and nothing is downloaded.
    """
    split = _check_split(split)
    root = Path(root)
    if not download and not is_official_cifar100(root):
        return read_cifar100(root, split)
    import torchvision.datasets as tvd

    parent = root.parent if root.name == BASE_FOLDER and not (root / BASE_FOLDER).is_dir() else root
    try:
        ds = tvd.CIFAR100(str(parent), train=split == "train", download=download)
    except RuntimeError as exc:
        raise DataError(f"{parent / BASE_FOLDER}: torchvision could not load CIFAR-100 ({exc})") from None
    images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8))
    fine = np.asarray(ds.targets, dtype=np.int64)
    n = len(images)
    coarse: np.ndarray | None = None
    coarse_names: list[str] = []
    filenames = [f"{split}_{i:05d}.png" for i in range(n)]
    base = parent / BASE_FOLDER
    if (base / split).is_file() and (base / "meta").is_file():
        path = base / split
        d = _load_dict(path, split)
        if "coarse_labels" in d:
            coarse = _labels(d, "coarse_labels", n, NUM_COARSE, path)
        filenames = _filenames(d, n, path)
        coarse_names = _meta_names(base)[1]
    return CifarArrays(
        images=images,
        fine_labels=fine,
        coarse_labels=coarse,
        filenames=filenames,
        fine_names=[str(c) for c in ds.classes],
        coarse_names=coarse_names,
    )


# ------------------------------------------------------------------------------------------ dataset


class CifarDataset(torch.utils.data.Dataset):
    """A torch dataset over :class:`CifarArrays`: ``(transform(PIL RGB image), fine label)``."""

    def __init__(self, arrays: CifarArrays, transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.arrays = arrays
        self.transform = transform

    def __len__(self) -> int:
        return len(self.arrays.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = Image.fromarray(np.asarray(self.arrays.images[index], dtype=np.uint8)).convert("RGB")
        return (self.transform(img) if self.transform else img), int(self.arrays.fine_labels[index])

    @property
    def targets(self) -> list[int]:
        return [int(v) for v in self.arrays.fine_labels]

    @property
    def classes(self) -> Sequence[str]:
        return self.arrays.fine_names
