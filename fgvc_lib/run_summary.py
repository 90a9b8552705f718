"""What a run achieved, in a few words: its headline metric next to the baseline it must beat.

:func:`headline` reads a run's ``metrics.json`` (DESIGN.md "Shared names"): single-label runs give top-1 on their
evaluation split against chance (``chance_acc``), multi-label runs micro-F1 against the all-negative prediction
(micro-F1 0; its exact match is ``baseline_all_negative_acc``); a few secondary figures follow (top-5, ECE,
head / tail accuracy, pointing game, CAM crops, the tuned threshold). ``fgvc run`` ends with
:func:`run_summary`; ``fgvc runs`` (:func:`runs_command`) prints :func:`runs_table` over run folders, e.g. the
latest run of each notebook at the end of ``make demo``. Missing keys are skipped: a summary never fails.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: What marks a folder under ``outputs/runs/<notebook>/`` as a run.
RUN_FILES = ("metrics.json", "params.yaml")


def _num(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(float(value)) else float(value)


@dataclass(frozen=True)
class Headline:
    """A run's main figure (``metric`` = ``value``) next to its ``baseline``, with secondary ``details``."""

    notebook: str
    status: str
    metric: str = ""
    value: float | None = None
    baseline_name: str = ""
    baseline: float | None = None
    details: tuple[str, ...] = field(default_factory=tuple)
    seconds: float | None = None
    epochs: int | None = None
    error: str = ""

    def result(self) -> str:
        """``test top-1 0.861`` (or the status of a run that did not finish, with its error)."""
        if self.status != "finished":
            text = self.status or "no metrics.json (running, or killed)"
            if self.status == "interrupted" and self.epochs is not None:
                text += f" after epoch {self.epochs}"
            elif self.error:
                text += f": {_short(self.error, 60)}"
            return text
        if self.value is None:
            return "finished (no headline metric)"
        return f"{self.metric} {self.value:.3f}"

    def baseline_text(self) -> str:
        """``chance 0.100``; empty when the run has no baseline."""
        if self.baseline is None or self.status != "finished":
            return ""
        return f"{self.baseline_name} {self.baseline:.3f}"


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def headline(metrics: Mapping[str, Any]) -> Headline:
    """The headline of a run from its ``metrics.json`` mapping (see the module docstring)."""
    split = str(metrics.get("eval_split") or "val")
    epochs = metrics.get("epochs_run")
    common: dict[str, Any] = {
        "notebook": str(metrics.get("notebook") or ""),
        "status": str(metrics.get("status") or ""),
        "seconds": _num(metrics, "seconds"),
        "epochs": int(epochs) if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) else None,
        "error": str(metrics.get("error") or ""),
    }
    details: list[str] = []
    micro_f1, top1 = _num(metrics, "micro_f1"), _num(metrics, "top1_acc")
    if micro_f1 is not None:
        exact, negative = _num(metrics, "exact_match"), _num(metrics, "baseline_all_negative_acc")
        if exact is not None:
            details.append(f"exact match {exact:.3f}" + (f" (all-negative {negative:.3f})" if negative is not None
                                                         else ""))
        tuned, threshold = _num(metrics, "micro_f1_global_threshold"), _num(metrics, "threshold_global")
        if tuned is not None and threshold is not None:
            details.append(f"micro-F1 {tuned:.3f} at the tuned threshold {threshold:.2f}")
        return Headline(metric=f"{split} micro-F1", value=micro_f1, baseline_name="all-negative", baseline=0.0,
                        details=tuple(details), **common)
    if top1 is not None:
        chance = _num(metrics, "chance_acc")
        figures = [("top-5", "top5_acc"), ("ECE", "ece"), ("pointing game", "pointing_game")]
        details += [f"{name} {_num(metrics, key):.3f}" for name, key in figures if _num(metrics, key) is not None]
        groups = [_num(metrics, f"{g}_acc") for g in ("head", "medium", "tail")]
        if all(g is not None for g in groups):
            details.append("head / medium / tail " + " / ".join(f"{g:.2f}" for g in groups))
        crop, uncropped = _num(metrics, "crop_top1_acc"), _num(metrics, "uncropped_top1_acc_same_images")
        if crop is not None and uncropped is not None:
            iou = _num(metrics, "crop_iou")
            details.append(f"CAM-crop top-1 {crop:.3f} (uncropped {uncropped:.3f})"
                           + (f", box IoU {iou:.2f}" if iou is not None else ""))
        return Headline(metric=f"{split} top-1", value=top1, baseline_name="chance", baseline=chance,
                        details=tuple(details), **common)
    for key in ("val_top1_acc", "val_acc", "val_f1"):
        if _num(metrics, key) is not None:
            return Headline(metric=key, value=_num(metrics, key), **common)
    return Headline(**common)


