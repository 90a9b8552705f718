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


# ---------------------------------------------------------------------------------------------- methods, layers
def test_every_cam_method_runs_and_matches_the_parameter_choices():
    import typing

    from fgvc_lib.cam import CAM_METHODS
    from fgvc_lib.config import ExperimentParams

    assert typing.get_args(ExperimentParams.field_types()["cam_method"]) == CAM_METHODS
    model, conv = toy_model()
    for method in CAM_METHODS:
        cams = compute_cams(model, toy_input(), [1], layer=conv, method=method)
        assert cams.shape == (1, 4, 4) and np.isfinite(cams).all(), method


def test_bad_cam_method_parameter_says_did_you_mean():
    from fgvc_lib.config import ExperimentParams, ParameterError

    with pytest.raises(ParameterError, match=r"parameter 'cam_method'.*'layercm'.*did you mean 'layercam'"):
        ExperimentParams.from_dict(cam_method="layercm")
    assert ExperimentParams.from_dict(cam_method="gradcam++").cam_method == "gradcam++"
    assert ExperimentParams().cam_method == "layercam" and ExperimentParams().cam_layer == ""


def test_check_cam_method_names_the_parameter():
    from fgvc_lib.cam import check_cam_method

    assert check_cam_method("hirescam") == "hirescam"
    with pytest.raises(ValueError, match=r"parameter 'cam_method'.*'hirescm'.*did you mean 'hirescam'"):
        check_cam_method("hirescm")


def test_seg_eigen_cam_on_the_toy_is_the_signed_principal_component():
    """Seg-Eigen-CAM: |gradient| x activation, centred over the 16 positions, projected on its first principal
    component with the sign that makes the larger magnitude positive, ReLU, scaled to [0, 1]. Class 1 of the toy:
    |grad| (0.5/16, 2/16) gives 1/32 on the top-left block (channel 0) and 1/4 on the bottom-right one
    (channel 1); the principal component is (nearly) channel 1, so only the bottom-right block survives, where
    Grad-CAM keeps 0.125 of the peak on the top-left."""
    model, conv = toy_model()
    seg = compute_cams(model, toy_input(), [1], layer=conv, method="segeigencam")
    np.testing.assert_allclose(seg[0], BOTTOM_RIGHT.astype(float), atol=1e-4)
    # and the same by hand: the signed projection of the centred weighted activations
    weighted = np.stack([np.where(TOP_LEFT, 1 / 32, 0.0), np.where(BOTTOM_RIGHT, 4 / 16, 0.0)]).reshape(2, -1).T
    centred = weighted - weighted.mean(0)
    projection = centred @ np.linalg.svd(centred)[2][0]
    projection = -projection if abs(projection.min()) > abs(projection.max()) else projection
    relu = np.maximum(projection, 0).reshape(4, 4)
    np.testing.assert_allclose(seg[0], relu / relu.max(), atol=1e-4)


def test_inat_crops_default_to_seg_eigen_cam_others_to_layercam():
    from fgvc_lib.config import ExperimentParams, InatBBNParams

    assert InatBBNParams().cam_method == "segeigencam" and InatBBNParams().crop_threshold == 0.1
    assert ExperimentParams().cam_method == "layercam"
    assert InatBBNParams.from_dict(cam_method="gradcam").cam_method == "gradcam"


def test_resolve_cam_layers_default_override_and_fusion(resnet):
    from fgvc_lib.cam import resolve_cam_layers

    assert resolve_cam_layers(resnet, "") == [resnet.cam_layer]
    assert resolve_cam_layers(resnet, "net.layer2") == [resnet.net.layer2]
    assert resolve_cam_layers(resnet, " net.layer3 , feature_tap ") == [resnet.net.layer3, resnet.feature_tap]


def test_resolve_cam_layers_unknown_path_suggests_closest_names(resnet):
    from fgvc_lib.cam import resolve_cam_layers

    with pytest.raises(ValueError) as info:
        resolve_cam_layers(resnet, "net.layer5")
    message = str(info.value)
    assert "parameter 'cam_layer'" in message and "'net.layer5'" in message
    assert "closest module names: net.layer" in message and "default for this model: 'net.layer3'" in message


