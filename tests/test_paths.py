"""Relative paths: a command-line value against the caller's working folder, a parameter or grid file's value
against that file's folder; params.yaml records the absolute path; empty keeps meaning "embedded"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fgvc_lib.catalog import get_notebook, notebook_names
from fgvc_lib.config import ParameterError
from fgvc_lib.execution import load_values
from fgvc_lib.grid import load_grid
from fgvc_lib.param_paths import PATH_PARAMS, resolve_grid_paths, resolve_param_paths
from fgvc_lib.runs import project_root

REPO = project_root(Path(__file__).parent)


def test_command_line_paths_resolve_against_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = load_values(None, [["data_root", "data/x"], ["csv", "lists/a.csv"], ["model", "data/not-a-path"],
                                ["weights", ""]])
    assert values == {"data_root": str(tmp_path / "data" / "x"), "csv": str(tmp_path / "lists" / "a.csv"),
                      "model": "data/not-a-path", "weights": ""}
    assert set(PATH_PARAMS) >= {"data_root", "csv", "weights", "run_dir"}


def test_parameter_file_paths_resolve_against_the_files_folder(tmp_path, monkeypatch):
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "x.yaml").write_text("data_root: ../data/cub\nweights: w.pth\nrun_dir: /abs/run\n")
    monkeypatch.chdir("/")
    values = load_values([str(tmp_path / "params" / "x.yaml")], [["csv", "c.csv"]])
    assert values["data_root"] == str(tmp_path / "data" / "cub")
    assert values["weights"] == str(tmp_path / "params" / "w.pth") and values["run_dir"] == "/abs/run"
    assert values["csv"] == "/c.csv"  # the override: against the working folder (/ here)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nepochs: [1, 2\nmodel: x\n")
    with pytest.raises(ParameterError) as exc:
        load_values([str(bad)], None)
    text = str(exc.value)
    assert text.startswith(f"{bad}:3:6: YAML syntax error: ") and "\n" not in text


def test_grid_file_paths_resolve_against_the_files_folder(tmp_path):
    folder = tmp_path / "grids"
    folder.mkdir()
    spec = {
        "notebook": "multilabel", "name": "paths_grid",
        "base": {"data_root": "../data/ml", "epochs": 1},
        "axes": {"csv": ["a.csv", ""]},
        "rows": [{"weights": "w/b.pth"}],
        "grids": [{"base": {"data_root": "sub"}}],
        "presets": {"tiny": {"base": {"data_root": ""},
                             "replace": {"data_root": {"../data/ml": "../data/small"},
                                         "model": {"resnet34": {"weights": "lite.pth"}}}}},
    }
    (folder / "g.yaml").write_text(yaml.safe_dump(spec))
    grid = load_grid(folder / "g.yaml")
    assert grid.base["data_root"] == str(tmp_path / "data" / "ml")
    assert grid.axes["csv"] == [str(folder / "a.csv"), ""]
    assert grid.rows == [{"weights": str(folder / "w" / "b.pth")}]
    assert grid.grids[0]["base"]["data_root"] == str(folder / "sub")
    tiny = grid.presets["tiny"]
    assert tiny["base"]["data_root"] == ""
    assert tiny["replace"]["data_root"] == {str(tmp_path / "data" / "ml"): str(tmp_path / "data" / "small")}
    assert tiny["replace"]["model"] == {"resnet34": {"weights": str(folder / "lite.pth")}}
    assert resolve_grid_paths(["not", "a", "mapping"], folder) == ["not", "a", "mapping"]


@pytest.mark.parametrize("name", notebook_names())
def test_shipped_parameter_files_point_at_the_repos_data_folder_from_any_working_folder(name, monkeypatch):
    monkeypatch.chdir("/")
    for file in get_notebook(name).report_files:
        path = REPO / "parameters" / file
        data = yaml.safe_load(path.read_text())
        if "notebook" in data:  # a grid file
            roots = [load_grid(path).base.get("data_root", "")]
        else:
            roots = [load_values([str(path)], None).get("data_root", "")]
        for root in roots:
            assert root == "" or Path(root).parent == REPO / "data", (file, root)


def test_resolve_param_paths_keeps_empty_and_absolute_values(tmp_path):
    assert resolve_param_paths({"data_root": "", "run_dir": "/x/y", "lr": 0.1}, tmp_path) == {
        "data_root": "", "run_dir": "/x/y", "lr": 0.1}
    assert resolve_param_paths({"data_root": "~/cub"}, tmp_path)["data_root"] == str(Path.home() / "cub")


def test_fgvc_run_finds_relative_paths_of_the_caller_and_records_them_absolute(tmp_path):
    """`fgvc run` executes the notebook inside the run folder; a relative data_root must still be the
    caller's. A parameter file one folder down says ../data/cub for the same folder."""
    from fgvc_lib.data.synth.cub import write_cub

    work = tmp_path / "work"
    write_cub(work / "data" / "cub", classes=3, per_class=6, size=48, seed=0)
    (work / "params").mkdir()
    (work / "params" / "tiny.yaml").write_text(yaml.safe_dump({
        "data_root": "../data/cub", "model": "resnet18", "pretrained": False, "img_size": 32, "batch_size": 4,
        "epochs": 1, "num_workers": 0, "cam_images": 0, "device": "cpu", "progress": False}))
    env = {**os.environ, "FGVC_OUTPUTS": str(tmp_path / "outputs"), "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "fgvc_lib.cli"]
    out = subprocess.run([*cli, "run", "bird", "-f", "params/tiny.yaml", "--run-dir", "runs/a"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    params = yaml.safe_load((work / "runs" / "a" / "params.yaml").read_text())
    assert params["data_root"] == str(work / "data" / "cub") and params["run_dir"] == str(work / "runs" / "a")
    out = subprocess.run([*cli, "train", "bird", "-f", "params/tiny.yaml", "-p", "data_root", "data/cub",
                          "-p", "run_dir", "runs/b"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert yaml.safe_load((work / "runs" / "b" / "params.yaml").read_text())["data_root"] == str(work / "data" / "cub")
