"""Execute notebooks/bird.ipynb through papermill (as `make demo` and grids do) on tiny parameters."""

import json

import papermill as pm
import pytest

from fgvc_lib.cli import execute_notebook, main, notebook_path
from fgvc_lib.config import ParameterError

TINY = {
    "synth_classes": 3,
    "synth_per_class": 6,
    "synth_size": 48,
    "img_size": 32,
    "batch_size": 4,
    "epochs": 2,
    "num_workers": 0,
    "cam_images": 2,
    "loss": "ohem",
    "ohem_schedule": "cyclical",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return execute_notebook("bird", {**TINY, "run_dir": str(tmp_path_factory.mktemp("nb") / "run")})


def test_notebook_run_leaves_the_documented_outputs(run_dir):
    for name in (
        "bird.ipynb",
        "bird.html",
        "metrics.json",
        "history.csv",
        "params.yaml",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "splits/train.txt",
        "splits/val.txt",
        "splits/test.txt",
    ):
        assert (run_dir / name).is_file(), name
    figures = {p.name for p in (run_dir / "figures").glob("*.png")}
    assert {"augmentations.png", "learning_curves.png", "lr.png", "ohem_ratio.png", "cam_grid.png"} <= figures
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["notebook"] == "bird"
    assert metrics["epochs_run"] == 2 and metrics["params"]["epochs"] == 2
    assert metrics["params"]["run_dir"] == str(run_dir)
    for key in ("top1_acc", "top5_acc", "top1_error", "val_loss", "best_epoch", "seconds", "pointing_game"):
        assert key in metrics, key
    assert metrics["top1_error"] == pytest.approx(1 - metrics["top1_acc"])
    assert len((run_dir / "history.csv").read_text().splitlines()) == 3


def test_executed_notebook_has_outputs_and_injected_parameters(run_dir):
    nb = json.loads((run_dir / "bird.ipynb").read_text())
    tags = [c["metadata"].get("tags", []) for c in nb["cells"]]
    assert ["parameters"] in tags and ["injected-parameters"] in tags
    images = sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
    assert images >= 4
    assert "<html" in (run_dir / "bird.html").read_text()[:2000].lower()


def test_committed_notebook_is_stripped():
    nb = json.loads(notebook_path("bird").read_text())
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
