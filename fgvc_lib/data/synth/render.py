"""The shared renderer of every synthetic data set: class design, drawing primitives, birds, RNG, JPEG.

Every class shares one bird body (ellipse body, round head, beak, tail, wing, eye) whose colour, pose and
background vary per image with the same distribution for all classes. A class differs from another only in
a small patch on the wing (colour x shape x pattern = 8 x 5 x 5 = 200 classes), so recognising the class
needs attention to one part, as in real fine-grained recognition.

Public pieces used by the writers (:mod:`~fgvc_lib.data.synth.cub`, ``cifar``, ``inat``, ``multilabel``)
and the scene drawing (:mod:`~fgvc_lib.data.synth.scene`):

* class design: :data:`NUM_CLASSES`, :data:`PART_COLOURS`, :data:`PART_SHAPES`, :data:`PART_PATTERNS`,
  :func:`class_attributes` (:class:`PartSpec`), :data:`DISCRIMINATIVE_PART`;
* drawing primitives: :func:`ellipse`, :func:`rect`, :func:`as_points`, the colour helpers
  :func:`hsv_rgb`, :func:`muted`, :func:`scaled`, :func:`lighter`, and the cluttered :func:`background`;
* :func:`render_bird` (image + :class:`BirdAnnotation`);
* :func:`image_rng` (one independent generator per image), :func:`save_jpeg` and :func:`check_int`.

Nothing here writes a data set; the writers own their layouts.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Bump when the drawings change: embedded data sets live in folders named with it, so they are drawn anew.
# 2: birds 62-90 % of the frame, upright (max_tilt 35 deg), 1.5x wing patch, lighter backgrounds.
RENDER_VERSION = 2
NUM_CLASSES = 200
"""Number of distinct synthetic classes (8 colours x 5 shapes x 5 patterns)."""

DISCRIMINATIVE_PART = "left wing"
"""The (CUB) part whose patch carries the class identity."""

JPEG_QUALITY = 90
"""Quality of every JPEG the synthetic writers save."""

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


# ------------------------------------------------------------------------------------------ geometry
# The bird lives in a canonical frame: beak tip at x=+0.5, tail tip at x=-0.5 (object length 1), y down.


def ellipse(cx: float, cy: float, a: float, b: float, tilt: float = 0.0, n: int = 48) -> np.ndarray:
    """``n`` x 2 points of an ellipse centred at (cx, cy) with half-axes ``a``, ``b``, rotated by ``tilt``."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    x, y = a * np.cos(t), b * np.sin(t)
    c, s = math.cos(tilt), math.sin(tilt)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _poly(*pts: tuple[float, float]) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64)


_BODY = ellipse(-0.02, 0.05, 0.26, 0.15)
_BELLY = ellipse(0.03, 0.11, 0.15, 0.07)
_HEAD = ellipse(0.27, -0.08, 0.11, 0.11)
_BEAK = _poly((0.35, -0.12), (0.50, -0.065), (0.35, -0.02))
_TAIL = _poly((-0.22, -0.02), (-0.50, -0.09), (-0.46, 0.01), (-0.50, 0.11), (-0.22, 0.10))
_WING = ellipse(-0.07, 0.02, 0.22, 0.10, tilt=0.08)
_EYE = ellipse(0.30, -0.10, 0.028, 0.028, n=24)
_EYE_GLINT = ellipse(0.308, -0.108, 0.009, 0.009, n=12)
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
    "disc": ellipse(0.0, 0.0, 1.0, 1.0, n=40),
    "square": _poly((-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)),
    "triangle": _poly((0.0, -1.1), (1.05, 0.8), (-1.05, 0.8)),
    "diamond": _poly((1.1, 0.0), (0.0, 1.1), (-1.1, 0.0), (0.0, -1.1)),
    "bar": _poly((-1.1, -0.5), (1.1, -0.5), (1.1, 0.5), (-1.1, 0.5)),
}


