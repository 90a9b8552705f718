"""Faults: a SIGKILL mid-run then resume equals an uninterrupted run; NaN losses stop training cleanly."""

from __future__ import annotations

import csv
import errno
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
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 1") as exc:
        trainer.fit(batches)
    assert not (tmp_path / "checkpoints" / "last.pt").exists()  # nothing good to keep, nothing bad written
    assert "kept" not in str(exc.value) and "no checkpoint was written" in str(exc.value)  # says what is true


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


# ---------------------------------------------------------------------------------------------- full / read-only disks
def _no_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name or ".attempt-" in p.name]


def _raise(code: int, path: str = ""):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), path or None)

    return fail


def test_atomic_write_out_of_space_names_the_file_and_the_free_space(tmp_path):
    from fgvc_lib.fileio import OutputWriteError, atomic_write

    target = tmp_path / "metrics.json"
    target.write_text("old\n")

    def fill(fh):
        fh.write("partial")
        fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputWriteError) as exc:
        atomic_write(target, fill)
    text = str(exc.value)
    assert text.startswith(f"cannot write {target}: No space left on device (") and "free on that file system" in text
    assert target.read_text() == "old\n" and _no_temp_files(tmp_path) == []


def test_atomic_write_on_a_read_only_folder_names_it(tmp_path, monkeypatch):
    from fgvc_lib import fileio

    monkeypatch.setattr(fileio.os, "replace", _raise(errno.EROFS))
    with pytest.raises(fileio.OutputWriteError) as exc:
        fileio.write_text_atomic(tmp_path / "params.yaml", "a: 1\n")
    assert f"cannot write {tmp_path / 'params.yaml'}: Read-only file system" in str(exc.value)
    assert "writable" in str(exc.value) and _no_temp_files(tmp_path) == []


def test_a_figure_that_cannot_be_written_leaves_no_temp_image(tmp_path):
    from fgvc_lib.fileio import OutputWriteError, save_figure_atomic

    class Full:
        def savefig(self, fh, **kwargs):
            fh.write(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputWriteError, match="curves.png: No space left"):
        save_figure_atomic(Full(), tmp_path / "figures" / "curves.png")
    assert list((tmp_path / "figures").iterdir()) == []


def test_out_of_space_during_training_is_one_error_and_failed_in_metrics(tmp_path, monkeypatch):
    from fgvc_lib.fileio import OutputWriteError

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if "last.pt" in str(getattr(f, "name", f)):
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    run = tmp_path / "run"
    exp = BirdExperiment({**TINY, "model": "resnet18", "pretrained": False, "epochs": 2, "run_dir": str(run)})
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OutputWriteError) as exc:
        exp.run()
    assert f"cannot write {run / 'checkpoints' / 'last.pt'}: No space left on device" in str(exc.value)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "No space left on device" in metrics["error"]
    assert _no_temp_files(run) == [] and not (run / "checkpoints" / "last.pt").exists()


def test_read_only_outputs_for_the_embedded_data_name_the_folder(tmp_path, monkeypatch):
    from fgvc_lib.data.synth import cub
    from fgvc_lib.runs import RunDirError

    monkeypatch.setenv("FGVC_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setattr(cub, "write_cub", _raise(errno.EROFS, str(tmp_path / "outputs" / "data")))
    run = tmp_path / "run"
    with pytest.raises(RunDirError) as exc:
        BirdExperiment({**TINY, "synth_per_class": 7, "run_dir": str(run)})
    text = str(exc.value)
    assert text.startswith(f"embedded data folder {tmp_path / 'outputs' / 'data'}") and "Read-only file system" in text
    assert "\n" not in text and json.loads((run / "metrics.json").read_text())["status"] == "failed"


def test_read_only_outputs_with_cache_name_the_cache_folder(tmp_path, monkeypatch):
    from fgvc_lib.data import cache
    from fgvc_lib.runs import RunDirError

    monkeypatch.setenv("FGVC_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setattr(cache, "build_image_cache", _raise(errno.EROFS, str(tmp_path / "outputs" / "cache")))
    with pytest.raises(RunDirError) as exc:
        BirdExperiment({**TINY, "cache": True, "run_dir": str(tmp_path / "run")})
    text = str(exc.value)
    assert text.startswith(f"image cache folder {tmp_path / 'outputs' / 'cache'}") and "Read-only" in text
    assert "cache: false" in text


def test_fgvc_run_out_of_space_names_the_notebook_and_cleans_up(tmp_path, monkeypatch):
    """papermill cannot save the executed notebook: one error naming it and the free space, no half-written
    attempt file, ``failed`` in metrics.json (written while there was room)."""
    import papermill

    from fgvc_lib.execution import execute_notebook
    from fgvc_lib.fileio import OutputWriteError

    def full(source, output, **kwargs):
        Path(output).write_text('{"cells": [')
        raise OSError(errno.ENOSPC, "No space left on device", output)

    monkeypatch.setattr(papermill, "execute_notebook", full)
    run = tmp_path / "run"
    with pytest.raises(OutputWriteError) as exc:
        execute_notebook("bird", {**TINY, "run_dir": str(run)})
    assert f"cannot write {run / 'bird.ipynb'}: No space left on device" in str(exc.value)
    assert "free on that file system" in str(exc.value)
    assert _no_temp_files(run) == [] and not (run / "bird.ipynb").exists()
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"
