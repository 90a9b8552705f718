"""Anti-aliased CNNs (spec §7): the official BlurPool (filter 4) and timm's BlurPool2d (filter 3), Zhang's
ResNet-50 from antialiased-cnns behind the factory name ``antialiased_resnet50``, and timm's ``resnetblur50``."""

import pytest
import timm
import torch
from antialiased_cnns import BlurPool
from timm.layers import BlurPool2d
from torch import nn

from fgvc_lib.models import Classifier, PretrainedWeightsUnavailable, create_model
from fgvc_lib.models.wrappers import torchvision_resnet_features


def _official(channels: int = 1) -> nn.Module:
    return BlurPool(channels, pad_type="reflect", filt_size=4, stride=2)


def _timm(channels: int = 1) -> nn.Module:
    return BlurPool2d(channels, filt_size=3, stride=2)


BLURS = {"official_filt4": _official, "timm_filt3": _timm}


# --- the blur layers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", BLURS.values(), ids=BLURS.keys())
def test_constant_input_stays_constant(make):
    out = make(3)(torch.ones(2, 3, 8, 8))
    torch.testing.assert_close(out, torch.ones(2, 3, 4, 4))


@pytest.mark.parametrize("make", BLURS.values(), ids=BLURS.keys())
@pytest.mark.parametrize("size", [7, 8])
def test_odd_and_even_inputs_map_to_4x4(make, size):
    assert make(2)(torch.rand(1, 2, size, size)).shape == (1, 2, 4, 4)


def test_arange_official_filter_4():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(_official()(x), torch.tensor([[[[3.75, 5.25], [9.75, 11.25]]]]))


def test_arange_timm_filter_3():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(_timm()(x), torch.tensor([[[[2.5, 4.0], [8.5, 10.0]]]]))


def test_timm_filter_taps():
    filt = _timm().filt[0, 0]
    assert filt.shape == (3, 3)
    assert float(filt[1, 1]) == pytest.approx(0.25)
    assert [float(filt[i, j]) for i, j in ((0, 0), (0, 2), (2, 0), (2, 2))] == pytest.approx([0.0625] * 4)
    assert float(filt.sum()) == pytest.approx(1.0)
    assert "filt" not in _timm().state_dict()  # non-persistent buffer: checkpoints do not change


# --- Zhang's ResNet-50 (antialiased-cnns) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def aa50():
    torch.manual_seed(0)
    return create_model("antialiased_resnet50", 4).eval()


def test_factory_name_gives_a_torchvision_style_classifier(aa50):
    assert isinstance(aa50, Classifier)
    assert aa50.kind == "torchvision_resnet" and aa50.name == "antialiased_resnet50"
    assert aa50.num_features == 2048 and aa50.num_classes == 4
    head = aa50.classifier()
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (2048, 4)
    assert aa50.data_config["input_size"] == (3, 224, 224)


def test_antialiased_classifier_interface(aa50):
    x = torch.rand(2, 3, 64, 64)
    seen = []
    handle = aa50.feature_tap.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with torch.no_grad():
            fmap = aa50.forward_features(x)
            pooled = aa50.pool(fmap)
            logits = aa50(x)
            direct = aa50.net(x)  # the package's own forward
    finally:
        handle.remove()
    assert fmap.shape == (2, 2048, 2, 2) and seen == [fmap.shape, fmap.shape]
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, aa50.head(pooled))
    torch.testing.assert_close(logits, direct)
    torch.testing.assert_close(torchvision_resnet_features(aa50.net, x), fmap)


def test_stem_is_maxpool_stride_1_then_blurpool(aa50):
    net = aa50.net
    assert net.conv1.stride == (2, 2) and net.conv1.kernel_size == (7, 7)  # pool_only: the stem conv keeps s2
    pool, blur = net.maxpool
    assert isinstance(pool, nn.MaxPool2d) and pool.kernel_size == 2 and pool.stride == 1
    assert isinstance(blur, BlurPool) and blur.filt_size == 4 and blur.stride == 2


@pytest.mark.parametrize("stage", ["layer2", "layer3", "layer4"])
def test_strided_bottleneck_blurs_before_conv3(aa50, stage):
    block = getattr(aa50.net, stage)[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (1, 1)
    blur, conv3 = block.conv3
    assert isinstance(blur, BlurPool) and blur.stride == 2 and blur.filt_size == 4
    assert isinstance(conv3, nn.Conv2d) and conv3.kernel_size == (1, 1) and conv3.stride == (1, 1)
    # the downsampling shortcut: BlurPool, then a stride-1 1x1 conv, then BN
    short_blur, short_conv, short_bn = block.downsample
    assert isinstance(short_blur, BlurPool) and short_blur.stride == 2
    assert short_conv.kernel_size == (1, 1) and short_conv.stride == (1, 1)
    assert isinstance(short_bn, nn.BatchNorm2d)


def test_only_strided_blocks_blur(aa50):
    assert isinstance(aa50.net.layer1[0].conv3, nn.Conv2d)  # stride 1, only a channel projection
    assert not any(isinstance(m, BlurPool) for m in aa50.net.layer1.modules())
    blurs = [m for m in aa50.net.modules() if isinstance(m, BlurPool)]
    assert len(blurs) == 1 + 3 * 2  # stem + (main path + shortcut) of three strided blocks


def test_features_only_and_pretrained_without_download():
    features = create_model("antialiased_resnet50", 0)
    assert isinstance(features.classifier(), nn.Identity) and features.num_features == 2048
    with pytest.raises(PretrainedWeightsUnavailable, match="antialiased_resnet50"):
        create_model("antialiased_resnet50", 4, pretrained=True)


def test_antialiased_local_weights_file(tmp_path, aa50):
    path = tmp_path / "lpf4.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in aa50.net.state_dict().items()}}, path)
    loaded = create_model("antialiased_resnet50", 4, pretrained=True, weights=str(path))
    torch.testing.assert_close(loaded.net.layer3[2].conv2.weight, aa50.net.layer3[2].conv2.weight)
    assert loaded.classifier().weight.std().item() < 0.02  # a new head on pretrained features starts small


# --- timm's resnetblur50 -----------------------------------------------------------------------------------


def test_resnetblur50_state_dict_matches_resnet50_and_shortcut_is_not_blurred():
    blur = timm.create_model("resnetblur50")  # with its 1000-class fc, as the spec counts
    plain = timm.create_model("resnet50")
    blur_state, plain_state = blur.state_dict(), plain.state_dict()
    assert len(blur_state) == 320
    assert list(blur_state) == list(plain_state)
    assert all(blur_state[k].shape == plain_state[k].shape for k in blur_state)
    stem_pool, stem_blur = blur.maxpool
    assert stem_pool.kernel_size == 3 and stem_pool.stride == 1 and stem_pool.padding == 1
    assert isinstance(stem_blur, BlurPool2d)
    block = blur.layer2[0]
    assert block.conv2.stride == (1, 1) and isinstance(block.aa, BlurPool2d)
    assert not any(isinstance(m, BlurPool2d) for m in block.downsample.modules())
    assert block.downsample[0].stride == (2, 2)  # a strided 1x1 conv, as in resnet50
    assert create_model("resnetblur50", 0).num_features == 2048  # the factory takes it as a timm name


def test_aa_layer_string_is_passed_as_the_class():
    net = create_model("resnet18", 3, aa_layer="blur").net
    assert isinstance(net.maxpool[1], BlurPool2d) and isinstance(net.layer2[0].aa, BlurPool2d)
    with pytest.raises(ValueError, match="aa_layer"):
        create_model("resnet18", 3, aa_layer="gauss")
