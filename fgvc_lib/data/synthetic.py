"""Synthetic fine-grained "birds" and a writer of the real CUB-200-2011 on-disk layout.

Every class shares one bird body (ellipse body, round head, beak, tail, wing, eye) whose colour, pose and
background vary per image with the same distribution for all classes. A class differs from another only in
a small patch on the wing (colour x shape x pattern = 8 x 5 x 5 = 200 classes), so recognising the class
needs attention to one part, as in real fine-grained recognition.

Rendering (:func:`render_bird`) is separate from writing (:func:`write_cub`) so that other synthetic data
sets (CIFAR-like, iNaturalist-like, multi-label) can reuse the renderer.
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fgvc_lib.runs import staged_replace

NUM_CLASSES = 200
"""Number of distinct synthetic classes (8 colours x 5 shapes x 5 patterns)."""

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

DISCRIMINATIVE_PART = "left wing"
"""The part whose patch carries the class identity."""

COMPLETE_MARKER = ".complete"
"""File written last by :func:`write_cub`; a data set without it is incomplete."""

PART_COLOURS: dict[str, tuple[int, int, int]] = {
    "Crimson": (200, 20, 45),
    "Tangerine": (255, 135, 0),
    "Golden": (250, 220, 30),
    "Emerald": (10, 150, 70),
    "Turquoise": (0, 200, 215),
    "Cobalt": (25, 55, 200),
    "Violet": (140, 40, 190),
    "Ivory": (248, 246, 236),
}
"""The 8 saturated patch colours (distinct hue and/or luminance; the body and clutter are muted)."""

PART_SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "diamond", "bar")
PART_PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "ring", "checkered")
_PATTERN_WORDS = {
    "solid": "Solid",
    "striped": "Striped",
    "dotted": "Dotted",
    "ring": "Ringed",
    "checkered": "Checkered",
}
_N_COMBOS = len(PART_SHAPES) * len(PART_PATTERNS)

# ------------------------------------------------------------------------------------------ class design


@dataclass(frozen=True)
class PartSpec:
    """What distinguishes one class: the colour, shape and pattern of the wing patch."""

    colour_name: str
    rgb: tuple[int, int, int]
    shape: str
    pattern: str


def _check_class_index(index: int) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"class index: expected an integer in 0..{NUM_CLASSES - 1}, got {index!r}")
    if not 0 <= index < NUM_CLASSES:
        raise ValueError(
            f"class index: expected 0 <= index < {NUM_CLASSES} (the synthetic set has {NUM_CLASSES} "
            f"classes), got {index}"
        )
    return int(index)


def class_attributes(index: int) -> PartSpec:
    """Patch attributes of class ``index`` (0-based, < 200).

    Shape and pattern vary fastest (consecutive indices always differ in shape, and in pattern within a
    block of 25), colour changes every 25 classes, so small class subsets stay separable in grayscale.
    """
    index = _check_class_index(index)
    colour_idx, combo = divmod(index, _N_COMBOS)
    shape_idx = combo % len(PART_SHAPES)
    pattern_idx = (shape_idx + combo // len(PART_SHAPES)) % len(PART_PATTERNS)  # Latin square: bijective
    colour_name = list(PART_COLOURS)[colour_idx]
    return PartSpec(
        colour_name, PART_COLOURS[colour_name], PART_SHAPES[shape_idx], PART_PATTERNS[pattern_idx]
    )


def class_name(index: int) -> str:
    """Readable class name, e.g. ``Crimson_Disc_Solid_Synthbird``."""
    spec = class_attributes(index)
    return f"{spec.colour_name}_{spec.shape.title()}_{_PATTERN_WORDS[spec.pattern]}_Synthbird"


# ------------------------------------------------------------------------------------------ geometry
# The bird lives in a canonical frame: beak tip at x=+0.5, tail tip at x=-0.5 (object length 1), y down.


def _ellipse(cx: float, cy: float, a: float, b: float, tilt: float = 0.0, n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    x, y = a * np.cos(t), b * np.sin(t)
    c, s = math.cos(tilt), math.sin(tilt)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _poly(*pts: tuple[float, float]) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64)


_BODY = _ellipse(-0.02, 0.05, 0.26, 0.15)
_BELLY = _ellipse(0.03, 0.11, 0.15, 0.07)
_HEAD = _ellipse(0.27, -0.08, 0.11, 0.11)
_BEAK = _poly((0.35, -0.12), (0.50, -0.065), (0.35, -0.02))
_TAIL = _poly((-0.22, -0.02), (-0.50, -0.09), (-0.46, 0.01), (-0.50, 0.11), (-0.22, 0.10))
_WING = _ellipse(-0.07, 0.02, 0.22, 0.10, tilt=0.08)
_EYE = _ellipse(0.30, -0.10, 0.028, 0.028, n=24)
_EYE_GLINT = _ellipse(0.308, -0.108, 0.009, 0.009, n=12)
_PATCH_CENTRE = (-0.06, 0.03)
_PATCH_RADIUS = 0.085  # patch spans ~15-19% of the object length

_PART_LOCATIONS: dict[str, tuple[float, float]] = {
    "back": (0.06, -0.075),
    "beak": (0.42, -0.07),
    "belly": (0.0, 0.16),
    "breast": (0.17, 0.07),
    "crown": (0.26, -0.175),
    "forehead": (0.34, -0.15),
    "left eye": (0.30, -0.10),
    "left wing": _PATCH_CENTRE,
    "nape": (0.19, -0.13),
    "tail": (-0.40, 0.01),
    "throat": (0.31, 0.0),
}

# Patch shapes in units of the patch radius (u along the body axis, v across it).
_SHAPES: dict[str, np.ndarray] = {
    "disc": _ellipse(0.0, 0.0, 1.0, 1.0, n=40),
    "square": _poly((-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)),
    "triangle": _poly((0.0, -1.1), (1.05, 0.8), (-1.05, 0.8)),
    "diamond": _poly((1.1, 0.0), (0.0, 1.1), (-1.1, 0.0), (0.0, -1.1)),
    "bar": _poly((-1.1, -0.5), (1.1, -0.5), (1.1, 0.5), (-1.1, 0.5)),
}


def _rect(u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    return _poly((u0, v0), (u1, v0), (u1, v1), (u0, v1))


def _pattern(shape: str, pattern: str) -> tuple[bool, list[tuple[np.ndarray, bool]]]:
    """(base is the part colour?, [(polygon in patch units, drawn in part colour?)])."""
    if pattern == "solid":
        return True, []
    if pattern == "ring":
        return True, [(_SHAPES[shape] * 0.5, False)]
    if pattern == "striped":
        w = 2.0 / 5.0
        return False, [(_rect((k - 0.5) * w, -1.3, (k + 0.5) * w, 1.3), True) for k in (-2, 0, 2)]
    if pattern == "dotted":
        centres = [
            (0.0, 0.0),
            (0.96, 0.0),
            (-0.96, 0.0),
            (0.48, 0.48),
            (-0.48, 0.48),
            (0.48, -0.48),
            (-0.48, -0.48),
        ]
        return False, [(_ellipse(cu, cv, 0.22, 0.22, n=16), True) for cu, cv in centres]
    if pattern == "checkered":
        # Coarse 2x2 checks (cells of one radius), so it stays distinct from the dotted lattice when small.
        cells = [
            (_rect(i, j, i + 1, j + 1), True) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0
        ]
        return False, cells
    raise ValueError(f"pattern: expected one of {PART_PATTERNS}, got {pattern!r}")


# ------------------------------------------------------------------------------------------ rendering


@dataclass
class BirdAnnotation:
    """Where the bird is: ``bbox`` (x, y, width, height in pixels, CUB convention), drawn ``parts``
    (CUB part name -> image pixel (x, y)) and the wing patch radius in pixels."""

    bbox: tuple[float, float, float, float]
    parts: dict[str, tuple[float, float]] = field(default_factory=dict)
    part_radius: float = 0.0


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _muted(rng: np.random.Generator) -> tuple[int, int, int]:
    return _rgb(rng.uniform(0.0, 1.0), rng.uniform(0.03, 0.28), rng.uniform(0.25, 0.85))


def _scaled(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * f)))) for c in rgb)  # type: ignore[return-value]


def _lighter(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(round(c + (255 - c) * f)) for c in rgb)  # type: ignore[return-value]


def _pts(a: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in a]


def _background(rng: np.random.Generator, side: int, clutter: int) -> Image.Image:
    phi = rng.uniform(0.0, 2.0 * math.pi)
    c1, c2 = np.asarray(_muted(rng), float), np.asarray(_muted(rng), float)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    t = xx * math.cos(phi) + yy * math.sin(phi)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    arr = c1 + (c2 - c1) * t[..., None]
    canvas = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(clutter):
        kind = int(rng.integers(0, 3))
        colour = _muted(rng)
        cx, cy = rng.uniform(0.0, side, size=2)
        if kind == 0:  # ellipse
            a, b = rng.uniform(0.03, 0.18, size=2) * side
            draw.polygon(_pts(_ellipse(cx, cy, a, b, rng.uniform(0.0, math.pi))), fill=colour)
        elif kind == 1:  # line
            length, ang = rng.uniform(0.1, 0.5) * side, rng.uniform(0.0, math.pi)
            dx, dy = 0.5 * length * math.cos(ang), 0.5 * length * math.sin(ang)
            width = max(1, int(round(rng.uniform(0.005, 0.02) * side)))
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=colour, width=width)
        else:  # irregular polygon
            n = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0.0, 2.0 * math.pi, size=n))
            radii = rng.uniform(0.04, 0.18) * side * rng.uniform(0.5, 1.0, size=n)
            poly = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
            draw.polygon(_pts(poly), fill=colour)
    return canvas


def render_bird(
    rng: np.random.Generator,
    class_index: int,
    size: int,
    *,
    clutter: int = 12,
    length_range: tuple[float, float] = (0.35, 0.70),
    patch_scale: float = 1.0,
) -> tuple[Image.Image, BirdAnnotation]:
    """Render one RGB ``size`` x ``size`` bird of class ``class_index`` on a cluttered background.

    Every random draw is independent of the class, so the same ``rng`` state gives the same image for any
    two classes except around the wing patch. The object length is ``length_range`` (default 35-70%) of
    the side, rotation is uniform, the bird may be mirrored, and it lies fully inside the image whenever it
    fits (a bird longer than about 90% of the side may touch the border at some angles). ``patch_scale``
    multiplies the wing patch radius (1.0: ~15-19% of the object length; small images want a larger patch).
    Drawn at 2x, then downsampled with LANCZOS.
    """
    spec = class_attributes(class_index)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size: expected an integer >= 16 (pixels), got {size!r}")
    if isinstance(clutter, bool) or not isinstance(clutter, (int, np.integer)) or clutter < 0:
        raise ValueError(f"clutter: expected an integer >= 0, got {clutter!r}")
    try:
        len_lo, len_hi = (float(v) for v in length_range)
    except (TypeError, ValueError):
        len_lo = len_hi = float("nan")
    if not 0.0 < len_lo <= len_hi <= 1.0:
        raise ValueError(
            f"length_range: expected (low, high) with 0 < low <= high <= 1, got {length_range!r}"
        )
    if isinstance(patch_scale, bool) or not isinstance(patch_scale, (int, float)) or not patch_scale > 0:
        raise ValueError(f"patch_scale: expected a number > 0, got {patch_scale!r}")
    side = 2 * int(size)
    canvas = _background(rng, side, int(clutter))

    # Pose and appearance (class independent).
    length = rng.uniform(len_lo, len_hi) * side
    angle = rng.uniform(0.0, 2.0 * math.pi)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    body = _rgb(rng.uniform(0.03, 0.14), rng.uniform(0.15, 0.55), rng.uniform(0.30, 0.75))
    beak = _rgb(rng.uniform(0.06, 0.14), rng.uniform(0.05, 0.35), rng.uniform(0.12, 0.55))
    pos_u, pos_v = rng.uniform(0.0, 1.0, size=2)

    cos_a, sin_a = math.cos(angle), math.sin(angle)
    rot = np.array([[cos_a, -sin_a], [sin_a, cos_a]]) * length

    def place(p: np.ndarray) -> np.ndarray:
        q = np.asarray(p, dtype=np.float64).reshape(-1, 2) * np.array([1.0, mirror])
        return q @ rot.T

    shapes = [
        (_TAIL, _scaled(body, 0.8)),
        (_BODY, body),
        (_BELLY, _lighter(body, 0.35)),
        (_HEAD, body),
        (_BEAK, beak),
        (_WING, _scaled(body, 0.72)),
    ]
    placed = [place(p) for p, _ in shapes]
    allpts = np.concatenate(placed)
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    margin = 4.0  # 2 px at the output resolution
    span_lo, span_hi = margin - lo, side - margin - hi
    offset = np.where(
        span_hi > span_lo, span_lo + np.array([pos_u, pos_v]) * (span_hi - span_lo), (span_lo + span_hi) / 2.0
    )

    draw = ImageDraw.Draw(canvas)
    for poly, (_, colour) in zip(placed, shapes, strict=True):
        draw.polygon(_pts(poly + offset), fill=colour)

    # The discriminative wing patch: pattern layer composited through the shape mask.
    radius = _PATCH_RADIUS * float(patch_scale)
    centre = np.asarray(_PATCH_CENTRE)
    outline = place(centre + radius * _SHAPES[spec.shape]) + offset
    base_is_part, extras = _pattern(spec.shape, spec.pattern)
    lum = 0.299 * spec.rgb[0] + 0.587 * spec.rgb[1] + 0.114 * spec.rgb[2]
    contrast = (25, 25, 25) if lum > 128 else (240, 240, 235)
    x0, y0 = (np.floor(outline.min(axis=0)) - 2).astype(int)
    x1, y1 = (np.ceil(outline.max(axis=0)) + 2).astype(int)
    shift = np.array([x0, y0], dtype=np.float64)
    layer = Image.new("RGB", (int(x1 - x0), int(y1 - y0)), spec.rgb if base_is_part else contrast)
    layer_draw = ImageDraw.Draw(layer)
    for poly, in_part_colour in extras:
        pts = place(centre + radius * poly) + offset - shift
        layer_draw.polygon(_pts(pts), fill=spec.rgb if in_part_colour else contrast)
    mask = Image.new("L", layer.size, 0)
    ImageDraw.Draw(mask).polygon(_pts(outline - shift), fill=255)
    canvas.paste(layer, (int(x0), int(y0)), mask)

    draw.polygon(_pts(place(_EYE) + offset), fill=(12, 12, 12))
    draw.polygon(_pts(place(_EYE_GLINT) + offset), fill=(235, 235, 235))

    image = canvas.resize((int(size), int(size)), Image.Resampling.LANCZOS)
    bx0, by0 = (lo + offset) / 2.0
    bx1, by1 = (hi + offset) / 2.0
    parts = {}
    for name, xy in _PART_LOCATIONS.items():
        px, py = (place(np.asarray(xy))[0] + offset) / 2.0
        parts[name] = (float(px), float(py))
    bbox = (float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0))
    return image, BirdAnnotation(bbox=bbox, parts=parts, part_radius=float(radius * length / 2.0))


def image_rng(seed: int, *key: int) -> np.random.Generator:
    """Independent generator for one image, derived from ``seed`` and integer ``key`` (e.g. class, k)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(k) for k in key)]))


# ------------------------------------------------------------------------------------------ CUB writer


def _check_int(name: str, value: object, lo: int, hi: int | None, what: str) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):  # type: ignore[operator]
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


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
    classes = _check_int("classes", classes, 1, NUM_CLASSES, f"an integer in 1..{NUM_CLASSES}")
    per_class = _check_int("per_class", per_class, 1, None, "an integer >= 1")
    size = _check_int("size", size, 32, None, "an integer >= 32 (pixels)")
    seed = _check_int("seed", seed, 0, None, "an integer >= 0")
    if (
        isinstance(train_fraction, bool)
        or not isinstance(train_fraction, (int, float))
        or not (0.0 <= float(train_fraction) <= 1.0)
    ):
        raise ValueError(f"train_fraction: expected a number in [0, 1], got {train_fraction!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: expected a directory path, got the existing file {out}")
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
        "generator": "fgvc_lib.data.synthetic",
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
            image.save(root / "images" / rel, format="JPEG", quality=90)
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