def test_fused_layers_average_the_per_layer_maps(resnet, images64):
    one = compute_cams(resnet, images64, [0, 1], layer=resnet.net.layer3)
    two = compute_cams(resnet, images64, [0, 1], layer=resnet.feature_tap)
    fused = compute_cams(resnet, images64, [0, 1], layer=[resnet.net.layer3, resnet.feature_tap])
    mean = (one + two) / 2  # grad-cam rescales before and after resizing: equal up to interpolation
    assert fused.shape == one.shape and fused.min() >= 0 and fused.max() <= 1 + 1e-6
    assert np.corrcoef(fused.ravel(), mean.ravel())[0, 1] > 0.9


# ---------------------------------------------------------------------------------------------- experiments
def test_bad_cam_layer_fails_before_training(tmp_path, tiny_params):
    from fgvc_lib.config import ParameterError
    from fgvc_lib.experiments.bird import BirdExperiment

    params = tiny_params("bird", run_dir=str(tmp_path / "r"), cam_layer="net.blocks.9")
    with pytest.raises(ParameterError, match=r"parameter 'cam_layer': 'net.blocks.9'.*closest module names: net\.blocks"):
        BirdExperiment(params)
    assert not list((tmp_path / "r").glob("checkpoints/*.pt"))


def test_cam_layer_and_method_reach_the_cam_grid(tmp_path, tiny_params):
    from fgvc_lib.experiments.bird import BirdExperiment

    exp = BirdExperiment(tiny_params("bird", run_dir=str(tmp_path / "r"), epochs=1, cam_layer="net.blocks.2",
                                     cam_method="layercam"))
    seen = []
    handle = exp.model.net.blocks[2].register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    try:
        result = exp.run()
    finally:
        handle.remove()
    assert seen and "pointing_game" in result.metrics
    assert "LayerCAM on net.blocks.2" in result.figures["cam_grid"].texts[0].get_text()


# ---------------------------------------------------------------------------------------------- against chance
def _evidence_batch(n: int, seed: int, size: int = 48, side: int = 10):
    """Noise images with the class evidence at a known place: class 0 a square in channel 0, class 1 in
    channel 1; both classes also carry a same-sized distractor square in channel 2 elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    xs = 0.3 * torch.randn(n, 3, size, size, generator=gen)
    ys = torch.randint(0, 2, (n,), generator=gen)
    boxes = []
    for i in range(n):
        while True:
            x0, y0, x1, y1 = (int(v) for v in torch.randint(0, size - side, (4,), generator=gen))
            if abs(x0 - x1) > side or abs(y0 - y1) > side:
                break
        xs[i, int(ys[i]), y0 : y0 + side, x0 : x0 + side] += 1.5
        xs[i, 2, y1 : y1 + side, x1 : x1 + side] += 1.5
        boxes.append((float(x0), float(y0), float(side), float(side)))
    return xs, ys, boxes


class _TinyNet(nn.Module):
    """Two stride-2 convolutions (CAM layer at stride 4) -> global average pool -> Linear."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.cam_layer = self.body[-1]
        self.fc = nn.Linear(32, 2)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


@pytest.fixture(scope="module")
def trained_tiny_net():
    torch.manual_seed(0)
    net = _TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(80):
        xs, ys, _ = _evidence_batch(32, seed=1000 + step)
        loss = nn.functional.cross_entropy(net(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize("method", ["gradcam", "layercam", "segeigencam"])
def test_cams_on_small_data_beat_a_random_peak(trained_tiny_net, method):
    """The CAM machinery on an easy task whose evidence sits at a known place: the pointing game and the CAM
    box IoU are far above a random peak / random box (seeded end to end, so not flaky)."""
    from fgvc_lib.cam import box_iou, cam_box

    xs, ys, boxes = _evidence_batch(64, seed=7)
    with torch.no_grad():
        assert (trained_tiny_net(xs).argmax(1) == ys).float().mean() >= 0.9
    cams = compute_cams(trained_tiny_net, xs, ys.tolist(), method=method)
    centres = [(x + w / 2, y + h / 2) for x, y, w, h in boxes]
    radius = 8.0
    score = pointing_game(cams, centres, radius)
    rng = np.random.default_rng(0)
    random_score = pointing_game(rng.random(cams.shape), centres, radius)
    assert random_score < 0.25
    assert score >= 0.8 and score > random_score + 0.5
    ious = [box_iou(cam_box(c, 0.5), b) for c, b in zip(cams, boxes, strict=True)]
    random_boxes = [(float(x), float(y), 10.0, 10.0) for x, y in rng.integers(0, 38, (len(boxes), 2))]
    random_ious = [box_iou(r, b) for r, b in zip(random_boxes, boxes, strict=True)]
    assert np.mean(ious) > np.mean(random_ious) + 0.2
