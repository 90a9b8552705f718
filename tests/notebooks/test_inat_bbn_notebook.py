"""Execute notebooks/inat_bbn.ipynb through papermill on tiny parameters."""

import json

from fgvc_lib.cli import execute_notebook

TINY = {
    "synth_classes": 6,
    "synth_max_per_class": 12,
    "synth_imbalance": 6.0,
    "synth_val_per_class": 2,
    "synth_size": 48,
    "img_size": 32,
    "batch_size": 8,
    "epochs": 1,
    "num_workers": 0,
    "cam_images": 2,
}


def test_inat_bbn_notebook_runs(tmp_path):
    run_dir = execute_notebook("inat_bbn", {**TINY, "run_dir": str(tmp_path / "run")})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["notebook"] == "inat_bbn"
    for name in (
        "inat_bbn.ipynb",
        "inat_bbn.html",
        "figures/class_histogram.png",
        "figures/bbn_alpha.png",
        "figures/cam_crops.png",
        "figures/per_class_accuracy.png",
    ):
        assert (run_dir / name).is_file(), name
