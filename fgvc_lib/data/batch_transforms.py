"""Batched, on-device versions of the augmentation presets of :mod:`fgvc_lib.data.transforms`.

``build_batch_transform(preset, img_size, train=..., mean=..., std=..., **options)`` returns a
:class:`BatchTransform`; ``list_batch_presets()`` lists the presets (the same names as ``transforms.list_presets()``).
A ``BatchTransform`` takes a whole batch, ``uint8`` ``(B, 3, H, W)`` (e.g. from a decode-once cache at a working size
``>= img_size``) or float in ``[0, 1]``, on any device, and returns float32 ``(B, 3, img_size, img_size)`` normalised
with ``mean`` / ``std`` on the same device (channels_last input stays channels_last).

How the presets are batched
---------------------------
* Every random parameter is drawn per sample, with one tensor draw for the whole batch (from ``generator`` when given,
  on the device of the input); the distributions are those of the per-sample torchvision / PIL presets (same ranges,
  probabilities and nesting, e.g. bird's ``RandomApply(group, p=0.5)`` switches the whole group per sample, and
  RandomResizedCrop keeps its 10 tries + centre-crop fallback). The random *streams* differ, so a seed does not
  reproduce the PIL augmentation of a given sample.
* All geometric ops of a preset (RandomResizedCrop / Resize, RandomAffine, flips, RandomPerspective, RandomShift,
  RandomRotation, AutoAugment's shear / translate / rotate) are composed into one homography per sample and the batch
  is resampled once, with one ``grid_sample``. Out-of-image pixels are filled with 0 like PIL: for every op that can
  leave its image the sample position is checked against that op's input (as PIL does, ``0 <= x < size``).
* Colour ops run after the resampling with per-sample masks / factors. They are pointwise, so they commute with the
  warps, except for what they do to the black fill and to image statistics; both are kept: pixels filled by an op
  *before* a colour op are zeroed before the colour ops run (so e.g. ColorJitter's contrast and AutoAugment's Invert
  change them as in PIL), pixels filled *after* the last colour op (bird: RandomShift, rotation) are zeroed at the end,
  and ColorJitter's contrast mean is taken over the image as it is at that point in the PIL pipeline (a point sample of
  it on a grid of at most 32 x 32, exact for ``img_size <= 32``).
* AutoAugment (CIFAR-10 policy, taken from ``torchvision.transforms.AutoAugment``): samples are grouped by their drawn
  sub-policy; the geometric ops of a sub-policy go into the sampling grid, its colour ops are applied afterwards, in
  order, per group with ``torchvision.transforms.v2.functional``.

Deviations from the PIL presets
-------------------------------
* Interpolation: one bilinear ``grid_sample`` of the composed map, instead of PIL resampling once per op (bilinear
  for the crop / resize, *nearest* for RandomAffine, RandomRotation and AutoAugment's geometric ops, bilinear for
  RandomPerspective, *bicubic* for RandomShift). There is no antialiasing: where the crop (or cifar100's Resize)
  shrinks the image by a large factor the result aliases where PIL's resize would low-pass filter. The eval transform
  uses torchvision's antialiased bilinear resize, so it matches PIL's ``Resize`` closely.
* The fill boundary is tested at the exact composed sample position of each op, so fill edges are sharp and can differ
  from PIL's by about a pixel where PIL's later op reads an earlier op's fill through nearest / bilinear lookup.
* Everything stays float: no rounding to uint8 after each op, contrast's mean is not rounded to an integer, the hue
  shift is not quantised to 1/255 and grayscale uses torchvision's weights (0.2989, 0.587, 0.114) instead of PIL's
  integer ones. ToHSV truncates H and S to byte steps as PIL does (H in ``0..255`` for a full turn, read as a byte /
  255), computed from the float RGB.
* AutoAugment: colour ops that precede a geometric op inside a sub-policy are applied after the warp; exact for the
  CIFAR-10 policy (the one such pair is Color -> TranslateX, and saturation is pointwise and keeps black black).
  Equalize bins float input to uint8 (torchvision's kernel), Solarize's threshold is the PIL one / 255.
* ``train`` is fixed when the transform is built; ``Module.train()`` / ``eval()`` do not switch it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..registry import check_kwargs, unknown_name_error
from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["BatchTransform", "build_batch_transform", "list_batch_presets"]

_STATS_GRID = 32  # contrast's mean is taken over at most this many points per side


# ------------------------------------------------------------------------------------------ random draws
class _Draw:
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


def _matrix(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    """(B, 3, 3) affine matrices [[a, b, c], [d, e, f], [0, 0, 1]] from per-sample entries."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, c, d, e, f, zero, zero, one], dim=1).view(-1, 3, 3)