def rect(u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    """4 x 2 corner points of the axis-aligned rectangle from (u0, v0) to (u1, v1)."""
    return _poly((u0, v0), (u1, v0), (u1, v1), (u0, v1))


def _pattern(shape: str, pattern: str) -> tuple[bool, list[tuple[np.ndarray, bool]]]:
    """(base is the part colour?, [(polygon in patch units, drawn in part colour?)])."""
    if pattern == "solid":
        return True, []
    if pattern == "ring":
        return True, [(_SHAPES[shape] * 0.5, False)]
    if pattern == "striped":
        w = 2.0 / 5.0
        return False, [(rect((k - 0.5) * w, -1.3, (k + 0.5) * w, 1.3), True) for k in (-2, 0, 2)]
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
        return False, [(ellipse(cu, cv, 0.22, 0.22, n=16), True) for cu, cv in centres]
    if pattern == "checkered":
        # Coarse 2x2 checks (cells of one radius), so it stays distinct from the dotted lattice when small.
        cells = [
            (rect(i, j, i + 1, j + 1), True) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0
        ]
        return False, cells
    raise ValueError(f"pattern: expected one of {PART_PATTERNS}, got {pattern!r}")


# ------------------------------------------------------------------------------------------ colours


def hsv_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    """8-bit RGB of an HSV colour (hue taken modulo 1)."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def muted(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random low-saturation, mid-to-light colour (value 0.4-0.9: backgrounds, clutter); draws three numbers
    from ``rng``."""
    return hsv_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.03, 0.28), rng.uniform(0.4, 0.9))


