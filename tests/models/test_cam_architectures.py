"""Grad-CAM on EfficientNet-B4 (NCHW) and on a small Swin (timm keeps it channels-last): the reshape comes
from the model's own layout and the activation's shape, never from a hard-coded grid."""

import numpy as np
import pytest
import torch

from fgvc_lib.cam import compute_cams
from fgvc_lib.models import create_model


def _check(cams: np.ndarray, size: int, n: int) -> None:
    assert cams.shape == (n, size, size) and cams.dtype == np.float32
    assert cams.min() >= 0.0 and cams.max() <= 1.0 + 1e-6
    assert np.ptp(cams) > 0.1  # a map, not a constant


def test_efficientnet_b4_cam():
    model = create_model("efficientnet-b4", 5).eval()
    assert model.cam_reshape_transform is None and model.feature_layout == "NCHW"
    _check(compute_cams(model, torch.rand(2, 3, 64, 64), [0, 3]), 64, 2)


@pytest.mark.parametrize(("upsample", "grid"), [(64, 2), (128, 4)])
def test_small_swin_cam_derives_the_token_grid(upsample, grid):
    model = create_model("swin_tiny_patch4_window7_224", 5, upsample_size=upsample).eval()
    assert model.feature_layout == "NHWC"
    with torch.no_grad():
        fmap = model.forward_features(torch.rand(1, 3, 32, 32))
    assert fmap.shape == (1, grid, grid, 768)  # channels-last inside timm's Swin
    assert model.cam_reshape_transform(fmap).shape == (1, 768, grid, grid)
    _check(compute_cams(model, torch.rand(2, 3, 32, 32), [1, 2]), 32, 2)


def test_swin_cam_follows_the_evidence():
    """A Swin whose head reads only channel 0: the CAM peaks where the last map's channel 0 is largest."""
    torch.manual_seed(0)
    model = create_model("swin_tiny_patch4_window7_224", 2, upsample_size=128).eval()
    head = model.classifier()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[0, 0] = 1.0
        x = torch.rand(1, 3, 32, 32)
        fmap = model.to_nchw(model.forward_features(x))[0, 0]  # (4, 4)
    cams = compute_cams(model, x, [0])
    peak_cell = np.unravel_index(np.argmax(cams[0]), cams[0].shape)
    cell = (peak_cell[0] * 4 // 32, peak_cell[1] * 4 // 32)
    expected = np.unravel_index(int(torch.relu(fmap).argmax()), (4, 4))
    assert cell == tuple(int(v) for v in expected)
