"""Run folders are owned: a lock while a run executes (a second run is refused, kill -9 frees it), a resume
continues with the run's own params.yaml (changes refused, naming each key), and an attempt that fails leaves
the earlier run's files as they were, with one console line and the traceback in a log file.

The notebook runs use a toy notebook declared through ``FGVC_NOTEBOOKS`` (milliseconds of training), so
each ``fgvc run`` costs little more than a kernel start."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import plugin_notebook

from fgvc_lib.config import BirdParams, ExperimentParams, ParameterError
from fgvc_lib.resume import RESUME_MAY_CHANGE, resume_values
from fgvc_lib.runs import RUN_LOCK, RunDirError, RunInUse, prepare_run_dir, release_run_dir, write_params

TOY_MODULE = """
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch.utils.data import DataLoader, TensorDataset

from fgvc_lib.catalog import Notebook, register_notebook
from fgvc_lib.config import ExperimentParams, param
from fgvc_lib.engine import Trainer
from fgvc_lib.experiments.base import Experiment


@dataclass
class OwnParams(ExperimentParams):
    NOTEBOOK: ClassVar[str] = "own"

    features: int = param(6, "input features", min=1)
    fail_figure: bool = param(False, "raise in the cell before exp.run()")


class OwnExperiment(Experiment):
    NOTEBOOK = "own"
    PARAMS = OwnParams

    def _build(self):
        p = self.params
        g = torch.Generator().manual_seed(p.seed)
        x = torch.randn(48, p.features, generator=g)
        y = (x @ torch.randn(p.features, 3, generator=g)).argmax(1)
        self.train_loader = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=p.batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(p.seed))
        self.val_loader = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=16)
        self.model = torch.nn.Linear(p.features, 3)
        self.trainer = Trainer(self.model, torch.optim.SGD(self.model.parameters(), lr=p.lr),
                               torch.nn.CrossEntropyLoss(), epochs=p.epochs, device=self.device,
                               run_dir=self.run_dir, seed=p.seed, progress=False)
        if p.resume:
            self.trainer.resume()

    def figure(self):
        if self.params.fail_figure:
            raise ValueError("the figure cell failed: image 7 is truncated")

    def _run(self):
        history = self.trainer.fit(self.train_loader, self.val_loader)
        return {"val_acc": history[-1]["val_acc"], "epochs_run": len(history), "lr_used": history[-1]["lr"]}


