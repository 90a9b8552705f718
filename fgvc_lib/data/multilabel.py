"""Multi-label images (14 labels, half the images without any): synthetic writer, readers, stratified split.

On disk (the layout of the report's data set)::

    <root>/images/im<k>.jpg          k = 1..N (1-based, no zero padding); mostly RGB, a few grayscale
    <root>/annotations/<label>.txt   one file per label: the numbers k of the images carrying it, one a line

An image listed in no annotation file has no label (about 49 % of the report's images). A CSV alternative,
``file,labels`` with a space-separated (possibly empty) label list, is read by :func:`read_multilabel_csv`.

The synthetic writer (:func:`write_multilabel`) adds ``<root>/boxes.json``, an EXTRA of the synthetic set
(the real data has no boxes): ``{"im<k>.jpg": {"<label>": [x, y, w, h], ...}, ...}`` in pixels, one box per
label an image carries (global labels: night = the sky, sea = the water, river = the band's extent; people =
all person figures together), for tests and CAM checks; :func:`read_boxes` reads it.

Label sets (:func:`sample_label_sets`) reproduce the report's training frequencies and empty share with
exact counts; ``portrait``, ``female`` and ``male`` imply ``people`` (a portrait is one large face, so it
carries no scene label); scene labels co-occur with plausible partners (clouds + sea, dog + people, ...).
Every label is drawn as a visible object or property (see :func:`render_scene`).
"""

from __future__ import annotations

import copy
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
from PIL import Image, ImageDraw

from fgvc_lib.data.datasets import DataError, load_rgb
from fgvc_lib.data.synthetic import (
    NUM_CLASSES,
    _background,
    _check_int,
    _ellipse,
    _lighter,
    _muted,
    _pts,
    _rgb,
    _scaled,
    image_rng,
    render_bird,
)
from fgvc_lib.registry import did_you_mean
from fgvc_lib.runs import staged_replace

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

IMAGE_FOLDER = "images"
ANNOTATION_FOLDER = "annotations"
BOXES_FILE = "boxes.json"
CSV_COLUMNS: tuple[str, str] = ("file", "labels")

