"""Decode once: an on-disk cache of uint8 RGB pixels, resized to a square, read back through ``np.memmap``.

``build_image_cache`` decodes every image (``load_rgb`` + a bilinear stretch to ``size x size``, the same as
the eval transform ``Resize((s, s))``) into ``<cache_dir>/<name>-<size>px-<key16>/images.u8`` and writes
``meta.json`` next to it. The key hashes the name, the size and every file's path, byte size and mtime_ns, so
editing or touching an image gives a new cache (the stale one of the same name and size is removed).

A cache folder only ever appears complete: it is built in a temporary folder of the same parent and moved into
place with ``os.replace``; a ``flock`` makes a second process building the same cache wait and then reuse it.
``CachedImageDataset`` serves the pixels to a torch ``DataLoader`` (one memmap read per batch).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..runs import file_lock, outputs_root
from .datasets import DataError, load_rgb
from .verify import verify_images

IMAGES_FILE = "images.u8"
META_FILE = "meta.json"
_TMP_PREFIX = ".tmp-"


# ---------------------------------------------------------------------------------------------- key
def cache_key(name: str, size: int, root: str | Path, relpaths: Sequence[str]) -> str:
    """sha256 hex over ``name``, ``size`` and, for every relpath in order, the relpath, file size, mtime_ns.

    A missing (or unreadable) file raises DataError naming it.
    """
    root = Path(root)
    digest = hashlib.sha256()
    digest.update(f"fgvc-image-cache\0{name}\0{int(size)}\0{len(relpaths)}\0".encode())
    for rel in relpaths:
        path = root / rel
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DataError(
                f"{path}: image file does not exist (listed for the {name!r} image cache)"
            ) from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read the image file ({exc.strerror})") from None
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- cache
class ImageCache:
    """The decoded pixels of ``relpaths`` below ``root``.

    ``images`` is a read-only ``(N, size, size, 3)`` uint8 memmap of ``folder/images.u8``.
    """

    def __init__(self, root: str | Path, relpaths: Sequence[str], size: int, key: str, folder: str | Path):
        self.root = Path(root)
        self.relpaths = [str(r) for r in relpaths]
        self.size = int(size)
        self.key = key
        self.folder = Path(folder)
        self.images = self._open_images()

    @classmethod
    def open(cls, folder: str | Path, root: str | Path | None = None) -> ImageCache:
        """Open an existing cache folder from its ``meta.json`` (``root`` defaults to the one recorded)."""
        folder = Path(folder)
        meta = _read_meta(folder)
        if meta is None:
            raise DataError(f"{folder}: not an image cache (missing or unreadable {META_FILE})")
        return cls(
            root if root is not None else meta.get("root", ""),
            meta["relpaths"],
            meta["size"],
            meta["key"],
            folder,
        )

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.relpaths), self.size, self.size, 3)

    def _open_images(self) -> np.ndarray:
        if len(self.relpaths) == 0:  # a zero-byte file cannot be memory-mapped
            return np.zeros(self.shape, dtype=np.uint8)
        return np.memmap(self.folder / IMAGES_FILE, dtype=np.uint8, mode="r", shape=self.shape)

    def __len__(self) -> int:
        return len(self.relpaths)

    def __getitem__(self, i: int) -> np.ndarray:
        """Image ``i`` as a read-only ``(size, size, 3)`` uint8 view of the memmap."""
        return np.asarray(self.images[self._index(i)])

    def pil(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image (a copy)."""
        return Image.fromarray(np.array(self.images[self._index(i)]))

    def batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Images ``indices`` as one ``(len, size, size, 3)`` array, read with a single fancy index over the
        sorted indices (sequential on disk), then put back in the order asked for."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = idx[(idx < -n) | (idx >= n)][0]
            raise IndexError(f"image index {int(bad)} out of range for a cache of {n} images")
        idx = np.where(idx < 0, idx + n, idx)
        order = np.argsort(idx, kind="stable")
        rows = np.asarray(self.images[idx[order]])
        out = np.empty_like(rows)
        out[order] = rows
        return out

    def _index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for a cache of {n} images")
        return i + n if i < 0 else i

    # The memmap is not pickled (that would copy every pixel into each DataLoader worker): it is reopened.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("images", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.images = self._open_images()

    def __repr__(self) -> str:
        return f"ImageCache({len(self)} images, {self.size} px, {self.folder})"


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_valid(folder: Path, key: str) -> bool:
    """A cache folder counts only when its meta.json names ``key`` and the pixel file has the full size."""
    meta = _read_meta(folder)
    if meta is None or meta.get("key") != key:
        return False
    try:
        n, size = int(meta["n"]), int(meta["size"])
        if n == 0:
            return True
        return (folder / IMAGES_FILE).stat().st_size == n * size * size * 3
    except (KeyError, TypeError, ValueError, OSError):
        return False


