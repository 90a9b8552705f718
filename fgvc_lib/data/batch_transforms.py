"""Batched, on-device versions of the augmentation presets of :mod:`fgvc_lib.data.transforms`.

``build_batch_transform(preset, img_size, train=..., mean=..., std=..., **options)`` returns a
:class:`BatchTransform`; ``list_batch_presets()`` lists the presets (the same names as ``transforms.list_presets()``).
A ``BatchTransform`` takes a whole batch, ``uint8`` ``(B, 3, H, W)`` (e.g. from a decode-once cache at a working size
``>= img_size``) or float in ``[0, 1]``, on any device, and returns float32 ``(B, 3, img_size, img_size)`` normalised
with ``mean`` / ``std`` on the same device (channels_last input stays channels_last).

The batched forms themselves, and how they follow the per-image presets, are in :mod:`fgvc_lib.data.batch_presets`
(their building blocks in :mod:`fgvc_lib.data.batch_ops`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..registry import check_kwargs
from .batch_ops import resize_eval
from .transforms import IMAGENET_MEAN, IMAGENET_STD, PRESETS

__all__ = ["BatchTransform", "build_batch_transform", "list_batch_presets", "batched_form"]


def list_batch_presets() -> list[str]:
    """Sorted names of the presets that have a batched form (all built-in ones)."""
    return [name for name in PRESETS.names() if PRESETS.get(name).batched is not None]


def batched_form(preset: str) -> Callable[..., Tensor]:
    """The batched form of ``preset``; a ValueError naming the preset when it was registered without one."""
    batched = PRESETS.get(preset).batched
    if batched is None:
        raise ValueError(
            f"augmentation preset {preset!r} has no batched form, so it cannot be used with batch_augment: "
            f"register both with register_preset({preset!r}, per_image, batched), or set batch_augment: false"
        )
    return batched


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
        self._augment = batched_form(preset) if self.is_train else None
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
        if self._augment is not None:
            return self._augment(img, self.img_size, generator, **self.options)
        return resize_eval(img, self.img_size)

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
    ``noise_std`` / ``noise_p``), or the shared eval transform (``train=False``). Options are checked either way;
    a preset registered without a batched form is a ValueError naming it."""
    check_kwargs("augmentation preset", preset, batched_form(preset), options)
    if int(img_size) < 1:
        raise ValueError(f"img_size must be positive, got {img_size}")
    if "noise_p" in options and not 0.0 <= float(options["noise_p"]) <= 1.0:
        raise ValueError(f"noise_p must be in [0, 1], got {options['noise_p']}")
    if "noise_std" in options and float(options["noise_std"]) < 0:
        raise ValueError(f"noise_std must be >= 0, got {options['noise_std']}")
    return BatchTransform(preset, img_size, train=train, mean=mean, std=std, options=options)
