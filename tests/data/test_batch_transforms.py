"""Tests for the batched augmentation presets (fgvc_lib.data.batch_transforms) against the per-sample PIL ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TVF

import fgvc_lib.data.batch_ops as ops
from fgvc_lib.data import transforms as pil_transforms
from fgvc_lib.data.batch_transforms import BatchTransform, build_batch_transform, list_batch_presets
from fgvc_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ToHSV, build_transform

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)
H0, W0, SIZE = 40, 48, 32  # the "working size" of the source images (not square) and the output size
RANDOM_PRESETS = ["bird", "cifar100", "inat", "light", "multilabel"]


def _pattern(k: int, height: int = H0, width: int = W0) -> np.ndarray:
    """A smooth, asymmetric colour image with no black pixel: R grows left -> right from 0.2 to 0.85, G top ->
    bottom, B a sine pattern (phase ``k``). Flips, crops and fills are all visible in it."""
    yy, xx = np.mgrid[:height, :width]
    r = 0.2 + 0.65 * (xx + 0.5) / width
    g = 0.2 + 0.65 * (yy + 0.5) / height
    b = 0.5 + 0.3 * np.sin(2 * np.pi * (xx / width + 0.25 * k)) * np.cos(np.pi * yy / height)
    return np.round(np.stack([r, g, b], -1) * 255).astype(np.uint8)


PATTERNS = [_pattern(k) for k in range(4)]


def _batch(n: int, patterns: list[np.ndarray] = PATTERNS) -> torch.Tensor:
    src = torch.from_numpy(np.stack(patterns)).permute(0, 3, 1, 2).contiguous()
    return src[torch.arange(n) % len(patterns)]


def _denorm(y: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    return y * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)


def _run_pil(transform, n: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    images = [Image.fromarray(a) for a in PATTERNS]
    return _denorm(torch.stack([transform(images[i % len(images)]) for i in range(n)]))


def _run_batched(transform: BatchTransform, n: int, seed: int = 0) -> torch.Tensor:
    return _denorm(transform(_batch(n), torch.Generator().manual_seed(seed)))


# ------------------------------------------------------------------------------------------ API
def test_list_batch_presets_matches_per_sample_presets() -> None:
    assert list_batch_presets() == ["bird", "cifar100", "inat", "light", "multilabel", "none"]
    assert list_batch_presets() == pil_transforms.list_presets()


@pytest.mark.parametrize("preset", ["bird", "cifar100", "inat", "light", "multilabel", "none"])
@pytest.mark.parametrize("train", [True, False])
def test_shapes_dtype_and_normalisation(preset: str, train: bool) -> None:
    t = build_batch_transform(preset, SIZE, train=train, mean=MEAN, std=STD)
    assert isinstance(t, BatchTransform) and isinstance(t, torch.nn.Module)
    x = _batch(6)
    for inp in (x, x.float() / 255, _batch(6, [_pattern(k, 20, 28) for k in range(2)])):  # uint8, float, smaller
        y = t(inp, torch.Generator().manual_seed(0))
        assert y.shape == (6, 3, SIZE, SIZE) and y.dtype == torch.float32 and y.device == inp.device
        assert y.is_contiguous() and torch.isfinite(y).all()
        d = _denorm(y)
        assert float(d.min()) >= -1e-5 and float(d.max()) <= 1 + 1e-5  # normalised [0, 1] values


def test_eval_normalises_with_mean_and_std() -> None:
    x = torch.full((2, 3, 10, 12), 51, dtype=torch.uint8)  # 0.2
    y = build_batch_transform("bird", 8, train=False, mean=MEAN, std=STD)(x)
    expected = (0.2 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(y, expected.view(1, 3, 1, 1).expand(2, 3, 8, 8), atol=1e-5, rtol=0)
    default = build_batch_transform("none", 8, train=True)
    torch.testing.assert_close(default.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(default.std.flatten(), torch.tensor(IMAGENET_STD))


@pytest.mark.parametrize("size", [24, 32])  # downscale 48x40 -> 24, upscale 20x28 -> 32
def test_eval_matches_pil_eval(size: int) -> None:
    pil_eval = build_transform("bird", size, train=False, mean=MEAN, std=STD)
    patterns = PATTERNS if size == 24 else [_pattern(k, 20, 28) for k in range(4)]
    expected = torch.stack([pil_eval(Image.fromarray(a)) for a in patterns])
    got = build_batch_transform("bird", size, train=False, mean=MEAN, std=STD)(_batch(4, patterns))
    assert float((got - expected).abs().mean()) < 0.05  # normalised units; measured ~0.005 (uint8 rounding)


@pytest.mark.parametrize("preset", RANDOM_PRESETS)
def test_generator_reproducible_and_parameters_per_sample(preset: str) -> None:
    t = build_batch_transform(preset, SIZE, train=True, mean=MEAN, std=STD)
    x = _batch(1).expand(8, -1, -1, -1).contiguous()  # the same image 8 times
    a = t(x, torch.Generator().manual_seed(1))
    b = t(x, torch.Generator().manual_seed(1))
    c = t(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # every sample gets its own parameters: no two outputs of the identical inputs are the same
    flat = a.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))


@pytest.mark.parametrize("preset", RANDOM_PRESETS)
def test_uint8_and_float_input_agree(preset: str) -> None:
    t = build_batch_transform(preset, SIZE, train=True, mean=MEAN, std=STD)
    x = _batch(8)
    a = t(x, torch.Generator().manual_seed(3))
    b = t(x.float() / 255, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_channels_last_input_stays_channels_last() -> None:
    x = _batch(4).contiguous(memory_format=torch.channels_last)
    for train in (True, False):
        y = build_batch_transform("light", SIZE, train=train)(x, torch.Generator().manual_seed(0))
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert y.shape == (4, 3, SIZE, SIZE)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("preset", ["bird", "cifar100", "inat", "light", "multilabel", "none"])
def test_runs_on_cuda(preset: str) -> None:
    t = build_batch_transform(preset, SIZE, train=True, mean=MEAN, std=STD)
    x = _batch(64).cuda()
    a = t(x, torch.Generator(device="cuda").manual_seed(0))
    b = t(x, torch.Generator(device="cuda").manual_seed(0))
    assert a.device == x.device and a.shape == (64, 3, SIZE, SIZE) and torch.equal(a, b)
    assert torch.isfinite(a).all()


def test_errors() -> None:
    with pytest.raises(ValueError) as exc:
        build_batch_transform("brid", 32, train=True)
    msg = str(exc.value)
    assert "'brid'" in msg and "(bird, cifar100, inat, light, multilabel, none)" in msg
    assert "did you mean 'bird'?" in msg
    with pytest.raises(TypeError, match="noise_sd"):
        build_batch_transform("cifar100", 32, train=True, noise_sd=0.1)
    with pytest.raises(TypeError, match="noise_std"):
        build_batch_transform("bird", 32, train=False, noise_std=0.1)
    with pytest.raises(ValueError, match="noise_p"):
        build_batch_transform("cifar100", 32, train=True, noise_p=1.5)
    t = build_batch_transform("cifar100", 32, train=True, noise_std=0.1, noise_p=1.0)
    assert "noise_std=0.1" in repr(t)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        t(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_cifar100_noise_options() -> None:
    """With the same generator the draws before the noise are identical, so the difference is the noise."""
    x = _batch(200)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    clean = _denorm(build_batch_transform("cifar100", SIZE, train=True, mean=MEAN, std=STD, noise_p=0.0)(x, gen()))
    noisy = build_batch_transform("cifar100", SIZE, train=True, mean=MEAN, std=STD, noise_std=0.1, noise_p=1.0)
    half = build_batch_transform("cifar100", SIZE, train=True, mean=MEAN, std=STD, noise_std=0.1, noise_p=0.5)
    diff = _denorm(noisy(x, gen())) - clean
    assert float(diff.std()) == pytest.approx(0.1, rel=0.15)  # a bit less: clipped at 0 and 1
    changed = (_denorm(half(x, gen())) - clean).flatten(1).abs().amax(1) > 0
    assert 0.4 < float(changed.float().mean()) < 0.6  # 200 samples: sd 0.035


# ------------------------------------------------------------------------------------------ single ops vs PIL
def _pil_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255


def _warp_one(src: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    stages = [ops.Stage(torch.eye(3)[None]), ops.Stage(inverse, check=True, projective=True)]
    return ops.warp(src, stages, src.shape[-1])[0][0]


def test_geometric_ops_match_pil_conventions() -> None:
    """Each op's inverse map against PIL with fixed parameters (bilinear on both sides): directions, centres, the
    +0.5 pixel-centre convention and the fill test must agree (a sign error would not show in the statistics)."""
    s = 32
    arr = _pattern(1, s, s)
    img, src = Image.fromarray(arr), torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    one = lambda v: torch.tensor([float(v)])  # noqa: E731
    bilinear = InterpolationMode.BILINEAR
    shear_x = ops.rotation(one(0), s)
    shear_x[:, 0, 1] += 0.25
    corners = [[0, 0], [s - 1, 0], [s - 1, s - 1], [0, s - 1]]
    quad = [[3, 5], [28, 2], [30, 27], [1, 29]]
    cases = {
        "affine": (TVF.affine(img, 20, [0, 0], 1.0, [30, 0], bilinear, fill=0), ops.affine(one(20), one(30), s)),
        "rotate": (TVF.rotate(img, 40, bilinear), ops.rotation(one(40), s)),
        "perspective": (TVF.perspective(img, corners, quad, bilinear, fill=0), ops.perspective_to(
            torch.tensor(quad, dtype=torch.float32)[None], s)),
        "shift": (img.transform(img.size, Image.AFFINE, (1, 0, 1.7, 0, 1, -2.3), resample=Image.BILINEAR),
                  ops.matrix(one(1), one(0), one(1.7), one(0), one(1), one(-2.3))),
        "shear_x": (TVF.affine(img, 0, [0, 0], 1.0, [float(np.degrees(np.arctan(0.25))), 0], bilinear, fill=0,
                               center=[0, 0]), shear_x),
        "hflip": (TVF.hflip(img), ops.hflip(1, s, torch.device("cpu"))),
        "vflip": (TVF.vflip(img), ops.vflip(1, s, torch.device("cpu"))),
    }
    for name, (pil_out, inverse) in cases.items():
        expected, got = _pil_tensor(pil_out), _warp_one(src, inverse)
        assert float((expected - got).abs().mean()) < 2 / 255, name
        filled_pil, filled = expected.sum(0) == 0, got.sum(0) == 0
        assert int((filled_pil ^ filled).sum()) <= 2, name  # the fill test is PIL's, up to rounding
    # RandomResizedCrop's crop box (i, j, h, w) + resize
    i, j, h, w = 5, 3, 20, 25
    crop = ops.matrix(one(w / s), one(0), one(j), one(0), one(h / s), one(i))
    got = ops.warp(src, [ops.Stage(crop)], s)[0][0]
    assert float((_pil_tensor(TVF.resized_crop(img, i, j, h, w, [s, s])) - got).abs().mean()) < 2 / 255


def test_colour_ops_match_pil() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    img, x = Image.fromarray(arr), torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    f = lambda v: torch.tensor([float(v)])  # noqa: E731
    cases = [
        (TVF.adjust_brightness(img, 1.3), ops.brightness(x.clone(), f(1.3), 0), 1),
        (TVF.adjust_contrast(img, 0.6), ops.contrast(x.clone(), f(0.6), 0), 1),
        (TVF.adjust_saturation(img, 1.4), ops.saturation(x.clone(), f(1.4), 0), 1),
        (TVF.adjust_hue(img, -0.45), ops.hue(x.clone(), f(-0.45), 0), 3),  # PIL's HSV is 8-bit
        (TVF.rgb_to_grayscale(img, 3), ops.gray3(x), 1),
        (ToHSV()(img), ops.pil_hsv(x), 0.1),
    ]
    for k, (pil_out, got, tol) in enumerate(cases):
        assert float((_pil_tensor(pil_out) - got).abs().mean()) * 255 < tol, k


# ------------------------------------------------------------------------------------------ statistics vs PIL
N_STAT = 2000  # augmentations per side (500 of each of the 4 patterns)
Z = 4.0  # standard errors of the difference allowed
SYSTEMATIC = {"scale": 0.03}  # [0, 1] units; 0.01 for the others
STATS_PER_PRESET = {
    "bird": ["mean", "std", "flip", "gray", "hsv_of_gray", "zero", "scale"],
    "cifar100": ["mean", "std", "flip", "zero"],
    "inat": ["mean", "std", "flip", "scale"],
    "light": ["mean", "std", "flip", "scale"],
    "multilabel": ["mean", "std", "flip", "zero", "scale"],
    "none": ["mean", "std"],
}


def _stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image statistics of outputs ``x`` (n, 3, s, s) in [0, 1]; each is compared by its mean over images."""
    s = x.shape[-1]
    out: dict[str, torch.Tensor] = {}
    for c in range(3):
        out[f"mean{c}"], out[f"std{c}"] = x[:, c].mean((1, 2)), x[:, c].std((1, 2))
    # flip probe: R grows left -> right in the source, so left brighter than right means a (net) flip
    out["flip"] = (x[:, 0, :, : s // 2].mean((1, 2)) > x[:, 0, :, s // 2 :].mean((1, 2))).float()
    equal = ((x[:, 0] - x[:, 1]).abs().amax((1, 2)) < 1e-3) & ((x[:, 1] - x[:, 2]).abs().amax((1, 2)) < 1e-3)
    out["gray"] = equal.float()  # R == G == B everywhere
    out["hsv_of_gray"] = ((x[:, :2].abs().amax((1, 2, 3)) < 1e-3) & ~equal).float()  # ToHSV of a gray image
    out["zero"] = (x.amax(1) < 1e-3).float().mean((1, 2))  # fill: no source pixel is black
    # crop-scale probe: R and G span 0.65 over the source's width / height, so the product of the visible ranges
    # is about the crop's area fraction
    span = lambda t: (t.amax((1, 2)) - t.amin((1, 2))) / 0.65  # noqa: E731
    out["scale"] = span(x[:, 0]) * span(x[:, 1])
    return out


def _differences(a: torch.Tensor, b: torch.Tensor, names: list[str]) -> dict[str, tuple[float, float]]:
    """Statistics whose means differ by more than the tolerance: name -> (difference, tolerance).

    Tolerance: Z = 4 standard errors of the difference of the two means (SEs from the per-image values of both
    runs, so binomial for the rates; 4 SE is a two-sided false-alarm rate ~6e-5 per statistic, and the runs are
    seeded, so the outcome is deterministic), plus a systematic allowance for the interpolation / 8-bit differences
    documented in the module: with 6000 samples per side they measured <= 0.005 for means, stds and the zero-fill
    fraction (allowance 0.01) and ~0.02 for the max-min scale probe, which is sensitive to interpolation (0.03).
    """
    sa, sb = _stats(a), _stats(b)
    failures = {}
    for key in sa:
        if key.rstrip("012") not in names:
            continue
        va, vb = sa[key].double(), sb[key].double()
        se = float(np.sqrt(float(va.var()) / len(va) + float(vb.var()) / len(vb)))
        diff = float(va.mean() - vb.mean())
        tol = Z * se + SYSTEMATIC.get(key, 0.01)
        if abs(diff) > tol:
            failures[key] = (diff, tol)
    return failures


_pil_cache: dict[str, torch.Tensor] = {}


def _pil_outputs(preset: str) -> torch.Tensor:
    if preset not in _pil_cache:
        _pil_cache[preset] = _run_pil(build_transform(preset, SIZE, train=True, mean=MEAN, std=STD), N_STAT)
    return _pil_cache[preset]


@pytest.mark.parametrize("preset", ["bird", "cifar100", "inat", "light", "multilabel", "none"])
def test_distribution_matches_pil_preset(preset: str) -> None:
    batched = _run_batched(build_batch_transform(preset, SIZE, train=True, mean=MEAN, std=STD), N_STAT, seed=1)
    assert _differences(_pil_outputs(preset), batched, STATS_PER_PRESET[preset]) == {}


def test_bird_rates_are_the_reports() -> None:
    """bird: P(gray) = P(group) * P(no ToHSV) = 0.25, P(HSV of gray) = 0.25; flips of the batched version alone."""
    stats = _stats(_run_batched(build_batch_transform("bird", SIZE, train=True, mean=MEAN, std=STD), N_STAT))
    # binomial sd at n = 2000: 0.0097 -> bounds 5 sd away
    assert abs(float(stats["gray"].mean()) - 0.25) < 0.05
    assert abs(float(stats["hsv_of_gray"].mean()) - 0.25) < 0.05
    stats = _stats(_run_batched(build_batch_transform("light", SIZE, train=True, mean=MEAN, std=STD), N_STAT))
    assert abs(float(stats["flip"].mean()) - 0.5) < 0.05  # sd 0.0112


def _wrong_bird(size: int, mean, std):
    """bird with its group applied with p=0.25 instead of 0.5."""
    t = build_transform("bird", size, train=True, mean=mean, std=std)
    t.transforms[1].p = 0.25
    return t


WRONG = {
    # name: (preset, wrong per-sample transform, the statistic that must catch it)
    "flip p=0.9": (
        "light",
        lambda s, m, d: T.Compose(
            [T.RandomResizedCrop(s, scale=(0.35, 1.0)), T.RandomHorizontalFlip(0.9),
             T.ToTensor(), T.Normalize(m, d)]
        ),
        "flip",
    ),
    "crop scale (0.5, 1)": (
        "inat",
        lambda s, m, d: T.Compose(
            [T.RandomResizedCrop(s, scale=(0.5, 1.0)), T.RandomHorizontalFlip(),
             T.ToTensor(), T.Normalize(m, d)]
        ),
        "scale",
    ),
    "bird group p=0.25": ("bird", _wrong_bird, "gray"),
    "rotation 45": (
        "multilabel",
        lambda s, m, d: T.Compose(
            [T.RandomResizedCrop(s, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
             T.RandomRotation(45), T.ToTensor(), T.Normalize(m, d)]
        ),
        "zero",
    ),
}


@pytest.mark.parametrize("wrong", list(WRONG))
def test_comparison_catches_a_wrong_distribution(wrong: str) -> None:
    """The same comparison, against a deliberately wrong per-sample transform, must fail on the statistic."""
    preset, build_wrong, statistic = WRONG[wrong]
    batched = _run_batched(build_batch_transform(preset, SIZE, train=True, mean=MEAN, std=STD), N_STAT, seed=1)
    failures = _differences(_run_pil(build_wrong(SIZE, MEAN, STD), N_STAT), batched, STATS_PER_PRESET[preset])
    assert statistic in failures, failures
