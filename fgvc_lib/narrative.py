"""Generated text for the reports: each result next to its baseline, in plain words.

One function per notebook section; each takes the run's metrics dict (``ExperimentResult.metrics``, the keys of
``metrics.json``: DESIGN.md "Shared names") and returns Markdown, shown with ``display(Markdown(...))`` right after
the result it explains. Missing keys are skipped (a text never fails a report); NaN reads "n/a".

The baselines: chance top-1 ``1 / classes``; the pointing game's random peak (:func:`random_peak_baseline`);
the uncropped prediction on the same images; the all-negative multi-label prediction (micro-F1 0, exact match
= share of images without labels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "random_peak_baseline",
    "verdict",
    "classification",
    "pointing_game",
    "bird_pointing_game",
    "cifar100_accuracy",
    "calibration",
    "long_tail",
    "cam_crops",
    "multilabel_training",
    "multilabel_thresholds",
]


def _num(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _se(p: float, n: float | None) -> str:
    """'(+-0.03 on 300 images)': one binomial standard error of a proportion."""
    if not n:
        return ""
    return f" (+-{math.sqrt(max(p * (1 - p), 0.0) / n):.2f} standard error on {int(n)} images)"


def verdict(value: float, baseline: float, best: float = 1.0) -> str:
    """Plain words for ``value`` against ``baseline`` on a higher-is-better scale that ends at ``best``: the
    share of the gap from the baseline to ``best`` that the value closes."""
    gap = best - baseline
    if gap <= 0:
        return "the baseline is already perfect here"
    closed = (value - baseline) / gap
    if value < baseline - 1e-9:
        return "worse than the baseline: the model has learned nothing useful for this yet"
    if closed < 0.05:
        return "no better than the baseline: the model has not learned this yet"
    if closed < 0.3:
        return "above the baseline, but only a little"
    if closed < 0.6:
        return "clearly above the baseline, far from perfect"
    if closed < 0.9:
        return "well above the baseline"
    return "close to perfect"


# ---------------------------------------------------------------------------------------------- baselines
def random_peak_baseline(
    points: Sequence[tuple[float, float] | None], radius: float, width: int, height: int | None = None
) -> float:
    """Pointing-game score of a CAM whose peak is a uniformly random pixel.

    For each annotated point (x, y), the share of the ``width x height`` pixel positions (the positions a CAM
    peak can take, as ``cam.cam_peaks``) within ``radius`` of it; pixels outside the image do not count (a point
    near the border has a clipped disc). Averaged over the points (``None``: no annotation, skipped); NaN when
    there is none. E.g. a 5 x 5 image, radius 1: 5/25 for the centre, 3/25 for a corner.
    """
    height = width if height is None else height
    pts = np.array([p for p in points if p is not None], dtype=float).reshape(-1, 2)
    if len(pts) == 0:
        return float("nan")
    xs, ys = np.arange(width, dtype=float), np.arange(height, dtype=float)
    shares = [
        float(((xs[None, :] - x) ** 2 + (ys[:, None] - y) ** 2 <= radius**2).sum()) / (width * height)
        for x, y in pts
    ]
    return float(np.mean(shares))


# ---------------------------------------------------------------------------------------------- single-label
def classification(metrics: Mapping[str, Any]) -> str:
    """Top-1 on the evaluation split against chance (bird, inat_bbn): where it was measured, on how many
    images, top-5, and the validation figure the checkpoint was chosen on."""
    top1, chance = _num(metrics, "top1_acc"), _num(metrics, "chance_acc")
    if top1 is None:
        return "No accuracy was recorded."
    split = metrics.get("eval_split", "val")
    n = _num(metrics, f"{split}_images")
    k = metrics.get("num_classes")
    text = f"**{split.capitalize()} top-1 {_f(top1)}**{_se(top1, n)}"
    if chance is not None:
        text += f"; chance is {_f(chance)}" + (f" with {k} classes" if k else "")
        text += f": {verdict(top1, chance)}."
    else:
        text += "."
    top5 = _num(metrics, "top5_acc")
    if top5 is not None and chance is not None:
        text += f" Top-5 {_f(top5)} (chance {_f(min(1.0, 5 * chance))})."
    val = _num(metrics, "val_top1_acc")
    if val is not None and split == "test":
        text += (
            f" Validation top-1 {_f(val)}: the best checkpoint (epoch {metrics.get('best_epoch', '?')}) was "
            "picked on validation, so the test figure is the unbiased one"
        )
        text += "; the two agree." if abs(val - top1) <= 0.05 else f" (they differ by {_f(abs(val - top1))})."
    return text


def pointing_game(
    metrics: Mapping[str, Any], *, baseline: float, radius: float | None = None, part: str = ""
) -> str:
    """The pointing game against the random-peak ``baseline`` (:func:`random_peak_baseline`)."""
    score = _num(metrics, "pointing_game")
    if score is None:
        return "No pointing-game score (CAM disabled, or no image has the part annotated)."
    where = f" the {part}" if part else " the part"
    within = f" within {radius:.0f} px of" if radius else " near"
    text = (
        f"**Pointing game {_f(score)}**: the CAM peak lies{within}{where} in {score:.0%} of the validation images; "
        f"a random peak scores {_f(baseline)}"
    )
    if baseline is None or math.isnan(baseline):
        return text + "."
    text += f": {verdict(score, baseline)}."
    if score >= baseline + 0.1:
        text += " The model looks at the part that tells the classes apart."
    elif score <= baseline + 0.02:
        text += " The CAM does not single out the part; the model may use other cues (or has not trained enough)."
    return text


def bird_pointing_game(metrics: Mapping[str, Any], exp: Any, max_images: int = 200) -> str:
    """:func:`pointing_game` for a bird run: the random-peak baseline from the experiment's parameters
    (``pointing_radius * img_size``) and the part positions of the same validation images as the score."""
    p = exp.params
    radius = p.pointing_radius * p.img_size
    records = list(getattr(exp, "val_records", []))
    points = []
    if records and hasattr(exp, "_part_point"):
        picks = np.unique(np.linspace(0, len(records) - 1, num=min(max_images, len(records))))
        points = [exp._part_point(records[int(i)]) for i in picks]
    baseline = random_peak_baseline(points, radius, p.img_size)
    return pointing_game(metrics, baseline=baseline, radius=radius, part=getattr(p, "pointing_part", ""))


# ---------------------------------------------------------------------------------------------- cifar100
def cifar100_accuracy(metrics: Mapping[str, Any]) -> str:
    """The per-epoch test curve: the last epoch's test top-1 (what ``top1_acc`` is) against chance and the best
    epoch's."""
    text = classification(metrics)
    best = _num(metrics, "best_top1_acc")
    top1 = _num(metrics, "top1_acc")
    if best is not None and top1 is not None and best > top1 + 1e-9:
        text += (
            f" The best epoch reached {_f(best)}; the report quotes the last epoch's figure (no checkpoint is "
            "picked on the test split)."
        )
    return text + " In the curves the line labelled 'val' is this test split, evaluated after every epoch as in the report."


