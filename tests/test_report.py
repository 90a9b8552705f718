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
    assert "| run_id | lr | seed | status | top1_acc | seconds |" in bird  # only what varies among bird runs
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
