"""Interpretation (fgvc_lib.interpretation) on hand-computed toys, its save / load round trip, the figures of
fgvc_lib.interpret_plots (with seaborn and in plain matplotlib) and the wiring into an experiment's result."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fgvc_lib import interpret_plots
from fgvc_lib.interpretation import FILENAME, Interpretation, MultiLabelInterpretation, load_interpretation

# 3 classes, 8 items (dataset indices 10..17); predictions and losses below are worked out by hand.
CLASSES = ["cat", "dog", "Crimson_Triangle_Dotted_Very_Long_Class_Name"]
PROBS = np.array([
    [0.8, 0.1, 0.1],  # 10: cat -> cat, loss -ln 0.8
    [0.3, 0.6, 0.1],  # 11: cat -> dog, -ln 0.3
    [0.2, 0.7, 0.1],  # 12: cat -> dog, -ln 0.2 (largest)
    [0.1, 0.8, 0.1],  # 13: dog -> dog, -ln 0.8
    [0.5, 0.4, 0.1],  # 14: dog -> cat, -ln 0.4
    [0.1, 0.1, 0.8],  # 15: crimson -> crimson, -ln 0.8
    [0.6, 0.1, 0.3],  # 16: crimson -> cat, -ln 0.3 (ties with 11)
    [0.05, 0.05, 0.9],  # 17: crimson -> crimson, -ln 0.9
])
TARGETS = [0, 0, 0, 1, 1, 2, 2, 2]


@pytest.fixture
def toy() -> Interpretation:
    return Interpretation.from_probs(PROBS, TARGETS, CLASSES, indices=range(10, 18), split="test")


def test_confusion_matrix_counts_and_row_shares(toy):
    assert toy.confusion_matrix().tolist() == [[1, 2, 0], [1, 1, 0], [1, 0, 2]]
    np.testing.assert_allclose(toy.confusion_matrix("true"), [[1 / 3, 2 / 3, 0], [1 / 2, 1 / 2, 0], [1 / 3, 0, 2 / 3]])
    assert toy.accuracy == 0.5
    with pytest.raises(ValueError, match="normalize"):
        toy.confusion_matrix("rows")


def test_most_confused_is_sorted_by_count_then_class(toy):
    pairs = toy.most_confused()
    assert list(pairs[["actual", "predicted", "count"]].itertuples(index=False, name=None)) == [
        ("cat", "dog", 2), ("dog", "cat", 1), (CLASSES[2], "cat", 1)]
    np.testing.assert_allclose(pairs["share"], [2 / 3, 1 / 2, 1 / 3])
    assert len(toy.most_confused(min_count=2)) == 1
    assert len(toy.most_confused(top=2)) == 2


def test_per_class_accuracy_precision_f1(toy):
    table = toy.per_class()
    assert list(table["class"]) == CLASSES
    assert table["support"].tolist() == [3, 2, 3]
    assert table["predicted"].tolist() == [3, 3, 2]
    np.testing.assert_allclose(table["accuracy"], [1 / 3, 1 / 2, 2 / 3])
    np.testing.assert_allclose(table["precision"], [1 / 3, 1 / 3, 1.0])
    np.testing.assert_allclose(table["f1"], [1 / 3, 0.4, 0.8])


def test_per_class_leaves_undefined_values_nan():
    interp = Interpretation.from_probs([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0]], [0, 1], ["a", "b", "c"])
    table = interp.per_class()
    assert math.isnan(table.loc[2, "accuracy"])  # class c has no items
    assert math.isnan(table.loc[1, "precision"])  # b is never predicted
    assert table.loc[1, "f1"] == 0.0


def test_top_losses_order_indices_and_probabilities(toy):
    top = toy.top_losses(4)
    assert top["index"].tolist() == [12, 11, 16, 14]  # 11 and 16 tie (-ln 0.3): evaluation order
    np.testing.assert_allclose(top["loss"], -np.log([0.2, 0.3, 0.3, 0.4]), rtol=1e-6)
    assert top["target"].tolist() == [0, 0, 2, 1]
    assert top["pred"].tolist() == [1, 1, 0, 0]
    assert top["predicted"].tolist() == ["dog", "dog", "cat", "cat"]
    np.testing.assert_allclose(top["prob"], [0.7, 0.6, 0.6, 0.5])
    assert toy.top_losses(1, largest=False)["index"].tolist() == [17]


def test_from_logits_gives_softmax_and_cross_entropy(toy):
    torch = pytest.importorskip("torch")
    logits = torch.log(torch.tensor(PROBS)) + 3.0  # a constant shift changes nothing
    interp = Interpretation.from_logits(logits, torch.tensor(TARGETS), CLASSES)
    np.testing.assert_allclose(interp.probs, PROBS, rtol=1e-5)
    np.testing.assert_allclose(interp.losses, toy.losses, rtol=1e-5)
    ce = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(TARGETS), reduction="none")
    np.testing.assert_allclose(interp.losses, ce.numpy(), rtol=1e-5)
    assert interp.indices.tolist() == list(range(8))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="classes: expected 3 names"):
        Interpretation.from_probs(PROBS, TARGETS, ["a", "b"])
    with pytest.raises(ValueError, match="targets"):
        Interpretation.from_probs(PROBS, TARGETS[:-1], CLASSES)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        Interpretation(None, [0, 3], PROBS[:2], [0.0, 0.0], CLASSES)


def test_save_and_load_round_trip(toy, tmp_path):
    path = toy.save(tmp_path)
    assert path == tmp_path / FILENAME and not list(tmp_path.glob(".*tmp*"))
    for loaded in (Interpretation.load(tmp_path), load_interpretation(path)):
        assert isinstance(loaded, Interpretation)
        assert loaded.classes == CLASSES and loaded.split == "test"
        for name in ("indices", "targets", "probs", "losses"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(toy, name))
        pd.testing.assert_frame_equal(loaded.most_confused(), toy.most_confused())
    with pytest.raises(ValueError, match="kind 'single'.*load it with Interpretation.load"):
        MultiLabelInterpretation.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="interpretation.npz"):
        Interpretation.load(tmp_path / "elsewhere")


# ------------------------------------------------------------------ multi-label
# 4 images, 3 labels; the third label has no positives.
ML_LABELS = ["baby", "bird", "a_label_with_a_rather_long_name"]
ML_TARGETS = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
ML_PROBS = np.array([[0.9, 0.2, 0.1], [0.4, 0.7, 0.6], [0.6, 0.3, 0.2], [0.1, 0.4, 0.3]])


@pytest.fixture
def ml() -> MultiLabelInterpretation:
    return MultiLabelInterpretation.from_probs(ML_PROBS, ML_TARGETS, ML_LABELS)


def test_per_label_precision_recall_f1_at_a_threshold(ml):
    # at 0.5: baby tp 1 (img 0), fp 1 (img 2), fn 1 (img 1); bird tp 1, fp 0, fn 1; third label fp 1 (img 1)
    table = ml.per_label()
    assert table["support"].tolist() == [2, 2, 0]
    assert table["predicted"].tolist() == [2, 1, 1]
    np.testing.assert_allclose(table["precision"], [0.5, 1.0, 0.0])
    np.testing.assert_allclose(table["recall"], [0.5, 0.5, np.nan])
    np.testing.assert_allclose(table["f1"], [0.5, 2 / 3, 0.0])
    # at 0.35 baby catches both (tp 2, fp 1): P 2/3, R 1, F1 0.8
    np.testing.assert_allclose(ml.per_label(0.35).loc[0, ["precision", "recall", "f1"]].astype(float),
                               [2 / 3, 1.0, 0.8])


def test_threshold_curves_and_best_thresholds(ml):
    grid = [0.35, 0.5, 0.65]
    curves = ml.threshold_curves(grid)
    assert list(curves.columns) == ML_LABELS and curves.index.tolist() == grid
    np.testing.assert_allclose(curves["baby"], [0.8, 0.5, 2 / 3])
    np.testing.assert_allclose(curves["bird"], [0.5, 2 / 3, 2 / 3])
    np.testing.assert_allclose(curves[ML_LABELS[2]], [0.0, 0.0, np.nan])  # nothing to find, nothing predicted
    best = ml.best_thresholds(grid)
    assert best["threshold"].tolist()[:2] == [0.35, 0.5]  # the first of bird's tie
    np.testing.assert_allclose(best["f1"][:2], [0.8, 2 / 3])


def test_multilabel_losses_top_losses_and_round_trip(ml, tmp_path):
    p, t = ML_PROBS, ML_TARGETS
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(axis=1)
    np.testing.assert_allclose(ml.losses, bce, rtol=1e-6)
    top = ml.top_losses(2)
    assert top["index"].tolist() == list(np.argsort(-bce, kind="stable")[:2])
    assert top.loc[0, "actual"] == "bird" and top.loc[0, "predicted"] == "baby"  # image 2
    ml.threshold = 0.35
    ml.save(tmp_path)
    loaded = load_interpretation(tmp_path)
    assert isinstance(loaded, MultiLabelInterpretation) and loaded.threshold == 0.35
    assert loaded.labels == ML_LABELS
    pd.testing.assert_frame_equal(loaded.per_label(), ml.per_label())
    with pytest.raises(ValueError, match="kind 'multilabel'.*MultiLabelInterpretation.load"):
        Interpretation.load(tmp_path)


# ------------------------------------------------------------------ figures
@pytest.fixture(params=["seaborn", "matplotlib"])
def drawing(request, monkeypatch) -> str:
    """Each figure test runs with seaborn (skipped when it is not installed) and with the plain fallback."""
    if request.param == "seaborn":
        pytest.importorskip("seaborn")
    else:
        monkeypatch.setattr(interpret_plots, "_seaborn", lambda: None)
    return request.param


def _tick_texts(labels) -> list[str]:
    return [t.get_text() for t in labels]


def test_confusion_heatmap_shows_every_class_whole(toy, drawing):
    fig = interpret_plots.confusion_heatmap(toy)
    assert isinstance(fig, Figure)
    heat, _colorbar = fig.axes
    names = _tick_texts(heat.get_yticklabels())
    assert names[:2] == ["cat", "dog"]
    assert names[2].replace("\n", "") == CLASSES[2] and "\n" in names[2]  # wrapped, not cut
    numbers = sorted(t.get_text() for t in heat.texts if t.get_text())
    assert numbers == ["1", "1", "1", "1", "2", "2"]  # the non-zero counts


def test_many_classes_get_the_pairs_table_and_the_confused_subset(drawing):
    rng = np.random.default_rng(0)
    k, n = 40, 400
    targets = np.arange(n) % k
    logits = rng.normal(0.0, 0.1, (n, k))
    logits[np.arange(n), targets] += 5.0
    logits[targets == 3, 7] += 10.0  # class 3 is always taken for class 7
    logits[np.flatnonzero(targets == 11)[:4], 12] += 10.0  # 4 of class 11's 10 images go to 12
    interp = Interpretation.from_logits(logits, targets, [f"species_{i}" for i in range(k)])
    pairs = interp.most_confused()
    assert list(pairs[["actual", "predicted", "count"]].itertuples(index=False, name=None)) == [
        ("species_3", "species_7", 10), ("species_11", "species_12", 4)]
    fig = interpret_plots.confusion_heatmap(interp)
    table_ax, heat = fig.axes[:2]
    assert len(table_ax.tables) == 1
    cells = table_ax.tables[0].get_celld()
    assert cells[1, 0].get_text().get_text() == "species_3" and cells[1, 2].get_text().get_text() == "10"
    assert _tick_texts(heat.get_yticklabels()) == ["species_3", "species_7", "species_11", "species_12"]
    assert "40 classes" in fig.get_suptitle()


def test_per_class_bars_worst_first(toy, drawing):
    fig = interpret_plots.per_class_bars(toy)
    acc, support = fig.axes
    assert _tick_texts(acc.get_yticklabels())[:2] == ["cat", "dog"]  # accuracy 1/3, 1/2, 2/3
    widths = [p.get_width() for p in acc.patches]
    np.testing.assert_allclose(widths, [1 / 3, 1 / 2, 2 / 3])
    assert [p.get_width() for p in support.patches] == [3, 2, 3]
    few = interpret_plots.per_class_bars(toy, max_classes=2)
    assert len(few.axes[0].patches) == 2 and "the 2 least accurate of 3" in few.get_suptitle()


def test_top_losses_grid_titles(toy):
    rows = toy.top_losses(3)
    images = [np.zeros((8, 8, 3)) for _ in range(3)]
    fig = interpret_plots.top_losses_grid(images, rows, title="top losses")
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert len(titles) == 3
    assert titles[0] == "true cat\npred dog\nloss 1.61 / prob 0.70"
    assert all(ax.title.get_color() == "red" for ax in fig.axes if ax.images)
    with pytest.raises(ValueError, match="one per row"):
        interpret_plots.top_losses_grid(images[:2], rows)


def test_multilabel_figures(ml, drawing):
    bars = interpret_plots.per_label_bars(ml)
    (ax,) = bars.axes
    labels = [t.replace("\n", "") for t in _tick_texts(ax.get_yticklabels())]
    assert labels == [f"{ML_LABELS[2]} (n=0)", "baby (n=2)", "bird (n=2)"]  # worst F1 first
    assert sum(1 for p in ax.patches if p.get_width() > 0) == 6  # P, R, F1 of baby and bird; the third all 0
    curves = interpret_plots.threshold_curves(ml, cols=2)
    shown = [a for a in curves.axes if a.get_visible() and a.axison]
    assert len(shown) == 3 and len(curves.axes) == 4
    assert shown[0].get_title().startswith("baby (n=2)\nbest")
    assert "no positives" in shown[2].get_title()


# ------------------------------------------------------------------ wiring into an experiment
def test_bird_run_exposes_and_saves_its_interpretation(tmp_path, tiny_params):
    from fgvc_lib.experiments.bird import BirdExperiment

    exp = BirdExperiment(tiny_params("bird", epochs=1, run_dir=str(tmp_path / "run")))
    predict, test_passes = exp.trainer.predict, []

    def counting_predict(loader):
        test_passes.extend([loader] if loader is exp.test_loader else [])
        return predict(loader)

    exp.trainer.predict = counting_predict
    result = exp.run()
    assert len(test_passes) == 1  # the interpretation reuses the final evaluation's logits
    interp = result.interpretation
    assert isinstance(interp, Interpretation) and interp.split == result.metrics["eval_split"] == "test"
    assert len(interp) == result.metrics["test_images"]
    assert interp.accuracy == pytest.approx(result.metrics["top1_acc"])
    assert interp.confusion_matrix().sum() == len(interp)
    assert interp.classes == [exp.short_name(k) for k in range(len(exp.classes))]  # without CUB's "001."
    for name in ("confusion_matrix", "per_class", "top_losses"):
        assert name in result.figures and (result.run_dir / "figures" / f"{name}.png").is_file()
    loaded = Interpretation.load(result.run_dir)
    np.testing.assert_array_equal(loaded.probs, interp.probs)
    assert sum(1 for ax in result.figures["top_losses"].axes if ax.images) == min(8, len(interp))
