"""Scenes for the synthetic multi-label set: people, portraits, babies, cars, dogs, trees, flowers, birds,
night, sea, river and clouds drawn with the shared renderer (:mod:`fgvc_lib.data.synth.render`).

:func:`render_scene` draws one image showing a given set of the 14 labels of
:data:`fgvc_lib.data.multilabel.LABELS` and returns one box per label; the writer
(:mod:`fgvc_lib.data.synth.multilabel`) decides which labels each image carries.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from fgvc_lib.data.multilabel import LABELS, Box
from fgvc_lib.data.synth.render import (
    NUM_CLASSES,
    as_points,
    background,
    ellipse,
    hsv_rgb,
    lighter,
    muted,
    rect,
    render_bird,
    scaled,
)

_SKIN = ((255, 224, 196), (241, 194, 161), (224, 172, 130), (198, 134, 94), (141, 85, 54), (96, 60, 40))
_HAIR = ((30, 22, 18), (70, 45, 25), (120, 80, 40), (205, 165, 95), (150, 60, 30))


def _place(box: Box, pts: np.ndarray, mirror: bool = False) -> list[tuple[float, float]]:
    """Unit-box points (u right, v down, in [0, 1]) -> canvas points inside ``box`` (x, y, w, h)."""
    x, y, w, h = box
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    u = 1.0 - p[:, 0] if mirror else p[:, 0]
    return as_points(np.stack([x + u * w, y + p[:, 1] * h], axis=1))


def _oval(cu: float, cv: float, a: float, b: float, tilt: float = 0.0, n: int = 32) -> np.ndarray:
    return ellipse(cu, cv, a, b, tilt, n)


def _warm(rng: np.random.Generator) -> tuple[int, int, int]:
    hue = rng.choice([0.0, 0.02, 0.9, 0.94, 0.97, 0.83])
    return hsv_rgb(hue + rng.uniform(-0.015, 0.015), rng.uniform(0.65, 0.95), rng.uniform(0.7, 0.98))


def _cool(rng: np.random.Generator) -> tuple[int, int, int]:
    return hsv_rgb(rng.uniform(0.52, 0.68), rng.uniform(0.6, 0.95), rng.uniform(0.45, 0.85))


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

    legs = skin if kind == "female" else scaled(_cool(rng) if kind == "male" else muted(rng), 0.45)
    for u in (0.38, 0.54):
        fill(rect(u, 0.58, u + 0.09, 1.0), legs)
    arm = skin
    if kind == "female":
        dress = _warm(rng)
        fill(_oval(head[0], 0.2, 1.35 * r, 0.12), hair)  # long hair behind the head and shoulders
        fill(rect(head[0] - 1.3 * r, 0.13, head[0] + 1.3 * r, 0.38), hair)
        fill(np.array([(0.3, 0.24), (0.7, 0.24), (0.98, 0.78), (0.02, 0.78)]), dress)
    elif kind == "male":
        shirt = _cool(rng)
        arm = shirt
        fill(rect(0.24, 0.24, 0.76, 0.62), shirt)
    else:
        coat = muted(rng)
        arm = coat
        fill(rect(0.22, 0.24, 0.78, 0.74), coat)
    for side in (-1, 1):
        u0 = 0.5 + side * 0.3
        fill(
            np.array(
                [(u0, 0.25), (u0 + side * 0.12, 0.27), (u0 + side * 0.2, 0.55), (u0 + side * 0.1, 0.56)]
            ),
            arm,
        )
    fill(rect(0.45, 0.17, 0.55, 0.26), skin)  # neck
    fill(_oval(*head, r, 0.11), skin)
    if kind == "male":
        cap = _oval(head[0], head[1], 1.08 * r, 0.12)
        fill(cap[cap[:, 1] < head[1] - 0.035], hair)
    elif kind == "female":
        fill(_oval(head[0], 0.05, 1.1 * r, 0.055), hair)  # fringe
    else:
        hat = scaled(muted(rng), 0.6)
        fill(rect(head[0] - 1.7 * r, 0.045, head[0] + 1.7 * r, 0.075), hat)
        fill(rect(head[0] - 0.9 * r, -0.01, head[0] + 0.9 * r, 0.06), hat)
    for du in (-0.4, 0.4):
        fill(_oval(head[0] + du * r, 0.115, 0.13 * r, 0.013, n=10), (20, 20, 20))


def _draw_portrait(draw: ImageDraw.ImageDraw, rng: np.random.Generator, side: float, kind: str) -> Box:
    """One large face filling the frame; female: long hair and a warm collar, male: short hair (sometimes a
    beard) and a cool collar, neutral: a hat. Returns the head box (hair and hat included)."""
    skin, hair = _SKIN[int(rng.integers(len(_SKIN)))], _HAIR[int(rng.integers(len(_HAIR)))]
    cx, cy = side * rng.uniform(0.42, 0.58), side * rng.uniform(0.4, 0.5)
    rx = side * rng.uniform(0.19, 0.25)
    ry = rx * rng.uniform(1.2, 1.35)
    garment = _warm(rng) if kind == "female" else _cool(rng) if kind == "male" else muted(rng)
    shoulder_y = cy + 0.85 * ry
    draw.polygon(
        as_points(
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
        draw.polygon(as_points(ellipse(cx, cy - 0.1 * ry, 1.35 * rx, 1.2 * ry)), fill=hair)
        draw.rectangle((cx - 1.35 * rx, cy, cx + 1.35 * rx, cy + 1.6 * ry), fill=hair)
        top, x0, x1 = cy - 1.3 * ry, cx - 1.35 * rx, cx + 1.35 * rx
    draw.rectangle((cx - 0.45 * rx, cy + 0.5 * ry, cx + 0.45 * rx, shoulder_y + 0.1 * ry), fill=skin)
    draw.polygon(as_points(ellipse(cx, cy, rx, ry)), fill=skin)
    if kind == "male":
        cap = ellipse(cx, cy, 1.07 * rx, 1.07 * ry, n=64)
        draw.polygon(as_points(cap[cap[:, 1] < cy - 0.45 * ry]), fill=hair)
        if rng.random() < 0.4:  # beard
            beard = ellipse(cx, cy, rx, ry, n=64)
            draw.polygon(as_points(beard[beard[:, 1] > cy + 0.3 * ry]), fill=hair)
        top = cy - 1.12 * ry
    elif kind == "female":
        draw.polygon(as_points(ellipse(cx, cy - 0.78 * ry, 0.95 * rx, 0.35 * ry)), fill=hair)
    else:
        hat = scaled(muted(rng), 0.6)
        draw.rectangle((cx - 1.5 * rx, cy - 0.62 * ry, cx + 1.5 * rx, cy - 0.48 * ry), fill=hat)
        draw.rectangle((cx - 0.95 * rx, cy - 1.35 * ry, cx + 0.95 * rx, cy - 0.55 * ry), fill=hat)
        top, x0, x1 = cy - 1.35 * ry, cx - 1.5 * rx, cx + 1.5 * rx
    for d in (-1, 1):
        ex, ey = cx + d * 0.4 * rx, cy - 0.12 * ry
        draw.polygon(as_points(ellipse(ex, ey, 0.2 * rx, 0.1 * ry)), fill=(245, 245, 245))
        draw.polygon(as_points(ellipse(ex, ey, 0.09 * rx, 0.09 * rx)), fill=(40, 30, 25))
        draw.line([(ex - 0.22 * rx, ey - 0.2 * ry), (ex + 0.22 * rx, ey - 0.22 * ry)], fill=hair, width=3)
    draw.line([(cx, cy - 0.05 * ry), (cx + 0.08 * rx, cy + 0.22 * ry)], fill=scaled(skin, 0.7), width=3)
    lips = (200, 40, 70) if kind == "female" else scaled(skin, 0.6)
    draw.polygon(as_points(ellipse(cx, cy + 0.48 * ry, 0.3 * rx, 0.07 * ry)), fill=lips)
    bottom = cy + (1.6 if kind == "female" else 1.0) * ry
    return (x0, top, x1 - x0, bottom - top)


def _draw_baby(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box) -> None:
    """A small round pink figure: round pink body with stubby limbs, round head."""
    pink = hsv_rgb(rng.uniform(0.93, 0.99), rng.uniform(0.28, 0.45), rng.uniform(0.93, 1.0))
    skin = lighter(_SKIN[int(rng.integers(3))], 0.2)
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
    body = hsv_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.6, 0.95), rng.uniform(0.5, 0.95))
    mirror = bool(rng.random() < 0.5)
    _, _, w, h = box
    k = w / h

    def fill(pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        draw.polygon(_place(box, pts, mirror), fill=colour)

    fill(np.array([(0.22, 0.38), (0.3, 0.04), (0.7, 0.04), (0.82, 0.38)]), scaled(body, 0.85))
    glass = (170, 205, 230)
    fill(np.array([(0.29, 0.36), (0.34, 0.1), (0.49, 0.1), (0.49, 0.36)]), glass)
    fill(np.array([(0.53, 0.36), (0.53, 0.1), (0.67, 0.1), (0.76, 0.36)]), glass)
    fill(rect(0.0, 0.36, 1.0, 0.8), body)
    fill(rect(0.93, 0.45, 1.0, 0.55), (255, 235, 120))
    for cu in (0.22, 0.78):
        fill(_oval(cu, 0.8, 0.2 / k, 0.2), (20, 20, 20))
        fill(_oval(cu, 0.8, 0.09 / k, 0.09), (170, 170, 170))


def _draw_dog(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box) -> None:
    """A brown four-legged silhouette: body, legs, head with ear and snout, tail."""
    brown = hsv_rgb(rng.uniform(0.04, 0.1), rng.uniform(0.45, 0.8), rng.uniform(0.3, 0.62))
    mirror = bool(rng.random() < 0.5)

    def fill(pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        draw.polygon(_place(box, pts, mirror), fill=colour)

    dark = scaled(brown, 0.65)
    fill(np.array([(0.16, 0.36), (0.02, 0.08), (0.07, 0.06), (0.2, 0.32)]), brown)  # tail
    for u in (0.2, 0.32, 0.58, 0.7):
        fill(rect(u, 0.45, u + 0.08, 1.0), brown if u in (0.2, 0.58) else dark)
    fill(_oval(0.45, 0.45, 0.32, 0.18), brown)
    fill(np.array([(0.62, 0.4), (0.74, 0.14), (0.86, 0.2), (0.76, 0.5)]), brown)  # neck
    fill(_oval(0.8, 0.22, 0.12, 0.14), brown)
    fill(_oval(0.92, 0.28, 0.08, 0.07), brown)  # snout
    fill(np.array([(0.72, 0.12), (0.8, 0.1), (0.74, 0.4), (0.68, 0.36)]), dark)  # ear
    fill(_oval(0.99, 0.26, 0.025, 0.03, n=10), (15, 15, 15))
    fill(_oval(0.83, 0.18, 0.02, 0.025, n=10), (15, 15, 15))


def _draw_tree(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box) -> None:
    """A green crown (round clusters or a conifer) on a brown trunk."""
    green = hsv_rgb(rng.uniform(0.24, 0.4), rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.7))
    trunk = hsv_rgb(rng.uniform(0.05, 0.1), rng.uniform(0.5, 0.75), rng.uniform(0.25, 0.45))
    _, _, w, h = box
    k = h / w

    def fill(pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        draw.polygon(_place(box, pts), fill=colour)

    fill(rect(0.43, 0.5, 0.57, 1.0), trunk)
    if rng.random() < 0.35:
        for i, (v0, v1, half) in enumerate(((0.32, 0.7, 0.5), (0.16, 0.5, 0.4), (0.0, 0.3, 0.3))):
            fill(np.array([(0.5, v0), (0.5 + half, v1), (0.5 - half, v1)]), scaled(green, 1.0 - 0.08 * i))
    else:
        for cu, cv, r in (
            (0.3, 0.42, 0.2),
            (0.7, 0.42, 0.2),
            (0.5, 0.3, 0.28),
            (0.35, 0.2, 0.18),
            (0.65, 0.2, 0.18),
        ):
            fill(_oval(cu, cv, r, r / k), scaled(green, rng.uniform(0.85, 1.1)))


def _draw_flower(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: Box) -> None:
    """Petals around a centre disc on a green stem with a leaf."""
    petal = hsv_rgb(rng.choice([0.0, 0.83, 0.93, 0.12, 0.75]), rng.uniform(0.55, 0.95), rng.uniform(0.8, 1.0))
    if rng.random() < 0.15:
        petal = (250, 250, 245)
    centre = (245, 200, 20) if rng.random() < 0.6 else (110, 60, 20)
    _, _, w, h = box
    k = h / w
    head_v = 0.5 / k  # the head is a disc of diameter w at the top of the box

    def fill(pts: np.ndarray, colour: tuple[int, int, int]) -> None:
        draw.polygon(_place(box, pts), fill=colour)

    green = hsv_rgb(rng.uniform(0.25, 0.38), rng.uniform(0.55, 0.85), rng.uniform(0.35, 0.6))
    fill(rect(0.47, head_v, 0.53, 1.0), green)
    fill(_oval(0.66, 0.5 * (1.0 + head_v), 0.14, 0.05, tilt=-0.5), green)
    n = int(rng.integers(5, 9))
    turn = rng.uniform(0.0, 2.0 * math.pi)
    for i in range(n):
        a = turn + 2.0 * math.pi * i / n
        pts = ellipse(0.28 * math.cos(a), 0.28 * math.sin(a), 0.22, 0.11, a)
        fill(np.stack([0.5 + pts[:, 0], head_v + pts[:, 1] / k], axis=1), petal)
    fill(_oval(0.5, head_v, 0.14, 0.14 / k), centre)


def _bird_sprite(rng: np.random.Generator, side: int) -> tuple[Image.Image, Image.Image, Box]:
    """A :func:`render_bird` bird of a random class cut out of its (clutter-free) background: (RGB image,
    mask, bird box). The background is re-rendered from a copy of the generator, because
    ``render_bird`` draws it first, with ``background(rng, 2 * size, clutter)``."""
    class_index = int(rng.integers(NUM_CLASSES))
    probe = copy.deepcopy(rng)
    image, ann = render_bird(rng, class_index, side, clutter=0, length_range=(0.8, 0.95), patch_scale=1.3)
    bg = background(probe, 2 * side, 0).resize((side, side), Image.Resampling.LANCZOS)
    diff = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(bg, dtype=np.int16)).max(axis=2)
    mask = Image.fromarray(np.where(diff > 6, 255, 0).astype(np.uint8), "L")
    return image, mask, ann.bbox


# Object kinds drawn in ground slots: (height range as a share of the side, width / height).
# Large enough that each kind stays recognisable at a 96 px input and after a random crop.
_OBJECTS: dict[str, tuple[tuple[float, float], float]] = {
    "person": ((0.68, 0.9), 0.42),
    "tree": ((0.62, 0.86), 0.62),
    "car": ((0.3, 0.42), 2.0),
    "dog": ((0.36, 0.5), 1.45),
    "flower": ((0.46, 0.62), 0.6),
    "baby": ((0.4, 0.54), 0.9),
    "bird": ((0.52, 0.72), 1.0),
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
            np.asarray(lighter(muted(rng), 0.5), float),
            np.asarray(lighter(muted(rng), 0.3), float),
        )
        for yy in range(int(horizon)):
            t = yy / max(horizon, 1.0)
            draw.line([(0, yy), (side, yy)], fill=tuple(int(c) for c in top + (bottom - top) * t))
    if rng.random() < 0.3:
        xs = np.linspace(-0.05, 1.05, 7) * side
        ys = horizon + rng.uniform(-0.12, 0.08, size=xs.size) * side
        draw.polygon(
            as_points(np.concatenate([np.stack([xs, ys], 1), [(side * 1.05, side), (-0.05 * side, side)]])),
            fill=muted(rng),
        )
    if rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 4))):
            bw, bh = rng.uniform(0.1, 0.22) * side, rng.uniform(0.2, 0.5) * side
            bx, base = rng.uniform(0, side - bw), horizon + rng.uniform(0.0, 0.15) * side
            wall = muted(rng)
            draw.rectangle((bx, base - bh, bx + bw, base), fill=wall)
            window = scaled(wall, 0.6)
            for wy in np.arange(base - bh + 0.06 * bh, base - 0.1 * bh, 0.12 * bh):
                for wx in np.arange(bx + 0.12 * bw, bx + bw - 0.15 * bw, 0.3 * bw):
                    draw.rectangle((wx, wy, wx + 0.14 * bw, wy + 0.05 * bh), fill=window)


def _night(canvas: Image.Image, rng: np.random.Generator, horizon: float) -> Box:
    """Dark blue-black sky with stars (and sometimes a moon) above ``horizon``; the ground is darkened."""
    side = canvas.width
    arr = np.asarray(canvas, dtype=np.float64).copy()
    arr[int(horizon) :] *= rng.uniform(0.35, 0.55)
    top = np.asarray(hsv_rgb(rng.uniform(0.6, 0.7), rng.uniform(0.5, 0.9), rng.uniform(0.03, 0.1)), float)
    low = np.asarray(hsv_rgb(rng.uniform(0.6, 0.68), rng.uniform(0.5, 0.9), rng.uniform(0.15, 0.3)), float)
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
    far, near = (
        np.asarray(hsv_rgb(hue, sat * 0.8, val), float),
        np.asarray(hsv_rgb(hue, sat, val * 0.75), float),
    )
    for yy in range(int(horizon), side):
        t = (yy - horizon) / max(side - horizon, 1.0)
        draw.line([(0, yy), (side, yy)], fill=tuple(int(c) for c in far + (near - far) * t))
    wave = lighter(hsv_rgb(hue, sat, val), 0.45)
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
    water = hsv_rgb(rng.uniform(0.53, 0.62), rng.uniform(0.5, 0.85), rng.uniform(0.5, 0.85))
    bank = hsv_rgb(rng.uniform(0.08, 0.3), rng.uniform(0.2, 0.5), rng.uniform(0.35, 0.6))
    draw.line(as_points(np.concatenate([poly, poly[:1]])), fill=bank, width=max(2, side // 40))
    draw.polygon(as_points(poly), fill=water)
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
        white = hsv_rgb(rng.uniform(0.5, 0.7), rng.uniform(0.0, 0.05), rng.uniform(0.94, 1.0))
        shade = scaled(white, 0.85)
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

    Drawn at 2x and downsampled (LANCZOS); the cluttered gradient background (the renderer's) is drawn at 1x
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
    canvas = background(rng, int(size), clutter).resize((side, side), Image.Resampling.BILINEAR)
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
