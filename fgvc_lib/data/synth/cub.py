"""Synthetic fine-grained "birds" written in the real CUB-200-2011 on-disk layout (:func:`write_cub`).

The images come from :func:`~fgvc_lib.data.synth.render.render_bird` (classes differ only in a wing
patch); this module adds the CUB pieces: class names, the 15 CUB part names, the train/test split and the
text files. :func:`fgvc_lib.data.datasets.read_cub` reads the result.
"""

from __future__ import annotations

import json
from pathlib import Path

from fgvc_lib.data.synth.render import (
    NUM_CLASSES,
    check_int,
    check_out_dir,
    class_attributes,
    image_rng,
    render_bird,
    save_jpeg,
)
from fgvc_lib.runs import staged_replace

CUB_PART_NAMES: tuple[str, ...] = (
    "back",
    "beak",
    "belly",
    "breast",
    "crown",
    "forehead",
    "left eye",
    "left leg",
    "left wing",
    "nape",
    "right eye",
    "right leg",
    "right wing",
    "tail",
    "throat",
)
"""The 15 CUB-200-2011 part names, in CUB order (part id = position + 1)."""

COMPLETE_MARKER = ".complete"
"""File written last by :func:`write_cub`; a data set without it is incomplete."""

_PATTERN_WORDS = {
    "solid": "Solid",
    "striped": "Striped",
    "dotted": "Dotted",
    "ring": "Ringed",
    "checkered": "Checkered",
}

# ------------------------------------------------------------------------------------------ class names


def class_name(index: int) -> str:
    """Readable class name, e.g. ``Crimson_Disc_Solid_Synthbird``."""
    spec = class_attributes(index)
    return f"{spec.colour_name}_{spec.shape.title()}_{_PATTERN_WORDS[spec.pattern]}_Synthbird"


# ------------------------------------------------------------------------------------------ writer


def _train_count(per_class: int, train_fraction: float) -> int:
    n = round(per_class * train_fraction)
    if per_class >= 2:
        n = min(max(n, 1), per_class - 1)
    return int(n)


def is_complete(out: str | Path) -> bool:
    """True when ``out`` holds a data set that :func:`write_cub` finished writing."""
    return (Path(out) / COMPLETE_MARKER).is_file()


def write_cub(
    out: str | Path,
    *,
    classes: int = 10,
    per_class: int = 30,
    size: int = 128,
    seed: int = 0,
    train_fraction: float = 0.5,
) -> Path:
    """Write a synthetic data set in the CUB-200-2011 layout directly under ``out``; return ``out``.

    Files: ``images/<NNN.Class>/<Class>_<kkkk>.jpg`` (JPEG quality 90), ``images.txt``, ``classes.txt``,
    ``image_class_labels.txt``, ``train_test_split.txt``, ``bounding_boxes.txt``, ``parts/parts.txt`` and
    ``parts/part_locs.txt``. Image ``k`` of class ``c`` uses ``image_rng(seed, c, k)``, so output is
    byte-identical for the same arguments and a class's images do not depend on ``classes``/``per_class``.
    Per class ``round(per_class * train_fraction)`` images (a seeded choice) are training images, clamped
    to leave at least one of each kind when ``per_class >= 2``.

    Completeness: everything is written into ``out/.tmp-<pid>`` and then moved into place (``images.txt``
    last); the marker file ``out/.complete`` is removed first and written at the very end, so a data set
    without it (see :func:`is_complete`) was interrupted. Existing entries of the same names are replaced.
    """
    classes = check_int("classes", classes, 1, NUM_CLASSES)
    per_class = check_int("per_class", per_class, 1)
    size = check_int("size", size, 32, None, "an integer >= 32 (pixels)")
    seed = check_int("seed", seed, 0)
    if (
        isinstance(train_fraction, bool)
        or not isinstance(train_fraction, (int, float))
        or not (0.0 <= float(train_fraction) <= 1.0)
    ):
        raise ValueError(f"train_fraction: expected a number in [0, 1], got {train_fraction!r}")
    out = check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / COMPLETE_MARKER).unlink(missing_ok=True)
    names = [
        "images",
        "parts",
        "classes.txt",
        "image_class_labels.txt",
        "train_test_split.txt",
        "bounding_boxes.txt",
        "images.txt",
    ]
    with staged_replace(out, names, ".") as tmp:
        _write_tree(tmp, classes, per_class, size, seed, float(train_fraction))
    info = {
        "format": "CUB-200-2011",
        "generator": "fgvc_lib.data.synthetic",  # the former module: kept, so output stays byte-identical
        "classes": classes,
        "per_class": per_class,
        "size": size,
        "seed": seed,
        "train_fraction": float(train_fraction),
        "images": classes * per_class,
    }
    (out / COMPLETE_MARKER).write_bytes((json.dumps(info, sort_keys=True) + "\n").encode("utf-8"))
    return out


def _write_tree(
    root: Path, classes: int, per_class: int, size: int, seed: int, train_fraction: float
) -> None:
    (root / "images").mkdir(parents=True)
    (root / "parts").mkdir()
    lines: dict[str, list[str]] = {k: [] for k in ("images", "classes", "labels", "split", "boxes", "locs")}
    n_train = _train_count(per_class, train_fraction)
    image_id = 0
    for c in range(classes):
        name = class_name(c)
        folder = f"{c + 1:03d}.{name}"
        (root / "images" / folder).mkdir()
        lines["classes"].append(f"{c + 1} {folder}")
        order = image_rng(seed, c, per_class, 1_000_003).permutation(per_class)
        train_set = {int(k) for k in order[:n_train]}
        for k in range(per_class):
            image_id += 1
            image, ann = render_bird(image_rng(seed, c, k), c, size)
            rel = f"{folder}/{name}_{k + 1:04d}.jpg"
            save_jpeg(image, root / "images" / rel)
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {c + 1}")
            lines["split"].append(f"{image_id} {1 if k in train_set else 0}")
            x, y, w, h = ann.bbox
            lines["boxes"].append(f"{image_id} {x:.1f} {y:.1f} {w:.1f} {h:.1f}")
            for pid, part in enumerate(CUB_PART_NAMES, start=1):
                if part in ann.parts:
                    px, py = ann.parts[part]
                    lines["locs"].append(f"{image_id} {pid} {px:.1f} {py:.1f} 1")
                else:
                    lines["locs"].append(f"{image_id} {pid} 0.0 0.0 0")
    files = {
        "images.txt": lines["images"],
        "classes.txt": lines["classes"],
        "image_class_labels.txt": lines["labels"],
        "train_test_split.txt": lines["split"],
        "bounding_boxes.txt": lines["boxes"],
        "parts/parts.txt": [f"{i} {p}" for i, p in enumerate(CUB_PART_NAMES, start=1)],
        "parts/part_locs.txt": lines["locs"],
    }
    for rel, content in files.items():
        (root / rel).write_bytes(("\n".join(content) + "\n").encode("utf-8"))
