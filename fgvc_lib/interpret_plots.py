"""Figures of an interpretation (``fgvc_lib.interpretation``): where the model fails.

Single-label: the confusion matrix as a heatmap (every class up to ``max_classes``, 30 by default; beyond that a
table of the most-confused pairs next to a heatmap of the classes in them), per-class accuracy and support
bars, and the top-loss images with their CAMs. Multi-label: per-label precision / recall / F1 bars and each
label's F1-vs-threshold curve. Heatmaps and bars are drawn with seaborn's axes-level functions (plain
matplotlib when seaborn is not installed); every function returns a ``Figure`` built without pyplot, as
``fgvc_lib.plots``. Class names are shown whole, wrapped (``plots.wrap_title``), never cut.

``report_figures(exp, interpretation, dataset)`` draws the set an experiment saves after its evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .interpretation import Interpretation, MultiLabelInterpretation
from .plots import image_grid, wrap_title

__all__ = [
    "confusion_heatmap",
    "per_class_bars",
    "top_losses_grid",
    "per_label_bars",
    "threshold_curves",
    "report_figures",
]

MAX_HEATMAP_CLASSES = 30
"""Past this many classes the confusion figure is the most-confused pairs and the heatmap of their classes."""


def _seaborn() -> Any:
    try:
        import seaborn
    except ImportError:  # a declared dependency; without it the same figures in plain matplotlib
        return None
    return seaborn


def _names(names: Sequence[str], width: int) -> list[str]:
    """Wrapped display names, made unique (a repeated name gets its position appended)."""
    wrapped = [wrap_title(n, width) for n in names]
    seen: dict[str, int] = {}
    for name in wrapped:
        seen[name] = seen.get(name, 0) + 1
    return [f"{w} (#{i})" if seen[w] > 1 else w for i, w in enumerate(wrapped)]


def _heatmap(
    fig: Figure, ax: Any, values: np.ndarray, counts: np.ndarray | None, rows: Sequence[str], cols: Sequence[str],
    *, label: str,
) -> None:
    """``values`` in [0, 1] coloured, ``counts`` written in the non-zero cells (None: no numbers)."""
    annot = None
    if counts is not None:
        annot = np.where(counts > 0, counts.astype(int).astype(str), "")
    small = max(values.shape) <= MAX_HEATMAP_CLASSES
    font = 8 if max(values.shape) <= 12 else 6
    sns = _seaborn()
    if sns is not None:
        sns.heatmap(
            values, ax=ax, cmap="Blues", vmin=0.0, vmax=1.0, annot=annot if annot is not None else False, fmt="",
            annot_kws={"fontsize": font}, xticklabels=list(cols), yticklabels=list(rows),
            linewidths=0.5 if small else 0.0, linecolor="white", cbar_kws={"label": label, "shrink": 0.7}, square=small,
        )
    else:
        image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal" if small else "auto")
        ax.set_xticks(np.arange(len(cols)), list(cols))
        ax.set_yticks(np.arange(len(rows)), list(rows))
        fig.colorbar(image, ax=ax, label=label, shrink=0.7)
        if annot is not None:
            for (i, j), text in np.ndenumerate(annot):
                if text:
                    ax.text(j, i, text, ha="center", va="center", fontsize=font,
                            color="white" if values[i, j] > 0.5 else "black")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.tick_params(axis="y", labelrotation=0, labelsize=7)


def confusion_heatmap(
    interp: Interpretation, *, max_classes: int = MAX_HEATMAP_CLASSES, top: int = 20, title: str = ""
) -> Figure:
    """The confusion matrix (rows actual, columns predicted; colour: share of the actual class, numbers: counts)
    for up to ``max_classes`` classes; for more, the ``top`` most-confused pairs as a table beside the heatmap
    of the classes that appear in them."""
    k = interp.num_classes
    shares, counts = interp.confusion_matrix("true"), interp.confusion_matrix()
    head = (f"{interp.split} split: {len(interp)} images, {k} classes, top-1 {interp.accuracy:.3f}")
    if k <= max_classes:
        names = _names(interp.classes, 18)
        side = max(4.5, 0.32 * k + 3.0)
        fig = Figure(figsize=(side + 1.2, side))
        ax = fig.subplots()
        _heatmap(fig, ax, shares, counts if k <= 20 else None, names, names, label="share of the actual class")
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(f"{title}\n{head}" if title else f"confusion matrix\n{head}", fontsize=10)
        fig.tight_layout()
        return fig
    pairs = interp.most_confused(top=top)
    subset: list[int] = []  # the classes of the leading pairs, as many pairs as fit in max_classes
    for pair in zip(pairs["actual_id"], pairs["predicted_id"], strict=True):
        new = [int(i) for i in dict.fromkeys(pair) if int(i) not in subset]
        if len(subset) + len(new) > max_classes:
            break
        subset += new
    subset.sort()
    m = max(len(subset), 1)
    fig = Figure(figsize=(6.0 + max(4.5, 0.3 * m + 2.5), max(5.0, 0.3 * m + 2.5, 0.3 * (len(pairs) + 2))))
    ax_table, ax_map = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.25]})
    _pairs_table(ax_table, pairs)
    if subset:
        names = _names([interp.classes[i] for i in subset], 18)
        grid = np.ix_(subset, subset)
        _heatmap(fig, ax_map, shares[grid], counts[grid] if m <= 20 else None, names, names,
                 label="share of the actual class")
        ax_map.set_xlabel("predicted")
        ax_map.set_ylabel("actual")
        ax_map.set_title(f"confusion among the {m} classes of those pairs", fontsize=9)
    else:
        ax_map.axis("off")
        ax_map.text(0.5, 0.5, "no confusions: every image is classified correctly", ha="center", va="center")
    fig.suptitle(f"{title or 'most-confused pairs'} ({k} classes: too many for one heatmap)\n{head}", fontsize=10)
    fig.tight_layout()
    return fig


def _pairs_table(ax: Any, pairs: pd.DataFrame) -> None:
    """The most-confused pairs as a table (names wrapped, row heights following their lines)."""
    ax.axis("off")
    if pairs.empty:
        ax.text(0.5, 0.5, "no confused pairs", ha="center", va="center")
        return
    cells = [[wrap_title(a, 24), wrap_title(p, 24), str(int(c)), f"{s:.0%}"]
             for a, p, c, s in pairs[["actual", "predicted", "count", "share"]].itertuples(index=False)]
    table = ax.table(cellText=cells, colLabels=["actual", "predicted as", "count", "share"], loc="upper center",
                     cellLoc="left", colWidths=[0.4, 0.4, 0.1, 0.1])
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    lines = [1] + [max(c.count("\n") + 1 for c in row) for row in cells]
    unit = min(0.05, 0.95 / sum(lines))
    for (row, _col), cell in table.get_celld().items():
        cell.set_height(unit * lines[row])
    ax.set_title(f"the {len(pairs)} most-confused pairs", fontsize=9)


def _barh(ax: Any, frame: pd.DataFrame, x: str, y: str, *, hue: str | None = None, color: str = "tab:blue") -> None:
    """Horizontal bars of ``frame[x]`` per ``frame[y]`` (in frame order), grouped by ``hue`` when given."""
    order = list(dict.fromkeys(frame[y]))
    sns = _seaborn()
    if sns is not None:
        options = {"hue": hue, "palette": "deep"} if hue else {"color": color}
        sns.barplot(data=frame, x=x, y=y, order=order, orient="h", ax=ax, errorbar=None, **options)
        if hue:
            ax.legend(fontsize=7, loc="lower right")
        return
    position = {name: i for i, name in enumerate(order)}
    groups = list(dict.fromkeys(frame[hue])) if hue else [None]
    height = 0.8 / len(groups)
    for g, group in enumerate(groups):
        part = frame if group is None else frame[frame[hue] == group]
        offsets = np.array([position[n] for n in part[y]]) - 0.4 + height * (g + 0.5)
        ax.barh(offsets, part[x].to_numpy(dtype=float), height=height, label=group,
                color=color if group is None else None)
    ax.set_yticks(np.arange(len(order)), order)
    ax.invert_yaxis()
    if hue:
        ax.legend(fontsize=7, loc="lower right")


def per_class_bars(interp: Interpretation, *, max_classes: int = MAX_HEATMAP_CLASSES, title: str = "") -> Figure:
    """Per-class accuracy (recall) and support (images of the class in the split), least accurate first; for
    more than ``max_classes`` classes only the ``max_classes`` least accurate."""
    frame = interp.per_class().sort_values(["accuracy", "support"], ascending=[True, False], na_position="last",
                                           kind="stable")
    k = len(frame)
    frame = frame.head(max_classes).assign(name=lambda f: _names(list(f["class"]), 28))
    n = len(frame)
    lines = sum(name.count("\n") + 1 for name in frame["name"])
    fig = Figure(figsize=(9.0, max(2.8, 0.22 * lines + 0.12 * n + 1.4)))
    ax_acc, ax_sup = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [2.0, 1.0]})
    _barh(ax_acc, frame, "accuracy", "name", color="tab:blue")
    ax_acc.axvline(interp.accuracy, ls="--", color="tab:red", lw=1, label=f"top-1 {interp.accuracy:.3f}")
    ax_acc.axvline(1.0 / max(k, 1), ls=":", color="grey", lw=1, label=f"chance {1.0 / max(k, 1):.3g}")
    ax_acc.legend(fontsize=7, loc="lower right")
    ax_acc.set_xlim(0, 1.02)
    ax_acc.set_xlabel("accuracy (recall)")
    ax_acc.set_ylabel("")
    _barh(ax_sup, frame, "support", "name", color="tab:grey")
    ax_sup.set_xlabel(f"images in the {interp.split} split")
    ax_sup.set_ylabel("")
    for ax in (ax_acc, ax_sup):
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3, axis="x")
    shown = f"the {n} least accurate of {k} classes" if n < k else f"all {k} classes, least accurate first"
    fig.suptitle(f"{title or 'per-class accuracy'} on the {interp.split} split ({shown})", fontsize=10)
    fig.tight_layout()
    return fig


def top_losses_grid(
    images: Sequence[np.ndarray], rows: pd.DataFrame, *, title: str = "", cols: int = 4
) -> Figure:
    """The images of ``rows`` (``Interpretation.top_losses``), titled true / pred / loss / prob (the predicted
    class's probability); red titles for wrong predictions."""
    if len(images) != len(rows):
        raise ValueError(f"images: expected one per row of top_losses ({len(rows)}), got {len(images)}")
    titles = [f"true {r.actual}\npred {r.predicted}\nloss {r.loss:.2f} / prob {r.prob:.2f}"
              for r in rows.itertuples(index=False)]
    colors = ["green" if r.target == r.pred else "red" for r in rows.itertuples(index=False)]
    return image_grid(list(images), titles, colors=colors, cols=cols, title=title)


def per_label_bars(interp: MultiLabelInterpretation, threshold: float | None = None, *, title: str = "") -> Figure:
    """Per-label precision, recall and F1 at ``threshold`` (default: the interpretation's), labels sorted by
    F1 (worst first), each with its number of positives."""
    t = interp.threshold if threshold is None else float(threshold)
    frame = interp.per_label(t).sort_values("f1", na_position="last", kind="stable")
    names = _names([f"{name} (n={int(n)})" for name, n in zip(frame["label"], frame["support"], strict=True)], 28)
    frame = frame.assign(name=names)
    long = frame.melt(id_vars=["name"], value_vars=["precision", "recall", "f1"], var_name="metric",
                      value_name="value")
    lines = sum(name.count("\n") + 1 for name in names)
    fig = Figure(figsize=(7.5, max(3.0, 0.3 * lines + 0.25 * len(frame) + 1.2)))
    ax = fig.subplots()
    _barh(ax, long, "value", "name", hue="metric")
    ax.set_xlim(0, 1.02)
    ax.set_xlabel(f"score at threshold {t:g}")
    ax.set_ylabel("")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(f"{title or 'per-label precision / recall / F1'} on the {interp.split} split "
                 f"({len(interp)} images)", fontsize=10)
    fig.tight_layout()
    return fig


def threshold_curves(
    interp: MultiLabelInterpretation, grid: Any = None, *, cols: int = 4, title: str = ""
) -> Figure:
    """One panel per label: F1 against the decision threshold, the best threshold marked (dot and dotted
    line; searched on this split, so optimistic) and the interpretation's threshold dashed."""
    grid = np.linspace(0.02, 0.98, 49) if grid is None else np.asarray(grid, dtype=float)
    curves = interp.threshold_curves(grid)
    best = interp.best_thresholds(grid)
    support = interp.targets.sum(axis=0)
    k = interp.num_labels
    cols = max(1, min(cols, k))
    rows = max(1, math.ceil(k / cols))
    fig = Figure(figsize=(3.0 * cols, 2.5 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True)).ravel()
    for j, ax in enumerate(axes):
        if j >= k:
            ax.axis("off")
            continue
        ax.plot(grid, curves.iloc[:, j].to_numpy(), color="tab:blue", lw=1.5)
        ax.axvline(interp.threshold, ls="--", color="grey", lw=1)
        t_best, f1_best = float(best["threshold"].iloc[j]), float(best["f1"].iloc[j])
        if support[j] > 0:
            ax.axvline(t_best, ls=":", color="tab:red", lw=1)
            ax.plot([t_best], [f1_best], "o", color="tab:red", ms=4)
            note = f"best {t_best:.2f}: F1 {f1_best:.2f}"
        else:
            note = "no positives in the split"
        ax.set_title(f"{wrap_title(interp.labels[j], 28)} (n={int(support[j])})\n{note}", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7, labelbottom=j + cols >= k)  # the lowest panel of each column
    fig.supxlabel("threshold", fontsize=9)
    fig.supylabel("F1", fontsize=9)
    fig.suptitle(f"{title or 'F1 against the threshold, per label'} on the {interp.split} split "
                 f"(dashed: {interp.threshold:g})", fontsize=10)
    fig.tight_layout()
    return fig


def _top_loss_images(exp: Any, dataset: Any, rows: pd.DataFrame) -> tuple[list[np.ndarray], str]:
    """The top-loss items as the model saw them, each with the CAM of its predicted class (none when the
    experiment's ``cam_images`` is 0); and a note for the title."""
    import torch

    from .cam import overlay
    from .data.transforms import denormalize

    xs = exp.model_inputs(torch.stack([dataset[int(i)][0] for i in rows["index"]]))
    mean, std = exp.data_mean_std()
    plain = [denormalize(x, mean, std) for x in xs]
    if getattr(exp.params, "cam_images", 0) <= 0:
        return plain, ""
    cams = exp.batched_cams(xs, [int(p) for p in rows["pred"]])
    return [overlay(img, cam) for img, cam in zip(plain, cams, strict=True)], f", {exp.cam_title()} of the prediction"


def report_figures(exp: Any, interp: Interpretation | MultiLabelInterpretation, dataset: Any = None,
                   *, k: int = 8) -> dict[str, Figure]:
    """The figures an experiment saves (by name): ``confusion_matrix``, ``per_class`` and ``top_losses`` (the
    ``k`` highest losses; needs the split's ``dataset``) for a single-label run; ``per_label`` and
    ``threshold_curves`` for a multi-label one."""
    if isinstance(interp, MultiLabelInterpretation):
        return {"per_label": per_label_bars(interp), "threshold_curves": threshold_curves(interp)}
    figures = {"confusion_matrix": confusion_heatmap(interp), "per_class": per_class_bars(interp)}
    if dataset is not None and len(interp) and k > 0:
        rows = interp.top_losses(k)
        images, note = _top_loss_images(exp, dataset, rows)
        figures["top_losses"] = top_losses_grid(
            images, rows, title=f"the {len(rows)} highest losses on the {interp.split} split{note}")
    return figures
