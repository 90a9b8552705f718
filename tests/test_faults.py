"""Faults: a SIGKILL mid-run then resume equals an uninterrupted run; NaN losses stop training cleanly."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fgvc_lib.engine import Trainer, TrainingDiverged
from fgvc_lib.experiments.bird import BirdExperiment

TINY = dict(
    synth_classes=3, synth_per_class=20, synth_size=48, img_size=32, batch_size=4, epochs=4,
    num_workers=0, cam_images=2, progress=False, device="cpu", deterministic=True,
)


def _cmd(run_dir: Path, **extra) -> list[str]:
    args = [sys.executable, "-m", "fgvc_lib.train", "bird", "-p", "run_dir", str(run_dir)]
    for key, value in {**TINY, **extra}.items():
        args += ["-p", key, str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def _history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FGVC_OUTPUTS": str(tmp_path / "outputs"), "PYTHONUNBUFFERED": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = subprocess.run(_cmd(full), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    # kill -9 right after epoch 2 is logged: the process is then writing best.pt / last.pt or training epoch 3
    proc = subprocess.Popen(_cmd(killed), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 2/4"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "metrics.json").exists()  # it really died mid-run
    state = torch.load(killed / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] in (1, 2)  # a complete checkpoint of the last finished epoch

    resumed = subprocess.run(_cmd(killed, resume=True), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {killed / 'checkpoints' / 'last.pt'} after epoch {state['epoch']}" in resumed.stdout

    a, b = (json.loads((d / "metrics.json").read_text()) for d in (full, killed))
    assert b["status"] == "finished" and b["epochs_run"] == 4
    for key in ("val_loss", "val_top1_acc", "top1_acc", "top5_acc", "best_epoch"):
        assert b[key] == a[key], key  # bitwise: CPU, deterministic mode, per-epoch seeding
    assert _history(killed) == _history(full)


class _NaNAfter(nn.Module):
    """Cross-entropy that returns NaN from call ``bad`` on (1-based), counting calls."""

    def __init__(self, bad: int):
        super().__init__()
        self.bad, self.calls = bad, 0

    def forward(self, logits, target):
        self.calls += 1
        loss = nn.functional.cross_entropy(logits, target)
        return loss * math.nan if self.calls >= self.bad else loss


def _toy(tmp_path, loss_fn, check_every=50):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.randn(80, 12), torch.arange(80) % 3
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 80, 8)]  # 10 steps per epoch
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, epochs=3, run_dir=tmp_path,
                      progress=False, log=None, check_every=check_every)
    return trainer, batches


def test_nan_mid_epoch_names_epoch_and_step_and_stops_early(tmp_path):
    loss_fn = _NaNAfter(bad=10 + 4)  # epoch 2, step 4
    trainer, batches = _toy(tmp_path, loss_fn, check_every=2)
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, step 4; training stopped") as exc:
        trainer.fit(batches)
    assert "last.pt" in str(exc.value)
    assert loss_fn.calls <= 10 + 4 + 2  # stopped within check_every steps, not at the end of the epoch
    assert trainer.epoch == 1 and len(trainer.history) == 1
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_infinite_loss_is_caught_too(tmp_path):
    class Inf(nn.Module):
        def forward(self, logits, target):
            return nn.functional.cross_entropy(logits, target) + math.inf

    trainer, batches = _toy(tmp_path, Inf())
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 1"):
        trainer.fit(batches)
    assert not (tmp_path / "checkpoints" / "last.pt").exists()  # nothing good to keep, nothing bad written


def test_nan_in_an_experiment_marks_the_run_failed_and_keeps_the_checkpoint(tmp_path):
    params = {**TINY, "deterministic": False, "epochs": 3, "run_dir": str(tmp_path / "run")}
    exp = BirdExperiment(params)
    steps = len(exp.train_loader)
    exp.trainer.loss_fn = _NaNAfter(bad=steps + 2)  # epoch 2, step 2
    with pytest.raises(TrainingDiverged):
        exp.run()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["epochs_run"] == 1
    assert "TrainingDiverged" in metrics["error"] and "epoch 2, step 2" in metrics["error"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 1
