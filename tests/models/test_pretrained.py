"""Offline ImageNet weights: the packaged EfficientNet-Lite0 and local checkpoint files."""

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc_lib.models import PretrainedWeightsUnavailable, create_model, data_config
from fgvc_lib.models.pretrained import (
    lite0_package_file,
    load_weights_file,
    map_lite0_state_dict,
    read_checkpoint_state,
    timm_lite0_1000,
)

BACKBONE_KEYS = [
    "conv_stem.weight",
    "bn1.running_mean",
    "blocks.3.0.conv_pw.weight",
    "conv_head.weight",
    "bn2.bias",
]


@pytest.fixture(scope="module")
def lite0_source():
    return torch.load(lite0_package_file(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0_target():
    return timm_lite0_1000()


@pytest.fixture(scope="module")
def lite0_1000():
    return create_model("tf_efficientnet_lite0", 1000, pretrained=True).eval()


@pytest.fixture(scope="module")
def lite0_10():
    torch.manual_seed(0)
    return create_model("tf_efficientnet_lite0", 10, pretrained=True).eval()


def preprocess(image: np.ndarray, cfg: dict) -> torch.Tensor:
    img = Image.fromarray(image).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.asarray(cfg["mean"], dtype=np.float32)) / np.asarray(cfg["std"], dtype=np.float32)
    return torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).contiguous()


# ---------------------------------------------------------------- packaged lite0 weights


def test_pretrained_lite0_recognises_imagenet_images(lite0_1000):
    skdata = pytest.importorskip("skimage.data")
    cfg = data_config(lite0_1000)
    batch = torch.cat([preprocess(skdata.chelsea(), cfg), preprocess(skdata.coffee(), cfg)])
    with torch.no_grad():
        pred = lite0_1000(batch).argmax(dim=1).tolist()
    assert 281 <= pred[0] <= 285, f"chelsea (a cat) predicted as ImageNet class {pred[0]}"
    assert pred[1] == 967, f"coffee (espresso) predicted as ImageNet class {pred[1]}"


def test_random_lite0_does_not_pass_the_same_check(lite0_target):
    """Guards the check above: without the packaged weights the coffee cup is not recognised."""
    skdata = pytest.importorskip("skimage.data")
    torch.manual_seed(0)
    random_model = create_model("tf_efficientnet_lite0", 1000).eval()
    with torch.no_grad():
        pred = random_model(preprocess(skdata.coffee(), data_config(random_model))).argmax(dim=1).item()
    assert pred != 967


def test_pretrained_lite0_1000_keeps_imagenet_classifier(lite0_1000, lite0_source, lite0_target):
    mapped = map_lite0_state_dict(lite0_source, lite0_target)
    state = lite0_1000.net.state_dict()
    torch.testing.assert_close(state["classifier.weight"], mapped["classifier.weight"])
    torch.testing.assert_close(state["classifier.bias"], mapped["classifier.bias"])
    torch.testing.assert_close(state["conv_stem.weight"], mapped["conv_stem.weight"])


def test_pretrained_lite0_data_config(lite0_1000):
    cfg = data_config(lite0_1000)
    assert cfg["mean"] == pytest.approx((0.5, 0.5, 0.5))
    assert cfg["std"] == pytest.approx((0.5, 0.5, 0.5))


def test_map_lite0_state_dict_maps_every_tensor_by_shape(lite0_source, lite0_target):
    mapped = map_lite0_state_dict(lite0_source, lite0_target)
    target_keys = [k for k in lite0_target.state_dict() if not k.endswith("num_batches_tracked")]
    source_values = [v for k, v in lite0_source.items() if not k.endswith("num_batches_tracked")]
    assert len(mapped) == 247
    assert list(mapped) == target_keys
    target_state = lite0_target.state_dict()
    for key, value in mapped.items():
        assert value.shape == target_state[key].shape, key
    # order preserved: the i-th mapped tensor is the i-th source tensor
    for got, src in zip(mapped.values(), source_values, strict=True):
        assert torch.equal(got, src)


def test_map_lite0_state_dict_rejects_missing_tensor(lite0_source, lite0_target):
    pruned = dict(lite0_source)
    first = next(k for k in pruned if not k.endswith("num_batches_tracked"))
    del pruned[first]
    with pytest.raises(ValueError, match="246"):
        map_lite0_state_dict(pruned, lite0_target)


def test_map_lite0_state_dict_rejects_wrong_shape(lite0_source, lite0_target):
    bad = dict(lite0_source)
    key = next(k for k, v in bad.items() if v.ndim == 4)
    bad[key] = torch.zeros(1, *bad[key].shape[1:])
    with pytest.raises(ValueError, match="does not fit"):
        map_lite0_state_dict(bad, lite0_target)


