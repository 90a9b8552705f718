import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fgvc_lib.engine import (
    CheckpointError,
    Trainer,
    TrainingDiverged,
    atomic_torch_save,
    create_strategy,
    resolve_device,
)
from fgvc_lib.losses import create_loss
from fgvc_lib.losses.ohem import create_ohem_schedule
from fgvc_lib.optim import create_optimizer, create_scheduler


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, num_classes))
        self.num_classes = num_classes

    def forward(self, x):
        return self.net(x)


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    y = torch.randint(0, 3, (n,), generator=g)
    x = centers[y] + 0.5 * torch.randn(n, 4, generator=g)
    return TensorDataset(x, y)


def _loaders(seed=0):
    train = DataLoader(
        _data(96, seed), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    val = DataLoader(_data(48, seed + 1), batch_size=16)
    return train, val


def _trainer(run_dir=None, epochs=4, strategy="plain", loss="ce", optimizer="sgd", scheduler="none", ohem=None,
             **kw):
    torch.manual_seed(0)
    model = TinyNet()
    opt = create_optimizer(optimizer, model.parameters(), lr=0.1, momentum=0.9)
    sched = create_scheduler(scheduler, opt, epochs=epochs, steps_per_epoch=6)
    strat = create_strategy(strategy, **kw)
    return Trainer(
        model,
        opt,
        create_loss(loss),
        epochs=epochs,
        scheduler=sched,
        strategy=strat,
        run_dir=run_dir,
        progress=False,
        log=None,
        seed=3,
        ohem_schedule=ohem,
    )


def test_fit_learns_and_writes_history_and_checkpoints(tmp_path):
    trainer = _trainer(tmp_path)
    history = trainer.fit(*_loaders())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert history[-1]["val_acc"] > 0.9 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "seconds"} <= set(history[0])
    csv_lines = (tmp_path / "history.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc")
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=False)
    assert last["epoch"] == 4 and len(last["history"]) == 4
    assert best["best_epoch"] == trainer.best_epoch
    assert best["epoch"] == trainer.best_epoch
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))


def test_evaluate_matches_hand_computation():
    trainer = _trainer()
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    targets = torch.tensor([0, 1])
    loader = [(torch.zeros(2, 4), targets)]
    trainer.model = nn.Identity()
    trainer.predict = lambda _loader: (logits, targets)  # the evaluation arithmetic only
    out = trainer.evaluate(loader)
    ce = (-(torch.log_softmax(logits, 1)[0, 0]) - torch.log_softmax(logits, 1)[1, 1]) / 2
    assert out["top1"] == pytest.approx(0.5)
    assert out["top5"] == pytest.approx(1.0)
    assert out["loss"] == pytest.approx(float(ce), rel=1e-6)
    kept_logits, kept_targets = trainer.last_predictions  # kept for reports: no second pass over the split
    assert kept_logits is logits and kept_targets is targets


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    full = _trainer(tmp_path / "full", epochs=4, scheduler="cosine")
    full.fit(*_loaders())
    part = _trainer(tmp_path / "part", epochs=4, scheduler="cosine")
    part.epochs = 2  # stops after two epochs, as a killed run would
    part.fit(*_loaders())
    resumed = _trainer(tmp_path / "part", epochs=4, scheduler="cosine")
    resumed.resume()
    assert resumed.epoch == 2
    resumed.fit(*_loaders())
    for a, b in zip(full.history, resumed.history, strict=False):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6)
        assert a["lr"] == pytest.approx(b["lr"])


