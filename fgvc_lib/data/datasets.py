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


class DataWarning(UserWarning):
    """Input that is read, but not as the user may expect (e.g. a list file that is not UTF-8)."""


class Problems:
    """Problems found while reading one data set, raised together as one DataError.

    One problem raises its own message unchanged; several are listed one a line, the first ``shown`` of them
    followed by "... and N more".
    """

    def __init__(self, shown: int = 10) -> None:
        self.messages: list[str] = []
        self.shown = shown

    def add(self, message: str) -> None:
        self.messages.append(message)

    def __len__(self) -> int:
        return len(self.messages)

    def raise_if_any(self, where: str) -> None:
        """Raise DataError when any problem was recorded; ``where`` names what was read (a file, a tree)."""
        if not self.messages:
            return
        if len(self.messages) == 1:
            raise DataError(self.messages[0])
        raise DataError(
            f"{len(self.messages)} problems in {where}:\n" + list_lines(self.messages, self.shown)
        )


def list_lines(messages: Sequence[str], shown: int = 10) -> str:
    """``  - message`` lines for the first ``shown`` messages, then ``  ... and N more``."""
    lines = [f"  - {m}" for m in messages[:shown]]
    if len(messages) > shown:
        lines.append(f"  ... and {len(messages) - shown} more")
    return "\n".join(lines)


def read_text(path: Path) -> str:
    """A text file as str: UTF-8 (a byte-order mark is dropped); a file that is not UTF-8 is decoded as
    cp1252 (Windows Western European; latin-1 for the 5 bytes cp1252 leaves undefined) with a DataWarning
    naming the file and the encoding, so names are never garbled silently."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        try:
            text, encoding = data.decode("cp1252"), "cp1252 (Windows Western European)"
        except UnicodeDecodeError:
            text, encoding = data.decode("latin-1"), "latin-1 (ISO-8859-1)"
        warnings.warn(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); decoded as {encoding}. "
            "Save the file as UTF-8 if its names look wrong",
            DataWarning,
            stacklevel=3,
        )
        return text


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
IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
"""What PIL raises for a file that is not a readable image (truncated, corrupt, too large, unknown format)."""


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image fully and convert it to RGB (grayscale, RGBA, palette, CMYK, 16-bit, 32-bit integer
    and 32-bit float images are converted: see :func:`to_rgb`).

    Raises DataError naming the file when it is missing, truncated or not an image.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about palette transparency; we handle it below
            with Image.open(path) as img:
                img.load()
                return to_rgb(img)
    except FileNotFoundError:
        raise DataError(f"{path}: image file does not exist") from None
    except IMAGE_ERRORS as exc:
        raise DataError(f"{path}: cannot decode image ({exc}); expected a readable image file") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB.

    Transparent pixels (RGBA, LA, palette transparency) are put on white. Images with more than 8 bits are
    scaled to 0..255, never clipped: 16-bit (``I;16*``) by their known range (``v >> 8``); 32-bit integer
    (``I``) as 8-bit when every value lies in 0..255, as 16-bit when in 0..65535, else by the image's own
    min..max; 32-bit float (``F``) times 255 when every value lies in 0..1, unchanged when in 0..255, else by
    the image's own min..max (NaN and infinities count as 0).
    """
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
    if img.mode in ("I", "F"):
        return Image.fromarray(_wide_to_uint8(np.asarray(img), img.mode), "L").convert("RGB")
    return img.convert("RGB")


def _wide_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """32-bit integer (``I``) or float (``F``) grey values as uint8 by the rules of :func:`to_rgb`."""
    v = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        v = v * 255.0
    elif mode == "I" and lo >= 0 and 255 < hi <= 65535:
        v = np.floor(v / 256.0)  # as the I;16 rule (v >> 8)
    elif lo < 0.0 or hi > 255.0:
        v = (v - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


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

    def image_files(self) -> list[tuple[Path, str]]:
        """``(root, relative path)`` of every item, in order (what the verification pass opens)."""
        return [(self.root, relpath) for relpath, _ in self.items]


# ---------------------------------------------------------------------------------------------- CUB
Row = tuple[int, list[str]]


def _read_table(
    path: Path, fields: int, what: str, problems: Problems, rest_is_text: bool = False
) -> list[Row]:
    """Read a whitespace-separated CUB list file; returns (line number, fields) pairs.

    A missing or empty file raises at once; a short line is recorded in ``problems`` and skipped.
    """
    if not path.is_file():
        raise DataError(
            f"{path}: missing CUB-200-2011 list file; expected {path.name} with lines {what} "
            f"in {path.parent} (is the data root a CUB tree?)"
        )
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=fields - 1) if rest_is_text else line.split()
        if len(parts) < fields:
            problems.add(f"{path}:{lineno}: expected {fields} fields ({what}), got {len(parts)}: {line!r}")
            continue
        rows.append((lineno, parts))
    if not rows and not problems:
        raise DataError(f"{path}: list file is empty; expected lines of {what}")
    return rows


