import numpy as np
import pytest
import torch

from fgvc_lib.cam import box_iou, cam_box, crop_to_boxes, expand_box


def test_cam_box_takes_the_component_of_the_peak():
    cam = np.zeros((10, 10))
    cam[2:5, 3:7] = 1.0  # peak region: x 3..6, y 2..4
    cam[8, 8] = 0.6  # a separate blob above threshold
    assert cam_box(cam, 0.5) == (3.0, 2.0, 4.0, 3.0)


def test_expand_box_and_clip():
    assert expand_box((10, 10, 20, 10), 0.5, 100, 100) == (0.0, 5.0, 40.0, 20.0)
    assert expand_box((90, 0, 10, 10), 0.5, 100, 100) == (85.0, 0.0, 15.0, 15.0)


def test_box_iou_hand_values():
    assert box_iou((0, 0, 2, 2), (1, 1, 2, 2)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 1, 1), (5, 5, 1, 1)) == 0.0


def test_crop_to_boxes_resamples_the_box():
    img = torch.zeros(2, 1, 8, 8)
    img[0, 0, 1:5, 1:5] = 1.0
    img[1, 0, :, 4:] = 2.0
    out = crop_to_boxes(img, [(2, 2, 2, 2), (5, 1, 2, 6)], 4)
    assert out.shape == (2, 1, 4, 4)
    assert torch.allclose(out[0], torch.ones(1, 4, 4), atol=1e-5)
    assert torch.allclose(out[1], torch.full((1, 4, 4), 2.0), atol=1e-5)
    whole = crop_to_boxes(img[:1], [(0, 0, 8, 8)], 8)
    assert torch.allclose(whole, img[:1], atol=1e-5)  # the full box is the identity
