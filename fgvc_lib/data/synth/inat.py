"""A long-tailed synthetic data set in the real iNaturalist-2019 format (:func:`write_inat`).

The layout (``train2019.json``, ``val2019.json`` and the ``train_val2019/`` image tree) is described, and
read, by :mod:`fgvc_lib.data.inat`; this module only writes it. The real files carry no boxes or parts; the
writer adds two NON-STANDARD keys to every annotation: ``bbox`` ``[x, y, w, h]`` (COCO convention, pixels)
of the bird and ``part_xy`` ``[x, y]``, the ``"left wing"`` patch that carries the class identity
(:func:`fgvc_lib.data.inat.read_inat` reads them into ``ImageRecord.bbox`` and ``ImageRecord.parts``).

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
from pathlib import Path
from typing import Any

import numpy as np

from fgvc_lib.data.inat import IMAGE_FOLDER
from fgvc_lib.data.synth.render import (
    DISCRIMINATIVE_PART,
    NUM_CLASSES,
    PART_COLOURS,
    check_int,
    check_out_dir,
    class_attributes,
    image_rng,
    render_bird,
    save_jpeg,
)
from fgvc_lib.runs import staged_replace

ICONIC_GROUP = "Birds"
"""Second-level image folder of the synthetic set (iNat's iconic group: Plants, Insects, Birds, ...)."""

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
    num_classes = check_int("num_classes", num_classes, 1)
    max_per_class = check_int("max_per_class", max_per_class, 1)
    imbalance = _check_imbalance(imbalance)
    if num_classes == 1:
        return [max_per_class]
    factor = 1.0 / imbalance
    return [max(1, int(max_per_class * factor ** (i / (num_classes - 1)))) for i in range(num_classes)]


def attribute_indices(classes: int) -> list[int]:
    """Synthetic class ``c`` -> :func:`~fgvc_lib.data.synth.render.class_attributes` index (colour ``c % 8``,
    shape/pattern spread evenly within the colour); distinct for every ``classes`` in 1..200."""
    classes = check_int("classes", classes, 1, NUM_CLASSES)
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


def _check_imbalance(value: object) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) < 1.0:  # type: ignore[arg-type]
        raise ValueError(f"imbalance: expected a finite number >= 1 (n_max / n_min), got {value!r}")
    return float(value)  # type: ignore[arg-type]


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
        save_jpeg(image, tmp / file_name)
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
    classes = check_int("classes", classes, 1, NUM_CLASSES)
    max_per_class = check_int("max_per_class", max_per_class, 1)
    imbalance = _check_imbalance(imbalance)
    val_per_class = check_int("val_per_class", val_per_class, 1)
    size = check_int("size", size, 32)
    seed = check_int("seed", seed, 0)
    out = check_out_dir(out)
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
