"""Boxes found on the model's input images, cropped from the ORIGINAL image files at full resolution.

A CAM box lives in the coordinates of the eval-transformed input (``img_size x img_size``). Cutting it out of that
input and upsampling adds no detail; :func:`crops_from_originals` maps each box back to the original image's
pixels (:class:`EvalGeometry`), crops the decoded file there (whole pixels) and resizes the crop to ``img_size`` (bilinear, the
eval transform's ``Resize``), then ``ToTensor`` + ``Normalize`` as the eval transform does.

Supported eval geometries (:meth:`EvalGeometry.from_transform` reads them off the transform itself):

- ``Resize((h, w))``: a plain stretch of the whole image (every preset's eval transform in
  :mod:`fgvc_lib.data.transforms`, and the batched eval ``BatchTransform(train=False)``); a box maps back by
  ``x * W / w``, ``y * H / h``;
- ``Resize(r)`` (shorter side to ``r``, torchvision's rounding, optional ``max_size``) followed by
  ``CenterCrop((h, w))``: the crop offset is added back before the scaling by ``W / new_w``, ``H / new_h``;
- either one behind the decode-once cache (``cache_size``): the cache stretches the original to
  ``cache_size x cache_size`` first, so a box maps to cache pixels and then by ``W / cache_size``,
  ``H / cache_size`` (for a plain resize this is the same as mapping straight from ``img_size``).

Boxes are ``(x, y, w, h)`` floats in pixels (COCO convention, as ``fgvc_lib.cam.cam_box`` and the recorded iNat
boxes), with continuous coordinates: pixel ``i`` covers ``[i, i + 1)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

from .data.datasets import load_rgb

Box = tuple[float, float, float, float]

# transforms that do not move pixels (ignored when reading the geometry off an eval transform)
_PIXELWISE = (T.ToTensor, T.Normalize, T.PILToTensor, T.ConvertImageDtype, T.Lambda)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """(h, w) of a torchvision size argument (an int or a 1- or 2-sequence)."""
    if isinstance(size, int):
        return size, size
    size = list(size)
    return (int(size[0]), int(size[0])) if len(size) == 1 else (int(size[0]), int(size[1]))


@dataclass(frozen=True)
class EvalGeometry:
    """Where the eval transform takes an original ``W x H`` image: ``Resize`` then an optional centre crop.

    ``resize``: ``(h, w)`` for a stretch to exactly that size, or an int for "shorter side to ``resize``"
    (aspect kept; ``max_size`` caps the longer side as torchvision does). ``crop``: ``(h, w)`` of a
    ``CenterCrop`` after the resize, or None. ``cache_size``: > 0 when the pixels come from the decode-once cache,
    which first stretches every original to ``cache_size x cache_size``.
    """

    resize: int | tuple[int, int]
    crop: tuple[int, int] | None = None
    max_size: int | None = None
    cache_size: int = 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def stretch(cls, size: int, cache_size: int = 0) -> EvalGeometry:
        """``Resize((size, size))``: the eval transform of every built-in preset."""
        return cls((int(size), int(size)), cache_size=int(cache_size))

    @classmethod
    def from_transform(cls, transform: Any, cache_size: int = 0) -> EvalGeometry:
        """The geometry of an eval transform: a ``torchvision`` ``Compose`` of ``Resize`` [+ ``CenterCrop``] and
        pixel-wise steps (``ToTensor``, ``Normalize``), a lone ``Resize``, or a batched eval
        ``fgvc_lib.data.batch_transforms.BatchTransform`` (a stretch to ``img_size``). Any other step that moves
        pixels is a ValueError naming it (the mapping would be wrong)."""
        if getattr(transform, "is_train", None) is False and hasattr(transform, "img_size"):  # BatchTransform
            return cls.stretch(transform.img_size, cache_size)
        steps = list(transform.transforms) if isinstance(transform, T.Compose) else [transform]
        resize: int | tuple[int, int] | None = None
        max_size: int | None = None
        crop: tuple[int, int] | None = None
        for step in steps:
            if isinstance(step, _PIXELWISE):
                continue
            if isinstance(step, T.Resize) and resize is None and crop is None:
                size = step.size
                if isinstance(size, int) or len(size) == 1:
                    resize = size if isinstance(size, int) else int(size[0])
                    max_size = step.max_size
                else:
                    resize = _pair(size)
            elif isinstance(step, T.CenterCrop) and resize is not None and crop is None:
                crop = _pair(step.size)
            else:
                raise ValueError(
                    f"eval transform step {step!r} is not supported for mapping boxes back to the original "
                    "image; supported: Resize((h, w)), or Resize(shorter side) followed by CenterCrop, plus "
                    "ToTensor / Normalize"
                )
        if resize is None:
            raise ValueError(
                f"eval transform {transform!r} has no Resize; cannot map boxes to the original image"
            )
        return cls(resize, crop, max_size, int(cache_size))

    # ------------------------------------------------------------------ sizes
    def resized_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` after the Resize step of an image of ``original_size = (W, H)`` (torchvision's
        rounding: the longer side of a shorter-side resize is truncated)."""
        w, h = original_size
        if not isinstance(self.resize, int):
            return self.resize[1], self.resize[0]
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize, int(self.resize * long / short)
        if self.max_size is not None and new_long > self.max_size:
            new_short, new_long = int(self.max_size * new_short / new_long), self.max_size
        return (new_short, new_long) if w <= h else (new_long, new_short)

    def crop_offset(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(left, top)`` of the centre crop in the resized image (0, 0 without a crop)."""
        if self.crop is None:
            return 0, 0
        rw, rh = self.resized_size(original_size)
        ch, cw = self.crop
        if ch > rh or cw > rw:
            raise ValueError(f"CenterCrop {self.crop} is larger than the resized image ({rh}, {rw}): padding")
        return int(round((rw - cw) / 2.0)), int(round((rh - ch) / 2.0))

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` of the model input made from an image of ``original_size``."""
        return (self.crop[1], self.crop[0]) if self.crop is not None else self.resized_size(original_size)

    # ------------------------------------------------------------------ mapping
    def _affine(self, original_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """``(left, top, sx, sy)``: original = (input + offset) * scale on each axis."""
        source = (self.cache_size, self.cache_size) if self.cache_size else tuple(original_size)
        rw, rh = self.resized_size(source)
        left, top = self.crop_offset(source)
        sx, sy = source[0] / rw, source[1] / rh
        if self.cache_size:  # cache pixels -> original pixels: the cache's stretch
            sx, sy = sx * original_size[0] / self.cache_size, sy * original_size[1] / self.cache_size
        return left, top, sx, sy

    def to_original(self, box: Box, original_size: tuple[int, int]) -> Box:
        """A box in model-input pixels -> the same region in the original image's pixels (``(W, H)``)."""
        left, top, sx, sy = self._affine(original_size)
        x, y, w, h = box
        return (x + left) * sx, (y + top) * sy, w * sx, h * sy

    def to_input(self, box: Box, original_size: tuple[int, int]) -> Box:
        """The inverse of :meth:`to_original`: a box in original pixels -> model-input pixels (not clipped)."""
        left, top, sx, sy = self._affine(original_size)
        x, y, w, h = box
        return x / sx - left, y / sy - top, w / sx, h / sy


# ---------------------------------------------------------------------------------------------- crops
def clip_box(box: Box, original_size: tuple[int, int], min_size: float = 1.0) -> Box:
    """The box clipped to the image ``(W, H)``, at least ``min_size`` pixels wide and high (grown around its
    centre, kept inside the image)."""
    width, height = original_size
    x, y, w, h = box
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)

    def grow(lo: float, hi: float, limit: float) -> tuple[float, float]:
        need = min(min_size, limit)
        if hi - lo >= need:
            return lo, hi
        mid = min(max((lo + hi) / 2, need / 2), limit - need / 2)
        return mid - need / 2, mid + need / 2

    x0, x1 = grow(x0, x1, float(width))
    y0, y1 = grow(y0, y1, float(height))
    return x0, y0, x1 - x0, y1 - y0


def pixel_box(box: Box, original_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The whole pixels ``(x, y, w, h)`` a crop of ``box`` takes: clipped to the image ``(W, H)``, edges rounded
    to the nearest pixel boundary, at least one pixel wide and high."""
    width, height = original_size
    x, y, w, h = clip_box(box, original_size)
    x0, y0 = min(round(x), width - 1), min(round(y), height - 1)
    x1, y1 = min(max(x0 + 1, round(x + w)), width), min(max(y0 + 1, round(y + h)), height)
    return x0, y0, x1 - x0, y1 - y0


def crop_resize(image: Image.Image, box: Box, size: int) -> Image.Image:
    """The pixels of ``box`` (original pixels, see :func:`pixel_box`) cut out of ``image`` and resized to
    ``size x size`` as the eval transform's ``Resize((size, size))`` does (PIL bilinear, antialiased when
    shrinking): the crop is the eval transform's input in place of the whole image."""
    x, y, w, h = pixel_box(box, image.size)
    return image.crop((x, y, x + w, y + h)).resize((int(size), int(size)), Image.BILINEAR)


@dataclass
class OriginalCrops:
    """What :func:`crops_from_originals` made: ``images`` (B, 3, size, size) normalised model inputs;
    ``boxes`` the whole-pixel boxes cut out of the originals (:func:`pixel_box`); ``original_sizes`` ``(W, H)``
    of every file."""

    images: torch.Tensor
    boxes: list[Box]
    original_sizes: list[tuple[int, int]]


def original_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(W, H)`` of an image file from its header (no decode)."""
    with Image.open(path) as img:
        return img.size


def crops_from_originals(
    paths: Sequence[str | os.PathLike[str]],
    boxes: Sequence[Box],
    geometry: EvalGeometry,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> OriginalCrops:
    """Boxes on the eval-transformed images of ``paths`` (model-input pixels, ``geometry``) -> crops of the
    original files at full resolution, each resized to ``size x size`` and normalised with ``mean`` / ``std``
    (``ToTensor`` + ``Normalize``, as the eval transform)."""
    if len(paths) != len(boxes):
        raise ValueError(f"boxes: expected one per image ({len(paths)}), got {len(boxes)}")
    finish = T.Compose([T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))])
    images, out_boxes, sizes = [], [], []
    for path, box in zip(paths, boxes, strict=True):
        img = load_rgb(Path(path))
        region = pixel_box(geometry.to_original(box, img.size), img.size)
        images.append(finish(crop_resize(img, region, size)))
        out_boxes.append(tuple(float(v) for v in region))
        sizes.append(img.size)
    stacked = torch.stack(images) if images else torch.empty(0, 3, int(size), int(size))
    return OriginalCrops(stacked, out_boxes, sizes)
