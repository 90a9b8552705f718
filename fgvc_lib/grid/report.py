"""The report of a grid folder: ``summary.csv``, ``summary.md`` (varying parameters, status, main metrics,
errors) and ``figures/compare_<axis>.png`` (a metric per epoch, one line per run, coloured by one axis)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..runs import METRIC_KEYS, write_text_atomic
from .executors import _read_jobs, settle_submitted
from .plan import _MOVED_ASIDE, _read_json, _short_value, _shorten, grid_record, varying_keys
from .worker import _numeric


def _scan(grid_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(folder name, metrics.json) of the run folders of the latest plan (grid.yaml's run ids, in plan order);
    of every run folder when there is no grid.yaml. Runs of an older plan or another preset stay on disk."""
    entries = []
    planned = set(grid_record(grid_dir).get("runs") or [])
    for folder in sorted(p for p in grid_dir.iterdir() if p.is_dir()):
        if _MOVED_ASIDE.search(folder.name) or (planned and folder.name not in planned):
            continue
        metrics = _read_json(folder / "metrics.json")
        if metrics is not None:
            entries.append((folder.name, metrics))
    seen = {name for name, _ in entries}
    for rid, job in _read_jobs(grid_dir).items():  # SLURM jobs not concluded: a row without metrics
        if rid not in seen and (not planned or rid in planned):
            entries.append((rid, {"status": "submitted", "params": job.get("params") or {}}))
    record = grid_record(grid_dir)
    order = {rid: i for i, rid in enumerate(record.get("runs") or [])}
    entries.sort(key=lambda e: (order.get(e[0], len(order)), e[0]))
    return entries


def _frame(entries: list[tuple[str, dict[str, Any]]]) -> Any:
    import pandas as pd

    params = [m.get("params") if isinstance(m.get("params"), dict) else {} for _, m in entries]
    varying = varying_keys(params)
    numeric: list[str] = []
    for _, metrics in entries:
        numeric += [k for k in _numeric(metrics) if k not in numeric]
    preferred = [k for k in (*METRIC_KEYS, "seconds", "epochs_run", "best_epoch") if k in numeric]
    numeric = preferred + sorted(k for k in numeric if k not in preferred)
    rows = []
    for (name, metrics), p in zip(entries, params, strict=True):
        row: dict[str, Any] = {"run_id": name, "status": metrics.get("status"), "error": metrics.get("error")}
        row.update({k: _cell(p.get(k)) for k in varying})
        row.update({k: _numeric(metrics).get(k) for k in numeric})
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "status", "error", *varying, *numeric])


