"""Tests for the augmentation presets, RandomShift, ToHSV and denormalize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from fgvc_lib.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomShift,
    ToHSV,
    build_transform,
    denormalize,
    list_presets,
)

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def colour_image() -> Image.Image:
    """Colour noise: every crop of it is far from grayscale."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8), "RGB")


def test_list_presets() -> None:
    assert list_presets() == ["bird", "cifar100", "inat", "light", "multilabel", "none"]


# ------------------------------------------------------------------------------------------ bird structure
def test_bird_preset_structure_matches_report() -> None:
    t = build_transform("bird", 96, train=True, mean=MEAN, std=STD)
    assert isinstance(t, T.Compose)
    steps = t.transforms
    assert [type(s) for s in steps] == [
        T.RandomResizedCrop,
        T.RandomApply,
        T.RandomApply,
        T.ToTensor,
        T.Normalize,
    ]

    crop = steps[0]
    assert crop.size == (96, 96)

    group = steps[1]
    assert group.p == 0.5
    inner = list(group.transforms)
    assert [type(s) for s in inner] == [
        T.RandomAffine,
        T.RandomGrayscale,
        T.RandomHorizontalFlip,
        T.RandomPerspective,
        T.RandomVerticalFlip,
        T.ColorJitter,
        T.Grayscale,
        RandomShift,
        T.RandomApply,
    ]
    affine, rgray, hflip, persp, vflip, jitter, gray, shift, hsv = inner
    assert list(affine.degrees) == [-30.0, 30.0]
    assert list(affine.shear) == [-50.0, 50.0]
    assert rgray.p == 0.5
    assert hflip.p == 0.5 and vflip.p == 0.5
    assert persp.distortion_scale == 0.5 and persp.p == 0.5
    assert jitter.brightness == (0.5, 1.5)
    assert jitter.contrast == (0.5, 1.5)
    assert jitter.saturation == (0.5, 1.5)
    assert jitter.hue == (-0.5, 0.5)
    assert gray.num_output_channels == 3
    assert shift.shift == 3.0
    assert [type(s) for s in hsv.transforms] == [ToHSV]

    rotation = steps[2]
    assert rotation.p == 0.5
    assert [type(s) for s in rotation.transforms] == [T.RandomRotation]
    assert list(rotation.transforms[0].degrees) == [-90.0, 90.0]

    assert list(steps[4].mean) == list(MEAN) and list(steps[4].std) == list(STD)


def test_default_normalisation_is_imagenet() -> None:
    norm = build_transform("bird", 32, train=True).transforms[-1]
    assert list(norm.mean) == list(IMAGENET_MEAN) and list(norm.std) == list(IMAGENET_STD)


@pytest.mark.parametrize("preset", ["bird", "light", "none"])
def test_train_output_shape_and_dtype(preset: str, colour_image: Image.Image) -> None:
    t = build_transform(preset, 24, train=True, mean=MEAN, std=STD)
    torch.manual_seed(0)
    for _ in range(5):
        x = t(colour_image)
        assert isinstance(x, torch.Tensor)
        assert x.shape == (3, 24, 24) and x.dtype == torch.float32
        assert torch.isfinite(x).all()


def test_light_preset_structure() -> None:
    steps = build_transform("light", 20, train=True).transforms
    assert [type(s) for s in steps] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert steps[0].size == (20, 20) and steps[0].scale == (0.35, 1.0)


# ------------------------------------------------------------------------------------------ eval
@pytest.mark.parametrize("preset", ["bird", "light", "none"])
def test_eval_transform_structure(preset: str) -> None:
    t = build_transform(preset, 28, train=False, mean=MEAN, std=STD)
    steps = t.transforms
    assert [type(s) for s in steps] == [T.Resize, T.ToTensor, T.Normalize]
    assert tuple(steps[0].size) == (28, 28)


def test_eval_transform_is_deterministic_and_invertible(colour_image: Image.Image) -> None:
    size = 28
    t = build_transform("bird", size, train=False, mean=MEAN, std=STD)
    torch.manual_seed(0)
    a = t(colour_image)
    torch.manual_seed(123)
    b = t(colour_image)
    assert a.shape == (3, size, size)
    assert torch.equal(a, b)
    back = denormalize(a, MEAN, STD)
    assert back.shape == (size, size, 3) and back.dtype == np.float32
    expected = np.asarray(colour_image.resize((size, size), Image.BILINEAR), dtype=np.float64) / 255.0
    assert np.abs(back - expected).max() <= 1.0 / 255.0
    # batched input gives BHWC
    batch = denormalize(torch.stack([a, a]), MEAN, STD)
    assert batch.shape == (2, size, size, 3)
    np.testing.assert_array_equal(batch[1], back)


def test_denormalize_clamps_to_unit_range() -> None:
    x = torch.full((3, 2, 2), 100.0)
    x[:, 0, 0] = -100.0
    out = denormalize(x, MEAN, STD)
    assert out[0, 0].tolist() == [0.0, 0.0, 0.0] and out[1, 1].tolist() == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------ RandomShift / ToHSV
def _centroid(img: Image.Image) -> tuple[float, float]:
    a = np.asarray(img, dtype=np.float64)[..., 0]
    ys, xs = np.mgrid[: a.shape[0], : a.shape[1]]
    return float((a * xs).sum() / a.sum()), float((a * ys).sum() / a.sum())