def test_pretrained_lite0_10_classes_shares_backbone(lite0_1000, lite0_10):
    full, small = lite0_1000.net.state_dict(), lite0_10.net.state_dict()
    for key in BACKBONE_KEYS:
        torch.testing.assert_close(small[key], full[key], rtol=0, atol=0)
    head = lite0_10.classifier()
    assert (head.in_features, head.out_features) == (1280, 10)
    assert lite0_10.num_classes == 10
    with torch.no_grad():
        assert lite0_10(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_pretrained_lite0_features_only(lite0_1000):
    features = create_model("tf_efficientnet_lite0", 0, pretrained=True).eval()
    torch.testing.assert_close(
        features.net.state_dict()["conv_head.weight"], lite0_1000.net.state_dict()["conv_head.weight"]
    )
    with torch.no_grad():
        assert features(torch.rand(2, 3, 32, 32)).shape == (2, 1280)


# ---------------------------------------------------------------- local weight files


@pytest.fixture(scope="module")
def resnet_state():
    import timm

    torch.manual_seed(1)
    return timm.create_model("resnet18", pretrained=False, num_classes=1000).state_dict()


@pytest.fixture(scope="module")
def effnet_b0_state():
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(2)
    return EfficientNet.from_name("efficientnet-b0", num_classes=1000).state_dict()


def assert_backbone_loaded(model, state):
    own = model.net.state_dict()
    checked = 0
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(own[key], value), key
        checked += 1
    assert checked == len(state) - 2


def test_weights_file_loads_backbone_and_keeps_new_head(tmp_path, resnet_state):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet_state, path)
    model = create_model("resnet18", 5, pretrained=True, weights=str(path))
    assert_backbone_loaded(model, resnet_state)
    fc = model.classifier()
    assert fc.out_features == 5
    assert fc.weight.shape == (5, 512)
    assert fc.weight.std().item() < 0.02  # reset small, not the saved 1000-way rows
    assert torch.count_nonzero(fc.bias) == 0


def test_weights_file_wrapped_with_module_prefix(tmp_path, resnet_state):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet_state.items()}, "epoch": 3}, path)
    model = create_model("resnet18", 5, pretrained=True, weights=str(path))
    assert_backbone_loaded(model, resnet_state)


def test_weights_file_1000_classes_keeps_saved_classifier(tmp_path, resnet_state):
    path = tmp_path / "full.pth"
    torch.save({"model": resnet_state}, path)
    model = create_model("resnet18", 1000, pretrained=True, weights=str(path))
    torch.testing.assert_close(model.classifier().weight, resnet_state["fc.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.classifier().bias, resnet_state["fc.bias"], rtol=0, atol=0)


def test_weights_file_for_efficientnet_pytorch(tmp_path, effnet_b0_state):
    path = tmp_path / "b0.pth"
    torch.save(effnet_b0_state, path)
    model = create_model("efficientnet-b0", 4, pretrained=True, weights=str(path))
    own = model.net.state_dict()
    for key in ("_conv_stem.weight", "_blocks.3._expand_conv.weight", "_bn1.running_var"):
        assert torch.equal(own[key], effnet_b0_state[key]), key
    assert model.classifier().out_features == 4
    assert torch.count_nonzero(model.classifier().bias) == 0


def test_weights_file_of_other_architecture_rejected(tmp_path, effnet_b0_state):
    path = tmp_path / "b0_for_resnet.pth"
    torch.save(effnet_b0_state, path)
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        create_model("resnet18", 5, pretrained=True, weights=str(path))
    assert str(path) in str(info.value)


def test_weights_file_missing_backbone_tensors_rejected(tmp_path, resnet_state):
    path = tmp_path / "partial.pth"
    partial = {k: v for k, v in resnet_state.items() if not k.startswith("layer4.")}
    torch.save(partial, path)
    with pytest.raises(PretrainedWeightsUnavailable, match="does not fit"):
        create_model("resnet18", 5, pretrained=True, weights=str(path))


def test_missing_weights_file_names_path(tmp_path):
    path = tmp_path / "nowhere" / "missing.pth"
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        create_model("resnet18", 5, pretrained=True, weights=str(path))
    assert str(path) in str(info.value)


def test_read_checkpoint_state_rejects_non_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(PretrainedWeightsUnavailable, match="cannot be read"):
        read_checkpoint_state(path)
    obj = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], obj)
    with pytest.raises(PretrainedWeightsUnavailable, match="state dict"):
        read_checkpoint_state(obj)


def test_read_checkpoint_state_unwraps_ema_and_strips_module(tmp_path):
    path = tmp_path / "ema.pth"
    torch.save({"state_dict_ema": {"module.a": torch.ones(2), "b": torch.zeros(3)}}, path)
    state = read_checkpoint_state(path)
    assert set(state) == {"a", "b"}
    assert torch.equal(state["a"], torch.ones(2))


def test_load_weights_file_directly_on_network(tmp_path, resnet_state):
    import timm

    path = tmp_path / "direct.pth"
    torch.save(resnet_state, path)
    net = timm.create_model("resnet18", pretrained=False, num_classes=3)
    assert load_weights_file(net, path) is net
    assert torch.equal(net.state_dict()["layer1.0.conv1.weight"], resnet_state["layer1.0.conv1.weight"])
    assert net.fc.out_features == 3
