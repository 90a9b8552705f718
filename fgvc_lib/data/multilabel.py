"""Multi-label images (14 labels, half the images without any): readers and a stratified split.

On disk (the layout of the report's data set)::

    <root>/images/im<k>.jpg          k = 1..N (1-based, no zero padding); mostly RGB, a few grayscale
    <root>/annotations/<label>.txt   one file per label: the numbers k of the images carrying it, one a line

An image listed in no annotation file has no label (about 49 % of the report's images). A CSV alternative,
``file,labels`` with a space-separated (possibly empty) label list, is read by :func:`read_multilabel_csv`.

The synthetic writer (:func:`fgvc_lib.data.synth.multilabel.write_multilabel`) adds ``<root>/boxes.json``,
an EXTRA of the synthetic set (the real data has no boxes): ``{"im<k>.jpg": {"<label>": [x, y, w, h], ...}}``
in pixels, one box per label an image carries; :func:`read_boxes` reads it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fgvc_lib.data.datasets import DataError, Problems, load_rgb
from fgvc_lib.data.synth.render import check_int
from fgvc_lib.registry import did_you_mean

LABELS: tuple[str, ...] = (
    "baby",
    "bird",
    "car",
    "clouds",
    "dog",
    "female",
    "flower",
    "male",
    "night",
    "people",
    "portrait",
    "river",
    "sea",
    "tree",
)
"""The report's 14 labels, in its order."""

IMAGE_FOLDER = "images"
ANNOTATION_FOLDER = "annotations"
BOXES_FILE = "boxes.json"
CSV_COLUMNS: tuple[str, str] = ("file", "labels")