def test_random_shift_moves_a_bright_pixel_by_the_drawn_offset() -> None:
    arr = np.zeros((31, 31, 3), dtype=np.uint8)
    arr[15, 15] = 255
    img = Image.fromarray(arr, "RGB")
    shift = RandomShift(3)
    moved = []
    for seed in range(30):
        torch.manual_seed(seed)
        dx, dy = ((torch.rand(2) * 2 - 1) * 3).tolist()  # the draw RandomShift makes
        torch.manual_seed(seed)
        out = shift(img)
        assert out.size == img.size and out.mode == "RGB"
        cx, cy = _centroid(out)
        # content moves by (-dx, -dy): the affine samples the input at (x + dx, y + dy)
        assert cx - 15 == pytest.approx(-dx, abs=0.15)
        assert cy - 15 == pytest.approx(-dy, abs=0.15)
        assert abs(cx - 15) <= 3.05 and abs(cy - 15) <= 3.05
        moved.append(max(abs(cx - 15), abs(cy - 15)))
    assert max(moved) > 2.0  # it really shifts, by up to the full range


def test_random_shift_zero_is_identity(colour_image: Image.Image) -> None:
    torch.manual_seed(0)
    np.testing.assert_array_equal(np.asarray(RandomShift(0)(colour_image)), np.asarray(colour_image))
    assert repr(RandomShift(3)) == "RandomShift(shift=3.0)"


def test_to_hsv_matches_pil(colour_image: Image.Image) -> None:
    out = ToHSV()(colour_image)
    assert out.mode == "RGB" and out.size == colour_image.size
    expected = np.asarray(colour_image.convert("HSV"))
    np.testing.assert_array_equal(np.asarray(out), expected)
    assert not np.array_equal(np.asarray(out), np.asarray(colour_image))
    gray = Image.new("RGB", (3, 2), (90, 90, 90))
    assert np.asarray(ToHSV()(gray)).reshape(-1, 3).tolist() == [[0, 0, 90]] * 6


# ------------------------------------------------------------------------------------------ errors
def test_unknown_preset_lists_presets_and_suggests() -> None:
    with pytest.raises(ValueError) as exc:
        build_transform("brid", 32, train=True)
    msg = str(exc.value)
    assert (
        "'brid'" in msg
        and "(bird, cifar100, inat, light, multilabel, none)" in msg
        and "did you mean 'bird'?" in msg
    )
    with pytest.raises(ValueError) as exc:
        build_transform("zzzzzz", 32, train=False)
    assert "(bird, cifar100, inat, light, multilabel, none)" in str(exc.value) and "did you mean" not in str(
        exc.value
    )


# ------------------------------------------------------------------------------------------ statistics
def test_bird_preset_grayscale_share(colour_image: Image.Image) -> None:
    """Expected shares, per draw, on a colourful image:

    * the group is applied with p=0.5; inside it Grayscale(3) always runs and RandomShift keeps a gray image
      gray, then ToHSV runs with p=0.5 and turns gray (v, v, v) into (0, 0, v): channels no longer equal;
    * the group is skipped with p=0.5: the colour crop stays colour (rotation fills with black, also gray).

    So P(all channels equal) = 0.5 * 0.5 = 0.25 and P(H = S = 0, i.e. HSV of gray) = 0.25: together 0.5.
    With a group probability of 0.25 these would be 0.125 / 0.25, with 1.0 they would be 0.5 / 1.0.
    """
    n = 400
    t = build_transform("bird", 16, train=True, mean=MEAN, std=STD)
    torch.manual_seed(0)
    gray = hsv_of_gray = 0
    for _ in range(n):
        d = denormalize(t(colour_image), MEAN, STD)
        if np.abs(d[..., 0] - d[..., 1]).max() < 1e-4 and np.abs(d[..., 1] - d[..., 2]).max() < 1e-4:
            gray += 1
        elif np.abs(d[..., :2]).max() < 1e-4:
            hsv_of_gray += 1
    # binomial sd is ~0.022 for p=0.25 and ~0.025 for p=0.5 with n=400: bounds are > 3.5 sd away
    assert 0.17 < gray / n < 0.33
    assert 0.17 < hsv_of_gray / n < 0.33
    assert 0.40 < (gray + hsv_of_gray) / n < 0.60


def test_cifar100_preset_structure_and_noise() -> None:
    from torchvision import transforms as T
    from torchvision.transforms import v2

    tf = build_transform(
        "cifar100", 32, train=True, mean=(0.5,) * 3, std=(0.25,) * 3, noise_std=0.1, noise_p=1.0
    )
    kinds = [type(t).__name__ for t in tf.transforms]
    assert kinds == [
        "Resize",
        "RandomRotation",
        "RandomHorizontalFlip",
        "AutoAugment",
        "ToTensor",
        "RandomApply",
        "Normalize",
    ]
    rotation, autoaug, noise = tf.transforms[1], tf.transforms[3], tf.transforms[5]
    assert list(rotation.degrees) == [-10.0, 10.0]
    assert autoaug.policy == T.AutoAugmentPolicy.CIFAR10
    assert noise.p == 1.0 and isinstance(noise.transforms[0], v2.GaussianNoise)
    torch.manual_seed(0)
    flat = torch.full((3, 64, 64), 0.5)
    noisy = noise(flat)
    assert float((noisy - flat).std()) == pytest.approx(0.1, rel=0.05)
    with pytest.raises(TypeError, match="noise_sd"):
        build_transform("cifar100", 32, train=True, noise_sd=0.1)
