"""A synthetic multi-label set in the report's layout (:func:`write_multilabel`).

The layout (``images/im<k>.jpg`` + ``annotations/<label>.txt``) is described, and read, by
:mod:`fgvc_lib.data.multilabel`; this module only writes it, plus ``boxes.json``, an EXTRA of the synthetic
set (the real data has no boxes): ``{"im<k>.jpg": {"<label>": [x, y, w, h], ...}, ...}`` in pixels, one box
per label an image carries (global labels: night = the sky, sea = the water, river = the band's extent;
people = all person figures together), for tests and CAM checks (:func:`fgvc_lib.data.multilabel.read_boxes`).

Label sets (:func:`sample_label_sets`) reproduce the report's training frequencies and empty share with
exact counts; ``portrait``, ``female`` and ``male`` imply ``people`` (a portrait is one large face, so it
carries no scene label); scene labels co-occur with plausible partners (clouds + sea, dog + people, ...).
Every label is drawn as a visible object or property (see :func:`fgvc_lib.data.synth.scene.render_scene`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from fgvc_lib.data.multilabel import ANNOTATION_FOLDER, BOXES_FILE, IMAGE_FOLDER, LABELS
from fgvc_lib.data.synth.render import check_int, check_out_dir, image_rng, save_jpeg
from fgvc_lib.data.synth.scene import render_scene
from fgvc_lib.runs import staged_replace

REPORT_FREQUENCIES: tuple[float, ...] = (
    0.0046875,
    0.018,
    0.0159375,
    0.05475,
    0.022375,
    0.161375,
    0.0380625,
    0.1489375,
    0.029875,
    0.320125,
    0.1560625,
    0.006,
    0.008625,
    0.02625,
)
"""The report's training relative frequency of each label (order of :data:`LABELS`)."""

REPORT_EMPTY_SHARE = 9824 / 20000
"""Share of the report's images without any label (0.4912, the all-negative baseline accuracy)."""

_LABEL_SALT = 14_014
_IMAGE_SALT = 14_015
_GRAY_SALT = 14_016
_NEUTRAL_PEOPLE = 0.02  # share of all images with a person tagged neither female nor male
_EXTRA_PARTNER_WEIGHT = 4.0  # an extra scene label prefers images holding one of its partners
_PEOPLE = ("people", "female", "male", "portrait")
_SCENE = tuple(label for label in LABELS if label not in _PEOPLE)
_INCOMPATIBLE = {frozenset(("sea", "river")), frozenset(("night", "clouds"))}
_PARTNERS: dict[str, tuple[str, ...]] = {
    "baby": ("people",),
    "bird": ("clouds", "tree", "sea"),
    "car": ("people", "night"),
    "clouds": ("sea", "tree", "bird"),
    "dog": ("people",),
    "flower": ("tree",),
    "night": ("car", "people"),
    "river": ("tree",),
    "sea": ("clouds", "bird"),
    "tree": ("flower", "clouds", "river"),
}

# ------------------------------------------------------------------------------------------ label sets


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def sample_label_sets(images: int, seed: int = 0) -> np.ndarray:
    """Label matrix (``images`` x 14, uint8) with the report's frequencies and empty share as exact counts.

    People: ``female`` and ``male`` are mostly exclusive (a few images show both), about 2 % of the images
    show a person of neither tag, ``portrait`` goes to people images with at most one gender. Scene labels
    give each remaining non-empty image one label; the rest are added to images (people images included,
    portraits excluded) that hold no incompatible label, preferring images holding a partner label.
    """
    n = check_int("images", images, 1)
    seed = check_int("seed", seed, 0)
    rng = image_rng(seed, _LABEL_SALT, n)
    col = {label: j for j, label in enumerate(LABELS)}
    count = {label: _round(f * n) for label, f in zip(LABELS, REPORT_FREQUENCIES, strict=True)}
    y = np.zeros((n, len(LABELS)), dtype=np.uint8)
    order = rng.permutation(n)
    n_people = count["people"]
    n_empty = min(_round(REPORT_EMPTY_SHARE * n), n - n_people)
    people, others = order[:n_people], order[n_people : n - n_empty]

    nf, nm = min(count["female"], n_people), min(count["male"], n_people)
    n_neutral = max(0, min(_round(_NEUTRAL_PEOPLE * n), n_people - max(nf, nm)))
    both = max(0, nf + nm - (n_people - n_neutral))
    y[people, col["people"]] = 1
    y[people[:nf], col["female"]] = 1
    y[people[nf - both : nf - both + nm], col["male"]] = 1
    single = np.flatnonzero(y[people, col["female"]].astype(int) + y[people, col["male"]] < 2)
    chosen = rng.choice(single, size=min(count["portrait"], single.size), replace=False)
    y[people[chosen], col["portrait"]] = 1

    tokens = np.repeat([col[s] for s in _SCENE], [count[s] for s in _SCENE])
    rng.shuffle(tokens)
    first = min(tokens.size, others.size)
    y[others[:first], tokens[:first]] = 1
    incompatible = {col[a]: col[b] for pair in _INCOMPATIBLE for a, b in (tuple(pair), tuple(pair)[::-1])}
    for j in tokens[first:]:
        label = LABELS[j]
        ok = (y[:, j] == 0) & (y[:, col["portrait"]] == 0) & (y.any(axis=1))
        if j in incompatible:
            ok &= y[:, incompatible[j]] == 0
        candidates = np.flatnonzero(ok)
        if candidates.size == 0:
            candidates = np.flatnonzero((y[:, j] == 0) & (y[:, col["portrait"]] == 0))
        if candidates.size == 0:
            continue
        weights = 1.0 + _EXTRA_PARTNER_WEIGHT * y[candidates][:, [col[p] for p in _PARTNERS[label]]].any(
            axis=1
        )
        y[rng.choice(candidates, p=weights / weights.sum()), j] = 1
    return y