def scaled(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    """``rgb`` times ``f`` (darker for ``f < 1``), clipped to 0..255."""
    return tuple(int(min(255, max(0, round(c * f)))) for c in rgb)  # type: ignore[return-value]


def lighter(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    """``rgb`` moved the share ``f`` of the way towards white."""
    return tuple(int(round(c + (255 - c) * f)) for c in rgb)  # type: ignore[return-value]


def as_points(a: np.ndarray) -> list[tuple[float, float]]:
    """An N x 2 array as the list of (x, y) float pairs that ``ImageDraw`` takes."""
    return [(float(x), float(y)) for x, y in a]


def background(rng: np.random.Generator, side: int, clutter: int) -> Image.Image:
    """A ``side`` x ``side`` RGB linear gradient of two muted colours with ``clutter`` random muted shapes
    (ellipses, lines, polygons); every draw comes from ``rng``, in a fixed order."""
    phi = rng.uniform(0.0, 2.0 * math.pi)
    c1, c2 = np.asarray(muted(rng), float), np.asarray(muted(rng), float)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    t = xx * math.cos(phi) + yy * math.sin(phi)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    arr = c1 + (c2 - c1) * t[..., None]
    canvas = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(clutter):
        kind = int(rng.integers(0, 3))
        colour = muted(rng)
        cx, cy = rng.uniform(0.0, side, size=2)
        if kind == 0:  # ellipse
            a, b = rng.uniform(0.03, 0.18, size=2) * side
            draw.polygon(as_points(ellipse(cx, cy, a, b, rng.uniform(0.0, math.pi))), fill=colour)
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
            draw.polygon(as_points(poly), fill=colour)
    return canvas


# ------------------------------------------------------------------------------------------ birds


@dataclass
class BirdAnnotation:
    """Where the bird is: ``bbox`` (x, y, width, height in pixels, CUB convention), drawn ``parts``
    (CUB part name -> image pixel (x, y)) and the wing patch radius in pixels."""

    bbox: tuple[float, float, float, float]
    parts: dict[str, tuple[float, float]] = field(default_factory=dict)
    part_radius: float = 0.0


def render_bird(
    rng: np.random.Generator,
    class_index: int,
    size: int,
    *,
    clutter: int = 12,
    length_range: tuple[float, float] = (0.62, 0.9),
    patch_scale: float = 1.5,
    max_tilt: float = 35.0,
) -> tuple[Image.Image, BirdAnnotation]:
    """Render one RGB ``size`` x ``size`` bird of class ``class_index`` on a cluttered background.

    Every random draw is independent of the class, so the same ``rng`` state gives the same image for any
    two classes except around the wing patch. The object length (beak to tail) is ``length_range``
    (default 62-90%) of the side; the bird faces left or right (equal chances), is tilted by up to
    ``max_tilt`` degrees either way (default 35: a roughly upright bird; 180: any rotation) and lies fully
    inside the image whenever it fits (a bird longer than about 90% of the side may touch the border at
    steep tilts). ``patch_scale`` multiplies the wing
    patch radius (1.0: a patch ~15-19% of the object length; the default 1.5: ~23-28%, about 20 px wide on
    a 96 px image at the default length, large enough for a stride-32 network to read shape and pattern).
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
    if (
        isinstance(max_tilt, bool)
        or not isinstance(max_tilt, (int, float))
        or not 0.0 <= float(max_tilt) <= 180.0
    ):
        raise ValueError(f"max_tilt: expected a number of degrees in [0, 180], got {max_tilt!r}")
    side = 2 * int(size)
    canvas = background(rng, side, int(clutter))

    # Pose and appearance (class independent).
    length = rng.uniform(len_lo, len_hi) * side
    tilt = math.radians(float(max_tilt))
    angle = rng.uniform(-tilt, tilt)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    if mirror < 0:  # mirrored across the body axis and turned by half a turn: upright, facing left
        angle += math.pi
    body = hsv_rgb(rng.uniform(0.03, 0.14), rng.uniform(0.15, 0.55), rng.uniform(0.30, 0.75))
    beak = hsv_rgb(rng.uniform(0.06, 0.14), rng.uniform(0.05, 0.35), rng.uniform(0.12, 0.55))
    pos_u, pos_v = rng.uniform(0.0, 1.0, size=2)

    cos_a, sin_a = math.cos(angle), math.sin(angle)
    rot = np.array([[cos_a, -sin_a], [sin_a, cos_a]]) * length

    def place(p: np.ndarray) -> np.ndarray:
        q = np.asarray(p, dtype=np.float64).reshape(-1, 2) * np.array([1.0, mirror])
        return q @ rot.T

    shapes = [
        (_TAIL, scaled(body, 0.8)),
        (_BODY, body),
        (_BELLY, lighter(body, 0.35)),
        (_HEAD, body),
        (_BEAK, beak),
        (_WING, scaled(body, 0.72)),
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
        draw.polygon(as_points(poly + offset), fill=colour)

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
        layer_draw.polygon(as_points(pts), fill=spec.rgb if in_part_colour else contrast)
    mask = Image.new("L", layer.size, 0)
    ImageDraw.Draw(mask).polygon(as_points(outline - shift), fill=255)
    canvas.paste(layer, (int(x0), int(y0)), mask)

    draw.polygon(as_points(place(_EYE) + offset), fill=(12, 12, 12))
    draw.polygon(as_points(place(_EYE_GLINT) + offset), fill=(235, 235, 235))

    image = canvas.resize((int(size), int(size)), Image.Resampling.LANCZOS)
    bx0, by0 = (lo + offset) / 2.0
    bx1, by1 = (hi + offset) / 2.0
    parts = {}
    for name, xy in _PART_LOCATIONS.items():
        px, py = (place(np.asarray(xy))[0] + offset) / 2.0
        parts[name] = (float(px), float(py))
    bbox = (float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0))
    return image, BirdAnnotation(bbox=bbox, parts=parts, part_radius=float(radius * length / 2.0))


# ------------------------------------------------------------------------------------------ randomness


def image_rng(seed: int, *key: int) -> np.random.Generator:
    """Independent generator for one image, derived from ``seed`` and integer ``key`` (e.g. class, k)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(k) for k in key)]))


# ------------------------------------------------------------------------------------------ files and checks


def save_jpeg(image: Image.Image, path: Path) -> None:
    """Save ``image`` as a JPEG (quality :data:`JPEG_QUALITY`) at ``path``, creating missing folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=JPEG_QUALITY)


def check_out_dir(out: object) -> Path:
    """``out`` as a Path; ValueError when it names an existing file (a writer needs a folder there)."""
    out = Path(out)  # type: ignore[arg-type]
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: expected a directory path, got the existing file {out}")
    return out


def check_int(name: str, value: object, lo: int, hi: int | None = None, what: str | None = None) -> int:
    """``value`` as an int when it is an integer (not a bool) in ``lo..hi`` (``hi`` None: no upper bound),
    else ``ValueError("<name>: expected <what>, got <value>")``; ``what`` defaults to the range in words."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):  # type: ignore[operator]
        if what is None:
            what = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return int(value)  # type: ignore[arg-type]
