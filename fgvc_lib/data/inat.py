"""iNaturalist-2019 in its real on-disk format: a long-tailed synthetic writer, a reader and class counts.

On disk (as distributed for the FGVC6 competition): ``<root>/train2019.json``, ``<root>/val2019.json`` and
the image tree they point to, ``<root>/train_val2019/<iconic group>/<category_id>/<hex name>.jpg`` (e.g.
``train_val2019/Plants/400/d1322d13ccd856eb4236c8b888546c79.jpg``; train and val images share the tree).
Each JSON file is COCO-style, a dict of

* ``info`` (year, version, description, contributor, url, date_created) and ``licenses`` (id, name, url);
* ``images``: id, file_name (relative to the root), width, height, license, rights_holder;
* ``annotations``: id, image_id, category_id (exactly one per image; image ids are unique over both splits);
* ``categories``: id, name, kingdom, phylum, class, order, family, genus.

The real files carry no boxes or parts. The synthetic writer adds two NON-STANDARD keys to every annotation:
``bbox`` ``[x, y, w, h]`` (COCO convention, pixels) of the bird and ``part_xy`` ``[x, y]``, the
``"left wing"`` patch that carries the class identity. :func:`read_inat` fills ``ImageRecord.bbox`` and
``ImageRecord.parts["left wing"]`` from them when present and reads real files without them.

Synthetic class design (:func:`write_inat`). Class ``c`` has patch colour ``c % 8`` (neighbouring classes
always differ in colour, all 8 colours are used once ``C >= 8``); the classes of one colour are spread evenly
over its 25 shape x pattern combinations, shifted by 3 per colour (:func:`attribute_indices`), so even 8
classes mix all shapes and patterns and ``C = 200`` uses every combination once.
Taxonomy: Animalia / Chordata / Aves / Synthetiformes; the genus is the patch colour (``Crimsonornis``), a
family holds two consecutive colours (``Crimsonidae``: Crimson and Tangerine), and the species epithet
joins shape and pattern (``Crimsonornis orbistriatus``: striped disc). Training counts per class follow
:func:`long_tail_counts` (class / category id 0 is the head), the validation split is balanced (iNat-2019
has 3 validation images per class). The folder below ``train_val2019`` is iNat's iconic group, ``Birds``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fgvc_lib.data.datasets import ClassificationData, DataError, ImageRecord, _id_list
from fgvc_lib.data.synthetic import (
    DISCRIMINATIVE_PART,
    NUM_CLASSES,
    PART_COLOURS,
    class_attributes,
    image_rng,
    render_bird,
)
from fgvc_lib.runs import staged_replace

SPLITS: tuple[str, ...] = ("train", "val")
IMAGE_FOLDER = "train_val2019"
"""Top folder of the image tree (both splits), as in the official archive."""
ICONIC_GROUP = "Birds"
"""Second-level image folder of the synthetic set (iNat's iconic group: Plants, Insects, Birds, ...)."""
REQUIRED_KEYS: tuple[str, ...] = ("images", "annotations", "categories")

_SPLIT_CODE = {"train": 0, "val": 1}
_IMAGE_SALT = 2019  # keys the per-image generators apart from those of the other synthetic sets
_NAME_SALT = 4_051
_ORDER_SALT = 7_177

_COLOURS = list(PART_COLOURS)
_COMBO_OFFSET = 3  # shifts each colour's shape/pattern choice, so 8 classes already mix shapes and patterns
_SHAPE_STEMS = {
    "disc": "orbi",
    "square": "quadri",
    "triangle": "trigoni",
    "diamond": "rhombi",
    "bar": "virgi",
}
_PATTERN_ENDINGS = {
    "solid": "color",
    "striped": "striatus",
    "dotted": "punctatus",
    "ring": "annulatus",
    "checkered": "tessellatus",
}
_LICENSE = {
    "id": 1,
    "name": "CC0 1.0 Universal (synthetic image)",
    "url": "https://creativecommons.org/publicdomain/zero/1.0/",
}
_RIGHTS_HOLDER = "fgvc_lib synthetic renderer"

# ------------------------------------------------------------------------------------------ class design


def long_tail_counts(num_classes: int, max_per_class: int, imbalance: float) -> list[int]:
    """Exponential long-tail profile ``n_i = int(n_max * (1 / R) ** (i / (C - 1)))``, at least 1 each.

    Class 0 is the head (``n_max`` images), class ``C - 1`` the tail (``n_max / R``); the CIFAR-LT
    construction. ``C = 1`` gives ``[n_max]``; ``R = 1`` is balanced.
    """
    num_classes = _check_int("num_classes", num_classes, 1)
    max_per_class = _check_int("max_per_class", max_per_class, 1)
    imbalance = _check_imbalance(imbalance)
    if num_classes == 1:
        return [max_per_class]
    factor = 1.0 / imbalance
    return [max(1, int(max_per_class * factor ** (i / (num_classes - 1)))) for i in range(num_classes)]


def attribute_indices(classes: int) -> list[int]:
    """Synthetic class ``c`` -> :func:`~fgvc_lib.data.synthetic.class_attributes` index (colour ``c % 8``,
    shape/pattern spread evenly within the colour); distinct for every ``classes`` in 1..200."""
    classes = _check_int("classes", classes, 1, NUM_CLASSES)
    n_colours = len(_COLOURS)
    combos = NUM_CLASSES // n_colours  # shape x pattern combinations per colour
    indices = []
    for c in range(classes):
        colour, rank = c % n_colours, c // n_colours
        same_colour = len(range(colour, classes, n_colours))
        combo = (rank * combos // same_colour + _COMBO_OFFSET * colour) % combos
        indices.append(colour * combos + combo)
    return indices


def species_taxonomy(attribute_index: int) -> dict[str, str]:
    """Category fields (name, kingdom, phylum, class, order, family, genus) of a synthetic species."""
    spec = class_attributes(attribute_index)
    colour = _COLOURS.index(spec.colour_name)
    genus = f"{spec.colour_name}ornis"
    epithet = _SHAPE_STEMS[spec.shape] + _PATTERN_ENDINGS[spec.pattern]
    return {
        "name": f"{genus} {epithet}",
        "kingdom": "Animalia",
        "phylum": "Chordata",
        "class": "Aves",
        "order": "Synthetiformes",
        "family": f"{_COLOURS[colour - colour % 2]}idae",
        "genus": genus,
    }


# ------------------------------------------------------------------------------------------ writer


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):  # type: ignore[operator]
        what = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def _check_imbalance(value: object) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) < 1.0:  # type: ignore[arg-type]
        raise ValueError(f"imbalance: expected a finite number >= 1 (n_max / n_min), got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _save_image(image: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=90)


def _split_json(
    tmp: Path,
    split: str,
    per_class: Sequence[int],
    attrs: Sequence[int],
    categories: list[dict[str, Any]],
    size: int,
    seed: int,
    first_id: int,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Render one split's images under ``tmp`` and return its JSON dict (images in a seeded order)."""
    code = _SPLIT_CODE[split]
    items = [(c, k) for c, n in enumerate(per_class) for k in range(n)]
    order = image_rng(seed, _ORDER_SALT, code).permutation(len(items))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for position, item in enumerate(order):
        c, k = items[int(item)]
        image_id = first_id + position
        image, ann = render_bird(image_rng(seed, _IMAGE_SALT, code, c, k), attrs[c], size)
        name = image_rng(seed, _NAME_SALT, code, c, k).bytes(16).hex()
        file_name = f"{IMAGE_FOLDER}/{ICONIC_GROUP}/{c}/{name}.jpg"
        _save_image(image, tmp / file_name)
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": image.width,
                "height": image.height,
                "license": _LICENSE["id"],
                "rights_holder": _RIGHTS_HOLDER,
            }
        )
        px, py = ann.parts[DISCRIMINATIVE_PART]
        annotations.append(
            {
                "id": image_id,
                "image_id": image_id,
                "category_id": c,
                "bbox": [round(v, 2) for v in ann.bbox],  # non-standard: not in the real iNat files
                "part_xy": [round(px, 2), round(py, 2)],  # non-standard: the "left wing" patch centre
            }
        )
    info = {
        "year": 2019,
        "version": "1.0",
        "description": f"Synthetic long-tailed birds in the iNaturalist-2019 format ({split} split)",
        "contributor": "fgvc_lib.data.inat",
        "url": "",
        "date_created": "2019-03-01 00:00:00",
        "generator": params,  # non-standard: the write_inat arguments
    }
    return {
        "info": info,
        "licenses": [dict(_LICENSE)],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write_inat(
    out: str | os.PathLike[str],
    *,
    classes: int = 30,
    max_per_class: int = 60,
    imbalance: float = 20.0,
    val_per_class: int = 3,
    size: int = 96,
    seed: int = 0,
) -> Path:
    """Write a synthetic long-tailed data set in the iNaturalist-2019 layout under ``out``; return ``out``.

    Training class ``c`` has ``long_tail_counts(classes, max_per_class, imbalance)[c]`` images, every class
    ``val_per_class`` validation images; ``size`` x ``size`` JPEGs (quality 90). Byte-identical for the same
    arguments; image ``k`` of class ``c`` does not depend on the counts. Everything is written into a hidden
    temporary folder in ``out`` and then moved into place: ``train2019.json`` is removed first and moved in
    last, so a data set whose ``train2019.json`` exists is complete; the temporary folder is always removed.
    """
    classes = _check_int("classes", classes, 1, NUM_CLASSES)
    max_per_class = _check_int("max_per_class", max_per_class, 1)
    imbalance = _check_imbalance(imbalance)
    val_per_class = _check_int("val_per_class", val_per_class, 1)
    size = _check_int("size", size, 32)
    seed = _check_int("seed", seed, 0)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: expected a directory path, got the existing file {out}")
    targets = [out / IMAGE_FOLDER, out / "val2019.json", out / "train2019.json"]  # the order they move in
    for target in targets:
        if target.exists() and target.is_dir() != (target.name == IMAGE_FOLDER):
            raise ValueError(f"out: {target} exists and is not a {'folder' if target.is_dir() else 'file'}")
    out.mkdir(parents=True, exist_ok=True)
    attrs = attribute_indices(classes)
    categories = [{"id": c, **species_taxonomy(a)} for c, a in enumerate(attrs)]
    train_counts = long_tail_counts(classes, max_per_class, imbalance)
    params = {
        "classes": classes,
        "max_per_class": max_per_class,
        "imbalance": imbalance,
        "val_per_class": val_per_class,
        "size": size,
        "seed": seed,
    }
    with staged_replace(out, [t.name for t in targets], ".inat2019.") as tmp:
        train = _split_json(tmp, "train", train_counts, attrs, categories, size, seed, 0, params)
        val_counts = [val_per_class] * classes
        val = _split_json(tmp, "val", val_counts, attrs, categories, size, seed, sum(train_counts), params)
        for name, obj in (("train2019.json", train), ("val2019.json", val)):
            (tmp / name).write_bytes(json.dumps(obj).encode("utf-8"))
    return out


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


def read_inat(root: str | os.PathLike[str], split: str = "train") -> InatData:
    """Read ``root/{split}2019.json`` (``split``: ``train`` or ``val``) into an :class:`InatData` index.

    Labels are the positions of the categories sorted by id; ``classes`` their names; ``relpath`` the
    ``file_name`` (relative to ``root``). Every image must exist and have exactly one annotation. The
    optional non-standard annotation keys ``bbox`` and ``part_xy`` fill ``bbox`` and ``parts['left wing']``.
    """
    split = _check_split(split)
    root = Path(root)
    path = root / f"{split}2019.json"
    obj = _load_json(path)

    cats = [
        _entry(path, "categories", i, e, {"id": int, "name": str}) for i, e in enumerate(obj["categories"])
    ]
    cats.sort(key=lambda e: e["id"])
    label_of: dict[int, int] = {}
    for label, cat in enumerate(cats):
        if cat["id"] in label_of:
            raise DataError(f"{path}: categories: id {cat['id']} is used twice; expected unique ids")
        label_of[cat["id"]] = label

    files: dict[int, str] = {}
    for i, e in enumerate(obj["images"]):
        image = _entry(path, "images", i, e, {"id": int, "file_name": str})
        if image["id"] in files:
            raise DataError(f"{path}: images[{i}]: id {image['id']} is used twice; expected unique ids")
        if not image["file_name"].strip():
            raise DataError(f"{path}: images[{i}] (id {image['id']}): key 'file_name' is empty")
        files[image["id"]] = image["file_name"]

    labels: dict[int, int] = {}
    extras: dict[int, dict[str, Any]] = {}
    fields = {"id": int, "image_id": int, "category_id": int}
    for i, e in enumerate(obj["annotations"]):
        ann = _entry(path, "annotations", i, e, fields)
        where = f"{path}: annotation id {ann['id']!r} (annotations[{i}])"
        if ann["image_id"] not in files:
            raise DataError(
                f"{where}: image_id {ann['image_id']} is not an id in 'images' "
                f"(expected one of {_id_list(files)})"
            )
        if ann["category_id"] not in label_of:
            raise DataError(
                f"{where}: category_id {ann['category_id']} is not an id in 'categories' "
                f"(expected one of {_id_list(label_of)})"
            )
        if ann["image_id"] in labels:
            raise DataError(f"{where}: image_id {ann['image_id']} already has an annotation; expected one")
        labels[ann["image_id"]] = label_of[ann["category_id"]]
        extras[ann["image_id"]] = {
            "bbox": _numbers(path, ann, "bbox", 4),
            "xy": _numbers(path, ann, "part_xy", 2),
        }

    records: list[ImageRecord] = []
    for image_id, file_name in files.items():
        if image_id not in labels:
            raise DataError(f"{path}: image id {image_id} ({file_name}) has no annotation in 'annotations'")
        if not (root / file_name).is_file():
            raise DataError(f"{path}: image id {image_id}: file_name {file_name} does not exist under {root}")
        extra = extras[image_id]
        records.append(
            ImageRecord(
                relpath=file_name,
                label=labels[image_id],
                is_train=split == "train",
                bbox=extra["bbox"],
                parts={DISCRIMINATIVE_PART: extra["xy"]} if extra["xy"] is not None else {},
            )
        )
    return InatData(
        root=root,
        classes=[c["name"] for c in cats],
        records=records,
        format="inat2019",
        category_ids=[c["id"] for c in cats],
        taxonomy=[dict(c) for c in cats],
    )


def class_counts(data: ClassificationData) -> np.ndarray:
    """Images per class over all of ``data.records`` (int64, length ``data.num_classes``)."""
    labels = np.fromiter((r.label for r in data.records), dtype=np.int64, count=len(data.records))
    return np.bincount(labels, minlength=data.num_classes).astype(np.int64)
