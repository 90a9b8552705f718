"""Grad-CAM maps, their peaks, the pointing game and overlays."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from fgvc_lib.cam import cam_peaks, compute_cams, overlay, pointing_game


def toy_model():
    """1x1 identity conv -> global average pool -> Linear(no bias) with W = [[1, -1], [0.5, 2]]."""
    conv = nn.Conv2d(2, 2, kernel_size=1, bias=False)
    linear = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        linear.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear), conv


def toy_input():
    a = torch.zeros(1, 2, 4, 4)
    a[0, 0, :2, :2] = 1.0
    a[0, 1, 2:, 2:] = 2.0
    return a


TOP_LEFT = np.zeros((4, 4), dtype=bool)
TOP_LEFT[:2, :2] = True
BOTTOM_RIGHT = np.zeros((4, 4), dtype=bool)
BOTTOM_RIGHT[2:, 2:] = True


def expected_cam(class_idx: int) -> np.ndarray:
    if class_idx == 0:
        # alpha = (1/16, -1/16): +1/16 top-left, -2/16 bottom-right -> ReLU -> normalised
        return TOP_LEFT.astype(float)
    # alpha = (0.5/16, 2/16): 0.5/16 top-left, 4/16 bottom-right -> normalised by 4/16
    return 0.125 * TOP_LEFT + 1.0 * BOTTOM_RIGHT


@pytest.mark.parametrize("class_idx", [0, 1])
def test_gradcam_toy_model(class_idx):
    model, conv = toy_model()
    cams = compute_cams(model, toy_input(), [class_idx], layer=conv)
    assert cams.shape == (1, 4, 4)
    np.testing.assert_allclose(cams[0], expected_cam(class_idx), atol=1e-4)


def test_gradcam_toy_model_default_target_is_prediction():
    model, conv = toy_model()
    with torch.no_grad():
        assert model(toy_input()).argmax(dim=1).item() == 1  # logits (-0.25, 1.125)
    cams = compute_cams(model, toy_input(), None, layer=conv)
    np.testing.assert_allclose(cams[0], expected_cam(1), atol=1e-4)


def test_gradcam_toy_batch_with_per_image_targets():
    model, conv = toy_model()
    batch = torch.cat([toy_input(), toy_input()])
    cams = compute_cams(model, batch, [1, 0], layer=conv)
    np.testing.assert_allclose(cams[0], expected_cam(1), atol=1e-4)
    np.testing.assert_allclose(cams[1], expected_cam(0), atol=1e-4)


def test_compute_cams_without_layer_needs_cam_layer():
    model, _ = toy_model()
    with pytest.raises(ValueError, match="cam_layer"):
        compute_cams(model, toy_input(), [0])


def test_compute_cams_unknown_method_suggests():
    model, conv = toy_model()
    with pytest.raises(ValueError, match="gradcam'"):
        compute_cams(model, toy_input(), [0], layer=conv, method="gradcm")


@pytest.fixture(scope="module")
def resnet():
    from fgvc_lib.models import create_model

    torch.manual_seed(0)
    return create_model("resnet18", 3)


@pytest.fixture(scope="module")
def images64():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_compute_cams_real_classifier_uses_cam_layer(resnet, images64):
    calls = []
    handle = resnet.cam_layer.register_forward_hook(lambda *args: calls.append(1))
    try:
        resnet.train()
        cams = compute_cams(resnet, images64, [0, 2])
    finally:
        handle.remove()
    assert calls, "the model's cam_layer was not run"
    assert cams.shape == (2, 64, 64)
    assert np.isfinite(cams).all()
    assert cams.min() >= 0.0 and cams.max() <= 1.0 + 1e-6
    assert not resnet.training  # docstring: model left in eval mode


def test_compute_cams_wrong_target_count(resnet, images64):
    with pytest.raises(ValueError, match="one per image"):
        compute_cams(resnet, images64, [0])
    with pytest.raises(ValueError, match="one per image"):
        compute_cams(resnet, images64, [0, 1, 2])


def test_cam_peaks_returns_x_y_of_maximum():
    cams = np.zeros((3, 3, 5))
    cams[0, 1, 4] = 1.0  # row 1, column 4
    cams[1, 2, 0] = 0.7  # row 2, column 0
    cams[1, 0, 0] = 0.3
    cams[2, 0, 2] = 0.9
    peaks = cam_peaks(cams)
    assert peaks.shape == (3, 2)
    np.testing.assert_array_equal(peaks, [[4, 1], [0, 2], [2, 0]])


def peaked(positions, h=10, w=10):
    cams = np.zeros((len(positions), h, w))
    for i, (x, y) in enumerate(positions):
        cams[i, y, x] = 1.0
    return cams


def test_pointing_game_counts_hits_within_radius():
    cams = peaked([(2, 3), (7, 7), (5, 1)])
    points = [(2.0, 5.0), (0.0, 0.0), (8.0, 5.0)]  # distances 2, ~9.9, 5
    assert pointing_game(cams, points, radius=5) == pytest.approx(2 / 3)
    assert pointing_game(cams, points, radius=4.9) == pytest.approx(1 / 3)
    assert pointing_game(cams, points, radius=10) == pytest.approx(1.0)
    assert pointing_game(cams, points, radius=1) == pytest.approx(0.0)


def test_pointing_game_skips_missing_points():
    cams = peaked([(2, 3), (7, 7), (5, 1)])
    assert pointing_game(cams, [None, (0.0, 0.0), (5.0, 2.0)], radius=2) == pytest.approx(0.5)
    assert pointing_game(cams, [(2.0, 3.0), None, None], radius=0) == pytest.approx(1.0)


def test_pointing_game_all_missing_is_nan():
    assert math.isnan(pointing_game(peaked([(1, 1), (2, 2)]), [None, None], radius=3))


def test_pointing_game_length_mismatch():
    with pytest.raises(ValueError, match="one per CAM"):
        pointing_game(peaked([(1, 1), (2, 2)]), [(1.0, 1.0)], radius=3)


def test_overlay_returns_uint8_rgb():
    rng = np.random.default_rng(0)
    image = rng.random((12, 9, 3))
    cam = rng.random((12, 9)).astype(np.float32)
    out = overlay(image, cam)
    assert out.dtype == np.uint8
    assert out.shape == (12, 9, 3)


def test_overlay_image_weight_one_is_the_image():
    image = np.zeros((6, 6, 3))
    image[..., 0] = 1.0
    image[2:, :, 1] = 0.5
    cam = np.linspace(0, 1, 36, dtype=np.float32).reshape(6, 6)
    out = overlay(image, cam, image_weight=1.0)
    np.testing.assert_allclose(out.astype(int), np.rint(image * 255), atol=1)
    # out-of-range pixels are clipped to [0, 1] first
    np.testing.assert_array_equal(
        overlay(image * 3 - 1, cam, image_weight=1.0),
        overlay(np.clip(image * 3 - 1, 0, 1), cam, image_weight=1.0),
    )


def test_overlay_cam_changes_colours():
    image = np.full((6, 6, 3), 0.5)
    cold = overlay(image, np.zeros((6, 6), dtype=np.float32), image_weight=0.5)
    hot = overlay(image, np.ones((6, 6), dtype=np.float32), image_weight=0.5)
    assert not np.array_equal(cold, hot)
    # jet colormap: zero activation is blue-ish, full activation red-ish (RGB order)
    assert cold[0, 0, 2] > cold[0, 0, 0]
    assert hot[0, 0, 0] > hot[0, 0, 2]