_IMAGE_NAME = re.compile(r"^im(\d+)\.jpg$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
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

Box = tuple[float, float, float, float]

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
    n = _check_int("images", images, 1, None, "an integer >= 1")
    seed = _check_int("seed", seed, 0, None, "an integer >= 0")
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


# ------------------------------------------------------------------------------------------ rendering

_SKIN = ((255, 224, 196), (241, 194, 161), (224, 172, 130), (198, 134, 94), (141, 85, 54), (96, 60, 40))
_HAIR = ((30, 22, 18), (70, 45, 25), (120, 80, 40), (205, 165, 95), (150, 60, 30))


def _place(box: Box, pts: np.ndarray, mirror: bool = False) -> list[tuple[float, float]]:
    """Unit-box points (u right, v down, in [0, 1]) -> canvas points inside ``box`` (x, y, w, h)."""
    x, y, w, h = box
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    u = 1.0 - p[:, 0] if mirror else p[:, 0]
    return _pts(np.stack([x + u * w, y + p[:, 1] * h], axis=1))


def _oval(cu: float, cv: float, a: float, b: float, tilt: float = 0.0, n: int = 32) -> np.ndarray:
    return _ellipse(cu, cv, a, b, tilt, n)


def _rect(u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    return np.array([(u0, v0), (u1, v0), (u1, v1), (u0, v1)], dtype=np.float64)


def _warm(rng: np.random.Generator) -> tuple[int, int, int]:
    hue = rng.choice([0.0, 0.02, 0.9, 0.94, 0.97, 0.83])
    return _rgb(hue + rng.uniform(-0.015, 0.015), rng.uniform(0.65, 0.95), rng.uniform(0.7, 0.98))


def _cool(rng: np.random.Generator) -> tuple[int, int, int]:
    return _rgb(rng.uniform(0.52, 0.68), rng.uniform(0.6, 0.95), rng.uniform(0.45, 0.85))


def _draw_person(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box, kind: str) -> None:
    """A standing figure. female: long hair + warm dress; male: short hair + cool shirt and trousers;
    neutral (people only): brimmed hat + muted coat."""
    skin, hair = _SKIN[int(rng.integers(len(_SKIN)))], _HAIR[int(rng.integers(len(_HAIR)))]
    mirror = bool(rng.random() < 0.5)
    x, y, w, h = box
    r = 0.11 * h / w  # head radius in u units (the head is a circle of radius 0.11 h)
    head = (0.5, 0.12)

    def fill(pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        draw.polygon(_place(box, pts, mirror), fill=colour)

    legs = skin if kind == "female" else _scaled(_cool(rng) if kind == "male" else _muted(rng), 0.45)
    for u in (0.38, 0.54):
        fill(_rect(u, 0.58, u + 0.09, 1.0), legs)
    arm = skin
    if kind == "female":
        dress = _warm(rng)
        fill(_oval(head[0], 0.2, 1.35 * r, 0.12), hair)  # long hair behind the head and shoulders
        fill(_rect(head[0] - 1.3 * r, 0.13, head[0] + 1.3 * r, 0.38), hair)
        fill(np.array([(0.3, 0.24), (0.7, 0.24), (0.98, 0.78), (0.02, 0.78)]), dress)
    elif kind == "male":
        shirt = _cool(rng)
        arm = shirt
        fill(_rect(0.24, 0.24, 0.76, 0.62), shirt)
    else:
        coat = _muted(rng)
        arm = coat
        fill(_rect(0.22, 0.24, 0.78, 0.74), coat)
    for side in (-1, 1):
        u0 = 0.5 + side * 0.3
        fill(
            np.array(
                [(u0, 0.25), (u0 + side * 0.12, 0.27), (u0 + side * 0.2, 0.55), (u0 + side * 0.1, 0.56)]
            ),
            arm,
        )
    fill(_rect(0.45, 0.17, 0.55, 0.26), skin)  # neck
    fill(_oval(*head, r, 0.11), skin)
    if kind == "male":
        cap = _oval(head[0], head[1], 1.08 * r, 0.12)
        fill(cap[cap[:, 1] < head[1] - 0.035], hair)
    elif kind == "female":
        fill(_oval(head[0], 0.05, 1.1 * r, 0.055), hair)  # fringe
    else:
        hat = _scaled(_muted(rng), 0.6)
        fill(_rect(head[0] - 1.7 * r, 0.045, head[0] + 1.7 * r, 0.075), hat)
        fill(_rect(head[0] - 0.9 * r, -0.01, head[0] + 0.9 * r, 0.06), hat)
    for du in (-0.4, 0.4):
        fill(_oval(head[0] + du * r, 0.115, 0.13 * r, 0.013, n=10), (20, 20, 20))


def _draw_portrait(draw: ImageDraw.ImageDraw, rng: np.random.Generator, side: float, kind: str) -> Box:
    """One large face filling the frame; female: long hair and a warm collar, male: short hair (sometimes a
    beard) and a cool collar, neutral: a hat. Returns the head box (hair and hat included)."""
    skin, hair = _SKIN[int(rng.integers(len(_SKIN)))], _HAIR[int(rng.integers(len(_HAIR)))]
    cx, cy = side * rng.uniform(0.42, 0.58), side * rng.uniform(0.4, 0.5)
    rx = side * rng.uniform(0.19, 0.25)
    ry = rx * rng.uniform(1.2, 1.35)
    garment = _warm(rng) if kind == "female" else _cool(rng) if kind == "male" else _muted(rng)
    shoulder_y = cy + 0.85 * ry
    draw.polygon(
        _pts(
            np.array(
                [
                    (cx - 0.9 * rx, shoulder_y),
                    (cx + 0.9 * rx, shoulder_y),
                    (cx + 2.4 * rx, side + 2),
                    (cx - 2.4 * rx, side + 2),
                ]
            )
        ),
        fill=garment,
    )
    top, x0, x1 = cy - ry, cx - rx, cx + rx
    if kind == "female":
        draw.polygon(_pts(_ellipse(cx, cy - 0.1 * ry, 1.35 * rx, 1.2 * ry)), fill=hair)
        draw.rectangle((cx - 1.35 * rx, cy, cx + 1.35 * rx, cy + 1.6 * ry), fill=hair)
        top, x0, x1 = cy - 1.3 * ry, cx - 1.35 * rx, cx + 1.35 * rx
    draw.rectangle((cx - 0.45 * rx, cy + 0.5 * ry, cx + 0.45 * rx, shoulder_y + 0.1 * ry), fill=skin)
    draw.polygon(_pts(_ellipse(cx, cy, rx, ry)), fill=skin)
    if kind == "male":
        cap = _ellipse(cx, cy, 1.07 * rx, 1.07 * ry, n=64)
        draw.polygon(_pts(cap[cap[:, 1] < cy - 0.45 * ry]), fill=hair)
        if rng.random() < 0.4:  # beard
            beard = _ellipse(cx, cy, rx, ry, n=64)
            draw.polygon(_pts(beard[beard[:, 1] > cy + 0.3 * ry]), fill=hair)
        top = cy - 1.12 * ry
    elif kind == "female":
        draw.polygon(_pts(_ellipse(cx, cy - 0.78 * ry, 0.95 * rx, 0.35 * ry)), fill=hair)
    else:
        hat = _scaled(_muted(rng), 0.6)
        draw.rectangle((cx - 1.5 * rx, cy - 0.62 * ry, cx + 1.5 * rx, cy - 0.48 * ry), fill=hat)
        draw.rectangle((cx - 0.95 * rx, cy - 1.35 * ry, cx + 0.95 * rx, cy - 0.55 * ry), fill=hat)
        top, x0, x1 = cy - 1.35 * ry, cx - 1.5 * rx, cx + 1.5 * rx
    for d in (-1, 1):
        ex, ey = cx + d * 0.4 * rx, cy - 0.12 * ry
        draw.polygon(_pts(_ellipse(ex, ey, 0.2 * rx, 0.1 * ry)), fill=(245, 245, 245))
        draw.polygon(_pts(_ellipse(ex, ey, 0.09 * rx, 0.09 * rx)), fill=(40, 30, 25))
        draw.line([(ex - 0.22 * rx, ey - 0.2 * ry), (ex + 0.22 * rx, ey - 0.22 * ry)], fill=hair, width=3)
    draw.line([(cx, cy - 0.05 * ry), (cx + 0.08 * rx, cy + 0.22 * ry)], fill=_scaled(skin, 0.7), width=3)
    lips = (200, 40, 70) if kind == "female" else _scaled(skin, 0.6)
    draw.polygon(_pts(_ellipse(cx, cy + 0.48 * ry, 0.3 * rx, 0.07 * ry)), fill=lips)
    bottom = cy + (1.6 if kind == "female" else 1.0) * ry
    return (x0, top, x1 - x0, bottom - top)


def _draw_baby(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box) -> None:
    """A small round pink figure: round pink body with stubby limbs, round head."""
    pink = _rgb(rng.uniform(0.93, 0.99), rng.uniform(0.28, 0.45), rng.uniform(0.93, 1.0))
    skin = _lighter(_SKIN[int(rng.integers(3))], 0.2)
    _, _, w, h = box
    k = h / w

    def fill(pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        draw.polygon(_place(box, pts), fill=colour)

    for cu, cv in ((0.12, 0.55), (0.88, 0.55), (0.3, 0.92), (0.7, 0.92)):
        fill(_oval(cu, cv, 0.12, 0.1), pink)
    fill(_oval(0.5, 0.66, 0.4, 0.3), pink)
    fill(_oval(0.5, 0.27, 0.26 * k, 0.26), skin)
    fill(_oval(0.5, 0.04, 0.06, 0.04), _HAIR[int(rng.integers(len(_HAIR)))])
    for du in (-0.09, 0.09):
        fill(_oval(0.5 + du * k, 0.25, 0.035, 0.035, n=10), (30, 30, 30))
    fill(_oval(0.5, 0.36, 0.07, 0.025, n=12), (220, 90, 110))


def _draw_car(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box) -> None:
    """A box-shaped car: body, cabin with windows, two wheels, headlight."""
    body = _rgb(rng.uniform(0.0, 1.0), rng.uniform(0.6, 0.95), rng.uniform(0.5, 0.95))
    mirror = bool(rng.random() < 0.5)
    _, _, w, h = box
    k = w / h

    def fill(pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        draw.polygon(_place(box, pts, mirror), fill=colour)

    fill(np.array([(0.22, 0.38), (0.3, 0.04), (0.7, 0.04), (0.82, 0.38)]), _scaled(body, 0.85))
    glass = (170, 205, 230)
    fill(np.array([(0.29, 0.36), (0.34, 0.1), (0.49, 0.1), (0.49, 0.36)]), glass)
    fill(np.array([(0.53, 0.36), (0.53, 0.1), (0.67, 0.1), (0.76, 0.36)]), glass)
    fill(_rect(0.0, 0.36, 1.0, 0.8), body)
    fill(_rect(0.93, 0.45, 1.0, 0.55), (255, 235, 120))
    for cu in (0.22, 0.78):
        fill(_oval(cu, 0.8, 0.2 / k, 0.2), (20, 20, 20))
        fill(_oval(cu, 0.8, 0.09 / k, 0.09), (170, 170, 170))


def _draw_dog(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box) -> None:
    """A brown four-legged silhouette: body, legs, head with ear and snout, tail."""
    brown = _rgb(rng.uniform(0.04, 0.1), rng.uniform(0.45, 0.8), rng.uniform(0.3, 0.62))
    mirror = bool(rng.random() < 0.5)

    def fill(pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        draw.polygon(_place(box, pts, mirror), fill=colour)

    dark = _scaled(brown, 0.65)
    fill(np.array([(0.16, 0.36), (0.02, 0.08), (0.07, 0.06), (0.2, 0.32)]), brown)  # tail
    for u in (0.2, 0.32, 0.58, 0.7):
        fill(_rect(u, 0.45, u + 0.08, 1.0), brown if u in (0.2, 0.58) else dark)
    fill(_oval(0.45, 0.45, 0.32, 0.18), brown)
    fill(np.array([(0.62, 0.4), (0.74, 0.14), (0.86, 0.2), (0.76, 0.5)]), brown)  # neck
    fill(_oval(0.8, 0.22, 0.12, 0.14), brown)
    fill(_oval(0.92, 0.28, 0.08, 0.07), brown)  # snout
    fill(np.array([(0.72, 0.12), (0.8, 0.1), (0.74, 0.4), (0.68, 0.36)]), dark)  # ear
    fill(_oval(0.99, 0.26, 0.025, 0.03, n=10), (15, 15, 15))
    fill(_oval(0.83, 0.18, 0.02, 0.025, n=10), (15, 15, 15))


def _draw_tree(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box) -> None:
    """A green crown (round clusters or a conifer) on a brown trunk."""
    green = _rgb(rng.uniform(0.24, 0.4), rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.7))
    trunk = _rgb(rng.uniform(0.05, 0.1), rng.uniform(0.5, 0.75), rng.uniform(0.25, 0.45))
    _, _, w, h = box
    k = h / w

    def fill(pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        draw.polygon(_place(box, pts), fill=colour)

    fill(_rect(0.43, 0.5, 0.57, 1.0), trunk)
    if rng.random() < 0.35:
        for i, (v0, v1, half) in enumerate(((0.32, 0.7, 0.5), (0.16, 0.5, 0.4), (0.0, 0.3, 0.3))):
            fill(np.array([(0.5, v0), (0.5 + half, v1), (0.5 - half, v1)]), _scaled(green, 1.0 - 0.08 * i))
    else:
        for cu, cv, r in (
            (0.3, 0.42, 0.2),
            (0.7, 0.42, 0.2),
            (0.5, 0.3, 0.28),
            (0.35, 0.2, 0.18),
            (0.65, 0.2, 0.18),
        ):
            fill(_oval(cu, cv, r, r / k), _scaled(green, rng.uniform(0.85, 1.1)))


def _draw_flower(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box) -> None:
    """Petals around a centre disc on a green stem with a leaf."""
    petal = _rgb(rng.choice([0.0, 0.83, 0.93, 0.12, 0.75]), rng.uniform(0.55, 0.95), rng.uniform(0.8, 1.0))
    if rng.random() < 0.15:
        petal = (250, 250, 245)
    centre = (245, 200, 20) if rng.random() < 0.6 else (110, 60, 20)
    _, _, w, h = box
    k = h / w
    head_v = 0.5 / k  # the head is a disc of diameter w at the top of the box

    def fill(pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        draw.polygon(_place(box, pts), fill=colour)

    green = _rgb(rng.uniform(0.25, 0.38), rng.uniform(0.55, 0.85), rng.uniform(0.35, 0.6))
    fill(_rect(0.47, head_v, 0.53, 1.0), green)
    fill(_oval(0.66, 0.5 * (1.0 + head_v), 0.14, 0.05, tilt=-0.5), green)
    n = int(rng.integers(5, 9))
    turn = rng.uniform(0.0, 2.0 * math.pi)
    for i in range(n):
        a = turn + 2.0 * math.pi * i / n
        pts = _ellipse(0.28 * math.cos(a), 0.28 * math.sin(a), 0.22, 0.11, a)
        fill(np.stack([0.5 + pts[:, 0], head_v + pts[:, 1] / k], axis=1), petal)
    fill(_oval(0.5, head_v, 0.14, 0.14 / k), centre)


def _bird_sprite(rng: np.random.Generator, side: int) -> tuple[Image.Image, Image.Image, Box]:
    """A :func:`render_bird` bird of a random class cut out of its (clutter-free) background: (RGB image,
    mask, bird box). The background is re-rendered from a copy of the generator, because
    ``render_bird`` draws it first, with ``_background(rng, 2 * size, clutter)``."""
    class_index = int(rng.integers(NUM_CLASSES))
    probe = copy.deepcopy(rng)
    image, ann = render_bird(rng, class_index, side, clutter=0, length_range=(0.8, 0.95), patch_scale=1.3)
    bg = _background(probe, 2 * side, 0).resize((side, side), Image.Resampling.LANCZOS)
    diff = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(bg, dtype=np.int16)).max(axis=2)
    mask = Image.fromarray(np.where(diff > 6, 255, 0).astype(np.uint8), "L")
    return image, mask, ann.bbox


# Object kinds drawn in ground slots: (height range as a share of the side, width / height).
_OBJECTS: dict[str, tuple[tuple[float, float], float]] = {
    "person": ((0.5, 0.72), 0.42),
    "tree": ((0.5, 0.72), 0.62),
    "car": ((0.2, 0.3), 2.0),
    "dog": ((0.24, 0.34), 1.45),
    "flower": ((0.3, 0.42), 0.6),
    "baby": ((0.26, 0.36), 0.9),
    "bird": ((0.42, 0.62), 1.0),
}


def _union(boxes: Sequence[Box]) -> Box:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def _scenery(canvas: Image.Image, rng: np.random.Generator, horizon: float, night: bool) -> None:
    """Label-free scenery drawn with the same chances on every image: pale day sky, hills, buildings."""
    side = canvas.width
    draw = ImageDraw.Draw(canvas)
    if not night and rng.random() < 0.35:
        top, bottom = (
            np.asarray(_lighter(_muted(rng), 0.5), float),
            np.asarray(_lighter(_muted(rng), 0.3), float),
        )
        for yy in range(int(horizon)):
            t = yy / max(horizon, 1.0)
            draw.line([(0, yy), (side, yy)], fill=tuple(int(c) for c in top + (bottom - top) * t))
    if rng.random() < 0.3:
        xs = np.linspace(-0.05, 1.05, 7) * side
        ys = horizon + rng.uniform(-0.12, 0.08, size=xs.size) * side
        draw.polygon(
            _pts(np.concatenate([np.stack([xs, ys], 1), [(side * 1.05, side), (-0.05 * side, side)]])),
            fill=_muted(rng),
        )
    if rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 4))):
            bw, bh = rng.uniform(0.1, 0.22) * side, rng.uniform(0.2, 0.5) * side
            bx, base = rng.uniform(0, side - bw), horizon + rng.uniform(0.0, 0.15) * side
            wall = _muted(rng)
            draw.rectangle((bx, base - bh, bx + bw, base), fill=wall)
            window = _scaled(wall, 0.6)
            for wy in np.arange(base - bh + 0.06 * bh, base - 0.1 * bh, 0.12 * bh):
                for wx in np.arange(bx + 0.12 * bw, bx + bw - 0.15 * bw, 0.3 * bw):
                    draw.rectangle((wx, wy, wx + 0.14 * bw, wy + 0.05 * bh), fill=window)


def _night(canvas: Image.Image, rng: np.random.Generator, horizon: float) -> Box:
    """Dark blue-black sky with stars (and sometimes a moon) above ``horizon``; the ground is darkened."""
    side = canvas.width
    arr = np.asarray(canvas, dtype=np.float64).copy()
    arr[int(horizon) :] *= rng.uniform(0.35, 0.55)
    top = np.asarray(_rgb(rng.uniform(0.6, 0.7), rng.uniform(0.5, 0.9), rng.uniform(0.03, 0.1)), float)
    low = np.asarray(_rgb(rng.uniform(0.6, 0.68), rng.uniform(0.5, 0.9), rng.uniform(0.15, 0.3)), float)
    t = (np.arange(int(horizon)) / max(horizon, 1.0))[:, None, None]
    arr[: int(horizon)] = top + (low - top) * t
    canvas.paste(Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB"))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(12, 28))):
        sx, sy = rng.uniform(0, side), rng.uniform(0, horizon * 0.95)
        r = rng.uniform(0.6, 1.8) * side / 128
        draw.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 255, int(rng.integers(190, 256))))
    if rng.random() < 0.5:
        r = rng.uniform(0.04, 0.07) * side
        mx, my = rng.uniform(r, side - r), rng.uniform(r, max(r + 1, horizon - r))
        draw.ellipse((mx - r, my - r, mx + r, my + r), fill=(250, 245, 200))
    return (0.0, 0.0, float(side), float(horizon))


def _sea(canvas: Image.Image, rng: np.random.Generator, horizon: float, night: bool) -> Box:
    """Blue water below a straight horizon, with lighter wave strokes."""
    side = canvas.width
    draw = ImageDraw.Draw(canvas)
    hue, sat, val = rng.uniform(0.55, 0.63), rng.uniform(0.6, 0.9), rng.uniform(0.5, 0.85)
    val *= 0.6 if night else 1.0
    far, near = np.asarray(_rgb(hue, sat * 0.8, val), float), np.asarray(_rgb(hue, sat, val * 0.75), float)
    for yy in range(int(horizon), side):
        t = (yy - horizon) / max(side - horizon, 1.0)
        draw.line([(0, yy), (side, yy)], fill=tuple(int(c) for c in far + (near - far) * t))
    wave = _lighter(_rgb(hue, sat, val), 0.45)
    for _ in range(int(rng.integers(6, 14))):
        wx, wy = rng.uniform(0, side), rng.uniform(horizon + 4, side)
        length = rng.uniform(0.05, 0.15) * side
        draw.line([(wx, wy), (wx + length, wy)], fill=wave, width=max(1, side // 128))
    return (0.0, float(horizon), float(side), float(side - horizon))


def _river(canvas: Image.Image, rng: np.random.Generator) -> Box:
    """A blue band with wavy banks crossing the image from edge to edge (horizontal or vertical)."""
    side = canvas.width
    xs = np.linspace(-0.05, 1.05, 40) * side
    centre = rng.uniform(0.35, 0.8) * side
    slope = math.tan(rng.uniform(-0.5, 0.5))
    amp, period, phase = (
        rng.uniform(0.0, 0.06) * side,
        rng.uniform(0.5, 1.2) * side,
        rng.uniform(0, 2 * math.pi),
    )
    ys = centre + slope * (xs - side / 2) + amp * np.sin(2 * math.pi * xs / period + phase)
    half = rng.uniform(0.05, 0.09) * side
    poly = np.concatenate([np.stack([xs, ys - half], 1), np.stack([xs, ys + half], 1)[::-1]])
    if rng.random() < 0.3:
        poly = poly[:, ::-1]
    draw = ImageDraw.Draw(canvas)
    water = _rgb(rng.uniform(0.53, 0.62), rng.uniform(0.5, 0.85), rng.uniform(0.5, 0.85))
    bank = _rgb(rng.uniform(0.08, 0.3), rng.uniform(0.2, 0.5), rng.uniform(0.35, 0.6))
    draw.line(_pts(np.concatenate([poly, poly[:1]])), fill=bank, width=max(2, side // 40))
    draw.polygon(_pts(poly), fill=water)
    lo, hi = np.clip(poly.min(axis=0), 0, side), np.clip(poly.max(axis=0), 0, side)
    return (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))


def _clouds(canvas: Image.Image, rng: np.random.Generator) -> Box:
    """One to three white blobs (clusters of ellipses) in the upper part of the image."""
    side = canvas.width
    draw = ImageDraw.Draw(canvas)
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        cw = rng.uniform(0.25, 0.42) * side
        cx, cy = rng.uniform(0.05 * side, side - cw - 0.05 * side), rng.uniform(0.08, 0.28) * side
        white = _rgb(rng.uniform(0.5, 0.7), rng.uniform(0.0, 0.05), rng.uniform(0.94, 1.0))
        shade = _scaled(white, 0.85)
        puffs = [
            (cx + cw * t, cy + cw * rng.uniform(-0.05, 0.05), cw * rng.uniform(0.14, 0.24))
            for t in np.linspace(0.15, 0.85, int(rng.integers(4, 7)))
        ]
        top = [(cx + cw * rng.uniform(0.3, 0.7), cy - cw * 0.12, cw * rng.uniform(0.18, 0.26))]
        for px, py, r in puffs + top:
            draw.ellipse((px - r, py - 0.7 * r + 2, px + r, py + 0.7 * r + 2), fill=shade)
        for px, py, r in puffs + top:
            draw.ellipse((px - r, py - 0.7 * r, px + r, py + 0.7 * r), fill=white)
        xs = [p[0] for p in puffs + top]
        rs = [p[2] for p in puffs + top]
        ys = [p[1] for p in puffs + top]
        x0 = min(x - r for x, r in zip(xs, rs, strict=True))
        x1 = max(x + r for x, r in zip(xs, rs, strict=True))
        y0 = min(y - 0.7 * r for y, r in zip(ys, rs, strict=True))
        y1 = max(y + 0.7 * r for y, r in zip(ys, rs, strict=True)) + 2
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return _union(boxes)


_DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, np.random.Generator, Box], None]] = {
    "tree": _draw_tree,
    "car": _draw_car,
    "dog": _draw_dog,
    "flower": _draw_flower,
    "baby": _draw_baby,
}


def render_scene(
    rng: np.random.Generator, labels: Sequence[str], size: int
) -> tuple[Image.Image, dict[str, Box]]:
    """Render an RGB ``size`` x ``size`` image showing ``labels``; return it and one box per label.

    Drawn at 2x and downsampled (LANCZOS); the cluttered gradient background (synthetic's) is drawn at 1x
    and upsampled. Label-free scenery (pale sky, hills, buildings) appears with the same chances on every
    image; then global labels (night: dark sky with stars, ground darkened; sea: blue water below a horizon;
    river: blue band across; clouds: white blobs high up) and objects side by side in slots (tree, car, dog,
    flower, baby, bird, and one standing figure per person: female = long hair + warm dress, male = short
    hair + cool shirt and trousers, people only = hat + coat). ``portrait``: one large face fills the frame
    instead of figures. Boxes are in output pixels, clipped to the image.
    """
    unknown = [label for label in labels if label not in LABELS]
    if unknown:
        raise ValueError(f"labels: unknown {unknown}; expected names from {LABELS}")
    wanted = set(labels)
    side = 2 * int(size)
    clutter = int(rng.integers(4, 11))  # the background at 1x (the slow part), upsampled
    canvas = _background(rng, int(size), clutter).resize((side, side), Image.Resampling.BILINEAR)
    horizon = rng.uniform(0.38, 0.6) * side
    _scenery(canvas, rng, horizon, "night" in wanted)
    boxes: dict[str, Box] = {}
    if "night" in wanted:
        boxes["night"] = _night(canvas, rng, horizon)
    if "sea" in wanted:
        boxes["sea"] = _sea(canvas, rng, horizon, "night" in wanted)
    if "river" in wanted:
        boxes["river"] = _river(canvas, rng)
    if "clouds" in wanted:
        boxes["clouds"] = _clouds(canvas, rng)
    draw = ImageDraw.Draw(canvas)

    people: list[str] = []
    if "people" in wanted and "portrait" not in wanted:
        people = [g for g in ("female", "male") if g in wanted] or ["neutral"]
    kinds = [k for k in ("tree", "car", "dog", "flower", "baby", "bird") if k in wanted] + people
    slots = rng.permutation(len(kinds)) if kinds else np.zeros(0, int)
    slot_w = side / max(len(kinds), 1)
    sky = 0.32 * side if "clouds" in wanted else 0.0  # objects leave the clouds visible
    placed: list[tuple[float, str, Box]] = []
    for kind, slot in zip(kinds, slots, strict=True):
        (h_lo, h_hi), aspect = _OBJECTS["person" if kind in ("female", "male", "neutral") else kind]
        h = rng.uniform(h_lo, h_hi) * side
        w = h * aspect
        scale = min(1.0, 0.96 * slot_w / w, (0.98 * side - sky) / h)
        w, h = w * scale, h * scale
        x0 = slot * slot_w + rng.uniform(0.0, slot_w - w)
        if kind == "bird":
            y0 = rng.uniform(sky, side - h)
        else:
            base = rng.uniform(max(h + sky, 0.55 * side), 0.98 * side)
            y0 = base - h
        placed.append((y0 + h, kind, (float(x0), float(y0), float(w), float(h))))
    person_boxes: list[Box] = []
    for _, kind, box in sorted(placed, key=lambda item: item[0]):
        if kind == "bird":
            s = max(16, int(round(box[2])))
            sprite, mask, (bx, by, bw, bh) = _bird_sprite(rng, s)
            canvas.paste(sprite, (int(round(box[0])), int(round(box[1]))), mask)
            boxes["bird"] = (int(round(box[0])) + bx, int(round(box[1])) + by, bw, bh)
        elif kind in _DRAWERS:
            _DRAWERS[kind](draw, rng, box)
            boxes[kind] = box
        else:
            _draw_person(draw, rng, box, kind)
            person_boxes.append(box)
            if kind != "neutral":
                boxes[kind] = box
    if "portrait" in wanted:
        kind = next((g for g in ("female", "male") if g in wanted), "neutral")
        head = _draw_portrait(draw, rng, side, kind)
        person_boxes.append(head)
        boxes["portrait"] = head
        if kind != "neutral":
            boxes[kind] = head
    if person_boxes:
        boxes["people"] = _union(person_boxes)

    image = canvas.resize((int(size), int(size)), Image.Resampling.LANCZOS)
    out: dict[str, Box] = {}
    for label in LABELS:  # label order, clipped to the image, output pixels
        if label in boxes:
            x, y, w, h = (v / 2.0 for v in boxes[label])
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(size), x + w), min(float(size), y + h)
            out[label] = (x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0))
    return image, out


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
    images = _check_int("images", images, 1, None, "an integer >= 1")
    size = _check_int("size", size, 32, None, "an integer >= 32 (pixels)")
    seed = _check_int("seed", seed, 0, None, "an integer >= 0")
    ok = isinstance(grayscale_share, (int, float, np.integer, np.floating)) and not isinstance(
        grayscale_share, bool
    )
    if not ok or not 0.0 <= float(grayscale_share) <= 1.0:
        raise ValueError(f"grayscale_share: expected a number in [0, 1], got {grayscale_share!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: expected a directory path, got the existing file {out}")
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
            image.save(tmp / IMAGE_FOLDER / name, format="JPEG", quality=90)
            boxes[name] = {label: [round(v, 1) for v in box] for label, box in label_boxes.items()}
        (tmp / BOXES_FILE).write_bytes((json.dumps(boxes) + "\n").encode("utf-8"))
        for j, label in enumerate(LABELS):
            numbers = (np.flatnonzero(y[:, j]) + 1).tolist()
            text = "".join(f"{k}\n" for k in numbers)
            (tmp / ANNOTATION_FOLDER / f"{label}.txt").write_bytes(text.encode("utf-8"))
    return out


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
    line): a missing folder or annotation file, a line that is not an image number or names no image, an
    annotation file of a label outside ``labels``, no images.
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
    for j, label in enumerate(names):
        path = ann_dir / f"{label}.txt"
        if not path.is_file():
            raise DataError(f"{path}: annotation file of label {label!r} is missing; expected one per label")
        for lineno, line in enumerate(_read_lines(path), start=1):
            text = line.strip()
            if not text:
                continue
            try:
                k = int(text)
            except ValueError:
                raise DataError(
                    f"{path}:{lineno}: expected an image number (k of images/im<k>.jpg), got {text!r}"
                ) from None
            if k not in row_of:
                raise DataError(f"{path}:{lineno}: image number {k}: {IMAGE_FOLDER}/im{k}.jpg does not exist")
            targets[row_of[k], j] = 1
    files = [f"{IMAGE_FOLDER}/{numbers[k]}" for k in order]
    return MultiLabelData(root=root, labels=names, files=files, targets=targets)