# ------------------------------------------------------------------------------------------ writer


def write_multilabel(
    out: str | os.PathLike[str],
    *,
    images: int = 2000,
    size: int = 128,
    seed: int = 0,
    grayscale_share: float = 0.05,
) -> Path:
    """Write a synthetic multi-label set in the report's layout under ``out``; return ``out``.

    ``images/im<k>.jpg`` (JPEG quality 90; ``round(grayscale_share * images)`` seeded images saved as
    single-channel 'L' JPEGs), ``annotations/<label>.txt`` for all 14 labels (sorted image numbers, possibly
    empty) and the synthetic extra ``boxes.json``. Labels from :func:`sample_label_sets`, image ``k`` drawn
    by :func:`render_scene` with ``image_rng(seed, salt, k)``: byte-identical for the same arguments.
    Written into a hidden temporary folder in ``out`` and moved into place, ``annotations`` removed first
    and moved in last (a set whose ``annotations`` folder exists is complete); the temporary folder is
    always removed.
    """
    images = check_int("images", images, 1)
    size = check_int("size", size, 32, None, "an integer >= 32 (pixels)")
    seed = check_int("seed", seed, 0)
    ok = isinstance(grayscale_share, (int, float, np.integer, np.floating)) and not isinstance(
        grayscale_share, bool
    )
    if not ok or not 0.0 <= float(grayscale_share) <= 1.0:
        raise ValueError(f"grayscale_share: expected a number in [0, 1], got {grayscale_share!r}")
    out = check_out_dir(out)
    targets = [out / IMAGE_FOLDER, out / BOXES_FILE, out / ANNOTATION_FOLDER]  # the order they move in
    for target in targets:
        want_dir = target.name != BOXES_FILE
        if target.exists() and target.is_dir() != want_dir:
            raise ValueError(f"out: {target} exists and is not a {'folder' if want_dir else 'file'}")
    out.mkdir(parents=True, exist_ok=True)
    y = sample_label_sets(images, seed)
    gray = set(
        image_rng(seed, _GRAY_SALT, images).permutation(images)[: _round(grayscale_share * images)].tolist()
    )
    with staged_replace(out, [t.name for t in targets], ".multilabel.") as tmp:
        (tmp / IMAGE_FOLDER).mkdir()
        (tmp / ANNOTATION_FOLDER).mkdir()
        boxes: dict[str, dict[str, list[float]]] = {}
        for i in range(images):
            name = f"im{i + 1}.jpg"
            labels = [LABELS[j] for j in np.flatnonzero(y[i])]
            image, label_boxes = render_scene(image_rng(seed, _IMAGE_SALT, i + 1), labels, size)
            if i in gray:
                image = image.convert("L")
            save_jpeg(image, tmp / IMAGE_FOLDER / name)
            boxes[name] = {label: [round(v, 1) for v in box] for label, box in label_boxes.items()}
        (tmp / BOXES_FILE).write_bytes((json.dumps(boxes) + "\n").encode("utf-8"))
        for j, label in enumerate(LABELS):
            numbers = (np.flatnonzero(y[:, j]) + 1).tolist()
            text = "".join(f"{k}\n" for k in numbers)
            (tmp / ANNOTATION_FOLDER / f"{label}.txt").write_bytes(text.encode("utf-8"))
    return out
