"""Building blocks of the batched augmentation presets (:mod:`fgvc_lib.data.batch_presets`).

Per-sample random draws for a whole batch (:class:`Draw`), geometric ops as per-sample (B, 3, 3) inverse maps
composed into one ``grid_sample`` (:class:`Stage`, :func:`trace`, :func:`warp`, with PIL's fill-with-0 test per op),
and pointwise colour ops on float images in [0, 1] (ColorJitter's four ops, grayscale, PIL's HSV bytes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

STATS_GRID = 32  # contrast's mean is taken over at most this many points per side


# ------------------------------------------------------------------------------------------ random draws
class Draw:
    """Per-sample random draws for a batch of ``n``: one tensor per parameter, on ``device``, from ``generator``."""

    def __init__(self, n: int, device: torch.device, generator: torch.Generator | None):
        self.n, self.device, self.generator = n, device, generator

    def rand(self, *shape: int) -> Tensor:
        return torch.rand((self.n, *shape), device=self.device, generator=self.generator)

    def uniform(self, lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * self.rand(*shape)

    def coin(self, p: float) -> Tensor:
        """Bool per sample, True with probability ``p`` (``RandomApply`` / ``p`` of the random ops)."""
        return self.rand() < p

    def randint(self, low: Tensor | int, high: Tensor | int, *shape: int) -> Tensor:
        """Integers uniform in ``[low, high)`` (bounds per sample or scalar), as float."""
        low_t = torch.as_tensor(low, dtype=torch.float32, device=self.device)
        high_t = torch.as_tensor(high, dtype=torch.float32, device=self.device)
        v = low_t + torch.floor(self.rand(*shape) * (high_t - low_t))
        return torch.minimum(v, high_t - 1)

    def permutation(self, k: int) -> Tensor:
        """A uniformly random permutation of ``range(k)`` per sample, (n, k) long."""
        return self.rand(k).argsort(dim=1)


# ------------------------------------------------------------------------------------------ geometry
# Coordinates are PIL's continuous pixel coordinates: pixel (i, j) covers [j, j+1) x [i, i+1), its centre is
# (j + 0.5, i + 0.5). Every op is given by its inverse map (output coordinates -> input coordinates) as a (B, 3, 3)
# homography, which is exactly what PIL's Image.transform evaluates at the output pixel centres.
def _eye(n: int, device: torch.device) -> Tensor:
    return torch.eye(3, device=device).repeat(n, 1, 1)


def matrix(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    """(B, 3, 3) affine matrices [[a, b, c], [d, e, f], [0, 0, 1]] from per-sample entries."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, c, d, e, f, zero, zero, one], dim=1).view(-1, 3, 3)


def select_map(mask: Tensor, m: Tensor) -> Tensor:
    """``m`` where ``mask`` else the identity (the op is skipped for that sample)."""
    return torch.where(mask.view(-1, 1, 1), m, torch.eye(3, device=m.device, dtype=m.dtype))


def _about_centre(lin: Tensor, cx: float, cy: float) -> Tensor:
    """in = C + L (out - C) for per-sample 2x2 ``lin`` (B, 2, 2)."""
    a, b, d, e = lin[:, 0, 0], lin[:, 0, 1], lin[:, 1, 0], lin[:, 1, 1]
    return matrix(a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy)


def rotation(angle_deg: Tensor, size: int) -> Tensor:
    """``F.rotate`` / ``Image.rotate``: counter-clockwise by ``angle`` degrees about the image centre."""
    t = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(t), torch.sin(t)
    lin = torch.stack([cos, -sin, sin, cos], dim=1).view(-1, 2, 2)
    return _about_centre(lin, size / 2, size / 2)


def affine(angle_deg: Tensor, shear_x_deg: Tensor, size: int) -> Tensor:
    """``F.affine(angle, translate=0, scale=1, shear=(sx, 0))`` about the centre (torchvision's inverse matrix)."""
    rot, sx = torch.deg2rad(angle_deg), torch.deg2rad(shear_x_deg)
    a, c = torch.cos(rot), torch.sin(rot)
    b = -torch.cos(rot) * torch.tan(sx) - torch.sin(rot)
    d = -torch.sin(rot) * torch.tan(sx) + torch.cos(rot)
    lin = torch.stack([d, -b, -c, a], dim=1).view(-1, 2, 2)  # inverse of [[a, b], [c, d]] (det 1)
    return _about_centre(lin, size / 2, size / 2)