def read_headline(run_dir: str | Path, notebook: str = "") -> Headline:
    """The headline of the run in ``run_dir`` (status ``""`` when it has no readable ``metrics.json``)."""
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = {}
    if not isinstance(metrics, dict):
        metrics = {}
    return headline({"notebook": notebook, **metrics} if notebook and not metrics.get("notebook") else metrics)


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working folder when it lies below it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def run_summary(run_dir: str | Path, notebook: str = "") -> list[str]:
    """What ``fgvc run`` prints when a run ends: the headline next to its baseline with the secondary figures,
    epochs and seconds; then the HTML report (when written)."""
    run_dir = Path(run_dir)
    head = read_headline(run_dir, notebook)
    words = [head.result() + (f" ({head.baseline_text()})" if head.baseline_text() else ""), *head.details]
    timing = [f"{head.epochs} epochs" if head.epochs is not None else "",
              f"{head.seconds:.0f} s" if head.seconds is not None else ""]
    if any(timing):
        words.append(", ".join(t for t in timing if t))
    lines = ["result: " + "; ".join(words)]
    html = run_dir / f"{head.notebook or notebook or run_dir.parent.name}.html"
    if html.is_file():
        lines.append(f"report: {shown_path(html)}")
    return lines


# ---------------------------------------------------------------------------------------------- fgvc runs
def _run_time(folder: Path) -> float:
    """When a run last wrote its record (``metrics.json``, else ``params.yaml``)."""
    for name in RUN_FILES:
        try:
            return (folder / name).stat().st_mtime
        except OSError:
            continue
    return 0.0


def notebook_runs(notebook: str, root: str | Path | None = None) -> list[Path]:
    """The run folders of ``notebook`` under ``<root>/runs/<notebook>/`` (default root: the outputs folder),
    oldest first. Grid folders live under ``runs/<grid name>/`` and are not listed."""
    from .runs import outputs_root

    base = Path(root) if root is not None else outputs_root()
    folder = base / "runs" / notebook
    if not folder.is_dir():
        return []
    runs = [p for p in folder.iterdir()
            if p.is_dir() and not p.name.startswith(".") and any((p / n).is_file() for n in RUN_FILES)]
    return sorted(runs, key=lambda p: (_run_time(p), p.name))


def runs_table(runs: Iterable[tuple[str, Path]]) -> str:
    """One row per ``(notebook, run folder)``: notebook, headline, baseline, seconds, run folder (aligned
    columns, a header line)."""
    header = ("notebook", "result", "baseline", "seconds", "run folder")
    rows = []
    for notebook, run_dir in runs:
        head = read_headline(run_dir, notebook)
        seconds = f"{head.seconds:.0f}" if head.seconds is not None else "-"
        rows.append((notebook, head.result(), head.baseline_text() or "-", seconds, shown_path(run_dir)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.rjust(w) if i == 3 else cell.ljust(w) for i, (cell, w) in pairs]  # seconds right-aligned
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def select_runs(targets: Sequence[str], *, latest: bool) -> list[tuple[str, Path]]:
    """``targets``: notebook names (their runs) or run folders; none: every declared notebook. ``latest``
    keeps the newest run of each notebook."""
    from .catalog import notebook_names

    names = list(notebook_names())
    chosen: list[tuple[str, Path]] = []
    for target in targets or names:
        path = Path(target)
        if target not in names and path.is_dir():
            chosen.append((read_headline(path).notebook or path.parent.name, path))
            continue
        if target not in names:
            raise ValueError(f"fgvc runs: {target!r} is neither a notebook ({', '.join(names)}) nor a run folder")
        runs = notebook_runs(target)
        chosen += [(target, run) for run in (runs[-1:] if latest else runs)]
    return chosen


def runs_command(args: argparse.Namespace) -> int:
    """``fgvc runs [NOTEBOOK | RUN_DIR ...] [--latest]``: the table of runs (status 1 when there is none)."""
    runs = select_runs(args.targets, latest=args.latest)
    if not runs:
        from .runs import outputs_root

        print(f"no runs under {shown_path(outputs_root() / 'runs')} (make demo, or fgvc run NOTEBOOK, makes one)")
        return 1
    print(runs_table(runs))
    return 0