def test_resume_without_checkpoint_and_class_mismatch(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*last.pt"):
        _trainer(tmp_path / "empty").resume()
    trainer = _trainer(tmp_path / "a", epochs=1)
    trainer.fit(*_loaders())
    other = Trainer(
        TinyNet(num_classes=5),
        torch.optim.SGD(TinyNet(5).parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        epochs=1,
        run_dir=tmp_path / "a",
        progress=False,
        log=None,
    )
    with pytest.raises(CheckpointError, match="3 classes, the model has 5"):
        other.resume()


def test_ohem_schedule_callback_follows_schedule(tmp_path):
    schedule = create_ohem_schedule("step", 5)
    trainer = _trainer(epochs=5, loss="ohem", ohem=schedule)
    history = trainer.fit(*_loaders())
    assert [r["ohem_ratio"] for r in history] == [schedule(i) for i in range(5)]
    assert history[0]["ohem_ratio"] == 1.0 and history[-1]["ohem_ratio"] < 1.0
    assert trainer.loss_fn.ratio == pytest.approx(schedule(4))


def test_ohem_schedule_needs_ohem_loss():
    trainer = _trainer(epochs=1, ohem=lambda e: 0.5)
    with pytest.raises(TypeError, match="loss: ohem"):
        trainer.fit(*_loaders())
    assert trainer.history == [] and trainer.epoch == 0  # stopped before the first batch


def test_sam_with_ohem_runs_both_passes_at_the_scheduled_ratio():
    schedule = create_ohem_schedule("cyclical", 4)
    trainer = _trainer(epochs=4, strategy="sam", optimizer="sam", loss="ohem", ohem=schedule)
    seen = []
    original = trainer.loss_fn.forward
    trainer.loss_fn.forward = lambda logits, y: seen.append((trainer.epoch, trainer.loss_fn.ratio)) or original(
        logits, y)
    history = trainer.fit(*_loaders())
    assert len(seen) == 2 * 6 * 4  # two passes per batch, 6 batches, 4 epochs
    for epoch, ratio in seen:
        assert ratio == pytest.approx(max(schedule(epoch), 1e-12))
    assert [r["ohem_ratio"] for r in history] == [schedule(i) for i in range(4)]
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_sam_strategy_two_passes_and_learns():
    trainer = _trainer(epochs=3, strategy="sam", optimizer="sam")
    calls = []
    trainer.model.register_forward_hook(lambda *a: calls.append(1))
    history = trainer.fit(*_loaders())
    train_batches = 6 * 3
    val_batches = 3 * 3
    assert len(calls) == 2 * train_batches + val_batches
    assert history[-1]["val_acc"] > 0.85
    with pytest.raises(TypeError, match="optimizer: sam"):
        _trainer(epochs=1, strategy="sam", optimizer="sgd").fit(*_loaders())


def test_nan_loss_stops_with_epoch_and_keeps_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, epochs=3)
    train, val = _loaders()
    trainer.epochs = 1
    trainer.fit(train, val)
    good = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    trainer.epochs = 3
    bad_x = torch.full((16, 4), math.nan)
    with pytest.raises(TrainingDiverged, match="epoch 2, step 1"):
        trainer.fit([(bad_x, torch.zeros(16, dtype=torch.long))], val)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == good


def test_empty_loader_is_an_error():
    with pytest.raises(ValueError, match="no batches"):
        _trainer(epochs=1).fit([], None)


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "last.pt"
    atomic_torch_save({"a": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"b": Unpicklable()}, path)
    assert torch.load(path, weights_only=False) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError, match="'device'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_unknown_strategy():
    with pytest.raises(ValueError, match="Unknown strategy 'foo'"):
        create_strategy("foo")


def test_multilabel_task_tracks_exact_match_and_micro_f1(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    y = torch.stack([x[:, 0] > 0, x[:, 1] > 0.5, x[:, 2] > 1.0], 1).float()
    train = DataLoader(
        TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    torch.manual_seed(0)
    model = TinyNet(3)
    opt = create_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(
        model,
        opt,
        nn.BCEWithLogitsLoss(),
        epochs=6,
        run_dir=tmp_path,
        progress=False,
        log=None,
        task="multilabel",
    )
    history = trainer.fit(train, DataLoader(TensorDataset(x, y), batch_size=32))
    assert {"train_f1", "val_f1", "val_acc"} <= set(history[0]) and "val_top5" not in history[0]
    assert history[-1]["val_f1"] > 0.8 and history[-1]["val_f1"] > history[0]["val_f1"]
    # evaluation arithmetic on a hand-made case: logits > 0 predict the label
    trainer.predict = lambda _loader: (
        torch.tensor([[1.0, -1.0, 2.0], [-1.0, -1.0, -1.0]]),
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
    )
    out = trainer.evaluate(None)
    assert out["top1"] == pytest.approx(
        0.5
    )  # second image exactly right (no labels), first has a false positive
    assert out["f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 0))  # tp 1, fp 1, fn 0
    with pytest.raises(ValueError, match="task"):
        Trainer(model, opt, nn.BCEWithLogitsLoss(), epochs=1, task="multi")
