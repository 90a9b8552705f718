import numpy as np
import pytest

from fgvc_lib import plots
from fgvc_lib.losses.ohem import create_ohem_schedule

HISTORY = [
    {"epoch": 1, "train_loss": 2.0, "train_acc": 0.2, "val_loss": 2.2, "val_acc": 0.1, "lr": 0.1},
    {"epoch": 2, "train_loss": 1.5, "train_acc": 0.4, "val_loss": 1.9, "val_acc": 0.3, "lr": 0.05},
]


def test_learning_curves_plot_train_and_val():
    fig = plots.learning_curves(HISTORY)
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train", "val"]
    np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), [2.2, 1.9])
    np.testing.assert_allclose(acc_ax.lines[0].get_ydata(), [0.2, 0.4])


def test_schedule_plot_from_function_matches_schedule():
    schedule = create_ohem_schedule("cyclical", 10)
    fig = plots.schedule_plot(schedule, 10, ylabel="ratio", observed=[1.0, 1.0])
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [schedule(i) for i in range(10)])
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.arange(1, 11))
    assert len(ax.lines[1].get_xdata()) == 2
    with pytest.raises(ValueError, match="epochs"):
        plots.schedule_plot(schedule, ylabel="ratio")


def test_image_grid_and_save(tmp_path):
    images = [np.full((8, 8, 3), v, dtype=float) for v in (0.0, 0.5, 1.0)]
    fig = plots.image_grid(images, ["a", "b", "c"], cols=2, points=[(1, 1), None, (4, 4)])
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "a" and not fig.axes[3].images
    path = plots.save_figure(fig, tmp_path / "figs" / "grid.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]


def test_per_class_accuracy_scatter():
    fig = plots.per_class_accuracy([1.0, 0.5, float("nan")], [100, 10, 1], many=50, few=5)
    ax = fig.axes[0]
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets, [[100, 1.0], [10, 0.5]])  # the class without samples is left out
    assert ax.get_xscale() == "log" and len(ax.lines) == 2
    with pytest.raises(ValueError, match="differ in length"):
        plots.per_class_accuracy([1.0], [1, 2])


def test_wrap_title_breaks_long_names_without_cutting():
    text = plots.wrap_title("pred Crimson_Triangle_Dotted_Checkered_Banded", width=20)
    assert text.replace("\n", "") == "pred Crimson_Triangle_Dotted_Checkered_Banded"  # nothing lost
    assert all(len(line) <= 20 for line in text.split("\n"))
    assert plots.wrap_title("short") == "short"
    fig = plots.image_grid([np.zeros((8, 8, 3))], ["true Crimson_Triangle_Dotted_Checkered_Banded_Long"])
    assert "Crimson" in fig.axes[0].get_title() and "Long" in fig.axes[0].get_title()


def test_log_schedule_has_few_readable_ticks():
    fig = plots.schedule_plot([1e-3 * 0.8 ** (e / 3) for e in range(30)], ylabel="lr", log=True)
    ax = fig.axes[0]
    ticks = ax.yaxis.get_majorticklocs()
    assert 2 <= len(ticks) <= 6
    assert len(ax.yaxis.get_minorticklocs()) == 0
    wide = plots.schedule_plot([1.0, 0.1, 0.01, 1e-4], ylabel="lr", log=True).axes[0]
    assert list(wide.yaxis.get_majorticklocs()) == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def test_plateau_reductions_marked_or_reported_absent():
    assert plots.lr_reductions([0.01, 0.01, 0.005, 0.005, 0.0025]) == [2, 4]
    fig = plots.schedule_plot([0.01, 0.01, 0.005, 0.005], ylabel="lr", log=True, title="LR (plateau)")
    ax = fig.axes[0]
    assert "reduced after epoch 2" in ax.get_title()
    assert [t.get_text() for t in ax.texts] == ["x0.5"]
    never = plots.schedule_plot([0.01] * 3, ylabel="lr", log=True, title="LR (plateau)").axes[0]
    assert "never reduced in 3 epochs" in never.get_title()
    plain = plots.schedule_plot([0.01, 0.005], ylabel="lr", title="LR (cosine)").axes[0]
    assert plain.get_title() == "LR (cosine)"


def test_learning_curves_name_the_split():
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_acc": 0.2, "val_acc": 0.1}]
    fig = plots.learning_curves(history, val_label="test")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train", "test"]
