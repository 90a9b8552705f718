"""The report of a run folder collection: ``summary.csv``, ``summary.md`` and figures.

A *grid folder* (it holds ``grid.yaml``): one table of the grid's runs (varying parameters, status, main
metrics, errors) and ``figures/compare_<axis>.png`` (a metric per epoch, one line per run, coloured by one
axis, beside bars of each run's value per axis value). Any other folder of runs (``outputs/runs/<notebook>/``,
or ``outputs/runs/`` itself: runs one level further down) is reported explicitly as what it is: one section
and table per notebook, and one figure per notebook (``figures/runs_<notebook>.png``, one line and one bar per
run), never figures mixing notebooks. Figures are drawn by :mod:`fgvc_lib.grid.report_figures` (seaborn bars,
a dashed chance line where the metric has one).

The tables are sorted by the metric, best first: a ``history.csv`` column (the grid's ``metric``, default
``val_acc``: each run's best epoch, column ``best <metric>``) or a ``metrics.json`` number. Validation columns
stand next to the evaluation ones (``val_top1_acc`` before ``top1_acc``), and a note says which split each is
on. Runs whose setting has published figures (:mod:`fgvc_lib.grid.published`: a grid file's ``published:``
block, ``parameters/published/<file>`` for a single-run report file) get ``published <metric>`` and
``Δ <metric>`` (reproduced - published) columns, a section naming the source, and ``figures/published*.png``.

Every run folder with a ``metrics.json`` is a row: one that cannot be read (truncated, not JSON) is listed
as ``unreadable`` with its path and the reason. ``metric`` must be a ``history.csv`` column or a
``metrics.json`` number of some run when it is asked for (``require_metric``: ``fgvc report --metric``), else
a ParameterError lists the known ones, closest first. Figures are written atomically, and the figures an
earlier report wrote that this one does not draw are removed (only those: the report keeps their names in
``figures/.report-figures.json``). ``summary.csv`` keeps the plan's order."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ParameterError
from ..registry import closest
from ..runs import METRIC_KEYS, write_text_atomic
from .executors import _read_jobs, settle_submitted
from .plan import _MOVED_ASIDE, _shorten, grid_record, varying_keys
from .published import Published, find_published, grid_published, run_published
from .report_figures import compare_figure, history_columns, published_figure, run_history, runs_figure
from .worker import _numeric

FIGURES_RECORD = ".report-figures.json"


def read_metrics(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(metrics, None)`` of a ``metrics.json``, or ``(None, why it cannot be read)``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror})"
    if not text.strip():
        return None, "is empty"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, f"is not valid JSON (truncated?): {exc}"
    if not isinstance(data, dict):
        return None, f"holds a JSON {type(data).__name__}, expected an object"
    return data, None


def _entry(folder: Path) -> dict[str, Any]:
    metrics, why = read_metrics(folder / "metrics.json")
    if metrics is None:
        return {"status": "unreadable", "error": f"{folder / 'metrics.json'} {why}", "params": {}}
    return metrics


def is_grid_folder(folder: str | Path) -> bool:
    """A folder ``fgvc grid`` made (it holds ``grid.yaml``)."""
    return (Path(folder) / "grid.yaml").is_file()


def _scan(grid_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(folder name, metrics.json) of the run folders of the latest plan (grid.yaml's run ids, in plan order);
    of every run folder when there is no grid.yaml; runs one level further down when no folder directly
    below is a run (``outputs/runs/``: ``<notebook>/<run id>``). Runs of an older plan or another preset stay
    on disk. An unreadable metrics.json is an entry with status ``unreadable``."""
    entries = []
    record = grid_record(grid_dir)
    planned = set(record.get("runs") or [])
    children = [p for p in sorted(grid_dir.iterdir()) if p.is_dir() and not _MOVED_ASIDE.search(p.name)]
    runs = [(p.name, p) for p in children if (p / "metrics.json").exists()]
    if not runs and not planned:
        runs = [
            (f"{p.name}/{q.name}", q)
            for p in children
            for q in sorted(p.iterdir())
            if q.is_dir() and not _MOVED_ASIDE.search(q.name) and (q / "metrics.json").exists()
        ]
    for name, folder in runs:
        if not planned or name in planned:
            entries.append((name, _entry(folder)))
    seen = {name for name, _ in entries}
    for rid, job in _read_jobs(grid_dir).items():  # SLURM jobs not concluded: a row without metrics
        if rid not in seen and (not planned or rid in planned):
            entries.append((rid, {"status": "submitted", "params": job.get("params") or {}}))
    order = {rid: i for i, rid in enumerate(record.get("runs") or [])}
    entries.sort(key=lambda e: (order.get(e[0], len(order)), e[0]))
    return entries


