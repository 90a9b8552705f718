"""The multi-label report's small CNN: exact parameter count of its layer table, shapes, the Classifier
interface through create_model('small_cnn'), and Grad-CAM on its last convolution map."""

import numpy as np
import pytest
import torch
from torch import nn

from fgvc_lib.cam import compute_cams
from fgvc_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fgvc_lib.models import Classifier, PretrainedWeightsUnavailable, create_model, list_models
from fgvc_lib.models.simple_cnn import SmallCNN, small_cnn_flat_features


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(c_in: int, c_out: int) -> int:
    return 9 * c_in * c_out + c_out  # 3x3 kernel + bias


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# The report's layer table (torchsummary style), row by row, at 128 px with 14 outputs.
REPORT_ROWS = [896, 9_248, 18_496, 36_928, 73_856, 147_584, 147_584, 295_168, 590_080, 590_080]
REPORT_ROWS += [1_180_160, 2_359_808, 2_359_808, 3_276_900, 10_100, 1_414]
REPORT_TOTAL = 11_098_110


def test_hand_arithmetic_matches_the_report_table():
    convs = [conv(3, 32), conv(32, 32), conv(32, 64), conv(64, 64)]
    convs += [conv(64, 128), conv(128, 128), conv(128, 128), conv(128, 256), conv(256, 256), conv(256, 256)]
    convs += [conv(256, 512), conv(512, 512), conv(512, 512)]
    assert sum(convs) == 7_809_696
    flat = 512 * 8 * 8  # four 2x2 pools: 128 -> 8
    fcs = [linear(flat, 100), linear(100, 100), linear(100, 14)]
    assert fcs == [3_276_900, 10_100, 1_414]
    assert convs + fcs == REPORT_ROWS
    assert sum(REPORT_ROWS) == REPORT_TOTAL


def test_parameter_count_is_exactly_the_reports():
    net = SmallCNN(num_classes=14, img_size=128, dropout=0.5, in_chans=3)
    assert n_params(net) == REPORT_TOTAL
    rows = [n_params(m) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert rows == REPORT_ROWS


def test_layer_layout():
    net = SmallCNN()
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32] * 2 + [64] * 2 + [128] * 3 + [256] * 3 + [512] * 3
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1) for c in convs)
    pools = [m for m in net.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 4 and not isinstance(net.features[-1], nn.MaxPool2d)
    relus = [m for m in net.features if isinstance(m, nn.ReLU)]
    assert len(relus) == len(convs)
    assert [net.drop1.p, net.drop2.p] == [0.5, 0.5]


def test_flatten_size_follows_img_size():
    assert small_cnn_flat_features(128) == 32_768
    assert small_cnn_flat_features(64) == 8_192
    assert small_cnn_flat_features((96, 48)) == 512 * 6 * 3
    net = SmallCNN(num_classes=14, img_size=64)
    assert net.fc1.in_features == 8_192
    assert n_params(net) == REPORT_TOTAL - (32_768 - 8_192) * 100
    one_channel = SmallCNN(num_classes=14, in_chans=1)
    assert n_params(one_channel) == REPORT_TOTAL - 2 * 9 * 32  # the first conv sees 1 channel, not 3


def test_shapes_at_128px():
    torch.manual_seed(0)
    net = SmallCNN().eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        fmap = net.forward_features(x)
        assert fmap.shape == (2, 512, 8, 8)
        pre = net.forward_head(fmap, pre_logits=True)
        assert pre.shape == (2, 100)
        torch.testing.assert_close(net.get_classifier()(pre), net(x))
    assert net(x).shape == (2, 14)


def test_wrong_input_size_is_a_clear_error():
    net = SmallCNN(num_classes=3, img_size=32).eval()
    with pytest.raises(ValueError, match="img_size"):
        net(torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize("kwargs", [{"img_size": 8}, {"dropout": 1.0}, {"num_classes": -1}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        SmallCNN(**kwargs)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    net = SmallCNN(num_classes=4, img_size=32)
    x = torch.rand(4, 3, 32, 32)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    torch.testing.assert_close(net(x), net(x))


def test_create_model_wraps_it_as_timm_classifier():
    torch.manual_seed(0)
    model = create_model("small_cnn", 14, img_size=128)
    assert isinstance(model, Classifier) and model.kind == "timm" and model.name == "small_cnn"
    assert model.num_classes == 14 and model.num_features == 100
    assert n_params(model) == REPORT_TOTAL
    cfg = model.data_config
    assert cfg["mean"] == pytest.approx(IMAGENET_MEAN) and cfg["std"] == pytest.approx(IMAGENET_STD)
    assert cfg["input_size"] == (3, 128, 128)
    assert model.classifier() is model.net.fc and model.classifier().in_features == 100
    assert "small_cnn" in list_models() and "small_cnn" in list_models("small_c")


def test_classifier_pieces_compose_and_train():
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, img_size=32, dropout=0.0)
    x = torch.rand(2, 3, 32, 32)
    fmap = model.forward_features(x)
    assert fmap.shape == (2, 512, 2, 2)
    pooled = model.pool(fmap)
    assert pooled.shape == (2, model.num_features)
    logits = model.head(pooled)
    torch.testing.assert_close(logits, model(x))
    logits.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_factory_options():
    assert create_model("small_cnn", 2).net.img_size == (128, 128)  # the report's images
    assert create_model("small_cnn", 2, upsample_size=64).net.img_size == (64, 64)
    assert create_model("small_cnn", 2, drop_rate=0.2).net.drop1.p == 0.2
    features_only = create_model("small_cnn", 0, img_size=32).eval()
    assert isinstance(features_only.classifier(), nn.Identity)
    assert features_only(torch.rand(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(TypeError):
        create_model("small_cnn", 2, dropout=0.1, drop_rate=0.2)


def test_pretrained_raises_trained_from_scratch():
    with pytest.raises(PretrainedWeightsUnavailable, match="trained from scratch"):
        create_model("small_cnn", 14, pretrained=True)


def test_grad_cam_on_the_last_conv_map():
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, img_size=64).eval()
    assert model.cam_reshape_transform is None
    seen = []
    handle = model.cam_layer.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    cams = compute_cams(model, torch.rand(2, 3, 64, 64), [0, 2])
    handle.remove()
    assert seen and seen[0] == (2, 512, 4, 4)  # the hook sits on the last conv map
    assert cams.shape == (2, 64, 64) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0 + 1e-6