def hflip(n: int, size: int, device: torch.device) -> Tensor:
    m = _eye(n, device)
    m[:, 0, 0], m[:, 0, 2] = -1.0, float(size)
    return m


def vflip(n: int, size: int, device: torch.device) -> Tensor:
    m = _eye(n, device)
    m[:, 1, 1], m[:, 1, 2] = -1.0, float(size)
    return m


def _square_to_quad(quad: Tensor) -> Tensor:
    """Homographies mapping the unit square's corners (0,0), (1,0), (1,1), (0,1) to ``quad`` (B, 4, 2)."""
    x0, x1, x2, x3 = quad[..., 0].unbind(1)
    y0, y1, y2, y3 = quad[..., 1].unbind(1)
    sx, sy = x0 - x1 + x2 - x3, y0 - y1 + y2 - y3
    dx1, dx2, dy1, dy2 = x1 - x2, x3 - x2, y1 - y2, y3 - y2
    det = dx1 * dy2 - dx2 * dy1
    g = (sx * dy2 - dx2 * sy) / det
    h = (dx1 * sy - sx * dy1) / det
    one = torch.ones_like(g)
    rows = [x1 - x0 + g * x1, x3 - x0 + h * x3, x0, y1 - y0 + g * y1, y3 - y0 + h * y3, y0, g, h, one]
    return torch.stack(rows, dim=1).view(-1, 3, 3)


def perspective(draw: Draw, size: int, distortion_scale: float) -> Tensor:
    """``RandomPerspective``: its corner draw (``get_params``) and the map endpoints -> startpoints PIL applies."""
    half = size // 2
    bound = int(distortion_scale * half) + 1
    lo, hi = draw.randint(0, bound, 4, 2), draw.randint(size - bound, size, 4, 2)
    # topleft (lo, lo), topright (hi, lo), botright (hi, hi), botleft (lo, hi)
    pick_hi = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=torch.bool, device=draw.device)
    return perspective_to(torch.where(pick_hi, hi, lo), size)


def perspective_to(endpoints: Tensor, size: int) -> Tensor:
    """``F.perspective(startpoints=image corners, endpoints)``: the inverse map endpoints -> startpoints."""
    end = endpoints / size  # normalised by size: better conditioned
    last = (size - 1) / size
    start = torch.tensor([[0, 0], [last, 0], [last, last], [0, last]], device=end.device).expand_as(end)
    h = _square_to_quad(start) @ torch.linalg.inv(_square_to_quad(end))
    scale = torch.diag(torch.tensor([float(size), float(size), 1.0], device=end.device))
    return scale @ h @ torch.linalg.inv(scale)


