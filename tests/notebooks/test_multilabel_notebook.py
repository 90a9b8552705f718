"""Execute notebooks/multilabel.ipynb through papermill on tiny parameters."""

import json

from fgvc_lib.cli import execute_notebook

TINY = {
    "synth_images": 120,
    "synth_size": 48,
    "img_size": 32,
    "batch_size": 16,
    "epochs": 1,
    "num_workers": 0,
    "cam_images": 2,
}


def test_multilabel_notebook_runs(tmp_path):
    run_dir = execute_notebook("multilabel", {**TINY, "run_dir": str(tmp_path / "run")})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["notebook"] == "multilabel"
    for name in (
        "multilabel.ipynb",
        "multilabel.html",
        "figures/learning_curves.png",
        "figures/schedule.png",
    ):
        assert (run_dir / name).is_file(), name
