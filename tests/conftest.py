"""Shared test setup: headless matplotlib, outputs of library code kept inside pytest's tmp folders, tiny
parameters per notebook and a tiny Trainer (both as factory fixtures)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

os.environ.setdefault("MPLBACKEND", "Agg")

NOTEBOOKS = ("bird", "cifar100", "inat_bbn", "multilabel")

# Per notebook: the embedded synthetic set and model input sizes that make a run finish in seconds on a CPU.
_TINY_SIZES: dict[str, dict[str, Any]] = {
    "bird": dict(synth_classes=3, synth_per_class=6, synth_size=48, img_size=32, batch_size=4),
    "cifar100": dict(synth_train_per_class=2, synth_test_per_class=1, upsample_size=32, batch_size=32),
    "inat_bbn": dict(
        synth_classes=6, synth_max_per_class=12, synth_imbalance=6.0, synth_val_per_class=2, synth_size=48,
        img_size=32, batch_size=8, lr_steps=[2],
    ),
    "multilabel": dict(synth_images=120, synth_size=48, img_size=32, batch_size=16),
}
# Common to every notebook: two epochs, no DataLoader workers, two CAM images, no progress bars.
_TINY_RUN: dict[str, Any] = dict(epochs=2, num_workers=0, cam_images=2, progress=False)


def tiny(notebook: str, **overrides: Any) -> dict[str, Any]:
    """Parameters of ``notebook`` for a run of seconds on a CPU, with ``overrides`` applied (a new dict)."""
    return {**_TINY_RUN, **_TINY_SIZES[notebook], **overrides}


@pytest.fixture(scope="session")
def tiny_params() -> Callable[..., dict[str, Any]]:
    """``tiny_params(notebook, **overrides)``: the tiny parameters of a notebook (see ``tiny``)."""
    return tiny


class TinyNet(nn.Module):
    """Two linear layers on 4 features: trains in milliseconds."""

    def __init__(self, num_classes: int = 3, features: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, num_classes))
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def random_batches(
    n: int = 3, batch: int = 8, num_classes: int = 3, shape: tuple[int, ...] = (4,), seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` seeded random ``(x, y)`` batches (a list is a loader for the Trainer)."""
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, *shape, generator=g), torch.randint(0, num_classes, (batch,), generator=g))
        for _ in range(n)
    ]


@pytest.fixture(scope="session")
def tiny_batches() -> Callable[..., list[tuple[torch.Tensor, torch.Tensor]]]:
    """``tiny_batches(n=3, batch=8, num_classes=3, shape=(4,), seed=0)``: seeded random batches."""
    return random_batches


@pytest.fixture(scope="session")
def tiny_trainer() -> Callable[..., Any]:
    """``tiny_trainer(model=None, *, num_classes=3, run_dir=None, epochs=1, lr=0.1, **options)``: a Trainer
    of ``model`` (default: a seeded ``TinyNet``) with SGD and ``nn.CrossEntropyLoss``, no progress bar, no
    log; ``options`` go to the Trainer. Fit it on ``tiny_batches()`` (the default shapes match TinyNet)."""
    from fgvc_lib.engine import Trainer

    def make(
        model: nn.Module | None = None,
        *,
        num_classes: int = 3,
        run_dir: str | Path | None = None,
        epochs: int = 1,
        lr: float = 0.1,
        **options: Any,
    ) -> Trainer:
        if model is None:
            torch.manual_seed(0)
            model = TinyNet(num_classes)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        return Trainer(
            model, optimizer, nn.CrossEntropyLoss(), epochs=epochs, run_dir=run_dir, progress=False, log=None,
            **options,
        )

    return make


@pytest.fixture(autouse=True)
def _sigint_handler_restored():
    """A test that runs a grid worker or ``fgvc run`` in this process may leave SIGINT ignored (a pool worker
    ignores it between runs); ignored signals are inherited by subprocesses, so the Ctrl-C tests that follow
    would see their Ctrl-C ignored. Each test gets the handler back as it found it."""
    import signal

    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session", autouse=True)
def _isolated_outputs(tmp_path_factory):
    """Anything a test writes under outputs/ goes to a temp folder, never into the checkout (session-wide, so
    module-scoped fixtures that run notebooks are covered too; a test's own monkeypatch is undone after it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FGVC_OUTPUTS", str(tmp_path_factory.getbasetemp() / "outputs"))
        yield


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread per test: on a shared 2-core machine this is faster and steadier than two."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def plugin_notebook(
    root: Path, module: str, source: str, notebook: str, cells: list[str], values: dict[str, Any]
) -> dict[str, str]:
    """A notebook declared by another package (``FGVC_NOTEBOOKS``), written into ``root``: the module
    ``<module>.py`` (``source``) and ``<notebook>.ipynb`` (a ``parameters`` cell of ``values``, then ``cells``).
    Returns the environment for subprocesses that see it (outputs under ``root/outputs``)."""
    import nbformat

    (root / f"{module}.py").write_text(source)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()),
                                          metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / f"{notebook}.ipynb")
    pythonpath = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath, "FGVC_NOTEBOOKS": module,
            "FGVC_OUTPUTS": str(root / "outputs"), "OMP_NUM_THREADS": "1"}


def terminal_sigint() -> None:
    """``preexec_fn`` of a subprocess that a test Ctrl-C's: SIGINT handled by default, as in a terminal's
    foreground job, even when the suite itself runs in the background (where SIGINT is inherited ignored)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