def _ece_words(ece: float) -> str:
    if ece < 0.02:
        return "well calibrated: confidence and accuracy nearly agree"
    if ece < 0.05:
        return "fairly well calibrated"
    if ece < 0.15:
        return "noticeably miscalibrated"
    return "badly miscalibrated: its confidence says little about how often it is right"


def calibration(metrics: Mapping[str, Any], loss: str = "", bins: int | None = None) -> str:
    """ECE in words, for this run's loss, with a pointer to the grid that compares losses."""
    ece = _num(metrics, "ece")
    if ece is None:
        return "No ECE was recorded."
    top1 = _num(metrics, "top1_acc")
    what = f"{bins}-bin " if bins else ""
    text = (
        f"**{what}ECE {_f(ece, 3)}**"
        + (f" with the {loss} loss" if loss else "")
        + f": the confidence of a prediction is off from its bin's accuracy by {ece * 100:.1f} points on average "
        f"(0 is perfect calibration): {_ece_words(ece)}."
    )
    if top1 is not None and top1 < 0.2:
        text += (
            f" With a top-1 of only {_f(top1)} most predictions sit in the low-confidence bins, so this ECE says "
            "more about an undertrained model than about the loss."
        )
    comparison = loss_comparison()
    if comparison:
        text += " " + comparison
    else:
        text += (
            " One run has one loss, so which loss is best calibrated on this data is a comparison across runs: "
            "`make grid-demo` (`fgvc grid parameters/cifar100_table1.yaml --preset tiny`) writes top-1 and ECE "
            "per loss (and names the best calibrated) in its `summary.md`."
        )
    return text


