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


def test_swin_cam_layer_is_norm1_of_the_last_block():
    """Swin V1's CAM target is ``layers[-1].blocks[-1].norm1`` (docs/swin_cam_layer.md), channels-last too."""
    torch.manual_seed(2)
    model = create_model("swin_tiny_patch4_window7_224", 5, upsample_size=64).eval()
    assert model.cam_layer is model.net.layers[-1].blocks[-1].norm1
    seen = []
    handle = model.cam_layer.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    try:
        cams = compute_cams(model, torch.rand(2, 3, 32, 32), [1, 2])
    finally:
        handle.remove()
    assert seen and seen[0] == (2, 2, 2, 768)  # (B, H, W, C): the reshape comes from the model's layout
    _check(cams, 32, 2)


def test_swin_v2_keeps_the_final_map():
    """Swin V2 blocks are post-norm (norm1 normalises the attention output), so the final map stays."""
    model = create_model("swinv2_tiny_window8_256", 3, img_size=64, window_size=4)
    assert model.cam_layer is model.feature_tap


def test_swin_cam_on_the_final_map_follows_the_evidence():
    """A Swin whose head reads only channel 0: Grad-CAM on the final map (``feature_tap``, passed explicitly)
    peaks where that map's channel 0 is largest."""
    torch.manual_seed(0)
    model = create_model("swin_tiny_patch4_window7_224", 2, upsample_size=128).eval()
    head = model.classifier()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[0, 0] = 1.0
        x = torch.rand(1, 3, 32, 32)
        fmap = model.to_nchw(model.forward_features(x))[0, 0]  # (4, 4)
    cams = compute_cams(model, x, [0], layer=model.feature_tap)
    peak_cell = np.unravel_index(np.argmax(cams[0]), cams[0].shape)
    cell = (peak_cell[0] * 4 // 32, peak_cell[1] * 4 // 32)
    expected = np.unravel_index(int(torch.relu(fmap).argmax()), (4, 4))
    assert cell == tuple(int(v) for v in expected)


# ---------------------------------------------------------------------------------------------- default layer
def _stride_at(model, layer, size=224):
    """Nominal output stride of ``layer`` for a ``size`` px input (a power of two)."""
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    finally:
        handle.remove()
    shape = seen[0]
    side = shape[1] if getattr(model, "feature_layout", "NCHW") == "NHWC" else shape[-1]
    return 2 ** round(np.log2(size / side))


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("tf_efficientnet_lite0", "net.blocks.4"),
        ("efficientnet_b0", "net.blocks.4"),
        ("efficientnet-b4", "net._blocks.21"),
        ("mnasnet_100", "net.blocks.4"),
        ("inception_v3", "net.Mixed_6e"),
        ("resnet18", "net.layer3"),
        ("resnetblur50", "net.layer3"),
        ("antialiased_resnet50", "net.layer3"),
        ("wide_resnet50_2", "net.layer3"),
        ("torchvision:resnet18", "net.layer3"),
        ("torchvision:efficientnet_b0", "net.features.5"),
        ("torchvision:mobilenet_v3_small", "net.features.8"),
        ("torchvision:convnext_tiny", "net.features.5"),
        ("torchvision:regnet_y_400mf", "net.trunk_output.block3"),
        ("torchvision:shufflenet_v2_x0_5", "net.stage3"),
        ("torchvision:mnasnet0_5", "net.layers.11"),
        ("torchvision:densenet121", "net.features.denseblock3"),
        ("small_cnn", "feature_tap"),  # its last map is at stride 16 already (four 2x2 pools)
    ],
)
def test_default_cam_layer_has_stride_at_most_16(name, path):
    kwargs = {"img_size": 224} if name == "small_cnn" else {}
    model = create_model(name, 3, **kwargs)
    assert model.cam_layer_name == path
    assert model.cam_layer is model.get_submodule(path)
    assert _stride_at(model, model.cam_layer) <= 16
    if name != "small_cnn":
        assert _stride_at(model, model.feature_tap) == 32  # the former default, too coarse


@pytest.mark.parametrize("name", ["swin_tiny_patch4_window7_224", "torchvision:swin_t"])
def test_swin_keeps_its_documented_layer_at_stride_32(name):
    """The documented exception (docs/swin_cam_layer.md): Swin V1's last ``norm1`` sits in the last stage."""
    model = create_model(name, 3)
    assert model.cam_layer_name.endswith("norm1")
    assert _stride_at(model, model.cam_layer) == 32


def test_ensemble_and_bbn_default_cam_layers_have_stride_16():
    from fgvc_lib.models import create_ensemble
    from fgvc_lib.models.bbn import create_bbn

    ens = create_ensemble("logits", "resnet18", "tf_efficientnet_lite0", 3)
    assert ens.cam_layer_name == "model_a.net.layer3" and ens.cam_layer is ens.model_a.net.layer3
    bbn = create_bbn("resnet18", 3)
    assert bbn.cam_layer_name == "trunk.net.layer3" and bbn.cam_layer is bbn.trunk.net.layer3
    assert _stride_at(bbn, bbn.cam_layer) == 16
    _check(compute_cams(bbn, torch.rand(2, 3, 64, 64), [0, 2]), 64, 2)


def test_cam_layer_override_on_a_real_model():
    from fgvc_lib.cam import resolve_cam_layers

    model = create_model("tf_efficientnet_lite0", 3).eval()
    (layer,) = resolve_cam_layers(model, "net.blocks.2")
    assert layer is model.net.blocks[2]
    _check(compute_cams(model, torch.rand(2, 3, 64, 64), [0, 1], layer=[layer]), 64, 2)
    with pytest.raises(ValueError, match=r"'net\.block\.4'.*closest module names: net\.blocks\.4"):
        resolve_cam_layers(model, "net.block.4")
