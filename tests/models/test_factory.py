"""create_model / list_models / data_config / reset_head over timm and efficientnet-pytorch names."""

import pytest
import torch
from torch import nn

from fgvc_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fgvc_lib.models import Classifier, PretrainedWeightsUnavailable, create_model, data_config, list_models

NAMES = ["resnet18", "tf_efficientnet_lite0", "efficientnet-b0"]
K = 5
B = 2
SIZE = 64

# Feature widths these architectures are known to have (not read back from the wrapper under test).
EXPECTED_FEATURES = {"resnet18": 512, "tf_efficientnet_lite0": 1280, "efficientnet-b0": 1280}


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(B, 3, SIZE, SIZE, generator=gen)


@pytest.fixture(scope="module", params=NAMES)
def model(request):
    torch.manual_seed(0)
    return create_model(request.param, K).eval()


@pytest.fixture(scope="module", params=NAMES)
def features_only(request):
    torch.manual_seed(0)
    return create_model(request.param, 0).eval()


def test_classifier_type_and_logit_shape(model, images):
    assert isinstance(model, Classifier)
    assert model.num_classes == K
    with torch.no_grad():
        out = model(images)
    assert out.shape == (B, K)
    assert torch.isfinite(out).all()


def test_backbone_kind_follows_name(model):
    expected = "efficientnet_pytorch" if model.name == "efficientnet-b0" else "timm"
    assert model.kind == expected


def test_forward_features_pool_head_compose_to_forward(model, images):
    with torch.no_grad():
        fmap = model.forward_features(images)
        pooled = model.pool(fmap)
        composed = model.head(pooled)
        direct = model(images)
    assert model.num_features == EXPECTED_FEATURES[model.name]
    assert fmap.ndim == 4
    assert fmap.shape[:2] == (B, model.num_features)
    assert pooled.shape == (B, model.num_features)
    # pooling is a spatial mean for all three architectures
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(composed, direct)


def test_classifier_is_linear_to_k_classes(model):
    head = model.classifier()
    assert isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (model.num_features, K)


def test_feature_tap_sees_the_feature_map(model, images):
    seen = []
    handle = model.feature_tap.register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            fmap = model.forward_features(images)
    finally:
        handle.remove()
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], fmap)


def test_cam_layer_is_a_finer_map_than_the_feature_map(model, images):
    """The default CAM layer is the stride-16 stage (docs/cam_layers.md): twice the last map's resolution."""
    seen = []
    handle = model.cam_layer.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    try:
        with torch.no_grad():
            fmap = model.forward_features(images)
    finally:
        handle.remove()
    assert len(seen) == 1 and len(seen[0]) == 4
    assert seen[0][-1] == 2 * fmap.shape[-1]


def test_num_classes_zero_gives_pooled_features(features_only, images):
    assert features_only.num_classes == 0
    assert features_only.num_features == EXPECTED_FEATURES[features_only.name]
    with torch.no_grad():
        out = features_only(images)
        pooled = features_only.pool(features_only.forward_features(images))
    assert out.shape == (B, features_only.num_features)
    torch.testing.assert_close(out, pooled)
    assert not isinstance(features_only.classifier(), nn.Linear)


def test_negative_num_classes_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet18", -1)


def test_list_models_contains_both_families_and_filters():
    names = list_models()
    assert "resnet18" in names
    assert "tf_efficientnet_lite0" in names
    assert [f"efficientnet-b{i}" for i in range(9)] == [n for n in names if n.startswith("efficientnet-b")]
    filtered = list_models("resnet1")
    assert "resnet18" in filtered
    assert filtered and all("resnet1" in n for n in filtered)
    assert "efficientnet-b0" not in filtered


def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError) as info:
        create_model("resnet5", 3)
    msg = str(info.value)
    assert "resnet5'" in msg
    assert "resnet50" in msg
    assert "closest" in msg


def test_unknown_name_without_close_match_still_value_error():
    with pytest.raises(ValueError, match="Unknown model 'zzqqxxnotamodel'") as info:
        create_model("zzqqxxnotamodel", 3)
    assert "closest" not in str(info.value)


