"""Feedback while and after a run: ``fgvc run`` prints the notebook's epoch lines as they come and ends with the
headline next to its baseline (``--quiet`` silences both, computing the same); Ctrl-C ends with one line saying
what was kept and the command that resumes (exit 130); ``fgvc runs`` tables runs; ``fgvc_lib.notebooks.run`` is
the Python entry point.

The runs use a toy notebook declared through ``FGVC_NOTEBOOKS`` (milliseconds of training per epoch), so each
costs little more than a kernel start."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import plugin_notebook, terminal_sigint

from fgvc_lib.config import ExperimentParams
from fgvc_lib.execution import LineEcho, RunInterrupted
from fgvc_lib.run_summary import headline, notebook_runs, run_summary, runs_table, select_runs

TOY_MODULE = """
import time
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
class ChattyParams(ExperimentParams):
    NOTEBOOK: ClassVar[str] = "chatty"

    pause: float = param(0.0, "seconds of sleep after each epoch", min=0.0)
    lr_steps: list[int] = param([9], "epochs in which the LR is multiplied by 0.1")


class ChattyExperiment(Experiment):
    NOTEBOOK = "chatty"
    PARAMS = ChattyParams

    def _build(self):
        p = self.params
        g = torch.Generator().manual_seed(p.seed)
        x = torch.randn(48, 5, generator=g)
        y = (x @ torch.randn(5, 3, generator=g)).argmax(1)
        self.train_loader = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=p.batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(p.seed))
        self.val_loader = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=16)
        self.model = torch.nn.Linear(5, 3)
        optimizer = torch.optim.SGD(self.model.parameters(), lr=p.lr)
        pause = lambda trainer, row: time.sleep(p.pause)  # noqa: E731
        self.trainer = Trainer(self.model, optimizer, torch.nn.CrossEntropyLoss(), epochs=p.epochs,
                               device=self.device, run_dir=self.run_dir, seed=p.seed, progress=p.progress,
                               callbacks=[pause])
        if p.resume:
            self.trainer.resume()

    def _run(self):
        print("chatty: training on 32 points")
        history = self.trainer.fit(self.train_loader, self.val_loader)
        return {"eval_split": "val", "top1_acc": history[-1]["val_acc"], "chance_acc": 1 / 3,
                "epochs_run": len(history), "lr_steps_seen": list(self.params.lr_steps)}