def _decode(path: Path, size: int) -> np.ndarray:
    """One image as ``(size, size, 3)`` uint8: ``load_rgb``, then a bilinear stretch as ``Resize((s, s))``."""
    img = load_rgb(path)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(
            f"cache name {name!r}: expected a plain folder-name prefix (no '/', not starting '.')"
        )


def _write_cache(
    tmp: Path, root: Path, relpaths: list[str], size: int, key: str, name: str, workers: int
) -> None:
    """Decode every image into ``tmp/images.u8`` and write ``tmp/meta.json`` last."""
    n = len(relpaths)
    shape = (n, size, size, 3)
    if n:
        pixels = np.memmap(tmp / IMAGES_FILE, dtype=np.uint8, mode="w+", shape=shape)

        def put(i: int) -> None:
            pixels[i] = _decode(root / relpaths[i], size)

        if workers > 0:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-cache")
            try:
                for _ in pool.map(put, range(n)):
                    pass
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
        else:
            for i in range(n):
                put(i)
        pixels.flush()
        del pixels
    meta = {
        "key": key,
        "name": name,
        "size": size,
        "shape": list(shape),
        "dtype": "uint8",
        "n": n,
        "relpaths": relpaths,
        "root": str(root),
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    (tmp / META_FILE).write_text(json.dumps(meta) + "\n", encoding="utf-8")


def build_image_cache(
    root: str | Path,
    relpaths: Sequence[str],
    size: int,
    *,
    name: str,
    cache_dir: str | Path | None = None,
    workers: int = 0,
    log: Callable[[str], None] | None = None,
) -> ImageCache:
    """The cache of ``relpaths`` below ``root`` at ``size`` px, decoded now unless a valid one exists.

    ``cache_dir`` defaults to ``outputs_root() / "cache"``; ``workers > 0`` decodes with that many threads.
    Before decoding, every file is checked (:func:`fgvc_lib.data.verify.verify_images`): unreadable images
    raise one DataError naming them all; a file that still cannot be decoded raises the DataError of
    ``load_rgb`` (naming it). Either leaves nothing behind.
    """
    _check_name(name)
    size = int(size)
    if size <= 0:
        raise ValueError(f"size: expected a positive number of pixels, got {size}")
    root = Path(root)
    relpaths = [str(r) for r in relpaths]
    key = cache_key(name, size, root, relpaths)
    base = Path(cache_dir).expanduser() if cache_dir is not None else outputs_root() / "cache"
    family = f"{name}-{size}px"
    folder = base / f"{family}-{key[:16]}"

    def reuse() -> ImageCache | None:
        if not _is_valid(folder, key):
            return None
        try:
            cache = ImageCache(root, relpaths, size, key, folder)
        except (OSError, ValueError):  # removed or replaced between the check and the open
            return None
        if log:
            log(f"reusing {len(relpaths)} cached images of {name} at {size} px from {folder}")
        return cache

    cache = reuse()
    if cache is not None:
        return cache
    # every file opened once first, so that all unreadable images are named together before decoding
    verify_images([(root, rel) for rel in relpaths], workers=max(1, workers))
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / f".{family}.lock"):
        cache = reuse()  # another process may have built it while this one waited
        if cache is not None:
            return cache
        # Every builder of this name+size holds this lock: a temp folder of the family is a killed build's.
        killed = re.compile(re.escape(f"{_TMP_PREFIX}{family}-") + r"[0-9a-f]{16}-\d+-[0-9a-f]{6}")
        for leftover in base.iterdir():
            if killed.fullmatch(leftover.name) and leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
        if log:
            log(f"decoding {len(relpaths)} images of {name} to {size} px into {folder}")
        tmp = base / f"{_TMP_PREFIX}{folder.name}-{os.getpid()}-{secrets.token_hex(3)}"
        tmp.mkdir()
        try:
            _write_cache(tmp, root, relpaths, size, key, name, workers)
            if folder.exists():  # an invalid leftover (no meta.json, other key): never used, replaced
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        stale = re.compile(re.escape(family) + r"-[0-9a-f]{16}")
        for other in base.iterdir():
            if other != folder and other.is_dir() and stale.fullmatch(other.name):
                shutil.rmtree(other, ignore_errors=True)
        return ImageCache(root, relpaths, size, key, folder)


