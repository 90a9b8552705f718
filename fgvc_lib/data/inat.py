"""iNaturalist-2019 in its real on-disk format: a reader and class counts.

On disk (as distributed for the FGVC6 competition): ``<root>/train2019.json``, ``<root>/val2019.json`` and
the image tree they point to, ``<root>/train_val2019/<iconic group>/<category_id>/<hex name>.jpg`` (e.g.
``train_val2019/Plants/400/d1322d13ccd856eb4236c8b888546c79.jpg``; train and val images share the tree).
Each JSON file is COCO-style, a dict of

* ``info`` (year, version, description, contributor, url, date_created) and ``licenses`` (id, name, url);
* ``images``: id, file_name (relative to the root), width, height, license, rights_holder;
* ``annotations``: id, image_id, category_id (exactly one per image; image ids are unique over both splits);
* ``categories``: id, name, kingdom, phylum, class, order, family, genus.

The real files carry no boxes or parts. The synthetic writer (:func:`fgvc_lib.data.synth.inat.write_inat`)
adds two NON-STANDARD keys to every annotation: ``bbox`` ``[x, y, w, h]`` (COCO convention, pixels) of the
bird and ``part_xy`` ``[x, y]``, the ``"left wing"`` patch that carries the class identity.
:func:`read_inat` fills ``ImageRecord.bbox`` and ``ImageRecord.parts["left wing"]`` from them when present
and reads real files without them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fgvc_lib.data.datasets import ClassificationData, DataError, ImageRecord, Problems, _id_list
from fgvc_lib.data.synth.render import DISCRIMINATIVE_PART

SPLITS: tuple[str, ...] = ("train", "val")
IMAGE_FOLDER = "train_val2019"
"""Top folder of the image tree (both splits), as in the official archive."""
REQUIRED_KEYS: tuple[str, ...] = ("images", "annotations", "categories")

# ------------------------------------------------------------------------------------------ reader


@dataclass
class InatData(ClassificationData):
    """:class:`ClassificationData` of one iNat split plus the categories: label ``i`` is the ``i``-th
    category by id, ``category_ids[i]`` its id and ``taxonomy[i]`` its JSON entry."""

    category_ids: list[int] = field(default_factory=list)
    taxonomy: list[dict[str, Any]] = field(default_factory=list)

    def label_of(self, category_id: int) -> int:
        """0-based label of an iNat category id (KeyError when unknown)."""
        return {cid: i for i, cid in enumerate(self.category_ids)}[category_id]


def _check_split(split: object) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    return str(split)


_KEY_LIST = ", ".join(f"'{k}'" for k in REQUIRED_KEYS)


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        root = path.parent
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise DataError(
                f"data_root {root} {what}; expected an iNaturalist-2019 folder holding {path.name}"
            )
        raise DataError(
            f"{path}: iNaturalist annotation file is missing; expected {path.name} in {path.parent}"
        )
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); expected a JSON file") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}; "
            f"expected an iNaturalist-2019 annotation file (a JSON object with {_KEY_LIST})"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: top level is a JSON {type(obj).__name__}; expected an object (dict)")
    for key in REQUIRED_KEYS:
        if key not in obj:
            found = ", ".join(repr(k) for k in obj) or "none"
            raise DataError(
                f"{path}: missing key '{key}' (keys found: {found}); expected an iNaturalist-2019 "
                f"annotation object with {_KEY_LIST}"
            )
        if not isinstance(obj[key], list):
            raise DataError(f"{path}: key '{key}' is a {type(obj[key]).__name__}; expected a list")
    return obj


def _entry(path: Path, key: str, index: int, entry: object, fields: dict[str, type]) -> dict:
    """Check that ``obj[key][index]`` is a dict with the typed ``fields``; name the entry in errors."""
    where = f"{path}: {key}[{index}]"
    if not isinstance(entry, dict):
        raise DataError(f"{where} is a {type(entry).__name__}; expected an object")
    if "id" in entry:
        where += f" (id {entry['id']!r})"
    for name, kind in fields.items():
        if name not in entry:
            raise DataError(f"{where}: missing key '{name}'")
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            want = "an integer" if kind is int else "a string"
            raise DataError(f"{where}: key '{name}' is {value!r}; expected {want}")
    return entry


def _numbers(path: Path, ann: dict, key: str, count: int) -> tuple[float, ...] | None:
    if key not in ann:
        return None
    value = ann[key]
    ok = isinstance(value, list) and len(value) == count
    if ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    raise DataError(
        f"{path}: annotation id {ann['id']!r}: key '{key}' is {value!r}; expected {count} numbers"
    )


def _categories(path: Path, obj: dict[str, Any], problems: Problems) -> list[dict[str, Any]]:
    """The checked ``categories`` of one file, sorted by id; a repeated id is a problem."""
    cats = [
        _entry(path, "categories", i, e, {"id": int, "name": str}) for i, e in enumerate(obj["categories"])
    ]
    first: dict[int, int] = {}
    for i, cat in enumerate(cats):
        if cat["id"] in first:
            problems.add(
                f"{path}: categories: id {cat['id']} is used twice (categories[{first[cat['id']]}] "
                f"{cats[first[cat['id']]]['name']!r} and categories[{i}] {cat['name']!r}); expected unique ids"
            )
        else:
            first[cat["id"]] = i
    return sorted((cats[i] for i in first.values()), key=lambda e: e["id"])


_TRAIN_CATEGORIES: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
"""Categories of train2019.json files already read, by (path, size, mtime_ns): reading the validation split
needs the training categories without parsing the large training file a second time."""


def _remember_categories(path: Path, cats: list[dict[str, Any]]) -> None:
    try:
        st = path.stat()
    except OSError:
        return
    if len(_TRAIN_CATEGORIES) > 8:
        _TRAIN_CATEGORIES.clear()
    _TRAIN_CATEGORIES[(str(path.resolve()), st.st_size, st.st_mtime_ns)] = cats


def training_categories(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The categories of ``root/train2019.json`` sorted by id: label ``i`` of both splits is the i-th."""
    path = Path(root) / "train2019.json"
    try:
        st = path.stat()
        cached = _TRAIN_CATEGORIES.get((str(path.resolve()), st.st_size, st.st_mtime_ns))
    except OSError:
        cached = None
    if cached is not None:
        return cached
    if not path.is_file():
        raise DataError(
            f"{path}: training annotation file is missing; validation labels are the training categories "
            f"matched by id, so {path.name} is needed next to val2019.json"
        )
    problems = Problems()
    cats = _categories(path, _load_json(path), problems)
    problems.raise_if_any(str(path))
    _remember_categories(path, cats)
    return cats


