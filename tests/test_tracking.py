"""fgvc_lib.tracking: the TensorBoard event files of a run hold history.csv's values, the figures (the same PNG
bytes), the hyper-parameters and the final metrics; logging draws no random number, writes nothing on a DDP
rank other than 0, and a missing tensorboard package only costs the event files."""

from __future__ import annotations

import csv
import json
import math
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fgvc_lib.tracking import TB_FOLDER, TensorBoardLogger, hparams_of, scalar_tag


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_params):
    """A tiny bird run with OHEM (so the history has an ``ohem_ratio`` column)."""
    pytest.importorskip("tensorboard")
    from fgvc_lib.experiments.bird import BirdExperiment

    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    result = BirdExperiment(tiny_params("bird", run_dir=str(run_dir), loss="ohem", ohem_schedule="step")).run()
    return result


def test_event_files_hold_the_history_figures_hparams_and_final_metrics(tracked_run) -> None:
    run_dir = tracked_run.run_dir
    acc = _events(run_dir / TB_FOLDER)
    tags = acc.Tags()
    with open(run_dir / "history.csv", encoding="utf-8") as handle:
        history = list(csv.DictReader(handle))
    assert {"ohem_ratio", "lr", "val_acc"} <= set(history[0])
    # every numeric column of history.csv, one point per epoch, equal to the file's values (float32)
    for column in history[0]:
        if column == "epoch":
            continue
        points = acc.Scalars(scalar_tag(column))
        assert [p.step for p in points] == [int(row["epoch"]) for row in history], column
        for point, row in zip(points, history, strict=True):
            assert math.isclose(point.value, float(row[column]), rel_tol=1e-6, abs_tol=1e-7), column
    assert scalar_tag("train_loss") == "loss/train" and scalar_tag("lr") == "schedule/lr"
    # every figure of the run folder, byte for byte
    pngs = {p.stem: p.read_bytes() for p in (run_dir / "figures").glob("*.png")}
    assert {"learning_curves", "lr", "ohem_ratio", "confusion_matrix"} <= set(pngs)
    assert set(tags["images"]) == {f"figures/{name}" for name in pngs}
    for name, data in pngs.items():
        assert acc.Images(f"figures/{name}")[-1].encoded_image_string == data
    # the hyper-parameters (one hparams session in the run's own folder) and the final metrics
    from tensorboard.plugins.hparams import metadata

    start = acc.Tensors(metadata.SESSION_START_INFO_TAG)[0].tensor_proto
    content = acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
    assert start is not None
    hparams = metadata.parse_session_start_info_plugin_data(content).hparams
    assert hparams["notebook"].string_value == "bird" and hparams["loss"].string_value == "ohem"
    assert hparams["epochs"].number_value == 2 and hparams["pretrained"].bool_value is True
    assert "run_dir" not in hparams
    end = metadata.parse_session_end_info_plugin_data(
        acc.SummaryMetadata(metadata.SESSION_END_INFO_TAG).plugin_data.content)
    assert end.status == 1  # STATUS_SUCCESS
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("top1_acc", "val_top1_acc", "chance_acc", "epochs_run"):
        (point,) = acc.Scalars(f"final/{key}")
        assert point.step == 2 and math.isclose(point.value, metrics[key], rel_tol=1e-6)


class _Rank:
    def __init__(self, is_main: bool):
        self.dist = SimpleNamespace(is_main=is_main)
        self.epoch = 0


def test_logging_draws_no_random_number_and_other_ranks_write_nothing(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    png = tmp_path / "curve.png"
    fig.savefig(png)
    row = {"epoch": 1, "train_loss": 0.5, "bbn_alpha": 0.9, "lr": 0.1, "note": "text is skipped"}
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    logger = TensorBoardLogger(tmp_path / "main" / TB_FOLDER, hparams=hparams_of({"lr_steps": [9, 12], "x": None}))
    logger.before_fit(_Rank(True))
    logger.after_epoch(_Rank(True), row)
    logger.add_figure_file("curve", png)
    logger.finish({"top1_acc": 0.5, "eval_split": "val"})
    assert torch.equal(states[0], torch.get_rng_state())
    assert (states[1] == np.random.get_state()[1]).all() and states[2] == random.getstate()
    acc = _events(tmp_path / "main" / TB_FOLDER)
    assert acc.Scalars("schedule/bbn_alpha")[0].value == pytest.approx(0.9)
    assert "epoch/note" not in acc.Tags()["scalars"] and acc.Scalars("final/top1_acc")[0].step == 1
    # a DDP rank other than 0: no folder, no file
    other = TensorBoardLogger(tmp_path / "rank1" / TB_FOLDER, enabled=False, hparams={"lr": 0.1})
    other.after_epoch(_Rank(False), row)
    other.add_figure_file("curve", png)
    other.finish({"top1_acc": 0.5})
    assert not (tmp_path / "rank1").exists()


def test_hparams_are_what_tensorboard_takes() -> None:
    params = {"lr": 0.1, "pretrained": True, "lr_steps": [120, 160], "weights": None, "run_dir": "/x", "model": "m"}
    assert hparams_of(params, "inat_bbn") == {"notebook": "inat_bbn", "lr": 0.1, "pretrained": True,
                                             "lr_steps": "120,160", "weights": "", "model": "m"}


def test_without_the_tensorboard_package_the_run_only_loses_its_event_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    notes: list[str] = []
    logger = TensorBoardLogger(tmp_path / TB_FOLDER, hparams={"lr": 0.1}, log=notes.append)
    logger.after_epoch(_Rank(True), {"epoch": 1, "train_loss": 0.5})
    logger.after_epoch(_Rank(True), {"epoch": 2, "train_loss": 0.4})
    logger.finish({"top1_acc": 0.5})
    assert len(notes) == 1 and "tensorboard package is not installed" in notes[0]
    assert not (tmp_path / TB_FOLDER).exists()


def test_a_run_without_tracking_computes_exactly_the_same(tracked_run, tiny_params, tmp_path, monkeypatch) -> None:
    from fgvc_lib.experiments import base
    from fgvc_lib.experiments.bird import BirdExperiment

    class Off(TensorBoardLogger):
        def __init__(self, log_dir, **options):
            super().__init__(log_dir, **{**options, "enabled": False})

    monkeypatch.setattr(base, "TensorBoardLogger", Off)
    plain = BirdExperiment(tiny_params("bird", run_dir=str(tmp_path / "run"), loss="ohem", ohem_schedule="step")).run()
    assert not (plain.run_dir / TB_FOLDER).exists()
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in plain.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in tracked_run.history]
    assert {k: v for k, v in plain.metrics.items() if k not in drop} == {
        k: v for k, v in tracked_run.metrics.items() if k not in drop}
