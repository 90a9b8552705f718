"""A fifth notebook declared by another package (``FGVC_NOTEBOOKS``): a toy parameters class, experiment and
notebook written into a temp folder, then run through ``fgvc params``, ``fgvc run`` and ``fgvc grid`` as
subprocesses (papermill kernels and grid workers find it through the inherited environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from fgvc_lib.config import ExperimentParams

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
class ToyParams(ExperimentParams):
    NOTEBOOK: ClassVar[str] = "toy"

    features: int = param(6, "input features", min=1)
    classes: int = param(5, "number of classes", min=2)


class ToyExperiment(Experiment):
    NOTEBOOK = "toy"
    PARAMS = ToyParams

    def _build(self):
        p = self.params
        g = torch.Generator().manual_seed(p.seed)
        x = torch.randn(60, p.features, generator=g)
        y = (x @ torch.randn(p.features, p.classes, generator=g)).argmax(1)
        self.train_loader = DataLoader(TensorDataset(x[:40], y[:40]), batch_size=p.batch_size, shuffle=True)
        self.val_loader = DataLoader(TensorDataset(x[40:], y[40:]), batch_size=20)
        self.model = torch.nn.Linear(p.features, p.classes)
        self.trainer = Trainer(
            self.model,
            torch.optim.SGD(self.model.parameters(), lr=p.lr),
            torch.nn.CrossEntropyLoss(),
            epochs=p.epochs,
            device=self.device,
            run_dir=self.run_dir,
            seed=p.seed,
            progress=False,
        )

    def _run(self):
        history = self.trainer.fit(self.train_loader, self.val_loader)
        return {"val_acc": history[-1]["val_acc"], "epochs_run": len(history)}


register_notebook(Notebook(
    name="toy",
    params="toy_nb:ToyParams",
    experiment="toy_nb:ToyExperiment",
    path=str(Path(__file__).with_name("toy.ipynb")),
    description="a toy notebook declared by another package",
))
"""

RUN_CELL = """from toy_nb import ToyExperiment, ToyParams

params = ToyParams.from_namespace(globals())
result = ToyExperiment(params).run()
result.metrics"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The plugin folder (``toy_nb.py`` + ``toy.ipynb``) and the environment that declares it."""
    root = tmp_path_factory.mktemp("toy")
    (root / "toy_nb.py").write_text(TOY_MODULE)
    # the parameters cell lists every field with its default (toy_nb is not imported here: it would
    # declare the notebook in this process too)
    values = {**ExperimentParams().to_dict(), "features": 6, "classes": 5}
    defaults = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Toy notebook"),
        nbformat.v4.new_code_cell(defaults, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(RUN_CELL),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "toy.ipynb")
    pythonpath = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "FGVC_NOTEBOOKS": "toy_nb",
        "FGVC_OUTPUTS": str(root / "outputs"),
    }
    return root, env


def fgvc(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fgvc_lib.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_declared_notebook_is_listed_and_validated(toy):
    root, env = toy
    out = fgvc(env, "params", "toy")
    assert out.returncode == 0, out.stderr
    assert "features" in out.stdout and "classes" in out.stdout
    assert "toy" in fgvc(env, "run", "--help").stdout
    bad = root / "bad.yaml"
    bad.write_text(yaml.safe_dump({"notebook": "toy", "name": "toy_bad", "axes": {"featres": [2, 3]}}))
    out = fgvc(env, "grid", str(bad), "--dry-run")
    assert out.returncode == 2 and "unknown parameter 'featres'" in out.stderr and "'features'" in out.stderr
    assert "unknown notebook 'toy'" in fgvc({**env, "FGVC_NOTEBOOKS": ""}, "params", "toy").stderr


def test_fgvc_run_executes_the_declared_notebook(toy):
    root, env = toy
    out = fgvc(env, "run", "toy", "-p", "epochs", "2", "-p", "batch_size", "8", "-p", "device", "cpu")
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = Path(out.stdout.strip().splitlines()[-1].removeprefix("run finished: "))
    assert run_dir.parent == root / "outputs" / "runs" / "toy"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["notebook"] == "toy"
    assert 0.0 <= metrics["val_acc"] <= 1.0 and metrics["epochs_run"] == 2
    assert metrics["params"]["features"] == 6 and metrics["params"]["epochs"] == 2
    assert (run_dir / "toy.ipynb").is_file() and (run_dir / "toy.html").is_file()


def test_fgvc_grid_runs_the_declared_notebook(toy):
    root, env = toy
    grid = root / "toy_grid.yaml"
    spec = {
        "notebook": "toy",
        "name": "toy_grid",
        "base": {"epochs": 1, "batch_size": 8, "device": "cpu"},
        "axes": {"features": [3, 4]},
    }
    grid.write_text(yaml.safe_dump(spec))
    out = fgvc(env, "grid", str(grid), "--gpus", "none", "--no-progress")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 runs: 2 finished" in out.stdout
    grid_dir = root / "outputs" / "runs" / "toy_grid"
    md = (grid_dir / "summary.md").read_text()
    assert "2 runs: 2 finished" in md
    run_ids = yaml.safe_load((grid_dir / "grid.yaml").read_text())["runs"]
    assert len(run_ids) == 2 and all(rid in md for rid in run_ids)
    for rid in run_ids:
        metrics = json.loads((grid_dir / rid / "metrics.json").read_text())
        assert metrics["status"] == "finished" and "val_acc" in metrics
        assert metrics["params"]["features"] in (3, 4)
