"""The Trainer's events and callbacks: order, composition, BBN's official training accuracy, LR milestones,
and display options that never change what is computed."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from fgvc_lib.callbacks import Callback
from fgvc_lib.engine import Trainer
from fgvc_lib.scores import MultiLabelScores, SingleLabelScores
from fgvc_lib.steps import BBNStrategy

EVENTS = ("before_fit", "before_epoch", "before_batch", "after_loss", "before_backward", "after_backward",
          "before_step", "after_step", "after_batch", "after_train_epoch", "before_eval", "after_eval",
          "after_epoch", "after_fit")


class Recorder(Callback):
    """Records the name of every event it receives."""

    def __init__(self):
        self.events = []


for _name in EVENTS:
    setattr(Recorder, _name, lambda self, trainer, *args, _n=_name: self.events.append(_n))


def _batches(n=3, batch=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 5, generator=g), torch.randint(0, classes, (batch,), generator=g)) for _ in range(n)]


def _trainer(**kw):
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), progress=False,
                   log=None, **kw)


def test_events_fire_in_loop_order():
    rec = Recorder()
    _trainer(epochs=1, callbacks=[rec]).fit(_batches(n=2), _batches(n=1))
    step = ["before_batch", "after_loss", "before_backward", "after_backward", "before_step", "after_step",
            "after_batch"]
    assert rec.events == ["before_fit", "before_epoch", *step, *step, "after_train_epoch", "before_eval",
                          "after_eval", "after_epoch", "after_fit"]


def test_plain_function_callbacks_get_each_row():
    rows = []
    _trainer(epochs=2, callbacks=[lambda trainer, row: rows.append((trainer.epoch, row["epoch"]))]).fit(_batches())
    assert rows == [(1, 1), (2, 2)]


def test_single_label_scores_weight_several_label_sets_as_bbn():
    """alpha acc(y_c) + (1 - alpha) acc(y_r), BBN's combiner (lib/core/combiner.py), by hand."""
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]])  # predicts 0, 1, 2, 0
    y_c = torch.tensor([0, 1, 0, 0])  # 3 of 4 right
    y_r = torch.tensor([2, 1, 2, 1])  # 2 of 4 right
    scores = SingleLabelScores()
    scores.reset(torch.device("cpu"))
    scores.update(logits, [(0.7, y_c), (0.3, y_r)])
    result = scores.result(scores.sums(), 4)
    assert result["top1"] == pytest.approx(0.7 * 0.75 + 0.3 * 0.5)
    assert result["parts"] == pytest.approx([0.75, 0.5])


def test_multilabel_scores_by_hand():
    logits = torch.tensor([[1.0, -1.0, 2.0], [-1.0, -1.0, -1.0]])
    truth = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    scores = MultiLabelScores()
    scores.reset(torch.device("cpu"))
    scores.update(logits, [(1.0, truth)])
    result = scores.result(scores.sums(), 2)
    # row 0: tp 1, fp 1; row 1: exact; f1 = 2 / (2 + 1 + 0)
    assert result == pytest.approx({"top1": 0.5, "f1": 2 / 3})


class TwoBranch(nn.Module):
    """The interface the BBN step uses: branch_features(x, 'c'|'r') and mix(f_c, f_r, alpha)."""

    def __init__(self):
        super().__init__()
        self.c, self.r, self.head = nn.Linear(5, 4), nn.Linear(5, 4), nn.Linear(8, 3)
        self.num_classes = 3

    def branch_features(self, x, branch):
        return (self.c if branch == "c" else self.r)(x)

    def mix(self, f_c, f_r, alpha):
        return self.head(2 * torch.cat([alpha * f_c, (1 - alpha) * f_r], 1))

    def forward(self, x):
        return self.mix(self.c(x), self.r(x), 0.5)


def test_bbn_training_accuracy_is_the_official_alpha_weighted_one():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(6, 5, generator=g), torch.randint(0, 3, (6,), generator=g),
                torch.randn(6, 5, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(4)]
    torch.manual_seed(0)
    model = TwoBranch()
    alphas = {1: 1.0, 2: 0.6, 3: 0.2}
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), nn.CrossEntropyLoss(), epochs=3,
                      strategy=BBNStrategy(alpha_fn=alphas.__getitem__), progress=False, log=None)
    history = trainer.fit(batches)
    for row in history:
        a = alphas[row["epoch"]]
        assert row["bbn_alpha"] == a
        assert row["train_acc"] == pytest.approx(a * row["train_acc_uniform"] + (1 - a) * row["train_acc_reversed"])
    assert history[1]["train_acc_uniform"] != history[1]["train_acc_reversed"]  # the two label sets differ


def test_multistep_milestones_take_effect_in_those_epochs():
    from fgvc_lib.optim import create_scheduler

    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = create_scheduler("multistep", opt, epochs=5, steps_per_epoch=3, lr_steps=[2, 4], lr_gamma=0.1)
    history = Trainer(model, opt, nn.CrossEntropyLoss(), epochs=5, scheduler=sched, progress=False,
                      log=None).fit(_batches())
    assert [r["lr"] for r in history] == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01])


def _history(run_dir):
    with open(run_dir / "history.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


TINY_BIRD = dict(synth_classes=3, synth_per_class=12, synth_size=48, img_size=32, batch_size=8, num_workers=0,
                 cam_images=2, model="resnet18", pretrained=False)


def test_progress_never_changes_results(tmp_path):
    """Same parameters and seed, deterministic kernels: progress on and off give the same history.csv."""
    from fgvc_lib.experiments.bird import BirdExperiment

    runs = {}
    for progress in (True, False):
        values = dict(TINY_BIRD, deterministic=True, progress=progress, epochs=2,
                      run_dir=str(tmp_path / f"progress-{progress}"))
        BirdExperiment(values).run()
        runs[progress] = _history(tmp_path / f"progress-{progress}")
    assert len(runs[True]) == 2 and runs[True] == runs[False]


def test_a_headless_kernel_gets_no_progress_bar(monkeypatch):
    """``fgvc run`` / a grid sets FGVC_HEADLESS for its kernel: no bar is saved into the executed notebook."""
    from types import SimpleNamespace

    from fgvc_lib.callbacks import HEADLESS_ENV, ProgressBar

    trainer = SimpleNamespace(epochs=2, steps_per_epoch=3)
    monkeypatch.setenv(HEADLESS_ENV, "1")
    bar = ProgressBar()
    bar.before_epoch(trainer, 0)
    assert bar.bar is None
    monkeypatch.delenv(HEADLESS_ENV)
    bar.before_epoch(trainer, 0)
    assert bar.bar is not None and bar.bar.total == 3
    bar.after_fit(trainer)
