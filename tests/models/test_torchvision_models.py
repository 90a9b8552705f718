"""``torchvision:<name>`` models through create_model: the Classifier interface, CAM, weights and errors.

No test downloads anything: hub weights are faked by patching ``torchvision.models.get_model``."""

import numpy as np
import pytest
import torch
from torch import nn

from fgvc_lib.cam import compute_cams
from fgvc_lib.models import Classifier, PretrainedWeightsUnavailable, create_model, data_config, list_models

K = 4
SIZE = 64

# name -> (kind, feature width known for the architecture, feature-map channels)
CASES = {
    "resnet18": ("torchvision_resnet", 512, 512),
    "efficientnet_b0": ("torchvision", 1280, 1280),
    "mobilenet_v3_small": ("torchvision", 1024, 576),
    "convnext_tiny": ("torchvision", 768, 768),
    "densenet121": ("torchvision", 1024, 1024),
    "regnet_x_400mf": ("torchvision", 400, 400),
}


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(CASES))
def test_builds_the_torchvision_network_behind_the_interface(name, images):
    import torchvision.models as tvm

    kind, width, channels = CASES[name]
    torch.manual_seed(0)
    model = create_model(f"torchvision:{name}", K).eval()
    assert isinstance(model, Classifier)
    assert type(model.net) is type(tvm.get_model(name, weights=None))
    assert (model.kind, model.name, model.num_classes, model.num_features) == (
        kind,
        f"torchvision:{name}",
        K,
        width,
    )
    head = model.classifier()
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (width, K)
    with torch.no_grad():
        fmap = model.forward_features(images)
        composed = model.head(model.pool(fmap))
        direct = model.net(images)  # torchvision's own forward
    assert fmap.ndim == 4 and fmap.shape[1] == channels
    torch.testing.assert_close(composed, direct)
    torch.testing.assert_close(model(images), direct)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_tiny"])
def test_features_only_and_cam(name, images):
    torch.manual_seed(0)
    features = create_model(f"torchvision:{name}", 0).eval()
    with torch.no_grad():
        out = features(images)
        pooled = features.pool(features.forward_features(images))
    assert out.shape == (2, features.num_features)
    torch.testing.assert_close(out, pooled)
    assert isinstance(features.classifier(), nn.Identity)

    model = create_model(f"torchvision:{name}", K).eval()
    assert model.cam_reshape_transform is None
    seen = []
    handle = model.cam_layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        cams = compute_cams(model, images, [0, 3])
    finally:
        handle.remove()
    assert seen and len(seen[0]) == 4  # a (B, C, H, W) feature map
    assert SIZE // seen[0][-1] <= 16  # the stride-16 stage (docs/cam_layers.md)
    assert cams.shape == (2, SIZE, SIZE) and np.isfinite(cams).all()
    assert cams.min() >= 0.0 and cams.max() <= 1.0 + 1e-6


def test_torchvision_swin_is_channels_last_and_cam_uses_last_norm1(images):
    model = create_model("torchvision:swin_t", K).eval()
    assert model.feature_layout == "NHWC"
    assert model.cam_layer is model.net.features[-1][-1].norm1  # docs/swin_cam_layer.md
    with torch.no_grad():
        torch.testing.assert_close(model(images), model.net(images))
    cams = compute_cams(model, images, [1, 2])
    assert cams.shape == (2, SIZE, SIZE) and np.isfinite(cams).all()


def test_torchvision_swin_v2_keeps_the_final_map():
    model = create_model("torchvision:swin_v2_t", K)
    assert model.cam_layer is model.feature_tap  # post-norm blocks: norm1 is not the block input


def test_data_config_follows_default_weights():
    cfg = data_config(create_model("torchvision:efficientnet_b1", 2))
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert cfg["input_size"] == (3, 240, 240)  # DEFAULT = IMAGENET1K_V2: crop 240, bilinear
    assert cfg["interpolation"] == "bilinear"
    assert data_config(create_model("torchvision:efficientnet_b0", 2))["interpolation"] == "bicubic"


def test_upsample_and_builder_kwargs(images):
    model = create_model("torchvision:mobilenet_v2", K, upsample_size=96, dropout=0.5).eval()
    assert model.upsample_size == 96
    assert model.net.classifier[0].p == 0.5
    with torch.no_grad():
        assert model.forward_features(images).shape[-1] == 3  # 96 px / 32


def test_list_models_offers_torchvision_names():
    names = list_models("torchvision:")
    assert "torchvision:resnet50" in names and "torchvision:efficientnet_b0" in names
    assert "torchvision:vit_b_16" not in names  # no feature map


def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError) as info:
        create_model("torchvision:resnet5", 3)
    msg = str(info.value)
    assert "Unknown model 'torchvision:resnet5'" in msg
    assert "closest names" in msg and "torchvision:resnet50" in msg


def test_unsupported_name_says_why():
    with pytest.raises(ValueError, match="Unsupported model 'torchvision:vit_b_16'.*feature map"):
        create_model("torchvision:vit_b_16", 3)


@pytest.fixture
def fake_hub(monkeypatch):
    """``get_model(..., weights=...)`` records the request and builds a seeded random net, never downloads."""
    import torchvision.models as tvm

    calls = []
    real = tvm.get_model

    def fake(name, weights=None, **kwargs):
        calls.append((name, weights, kwargs))
        torch.manual_seed(123)
        return real(name, weights=None, **kwargs)

    def forbid(*args, **kwargs):
        raise AssertionError(f"download attempted: {args} {kwargs}")

    monkeypatch.setattr(tvm, "get_model", fake)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", forbid)
    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", forbid)
    return calls


def test_pretrained_without_download_raises_with_instructions(fake_hub):
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        create_model("torchvision:resnet50", 10, pretrained=True)
    msg = str(info.value)
    assert "torchvision:resnet50" in msg and "weights:" in msg and "download: true" in msg
    assert fake_hub == []  # nothing was built


def test_pretrained_with_download_asks_for_default_weights_and_replaces_the_head(fake_hub):
    model = create_model("torchvision:resnet18", 10, pretrained=True, download=True)
    assert fake_hub == [("resnet18", "DEFAULT", {})]
    head = model.classifier()
    assert head.out_features == 10
    assert 0.005 < head.weight.std().item() < 0.015  # reset_head: small new head
    assert torch.count_nonzero(head.bias) == 0


def test_pretrained_from_local_weights_file(tmp_path, fake_hub):
    import torchvision.models as tvm

    torch.manual_seed(7)
    source = tvm.resnet18(weights=None)  # a 1000-class "ImageNet" checkpoint
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model = create_model("torchvision:resnet18", 5, pretrained=True, weights=str(path))
    assert fake_hub == [("resnet18", None, {"num_classes": 5})]
    torch.testing.assert_close(model.net.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(model.net.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.classifier().out_features == 5


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    import torchvision.models as tvm

    path = tmp_path / "mobilenet.pth"
    torch.save(tvm.mobilenet_v2(weights=None).state_dict(), path)
    with pytest.raises(PretrainedWeightsUnavailable, match="does not fit"):
        create_model("torchvision:resnet18", 5, pretrained=True, weights=str(path))