@pytest.fixture
def no_downloads(monkeypatch):
    """Any attempt to build a hub-pretrained network fails the test instead of touching the network."""
    import timm
    from efficientnet_pytorch import EfficientNet

    def forbid(*args, **kwargs):
        raise AssertionError(f"download attempted: {args} {kwargs}")

    real_timm = timm.create_model

    def guarded_timm(name, pretrained=False, **kwargs):
        if pretrained:
            forbid(name, pretrained=pretrained)
        return real_timm(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", guarded_timm)
    monkeypatch.setattr(EfficientNet, "from_pretrained", classmethod(lambda cls, *a, **k: forbid(*a, **k)))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", forbid)
    monkeypatch.setattr(torch.hub, "download_url_to_file", forbid)


@pytest.mark.parametrize("name", ["resnet50", "efficientnet-b4"])
def test_pretrained_without_offline_weights_raises_with_instructions(name, no_downloads):
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        create_model(name, 10, pretrained=True)
    msg = str(info.value)
    assert name in msg
    assert "weights:" in msg
    assert "download: true" in msg
    assert "tf_efficientnet_lite0" in msg


def test_pretrained_unavailable_is_runtime_error():
    assert issubclass(PretrainedWeightsUnavailable, RuntimeError)


def test_data_config_lite0_uses_timm_pretrained_cfg():
    import timm

    model = create_model("tf_efficientnet_lite0", 3)
    cfg = data_config(model)
    assert cfg["mean"] == pytest.approx((0.5, 0.5, 0.5))
    assert cfg["std"] == pytest.approx((0.5, 0.5, 0.5))
    expected = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3).pretrained_cfg
    assert cfg["mean"] == pytest.approx(tuple(expected["mean"]))
    assert cfg["input_size"] == tuple(expected["input_size"])
    # a copy: editing it does not change the model's preprocessing
    cfg["mean"] = (0.0, 0.0, 0.0)
    assert data_config(model)["mean"] == pytest.approx((0.5, 0.5, 0.5))


def test_data_config_resnet18_and_efficientnet_pytorch_use_imagenet_stats():
    for name in ("resnet18", "efficientnet-b0"):
        cfg = data_config(create_model(name, 2))
        assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
        assert cfg["std"] == pytest.approx((0.229, 0.224, 0.225))
        assert cfg["mean"] == pytest.approx(IMAGENET_MEAN)
        assert cfg["std"] == pytest.approx(IMAGENET_STD)


def test_data_config_falls_back_to_imagenet_for_plain_modules():
    cfg = data_config(nn.Linear(2, 2))
    assert cfg == {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def test_pretrained_new_head_is_small(images):
    torch.manual_seed(0)
    pretrained = create_model("tf_efficientnet_lite0", 10, pretrained=True).eval()
    head = pretrained.classifier()
    assert head.out_features == 10
    assert 0.007 < head.weight.std().item() < 0.013
    assert torch.count_nonzero(head.bias) == 0
    with torch.no_grad():
        logits = pretrained(images)
    assert logits.abs().max().item() < 1.0


def test_reset_head_leaves_1000_class_head_and_shrinks_others():
    from fgvc_lib.models.factory import reset_head

    torch.manual_seed(0)
    big = create_model("resnet18", 1000)
    before = big.classifier().weight.detach().clone()
    reset_head(big)
    torch.testing.assert_close(big.classifier().weight, before)

    small = create_model("resnet18", 7)
    with torch.no_grad():
        small.classifier().weight.fill_(1.0)
        small.classifier().bias.fill_(1.0)
    reset_head(small, std=0.02)
    w = small.classifier().weight
    assert 0.014 < w.std().item() < 0.026
    assert torch.count_nonzero(small.classifier().bias) == 0


@pytest.mark.parametrize(
    ("name", "size"), [("wide_resnet50_2", 64), ("inception_v3", 75), ("mnasnet_100", 64)]
)
def test_second_inat_report_backbones_by_name(name, size):
    """The backbones of the second iNat report build by name and classify (Inception v3 needs >= 75 px;
    the report used 299)."""
    model = create_model(name, 7).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, size, size)).shape == (1, 7)
    assert model.forward_features(torch.rand(1, 3, size, size)).ndim == 4