_IMAGE_NAME = re.compile(r"^im(\d+)\.jpg$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

Box = tuple[float, float, float, float]
"""A box (x, y, width, height) in pixels."""

# ------------------------------------------------------------------------------------------ readers


@dataclass
class MultiLabelData:
    """An index of a multi-label set: image ``i`` is ``root / files[i]`` and carries the labels ``j`` with
    ``targets[i, j] == 1`` (N x L uint8)."""

    root: Path
    labels: list[str]
    files: list[str]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def label_names(self, index: int) -> list[str]:
        """Names of the labels of image ``index``."""
        return [self.labels[j] for j in np.flatnonzero(self.targets[index])]


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        raise ValueError(f"labels: expected a sequence of label names, got the string {labels!r}")
    names = list(labels)
    bad = [n for n in names if not isinstance(n, str) or not n or n != n.strip() or len(n.split()) != 1]
    if not names or bad:
        raise ValueError(f"labels: expected non-empty names without spaces, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"labels: expected unique names, got {names!r}")
    return names


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None


def _image_numbers(folder: Path) -> dict[int, str]:
    """``im<k>.jpg`` files of ``folder``: number -> file name; other image files are errors."""
    numbers: dict[int, str] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        match = _IMAGE_NAME.match(path.name)
        if match is None:
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                raise DataError(f"{path}: image file name not of the form im<k>.jpg (k = 1, 2, ...)")
            continue
        k = int(match.group(1))
        if k in numbers:
            raise DataError(f"{path}: image number {k} is also used by {folder / numbers[k]}")
        numbers[k] = path.name
    return numbers


def read_multilabel_folder(root: str | os.PathLike[str], labels: Sequence[str] = LABELS) -> MultiLabelData:
    """Read ``root/images/im<k>.jpg`` and ``root/annotations/<label>.txt`` (one per label of ``labels``).

    Images are ordered by their number k; ``files`` are ``images/im<k>.jpg``. Errors name the file (and
    line): a missing folder or annotation file, a line that is not an image number, names no image or
    repeats an image of the same file, an annotation file of a label outside ``labels``, no images, no
    positive label in any file. The problems of the annotation files are raised together.
    """
    names = _check_labels(labels)
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: data folder does not exist; expected {IMAGE_FOLDER}/ and {ANNOTATION_FOLDER}/"
        )
    image_dir, ann_dir = root / IMAGE_FOLDER, root / ANNOTATION_FOLDER
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder does not exist; expected images im<k>.jpg in it")
    numbers = _image_numbers(image_dir)
    if not numbers:
        raise DataError(f"{image_dir}: no images; expected files im<k>.jpg (k = 1, 2, ...)")
    if not ann_dir.is_dir():
        raise DataError(f"{ann_dir}: annotation folder does not exist; expected one <label>.txt per label")
    for path in sorted(ann_dir.glob("*.txt")):
        if path.stem not in names:
            raise DataError(
                f"{path}: annotation file of label {path.stem!r}, which is not in the label list "
                f"({', '.join(names)}){did_you_mean(path.stem, names)}"
            )
    order = sorted(numbers)
    row_of = {k: i for i, k in enumerate(order)}
    targets = np.zeros((len(order), len(names)), dtype=np.uint8)
    problems = Problems()
    for j, label in enumerate(names):
        path = ann_dir / f"{label}.txt"
        if not path.is_file():
            problems.add(f"{path}: annotation file of label {label!r} is missing; expected one per label")
            continue
        first: dict[int, int] = {}
        for lineno, line in enumerate(_read_lines(path), start=1):
            text = line.strip()
            if not text:
                continue
            try:
                k = int(text)
            except ValueError:
                problems.add(
                    f"{path}:{lineno}: expected an image number (k of images/im<k>.jpg), got {text!r}"
                )
                continue
            if k in first:
                problems.add(
                    f"{path}:{lineno}: image number {k} is listed again (first at line {first[k]}); "
                    "expected each image once per label file"
                )
            elif k not in row_of:
                problems.add(f"{path}:{lineno}: image number {k}: {IMAGE_FOLDER}/im{k}.jpg does not exist")
            else:
                targets[row_of[k], j] = 1
            first.setdefault(k, lineno)
    problems.raise_if_any(f"the annotation files of {ann_dir}")
    if not targets.any():
        raise DataError(
            f"{ann_dir}: no annotation file lists any image (all {len(names)} label files are empty); "
            "expected the numbers of the images carrying each label, one a line (a model trained without "
            "a single positive label can only learn to predict none)"
        )
    files = [f"{IMAGE_FOLDER}/{numbers[k]}" for k in order]
    return MultiLabelData(root=root, labels=names, files=files, targets=targets)


def read_multilabel_csv(
    csv_path: str | os.PathLike[str], image_dir: str | os.PathLike[str], labels: Sequence[str] = LABELS
) -> MultiLabelData:
    """Read a CSV with the header ``file,labels`` (``labels``: space-separated names, possibly empty).

    ``file`` is relative to ``image_dir`` (the data's ``root``); rows keep their order. Errors name the CSV
    and line: missing header or column, an empty or repeated file name, a missing image, an unknown label
    (with the closest known one), raised together; and no label in any row.
    """
    names = _check_labels(labels)
    csv_path, image_dir = Path(csv_path), Path(image_dir)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file does not exist; expected a header {','.join(CSV_COLUMNS)}")
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder does not exist (named for {csv_path})")
    column = {name: j for j, name in enumerate(names)}
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path}: not UTF-8 text ({exc})") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or not any(h.strip() for h in header):
        raise DataError(f"{csv_path}:1: missing header; expected the columns {','.join(CSV_COLUMNS)}")
    header = [h.strip() for h in header]
    for name in CSV_COLUMNS:
        if name not in header:
            raise DataError(
                f"{csv_path}:1: header has no column {name!r} (found {', '.join(header)}); "
                f"expected {','.join(CSV_COLUMNS)}"
            )
    i_file, i_labels = header.index("file"), header.index("labels")
    files: list[str] = []
    rows: list[np.ndarray] = []
    seen: dict[str, int] = {}
    problems = Problems()
    for fields in reader:
        lineno = reader.line_num
        if not fields or not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            problems.add(
                f"{csv_path}:{lineno}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}"
            )
            continue
        file = fields[i_file].strip()
        if not file:
            problems.add(f"{csv_path}:{lineno}: empty file name")
            continue
        if file in seen:
            problems.add(f"{csv_path}:{lineno}: file {file} is listed twice (first at line {seen[file]})")
            continue
        seen[file] = lineno
        row = np.zeros(len(names), dtype=np.uint8)
        for label in fields[i_labels].split():
            if label not in column:
                problems.add(
                    f"{csv_path}:{lineno}: unknown label {label!r}; expected names from "
                    f"({', '.join(names)}){did_you_mean(label, names)}"
                )
            else:
                row[column[label]] = 1
        if not (image_dir / file).is_file():
            problems.add(f"{csv_path}:{lineno}: image file {file} does not exist in {image_dir}")
        files.append(file)
        rows.append(row)
    problems.raise_if_any(str(csv_path))
    if not files:
        raise DataError(f"{csv_path}: no images; expected rows file,labels after the header")
    targets = np.stack(rows)
    if not targets.any():
        raise DataError(
            f"{csv_path}: no row has any label (the 'labels' column is empty in all {len(files)} rows); "
            f"expected space-separated names from ({', '.join(names)}) for the images carrying them"
        )
    return MultiLabelData(root=image_dir, labels=names, files=files, targets=targets)


