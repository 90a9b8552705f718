"""Top-k accuracy and on-device accumulators on a hand-built 4x6 logits matrix."""

import pytest
import torch
import torch.nn.functional as F

from fgvc_lib.metrics import accuracy, topk_accuracy, topk_correct

# rank of the target (1 = best):   row 0 -> 1, row 1 -> 2, row 2 -> 6, row 3 -> 5
LOGITS = torch.tensor(
    [
        [0.1, 0.9, 0.3, 0.2, 0.5, 0.0],  # order 1 4 2 3 0 5, target 1
        [0.8, 0.1, 0.7, 0.6, 0.2, 0.3],  # order 0 2 3 5 4 1, target 2
        [0.2, 0.3, 0.1, 0.9, 0.8, 0.7],  # order 3 4 5 1 0 2, target 2
        [0.5, 0.4, 0.3, 0.2, 0.1, 0.6],  # order 5 0 1 2 3 4, target 3
    ]
)
TARGETS = torch.tensor([1, 2, 2, 3])


def test_topk_hand_computed():
    got = topk_accuracy(LOGITS, TARGETS, ks=(1, 2, 3, 5, 6))
    assert got == {1: 0.25, 2: 0.5, 3: 0.5, 5: 0.75, 6: 1.0}
    assert topk_accuracy(LOGITS, TARGETS) == {1: 0.25, 5: 0.75}
    assert accuracy(LOGITS, TARGETS) == 0.25


def test_k_larger_than_classes_is_clamped():
    assert topk_accuracy(LOGITS, TARGETS, ks=(10, 1)) == {10: 1.0, 1: 0.25}
    assert topk_accuracy(LOGITS[:, :3], torch.tensor([0, 0, 2, 1]), ks=(5,)) == {5: 1.0}


def test_one_hot_targets_and_counts():
    assert topk_accuracy(LOGITS, F.one_hot(TARGETS, 6).float(), ks=(1, 5)) == {1: 0.25, 5: 0.75}
    assert topk_correct(LOGITS, TARGETS, ks=(1, 2, 6)).tolist() == [1, 2, 4]


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        topk_accuracy(LOGITS, TARGETS[:3])
    with pytest.raises(ValueError, match="ks"):
        topk_accuracy(LOGITS, TARGETS, ks=(0,))
    with pytest.raises(ValueError, match="empty"):
        topk_accuracy(LOGITS[:0], TARGETS[:0])
