"""The batched forms of the augmentation presets: ``preset(x, img_size, generator, /, **options) -> x`` on a
float batch (B, 3, H, W) in [0, 1] on any device, returning (B, 3, img_size, img_size) in [0, 1] (not normalised).
:func:`fgvc_lib.data.transforms.register_preset` registers each next to its per-image form; use them through
:func:`fgvc_lib.data.batch_transforms.build_batch_transform`.

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
from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.transforms import AutoAugment, AutoAugmentPolicy
from torchvision.transforms.v2 import functional as TF

from . import batch_ops as ops

__all__ = ["resize_only", "light", "inat", "multilabel", "bird", "cifar100"]


def _crop_flip(
    x: Tensor, size: int, generator: torch.Generator | None, scale: tuple[float, float], rotation: float = 0.0
) -> Tensor:
    """RandomResizedCrop(scale, ratio 3/4-4/3) + horizontal flip (+ RandomRotation(rotation), fill 0)."""
    n, (height, width) = x.shape[0], x.shape[-2:]
    draw = ops.Draw(n, x.device, generator)
    stages = [
        ops.Stage(ops.resized_crop(draw, height, width, size, scale, (3 / 4, 4 / 3))),
        ops.Stage(ops.select_map(draw.coin(0.5), ops.hflip(n, size, x.device))),
    ]
    if rotation:
        stages.append(ops.Stage(ops.rotation(draw.uniform(-rotation, rotation), size), check=True))
    img, _ = ops.warp(x, stages, size)
    return img


def resize_only(x: Tensor, size: int, generator: torch.Generator | None, /) -> Tensor:
    return ops.resize_eval(x, size)


def light(x: Tensor, size: int, generator: torch.Generator | None, /) -> Tensor:
    return _crop_flip(x, size, generator, (0.35, 1.0))


def inat(x: Tensor, size: int, generator: torch.Generator | None, /) -> Tensor:
    return _crop_flip(x, size, generator, (0.08, 1.0))


def multilabel(x: Tensor, size: int, generator: torch.Generator | None, /) -> Tensor:
    return _crop_flip(x, size, generator, (0.08, 1.0), rotation=25.0)


def bird(x: Tensor, size: int, generator: torch.Generator | None, /) -> Tensor:
    """RandomResizedCrop, then RandomApply(group, 0.5), then RandomApply([RandomRotation((-90, 90))], 0.5), where
    the group is RandomAffine(30, shear=50), RandomGrayscale(0.5), hflip, RandomPerspective(0.5), vflip,
    ColorJitter(0.5, 0.5, 0.5, 0.5), Grayscale(3), RandomShift(3), RandomApply([ToHSV()], 0.5)."""
    n, dev, (height, width) = x.shape[0], x.device, x.shape[-2:]
    draw = ops.Draw(n, dev, generator)
    crop = ops.resized_crop(draw, height, width, size, (0.08, 1.0), (3 / 4, 4 / 3))
    group = draw.coin(0.5)
    affine = ops.select_map(group, ops.affine(draw.uniform(-30.0, 30.0), draw.uniform(-50.0, 50.0), size))
    random_gray = group & draw.coin(0.5)
    hflip = ops.select_map(group & draw.coin(0.5), ops.hflip(n, size, dev))
    perspective = ops.select_map(group & draw.coin(0.5), ops.perspective(draw, size, 0.5))
    vflip = ops.select_map(group & draw.coin(0.5), ops.vflip(n, size, dev))
    jitter_order = draw.permutation(4)
    jitter_factors = torch.cat([draw.uniform(0.5, 1.5, 3), draw.uniform(-0.5, 0.5, 1)], dim=1)
    dx, dy = draw.uniform(-3.0, 3.0, 2).unbind(1)
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    shift = ops.select_map(group, ops.matrix(one, zero, dx, zero, one, dy))
    to_hsv = group & draw.coin(0.5)
    rotation = ops.select_map(draw.coin(0.5), ops.rotation(draw.uniform(-90.0, 90.0), size))

    before_jitter = [
        ops.Stage(crop),
        ops.Stage(affine, check=True),
        ops.Stage(hflip),
        ops.Stage(perspective, check=True, projective=True),
        ops.Stage(vflip),
    ]
    after_jitter = [ops.Stage(shift, check=True, late=True), ops.Stage(rotation, check=True, late=True)]
    img, late = ops.warp(x, before_jitter + after_jitter, size)

    idx = torch.nonzero(group).flatten()
    if idx.numel():
        # the image ColorJitter sees in PIL (before the shift and rotation), point-sampled for contrast's mean
        g = min(size, ops.STATS_GRID)
        grid, early, _ = ops.trace(before_jitter, size, (g, g), (height, width))
        stats = ops.fill_zero(ops.sample_grid(x, grid), early)[idx]
        sub = img[idx]
        pixels = size * size
        flat = torch.cat([sub.flatten(2), stats.flatten(2)], dim=2).unsqueeze(2)  # (k, 3, 1, pixels + g*g)
        flat = ops.apply_to(flat, random_gray[idx], ops.gray3)
        flat = ops.color_jitter(flat, jitter_order[idx], jitter_factors[idx], pixels)
        flat = ops.gray3(flat)
        flat = ops.apply_to(flat, to_hsv[idx], ops.pil_hsv)
        img[idx] = flat[..., :pixels].reshape(sub.shape)
    return ops.fill_zero(img, late)


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
    m = ops.rotation(torch.where(kind == 5, magnitude, torch.zeros_like(magnitude)), size)
    # F.affine(center=[0, 0]) with shear atan(m): in = (x + m y, y) / (x, m x + y); translate by int(m): in = out - t
    m[:, 0, 1] += torch.where(kind == 1, magnitude, 0.0)
    m[:, 1, 0] += torch.where(kind == 2, magnitude, 0.0)
    m[:, 0, 2] -= torch.where(kind == 3, torch.trunc(magnitude), 0.0)
    m[:, 1, 2] -= torch.where(kind == 4, torch.trunc(magnitude), 0.0)
    return m


def cifar100(
    x: Tensor, size: int, generator: torch.Generator | None, /, *, noise_std: float = 0.05, noise_p: float = 0.5
) -> Tensor:
    """Resize, RandomRotation(10), hflip, AutoAugment(CIFAR10), then Gaussian noise (clipped) with ``noise_p``."""
    n, dev, (height, width) = x.shape[0], x.device, x.shape[-2:]
    draw = ops.Draw(n, dev, generator)
    tables = _aa_tables(AutoAugmentPolicy.CIFAR10, size, dev)
    rotation = ops.rotation(draw.uniform(-10.0, 10.0), size)
    hflip = ops.select_map(draw.coin(0.5), ops.hflip(n, size, dev))
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
        ops.Stage(ops.resize_map(height, width, size, n, dev)),
        ops.Stage(rotation, check=True),
        ops.Stage(hflip),
        *(
            ops.Stage(_aa_geometry(t, policy, applied[slot], magnitudes[slot], size), check=True)
            for slot, t in enumerate(tables.slots)
        ),
    ]
    img, _ = ops.warp(x, stages, size)

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
