"""Execute notebooks/cifar100.ipynb through papermill on tiny parameters."""

import json

from fgvc_lib.cli import execute_notebook

TINY = {
    "synth_train_per_class": 2,
    "synth_test_per_class": 1,
    "upsample_size": 32,
    "batch_size": 32,
    "epochs": 1,
    "num_workers": 0,
    "cam_images": 2,
    "loss": "mc",
}


def test_cifar100_notebook_runs(tmp_path):
    run_dir = execute_notebook("cifar100", {**TINY, "run_dir": str(tmp_path / "run")})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["notebook"] == "cifar100"
    assert {"top1_acc", "top5_acc", "ece", "val_loss"} <= set(metrics)
    for name in (
        "cifar100.ipynb",
        "cifar100.html",
        "history.csv",
        "checkpoints/last.pt",
        "figures/reliability.png",
        "figures/learning_curves.png",
        "figures/augmentations.png",
    ):
        assert (run_dir / name).is_file(), name
