"""``fgvc report`` on what is not a clean grid: folders of plain runs of several notebooks (one table and one
figure per notebook), ``outputs/runs/`` itself, unreadable ``metrics.json`` files (listed, not dropped), an
unknown ``--metric`` (an error naming the known ones; nothing written) and figures that no longer correspond
(removed; files the report did not write are never touched). Run folders are written by hand here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fgvc_lib import grid as g
from fgvc_lib.cli import main
from fgvc_lib.config import ParameterError

ROOT = Path(__file__).resolve().parents[1]


def run_folder(folder: Path, notebook: str, params: dict, history: dict[str, list[float]] | None = None,
               status: str = "finished", **metrics) -> Path:
    """A run folder as a notebook leaves it: metrics.json and (optionally) history.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"notebook": notebook, "params": params, "status": status, "seconds": 2.0, **metrics}
    (folder / "metrics.json").write_text(json.dumps(payload), encoding="utf-8")
    if history:
        cols = list(history)
        n = len(history[cols[0]])
        rows = [",".join(["epoch", *cols])] + [",".join([str(i + 1), *(str(history[c][i]) for c in cols)])
                                               for i in range(n)]
        (folder / "history.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def plain_runs(tmp_path: Path) -> Path:
    """Plain ``fgvc run`` folders of two notebooks side by side, plus one with a truncated metrics.json."""
    root = tmp_path / "runs"
    run_folder(root / "20250101-a", "bird", {"lr": 0.01, "seed": 0, "model": "resnet18"},
               {"train_loss": [1.0, 0.5], "val_acc": [0.4, 0.6]}, top1_acc=0.6)
    run_folder(root / "20250101-b", "bird", {"lr": 0.1, "seed": 1, "model": "resnet18"},
               {"train_loss": [1.1, 0.7], "val_acc": [0.3, 0.5]}, top1_acc=0.5)
    run_folder(root / "20250102-c", "multilabel", {"lr": 0.01, "loss": "bce"},
               {"train_loss": [0.9, 0.4], "val_f1": [0.2, 0.3]}, micro_f1=0.3)
    broken = run_folder(root / "20250103-d", "cifar100", {"lr": 0.001})
    text = (broken / "metrics.json").read_text()
    (broken / "metrics.json").write_text(text[: len(text) // 2])
    return root


def test_plain_runs_of_several_notebooks_get_one_table_and_one_figure_each(plain_runs: Path, capsys) -> None:
    assert main(["report", str(plain_runs)]) == 0
    out = capsys.readouterr().out
    md = (plain_runs / "summary.md").read_text()
    assert md == out[: len(md)]
    assert "Not a grid folder (no grid.yaml): 4 run folder(s) of 2 notebook(s), one table per notebook" in md
    assert "## bird" in md and "## multilabel" in md and "2 runs: 2 finished" in md
    bird = md.split("## bird", 1)[1].split("## multilabel", 1)[0]
    # only what varies among bird runs; the sort metric (the best epoch of val_acc) first, best run first
    assert "| run_id | lr | seed | status | best val_acc | top1_acc | seconds |" in bird
    assert bird.index("| 20250101-a |") < bird.index("| 20250101-b |")
    multilabel = md.split("## multilabel", 1)[1]
    assert "| run_id | status | micro_f1 | seconds |" in multilabel
    assert "No figure: no run of multilabel logged val_acc (their history.csv: train_loss, val_f1)" in multilabel
    # one figure per notebook whose runs logged the metric (val_acc: bird only), never one per parameter
    figures = sorted(p.name for p in (plain_runs / "figures").glob("*.png"))
    assert figures == ["runs_bird.png"]
    assert f"figure: {plain_runs / 'figures' / 'runs_bird.png'}" in out
    csv = (plain_runs / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("notebook,run_id,status,error") and len(csv) == 5
    df = g.collect_runs(plain_runs)
    assert list(df["notebook"]) == ["bird", "bird", "multilabel", "unknown"]  # the unreadable one: unknown


def test_a_truncated_metrics_json_is_listed_as_unreadable(plain_runs: Path) -> None:
    g.write_report(plain_runs)
    md = (plain_runs / "summary.md").read_text()
    path = plain_runs / "20250103-d" / "metrics.json"
    assert "1 unreadable (listed below)" in md and "## Unreadable metrics.json" in md
    line = next(x for x in md.splitlines() if str(path) in x)
    assert "is not valid JSON (truncated?)" in line
    rows = (plain_runs / "summary.csv").read_text()
    assert "20250103-d,unreadable," in rows


def test_a_truncated_metrics_json_in_a_grid_is_a_row_not_a_gap(tmp_path: Path) -> None:
    grid_dir = tmp_path / "runs" / "g"
    grid_dir.mkdir(parents=True)
    (grid_dir / "grid.yaml").write_text(yaml.safe_dump({"spec": {"notebook": "bird"}, "runs": ["s0", "s1"]}))
    run_folder(grid_dir / "s0", "bird", {"seed": 0}, {"val_acc": [0.5, 0.6]}, top1_acc=0.6)
    run_folder(grid_dir / "s1", "bird", {"seed": 1}, {"val_acc": [0.4, 0.7]}, top1_acc=0.7)
    (grid_dir / "s1" / "metrics.json").write_text('{"notebook": "bird", "params": {"seed"')
    paths = g.write_report(grid_dir)
    md = paths["summary_md"].read_text()
    assert "2 runs: 1 finished, 1 unreadable" in md
    assert f"{grid_dir / 's1' / 'metrics.json'} is not valid JSON" in md
    assert "| s1 | unreadable |" in md.replace(" |  |", " |")  # seed does not "vary" because s1 has no params


@pytest.mark.parametrize("layout", ["outputs/runs", "outputs/runs/<notebook>"])
def test_outputs_runs_itself_is_grouped_by_notebook(tmp_path: Path, layout: str) -> None:
    runs = tmp_path / "outputs" / "runs"
    run_folder(runs / "bird" / "r1", "bird", {"lr": 0.1}, {"val_acc": [0.1, 0.2]})
    run_folder(runs / "bird" / "r2", "bird", {"lr": 0.2}, {"val_acc": [0.2, 0.3]})
    run_folder(runs / "cifar100" / "r3", "cifar100", {"lr": 0.3}, {"val_acc": [0.3, 0.4]})
    target = runs if layout == "outputs/runs" else runs / "bird"
    paths = g.write_report(target)
    md = paths["summary_md"].read_text()
    if layout == "outputs/runs":
        assert "3 run folder(s) of 2 notebook(s)" in md and "bird/r1" in md and "cifar100/r3" in md
        assert set(paths) == {"summary_csv", "summary_md", "runs_bird", "runs_cifar100"}
    else:
        assert "2 run folder(s) of 1 notebook(s)" in md and "## bird" in md
        assert set(paths) == {"summary_csv", "summary_md", "runs_bird"}


def test_a_folder_without_runs_is_refused_saying_what_was_expected(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no run folders (a folder holding metrics.json)" in err and "expected a grid folder" in err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "does not exist; expected a grid YAML, a grid folder" in capsys.readouterr().err


def _grid(tmp_path: Path) -> Path:
    grid_dir = tmp_path / "runs" / "g"
    grid_dir.mkdir(parents=True)
    spec = {"notebook": "bird", "compare": ["seed", "lr"], "metric": "val_acc"}
    (grid_dir / "grid.yaml").write_text(yaml.safe_dump({"spec": spec, "runs": ["a", "b"]}))
    run_folder(grid_dir / "a", "bird", {"seed": 0, "lr": 0.1}, {"train_loss": [1, 0.5], "val_acc": [0.2, 0.4]})
    run_folder(grid_dir / "b", "bird", {"seed": 1, "lr": 0.2}, {"train_loss": [1, 0.6], "val_acc": [0.3, 0.5]})
    return grid_dir


def test_unknown_metric_is_an_error_naming_the_known_ones_and_writes_nothing(tmp_path: Path, capsys) -> None:
    grid_dir = _grid(tmp_path)
    assert main(["report", str(grid_dir)]) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in grid_dir.rglob("*") if p.is_file()}
    assert main(["report", str(grid_dir), "--metric", "val_accc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown metric 'val_accc'" in err and "did you mean 'val_acc'?" in err
    assert "(known, closest first: val_acc, " in err and "train_loss" in err
    assert {p: p.read_bytes() for p in grid_dir.rglob("*") if p.is_file()} == before
    with pytest.raises(ParameterError, match="unknown metric"):
        g.write_report(grid_dir, metric="val_accc", require_metric=True)


def test_figures_that_no_longer_correspond_are_replaced_or_removed(tmp_path: Path, capsys) -> None:
    grid_dir = _grid(tmp_path)
    figures = grid_dir / "figures"
    figures.mkdir()
    (figures / "mine.png").write_bytes(b"a figure the user put here")
    paths = g.write_report(grid_dir, compare=["seed", "lr"])
    assert {p.name for p in figures.glob("*.png")} == {"compare_seed.png", "compare_lr.png", "mine.png"}
    first = (figures / "compare_seed.png").read_bytes()
    # another metric: the same figures, redrawn for it
    assert main(["report", str(grid_dir), "--metric", "train_loss"]) == 0
    assert "figure: " in capsys.readouterr().out
    assert (figures / "compare_seed.png").read_bytes() != first
    # an axis no longer compared: its figure goes, and no temp files are left
    paths = g.write_report(grid_dir, compare=["seed"])
    assert set(paths) == {"summary_csv", "summary_md", "compare_seed"}
    assert {p.name for p in figures.iterdir() if not p.name.startswith(".report")} == {"compare_seed.png", "mine.png"}
    # a metric nobody logged (the grid runner's report, not required): no figure is left that would mislead
    logged: list[str] = []
    g.write_report(grid_dir, compare=["seed"], metric="val_f1", log=logged.append)
    assert {p.name for p in figures.glob("*.png")} == {"mine.png"}
    assert (figures / "mine.png").read_bytes() == b"a figure the user put here"
    assert any("no figures: no run logged 'val_f1'" in line for line in logged)


# ---------------------------------------------------------------------------------------------- columns, order, chance
def _published_grid(tmp_path: Path, preset: str | None = None) -> Path:
    """A grid folder as `fgvc grid` leaves it: grid.yaml with a published: block, four runs (one failed)."""
    grid_dir = tmp_path / "runs" / "t1"
    grid_dir.mkdir(parents=True)
    spec = {
        "notebook": "bird", "name": "t1", "metric": "val_acc", "compare": ["loss"],
        "published": {"source": "bird report, a table", "rows": [
            {"match": {"model": "efficientnet-b4", "loss": "ce", "batch_size": 32}, "top1_acc": 0.70},
            {"match": {"model": "efficientnet-b4", "loss": "ohem", "batch_size": 32}, "top1_acc": 0.72},
        ]},
        "presets": {"tiny": {"base": {"epochs": 2},
                             "replace": {"model": {"efficientnet-b4": {"model": "tf_efficientnet_lite0"}}}}},
    }
    (grid_dir / "grid.yaml").write_text(yaml.safe_dump({"spec": spec, "preset": preset, "runs": list("abcd")}))
    model = "tf_efficientnet_lite0" if preset else "efficientnet-b4"
    done = dict(chance_acc=0.1, eval_split="test")
    run_folder(grid_dir / "a", "bird", {"model": model, "loss": "ce", "batch_size": 32},
               {"train_loss": [1, 0.5, 0.4], "val_acc": [0.3, 0.5, 0.45]}, val_top1_acc=0.5, top1_acc=0.48, **done)
    run_folder(grid_dir / "b", "bird", {"model": model, "loss": "ohem", "batch_size": 32},
               {"train_loss": [1, 0.6, 0.5], "val_acc": [0.4, 0.6, 0.62]}, val_top1_acc=0.62, top1_acc=0.6, **done)
    run_folder(grid_dir / "c", "bird", {"model": model, "loss": "ce", "batch_size": 64},
               {"train_loss": [1, 0.6, 0.5], "val_acc": [0.2, 0.3, 0.35]}, val_top1_acc=0.35, top1_acc=0.33, **done)
    run_folder(grid_dir / "d", "bird", {"model": model, "loss": "ohem", "batch_size": 64}, None, status="failed",
               error="boom")
    return grid_dir


def _table(md: str) -> list[list[str]]:
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_grid_summary_has_validation_and_test_columns_best_first_and_the_published_figures(tmp_path: Path) -> None:
    grid_dir = _published_grid(tmp_path)
    paths = g.write_report(grid_dir)
    md = paths["summary_md"].read_text()
    header, *rows = _table(md.split("## Published")[0])
    assert header == ["run_id", "loss", "batch_size", "status", "best val_acc", "val_top1_acc", "top1_acc",
                      "published top1_acc", "Δ top1_acc", "seconds", "error"]
    # best first by the grid's metric (each run's best epoch of val_acc); the failed run last
    assert [r[0] for r in rows] == ["b", "a", "c", "d"]
    b, a, c, _ = rows
    assert b[4:9] == ["0.62", "0.62", "0.6", "0.72", "-0.1200"] and a[4:9] == ["0.5", "0.5", "0.48", "0.7", "-0.2200"]
    assert c[7:9] == ["", ""]  # batch 64 is not a published setting
    assert "Sorted by best val_acc, best first (higher is better)." in md
    assert "Metrics on the evaluation split (test); `val_*` columns on the validation split" in md
    assert "Chance accuracy (1 / classes): 0.1." in md
    assert "- a, b: bird report, a table (the published: block of grid t1)" in md and "Preset" not in md
    # summary.csv keeps the plan's order and has the same columns
    csv = (grid_dir / "summary.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in csv[1:]] == ["a", "b", "c", "d"] and "published top1_acc" in csv[0]
    assert {"compare_loss", "published"} <= set(paths)
    # a metrics.json number sorts too (lower is better for an error); a typo is refused
    md = g.write_report(grid_dir, metric="top1_acc", require_metric=True)["summary_md"].read_text()
    assert [r[0] for r in _table(md.split("## Published")[0])[1:]] == ["b", "a", "c", "d"]
    with pytest.raises(ParameterError, match=r"unknown metric 'top1_ac'.*did you mean 'top1_acc'"):
        g.write_report(grid_dir, metric="top1_ac", require_metric=True)


def test_a_preset_grid_lines_up_its_stand_ins_with_the_published_rows_and_says_so(tmp_path: Path) -> None:
    grid_dir = _published_grid(tmp_path, preset="tiny")
    md = g.write_report(grid_dir)["summary_md"].read_text()
    rows = {r[0]: r for r in _table(md.split("## Published")[0])[1:]}
    assert rows["a"][7] == "0.7" and rows["b"][7] == "0.72" and rows["c"][7] == ""
    assert "Preset 'tiny': these runs are stand-ins of the published settings" in md


def _baseline_lines(ax, vertical: bool = False) -> list[float]:
    """Where the figure's baseline lines (labelled chance ... / all-negative ...) are drawn."""
    return [float((line.get_xdata() if vertical else line.get_ydata())[0]) for line in ax.get_lines()
            if line.get_label().startswith(("chance", "all-negative"))]


def test_the_comparison_figures_draw_the_chance_line(tmp_path: Path) -> None:
    from fgvc_lib.grid.report import _scan
    from fgvc_lib.grid.report_figures import baselines, compare_figure, runs_figure

    grid_dir = _published_grid(tmp_path)
    entries = _scan(grid_dir)
    fig = compare_figure(grid_dir, entries, "loss", ["loss", "batch_size"], "val_acc",
                         {"a": 0.5, "b": 0.62, "c": 0.35}, "best val_acc")
    curves, legend, bars = fig.axes
    assert _baseline_lines(curves) == [0.1] and _baseline_lines(bars) == [0.1]
    assert "chance (1 / classes): 0.1" in [t.get_text() for t in legend.get_legend().get_texts()]
    assert len(bars.patches) == 2  # one bar per loss: ce (runs a and c), ohem (run b)
    # one bar per run, horizontal, chance as a vertical line
    fig = runs_figure(grid_dir, entries, "val_acc", "bird", {"a": 0.5, "b": 0.62})
    assert _baseline_lines(fig.axes[2], vertical=True) == [0.1]
    # errors: 1 - chance; top-5: 5 / classes; multi-label accuracy: the all-negative share; a loss: none
    assert baselines(entries, "top1_error") == [(0.9, "chance error (1 - 1 / classes): 0.9")]
    assert baselines(entries, "val_top5") == [(0.5, "chance (5 / classes): 0.5")]
    assert baselines([("m", {"baseline_all_negative_acc": 0.49})], "val_acc") == [(0.49, "all-negative baseline: 0.49")]
    assert baselines(entries, "val_loss") == [] and baselines(entries, "val_f1") == []


# ---------------------------------------------------------------------------------------------- published figures
def test_a_run_with_the_settings_of_a_report_file_gets_its_published_figure(tmp_path: Path) -> None:
    from fgvc_lib.grid.published import PUBLISHED_DIR, load_published_file

    notebook, entry = load_published_file(PUBLISHED_DIR / "bird_report.yaml")
    assert notebook == "bird" and entry.figures == {"top1_acc": 0.7253} and entry.match["epochs"] == 200
    assert not {"data_root", "seed", "device", "num_workers", "download"} & set(entry.match)
    root = tmp_path / "runs"
    # paths, seed, device and workers do not change what was published; the epochs do
    same = {**entry.match, "data_root": "/data/CUB_200_2011", "seed": 3, "device": "cuda", "num_workers": 16}
    run_folder(root / "bird" / "r1", "bird", same, {"val_acc": [0.5, 0.71]}, top1_acc=0.7112, chance_acc=0.005)
    run_folder(root / "bird" / "r2", "bird", {**same, "epochs": 2}, {"val_acc": [0.5, 0.65]}, top1_acc=0.64)
    paths = g.write_report(root)
    md = paths["summary_md"].read_text()
    header, *rows = _table(md)
    r1 = dict(zip(header, rows[0], strict=True))
    assert r1["run_id"] == "bird/r1" and r1["published top1_acc"] == "0.7253" and r1["Δ top1_acc"] == "-0.0141"
    assert dict(zip(header, rows[1], strict=True))["published top1_acc"] == ""
    assert "- bird/r1: bird report, section 3.1" in md and "(parameters/bird_report.yaml)" in md
    assert "published_bird" in paths


def test_the_shipped_published_figures_are_the_reports_and_each_names_one_setting() -> None:
    from fgvc_lib.grid.published import PUBLISHED_DIR, find_published, grid_published, load_published_file

    loaded = {p.name: load_published_file(p) for p in sorted(PUBLISHED_DIR.glob("*.yaml"))}
    figures = {name: entry.figures for name, (_, entry) in loaded.items()}
    assert figures["bird_report.yaml"] == {"top1_acc": 0.7253}
    assert figures["cifar100_report.yaml"] == {"top1_acc": 0.8952}
    assert figures["inat_bbn_report.yaml"] == {"top1_error": 0.25459}
    assert figures["multilabel_report.yaml"]["micro_f1_global_threshold"] == 0.787
    for name, (notebook, entry) in loaded.items():  # no run matches two report files of its notebook
        others = [e for n, (nb, e) in loaded.items() if nb == notebook and n != name]
        assert find_published(entry.match, others) is None, name
    table1 = {}
    for file, count in (("cifar100_table1.yaml", 10), ("inat_ablation.yaml", 3), ("multilabel_grid.yaml", 3)):
        spec = g.load_grid(ROOT / "parameters" / file)
        for preset in [None, *spec.presets]:
            runs = g.validate_runs(spec, g.expand_grid(spec, preset))
            rows = grid_published(spec.to_dict(), preset)
            assert len(rows) == count
            for row in rows:  # each published row is exactly one run of the grid, with or without the preset
                assert sum(find_published(run, [row]) is row for run in runs) == 1, (file, preset, row.match)
        if file == "cifar100_table1.yaml":
            table1 = {(r.match["model"], r.match.get("batch_size", 64), r.match["loss"]): r.figures["top1_acc"]
                      for r in grid_published(spec.to_dict())}
    assert table1[("efficientnet-b4", 32, "ce")] == 0.8857 and table1[("efficientnet-b4", 64, "flsd53")] == 0.8952
    assert table1[("swin_base_patch4_window12_384", 64, "flsd53")] == 0.936
    assert min(table1.values()) == 0.8824


@pytest.mark.parametrize(
    "published, message",
    [
        ({"source": "x", "rows": [{"match": {"los": "ce"}, "top1_acc": 0.7}]}, "unknown parameter 'los'.*did you mean 'loss'"),
        ({"source": "x", "rows": [{"match": {"loss": "ce"}, "top1_acc": "72.5 %"}]}, "published top1_acc must be a number"),
        ({"source": "x", "rows": [{"match": {"loss": "ce"}}]}, "no published figure"),
        ({"source": "x", "row": []}, "unknown key 'row'.*did you mean 'rows'"),
        ({"source": "x", "rows": [{"top1_acc": 0.7}]}, r"expected \{match:"),
    ],
)
def test_a_grid_files_published_block_is_checked(tmp_path: Path, published: dict, message: str) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"notebook": "bird", "name": "g", "axes": {"loss": ["ce"]}, "published": published}))
    with pytest.raises(ParameterError, match=message):
        g.load_grid(path)
