import json
import os

import pytest

from fgvc_lib.runs import (
    RunDirError,
    outputs_root,
    prepare_run_dir,
    project_root,
    read_metrics,
    write_metrics,
)


def test_new_run_ids_never_collide(tmp_path, monkeypatch):
    monkeypatch.setenv("FGVC_OUTPUTS", str(tmp_path))
    dirs = {prepare_run_dir("bird") for _ in range(5)}
    assert len(dirs) == 5
    for d in dirs:
        assert d.parent == tmp_path / "runs" / "bird"
        assert (d / "figures").is_dir() and (d / "checkpoints").is_dir()


def test_explicit_run_dir_with_results_is_not_reused(tmp_path):
    run = prepare_run_dir("bird", tmp_path / "r1")
    write_metrics(run, notebook="bird", params={}, status="finished", seconds=1.0, top1_acc=0.5)
    with pytest.raises(RunDirError, match="already holds a run"):
        prepare_run_dir("bird", run)
    assert read_metrics(run)["top1_acc"] == 0.5  # untouched
    assert prepare_run_dir("bird", run, resume=True) == run


def test_resume_needs_run_dir():
    with pytest.raises(RunDirError, match="needs the `run_dir`"):
        prepare_run_dir("bird", "", resume=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_run_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(RunDirError, match="not writable|cannot be created"):
        prepare_run_dir("bird", ro / "run")


def test_unwritable_run_dir_as_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="cannot be created"):
        prepare_run_dir("bird", blocker / "run")


def test_metrics_json_shared_keys_and_nan(tmp_path):
    write_metrics(
        tmp_path,
        notebook="bird",
        params={"lr": 0.1},
        status="failed",
        seconds=2.345,
        error="ValueError: x",
        top1_acc=float("nan"),
    )
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data == {
        "notebook": "bird",
        "params": {"lr": 0.1},
        "status": "failed",
        "seconds": 2.35,
        "error": "ValueError: x",
        "top1_acc": None,
    }
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError, match="status"):
        write_metrics(tmp_path, notebook="bird", params={}, status="done", seconds=0)


def test_outputs_root_follows_env_and_project(tmp_path, monkeypatch):
    monkeypatch.setenv("FGVC_OUTPUTS", str(tmp_path / "o"))
    assert outputs_root() == (tmp_path / "o").resolve()
    monkeypatch.delenv("FGVC_OUTPUTS")
    monkeypatch.chdir(project_root(os.path.dirname(__file__)) / "notebooks")
    assert outputs_root() == project_root(os.path.dirname(__file__)) / "outputs"
