"""fgvc_lib.lr_finder: the exponential sweep, divergence stop, suggestions, exact restore, plot, `fgvc lr-find`."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from fgvc_lib.cli import main
from fgvc_lib.engine import Trainer
from fgvc_lib.lr_finder import lr_find, steep_index, suggest, valley_index


class BNNet(nn.Module):
    """Linear + BatchNorm (running statistics) + Dropout (uses the RNG): what a restore must get exactly right."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(16, num_classes))
        self.num_classes = num_classes

    def forward(self, x):
        return self.net(x)


def _trainer(epochs=1):
    torch.manual_seed(0)
    model = BNNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    return Trainer(model, opt, nn.CrossEntropyLoss(), epochs=epochs, progress=False, log=None)


def _state(trainer):
    return ({k: v.clone() for k, v in trainer.model.state_dict().items()},
            copy.deepcopy(trainer.optimizer.state_dict()), random.getstate(), np.random.get_state()[1].copy(),
            torch.get_rng_state().clone())


def _assert_same_state(a, b):
    (ma, oa, ra, na, ta), (mb, ob, rb, nb, tb) = a, b
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        assert all(torch.equal(oa["state"][i][k], ob["state"][i][k]) for k in oa["state"][i])
    assert ra == rb and np.array_equal(na, nb) and torch.equal(ta, tb)


def test_suggestions_on_a_known_curve():
    lrs = np.logspace(-6, 0, 61)
    x = np.log10(lrs)
    losses = 2.0 - 1.5 / (1 + np.exp(-3 * (x + 3.5)))  # falls fastest at lr = 10^-3.5, flat after
    losses[x > -1.5] += 10 * (x[x > -1.5] + 1.5) ** 2  # then blows up
    assert lrs[steep_index(lrs, losses)] == pytest.approx(10**-3.5, rel=0.3)
    i = valley_index(lrs, losses)
    assert 1e-5 < lrs[i] < 1e-2 and losses[i] < losses[0]
    points = suggest(lrs, losses, ("valley", "steep", "minimum"))
    assert points["minimum"][0] == pytest.approx(lrs[np.argmin(losses[6:-5]) + 6] / 10)
    with pytest.raises(ValueError, match="unknown 'slide'"):
        suggest(lrs, losses, ("slide",))


def test_sweep_is_exponential_and_stops_at_divergence(tiny_batches):
    trainer = _trainer()
    result = lr_find(trainer, tiny_batches(n=4), start_lr=1e-4, end_lr=1e4, num_iter=40)
    assert result.stopped_early and len(result.lrs) < 40  # far past any usable LR: the loss explodes
    ratios = np.diff(np.log(result.lrs))
    assert np.allclose(ratios, np.log(1e8) / 39)  # constant factor per iteration, the loader cycled
    assert result.lrs[0] == pytest.approx(1e-4)
    assert result.losses[-1] > 4 * min(result.losses[:-1]) or not np.isfinite(result.losses[-1])
    full = lr_find(_trainer(), tiny_batches(n=4), start_lr=1e-5, end_lr=1e-2, num_iter=12)
    assert not full.stopped_early and len(full.lrs) == 12 and full.lrs[-1] == pytest.approx(1e-2)
    assert set(full.suggestions) == {"valley", "steep"}
    assert all(1e-5 <= v <= 1e-2 for v in full.suggestions.values())


def test_model_optimizer_and_rng_are_restored_exactly(tiny_batches):
    batches = tiny_batches(n=3)
    with_find, without = _trainer(epochs=2), _trainer(epochs=2)
    for t in (with_find, without):
        t.epochs = 1
        t.fit(batches)  # momentum buffers and BatchNorm statistics exist
        t.epochs = 2
    before = _state(with_find)
    result = lr_find(with_find, batches, num_iter=30)
    assert len(result.lrs) > 3
    _assert_same_state(_state(with_find), before)
    assert with_find.lr == 0.05 and with_find.model.training
    with_find.fit(batches)  # the next epoch is the one it would have been
    without.fit(batches)
    assert with_find.history == [{**r, "seconds": with_find.history[i]["seconds"]}
                                 for i, r in enumerate(without.history)]
    _assert_same_state(_state(with_find), _state(without))


def test_restored_when_the_sweep_fails(tiny_batches):
    trainer = _trainer()
    bad = tiny_batches(n=2) + [(torch.randn(8, 5), torch.zeros(8, dtype=torch.long))]  # wrong feature count
    before = _state(trainer)
    with pytest.raises(RuntimeError):
        lr_find(trainer, bad, num_iter=10)
    _assert_same_state(_state(trainer), before)


def test_plot_has_a_log_axis_and_names_the_suggestions(tiny_batches):
    result = lr_find(_trainer(), tiny_batches(n=4), start_lr=1e-5, end_lr=1.0, num_iter=20)
    ax = result.plot().axes[0]
    assert ax.get_xscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("valley: ") for t in legend) and any(t.startswith("steep: ") for t in legend)
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "1e-3" in labels  # one readable label per decade
    data = result.to_dict()
    assert data["iterations_run"] == len(result.lrs) and data["suggestions"] == result.suggestions


def test_experiment_lr_find_leaves_the_experiment_as_it_was(tmp_path, tiny_params):
    from fgvc_lib.experiments.bird import BirdExperiment

    exp = BirdExperiment(tiny_params("bird", run_dir=str(tmp_path / "r"), epochs=1, cam_images=0))
    before = {k: v.clone() for k, v in exp.model.state_dict().items()}
    result = exp.lr_find(num_iter=8, end_lr=1.0)
    assert len(result.lrs) == 8 and result.suggestions
    after = exp.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert exp.trainer.history == [] and not list((tmp_path / "r" / "checkpoints").iterdir())


def test_fgvc_lr_find_writes_plot_and_suggestions(tmp_path, tiny_params, capsys):
    import yaml

    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump(tiny_params("bird", cam_images=0)))
    out = tmp_path / "lrf"
    assert main(["lr-find", "bird", "-f", str(params), "-p", "lr", "0.02", "--num-iter", "10",
                 "--out", str(out)]) == 0
    data = json.loads((out / "lr_find.json").read_text())
    assert data["notebook"] == "bird" and data["params"]["lr"] == 0.02 and data["iterations_run"] == 10
    assert set(data["suggestions"]) == {"valley", "steep"}
    assert (out / "lr_find.png").stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "suggested lr (valley)" in printed and "suggested lr (steep)" in printed
