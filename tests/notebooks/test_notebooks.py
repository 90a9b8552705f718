"""Execute each of the four notebooks through papermill (as ``fgvc run``, ``make demo`` and grids do) on tiny
parameters: one parametrised run per notebook, common checks of its run folder, then the notebook's own checks.
Also: the committed notebooks carry no outputs, and bad parameters fail before (or, through plain papermill,
inside) the kernel."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import papermill as pm
import pytest

from fgvc_lib.cli import main
from fgvc_lib.config import ParameterError
from fgvc_lib.execution import execute_notebook, notebook_path

NOTEBOOKS = ("bird", "cifar100", "inat_bbn", "multilabel")

# On top of conftest's tiny parameters: what each notebook's run exercises.
EXTRA: dict[str, dict[str, Any]] = {
    "bird": dict(loss="ohem", ohem_schedule="cyclical"),
    "cifar100": dict(epochs=1, loss="mc"),
    "inat_bbn": dict(epochs=1),
    "multilabel": dict(epochs=1),
}


def _files(run_dir: Path, *names: str) -> None:
    for name in names:
        assert (run_dir / name).is_file(), name


def _figures(run_dir: Path, *names: str) -> None:
    _files(run_dir, *(f"figures/{name}.png" for name in names))


def _check_bird(run_dir: Path, metrics: dict[str, Any]) -> None:
    _files(run_dir, "checkpoints/best.pt", "splits/train.txt", "splits/val.txt", "splits/test.txt")
    _figures(run_dir, "augmentations", "learning_curves", "lr", "ohem_ratio", "cam_grid")
    for key in ("top1_acc", "top5_acc", "top1_error", "val_loss", "best_epoch", "seconds", "pointing_game"):
        assert key in metrics, key
    assert metrics["top1_error"] == pytest.approx(1 - metrics["top1_acc"])


def _check_cifar100(run_dir: Path, metrics: dict[str, Any]) -> None:
    assert {"top1_acc", "top5_acc", "ece", "val_loss"} <= set(metrics)
    _figures(run_dir, "reliability", "learning_curves", "augmentations")


def _check_inat_bbn(run_dir: Path, metrics: dict[str, Any]) -> None:
    _figures(run_dir, "class_histogram", "bbn_alpha", "cam_crops", "per_class_accuracy")


def _check_multilabel(run_dir: Path, metrics: dict[str, Any]) -> None:
    _figures(run_dir, "learning_curves", "schedule")


CHECKS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "bird": _check_bird,
    "cifar100": _check_cifar100,
    "inat_bbn": _check_inat_bbn,
    "multilabel": _check_multilabel,
}
# Inline figures (image/png outputs) the executed notebook must show at least.
MIN_IMAGES = {"bird": 4, "cifar100": 3, "inat_bbn": 4, "multilabel": 2}


@pytest.fixture(scope="module", params=NOTEBOOKS)
def executed(request, tiny_params, tmp_path_factory) -> tuple[str, dict[str, Any], Path]:
    """(notebook, its parameters, its run folder) after one papermill run on tiny parameters."""
    name = request.param
    values = tiny_params(name, **EXTRA[name], run_dir=str(tmp_path_factory.mktemp(name) / "run"))
    return name, values, execute_notebook(name, values)


def test_notebook_run_leaves_the_documented_outputs(executed):
    name, values, run_dir = executed
    assert run_dir == Path(values["run_dir"])
    _files(run_dir, f"{name}.ipynb", f"{name}.html", "metrics.json", "history.csv", "params.yaml")
    _files(run_dir, "checkpoints/last.pt")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["notebook"] == name
    assert metrics["epochs_run"] == values["epochs"] and metrics["params"]["epochs"] == values["epochs"]
    assert metrics["params"]["run_dir"] == str(run_dir)
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + values["epochs"]  # header + epochs
    CHECKS[name](run_dir, metrics)


def test_executed_notebook_has_outputs_and_injected_parameters(executed):
    name, values, run_dir = executed
    nb = json.loads((run_dir / f"{name}.ipynb").read_text())
    tags = [c["metadata"].get("tags", []) for c in nb["cells"]]
    assert ["parameters"] in tags and ["injected-parameters"] in tags
    injected = "".join(nb["cells"][tags.index(["injected-parameters"])]["source"])
    assert all(f"{key} = " in injected for key in values), injected
    images = sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
    assert images >= MIN_IMAGES[name]
    assert "<html" in (run_dir / f"{name}.html").read_text()[:2000].lower()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_stripped(name):
    nb = json.loads(notebook_path(name).read_text())
    assert all(
        not c.get("outputs") and c.get("execution_count") is None
        for c in nb["cells"]
        if c["cell_type"] == "code"
    )


def test_typo_is_rejected_before_a_kernel_starts(tmp_path):
    with pytest.raises(ParameterError, match="did you mean 'epochs'"):
        execute_notebook("bird", {"epoch": 1, "run_dir": str(tmp_path / "r")})
    assert not (tmp_path / "r").exists()
    assert main(["run", "bird", "-p", "epochs", "ten", "--run-dir", str(tmp_path / "r2")]) == 2


def test_plain_papermill_with_unknown_parameter_fails_in_the_notebook(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter 'epoch'"):
        pm.execute_notebook(
            str(notebook_path("bird")),
            str(tmp_path / "out.ipynb"),
            parameters={"epoch": 1, "run_dir": str(tmp_path / "r")},
            kernel_name="python3",
            progress_bar=False,
        )