def resized_crop(
    draw: Draw, height: int, width: int, size: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> Tensor:
    """``RandomResizedCrop.get_params`` per sample (10 tries, then the centre-crop fallback) as crop+resize maps."""
    area = height * width
    target = area * draw.uniform(scale[0], scale[1], 10)
    aspect = torch.exp(draw.uniform(math.log(ratio[0]), math.log(ratio[1]), 10))
    w_try = torch.round(torch.sqrt(target * aspect))
    h_try = torch.round(torch.sqrt(target / aspect))
    fits = (w_try > 0) & (w_try <= width) & (h_try > 0) & (h_try <= height)
    first = fits.to(torch.int32).argmax(dim=1, keepdim=True)  # the first try that fits
    found = fits.any(dim=1)
    # fallback: a centre crop of the whole image, clamped to the ratio range
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w = torch.where(found, w_try.gather(1, first).squeeze(1), float(fw))
    h = torch.where(found, h_try.gather(1, first).squeeze(1), float(fh))
    i = torch.where(found, draw.randint(0, height - h + 1), float((height - fh) // 2))
    j = torch.where(found, draw.randint(0, width - w + 1), float((width - fw) // 2))
    zero = torch.zeros_like(w)
    return matrix(w / size, zero, j, zero, h / size, i)


def resize_map(height: int, width: int, size: int, n: int, device: torch.device) -> Tensor:
    m = _eye(n, device)
    m[:, 0, 0], m[:, 1, 1] = width / size, height / size
    return m


@dataclass
class Stage:
    """One geometric op: its inverse map; whether it can leave its (size x size) input, and whether that fill
    happens after the preset's colour ops (``late``) or before them."""

    inverse: Tensor
    check: bool = False
    late: bool = False
    projective: bool = False  # a homography (else affine: its last row is 0, 0, 1)


def _project(
    m: Tensor, xs: Tensor, ys: Tensor, projective: bool, divide: bool = True
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Apply (B, 3, 3) maps to the grid ``xs`` (W,) x ``ys`` (H,): x, y (B, H, W), divided by the projective w
    (also returned, None for affine maps) where it is positive. Each output row is one full-size add of a
    (B, 1, W) and a (B, H, 1) term: the cheapest form on the CPU (a batched matmul with k = 3 is slower)."""
    rows = 3 if projective else 2
    col_x = m[:, :rows, 0, None, None] * xs  # (B, rows, 1, W)
    col_y = m[:, :rows, 1, None, None] * ys[:, None] + m[:, :rows, 2, None, None]  # (B, rows, H, 1)
    pts = col_x + col_y  # (B, rows, H, W)
    x, y = pts[:, 0], pts[:, 1]
    if not projective:
        return x, y, None
    w = pts[:, 2]
    if not divide:
        return x, y, w
    w_safe = torch.where(w > 1e-6, w, torch.ones_like(w))  # w <= 0: beyond the horizon, marked outside
    return x / w_safe, y / w_safe, w


def trace(
    stages: Sequence[Stage], size: int, out_hw: tuple[int, int], src_hw: tuple[int, int]
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Compose the stages (in processing order; the first maps the source to ``size`` x ``size``) into one
    ``grid_sample`` grid over an output of ``out_hw`` pixels spanning the ``size`` x ``size`` image, and the masks of
    pixels filled before / after the colour ops (None when no stage can fill)."""
    device = stages[0].inverse.device
    oh, ow = out_hw
    xs = (torch.arange(ow, device=device, dtype=torch.float32) + 0.5) * (size / ow)
    ys = (torch.arange(oh, device=device, dtype=torch.float32) + 0.5) * (size / oh)
    acc = torch.eye(3, device=device).expand(stages[0].inverse.shape[0], 3, 3)
    projective = False
    early: Tensor | None = None
    late: Tensor | None = None
    for stage in reversed(stages[1:]):
        acc = stage.inverse @ acc
        projective = projective or stage.projective
        if stage.check:
            # a skipped op (identity for that sample) fills nothing: test only the samples that apply it
            idx = torch.nonzero((stage.inverse != torch.eye(3, device=device)).any(dim=(1, 2))).flatten()
            if idx.numel() == 0:
                continue
            x, y, w = _project(acc[idx], xs, ys, projective, divide=False)
            if w is None:
                sub = (x < 0) | (x >= size) | (y < 0) | (y >= size)
            else:  # for w > 0: x / w < 0 <=> x < 0 and x / w >= size <=> x >= size * w (no division)
                limit = w * size
                sub = (x < 0) | (x >= limit) | (y < 0) | (y >= limit) | (w <= 1e-6)
            if idx.numel() == acc.shape[0]:
                outside = sub
            else:
                outside = torch.zeros((acc.shape[0], oh, ow), dtype=torch.bool, device=device)
                outside[idx] = sub
            if stage.late:
                late = outside if late is None else late | outside
            else:
                early = outside if early is None else early | outside
    src_h, src_w = src_hw
    to_grid = torch.tensor([[2 / src_w, 0, -1], [0, 2 / src_h, -1], [0, 0, 1]], device=device)
    x, y, _ = _project(to_grid @ stages[0].inverse @ acc, xs, ys, projective or stages[0].projective)
    grid = torch.stack([x, y], dim=-1)
    if projective:
        grid = grid.clamp_(-2.0, 2.0)  # finite where w <= 0 (those pixels are filled anyway)
    return grid, early, late


def sample_grid(src: Tensor, grid: Tensor) -> Tensor:
    # border padding + explicit fill masks = PIL's test (inside -> clamp-to-edge interpolation, outside -> fill)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)


def fill_zero(img: Tensor, mask: Tensor | None) -> Tensor:
    # a multiply by the kept-pixel mask: several times faster than masked_fill / where on the CPU
    return img if mask is None else img * (~mask).unsqueeze(1)


def warp(src: Tensor, stages: Sequence[Stage], size: int) -> tuple[Tensor, Tensor | None]:
    """Resample the batch once through the composed stages; early fill applied, late-fill mask returned."""
    grid, early, late = trace(stages, size, (size, size), tuple(src.shape[-2:]))
    return fill_zero(sample_grid(src, grid), early), late


# ------------------------------------------------------------------------------------------ colour
def apply_to(x: Tensor, mask: Tensor, fn: Callable[..., Tensor], *per_sample: Tensor) -> Tensor:
    """``fn(x[i], *per_sample[i])`` for the samples where ``mask`` is True (in place in ``x``, our own tensor)."""
    idx = torch.nonzero(mask).flatten()
    if idx.numel() == 0:
        return x
    if idx.numel() == x.shape[0]:
        return fn(x, *per_sample)
    x[idx] = fn(x[idx], *(p[idx] for p in per_sample))
    return x


def _gray(x: Tensor) -> Tensor:
    return TF.rgb_to_grayscale(x, num_output_channels=1)


def gray3(x: Tensor) -> Tensor:
    return TF.rgb_to_grayscale(x, num_output_channels=3).contiguous()  # not an expanded view: written in place


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """h in [0, 1) (PIL / colorsys convention), s, v; h = s = 0 for gray pixels."""
    r, g, b = x.unbind(dim=-3)
    maxc, minc = x.amax(dim=-3), x.amin(dim=-3)
    delta = maxc - minc
    gray = delta <= 0
    delta_safe = torch.where(gray, torch.ones_like(delta), delta)
    s = torch.where(gray, torch.zeros_like(delta), delta / torch.where(gray, torch.ones_like(maxc), maxc))
    rc, gc, bc = (maxc - r) / delta_safe, (maxc - g) / delta_safe, (maxc - b) / delta_safe
    h = torch.where(r == maxc, bc - gc, torch.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.remainder(h / 6.0, 1.0)
    return torch.where(gray, torch.zeros_like(h), h), s, maxc


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    channels = []
    for n in (5.0, 3.0, 1.0):  # R, G, B
        k = torch.remainder(n + 6.0 * h, 6.0)
        channels.append(v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(channels, dim=-3)


def pil_hsv(x: Tensor) -> Tensor:
    """``ToHSV``: PIL's HSV bytes read as RGB (H and S truncated to bytes, H in 0..255 for a full turn)."""
    h, s, v = _rgb_to_hsv(x)
    return torch.stack([torch.floor(h * 255.0) / 255.0, torch.floor(s * 255.0) / 255.0, v], dim=-3)


def _per_sample(f: Tensor) -> Tensor:
    return f.view(-1, 1, 1, 1)


def brightness(x: Tensor, f: Tensor, stats_from: int) -> Tensor:
    return (x * _per_sample(f)).clamp_(0.0, 1.0)


def contrast(x: Tensor, f: Tensor, stats_from: int) -> Tensor:
    mean = _gray(x[..., stats_from:]).mean(dim=(-3, -2, -1), keepdim=True)
    return (mean + _per_sample(f) * (x - mean)).clamp_(0.0, 1.0)


def saturation(x: Tensor, f: Tensor, stats_from: int) -> Tensor:
    g = _gray(x)
    return (g + _per_sample(f) * (x - g)).clamp_(0.0, 1.0)


def hue(x: Tensor, f: Tensor, stats_from: int) -> Tensor:
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb(torch.remainder(h + f.view(-1, 1, 1), 1.0), s, v)


_JITTER_OPS = (brightness, contrast, saturation, hue)  # ColorJitter's fn_idx order


def color_jitter(x: Tensor, order: Tensor, factors: Tensor, stats_from: int) -> Tensor:
    """ColorJitter with a random op order per sample (``order`` (n, 4), ``factors`` (n, 4): b, c, s, h)."""
    for position in range(4):
        for op_id, op in enumerate(_JITTER_OPS):
            x = apply_to(x, order[:, position] == op_id, lambda t, f, op=op: op(t, f, stats_from), factors[:, op_id])
    return x




def resize_eval(x: Tensor, size: int) -> Tensor:
    """The shared eval transform: Resize((size, size)), bilinear with antialias."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return TF.resize(x, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
