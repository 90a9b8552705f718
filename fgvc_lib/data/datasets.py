"""Loaders for the real on-disk formats: CUB-200-2011 and plain ImageFolder trees (bird notebook).

Everything is read into a ``ClassificationData`` index (relative paths, labels, optional boxes and part
locations); images are decoded lazily by ``ImageListDataset``. Every format error names file and line.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """Bad or missing input data; the message names the file (and line or key) and what was expected."""


@dataclass
class ImageRecord:
    """One image of a data set: path relative to the data root, 0-based label, optional annotations."""

    relpath: str
    label: int
    is_train: bool = True
    bbox: tuple[float, float, float, float] | None = None
    parts: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class ClassificationData:
    """An index of a single-label data set on disk."""

    root: Path
    classes: list[str]
    records: list[ImageRecord]
    format: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, train: bool) -> list[ImageRecord]:
        return [r for r in self.records if r.is_train == train]

    def items(self, records: Sequence[ImageRecord] | None = None) -> list[tuple[str, int]]:
        return [(r.relpath, r.label) for r in (self.records if records is None else records)]


# ---------------------------------------------------------------------------------------------- images
def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image fully and convert it to RGB (grayscale, RGBA, palette, CMYK, 16-bit are converted).

    Raises DataError naming the file when it is missing, truncated or not an image.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about palette transparency; we handle it below
            with Image.open(path) as img:
                img.load()
                return _to_rgb(img)
    except FileNotFoundError:
        raise DataError(f"{path}: image file does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc}); expected a readable image file") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode.startswith("I;16"):  # 16-bit grey, any byte order (PNG: I;16, TIFF: I;16B too)
        grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "I":
        return img.point(lambda v: v / 256).convert("L").convert("RGB")
    return img.convert("RGB")


class ImageListDataset:
    """A torch-style dataset over ``(relative path, label)`` items below ``root``."""

    def __init__(self, root: str | Path, items: Sequence[tuple[str, int]], transform: Callable | None = None):
        self.root = Path(root)
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        relpath, label = self.items[index]
        img = load_rgb(self.root / relpath)
        return (self.transform(img) if self.transform else img), label

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.items]


# ---------------------------------------------------------------------------------------------- CUB
def _read_table(
    path: Path, fields: int, what: str, rest_is_text: bool = False
) -> list[tuple[int, list[str]]]:
    """Read a whitespace-separated CUB list file; returns (line number, fields) pairs."""
    if not path.is_file():
        raise DataError(
            f"{path}: missing CUB-200-2011 list file; expected {path.name} with lines {what} "
            f"in {path.parent} (is the data root a CUB tree?)"
        )
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=fields - 1) if rest_is_text else line.split()
        if len(parts) < fields:
            raise DataError(f"{path}:{lineno}: expected {fields} fields ({what}), got {len(parts)}: {line!r}")
        rows.append((lineno, parts))
    if not rows:
        raise DataError(f"{path}: list file is empty; expected lines of {what}")
    return rows


def _int(path: Path, lineno: int, text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}:{lineno}: expected an integer {name}, got {text!r}") from None


def _float(path: Path, lineno: int, text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}:{lineno}: expected a number {name}, got {text!r}") from None


def _id_list(ids: Iterable[int], shown: int = 10) -> str:
    """``1..200`` for contiguous ids, else the first few ids (``5, 9``; ``1, 3, 4, ... (12 ids)``)."""
    ids = sorted(ids)
    if ids and ids[-1] - ids[0] + 1 == len(ids):
        return f"{ids[0]}..{ids[-1]}" if len(ids) > 1 else str(ids[0])
    head = ", ".join(str(i) for i in ids[:shown])
    return head if len(ids) <= shown else f"{head}, ... ({len(ids)} ids)"


# Files only a CUB-200-2011 tree has; any of them marks the root as CUB, so a tree missing some list files
# is reported as such instead of being read as an ImageFolder whose classes are 'images' and 'parts'.
CUB_MARKERS = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt")


def is_cub_root(root: str | Path) -> bool:
    root = Path(root)
    if any((root / name).exists() for name in CUB_MARKERS):
        return True
    return (root / "classes.txt").is_file() and (root / "images").is_dir()


def read_cub(root: str | Path, *, check_files: bool = True) -> ClassificationData:
    """Read a CUB-200-2011 tree (images.txt, classes.txt, image_class_labels.txt, train_test_split.txt,
    and, when present, bounding_boxes.txt and parts/{parts,part_locs}.txt)."""
    root = _existing_dir(root)
    images_txt = root / "images.txt"
    classes_txt = root / "classes.txt"
    labels_txt = root / "image_class_labels.txt"
    split_txt = root / "train_test_split.txt"

    class_ids: dict[int, int] = {}
    classes: list[str] = []
    for lineno, (cid, name) in _read_table(classes_txt, 2, "<class_id> <class_name>", rest_is_text=True):
        class_ids[_int(classes_txt, lineno, cid, "class_id")] = len(classes)
        classes.append(name.strip())

    paths: dict[int, str] = {}
    for lineno, (iid, rel) in _read_table(images_txt, 2, "<image_id> <image_name>", rest_is_text=True):
        image_id = _int(images_txt, lineno, iid, "image_id")
        rel = rel.strip()
        if check_files and not (root / "images" / rel).is_file():
            raise DataError(f"{images_txt}:{lineno}: image file images/{rel} does not exist under {root}")
        paths[image_id] = rel

    labels: dict[int, int] = {}
    for lineno, (iid, cid) in _read_table(labels_txt, 2, "<image_id> <class_id>"):
        image_id = _int(labels_txt, lineno, iid, "image_id")
        class_id = _int(labels_txt, lineno, cid, "class_id")
        if image_id not in paths:
            raise DataError(f"{labels_txt}:{lineno}: image_id {image_id} is not listed in images.txt")
        if class_id not in class_ids:
            raise DataError(
                f"{labels_txt}:{lineno}: class_id {class_id} refers to no class in classes.txt "
                f"(expected one of {_id_list(class_ids)})"
            )
        labels[image_id] = class_ids[class_id]

    is_train: dict[int, bool] = {}
    for lineno, (iid, flag) in _read_table(split_txt, 2, "<image_id> <is_training_image>"):
        value = _int(split_txt, lineno, flag, "is_training_image")
        if value not in (0, 1):
            raise DataError(f"{split_txt}:{lineno}: expected is_training_image 0 or 1, got {flag!r}")
        is_train[_int(split_txt, lineno, iid, "image_id")] = bool(value)

    for image_id in paths:
        if image_id not in labels:
            raise DataError(f"{labels_txt}: no label for image_id {image_id} ({paths[image_id]})")
        if image_id not in is_train:
            raise DataError(f"{split_txt}: no train/test flag for image_id {image_id} ({paths[image_id]})")

    boxes: dict[int, tuple[float, float, float, float]] = {}
    boxes_txt = root / "bounding_boxes.txt"
    if boxes_txt.exists():
        for lineno, row in _read_table(boxes_txt, 5, "<image_id> <x> <y> <width> <height>"):
            iid = _int(boxes_txt, lineno, row[0], "image_id")
            x, y, w, h = (_float(boxes_txt, lineno, v, n) for v, n in zip(row[1:5], "xywh", strict=False))
            boxes[iid] = (x, y, w, h)

    parts: dict[int, dict[str, tuple[float, float]]] = {}
    parts_txt, locs_txt = root / "parts" / "parts.txt", root / "parts" / "part_locs.txt"
    if parts_txt.exists() and locs_txt.exists():
        part_names = {
            _int(parts_txt, n, pid, "part_id"): name.strip()
            for n, (pid, name) in _read_table(parts_txt, 2, "<part_id> <part_name>", rest_is_text=True)
        }
        for lineno, row in _read_table(locs_txt, 5, "<image_id> <part_id> <x> <y> <visible>"):
            iid = _int(locs_txt, lineno, row[0], "image_id")
            pid = _int(locs_txt, lineno, row[1], "part_id")
            if pid not in part_names:
                raise DataError(f"{locs_txt}:{lineno}: part_id {pid} is not listed in parts/parts.txt")
            if _float(locs_txt, lineno, row[4], "visible") > 0:
                xy = (_float(locs_txt, lineno, row[2], "x"), _float(locs_txt, lineno, row[3], "y"))
                parts.setdefault(iid, {})[part_names[pid]] = xy

    records = [
        ImageRecord(
            relpath=f"images/{paths[i]}",
            label=labels[i],
            is_train=is_train[i],
            bbox=boxes.get(i),
            parts=parts.get(i, {}),
        )
        for i in sorted(paths)
    ]
    return ClassificationData(root=root, classes=classes, records=records, format="cub")


# ---------------------------------------------------------------------------------------------- ImageFolder
def _existing_dir(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data_root {root} does not exist; expected a CUB-200-2011 or ImageFolder directory")
    if not root.is_dir():
        raise DataError(
            f"data_root {root} is not a directory; expected a CUB-200-2011 or ImageFolder directory"
        )
    if not any(root.iterdir()):
        raise DataError(f"data_root {root} is empty; expected a CUB-200-2011 or ImageFolder directory")
    return root


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_image_folder(root: str | Path) -> ClassificationData:
    """Read ``root/<class>/<image>`` (all training images), or ``root/{train,test}/<class>/<image>``."""
    root = _existing_dir(root)
    splits = [(root / "train", True), (root / "test", False)]
    if not (root / "train").is_dir():
        splits = [(root, True)]
    classes = [p.name for p in _class_folders(splits[0][0])]
    if not classes:
        raise DataError(
            f"{splits[0][0]}: no class sub-folders; expected <class>/<image> (ImageFolder layout)"
        )
    index = {name: i for i, name in enumerate(classes)}
    records: list[ImageRecord] = []
    for folder, train in splits:
        if not folder.is_dir():
            continue
        for class_dir in _class_folders(folder):
            if class_dir.name not in index:
                raise DataError(f"{class_dir}: class folder not present in {splits[0][0]}")
            for file in sorted(class_dir.rglob("*")):
                if file.suffix.lower() in IMAGE_EXTENSIONS:
                    rel = file.relative_to(root).as_posix()
                    records.append(ImageRecord(relpath=rel, label=index[class_dir.name], is_train=train))
    if not records:
        raise DataError(f"{root}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return ClassificationData(root=root, classes=classes, records=records, format="imagefolder")


def open_classification_data(root: str | Path) -> ClassificationData:
    """Detect the layout: a CUB-200-2011 tree (``images.txt``) or an ImageFolder tree."""
    root = _existing_dir(root)
    if is_cub_root(root):
        return read_cub(root)
    nested = root / "CUB_200_2011"
    if nested.is_dir() and is_cub_root(nested):
        return read_cub(nested)
    return read_image_folder(root)
