"""The reports' augmentations as named presets: a per-image form (PIL based) and a batched form (tensor ops).

``build_transform(preset, img_size, train=..., mean=..., std=..., **options)``; ``list_presets()``. Mean and std come
from the model's ``pretrained_cfg`` (see ``fgvc_lib.models.factory.data_config``), never hard-coded here. The
batched forms (:mod:`fgvc_lib.data.batch_presets`) are used through
:func:`fgvc_lib.data.batch_transforms.build_batch_transform` when ``batch_augment`` is on.

``PRESETS`` (a :class:`fgvc_lib.registry.Registry` of :class:`Preset`) holds both forms of every preset;
``register_preset(name, per_image, batched)`` registers them together (a registered name is an error unless
``replace=True``). Options (keywords after ``img_size, mean, std``; the same for both forms):

- ``cifar100``: noise_std (0.05), noise_p (0.5), the cifar100 parameters of the same names
- ``bird``, ``light``, ``inat``, ``multilabel``, ``none``: no option
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from ..registry import Registry, accepted_kwargs
from . import batch_presets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomShift:
    """Translate by a uniform random sub-pixel offset in [-shift, shift] on each axis (bicubic)."""

    def __init__(self, shift: float = 3.0):
        self.shift = float(shift)

    def __call__(self, img: Image.Image) -> Image.Image:
        dx, dy = (float(v) for v in (torch.rand(2) * 2 - 1) * self.shift)
        return img.transform(img.size, Image.AFFINE, (1, 0, dx, 0, 1, dy), resample=Image.BICUBIC)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shift={self.shift})"


class ToHSV:
    """Convert to the HSV colour space and keep the H, S, V bytes as the three channels (as the report does)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return Image.frombytes("RGB", img.size, img.convert("HSV").tobytes())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _finish(img_size: int, mean: Sequence[float], std: Sequence[float]) -> list[Callable]:
    return [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]