# ---------------------------------------------------------------------------------------------- dataset
class CachedImageDataset(torch.utils.data.Dataset):
    """A torch dataset over (a subset of) an ``ImageCache``.

    Item ``i`` is ``(x, target)``: ``x`` a ``(3, size, size)`` uint8 tensor (a copy, CHW) when ``transform``
    is None, else ``transform(cache.pil(row))`` so the PIL presets still apply. ``target`` is an int for
    single-label targets, a float32 tensor row for multi-label targets given as a 2-D array.
    """

    def __init__(
        self,
        cache: ImageCache,
        targets: Sequence | np.ndarray | torch.Tensor,
        transform: Callable | None = None,
        indices: Sequence[int] | None = None,
    ):
        self.cache = cache
        self.transform = transform
        n_cache = len(cache)
        if indices is None:
            self.indices = np.arange(n_cache, dtype=np.int64)
        else:
            self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n_cache):
                bad = self.indices[(self.indices < 0) | (self.indices >= n_cache)][0]
                raise ValueError(f"indices: row {int(bad)} is out of range for a cache of {n_cache} images")
        if isinstance(targets, torch.Tensor):
            targets = targets.detach().cpu().numpy()
        arr = np.asarray(targets)
        n_targets = arr.shape[0] if arr.ndim else 0
        if arr.ndim == 0 or n_targets != len(self.indices):
            raise ValueError(
                f"targets has {n_targets} entries but the dataset has {len(self.indices)} items "
                f"({'indices' if indices is not None else 'cache images'}); expected one target per item"
            )
        self.multilabel = arr.ndim == 2
        if self.multilabel:
            self._targets: list[int] | np.ndarray = np.ascontiguousarray(arr, dtype=np.float32)
        elif arr.ndim == 1:
            if (
                arr.size
                and not np.issubdtype(arr.dtype, np.integer)
                and not np.issubdtype(arr.dtype, np.bool_)
            ):
                as_float = arr.astype(np.float64)
                if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
                    raise ValueError(
                        "targets: expected integer class labels (1-D) or a 2-D multi-label array"
                    )
            self._targets = [int(t) for t in arr]
        else:
            raise ValueError(f"targets: expected a 1-D list of labels or a 2-D array, got shape {arr.shape}")

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> list[int] | np.ndarray:
        return self._targets

    def _target(self, i: int) -> Any:
        if self.multilabel:
            return torch.from_numpy(self._targets[i].copy())
        return self._targets[i]

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        row = int(self.indices[i])
        if self.transform is None:
            x = torch.from_numpy(self.cache[row].transpose(2, 0, 1).copy())  # CHW, not aliasing the memmap
        else:
            x = self.transform(self.cache.pil(row))
        return x, self._target(i)

    def __getitems__(self, idx: list[int]) -> list[tuple[Any, Any]]:
        """The DataLoader's batched fetch: one memmap read for the batch when there is no transform."""
        if self.transform is not None:
            return [self[i] for i in idx]
        rows = self.indices[np.asarray(idx, dtype=np.int64)]
        x = torch.from_numpy(np.ascontiguousarray(self.cache.batch(rows).transpose(0, 3, 1, 2)))
        return [(x[j], self._target(i)) for j, i in enumerate(idx)]

    def __repr__(self) -> str:
        return f"CachedImageDataset({len(self)} items of {self.cache!r}, transform={self.transform!r})"