register_notebook(Notebook(
    name="own", params="own_nb:OwnParams", experiment="own_nb:OwnExperiment",
    path=str(Path(__file__).with_name("own.ipynb")),
))
"""

CELLS = [
    "from own_nb import OwnExperiment, OwnParams\n\nexp = OwnExperiment(OwnParams.from_namespace(globals()))",
    "exp.figure()",
    "result = exp.run()",
]


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """The plugin folder (``own_nb.py`` + ``own.ipynb``) and the environment that declares it."""
    root = tmp_path_factory.mktemp("own")
    values = {**ExperimentParams().to_dict(), "features": 6, "fail_figure": False}
    return root, plugin_notebook(root, "own_nb", TOY_MODULE, "own", CELLS, values)


TINY = ["-p", "epochs", "2", "-p", "batch_size", "8", "-p", "device", "cpu", "-p", "num_workers", "0"]


def fgvc(env: dict, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fgvc_lib.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (the lock file aside) -> sha1 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != RUN_LOCK}


def finished_run(env: dict, run_dir: Path) -> Path:
    out = fgvc(env, "run", "own", "--run-dir", str(run_dir), *TINY)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"
    return run_dir


# ---------------------------------------------------------------------------------------------- the lock
HOLDER = """
import sys, time
from fgvc_lib.runs import prepare_run_dir
prepare_run_dir("bird", sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def _hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_folder_in_use_is_refused_naming_it_and_the_holder_and_kill_9_frees_it(tmp_path, own):
    _, env = own
    folder = tmp_path / "busy"
    proc = _hold(folder)
    try:
        with pytest.raises(RunInUse) as exc:
            prepare_run_dir("bird", folder)
        assert f"run_dir {folder} is in use" in str(exc.value) and f"pid {proc.pid}" in str(exc.value)
        before = snapshot(folder)
        for command in (["run", "own", "--run-dir", str(folder), *TINY],
                        ["run", "own", "--run-dir", str(folder), "-p", "resume", "true"],
                        ["train", "own", "-p", "run_dir", str(folder), *TINY]):
            out = fgvc(env, *command)
            assert out.returncode == 2, out.stderr
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and f"{folder} is in use" in lines[0] and f"pid {proc.pid}" in lines[0], lines
        assert snapshot(folder) == before and not (folder / "params.yaml").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert (folder / RUN_LOCK).is_file()  # the stale marker stays; the OS released the lock with the process
    assert prepare_run_dir("bird", folder) == folder.resolve()
    release_run_dir(folder)


def test_the_lock_is_reentrant_in_one_process_and_released_by_the_last_hold(tmp_path):
    folder = prepare_run_dir("bird", tmp_path / "r")
    assert prepare_run_dir("bird", folder) == folder
    release_run_dir(folder)
    release_run_dir(folder)
    probe = subprocess.run(
        [sys.executable, "-c", f"from fgvc_lib.runs import prepare_run_dir; prepare_run_dir('bird', {str(folder)!r})"],
        capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr  # released: another process may take it


def test_a_new_run_is_refused_where_a_killed_run_left_its_files(tmp_path):
    run = prepare_run_dir("bird", tmp_path / "killed")
    write_params(run, {"epochs": 3})
    torch.save({"epoch": 1}, run / "checkpoints" / "last.pt")
    release_run_dir(run)
    with pytest.raises(RunDirError, match=r"already holds a run \(params.yaml, checkpoints/last.pt\)"):
        prepare_run_dir("bird", run)
    assert prepare_run_dir("bird", run, resume=True) == run
    release_run_dir(run)


# ---------------------------------------------------------------------------------------------- resume rules
def _earlier(tmp_path: Path, **values) -> Path:
    run = tmp_path / "earlier"
    run.mkdir()
    params = BirdParams.from_dict({"model": "resnet18", "lr": 0.01, "epochs": 4, **values}).to_dict()
    write_params(run, {**params, "run_dir": str(run)})
    return run


def test_resume_takes_what_is_not_given_from_params_yaml(tmp_path):
    run = _earlier(tmp_path, data_root=str(tmp_path / "cub"), img_size=64)
    values = resume_values(BirdParams, {"run_dir": str(run), "resume": True, "epochs": 6, "device": "cpu"})
    params = BirdParams.from_dict(values)
    assert (params.model, params.lr, params.img_size, params.data_root) == ("resnet18", 0.01, 64, str(tmp_path / "cub"))
    assert (params.epochs, params.device, params.resume, params.run_dir) == (6, "cpu", True, str(run))


def test_resume_refuses_changed_parameters_naming_each_with_old_and_new_value(tmp_path):
    run = _earlier(tmp_path)
    with pytest.raises(ParameterError) as exc:
        resume_values(BirdParams, {"run_dir": str(run), "resume": True, "lr": 0.5, "model": "resnet50",
                                   "num_workers": 0, "progress": False})
    text = str(exc.value)
    assert f"resume of {run}" in text and "lr: 0.01 -> 0.5" in text and "model: 'resnet18' -> 'resnet50'" in text
    assert "num_workers" not in text.split(".")[0] and "\n" not in text
    with pytest.raises(ParameterError, match=r"epochs: 4 -> 2 \(a resume may only add epochs\)"):
        resume_values(BirdParams, {"run_dir": str(run), "resume": True, "epochs": 2})
    assert set(RESUME_MAY_CHANGE) >= {"epochs", "device", "num_workers", "progress"}


def test_the_experiment_refuses_a_changed_resume_itself(tmp_path, tiny_params):
    """A notebook run by hand (no CLI in front) gets the same check before anything is written."""
    from fgvc_lib.experiments.bird import BirdExperiment

    run = tmp_path / "r"
    exp = BirdExperiment(tiny_params("bird", model="resnet18", pretrained=False, run_dir=str(run), epochs=1))
    exp.run()
    before = snapshot(run)
    with pytest.raises(ParameterError, match=r"lr: 0.01 -> 0.5"):
        BirdExperiment(tiny_params("bird", model="resnet18", pretrained=False, run_dir=str(run), epochs=1,
                                   resume=True, lr=0.5))
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------------- fgvc run / train
def test_resume_through_fgvc_run_continues_with_the_runs_own_parameters(tmp_path, own):
    _, env = own
    run = finished_run(env, tmp_path / "r")
    assert "lr: 0.5" not in (run / "params.yaml").read_text()
    changed = fgvc(env, "run", "own", "--run-dir", str(run), "-p", "resume", "true", "-p", "lr", "0.5")
    assert changed.returncode == 2
    assert changed.stderr.count("\n") == 1 and "lr: 0.001 -> 0.5" in changed.stderr
    out = fgvc(env, "run", "own", "--run-dir", str(run), "-p", "resume", "true", "-p", "epochs", "3")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_run"] == 3
    assert metrics["params"]["batch_size"] == 8 and metrics["params"]["lr"] == 0.001  # from params.yaml


def test_resume_through_fgvc_train_checks_the_same_rules(tmp_path, own):
    _, env = own
    run = finished_run(env, tmp_path / "r")
    out = fgvc(env, "train", "own", "-p", "run_dir", str(run), "-p", "resume", "true", "-p", "features", "4")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "features: 6 -> 4" in out.stderr
    out = fgvc(env, "train", "own", "-p", "run_dir", str(run), "-p", "resume", "true", "-p", "epochs", "4")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4 and metrics["params"]["batch_size"] == 8


def test_a_resume_that_cannot_start_changes_no_file_of_the_finished_run(tmp_path, own):
    _, env = own
    run = finished_run(env, tmp_path / "r")
    before = snapshot(run)
    other = fgvc(env, "run", "own", "--run-dir", str(run), "-p", "resume", "true", "-p", "features", "4")
    assert other.returncode == 2 and "features: 6 -> 4" in other.stderr
    assert snapshot(run) == before

    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:200])  # truncated
    before = snapshot(run)
    out = fgvc(env, "run", "own", "--run-dir", str(run), "-p", "resume", "true", "-p", "epochs", "3")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "CheckpointError" in lines[0] and str(last) in lines[0], out.stderr
    failed = sorted(run.glob("own.failed-*.ipynb"))
    assert len(failed) == 1 and f"full traceback: {failed[0].with_suffix('.log')}" in lines[0]
    assert "Traceback" in failed[0].with_suffix(".log").read_text()
    after = snapshot(run)
    assert {k: v for k, v in after.items() if not k.startswith("own.failed-")} == before  # ipynb, html, params
    assert not list(run.glob(".own.attempt-*"))