def read_multilabel_csv(
    csv_path: str | os.PathLike[str], image_dir: str | os.PathLike[str], labels: Sequence[str] = LABELS
) -> MultiLabelData:
    """Read a CSV with the header ``file,labels`` (``labels``: space-separated names, possibly empty).

    ``file`` is relative to ``image_dir`` (the data's ``root``); rows keep their order. Errors name the CSV
    and line: missing header or column, an empty or repeated file name, a missing image, an unknown label
    (with the closest known one).
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
    for fields in reader:
        lineno = reader.line_num
        if not fields or not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise DataError(
                f"{csv_path}:{lineno}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}"
            )
        file = fields[i_file].strip()
        if not file:
            raise DataError(f"{csv_path}:{lineno}: empty file name")
        if file in seen:
            raise DataError(f"{csv_path}:{lineno}: file {file} is listed twice (first at line {seen[file]})")
        row = np.zeros(len(names), dtype=np.uint8)
        for label in fields[i_labels].split():
            if label not in column:
                raise DataError(
                    f"{csv_path}:{lineno}: unknown label {label!r}; expected names from "
                    f"({', '.join(names)}){did_you_mean(label, names)}"
                )
            row[column[label]] = 1
        if not (image_dir / file).is_file():
            raise DataError(f"{csv_path}:{lineno}: image file {file} does not exist in {image_dir}")
        seen[file] = lineno
        files.append(file)
        rows.append(row)
    if not files:
        raise DataError(f"{csv_path}: no images; expected rows file,labels after the header")
    return MultiLabelData(root=image_dir, labels=names, files=files, targets=np.stack(rows))


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
    seed = _check_int("seed", seed, 0, None, "an integer >= 0")
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