#: Where :func:`loss_comparison` looks for the Table-1 grid's ``summary.csv``: the user's own grid first, then
#: the measurement committed with the project (``make grid-demo`` on the embedded data, see README).
TABLE1_SUMMARIES = (
    Path("outputs/runs/cifar100_table1/summary.csv"),
    Path(__file__).resolve().parent.parent / "benchmarks/results/cifar100_table1_tiny/summary.csv",
)


def loss_comparison(candidates: Sequence[Path] | None = None) -> str:
    """One sentence from the Table-1 grid's ``summary.csv`` (the first of ``candidates`` that exists, relative
    paths against the working folder and then the project root): mean top-1 and ECE per loss over the finished
    runs, the best calibrated loss named. Empty when no summary with at least two losses is found."""
    import pandas as pd

    root = Path(__file__).resolve().parent.parent
    for candidate in candidates if candidates is not None else TABLE1_SUMMARIES:
        path = next((p for p in (Path(candidate), root / candidate) if p.is_file()), None)
        if path is None:
            continue
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError):
            continue
        if not {"loss", "status", "ece"} <= set(df.columns):
            continue
        done = df[(df["status"] == "finished") & df["ece"].notna()]
        model = ""
        if "model" in done.columns and done["model"].nunique() > 1:  # compare losses on one model: the one
            model = done.groupby("model")["loss"].nunique().idxmax()  # trained with the most of them
            done = done[done["model"] == model]
        if done["loss"].nunique() < 2:
            continue
        table = done.groupby("loss")[["ece", *(["top1_acc"] if "top1_acc" in df.columns else [])]].mean()
        best, worst = table["ece"].idxmin(), table["ece"].idxmax()
        parts = ", ".join(
            f"{loss} {row['ece']:.3f}" + (f" (top-1 {row['top1_acc']:.2f})" if "top1_acc" in row else "")
            for loss, row in table.sort_values("ece").iterrows()
        )
        return (
            f"Across losses on this data ({len(done)} finished runs of the Table-1 grid"
            + (f" with {model}" if model else "")
            + f", `{_display_path(path)}`), "
            f"the best calibrated loss is **{best}** and the worst {worst}; mean ECE per loss: {parts}."
        )
    return ""


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------- inat_bbn
def long_tail(metrics: Mapping[str, Any]) -> str:
    """Head / medium / tail accuracy against each other and chance."""
    head, medium, tail = (_num(metrics, f"{g}_acc") for g in ("head", "medium", "tail"))
    chance = _num(metrics, "chance_acc")
    if head is None and tail is None:
        return "No head/tail accuracy was recorded."
    many, few = metrics.get("many_shot"), metrics.get("few_shot")
    text = f"**Tail accuracy {_f(tail)}; head {_f(head)}**" + (f", medium {_f(medium)}" if medium is not None else "")
    if many is not None and few is not None:
        text += f" (head: more than {many} training images, tail: fewer than {few})"
    if chance is not None:
        text += f"; chance is {_f(chance)}"
    text += "."
    if head is not None and tail is not None:
        gap = head - tail
        if gap > 0.1:
            text += (
                f" The tail lags the head by {_f(gap)}: the classifier still favours the frequent classes "
                "(what BBN's re-balancing branch and class-balanced sampling aim to reduce)."
            )
        elif gap < -0.1:
            text += f" The tail beats the head by {_f(-gap)}: the re-balancing over-corrects towards rare classes."
        else:
            text += " Head and tail are within 0.10 of each other: the long tail costs little here."
        if chance is not None and tail <= chance + 0.02:
            text += " The tail classes are at chance level."
    return text


def cam_crops(metrics: Mapping[str, Any]) -> str:
    """The CAM-guided crop against the uncropped prediction on the same images, and the box IoU."""
    crop, plain = _num(metrics, "crop_top1_acc"), _num(metrics, "uncropped_top1_acc_same_images")
    if crop is None:
        return "No CAM-guided crops (cam_crop: false)."
    text = f"**Crop top-1 {_f(crop)}**"
    if plain is not None:
        diff = crop - plain
        text += f" vs {_f(plain)} uncropped on the same images: "
        if diff > 0.02:
            text += f"cropping to the CAM helps (+{_f(diff)})."
        elif diff < -0.02:
            text += f"cropping hurts ({_f(diff)}): the boxes cut away part of what the model needs."
        else:
            text += "cropping makes no difference."
    else:
        text += "."
    iou = _num(metrics, "crop_iou")
    if iou is not None:
        text += f" The CAM box overlaps the recorded object box with a mean IoU of {_f(iou)} (0.5 is the usual bar "
        text += "for a correct localisation): " + ("the CAM finds the object." if iou >= 0.5 else
                                                    "the boxes only partly cover the object." if iou >= 0.3 else
                                                    "the CAM boxes mostly miss the object.")
    return text