def test_a_failure_before_exp_run_is_one_line_a_log_and_failed_in_metrics(tmp_path, own):
    _, env = own
    run = tmp_path / "fig"
    out = fgvc(env, "run", "own", "--run-dir", str(run), *TINY, "-p", "fail_figure", "true")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines == [f"fgvc run: ValueError: the figure cell failed: image 7 is truncated (full traceback: "
                     f"{run / 'error.log'}; notebook: {run / 'own.ipynb'})"]
    assert "Traceback" in (run / "error.log").read_text() and "exp.figure()" in (run / "error.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "image 7 is truncated" in metrics["error"]
    assert (run / "own.ipynb").is_file() and (run / "own.html").is_file()


def test_a_finished_run_prints_no_kernel_noise(tmp_path, own):
    _, env = own
    out = fgvc(env, "run", "own", "--run-dir", str(tmp_path / "quiet"), *TINY)
    assert out.returncode == 0 and "KeyboardInterrupt" not in out.stderr and "IPKernelApp" not in out.stderr


def test_kill_9_of_fgvc_run_frees_the_folder_for_a_resume(tmp_path, own):
    _, env = own
    run = tmp_path / "k"
    proc = subprocess.Popen([sys.executable, "-m", "fgvc_lib.cli", "run", "own", "--run-dir", str(run), *TINY,
                             "-p", "epochs", "400000"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its kernel
    proc.wait(timeout=30)
    assert prepare_run_dir("own", run, resume=True) == run.resolve()  # no stale lock
    release_run_dir(run)
