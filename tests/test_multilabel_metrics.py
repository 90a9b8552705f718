"""Multi-label metrics: hand-computed cases, agreement with scikit-learn, the all-negative baseline, threshold
search on constructed optima and the report's untrained-network sanity check."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from fgvc_lib.multilabel_metrics import (
    DEFAULT_GRID,
    all_negative_baseline,
    exact_match,
    held_out_report,
    held_out_thresholds,
    macro_f1,
    micro_f1,
    multilabel_report,
    per_label_f1,
    search_threshold_global,
    search_thresholds_per_label,
    split_halves,
)

# 4 images x 3 labels. At 0.5 the predictions are [[1,0,1],[0,1,0],[0,0,0],[1,1,0]].
P = np.array([[0.9, 0.2, 0.6], [0.4, 0.7, 0.1], [0.1, 0.1, 0.1], [0.8, 0.6, 0.3]])
T = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0]])


def test_hand_case_at_half():
    # label 0: tp 2 fp 0 fn 1 -> 4/5; label 1: tp 1 fp 1 fn 0 -> 2/3; label 2: tp 1 -> 1
    np.testing.assert_allclose(per_label_f1(P, T), [0.8, 2 / 3, 1.0])
    assert macro_f1(P, T) == pytest.approx((0.8 + 2 / 3 + 1.0) / 3)
    assert micro_f1(P, T) == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))  # tp 4, fp 1, fn 1 pooled
    assert exact_match(P, T) == pytest.approx(0.5)  # images 0 and 2 are exactly right
    assert all_negative_baseline(T) == pytest.approx(0.25)


def test_hand_case_per_label_thresholds_and_boundary():
    thr = np.array([0.3, 0.65, 0.5])
    assert micro_f1(P, T, thr) == 1.0 and macro_f1(P, T, thr) == 1.0 and exact_match(P, T, thr) == 1.0
    # a probability equal to the threshold is not predicted (strict >): label 0 of image 1 at 0.4
    assert per_label_f1(P, T, 0.4)[0] == pytest.approx(0.8)
    assert per_label_f1(P, T, np.nextafter(0.4, 0.0))[0] == 1.0


def test_zero_division_label_without_positives_or_predictions():
    p = np.array([[0.9, 0.1], [0.2, 0.1]])
    t = np.array([[1, 0], [0, 0]])
    assert macro_f1(p, t) == pytest.approx(0.5)  # the empty label counts 0, like sklearn's zero_division=0
    assert macro_f1(p, t, zero_division=1.0) == pytest.approx(1.0)
    assert micro_f1(p, t) == 1.0
    assert micro_f1(np.zeros((3, 2)), np.zeros((3, 2))) == 0.0  # nothing at all: zero_division


def random_case(seed: int, n: int = 300, k: int = 7):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, k)) < rng.uniform(0.05, 0.4, k)).astype(int)
    t[:, -1] = 0  # one label that never occurs
    p = np.clip(0.35 * t + rng.random((n, k)) * 0.7, 0, 1)
    return p, t


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.5, 0.3, "vector"])
@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_agrees_with_sklearn(seed, threshold, zero_division):
    p, t = random_case(seed)
    thr = np.linspace(0.2, 0.8, t.shape[1]) if threshold == "vector" else threshold
    pred = (p > thr).astype(int)
    for average, ours in (("micro", micro_f1), ("macro", macro_f1)):
        expected = f1_score(t, pred, average=average, zero_division=zero_division)
        assert ours(p, t, thr, zero_division=zero_division) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(
        per_label_f1(p, t, thr, zero_division), f1_score(t, pred, average=None, zero_division=zero_division)
    )
    assert exact_match(p, t, thr) == pytest.approx(accuracy_score(t, pred))


def test_accepts_torch_tensors():
    assert micro_f1(torch.tensor(P), torch.tensor(T)) == pytest.approx(micro_f1(P, T))
    assert exact_match(torch.tensor(P), torch.tensor(T).bool(), torch.tensor([0.3, 0.65, 0.5])) == 1.0


def test_all_negative_baseline_is_predicting_nothing():
    # the report's data: 9824 of 20000 images carry no label -> 49.12 %
    rng = np.random.default_rng(0)
    t = np.zeros((20000, 14), dtype=int)
    labelled = rng.permutation(20000)[: 20000 - 9824]
    t[labelled, rng.integers(0, 14, labelled.size)] = 1
    assert all_negative_baseline(t) == pytest.approx(0.4912)
    nothing = np.zeros(t.shape)
    assert exact_match(nothing, t) == pytest.approx(0.4912)
    assert micro_f1(nothing, t) == 0.0 and macro_f1(nothing, t) == 0.0


def test_global_search_finds_the_separating_threshold():
    rng = np.random.default_rng(1)
    t = (rng.random((200, 5)) < 0.3).astype(int)
    # positives in [0.32, 0.6], negatives in [0, 0.28]: only 0.30 on the default grid separates them
    p = np.where(t == 1, rng.uniform(0.32, 0.6, t.shape), rng.uniform(0.0, 0.28, t.shape))
    thr, f1 = search_threshold_global(p, t)
    assert thr == pytest.approx(0.30) and f1 == 1.0
    assert micro_f1(p, t, 0.5) < 1.0


def test_global_search_matches_brute_force_with_ties_on_grid_values():
    rng = np.random.default_rng(2)
    t = (rng.random((150, 6)) < 0.25).astype(int)
    p = np.clip(np.round((0.3 * t + 0.7 * rng.random(t.shape)) * 20) / 20, 0, 1)  # many p == grid value
    grid = DEFAULT_GRID[::-1]  # unsorted grids are fine
    scores = [micro_f1(p, t, g) for g in grid]
    thr, f1 = search_threshold_global(p, t, grid)
    assert f1 == pytest.approx(max(scores))
    assert thr == grid[int(np.argmax(scores))]


def test_per_label_search_finds_label_specific_optimum():
    rng = np.random.default_rng(3)
    t = (rng.random((300, 2)) < 0.4).astype(int)
    p = np.empty(t.shape)
    p[:, 0] = np.where(t[:, 0] == 1, rng.uniform(0.22, 0.5, 300), rng.uniform(0.0, 0.18, 300))
    p[:, 1] = np.where(t[:, 1] == 1, rng.uniform(0.72, 1.0, 300), rng.uniform(0.1, 0.68, 300))
    _, f1_global = search_threshold_global(p, t)
    thr, f1 = search_thresholds_per_label(p, t)
    assert f1_global < 1.0 and f1 == 1.0
    np.testing.assert_allclose(thr, [0.2, 0.7])
    assert micro_f1(p, t, thr) == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_per_label_search_never_below_global(seed):
    p, t = random_case(seed, n=400, k=10)
    g_thr, g_f1 = search_threshold_global(p, t)
    thr, f1 = search_thresholds_per_label(p, t)
    assert thr.shape == (10,) and np.isin(thr, DEFAULT_GRID).all()
    assert f1 >= g_f1
    assert f1 == pytest.approx(micro_f1(p, t, thr))  # the reported score is the thresholds' real micro-F1
    assert g_f1 == pytest.approx(micro_f1(p, t, g_thr))


def test_untrained_network_sanity_check():
    """Random probabilities around 0.5 (an untrained sigmoid head) on the report's label frequencies:
    exact match ~0 and a small micro-F1 (the report measured Acc 0.0000, F1 0.1256)."""
    freq = np.array([0.005, 0.018, 0.016, 0.055, 0.022, 0.161, 0.038, 0.149, 0.03, 0.32, 0.156, 0.006, 0.009])
    freq = np.append(freq, 0.026)
    rng = np.random.default_rng(4)
    t = (rng.random((4000, 14)) < freq).astype(int)
    p = 1 / (1 + np.exp(-0.05 * rng.standard_normal(t.shape)))
    assert exact_match(p, t) < 0.005
    prevalence = freq.mean()  # precision ~ prevalence, recall ~ 1/2
    expected = 2 * prevalence * 0.5 / (prevalence + 0.5)
    f1 = micro_f1(p, t)
    assert 0.10 < f1 < 0.16 and f1 == pytest.approx(expected, abs=0.015)


def test_multilabel_report_rows_and_columns():
    p, t = random_case(5)
    g_thr, _ = search_threshold_global(p, t)
    l_thr, _ = search_thresholds_per_label(p, t)
    report = multilabel_report(p, t, {"0.5": 0.5, "global": g_thr, "per-label": l_thr})
    assert isinstance(report, pd.DataFrame)
    assert list(report.index) == ["0.5", "global", "per-label"]
    assert list(report.columns) == ["micro_f1", "macro_f1", "exact_match"]
    assert report.loc["global", "micro_f1"] == pytest.approx(micro_f1(p, t, g_thr))
    assert report.loc["per-label", "macro_f1"] == pytest.approx(macro_f1(p, t, l_thr))
    assert report.loc["0.5", "exact_match"] == pytest.approx(exact_match(p, t))
    assert (
        report.loc["per-label", "micro_f1"]
        >= report.loc["global", "micro_f1"]
        >= report.loc["0.5", "micro_f1"]
    )
    pd.testing.assert_frame_equal(multilabel_report(p, t), report)  # default: 0.5, global, per-label


def test_input_validation():
    with pytest.raises(ValueError, match="shape"):
        micro_f1(P, T[:, :2])
    with pytest.raises(ValueError, match="0/1"):
        micro_f1(P, T * 2)
    with pytest.raises(ValueError, match="threshold"):
        exact_match(P, T, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        macro_f1(P[0], T[0])
    with pytest.raises(ValueError, match="grid"):
        search_threshold_global(P, T, grid=[])
    with pytest.raises(ValueError, match="max_sweeps"):
        search_thresholds_per_label(P, T, max_sweeps=0)


def test_per_image_threshold_rows():
    rows = np.tile([0.5, 0.5, 0.5], (4, 1))
    assert micro_f1(P, T, rows) == pytest.approx(micro_f1(P, T, 0.5))
    rows[1, 0] = 0.3  # image 1's label 0 (p 0.4, true) becomes a hit
    assert exact_match(P, T, rows) == pytest.approx(exact_match(P, T, 0.5) + 0.25)
    with pytest.raises(ValueError, match="shape"):
        micro_f1(P, T, np.full((3, 3), 0.5))


def test_split_halves_seeded_disjoint_and_complete():
    a, b = split_halves(11, seed=3)
    assert len(a) == 5 and len(b) == 6
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(11))
    a2, _ = split_halves(11, seed=3)
    np.testing.assert_array_equal(a, a2)
    with pytest.raises(ValueError):
        split_halves(1)


def test_held_out_thresholds_score_each_half_with_the_other_halfs_search():
    rng = np.random.default_rng(0)
    t = (rng.random((60, 4)) < 0.3).astype(int)
    p = np.clip(t * 0.4 + rng.random((60, 4)) * 0.6, 0, 1)
    a, b = np.arange(30), np.arange(30, 60)
    out = held_out_thresholds(p, t, (a, b))
    g_a, tuned_a = search_threshold_global(p[a], t[a])
    g_b, tuned_b = search_threshold_global(p[b], t[b])
    rows = out["global"]["thresholds"]
    assert np.all(rows[b] == g_a) and np.all(rows[a] == g_b)  # each image gets the OTHER half's threshold
    pred = np.where(np.isin(np.arange(60), a)[:, None], p > g_b, p > g_a)
    tp = (pred & (t == 1)).sum()
    expected = 2 * tp / (pred.sum() + t.sum())
    assert out["global"]["micro_f1"] == pytest.approx(expected)
    assert out["global"]["micro_f1_tuned_half"] == pytest.approx((tuned_a + tuned_b) / 2)
    d = out["global"]["directions"]
    assert d[0]["held_out"] == pytest.approx(micro_f1(p[b], t[b], g_a))
    # per-label: on its tuning half never below the global search
    assert out["per_label"]["micro_f1_tuned_half"] >= out["global"]["micro_f1_tuned_half"] - 1e-12
    table = held_out_report(p, t, out)
    assert list(table.index) == ["0.5", "global", "per label"]
    assert table.loc["global", "micro_f1"] == pytest.approx(out["global"]["micro_f1"])
    with pytest.raises(ValueError, match="disjoint"):
        held_out_thresholds(p, t, (a, a))