register_notebook(Notebook(
    name="chatty", params="chatty_nb:ChattyParams", experiment="chatty_nb:ChattyExperiment",
    path=str(Path(__file__).with_name("chatty.ipynb")),
))
"""

CELLS = [
    "from chatty_nb import ChattyExperiment, ChattyParams\n\nexp = ChattyExperiment(ChattyParams.from_namespace(globals()))",
    "result = exp.run()",
    "from IPython.display import HTML\nHTML('<b>not a line for the console</b>')",
]


@pytest.fixture(scope="module")
def chatty(tmp_path_factory):
    """The plugin folder (``chatty_nb.py`` + ``chatty.ipynb``) and the environment that declares it."""
    root = tmp_path_factory.mktemp("chatty")
    values = {**ExperimentParams().to_dict(), "pause": 0.0, "lr_steps": [9]}
    return root, plugin_notebook(root, "chatty_nb", TOY_MODULE, "chatty", CELLS, values)


TINY = ["-p", "epochs", "3", "-p", "batch_size", "8", "-p", "device", "cpu", "-p", "num_workers", "0"]


def fgvc(env: dict, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fgvc_lib.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def _history_without_seconds(run: Path) -> list[list[str]]:
    rows = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name != "seconds"]
    return [[row[i] for i in keep] for row in rows]


# ---------------------------------------------------------------------------------------------- streaming
def test_line_echo_passes_whole_lines_without_bars_or_colours():
    lines: list[str] = []
    echo = LineEcho(lines.append)
    echo.write("epoch 1/3  train_loss 1.0")
    assert lines == []  # not a whole line yet
    echo.write("  val_acc 0.5\n\x1b[32mready\x1b[0m\n\n")
    echo.write("  10%|#   | 1/10\r  50%|#####  | 5/10\r100%|##########| 10/10\n")
    echo.write("tail without newline")
    echo.close()
    assert lines == ["epoch 1/3  train_loss 1.0  val_acc 0.5", "ready", "100%|##########| 10/10",
                     "tail without newline"]


def test_fgvc_run_streams_epoch_lines_and_ends_with_a_summary_quiet_computes_the_same(tmp_path, chatty):
    _, env = chatty
    loud, quiet = tmp_path / "loud", tmp_path / "quiet"
    out = fgvc(env, "run", "chatty", "--run-dir", str(loud), *TINY, "-p", "lr_steps", "2,3")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "chatty: training on 32 points"
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert all("train_loss" in line and "val_acc" in line for line in epochs)
    assert not [line for line in lines if "<b>" in line or "HTML" in line or "%|" in line]
    metrics = json.loads((loud / "metrics.json").read_text())
    assert metrics["lr_steps_seen"] == [2, 3]
    assert lines[-3] == (f"result: val top-1 {metrics['top1_acc']:.3f} (chance 0.333); 3 epochs, "
                         f"{metrics['seconds']:.0f} s")
    assert lines[-2] == f"report: {loud / 'chatty.html'}" and (loud / "chatty.html").is_file()
    assert lines[-1] == f"run finished: {loud}"

    silent = fgvc(env, "run", "chatty", "--run-dir", str(quiet), *TINY, "-p", "lr_steps", "2,3", "--quiet")
    assert silent.returncode == 0, silent.stderr[-3000:]
    assert silent.stdout.strip().splitlines() == [f"run finished: {quiet}"]
    assert _history_without_seconds(quiet) == _history_without_seconds(loud)  # a display option computes nothing


def test_a_tiny_inat_bbn_run_prints_every_epoch_line_and_the_summary_with_a_comma_list(tmp_path, tiny_params):
    """A real notebook: ``fgvc run inat_bbn`` on tiny parameters with ``-p lr_steps 1,2``."""
    values = tiny_params("inat_bbn", device="cpu", lr_steps="1,2")
    pairs = [word for key, value in values.items() for word in ("-p", key, str(value))]
    run = tmp_path / "inat"
    out = fgvc({**os.environ, "OMP_NUM_THREADS": "1"}, "run", "inat_bbn", "--run-dir", str(run), *pairs)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/2", "2/2"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params"]["lr_steps"] == [1, 2]
    assert lines[-3].startswith(f"result: val top-1 {metrics['top1_acc']:.3f} (chance {metrics['chance_acc']:.3f})")
    assert lines[-2:] == [f"report: {run / 'inat_bbn.html'}", f"run finished: {run}"]


# ---------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_ends_with_one_line_naming_what_was_kept_and_the_resume_command(tmp_path, chatty):
    _, env = chatty
    run = tmp_path / "stopped"
    command = [sys.executable, "-m", "fgvc_lib.cli", "run", "chatty", "--run-dir", str(run), *TINY,
               "-p", "epochs", "40", "-p", "pause", "0.5"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=tmp_path, preexec_fn=terminal_sigint)
    try:
        deadline = time.time() + 240
        while not (run / "checkpoints" / "last.pt").is_file():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground process group
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-2000:] + err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = err.strip().splitlines()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and 1 <= metrics["epochs_run"] < 40
    assert lines == [f"fgvc run: interrupted after epoch {metrics['epochs_run']}; kept checkpoints/last.pt in "
                     f"stopped; resume with: fgvc run chatty --run-dir stopped -p resume true"]
    assert (run / "chatty.ipynb").is_file() and not list(run.glob(".chatty.attempt-*"))

    resume = shlex.split(lines[0].split("resume with: ")[1])  # the command as printed, run as it is
    resumed = fgvc(env, *resume[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads((run / "metrics.json").read_text())
    assert final["status"] == "finished" and final["epochs_run"] == 40 and final["params"]["pause"] == 0.5


def test_interrupted_summary_without_a_checkpoint_says_there_is_nothing_to_resume(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "interrupted", "epochs_run": 0}))
    stop = RunInterrupted("bird", tmp_path)
    assert stop.resume_command() is None
    assert "before the first checkpoint" in stop.summary() and "\n" not in stop.summary()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    assert stop.resume_command(".venv/bin/fgvc").startswith(".venv/bin/fgvc run bird --run-dir ")
    assert stop.resume_command().endswith(" -p resume true")


# ---------------------------------------------------------------------------------------------- summaries
BIRD = {"notebook": "bird", "status": "finished", "seconds": 140.4, "epochs_run": 12, "eval_split": "test",
        "top1_acc": 0.8613, "top5_acc": 0.9973, "chance_acc": 0.1, "pointing_game": 0.565}
MULTILABEL = {"notebook": "multilabel", "status": "finished", "seconds": 116.9, "epochs_run": 6,
              "eval_split": "val", "micro_f1": 0.7064, "exact_match": 0.6433, "baseline_all_negative_acc": 0.49,
              "threshold_global": 0.3, "micro_f1_global_threshold": 0.7855}


def test_headline_puts_each_notebooks_metric_next_to_its_baseline():
    bird = headline(BIRD)
    assert (bird.result(), bird.baseline_text()) == ("test top-1 0.861", "chance 0.100")
    assert bird.details == ("top-5 0.997", "pointing game 0.565")
    ml = headline(MULTILABEL)
    assert (ml.result(), ml.baseline_text()) == ("val micro-F1 0.706", "all-negative 0.000")
    assert ml.details == ("exact match 0.643 (all-negative 0.490)", "micro-F1 0.785 at the tuned threshold 0.30")
    inat = headline({"status": "finished", "top1_acc": 0.7367, "chance_acc": 1 / 30, "head_acc": 0.87,
                     "medium_acc": 0.77, "tail_acc": 0.57})
    assert inat.result() == "val top-1 0.737" and "head / medium / tail 0.87 / 0.77 / 0.57" in inat.details
    crops = headline({"status": "finished", "top1_acc": 0.717, "crop_top1_acc": 0.85,
                      "uncropped_top1_acc_same_images": 0.685, "crop_iou": 0.5394})
    assert crops.details[-1] == "CAM-crop top-1 0.850 (uncropped 0.685), box IoU 0.54"
    assert headline({"status": "failed", "error": "ValueError: bad"}).result() == "failed: ValueError: bad"
    assert headline({"status": "interrupted", "epochs_run": 3}).result() == "interrupted after epoch 3"
    assert headline({}).result().startswith("no metrics.json")


def _write_run(folder: Path, metrics: dict, when: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / f"{metrics['notebook']}.html").write_text("<html/>")
    os.utime(folder / "metrics.json", (when, when))
    return folder


def test_fgvc_runs_latest_tables_the_newest_run_of_each_notebook_not_grid_folders(tmp_path, monkeypatch):
    from fgvc_lib.cli import main

    monkeypatch.setenv("FGVC_OUTPUTS", str(tmp_path))
    runs = tmp_path / "runs"
    _write_run(runs / "bird" / "20260101-000000-aaaa", {**BIRD, "top1_acc": 0.5}, 1000)
    newest = _write_run(runs / "bird" / "20260102-000000-bbbb", BIRD, 2000)
    ml = _write_run(runs / "multilabel" / "20260101-000000-cccc", MULTILABEL, 1500)
    _write_run(runs / "cifar100_table1" / "loss=ce-1234abcd", {**BIRD, "notebook": "cifar100"}, 3000)  # a grid
    (runs / "bird" / "20260103-empty").mkdir()  # no run files: not a run

    assert notebook_runs("bird") == [runs / "bird" / "20260101-000000-aaaa", newest]
    assert select_runs([], latest=True) == [("bird", newest), ("multilabel", ml)]
    assert run_summary(newest) == ["result: test top-1 0.861 (chance 0.100); top-5 0.997; pointing game 0.565; "
                                   "12 epochs, 140 s", f"report: {newest / 'bird.html'}"]
    table = runs_table([("bird", newest), ("multilabel", ml)]).splitlines()
    assert table[0].split() == ["notebook", "result", "baseline", "seconds", "run", "folder"]
    assert table[1].split() == ["bird", "test", "top-1", "0.861", "chance", "0.100", "140", str(newest)]
    assert table[2].split()[:6] == ["multilabel", "val", "micro-F1", "0.706", "all-negative", "0.000"]

    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        assert main(["runs", "--latest"]) == 0
    assert buffer.getvalue().strip().splitlines() == table
    assert "cifar100_table1" not in buffer.getvalue()


# ---------------------------------------------------------------------------------------------- in a kernel
KERNEL_FIT = """
import torch
from torch import nn