def _notebook_of(name: str, metrics: dict[str, Any]) -> str:
    """The notebook of a run: its metrics.json's, else the folder above it (``<notebook>/<run id>``)."""
    notebook = metrics.get("notebook")
    if isinstance(notebook, str) and notebook:
        return notebook
    return name.split("/", 1)[0] if "/" in name else "unknown"


def _varying(entries: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The parameters that differ between the runs whose metrics.json could be read."""
    return varying_keys([m.get("params") or {} for _, m in entries if m.get("status") != "unreadable"])


def _frame(entries: list[tuple[str, dict[str, Any]]]) -> Any:
    import pandas as pd

    params = [m.get("params") if isinstance(m.get("params"), dict) else {} for _, m in entries]
    varying = _varying(entries)
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
    varying params and every numeric top-level key of ``metrics.json`` (outside a grid folder, the
    ``notebook`` first)."""
    grid_dir = Path(grid_dir)
    entries = _scan(grid_dir)
    df = _frame(entries)
    if not is_grid_folder(grid_dir):
        df.insert(0, "notebook", [_notebook_of(name, m) for name, m in entries])
    return df


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"
    return str(value)


def lower_is_better(metric: str) -> bool:
    """Whether a smaller ``metric`` is better (losses, errors, ECE)."""
    return any(word in metric.lower() for word in ("loss", "error", "ece"))


def _metric_columns(df: Any, first: str | None) -> list[str]:
    """The metric columns shown: ``first`` (the sort metric), then each main metric with its validation
    counterpart before it (``val_top1_acc``, ``top1_acc``), then the published figures and their differences."""
    present = [c for c in df.columns if df[c].notna().any()]
    published = [c[len("published "):] for c in present if c.startswith("published ")]
    cols = [first] if first in present else []
    others = [m for m in published if m not in METRIC_KEYS]
    for key in (*METRIC_KEYS, *others, "best_epoch", "epochs_run", "seconds"):
        shown = key != "top1_error" or key in published or first == key
        group = (f"val_{key}", key) if key in METRIC_KEYS else (key,)
        # a published figure right after the reproduced one, then the difference
        group += (f"published {key}", f"Δ {key}") if key in published else ()
        cols += [c for c in group if shown and c in present and c not in cols]
    return cols


def markdown_table(
    df: Any, param_cols: list[str], title: str = "", *, sort_by: str | None = None, notes: tuple[str, ...] = ()
) -> str:
    """Varying params + status + main metrics (validation next to evaluation columns, published figures with
    the difference, shortened error when a run failed) as Markdown; rows best first by ``sort_by`` (a column,
    :func:`lower_is_better` decides the direction; runs without a value keep their order, last). ``notes``:
    lines under the count."""
    metric_cols = _metric_columns(df, sort_by)
    cols = ["run_id", *param_cols, "status", *metric_cols]
    if "error" in df.columns and df["error"].notna().any():
        cols.append("error")
    if sort_by in df.columns and df[sort_by].notna().any():
        key = df[sort_by].astype(float)
        df = df.assign(_missing=key.isna(), _key=key if lower_is_better(sort_by) else -key)
        df = df.sort_values(["_missing", "_key"], kind="stable")
        notes = (f"Sorted by {sort_by}, best first ({'lower' if lower_is_better(sort_by) else 'higher'} is "
                 f"better).", *notes)
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    lines = [f"# {title}", ""] if title else []
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    lines += [f"{len(df)} runs" + (f": {summary}" if summary else ""), ""]
    lines += [*notes, ""] if notes else []
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for _, row in df.iterrows():
        cells = []
        for col in cols:
            value = row[col]
            if col == "error" and isinstance(value, str):
                text = _shorten(value, 100)
            elif col.startswith("Δ ") and isinstance(value, float) and value == value:
                text = f"{value:+.4f}"
            else:
                text = _format(value)
            cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _split_notes(entries: list[tuple[str, dict[str, Any]]], df: Any) -> tuple[str, ...]:
    """What the columns are measured on: the evaluation split, the validation columns, chance."""
    splits = sorted({m["eval_split"] for _, m in entries if isinstance(m.get("eval_split"), str)})
    notes = []
    if splits:
        has_val = any(c.startswith("val_") and c[4:] in METRIC_KEYS for c in df.columns if df[c].notna().any())
        notes.append(f"Metrics on the evaluation split ({', '.join(splits)})"
                     + ("; `val_*` columns on the validation split, the one to select models on." if has_val
                        else "."))
    if "chance_acc" in df.columns and df["chance_acc"].notna().any():
        values = sorted({round(float(v), 4) for v in df["chance_acc"].dropna()})
        notes.append(f"Chance accuracy (1 / classes): {', '.join(_format(v) for v in values)}.")
    return tuple(notes)


def run_values(
    folder: Path, entries: list[tuple[str, dict[str, Any]]], metric: str
) -> tuple[str, dict[str, float]]:
    """``(column, {run: value})`` of the finished runs for ``metric``: the best epoch's value of a
    ``history.csv`` column (``best <metric>``, max or min as :func:`lower_is_better`), else the number of
    ``metrics.json``."""
    out: dict[str, float] = {}
    from_history = metric in known_metrics(folder, entries)
    for name, metrics in entries:
        if metrics.get("status") != "finished":
            continue
        if from_history:
            curve = run_history(folder / name, metric)
            ys = [y for y in (curve[1] if curve else []) if y == y]
            if ys:
                out[name] = min(ys) if lower_is_better(metric) else max(ys)
        elif metric in _numeric(metrics):
            out[name] = float(metrics[metric])
    return (f"best {metric}" if from_history else metric), out


def add_published(
    df: Any, entries: list[tuple[str, dict[str, Any]]], published: list[Published]
) -> tuple[Any, list[tuple[str, Published]], list[tuple[str, str, float | None, float]]]:
    """Columns ``published <metric>`` and ``Δ <metric>`` (reproduced - published) for the runs a published
    entry matches; returns the frame, (run, entry) pairs and (run, metric, reproduced, published) rows."""
    pairs, rows = [], []
    df = df.copy()
    for i, (name, metrics) in enumerate(entries):
        entry = find_published(metrics.get("params") or {}, published) if published else None
        if entry is None:
            continue
        pairs.append((name, entry))
        for metric, value in entry.figures.items():
            reproduced = _numeric(metrics).get(metric)
            for col in (f"published {metric}", f"Δ {metric}"):
                if col not in df.columns:
                    df[col] = float("nan")
            df.loc[df.index[i], f"published {metric}"] = value
            if reproduced is not None:
                df.loc[df.index[i], f"Δ {metric}"] = float(reproduced) - value
            rows.append((name, metric, None if reproduced is None else float(reproduced), value))
    return df, pairs, rows


def _published_section(pairs: list[tuple[str, Published]], preset: str | None = None) -> str:
    if not pairs:
        return ""
    lines = ["## Published figures", "",
             "`published <metric>`: the report's figure for the run's setting; `Δ`: reproduced - published."]
    if preset:
        lines.append(f"Preset '{preset}': these runs are stand-ins of the published settings (other data, "
                     f"models or epochs), so the differences say nothing about the reproduction.")
    lines.append("")
    sources: dict[tuple[str, str], list[str]] = {}
    for name, entry in pairs:
        sources.setdefault((entry.origin, entry.source), []).append(name)
    for (origin, source), runs in sources.items():
        lines.append(f"- {', '.join(runs)}: {source or 'no source given'} ({origin})")
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


def known_metrics(folder: Path, entries: list[tuple[str, dict[str, Any]]], *, results: bool = False) -> list[str]:
    """The ``history.csv`` columns of the runs, in first-seen order; with ``results`` then the numeric keys of
    their ``metrics.json``."""
    known: list[str] = []
    for name, _ in entries:
        known += [c for c in history_columns(folder / name) if c not in known]
    for _, metrics in entries if results else []:
        known += [k for k in _numeric(metrics) if k not in known]
    return known


def check_metric(folder: Path, entries: list[tuple[str, dict[str, Any]]], metric: str) -> None:
    """ParameterError unless ``metric`` is a ``history.csv`` column or a ``metrics.json`` number of some run;
    it lists the known ones, the closest first."""
    known = known_metrics(folder, entries, results=True)
    if metric in known:
        return
    if not known:
        raise ParameterError(
            f"metric {metric!r}: no run in {folder} has a history.csv or metrics (no run trained an epoch); "
            f"nothing to draw", key="metric",
        )
    near = closest(metric, known, n=len(known), cutoff=0.0)
    hint = f"; did you mean {near[0]!r}?" if closest(metric, known) else ""
    raise ParameterError(
        f"unknown metric {metric!r}: not a history.csv column nor a metrics.json number of any run in "
        f"{folder}{hint} (known, closest first: {', '.join(near)})",
        key="metric",
    )


def _replace_figures(folder: Path, written: dict[str, Path]) -> None:
    """Remove the figures the previous report wrote that this one did not (names from FIGURES_RECORD, plain
    file names inside ``figures/`` only), then record this report's."""
    figures = folder / "figures"
    record = figures / FIGURES_RECORD
    try:
        earlier = json.loads(record.read_text(encoding="utf-8")).get("figures", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    names = {p.name for p in written.values()}
    for name in earlier if isinstance(earlier, list) else []:
        if isinstance(name, str) and name not in names and Path(name).name == name and name.endswith(".png"):
            (figures / name).unlink(missing_ok=True)
    if names or record.exists():
        write_text_atomic(record, json.dumps({"figures": sorted(names)}, indent=1) + "\n")


def _unreadable_section(entries: list[tuple[str, dict[str, Any]]]) -> str:
    bad = [m["error"] for _, m in entries if m.get("status") == "unreadable"]
    if not bad:
        return ""
    lines = ["## Unreadable metrics.json", "", *[f"- {text}" for text in bad]]
    return "\n".join(lines) + "\n"


def write_report(
    grid_dir: str | Path,
    compare: list[str] | None = None,
    metric: str = "val_acc",
    log: Callable[[str], Any] = print,
    *,
    require_metric: bool = False,
) -> dict[str, Path]:
    """``summary.csv``, ``summary.md`` and the figures of ``grid_dir``; returns their paths (figures only
    where some run has ``metric``). A grid folder gets ``figures/compare_<axis>.png`` per compared axis
    (default: every varying key); another folder of runs one table and ``figures/runs_<notebook>.png`` per
    notebook. Tables are sorted by ``metric`` (a history.csv column: each run's best epoch; or a metrics.json
    number), best first; runs whose setting has published figures (:mod:`fgvc_lib.grid.published`) get
    them beside the reproduced ones, and ``figures/published*.png``. ``require_metric``: a ``metric`` no run
    logged is a ParameterError (nothing is written).
    SLURM jobs submitted without waiting are looked at first (:func:`settle_submitted`): those that died are
    recorded failed, those still queued or running are rows with status ``submitted``."""
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise FileNotFoundError(f"grid folder {grid_dir} does not exist (run the grid first)")
    grid = is_grid_folder(grid_dir)
    active = settle_submitted(grid_dir, log=log) if grid else {}
    if active:
        log(f"{len(active)} run(s) still queued or running on SLURM; run this again once they are done")
    entries = _scan(grid_dir)
    if require_metric:
        check_metric(grid_dir, entries, metric)
    if grid:
        out, summary = _grid_report(grid_dir, entries, compare, metric)
    else:
        out, summary = _runs_report(grid_dir, entries, metric)
    drawn = {k: v for k, v in out.items() if not k.startswith("summary_")}
    if not drawn and entries and metric not in known_metrics(grid_dir, entries, results=True):
        log(f"no figures: no run logged {metric!r} in history.csv or metrics.json (known: "
            f"{', '.join(known_metrics(grid_dir, entries, results=True)) or 'none'})")
    write_text_atomic(out["summary_md"], summary + ("\n" + _unreadable_section(entries)
                                                     if _unreadable_section(entries) else ""))
    _replace_figures(grid_dir, drawn)
    return out


def _grid_spec(record: dict[str, Any]) -> dict[str, Any]:
    """The grid's spec as run (``grid.yaml``), with the ``published:`` block of its grid file when that file
    is still there and reads (figures added or corrected after the runs count)."""
    spec = dict(record.get("spec") or {})
    source = record.get("source")
    if isinstance(source, str) and Path(source).is_file():
        from .spec import load_grid

        try:
            current = load_grid(source)
        except (ParameterError, OSError):
            return spec
        if current.notebook == spec.get("notebook") and current.published:
            spec["published"] = current.published
    return spec


def _with_values(df: Any, entries: list[tuple[str, dict[str, Any]]], folder: Path, metric: str) -> tuple[Any, str, dict]:
    """``df`` with the sort column of ``metric`` (:func:`run_values`) added when it is not a column yet."""
    column, values = run_values(folder, entries, metric)
    if column not in df.columns:
        df = df.assign(**{column: [values.get(name) for name, _ in entries]})
    return df, column, values


def _grid_report(
    grid_dir: Path, entries: list[tuple[str, dict[str, Any]]], compare: list[str] | None, metric: str
) -> tuple[dict[str, Path], str]:
    from ..plots import save_figure

    record = grid_record(grid_dir)
    varying = _varying(entries)
    df, column, values = _with_values(_frame(entries), entries, grid_dir, metric)
    published = grid_published(_grid_spec(record), record.get("preset"))
    df, pairs, rows = add_published(df, entries, published)
    out = {"summary_csv": grid_dir / "summary.csv", "summary_md": grid_dir / "summary.md"}
    write_text_atomic(out["summary_csv"], df.to_csv(index=False))
    summary = markdown_table(df, varying, title=f"Grid {grid_dir.name}", sort_by=column,
                             notes=_split_notes(entries, df))
    summary += ("\n" + _published_section(pairs, record.get("preset"))) if pairs else ""
    per_loss = per_axis_summary(df, "loss") if "loss" in varying else ""
    for axis in compare if compare is not None else varying:
        fig = compare_figure(grid_dir, entries, axis, varying, metric, values, column)
        if fig is not None:
            out[f"compare_{axis}"] = save_figure(fig, grid_dir / "figures" / f"compare_{axis}.png")
    if rows:
        out["published"] = save_figure(published_figure(rows, entries), grid_dir / "figures" / "published.png")
    return out, summary + ("\n" + per_loss if per_loss else "")


def _runs_report(folder: Path, entries: list[tuple[str, dict[str, Any]]], metric: str) -> tuple[dict[str, Path], str]:
    """Not a grid: one section, table and figure per notebook."""
    import pandas as pd

    from ..plots import save_figure

    if not entries:
        raise ParameterError(
            f"{folder}: no run folders (a folder holding metrics.json) in it or one level below; expected a grid "
            f"folder (with grid.yaml) or a folder of runs such as outputs/runs/<notebook> or outputs/runs"
        )

    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, metrics in entries:
        if metrics.get("status") != "unreadable":
            groups.setdefault(_notebook_of(name, metrics), []).append((name, metrics))
    out = {"summary_csv": folder / "summary.csv", "summary_md": folder / "summary.md"}
    frames, sections = [], []
    for notebook, group in groups.items():
        df, column, values = _with_values(_frame(group), group, folder, metric)
        df, pairs, rows = add_published(df, group, run_published(notebook))
        df.insert(0, "notebook", notebook)
        frames.append(df)
        varying = _varying(group)
        table = markdown_table(df.drop(columns="notebook"), varying, title=notebook, sort_by=column,
                               notes=_split_notes(group, df))
        sections.append(table.replace("# ", "## ", 1) + (f"\n{_published_section(pairs)}".replace(
            "## Published", "### Published") if pairs else ""))
        fig = runs_figure(folder, group, metric, notebook, values, column)
        if fig is not None:
            key = f"runs_{notebook}"
            out[key] = save_figure(fig, folder / "figures" / f"{key}.png")
            sections[-1] += f"\nFigure: figures/{key}.png ({metric}: per epoch, one line per run; {column}: one bar per run)\n"
        else:
            logged = ", ".join(known_metrics(folder, group)) or "no history.csv"
            sections[-1] += f"\nNo figure: no run of {notebook} logged {metric} (their history.csv: {logged})\n"
        if rows:
            key = f"published_{notebook}"
            out[key] = save_figure(published_figure(rows, group), folder / "figures" / f"{key}.png")
            sections[-1] += f"Figure: figures/{key}.png (reproduced next to published)\n"
    unreadable = [(n, m) for n, m in entries if m.get("status") == "unreadable"]
    if unreadable:
        df = _frame(unreadable)
        df.insert(0, "notebook", [_notebook_of(n, m) for n, m in unreadable])
        frames.append(df)
    combined = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["notebook", "run_id"])
    write_text_atomic(out["summary_csv"], combined.to_csv(index=False))
    head = (
        f"# Runs in {folder.name}\n\nNot a grid folder (no grid.yaml): {len(entries)} run folder(s) of "
        f"{len(groups)} notebook(s), one table per notebook"
        + (f", {len(unreadable)} unreadable (listed below)" if unreadable else "")
        + ".\n"
    )
    return out, head + "".join("\n" + section for section in sections)
