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


def test_embedded_data_is_written_once_under_a_lock(tmp_path, monkeypatch):
    import multiprocessing as mp

    from fgvc_lib.runs import ensure_embedded_data

    monkeypatch.setenv("FGVC_OUTPUTS", str(tmp_path))
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer_process, args=(str(tmp_path),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    root = ensure_embedded_data("set", lambda r: (r / "done").is_file(), _slow_write)
    assert (root / "writes").read_text() == "x"  # one writer, the others waited and found it complete


def _slow_write(root):
    import time

    root.mkdir(parents=True, exist_ok=True)
    with open(root / "writes", "a") as fh:
        fh.write("x")
    time.sleep(0.3)
    (root / "done").write_text("ok")


def _writer_process(outputs):
    import os

    from fgvc_lib.runs import ensure_embedded_data

    os.environ["FGVC_OUTPUTS"] = outputs
    ensure_embedded_data("set", lambda r: (r / "done").is_file(), _slow_write)