def _int(path: Path, lineno: int, text: str, name: str, problems: Problems) -> int | None:
    try:
        return int(text)
    except ValueError:
        problems.add(f"{path}:{lineno}: expected an integer {name}, got {text!r}")
        return None


def _float(path: Path, lineno: int, text: str, name: str, problems: Problems) -> float | None:
    try:
        return float(text)
    except ValueError:
        problems.add(f"{path}:{lineno}: expected a number {name}, got {text!r}")
        return None


def _id_list(ids: Iterable[int], shown: int = 10) -> str:
    """``1..200`` for contiguous ids, else the first few ids (``5, 9``; ``1, 3, 4, ... (12 ids)``)."""
    ids = sorted(ids)
    if ids and ids[-1] - ids[0] + 1 == len(ids):
        return f"{ids[0]}..{ids[-1]}" if len(ids) > 1 else str(ids[0])
    head = ", ".join(str(i) for i in ids[:shown])
    return head if len(ids) <= shown else f"{head}, ... ({len(ids)} ids)"


class _UniqueIds:
    """First line of every id of one list file; a repeated id is a problem naming both lines."""

    def __init__(self, path: Path, name: str, problems: Problems, expected: str = "") -> None:
        self.path, self.name, self.problems = path, name, problems
        self.expected = expected or f"each {name} once"
        self.first: dict[Any, tuple[int, str]] = {}

    def new(self, key: Any, lineno: int, shown: Any = None, value: str = "") -> bool:
        """True the first time ``key`` is seen; a repeat adds a problem and returns False. ``value`` (what
        the line says about the id, e.g. its class) is shown for both lines."""
        if key in self.first:
            first, first_value = self.first[key]
            here = f" with {value}" if value else ""
            there = f" with {first_value}" if first_value else ""
            self.problems.add(
                f"{self.path}:{lineno}: {self.name} {key if shown is None else shown} is listed again{here} "
                f"(first at line {first}{there}); expected {self.expected}"
            )
            return False
        self.first[key] = (lineno, value)
        return True


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
    and, when present, bounding_boxes.txt and parts/{parts,part_locs}.txt).

    Every id must be unique in its file (classes, images, image paths, labels, split flags, boxes, part
    locations) and every id referenced must be listed; every image needs one label and one split flag. All
    problems found are raised together as one DataError, each with file and line. List files are UTF-8
    (other encodings: see :func:`read_text`).
    """
    root = _existing_dir(root)
    problems = Problems()
    images_txt = root / "images.txt"
    classes_txt = root / "classes.txt"
    labels_txt = root / "image_class_labels.txt"
    split_txt = root / "train_test_split.txt"

    class_ids: dict[int, int] = {}
    classes: list[str] = []
    seen_class = _UniqueIds(classes_txt, "class_id", problems, "unique class ids")
    for lineno, (cid, name) in _read_table(
        classes_txt, 2, "<class_id> <class_name>", problems, rest_is_text=True
    ):
        class_id = _int(classes_txt, lineno, cid, "class_id", problems)
        if class_id is not None and seen_class.new(class_id, lineno, value=repr(name.strip())):
            class_ids[class_id] = len(classes)
            classes.append(name.strip())

    paths: dict[int, str] = {}
    seen_image = _UniqueIds(images_txt, "image_id", problems)
    seen_path = _UniqueIds(images_txt, "image file", problems, "each file under one image_id")
    for lineno, (iid, rel) in _read_table(
        images_txt, 2, "<image_id> <image_name>", problems, rest_is_text=True
    ):
        image_id = _int(images_txt, lineno, iid, "image_id", problems)
        rel = rel.strip()
        if (
            image_id is None
            or not seen_image.new(image_id, lineno, value=f"images/{rel}")
            or not seen_path.new(rel, lineno, f"images/{rel}", value=f"image_id {image_id}")
        ):
            continue
        if check_files and not (root / "images" / rel).is_file():
            problems.add(f"{images_txt}:{lineno}: image file images/{rel} does not exist under {root}")
        paths[image_id] = rel

    def listed_image(path: Path, lineno: int, iid: str) -> int | None:
        image_id = _int(path, lineno, iid, "image_id", problems)
        if image_id is not None and image_id not in seen_image.first:
            problems.add(f"{path}:{lineno}: image_id {image_id} is not listed in images.txt")
            return None
        return image_id

    labels: dict[int, int] = {}
    seen_label = _UniqueIds(labels_txt, "image_id", problems, "one label per image")
    for lineno, (iid, cid) in _read_table(labels_txt, 2, "<image_id> <class_id>", problems):
        image_id = listed_image(labels_txt, lineno, iid)
        class_id = _int(labels_txt, lineno, cid, "class_id", problems)
        if class_id is not None and class_id not in class_ids:
            problems.add(
                f"{labels_txt}:{lineno}: class_id {class_id} refers to no class in classes.txt "
                f"(expected one of {_id_list(class_ids)})"
            )
            class_id = None
        if (
            image_id is not None
            and seen_label.new(image_id, lineno, value=f"class_id {cid}")
            and class_id is not None
        ):
            labels[image_id] = class_ids[class_id]

    is_train: dict[int, bool] = {}
    seen_flag = _UniqueIds(split_txt, "image_id", problems, "one train/test flag per image")
    for lineno, (iid, flag) in _read_table(split_txt, 2, "<image_id> <is_training_image>", problems):
        image_id = listed_image(split_txt, lineno, iid)
        value = _int(split_txt, lineno, flag, "is_training_image", problems)
        if value is not None and value not in (0, 1):
            problems.add(f"{split_txt}:{lineno}: expected is_training_image 0 or 1, got {flag!r}")
            value = None
        if (
            image_id is not None
            and seen_flag.new(image_id, lineno, value=f"flag {flag}")
            and value is not None
        ):
            is_train[image_id] = bool(value)

    for image_id, rel in paths.items():
        if image_id not in labels and image_id not in seen_label.first:
            problems.add(f"{labels_txt}: no label for image_id {image_id} ({rel})")
        if image_id not in is_train and image_id not in seen_flag.first:
            problems.add(f"{split_txt}: no train/test flag for image_id {image_id} ({rel})")

    boxes = _read_cub_boxes(root / "bounding_boxes.txt", listed_image, problems)
    parts = _read_cub_parts(root / "parts", listed_image, problems)
    problems.raise_if_any(f"the CUB-200-2011 lists of {root}")

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


ImageIdCheck = Callable[[Path, int, str], "int | None"]


def _read_cub_boxes(path: Path, listed_image: ImageIdCheck, problems: Problems) -> dict[int, tuple]:
    """bounding_boxes.txt (optional): image id -> (x, y, width, height)."""
    boxes: dict[int, tuple[float, float, float, float]] = {}
    if not path.exists():
        return boxes
    seen = _UniqueIds(path, "image_id", problems)
    for lineno, row in _read_table(path, 5, "<image_id> <x> <y> <width> <height>", problems):
        image_id = listed_image(path, lineno, row[0])
        xywh = [_float(path, lineno, v, n, problems) for v, n in zip(row[1:5], "xywh", strict=False)]
        if image_id is not None and seen.new(image_id, lineno) and None not in xywh:
            boxes[image_id] = tuple(xywh)  # type: ignore[assignment]
    return boxes


def _read_cub_parts(folder: Path, listed_image: ImageIdCheck, problems: Problems) -> dict[int, dict]:
    """parts/parts.txt + parts/part_locs.txt (optional): image id -> part name -> (x, y) of visible parts."""
    parts: dict[int, dict[str, tuple[float, float]]] = {}
    parts_txt, locs_txt = folder / "parts.txt", folder / "part_locs.txt"
    if not (parts_txt.exists() and locs_txt.exists()):
        return parts
    part_names: dict[int, str] = {}
    seen = _UniqueIds(parts_txt, "part_id", problems)
    for lineno, (pid, name) in _read_table(
        parts_txt, 2, "<part_id> <part_name>", problems, rest_is_text=True
    ):
        part_id = _int(parts_txt, lineno, pid, "part_id", problems)
        if part_id is not None and seen.new(part_id, lineno):
            part_names[part_id] = name.strip()
    seen_loc = _UniqueIds(locs_txt, "(image_id, part_id)", problems)
    for lineno, row in _read_table(locs_txt, 5, "<image_id> <part_id> <x> <y> <visible>", problems):
        image_id = listed_image(locs_txt, lineno, row[0])
        part_id = _int(locs_txt, lineno, row[1], "part_id", problems)
        if part_id is not None and part_id not in part_names and part_id not in seen.first:
            problems.add(f"{locs_txt}:{lineno}: part_id {part_id} is not listed in parts/parts.txt")
            part_id = None
        x, y, visible = (
            _float(locs_txt, lineno, row[k], name, problems)
            for k, name in ((2, "x"), (3, "y"), (4, "visible"))
        )
        if image_id is None or part_id is None or x is None or y is None or visible is None:
            continue
        if seen_loc.new((image_id, part_id), lineno, f"({image_id}, {part_id})") and visible > 0:
            parts.setdefault(image_id, {})[part_names[part_id]] = (x, y)
    return parts


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
