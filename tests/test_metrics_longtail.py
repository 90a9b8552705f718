"""Per-class accuracy, head / medium / tail groups and top-k error on hand-built numbers."""

import math

import numpy as np
import pytest
import torch

from fgvc_lib.metrics import group_accuracy, per_class_accuracy, shot_groups

TRAIN_COUNTS = [300, 150, 60, 30, 10, 2]  # head 0, 1; medium 2, 3; tail 4, 5
# per class: (test samples, correct) -> 0: 4/3, 1: 2/1, 2: 5/5, 3: 4/1, 4: 2/0, 5: none
TARGETS = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4])
PREDS = np.array([0, 0, 0, 5, 1, 0, 2, 2, 2, 2, 2, 3, 0, 1, 2, 5, 3])
PER_CLASS = [0.75, 0.5, 1.0, 0.25, 0.0, math.nan]


def test_per_class_accuracy_from_predictions():
    np.testing.assert_allclose(per_class_accuracy(PREDS, TARGETS, 6), PER_CLASS)


def test_per_class_accuracy_from_logits_and_tensors():
    logits = torch.nn.functional.one_hot(torch.as_tensor(PREDS), 6).float() * 3 - 1
    got = per_class_accuracy(logits, torch.as_tensor(TARGETS), 6)
    np.testing.assert_allclose(got, PER_CLASS)
    onehot_targets = torch.nn.functional.one_hot(torch.as_tensor(TARGETS), 6)
    np.testing.assert_allclose(per_class_accuracy(logits, onehot_targets, 6), PER_CLASS)
    assert np.isnan(per_class_accuracy(PREDS, TARGETS, 8)[6:]).all()


def test_per_class_accuracy_errors():
    with pytest.raises(ValueError, match="do not match"):
        per_class_accuracy(PREDS[:3], TARGETS, 6)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        per_class_accuracy(PREDS, TARGETS, 4)


def test_shot_groups_inat_convention():
    groups = shot_groups(TRAIN_COUNTS)
    assert {k: v.tolist() for k, v in groups.items()} == {"head": [0, 1], "medium": [2, 3], "tail": [4, 5]}


def test_shot_groups_edges_land_in_medium():
    groups = shot_groups([101, 100, 20, 19, 0])
    assert {k: v.tolist() for k, v in groups.items()} == {"head": [0], "medium": [1, 2], "tail": [3, 4]}
    custom = shot_groups(np.array([50, 10, 5, 4]), many=10, few=5)
    assert {k: v.tolist() for k, v in custom.items()} == {"head": [0], "medium": [1, 2], "tail": [3]}
    with pytest.raises(ValueError, match="few"):
        shot_groups(TRAIN_COUNTS, many=10, few=20)


def test_group_accuracy_hand_computed():
    acc = per_class_accuracy(PREDS, TARGETS, 6)
    got = group_accuracy(acc, shot_groups(TRAIN_COUNTS))
    assert list(got) == ["head_acc", "medium_acc", "tail_acc"]
    assert got["head_acc"] == pytest.approx((0.75 + 0.5) / 2)
    assert got["medium_acc"] == pytest.approx((1.0 + 0.25) / 2)
    assert got["tail_acc"] == pytest.approx(0.0)  # class 5 has no test samples: left out, not counted as 0


def test_group_accuracy_empty_group_is_nan():
    acc = per_class_accuracy(PREDS, TARGETS, 6)
    got = group_accuracy(acc, shot_groups([500] * 6))
    assert got["head_acc"] == pytest.approx((0.75 + 0.5 + 1.0 + 0.25 + 0.0) / 5)
    assert math.isnan(got["medium_acc"]) and math.isnan(got["tail_acc"])
    only_untested = group_accuracy(acc, {"head": np.array([5]), "medium": np.array([], dtype=int)})
    assert math.isnan(only_untested["head_acc"]) and math.isnan(only_untested["medium_acc"])