def read_inat(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    categories: Sequence[Mapping[str, Any]] | None = None,
) -> InatData:
    """Read ``root/{split}2019.json`` (``split``: ``train`` or ``val``) into an :class:`InatData` index.

    Labels come from the TRAINING categories sorted by id (``categories``, by default those of
    ``root/train2019.json``) and annotations are matched to them by ``category_id``, so a validation file
    that lists only some categories, or lists them in another order, gets the same labels. A validation
    category unknown to training (or named differently there) is an error naming it and its image count.
    ``classes`` are the category names; ``relpath`` the ``file_name`` (relative to ``root``). Ids must be
    unique, every image must exist and have exactly one annotation; all problems of a file are raised
    together. The optional non-standard annotation keys ``bbox`` and ``part_xy`` fill ``bbox`` and
    ``parts['left wing']``.
    """
    split = _check_split(split)
    root = Path(root)
    path = root / f"{split}2019.json"
    obj = _load_json(path)
    problems = Problems()
    cats = _categories(path, obj, problems)
    own_ids = {c["id"] for c in cats}

    files: dict[int, str] = {}
    for i, e in enumerate(obj["images"]):
        image = _entry(path, "images", i, e, {"id": int, "file_name": str})
        if image["id"] in files:
            problems.add(f"{path}: images[{i}]: id {image['id']} is used twice; expected unique ids")
        elif not image["file_name"].strip():
            problems.add(f"{path}: images[{i}] (id {image['id']}): key 'file_name' is empty")
        else:
            files[image["id"]] = image["file_name"]

    category_of: dict[int, int] = {}
    extras: dict[int, dict[str, Any]] = {}
    fields = {"id": int, "image_id": int, "category_id": int}
    for i, e in enumerate(obj["annotations"]):
        ann = _entry(path, "annotations", i, e, fields)
        where = f"{path}: annotation id {ann['id']!r} (annotations[{i}])"
        if ann["image_id"] not in files:
            problems.add(
                f"{where}: image_id {ann['image_id']} is not an id in 'images' "
                f"(expected one of {_id_list(files)})"
            )
        elif ann["category_id"] not in own_ids:
            problems.add(
                f"{where}: category_id {ann['category_id']} is not an id in 'categories' "
                f"(expected one of {_id_list(own_ids)})"
            )
        elif ann["image_id"] in category_of:
            problems.add(f"{where}: image_id {ann['image_id']} already has an annotation; expected one")
        else:
            category_of[ann["image_id"]] = ann["category_id"]
            extras[ann["image_id"]] = {
                "bbox": _numbers(path, ann, "bbox", 4),
                "xy": _numbers(path, ann, "part_xy", 2),
            }

    for image_id, file_name in files.items():
        if image_id not in category_of:
            problems.add(f"{path}: image id {image_id} ({file_name}) has no annotation in 'annotations'")
        elif not (root / file_name).is_file():
            problems.add(f"{path}: image id {image_id}: file_name {file_name} does not exist under {root}")
    problems.raise_if_any(str(path))

    if categories is not None:
        reference = sorted((dict(c) for c in categories), key=lambda c: c["id"])
    elif split == "train":
        reference = cats
        _remember_categories(path, cats)
    else:
        reference = training_categories(root)
    label_of = {c["id"]: i for i, c in enumerate(reference)}
    if reference is not cats:
        _match_categories(path, cats, reference, category_of, root / "train2019.json")

    records: list[ImageRecord] = []
    for image_id, file_name in files.items():
        extra = extras[image_id]
        records.append(
            ImageRecord(
                relpath=file_name,
                label=label_of[category_of[image_id]],
                is_train=split == "train",
                bbox=extra["bbox"],
                parts={DISCRIMINATIVE_PART: extra["xy"]} if extra["xy"] is not None else {},
            )
        )
    return InatData(
        root=root,
        classes=[c["name"] for c in reference],
        records=records,
        format="inat2019",
        category_ids=[c["id"] for c in reference],
        taxonomy=[dict(c) for c in reference],
    )


