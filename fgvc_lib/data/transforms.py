"""The reports' augmentations as named presets (per-sample, PIL based).

``build_transform(preset, img_size, train=..., mean=..., std=...)``; ``list_presets()``. Mean and std come
from the model's ``pretrained_cfg`` (see ``fgvc_lib.models.factory.data_config``), never hard-coded here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from ..registry import check_kwargs, unknown_name_error

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


_PRESETS: dict[str, Callable[..., T.Compose]] = {
    "bird": _bird_train,
    "light": _light_train,
    "none": _none_train,
    "cifar100": _cifar100_train,
    "inat": _inat_train,
    "multilabel": _multilabel_train,
}


def register_preset(name: str) -> Callable:
    """Decorator: register a training-transform builder ``f(img_size, mean, std) -> transform``."""

    def wrap(fn: Callable) -> Callable:
        _PRESETS[name] = fn
        return fn

    return wrap


def list_presets() -> list[str]:
    return sorted(_PRESETS)


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
    or the shared eval transform (Resize + normalise)."""
    if preset not in _PRESETS:
        raise unknown_name_error("augmentation preset", preset, list_presets())
    if not train:
        return _eval(img_size, mean, std)
    builder = _PRESETS[preset]
    check_kwargs("augmentation preset", preset, builder, options)
    return builder(img_size, mean, std, **options)


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(C,H,W) or (B,C,H,W) normalised tensor -> float HWC/BHWC array in [0, 1] for display."""
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    img = (x.detach().cpu() * s + m).clamp(0, 1)
    return img.movedim(-3, -1).numpy()
