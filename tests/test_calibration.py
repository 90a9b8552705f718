"""ECE (official 15-bin ECELoss binning), reliability bins and the reliability diagram."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from fgvc_lib.calibration import expected_calibration_error, reliability_bins, reliability_diagram

PROBS = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.62, 0.28, 0.10], [0.45, 0.35, 0.20]])
TARGETS = np.array([0, 1, 0, 1])


def naive_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """Reference with a loop over bins (lower < c <= upper)."""
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += abs(conf[in_bin].mean() - correct[in_bin].mean()) * in_bin.mean()
    return ece


def test_spec_ece15_from_log_probabilities():
    logits = torch.tensor(np.log(PROBS))
    assert expected_calibration_error(logits, torch.tensor(TARGETS)) == pytest.approx(0.4075, abs=1e-9)
    assert expected_calibration_error(np.log(PROBS), TARGETS) == pytest.approx(0.4075, abs=1e-9)  # numpy in
    assert expected_calibration_error(PROBS, TARGETS, from_logits=False) == pytest.approx(0.4075, abs=1e-9)


def test_spec_bins():
    bins = reliability_bins(np.log(PROBS), TARGETS)
    assert bins["edges"].shape == (16,) and bins["counts"].sum() == 4
    assert {i: int(c) for i, c in enumerate(bins["counts"]) if c} == {6: 1, 9: 1, 13: 2}
    np.testing.assert_allclose(bins["accuracy"][[6, 9, 13]], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(bins["confidence"][[6, 9, 13]], [0.45, 0.62, 0.9])
    assert bins["accuracy"][0] == 0.0 and bins["confidence"][0] == 0.0  # empty bin


def test_confidence_on_an_edge_goes_to_the_lower_bin():
    probs = np.array([[0.5, 0.5, 0.0], [0.75, 0.25, 0.0], [1.0, 0.0, 0.0]])
    bins = reliability_bins(probs, [0, 1, 0], n_bins=4, from_logits=False)
    assert bins["counts"].tolist() == [0, 1, 1, 1]  # 0.5 in (0.25, 0.5], 0.75 in (0.5, 0.75], 1.0 in last
    # 0.5: correct -> |0.5 - 1|; 0.75: wrong -> 0.75; 1.0: correct -> 0
    ece = expected_calibration_error(probs, [0, 1, 0], n_bins=4, from_logits=False)
    assert ece == pytest.approx((0.5 + 0.75) / 3)
    edge15 = np.linspace(0, 1, 16)[9]  # the 15-bin edge at 0.6
    bins15 = reliability_bins(np.array([[edge15, 1 - edge15]]), [0], from_logits=False)
    assert int(np.argmax(bins15["counts"])) == 8  # (0.5333, 0.6]


def test_matches_naive_reference_on_random_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=gen, dtype=torch.float64) * 2
    targets = torch.randint(0, 10, (500,), generator=gen)
    probs = logits.softmax(dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == targets).double().numpy()
    for n_bins in (5, 15):
        expected = naive_ece(conf.numpy(), correct, n_bins)
        assert expected_calibration_error(logits, targets, n_bins=n_bins) == pytest.approx(
            expected, abs=1e-12
        )


def test_perfect_and_validation():
    # confident and always right -> ECE 0; float32 logits that saturate are fine
    logits = torch.tensor([[50.0, 0.0], [0.0, 50.0]])
    assert expected_calibration_error(logits, torch.tensor([0, 1])) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 0.0
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(PROBS, TARGETS, n_bins=0)
    with pytest.raises(ValueError, match="targets"):
        expected_calibration_error(PROBS, TARGETS[:3])
    with pytest.raises(ValueError, match="logits_or_probs"):
        expected_calibration_error(PROBS[0], TARGETS[:1])


def test_reliability_diagram():
    fig = reliability_diagram(np.log(PROBS), TARGETS, title="toy")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    accuracy_bars = next(c for c in ax.containers if c.get_label() == "accuracy")
    gap_bars = next(c for c in ax.containers if c.get_label() == "gap")
    assert len(accuracy_bars.patches) == 15
    assert len(gap_bars.patches) == 3  # one per non-empty bin
    assert sorted(round(p.get_height(), 6) for p in accuracy_bars.patches if p.get_height() > 0) == [0.5, 1.0]
    assert "toy" in ax.get_title() and "ECE = 0.4075" in ax.get_title()
    diagonal = ax.lines[0].get_xydata()
    np.testing.assert_allclose(diagonal, [[0, 0], [1, 1]])
    assert len(reliability_diagram(np.log(PROBS), TARGETS, n_bins=10).axes[0].containers[0].patches) == 10


def test_reliability_diagram_labels_each_non_empty_bin_with_its_count():
    bins = reliability_bins(np.log(PROBS), TARGETS)
    (ax,) = reliability_diagram(np.log(PROBS), TARGETS).axes
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == sorted(f"n={int(c)}" for c in bins["counts"] if c > 0)
    assert f"{int(bins['counts'].sum())} samples" in ax.get_title()