def _match_categories(
    path: Path,
    cats: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    category_of: dict[int, int],
    reference_path: Path,
) -> None:
    """Every category this file uses must be a training category of the same name (matched by id)."""
    names = {c["id"]: str(c["name"]) for c in reference}
    images = Counter(category_of.values())
    problems = Problems()
    for cat in cats:
        cid, name, n = cat["id"], str(cat["name"]), images.get(cat["id"], 0)
        if cid not in names:
            if n:
                problems.add(
                    f"{path}: category id {cid} ({name!r}, {n} image{'s' if n != 1 else ''}) is not a "
                    f"category of {reference_path}; expected only categories the model is trained on "
                    f"(ids {_id_list(names)})"
                )
        elif names[cid].strip() != name.strip():
            problems.add(
                f"{path}: category id {cid} is named {name!r} here but {names[cid]!r} in {reference_path}; "
                "expected the same category list as training"
            )
    problems.raise_if_any(f"{path} (validation categories against {reference_path})")


def class_counts(data: ClassificationData) -> np.ndarray:
    """Images per class over all of ``data.records`` (int64, length ``data.num_classes``)."""
    labels = np.fromiter((r.label for r in data.records), dtype=np.int64, count=len(data.records))
    return np.bincount(labels, minlength=data.num_classes).astype(np.int64)