def _cell(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def collect_runs(grid_dir: str | Path) -> Any:
    """A ``pandas.DataFrame``, one row per run folder with a ``metrics.json``: run_id, status, error, the
    varying params and every numeric top-level key of ``metrics.json``."""
    return _frame(_scan(Path(grid_dir)))


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"
    return str(value)


def markdown_table(df: Any, param_cols: list[str], title: str = "") -> str:
    """Varying params + status + main metrics (+ shortened error when a run failed) as Markdown."""
    metric_cols = [
        k
        for k in (*METRIC_KEYS, "best_epoch", "epochs_run", "seconds")
        if k != "top1_error" and k in df.columns and df[k].notna().any()
    ]
    cols = ["run_id", *param_cols, "status", *metric_cols]
    if "error" in df.columns and df["error"].notna().any():
        cols.append("error")
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    lines = [f"# {title}", ""] if title else []
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    lines += [f"{len(df)} runs" + (f": {summary}" if summary else ""), ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for _, row in df.iterrows():
        cells = []
        for col in cols:
            value = row[col]
            text = _shorten(value, 100) if col == "error" and isinstance(value, str) else _format(value)
            cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_axis_summary(df: Any, axis: str = "loss", metrics: tuple[str, ...] = ("top1_acc", "ece")) -> str:
    """Markdown: the mean of ``metrics`` per value of ``axis`` over the finished runs (a table), then a
    sentence naming the most accurate value and, with ``ece``, the best calibrated one. Empty when ``axis``
    does not vary or no finished run has the metrics."""
    if axis not in df.columns or "status" not in df.columns:
        return ""
    cols = [m for m in metrics if m in df.columns and df[m].notna().any()]
    done = df[(df["status"] == "finished") & df[axis].notna()]
    if not cols or done[axis].nunique() < 2:
        return ""
    table = done.groupby(axis)[cols].mean()
    runs = done.groupby(axis).size()
    head = [axis, "runs", *(f"mean {c}" for c in cols)]
    lines = [f"## Per {axis}", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for value, row in table.iterrows():
        lines.append("| " + " | ".join([str(value), str(int(runs[value])), *(_format(row[c]) for c in cols)]) + " |")
    lines.append("")
    sentences = []
    if "top1_acc" in cols and table["top1_acc"].notna().any():
        best = table["top1_acc"].idxmax()
        sentences.append(f"Most accurate {axis}: **{best}** (mean top-1 {table['top1_acc'][best]:.3f}).")
    if "ece" in cols and table["ece"].notna().any():
        best = table["ece"].idxmin()
        worst = table["ece"].idxmax()
        sentences.append(
            f"Best calibrated {axis} on this data: **{best}** (mean ECE {table['ece'][best]:.3f}, lower is "
            f"better; worst: {worst} at {table['ece'][worst]:.3f})."
        )
    if sentences:
        sentences.append(f"Means over the finished runs of each {axis}, whatever the other axes.")
        lines.append(" ".join(sentences))
    return "\n".join(lines) + "\n"


def _history(folder: Path, metric: str) -> tuple[list[float], list[float]] | None:
    import pandas as pd

    path = folder / "history.csv"
    if not path.is_file():
        return None
    try:
        hist = pd.read_csv(path)
    except (OSError, ValueError):
        return None
    if metric not in hist.columns or hist.empty:
        return None
    epochs = hist["epoch"] if "epoch" in hist.columns else pd.Series(range(1, len(hist) + 1))
    return [float(e) for e in epochs], [float(v) for v in hist[metric]]


def compare_figure(
    grid_dir: Path, entries: list[tuple[str, dict[str, Any]]], axis: str, varying: list[str], metric: str
) -> Any:
    """``metric`` per epoch, one line per run, coloured by ``axis``' value (None when no run has history)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    lines = []
    for name, metrics in entries:
        curve = _history(grid_dir / name, metric)
        if curve is not None:
            lines.append((metrics.get("params") or {}, curve))
    if not lines:
        return None
    values: list[str] = []
    others = [k for k in varying if k != axis]
    combos: list[str] = []
    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]
    styles = ["-", "--", ":", "-."]
    for params, (epochs, ys) in lines:
        value = _short_value(params.get(axis))
        rest = ", ".join(f"{k}={_short_value(params.get(k))}" for k in others)
        values += [value] if value not in values else []
        combos += [rest] if rest not in combos else []
        label = f"{axis}={value}" + (f" ({rest})" if rest else "")
        ax.plot(
            epochs,
            ys,
            label=label,
            color=colors[values.index(value) % len(colors)],
            linestyle=styles[combos.index(rest) % len(styles)],
            marker="o",
            markersize=3,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch by {axis}")
    last = max(max(epochs) for _, (epochs, _) in lines)
    if last <= 20:
        ax.set_xticks(range(1, int(last) + 1))
        ax.set_xlim(0.5, last + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def write_report(
    grid_dir: str | Path,
    compare: list[str] | None = None,
    metric: str = "val_acc",
    log: Callable[[str], Any] = print,
) -> dict[str, Path]:
    """``summary.csv``, ``summary.md`` and ``figures/compare_<axis>.png`` per compared axis (default: every
    varying key) in ``grid_dir``; returns their paths (figures only where some run has ``metric`` history).
    SLURM jobs submitted without waiting are looked at first (:func:`settle_submitted`): those that died are
    recorded failed, those still queued or running are rows with status ``submitted``."""
    from ..plots import save_figure

    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise FileNotFoundError(f"grid folder {grid_dir} does not exist (run the grid first)")
    active = settle_submitted(grid_dir, log=log)
    if active:
        log(f"{len(active)} run(s) still queued or running on SLURM; run this again once they are done")
    entries = _scan(grid_dir)
    df = _frame(entries)
    varying = varying_keys([m.get("params") or {} for _, m in entries])
    out = {"summary_csv": grid_dir / "summary.csv", "summary_md": grid_dir / "summary.md"}
    write_text_atomic(out["summary_csv"], df.to_csv(index=False))
    summary = markdown_table(df, varying, title=f"Grid {grid_dir.name}")
    per_loss = per_axis_summary(df, "loss") if "loss" in varying else ""
    write_text_atomic(out["summary_md"], summary + ("\n" + per_loss if per_loss else ""))
    for axis in compare if compare is not None else varying:
        fig = compare_figure(grid_dir, entries, axis, varying, metric)
        if fig is not None:
            out[f"compare_{axis}"] = save_figure(fig, grid_dir / "figures" / f"compare_{axis}.png")
    return out