def _where(mask: Tensor, m: Tensor) -> Tensor:
    """``m`` where ``mask`` else the identity (the op is skipped for that sample)."""
    return torch.where(mask.view(-1, 1, 1), m, torch.eye(3, device=m.device, dtype=m.dtype))


def _about_centre(lin: Tensor, cx: float, cy: float) -> Tensor:
    """in = C + L (out - C) for per-sample 2x2 ``lin`` (B, 2, 2)."""
    a, b, d, e = lin[:, 0, 0], lin[:, 0, 1], lin[:, 1, 0], lin[:, 1, 1]
    return _matrix(a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy)


def _rotation(angle_deg: Tensor, size: int) -> Tensor:
    """``F.rotate`` / ``Image.rotate``: counter-clockwise by ``angle`` degrees about the image centre."""
    t = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(t), torch.sin(t)
    lin = torch.stack([cos, -sin, sin, cos], dim=1).view(-1, 2, 2)
    return _about_centre(lin, size / 2, size / 2)


def _affine(angle_deg: Tensor, shear_x_deg: Tensor, size: int) -> Tensor:
    """``F.affine(angle, translate=0, scale=1, shear=(sx, 0))`` about the centre (torchvision's inverse matrix)."""
    rot, sx = torch.deg2rad(angle_deg), torch.deg2rad(shear_x_deg)
    a, c = torch.cos(rot), torch.sin(rot)
    b = -torch.cos(rot) * torch.tan(sx) - torch.sin(rot)
    d = -torch.sin(rot) * torch.tan(sx) + torch.cos(rot)
    lin = torch.stack([d, -b, -c, a], dim=1).view(-1, 2, 2)  # inverse of [[a, b], [c, d]] (det 1)
    return _about_centre(lin, size / 2, size / 2)


def _hflip(n: int, size: int, device: torch.device) -> Tensor:
    m = _eye(n, device)
    m[:, 0, 0], m[:, 0, 2] = -1.0, float(size)
    return m


def _vflip(n: int, size: int, device: torch.device) -> Tensor:
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


def _perspective(draw: _Draw, size: int, distortion_scale: float) -> Tensor:
    """``RandomPerspective``: its corner draw (``get_params``) and the map endpoints -> startpoints PIL applies."""
    half = size // 2
    bound = int(distortion_scale * half) + 1
    lo, hi = draw.randint(0, bound, 4, 2), draw.randint(size - bound, size, 4, 2)
    # topleft (lo, lo), topright (hi, lo), botright (hi, hi), botleft (lo, hi)
    pick_hi = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=torch.bool, device=draw.device)
    return _perspective_to(torch.where(pick_hi, hi, lo), size)


def _perspective_to(endpoints: Tensor, size: int) -> Tensor:
    """``F.perspective(startpoints=image corners, endpoints)``: the inverse map endpoints -> startpoints."""
    end = endpoints / size  # normalised by size: better conditioned
    last = (size - 1) / size
    start = torch.tensor([[0, 0], [last, 0], [last, last], [0, last]], device=end.device).expand_as(end)
    h = _square_to_quad(start) @ torch.linalg.inv(_square_to_quad(end))
    scale = torch.diag(torch.tensor([float(size), float(size), 1.0], device=end.device))
    return scale @ h @ torch.linalg.inv(scale)