def _eval(img_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    return T.Compose([T.Resize((img_size, img_size)), *_finish(img_size, mean, std)])


def _bird_train(img_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    group = [
        T.RandomAffine(degrees=30, shear=50, fill=0),
        T.RandomGrayscale(p=0.5),
        T.RandomHorizontalFlip(p=0.5),
        T.RandomPerspective(distortion_scale=0.5, p=0.5, fill=0),
        T.RandomVerticalFlip(p=0.5),
        T.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5),
        T.Grayscale(num_output_channels=3),
        RandomShift(3),
        T.RandomApply([ToHSV()], p=0.5),
    ]
    return T.Compose(
        [
            T.RandomResizedCrop(img_size),
            T.RandomApply(group, p=0.5),
            T.RandomApply([T.RandomRotation((-90, 90))], p=0.5),
            *_finish(img_size, mean, std),
        ]
    )


def _light_train(img_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    return T.Compose(
        [
            T.RandomResizedCrop(img_size, scale=(0.35, 1.0)),
            T.RandomHorizontalFlip(),
            *_finish(img_size, mean, std),
        ]
    )


def _none_train(img_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    return _eval(img_size, mean, std)


def _cifar100_train(
    img_size: int, mean: Sequence[float], std: Sequence[float], noise_std: float = 0.05, noise_p: float = 0.5
) -> T.Compose:
    """The cifar100 report: rotation +-10 degrees, horizontal flip, AutoAugment (CIFAR-10 policy) and
    Gaussian noise ``I + sigma * s``, s ~ N(0, 1), applied with probability ``noise_p`` (clipped to [0, 1])."""
    from torchvision.transforms import v2

    return T.Compose(
        [
            T.Resize((img_size, img_size)),
            T.RandomRotation(10),
            T.RandomHorizontalFlip(),
            T.AutoAugment(T.AutoAugmentPolicy.CIFAR10),
            T.ToTensor(),
            T.RandomApply([v2.GaussianNoise(mean=0.0, sigma=noise_std, clip=True)], p=noise_p),
            T.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def _inat_train(img_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """BBN's official iNaturalist training transform: RandomResizedCrop(scale 0.08-1) + horizontal flip."""
    return T.Compose(
        [
            T.RandomResizedCrop(img_size, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            *_finish(img_size, mean, std),
        ]
    )


def _multilabel_train(img_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """The multi-label report: RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3), horizontal flip, rotation +-25."""
    return T.Compose(
        [
            T.RandomResizedCrop(img_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
            T.RandomHorizontalFlip(),
            T.RandomRotation(25),
            *_finish(img_size, mean, std),
        ]
    )


@dataclass(frozen=True)
class Preset:
    """The two forms of an augmentation preset: ``per_image(img_size, mean, std, **options)`` returns a
    per-sample (PIL) training transform; ``batched(x, img_size, generator, /, **options)`` augments a float batch
    in [0, 1] on its device (None: the preset cannot be used with ``batch_augment``)."""

    per_image: Callable[..., Callable]
    batched: Callable[..., torch.Tensor] | None = None


class _PresetRegistry(Registry[Preset]):
    def factory_of(self, name: str) -> Callable[..., Callable]:
        return self.get(name).per_image


PRESETS = _PresetRegistry("augmentation preset")
"""Augmentation presets by name; ``PRESETS.create(name, img_size, mean, std, **options)`` builds the per-image form."""
list_presets = PRESETS.names


def _options(fn: Callable, positional: int) -> set[str] | None:
    """The option names ``fn`` takes after its first ``positional`` arguments (None: any, ``**kwargs``)."""
    accepted = accepted_kwargs(fn)
    return None if accepted is None else accepted - set(list(inspect.signature(fn).parameters)[:positional])


def register_preset(
    name: str,
    per_image: Callable[..., Callable] | None = None,
    batched: Callable[..., torch.Tensor] | None = None,
    *,
    replace: bool = False,
) -> Callable:
    """Register preset ``name``'s per-image form and its batched form together (see :class:`Preset`); both must
    take the same options. Without ``per_image``: a decorator taking it (``@register_preset(name, batched=f)``).
    A registered name is an error unless ``replace=True``. Returns ``per_image``."""

    def add(fn: Callable[..., Callable]) -> Callable[..., Callable]:
        if batched is not None:
            mine, theirs = _options(fn, 3), _options(batched, 3)
            if mine is not None and theirs is not None and mine != theirs:
                raise ValueError(
                    f"augmentation preset {name!r}: the per-image form takes options ({', '.join(sorted(mine))}) "
                    f"but the batched form ({', '.join(sorted(theirs))})"
                )
        PRESETS.register(name, Preset(fn, batched), replace=replace)
        return fn

    return add if per_image is None else add(per_image)


register_preset("bird", _bird_train, batch_presets.bird)
register_preset("light", _light_train, batch_presets.light)
register_preset("none", _none_train, batch_presets.resize_only)
register_preset("cifar100", _cifar100_train, batch_presets.cifar100)
register_preset("inat", _inat_train, batch_presets.inat)
register_preset("multilabel", _multilabel_train, batch_presets.multilabel)


def preset_options(preset: str, params: Any) -> dict[str, Any]:
    """The options of ``preset`` taken from a parameters object by name (cifar100: ``noise_std``, ``noise_p``;
    the others: none), for ``build_transform`` / ``build_batch_transform(..., **preset_options(p.augment, p))``."""
    return PRESETS.options(preset, params, positional=3)


def build_transform(
    preset: str,
    img_size: int,
    *,
    train: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **options: float,
) -> Callable:
    """Training transform of a named preset (``options`` go to presets that take them, e.g. ``noise_std``),
    or the shared eval transform (Resize + normalise). Options are checked either way."""
    builder = PRESETS.check(preset, img_size, mean, std, **options)
    return builder(img_size, mean, std, **options) if train else _eval(img_size, mean, std)


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(C,H,W) or (B,C,H,W) normalised tensor -> float HWC/BHWC array in [0, 1] for display."""
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    img = (x.detach().cpu() * s + m).clamp(0, 1)
    return img.movedim(-3, -1).numpy()
