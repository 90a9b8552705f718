"""Boxes on resized images -> crops of the original files (fgvc_lib.crops): the mapping by hand for every supported
eval transform, checked against the real transforms' pixels, and crops that hold a known object."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import transforms as T

from fgvc_lib.crops import EvalGeometry, clip_box, crop_resize, crops_from_originals, pixel_box
from fgvc_lib.data.batch_transforms import build_batch_transform
from fgvc_lib.data.transforms import build_transform, denormalize, list_presets

W, H = 640, 480  # the original image
BOX = (16.0, 8.0, 32.0, 24.0)  # a box on the 64 px model input
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# (geometry, the box's region in the 640 x 480 original, worked out by hand)
HAND = {
    # Resize((64, 64)) stretches: x * 640/64 = 10, y * 480/64 = 7.5
    "stretch": (EvalGeometry.stretch(64), (160.0, 60.0, 320.0, 180.0)),
    # Resize(64): shorter side 480 -> 64, longer int(64 * 640/480) = 85; CenterCrop(64): left round(21/2) = 10
    # (round half to even, as torchvision), top 0; x = (16 + 10) * 640/85, y = 8 * 7.5
    "resize64_crop64": (
        EvalGeometry(64, (64, 64)),
        (26 * 640 / 85, 60.0, 32 * 640 / 85, 180.0),
    ),
    # Resize(73) (the 0.875 ratio of 256 -> 224): 97 x 73; CenterCrop(64): left round(16.5) = 16, top round(4.5)
    # = 4; x = (16 + 16) * 640/97, y = (8 + 4) * 480/73
    "resize73_crop64": (
        EvalGeometry(73, (64, 64)),
        (32 * 640 / 97, 12 * 480 / 73, 32 * 640 / 97, 24 * 480 / 73),
    ),
    # decode-once cache at 96 px, then Resize((64, 64)): 1.5 * 640/96 = 10 and 1.5 * 480/96 = 7.5, the stretch
    "cache96_stretch": (EvalGeometry.stretch(64, cache_size=96), (160.0, 60.0, 320.0, 180.0)),
    # cache at 96 px (square), Resize(73) -> 73 x 73, CenterCrop(64): left = top = round(4.5) = 4;
    # x = (16 + 4) * 96/73 * 640/96, y = (8 + 4) * 96/73 * 480/96
    "cache96_resize73_crop64": (
        EvalGeometry(73, (64, 64), cache_size=96),
        (20 * 640 / 73, 12 * 480 / 73, 32 * 640 / 73, 24 * 480 / 73),
    ),
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_box_on_64px_input_maps_to_the_hand_computed_original_box(name):
    geometry, expected = HAND[name]
    assert geometry.to_original(BOX, (W, H)) == pytest.approx(expected)
    assert geometry.to_input(expected, (W, H)) == pytest.approx(BOX)  # the inverse
    assert geometry.input_size((W, H)) == (64, 64)


def _transform(name: str):
    """The eval transform (PIL -> normalised tensor) that ``HAND[name]`` describes, cache stage included."""
    finish = [T.ToTensor(), T.Normalize(MEAN, STD)]
    steps = {
        "stretch": [T.Resize((64, 64))],
        "resize64_crop64": [T.Resize(64), T.CenterCrop(64)],
        "resize73_crop64": [T.Resize(73), T.CenterCrop(64)],
        "cache96_stretch": [T.Resize((64, 64))],
        "cache96_resize73_crop64": [T.Resize(73), T.CenterCrop(64)],
    }[name]
    tf = T.Compose([*steps, *finish])
    if name.startswith("cache96"):
        return tf, lambda img: tf(img.resize((96, 96), Image.BILINEAR))  # as fgvc_lib.data.cache decodes
    return tf, tf


@pytest.mark.parametrize("name", sorted(HAND))
def test_mapping_matches_the_real_transforms_pixels(name):
    """A white rectangle through the real eval transform: where it lands, mapped back, is where it was."""
    geometry, _ = HAND[name]
    tf, apply = _transform(name)
    assert EvalGeometry.from_transform(tf, cache_size=geometry.cache_size) == geometry
    img = Image.new("RGB", (W, H))
    x0, y0, x1, y1 = 230, 120, 420, 330
    ImageDraw.Draw(img).rectangle((x0, y0, x1 - 1, y1 - 1), fill=(255, 255, 255))
    mask = denormalize(apply(img), MEAN, STD)[..., 0] > 0.5
    ys, xs = np.nonzero(mask)
    found = (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
    back = geometry.to_original(tuple(float(v) for v in found), (W, H))
    # within one input pixel of the truth on every edge
    _, _, sx, sy = geometry._affine((W, H))
    truth = (x0, y0, x1 - x0, y1 - y0)
    assert back[0] == pytest.approx(truth[0], abs=sx) and back[1] == pytest.approx(truth[1], abs=sy)
    assert back[0] + back[2] == pytest.approx(x1, abs=sx) and back[1] + back[3] == pytest.approx(y1, abs=sy)


def test_every_preset_evaluates_with_a_plain_resize():
    for preset in list_presets():
        tf = build_transform(preset, 64, train=False, mean=MEAN, std=STD)
        assert EvalGeometry.from_transform(tf) == EvalGeometry.stretch(64), preset
        batched = build_batch_transform(preset, 64, train=False, mean=MEAN, std=STD)
        assert EvalGeometry.from_transform(batched, cache_size=96) == EvalGeometry.stretch(64, 96), preset


def test_unsupported_eval_transforms_are_refused():
    with pytest.raises(ValueError, match="RandomCrop"):
        EvalGeometry.from_transform(T.Compose([T.Resize(80), T.RandomCrop(64), T.ToTensor()]))
    with pytest.raises(ValueError, match="no Resize"):
        EvalGeometry.from_transform(T.Compose([T.ToTensor()]))
    with pytest.raises(ValueError, match="larger"):
        EvalGeometry(32, (64, 64)).to_original(BOX, (W, H))


def test_shorter_side_resize_follows_torchvision_with_max_size():
    for size, max_size, wh in [(64, None, (640, 480)), (64, None, (480, 640)), (64, 70, (640, 480)), (50, None, (7, 3))]:
        got = T.Resize(size, max_size=max_size)(Image.new("RGB", wh)).size
        assert EvalGeometry(size, max_size=max_size).resized_size(wh) == got


def test_clip_box():
    assert clip_box((-10, 5, 30, 500), (100, 50)) == (0.0, 5.0, 20.0, 45.0)
    assert clip_box((99.8, 10, 0.0, 0.2), (100, 50)) == pytest.approx((99.0, 9.6, 1.0, 1.0))


@pytest.fixture
def object_file(tmp_path):
    """A 640 x 480 grey PNG with a red 160 x 120 object at (200, 150)."""
    img = Image.new("RGB", (W, H), (128, 128, 128))
    ImageDraw.Draw(img).rectangle((200, 150, 359, 269), fill=(255, 0, 0))
    path = tmp_path / "object.png"
    img.save(path)
    return path


@pytest.mark.parametrize("name", ["stretch", "resize73_crop64", "cache96_stretch"])
def test_crop_of_a_known_object_is_that_object_at_img_size(name, object_file):
    geometry, _ = HAND[name]
    obj = (200.0, 150.0, 160.0, 120.0)
    box = geometry.to_input(obj, (W, H))  # where the object is on the model input
    made = crops_from_originals([object_file], [box], geometry, size=64, mean=MEAN, std=STD)
    assert made.images.shape == (1, 3, 64, 64) and made.original_sizes == [(W, H)]
    assert made.boxes[0] == obj
    pixels = denormalize(made.images[0], MEAN, STD)
    assert np.allclose(pixels, [1.0, 0.0, 0.0], atol=0.01)  # all object, no background, full resolution


def test_crop_has_the_detail_of_the_original(object_file):
    """A 4 px stripe pattern of the original survives a crop at full resolution; the resized input lost it."""
    img = Image.open(object_file).convert("RGB")
    stripes = Image.new("RGB", (W, H), (0, 0, 0))
    draw = ImageDraw.Draw(stripes)
    for x in range(0, W, 8):
        draw.rectangle((x, 0, x + 3, H - 1), fill=(255, 255, 255))
    path = object_file.with_name("stripes.png")
    stripes.save(path)
    geometry = EvalGeometry.stretch(64)
    made = crops_from_originals([path], [(0.0, 0.0, 3.2, 6.4)], geometry, size=64, mean=MEAN, std=STD)
    crop = denormalize(made.images[0], MEAN, STD)[..., 0]
    assert crop.max() - crop.min() > 0.9  # stripes 2 crop pixels wide, black and white
    resized = denormalize(build_transform("none", 64, train=False, mean=MEAN, std=STD)(stripes), MEAN, STD)
    assert np.ptp(resized[..., 0]) < 0.1  # 10x downsampled: grey
    assert img.size == (W, H)


def test_the_whole_box_is_exactly_the_eval_transform(object_file, tmp_path):
    """Full-image box: the crop equals the eval transform of the file (same resize, same normalisation); any
    image mode is decoded (palette here)."""
    palette = tmp_path / "palette.png"
    Image.open(object_file).convert("P").save(palette)
    eval_tf = build_transform("light", 64, train=False, mean=MEAN, std=STD)
    made = crops_from_originals(
        [object_file, palette], [(0.0, 0.0, 64.0, 64.0)] * 2, EvalGeometry.stretch(64), size=64, mean=MEAN, std=STD
    )
    for path, got in zip([object_file, palette], made.images, strict=True):
        assert torch.equal(got, eval_tf(Image.open(path).convert("RGB")))


def test_pixel_box_rounds_to_whole_pixels_inside_the_image():
    assert pixel_box((199.6, 150.4, 160.2, 119.3), (W, H)) == (200, 150, 160, 120)
    assert pixel_box((639.8, -5.0, 3.0, 0.1), (W, H)) == (639, 0, 1, 1)


def test_crop_resize_and_lengths(object_file):
    img = Image.open(object_file).convert("RGB")
    assert crop_resize(img, (200.2, 149.7, 160.0, 120.0), 8) == img.crop((200, 150, 360, 270)).resize((8, 8))
    with pytest.raises(ValueError, match="one per image"):
        crops_from_originals([object_file], [], EvalGeometry.stretch(64), size=64, mean=MEAN, std=STD)