# ---------------------------------------------------------------------------------------------- multilabel
def multilabel_training(metrics: Mapping[str, Any]) -> str:
    """Micro-F1 and exact match at 0.5 against the all-negative baseline and the untrained network."""
    f1, em = _num(metrics, "micro_f1"), _num(metrics, "exact_match")
    base = _num(metrics, "baseline_all_negative_acc")
    if f1 is None:
        return "No multi-label metrics were recorded."
    n = _num(metrics, "val_images")
    text = f"**Micro-F1 {_f(f1)} at 0.5**{_se(f1, None)}; the all-negative baseline (predict no label) scores 0 micro-F1"
    if base is not None:
        text += f" and {_f(base)} exact match"
    text += f": {verdict(f1, 0.0)}."
    if em is not None and base is not None:
        text += f" Exact match {_f(em)}" + (f" on {int(n)} validation images" if n else "") + ": "
        if em > base + 0.02:
            text += f"above the all-negative {_f(base)}."
        elif em >= base - 0.02:
            text += f"about the all-negative {_f(base)}, so exact match alone cannot tell this model from doing nothing."
        else:
            text += f"below the all-negative {_f(base)}: predicting nothing would match more images exactly."
    u_f1, u_em = _num(metrics, "untrained_micro_f1"), _num(metrics, "untrained_exact_match")
    if u_f1 is not None:
        text += f" Before training (the sanity check): micro-F1 {_f(u_f1)}, exact match {_f(u_em)}."
    macro = _num(metrics, "macro_f1")
    if macro is not None and macro < f1 - 0.1:
        text += f" Macro-F1 {_f(macro)} is lower: the rare labels are found less well than the common ones."
    return text


def multilabel_thresholds(metrics: Mapping[str, Any]) -> str:
    """The searched thresholds, held out, against 0.5 and the figure on the half they were tuned on."""
    f1 = _num(metrics, "micro_f1")
    g, g_tuned = _num(metrics, "micro_f1_global_threshold"), _num(metrics, "micro_f1_global_threshold_tuned_half")
    pl, pl_tuned = (
        _num(metrics, "micro_f1_per_label_thresholds"),
        _num(metrics, "micro_f1_per_label_thresholds_tuned_half"),
    )
    t = _num(metrics, "threshold_global")
    if g is None:
        return "No held-out threshold figures (too few validation images to split)."
    text = (
        "Thresholds are searched on one half of the validation images and scored on the other half, both ways "
        "round, so every figure here is held out. "
        f"**Global threshold: micro-F1 {_f(g)} held out**"
        + (f" ({_f(g_tuned)} on the half it was tuned on)" if g_tuned is not None else "")
        + (f" vs {_f(f1)} at 0.5" if f1 is not None else "")
    )
    if f1 is not None:
        diff = g - f1
        text += ": " + (
            f"searching helps (+{_f(diff)})" if diff > 0.01 else
            f"searching hurts ({_f(diff)})" if diff < -0.01 else "searching makes no difference"
        )
    halves = metrics.get("threshold_global_halves")
    if t is not None:
        text += f"; on the whole validation split the search picks {t:.2f}"
        if isinstance(halves, (list, tuple)) and len(halves) == 2:
            text += f" (on the halves {halves[0]:.2f} and {halves[1]:.2f})"
    text += "."
    if pl is not None:
        text += f" **Per-label thresholds: {_f(pl)} held out**" + (
            f" vs {_f(pl_tuned)} on the tuning half" if pl_tuned is not None else ""
        )
        if pl_tuned is not None and pl_tuned - pl > 0.02:
            text += f": the per-label search overfits its half by {_f(pl_tuned - pl)}"
        text += "; " + (
            "they beat the global threshold." if pl > g + 0.01 else
            "they do not beat the global threshold (as in the report)." if pl >= g - 0.01 else
            "they are worse than the global threshold on unseen images: prefer the global one."
        )
    return text