def read_boxes(root: str | os.PathLike[str]) -> dict[str, dict[str, Box]]:
    """The synthetic extra ``root/boxes.json``: image file name -> label -> (x, y, w, h) in pixels."""
    path = Path(root) / BOXES_FILE
    if not path.is_file():
        raise DataError(f"{path}: box file does not exist (only synthetic sets have one)")
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path}: not a JSON file ({exc}); expected an object image name -> {{label: [x, y, w, h]}}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: top level is a JSON {type(obj).__name__}; expected an object")
    boxes: dict[str, dict[str, Box]] = {}
    for name, entry in obj.items():
        if not isinstance(entry, dict):
            raise DataError(f"{path}: entry {name!r} is a {type(entry).__name__}; expected an object")
        boxes[name] = {}
        for label, box in entry.items():
            if not (
                isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
            ):
                raise DataError(f"{path}: {name!r} label {label!r}: box {box!r}; expected [x, y, w, h]")
            boxes[name][label] = tuple(float(v) for v in box)  # type: ignore[assignment]
    return boxes


class MultiLabelDataset(torch.utils.data.Dataset):
    """Torch dataset over :class:`MultiLabelData`: ``(transform(RGB image), float32 target of length L)``."""

    def __init__(self, data: MultiLabelData, transform: Callable[[Image.Image], Any] | None = None):
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data.files)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        image = load_rgb(self.data.root / self.data.files[index])
        target = torch.from_numpy(self.data.targets[index].astype(np.float32))
        return (self.transform(image) if self.transform is not None else image), target

    @property
    def targets(self) -> np.ndarray:
        return self.data.targets

    def image_files(self) -> list[tuple[Path, str]]:
        """``(root, relative path)`` of every image, in order (what the verification pass opens)."""
        return [(self.data.root, file) for file in self.data.files]


# ------------------------------------------------------------------------------------------ split


def _check_targets(targets: object) -> np.ndarray:
    y = np.asarray(targets)
    if y.ndim != 2 or y.shape[0] < 1 or y.shape[1] < 1:
        raise ValueError(f"targets: expected an N x L 0/1 matrix, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("targets: expected only 0/1 entries")
    return y.astype(np.uint8)


def label_frequencies(targets: object) -> np.ndarray:
    """Share of the rows carrying each label (length L, float64)."""
    return _check_targets(targets).mean(axis=0, dtype=np.float64)


def all_negative_share(targets: object) -> float:
    """Share of the rows with no label (the accuracy of always predicting "nothing")."""
    return float((_check_targets(targets).sum(axis=1) == 0).mean())


def iterative_split(targets: object, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Iterative stratification (Sechidis et al. 2011) into (train indices, validation indices), sorted.

    ``iterstrat``'s ``MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test_size,
    random_state=seed)`` on ``X = zeros(N)``; the validation size is about ``test_size * N``.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    y = _check_targets(targets)
    ok = isinstance(test_size, (float, int, np.floating)) and not isinstance(test_size, bool)
    if not ok or not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size: expected a number in (0, 1), got {test_size!r}")
    n = y.shape[0]
    if n < 2 or not 1 <= math.ceil(float(test_size) * n) <= n - 1:
        raise ValueError(f"targets: {n} rows cannot be split with test_size={test_size}")
    seed = check_int("seed", seed, 0)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=float(test_size), random_state=seed)
    train, val = next(splitter.split(np.zeros(n), y))
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def frequency_table(data: MultiLabelData, train_idx: Sequence[int], val_idx: Sequence[int]) -> pd.DataFrame:
    """Per label: ``train_share``, ``val_share`` and ``difference_pp`` (train - val, percentage points)."""
    train = label_frequencies(data.targets[np.asarray(train_idx, dtype=np.int64)])
    val = label_frequencies(data.targets[np.asarray(val_idx, dtype=np.int64)])
    return pd.DataFrame(
        {
            "label": list(data.labels),
            "train_share": train,
            "val_share": val,
            "difference_pp": 100.0 * (train - val),
        }
    )
