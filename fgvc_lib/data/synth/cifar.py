"""A synthetic fine-grained CIFAR-100 in the real python format (:func:`write_cifar100`).

The layout (``cifar-100-python/{train,test,meta}`` pickles) is described, and read, by
:mod:`fgvc_lib.data.cifar`; this module only writes it.

Synthetic class design (:func:`write_cifar100`). The images are the synthetic birds of
:mod:`fgvc_lib.data.synth.render` (classes differ only in a wing patch), drawn in any rotation (object
length 65-90% of the side) with a wing patch 1.6 times the base size (about 6-7 px wide at 32 px) and
moderate clutter: harder than the CUB-style birds, so a short run reaches about 60-75 % top-1 and the
losses differ. Of the 200 colour x shape x pattern combinations, 100 are used:

* 20 coarse classes = one patch colour and one patch shape, ``coarse = fine // 5``: coarse ``k`` has colour
  ``k % 8`` (all 8 colours) and shape ``("disc", "triangle", "bar")[k // 8]``, so the four colours
  Crimson, Tangerine, Golden and Emerald have three shapes and the others two. Square and diamond are not
  used: under the random rotation of the bird they differ only in their angle to the body axis, which is
  hard to see at 32 px. Names like ``crimson_disc_birds``.
* 5 fine classes per coarse class = the 5 patch patterns (solid, striped, dotted, ring, checkered), which
  change how much of the patch shows the colour versus the contrast colour. Names like
  ``crimson_disc_solid``.

The images are class-agnostic apart from the patch, so a model has to find and read a 6-7 px part: colour
gives a 1-in-8 grouping, shape and pattern the rest.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from fgvc_lib.data.cifar import BASE_FOLDER, IMAGE_SIZE, NUM_COARSE, NUM_FINE, SPLITS, to_cifar_rows
from fgvc_lib.data.synth.render import (
    NUM_CLASSES,
    PART_COLOURS,
    PART_PATTERNS,
    check_int,
    check_out_dir,
    class_attributes,
    image_rng,
    render_bird,
)
from fgvc_lib.runs import staged_replace

COARSE_SHAPES: tuple[str, ...] = ("disc", "triangle", "bar")
"""Patch shapes used by the synthetic coarse classes (in order of coarse index // 8)."""

# Rendering of the synthetic images: render_bird supersamples at 2x (64 px) and LANCZOS-downsamples to 32.
# Harder than the CUB-style birds on purpose (any rotation, more clutter, a 6-7 px patch), so that a short
# embedded run stays well below 100 % and the losses (CE, MC, focal, FLSD-53) have errors to differ on.
RENDER_CLUTTER = 6
RENDER_LENGTH_RANGE = (0.65, 0.9)
RENDER_PATCH_SCALE = 1.6
RENDER_MAX_TILT = 180.0

_BATCH_LABELS = {"train": "training batch 1 of 1", "test": "testing batch 1 of 1"}
_SPLIT_CODE = {"train": 0, "test": 1}

# ------------------------------------------------------------------------------------------ class design


def _attribute_index(colour: str, shape: str, pattern: str) -> int:
    for index in range(NUM_CLASSES):
        spec = class_attributes(index)
        if (spec.colour_name, spec.shape, spec.pattern) == (colour, shape, pattern):
            return index
    raise AssertionError(f"no synthetic class with {colour}/{shape}/{pattern}")  # pragma: no cover


def _class_design() -> tuple[list[int], list[str], list[str]]:
    colours = list(PART_COLOURS)
    attribute_indices: list[int] = []
    fine_names: list[str] = []
    coarse_names: list[str] = []
    for coarse in range(NUM_COARSE):
        colour, shape = colours[coarse % len(colours)], COARSE_SHAPES[coarse // len(colours)]
        coarse_names.append(f"{colour.lower()}_{shape}_birds")
        for pattern in PART_PATTERNS:
            attribute_indices.append(_attribute_index(colour, shape, pattern))
            fine_names.append(f"{colour.lower()}_{shape}_{pattern}")
    return attribute_indices, fine_names, coarse_names


FINE_ATTRIBUTE_INDEX, FINE_LABEL_NAMES, COARSE_LABEL_NAMES = _class_design()
"""Synthetic fine label -> :func:`~fgvc_lib.data.synth.render.class_attributes` index; fine and coarse names."""


def coarse_of(fine_label: int) -> int:
    """Coarse label of a synthetic fine label (5 consecutive fine labels share one coarse class)."""
    return int(fine_label) // (NUM_FINE // NUM_COARSE)


# ------------------------------------------------------------------------------------------ writer


def render_cifar_image(seed: int, fine_label: int, split: str, k: int) -> np.ndarray:
    """Image ``k`` of synthetic fine class ``fine_label`` in ``split`` as a 32 x 32 x 3 uint8 array."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if not 0 <= int(fine_label) < NUM_FINE:
        raise ValueError(f"fine_label: expected an integer in 0..{NUM_FINE - 1}, got {fine_label!r}")
    rng = image_rng(seed, fine_label, _SPLIT_CODE[split], k)
    image, _ = render_bird(
        rng,
        FINE_ATTRIBUTE_INDEX[int(fine_label)],
        IMAGE_SIZE,
        clutter=RENDER_CLUTTER,
        length_range=RENDER_LENGTH_RANGE,
        patch_scale=RENDER_PATCH_SCALE,
        max_tilt=RENDER_MAX_TILT,
    )
    return np.asarray(image, dtype=np.uint8)


def _split_dict(seed: int, split: str, per_class: int, serial0: int) -> dict[str, Any]:
    """The official dict for one split, images in a seeded shuffled order (as in the real files)."""
    n = NUM_FINE * per_class
    order = image_rng(seed, 7_919, _SPLIT_CODE[split]).permutation(n)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    fine: list[int] = []
    filenames: list[str] = []
    for row, item in enumerate(order):
        label, k = divmod(int(item), per_class)
        images[row] = render_cifar_image(seed, label, split, k)
        fine.append(label)
        filenames.append(f"{FINE_LABEL_NAMES[label]}_s_{serial0 + int(item):06d}.png")
    return {
        "filenames": filenames,
        "batch_label": _BATCH_LABELS[split],
        "fine_labels": fine,
        "coarse_labels": [coarse_of(label) for label in fine],
        "data": to_cifar_rows(images),
    }


def _dump(obj: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar100(
    out: str | os.PathLike[str], *, train_per_class: int = 20, test_per_class: int = 5, seed: int = 0
) -> Path:
    """Write a synthetic fine-grained CIFAR-100 under ``out/cifar-100-python``; return ``out`` (the data root).

    Byte-identical for the same arguments; image ``k`` of a class is :func:`render_cifar_image` and does
    not depend on the per-class counts, the row order is a seeded shuffle (as in the real files). The files
    are written into a hidden temporary folder next to the target, which is then renamed into place (an
    existing ``cifar-100-python`` is replaced only once the new one is complete), so an interrupted run
    never leaves a partial data set under the real name. :func:`fgvc_lib.data.cifar.read_cifar100` reads it.
    """
    train_per_class = check_int("train_per_class", train_per_class, 1)
    test_per_class = check_int("test_per_class", test_per_class, 1)
    seed = check_int("seed", seed, 0)
    out = check_out_dir(out)
    final = out / BASE_FOLDER
    if final.exists() and not final.is_dir():
        raise ValueError(f"out: {final} exists and is not a directory; expected a folder to replace")
    out.mkdir(parents=True, exist_ok=True)
    with staged_replace(out, [BASE_FOLDER], f".{BASE_FOLDER}.") as tmp:
        base = tmp / BASE_FOLDER
        base.mkdir()
        _dump(_split_dict(seed, "train", train_per_class, 0), base / "train")
        _dump(_split_dict(seed, "test", test_per_class, NUM_FINE * train_per_class), base / "test")
        _dump(
            {"fine_label_names": list(FINE_LABEL_NAMES), "coarse_label_names": list(COARSE_LABEL_NAMES)},
            base / "meta",
        )
    return out