from fgvc_lib.callbacks import LiveLearningCurves
from fgvc_lib.engine import Trainer

g = torch.Generator().manual_seed(0)
batches = [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(3)]
model = nn.Linear(4, 3)
trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), epochs=4,
                  progress=True, callbacks=[LiveLearningCurves("toy")])
history = trainer.fit(batches, batches)
"""


def test_progress_bar_and_live_curve_keep_one_output_each_in_an_executed_notebook(tmp_path):
    """In a kernel (papermill's here, JupyterLab's alike): one progress widget for the whole fit and one
    learning-curve figure redrawn in place after every epoch, next to the epoch lines; not an output per epoch."""
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(KERNEL_FIT)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "fit.ipynb")
    pm.execute_notebook(str(tmp_path / "fit.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        progress_bar=False, cwd=str(tmp_path))
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
    kinds = [o.output_type for o in outputs]
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    text = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert len(widgets) == 1 and len(figures) == 1, kinds
    assert [line.split()[1] for line in text.splitlines() if line.startswith("epoch")] == ["1/4", "2/4", "3/4", "4/4"]
    assert "error" not in kinds


# ---------------------------------------------------------------------------------------------- Python entry point
ENTRY = """
import json, sys
from fgvc_lib.notebooks import run
from fgvc_lib.config import ParameterError

run_dir = run("chatty", {"epochs": 2, "batch_size": 8, "device": "cpu", "num_workers": 0, "lr_steps": "[2, 3]"},
              run_dir=sys.argv[1], quiet=True)
print(json.dumps({"run_dir": str(run_dir)}))
try:
    run("chatty", {"epochs": 0})
except ParameterError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_python_entry_point_runs_a_notebook_writes_html_and_returns_the_run_folder(tmp_path, chatty):
    _, env = chatty
    out = subprocess.run([sys.executable, "-c", ENTRY, "api-run"], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    first, second = (json.loads(line) for line in out.stdout.strip().splitlines())
    run = tmp_path / "api-run"
    assert first == {"run_dir": str(run)}  # quiet: nothing else printed
    assert (run / "chatty.ipynb").is_file() and (run / "chatty.html").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["lr_steps_seen"] == [2, 3]
    assert "epochs" in second["error"]  # checked before any kernel or run folder