def _resized_crop(
    draw: _Draw, height: int, width: int, size: int, scale: tuple[float, float], ratio: tuple[float, float]
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
    return _matrix(w / size, zero, j, zero, h / size, i)


def _resize(height: int, width: int, size: int, n: int, device: torch.device) -> Tensor:
    m = _eye(n, device)
    m[:, 0, 0], m[:, 1, 1] = width / size, height / size
    return m


@dataclass
class _Stage:
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


def _trace(
    stages: Sequence[_Stage], size: int, out_hw: tuple[int, int], src_hw: tuple[int, int]
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


def _sample(src: Tensor, grid: Tensor) -> Tensor:
    # border padding + explicit fill masks = PIL's test (inside -> clamp-to-edge interpolation, outside -> fill)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _zero(img: Tensor, mask: Tensor | None) -> Tensor:
    # a multiply by the kept-pixel mask: several times faster than masked_fill / where on the CPU
    return img if mask is None else img * (~mask).unsqueeze(1)


def _warp(src: Tensor, stages: Sequence[_Stage], size: int) -> tuple[Tensor, Tensor | None]:
    """Resample the batch once through the composed stages; early fill applied, late-fill mask returned."""
    grid, early, late = _trace(stages, size, (size, size), tuple(src.shape[-2:]))
    return _zero(_sample(src, grid), early), late


# ------------------------------------------------------------------------------------------ colour
def _apply_to(x: Tensor, mask: Tensor, fn: Callable[..., Tensor], *per_sample: Tensor) -> Tensor:
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


def _gray3(x: Tensor) -> Tensor:
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


def _pil_hsv(x: Tensor) -> Tensor:
    """``ToHSV``: PIL's HSV bytes read as RGB (H and S truncated to bytes, H in 0..255 for a full turn)."""
    h, s, v = _rgb_to_hsv(x)
    return torch.stack([torch.floor(h * 255.0) / 255.0, torch.floor(s * 255.0) / 255.0, v], dim=-3)


def _per_sample(f: Tensor) -> Tensor:
    return f.view(-1, 1, 1, 1)


def _brightness(x: Tensor, f: Tensor, stats_from: int) -> Tensor:
    return (x * _per_sample(f)).clamp_(0.0, 1.0)


def _contrast(x: Tensor, f: Tensor, stats_from: int) -> Tensor:
    mean = _gray(x[..., stats_from:]).mean(dim=(-3, -2, -1), keepdim=True)
    return (mean + _per_sample(f) * (x - mean)).clamp_(0.0, 1.0)


def _saturation(x: Tensor, f: Tensor, stats_from: int) -> Tensor:
    g = _gray(x)
    return (g + _per_sample(f) * (x - g)).clamp_(0.0, 1.0)


def _hue(x: Tensor, f: Tensor, stats_from: int) -> Tensor:
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb(torch.remainder(h + f.view(-1, 1, 1), 1.0), s, v)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)  # ColorJitter's fn_idx order


def _color_jitter(x: Tensor, order: Tensor, factors: Tensor, stats_from: int) -> Tensor:
    """ColorJitter with a random op order per sample (``order`` (n, 4), ``factors`` (n, 4): b, c, s, h)."""
    for position in range(4):
        for op_id, op in enumerate(_JITTER_OPS):
            x = _apply_to(x, order[:, position] == op_id, lambda t, f, op=op: op(t, f, stats_from), factors[:, op_id])
    return x


# ------------------------------------------------------------------------------------------ presets
_Preset = Callable[..., Tensor]
_PRESETS: dict[str, _Preset] = {}


def _preset(name: str) -> Callable[[_Preset], _Preset]:
    def wrap(fn: _Preset) -> _Preset:
        _PRESETS[name] = fn
        return fn

    return wrap


def _resize_eval(x: Tensor, size: int) -> Tensor:
    """The shared eval transform: Resize((size, size)), bilinear with antialias."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return TF.resize(x, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)


def _crop_flip(
    x: Tensor, size: int, generator: torch.Generator | None, scale: tuple[float, float], rotation: float = 0.0
) -> Tensor:
    """RandomResizedCrop(scale, ratio 3/4-4/3) + horizontal flip (+ RandomRotation(rotation), fill 0)."""
    n, (height, width) = x.shape[0], x.shape[-2:]
    draw = _Draw(n, x.device, generator)
    stages = [
        _Stage(_resized_crop(draw, height, width, size, scale, (3 / 4, 4 / 3))),
        _Stage(_where(draw.coin(0.5), _hflip(n, size, x.device))),
    ]
    if rotation:
        stages.append(_Stage(_rotation(draw.uniform(-rotation, rotation), size), check=True))
    img, _ = _warp(x, stages, size)
    return img


@_preset("none")
def _none(x: Tensor, size: int, generator: torch.Generator | None, /) -> Tensor:
    return _resize_eval(x, size)


@_preset("light")
def _light(x: Tensor, size: int, generator: torch.Generator | None, /) -> Tensor:
    return _crop_flip(x, size, generator, (0.35, 1.0))


@_preset("inat")
def _inat(x: Tensor, size: int, generator: torch.Generator | None, /) -> Tensor:
    return _crop_flip(x, size, generator, (0.08, 1.0))


@_preset("multilabel")
def _multilabel(x: Tensor, size: int, generator: torch.Generator | None, /) -> Tensor:
    return _crop_flip(x, size, generator, (0.08, 1.0), rotation=25.0)


@_preset("bird")
def _bird(x: Tensor, size: int, generator: torch.Generator | None, /) -> Tensor:
    """RandomResizedCrop, then RandomApply(group, 0.5), then RandomApply([RandomRotation((-90, 90))], 0.5), where
    the group is RandomAffine(30, shear=50), RandomGrayscale(0.5), hflip, RandomPerspective(0.5), vflip,
    ColorJitter(0.5, 0.5, 0.5, 0.5), Grayscale(3), RandomShift(3), RandomApply([ToHSV()], 0.5)."""
    n, dev, (height, width) = x.shape[0], x.device, x.shape[-2:]
    draw = _Draw(n, dev, generator)
    crop = _resized_crop(draw, height, width, size, (0.08, 1.0), (3 / 4, 4 / 3))
    group = draw.coin(0.5)
    affine = _where(group, _affine(draw.uniform(-30.0, 30.0), draw.uniform(-50.0, 50.0), size))
    random_gray = group & draw.coin(0.5)
    hflip = _where(group & draw.coin(0.5), _hflip(n, size, dev))
    perspective = _where(group & draw.coin(0.5), _perspective(draw, size, 0.5))
    vflip = _where(group & draw.coin(0.5), _vflip(n, size, dev))
    jitter_order = draw.permutation(4)
    jitter_factors = torch.cat([draw.uniform(0.5, 1.5, 3), draw.uniform(-0.5, 0.5, 1)], dim=1)
    dx, dy = draw.uniform(-3.0, 3.0, 2).unbind(1)
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    shift = _where(group, _matrix(one, zero, dx, zero, one, dy))
    to_hsv = group & draw.coin(0.5)
    rotation = _where(draw.coin(0.5), _rotation(draw.uniform(-90.0, 90.0), size))

    before_jitter = [
        _Stage(crop),
        _Stage(affine, check=True),
        _Stage(hflip),
        _Stage(perspective, check=True, projective=True),
        _Stage(vflip),
    ]
    after_jitter = [_Stage(shift, check=True, late=True), _Stage(rotation, check=True, late=True)]
    img, late = _warp(x, before_jitter + after_jitter, size)

    idx = torch.nonzero(group).flatten()
    if idx.numel():
        # the image ColorJitter sees in PIL (before the shift and rotation), point-sampled for contrast's mean
        g = min(size, _STATS_GRID)
        grid, early, _ = _trace(before_jitter, size, (g, g), (height, width))
        stats = _zero(_sample(x, grid), early)[idx]
        sub = img[idx]
        pixels = size * size
        flat = torch.cat([sub.flatten(2), stats.flatten(2)], dim=2).unsqueeze(2)  # (k, 3, 1, pixels + g*g)
        flat = _apply_to(flat, random_gray[idx], _gray3)
        flat = _color_jitter(flat, jitter_order[idx], jitter_factors[idx], pixels)
        flat = _gray3(flat)
        flat = _apply_to(flat, to_hsv[idx], _pil_hsv)
        img[idx] = flat[..., :pixels].reshape(sub.shape)
    return _zero(img, late)


# AutoAugment: geometric op codes (0 = colour op / nothing)
_AA_GEOMETRIC = {"ShearX": 1, "ShearY": 2, "TranslateX": 3, "TranslateY": 4, "Rotate": 5}


def _aa_colour_op(name: str, magnitude: float) -> Callable[[Tensor], Tensor]:
    ops: dict[str, Callable[[Tensor], Tensor]] = {
        "Brightness": lambda t: TF.adjust_brightness(t, 1.0 + magnitude),
        "Color": lambda t: TF.adjust_saturation(t, 1.0 + magnitude),
        "Contrast": lambda t: TF.adjust_contrast(t, 1.0 + magnitude),
        "Sharpness": lambda t: TF.adjust_sharpness(t, 1.0 + magnitude),
        "Posterize": lambda t: TF.posterize(t, int(magnitude)),
        "Solarize": lambda t: TF.solarize(t, magnitude / 255.0),
        "AutoContrast": TF.autocontrast,
        "Equalize": TF.equalize,
        "Invert": TF.invert,
    }
    if name not in ops:
        raise NotImplementedError(f"AutoAugment op {name!r} has no batched version")
    return ops[name]


class _AutoAugmentTables:
    """torchvision's AutoAugment policy as per-slot tensors over the sub-policies."""

    def __init__(self, policy: AutoAugmentPolicy, size: int, device: torch.device):
        aa = AutoAugment(policy)
        space = aa._augmentation_space(10, (size, size))  # the magnitudes the per-sample AutoAugment uses
        self.policies = aa.policies
        self.n_policies = len(aa.policies)
        self.slots = []
        for slot in range(2):
            names = [p[slot][0] for p in aa.policies]
            mags = [
                float(space[name][0][p[slot][2]]) if p[slot][2] is not None else 0.0
                for name, p in zip(names, aa.policies, strict=True)
            ]
            self.slots.append(
                dict(
                    names=names,
                    prob=torch.tensor([p[slot][1] for p in aa.policies], device=device),
                    magnitude=torch.tensor(mags, device=device),
                    signed=torch.tensor([bool(space[name][1]) for name in names], device=device),
                    kind=torch.tensor([_AA_GEOMETRIC.get(name, 0) for name in names], device=device),
                )
            )


@functools.lru_cache(maxsize=16)
def _aa_tables(policy: AutoAugmentPolicy, size: int, device: torch.device) -> _AutoAugmentTables:
    return _AutoAugmentTables(policy, size, device)


def _aa_geometry(t: dict, policy: Tensor, applied: Tensor, magnitude: Tensor, size: int) -> Tensor:
    """The per-sample inverse map of one AutoAugment slot (identity for colour ops and skipped ops)."""
    kind = torch.where(applied, t["kind"][policy], torch.zeros_like(policy))
    m = _rotation(torch.where(kind == 5, magnitude, torch.zeros_like(magnitude)), size)
    # F.affine(center=[0, 0]) with shear atan(m): in = (x + m y, y) / (x, m x + y); translate by int(m): in = out - t
    m[:, 0, 1] += torch.where(kind == 1, magnitude, 0.0)
    m[:, 1, 0] += torch.where(kind == 2, magnitude, 0.0)
    m[:, 0, 2] -= torch.where(kind == 3, torch.trunc(magnitude), 0.0)
    m[:, 1, 2] -= torch.where(kind == 4, torch.trunc(magnitude), 0.0)
    return m


@_preset("cifar100")
def _cifar100(
    x: Tensor, size: int, generator: torch.Generator | None, /, *, noise_std: float = 0.05, noise_p: float = 0.5
) -> Tensor:
    """Resize, RandomRotation(10), hflip, AutoAugment(CIFAR10), then Gaussian noise (clipped) with ``noise_p``."""
    n, dev, (height, width) = x.shape[0], x.device, x.shape[-2:]
    draw = _Draw(n, dev, generator)
    tables = _aa_tables(AutoAugmentPolicy.CIFAR10, size, dev)
    rotation = _rotation(draw.uniform(-10.0, 10.0), size)
    hflip = _where(draw.coin(0.5), _hflip(n, size, dev))
    policy = torch.minimum(
        torch.floor(draw.rand() * tables.n_policies).long(), torch.tensor(tables.n_policies - 1, device=dev)
    )
    probs = draw.rand(2)
    positive = draw.rand(2) < 0.5  # AutoAugment's sign draw: randint(2) == 0 flips signed magnitudes
    applied, magnitudes = [], []
    for slot, t in enumerate(tables.slots):
        applied.append(probs[:, slot] <= t["prob"][policy])
        sign = torch.where(t["signed"][policy] & ~positive[:, slot], -1.0, 1.0)
        magnitudes.append(t["magnitude"][policy] * sign)
    stages = [
        _Stage(_resize(height, width, size, n, dev)),
        _Stage(rotation, check=True),
        _Stage(hflip),
        *(
            _Stage(_aa_geometry(t, policy, applied[slot], magnitudes[slot], size), check=True)
            for slot, t in enumerate(tables.slots)
        ),
    ]
    img, _ = _warp(x, stages, size)

    # colour ops, slot by slot, grouped by sub-policy (and sign); one host sync for the grouping
    host_policy, host_applied = policy.cpu(), torch.stack(applied, 1).cpu()
    host_positive = torch.stack(magnitudes, 1).cpu() >= 0
    for slot, t in enumerate(tables.slots):
        for pid, name in enumerate(t["names"]):
            if name in _AA_GEOMETRIC:
                continue
            chosen = (host_policy == pid) & host_applied[:, slot]
            for positive_sign in (True, False):
                idx = torch.nonzero(chosen & (host_positive[:, slot] == positive_sign)).flatten()
                if idx.numel() == 0:
                    continue
                magnitude = float(t["magnitude"][pid]) * (1.0 if positive_sign else -1.0)
                idx = idx.to(dev)
                img[idx] = _aa_colour_op(name, magnitude)(img[idx])

    if noise_p > 0 and noise_std > 0:
        noisy = draw.coin(noise_p)
        noise = torch.randn(img.shape, device=dev, generator=generator) * noise_std
        img = torch.where(noisy.view(-1, 1, 1, 1), (img + noise).clamp_(0.0, 1.0), img)
    return img


# ------------------------------------------------------------------------------------------ public API
def list_batch_presets() -> list[str]:
    return sorted(_PRESETS)


CHUNK_PIXELS = 2**21  # per chunk of a batch; see BatchTransform._chunk


class BatchTransform(torch.nn.Module):
    """A preset's batched augmentation (``train=True``) or the shared eval transform (``train=False``).

    ``forward(x, generator=None)``: ``x`` uint8 ``(B, 3, H, W)`` or float in [0, 1], any device; returns float32
    ``(B, 3, img_size, img_size)`` normalised with ``mean`` / ``std``, on the device of ``x``. ``generator`` (on that
    device) makes the random draws reproducible.
    """

    def __init__(
        self,
        preset: str,
        img_size: int,
        *,
        train: bool,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        options: dict | None = None,
    ):
        super().__init__()
        self.preset = preset
        self.img_size = int(img_size)
        self.is_train = bool(train)
        self.options = dict(options or {})
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a batch (B, 3, H, W), got shape {tuple(x.shape)}")
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if x.dtype == torch.uint8:
            img = x.to(torch.float32).div_(255.0)
        elif x.is_floating_point():
            img = x.to(torch.float32)
        else:
            raise TypeError(f"expected uint8 or float input, got {x.dtype}")
        out = torch.cat([self._one_chunk(part, generator) for part in img.split(self._chunk(img))])
        out = out.sub_(self.mean.to(out.device)).div_(self.std.to(out.device)) if out is not img else (
            (out - self.mean.to(out.device)) / self.std.to(out.device)
        )
        return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def _chunk(self, img: Tensor) -> int:
        """Samples per chunk: at most ``CHUNK_PIXELS`` source or output pixels per chunk. Tensors of a whole
        380 px batch are > 32 MB, which glibc maps fresh on every allocation (a page fault per 4 kB); chunks
        stay in reused heap memory and in cache (380 px bird: 14.8 -> 10.6 ms per image on one CPU thread)."""
        per_sample = max(img.shape[-2] * img.shape[-1], self.img_size * self.img_size)
        return max(1, CHUNK_PIXELS // per_sample)

    def _one_chunk(self, img: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.is_train:
            return _PRESETS[self.preset](img, self.img_size, generator, **self.options)
        return _resize_eval(img, self.img_size)

    def extra_repr(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"preset={self.preset!r}, img_size={self.img_size}, train={self.is_train}{opts}"


def build_batch_transform(
    preset: str,
    img_size: int,
    *,
    train: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **options: float,
) -> BatchTransform:
    """Batched training transform of a named preset (``options`` go to presets that take them, e.g. cifar100's
    ``noise_std`` / ``noise_p``), or the shared eval transform (``train=False``). Options are checked either way."""
    if preset not in _PRESETS:
        raise unknown_name_error("augmentation preset", preset, list_batch_presets())
    check_kwargs("augmentation preset", preset, _PRESETS[preset], options)
    if int(img_size) < 1:
        raise ValueError(f"img_size must be positive, got {img_size}")
    if "noise_p" in options and not 0.0 <= float(options["noise_p"]) <= 1.0:
        raise ValueError(f"noise_p must be in [0, 1], got {options['noise_p']}")
    if "noise_std" in options and float(options["noise_std"]) < 0:
        raise ValueError(f"noise_std must be >= 0, got {options['noise_std']}")
    return BatchTransform(preset, img_size, train=train, mean=mean, std=std, options=options)
