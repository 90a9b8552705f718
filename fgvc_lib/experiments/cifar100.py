"""The cifar100 experiment: EfficientNet / Swin behind an upsampling layer; CE, MC, focal and FLSD-53 losses;
AdamW with exponential decay ``lr0 * f^(epoch/period)``; top-1/top-5, ECE and a reliability diagram.

As in the report, the model is evaluated on the CIFAR-100 test split after every epoch: the history's
``val_*`` columns are test-split figures, and ``top1_acc`` is the last epoch's test accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torchvision import transforms as T

from ..calibration import expected_calibration_error, reliability_diagram
from ..config import Cifar100Params
from ..data.cifar import CifarDataset, load_cifar100
from ..data.synth.cifar import write_cifar100
from ..data.transforms import build_transform
from ..engine import create_strategy
from ..losses import LOSSES
from ..metrics import topk_accuracy
from ..models import create_model, data_config
from ..runs import ensure_embedded_data
from .base import Experiment, ExperimentResult

NOTEBOOK = "cifar100"
EMBEDDED_SEED = 0


def embedded_cifar_root(train_per_class: int, test_per_class: int) -> Path:
    """The embedded synthetic CIFAR-100 files for these sizes, generated on first use (deterministic)."""
    return ensure_embedded_data(
        f"cifar100-synthetic-tr{train_per_class}-te{test_per_class}-seed{EMBEDDED_SEED}",
        lambda root: (root / "cifar-100-python" / "meta").is_file(),
        lambda root: write_cifar100(
            root, train_per_class=train_per_class, test_per_class=test_per_class, seed=EMBEDDED_SEED
        ),
    )


class Cifar100Experiment(Experiment):
    """Builds a cifar100 run from ``Cifar100Params``; ``run()`` trains, evaluates and writes ``metrics.json``."""

    NOTEBOOK = NOTEBOOK
    PARAMS = Cifar100Params
    params: Cifar100Params

    def _build(self) -> None:
        p = self.params
        self.data_root = self.resolve_data_root(
            lambda: embedded_cifar_root(p.synth_train_per_class, p.synth_test_per_class)
        )
        self.train_arrays = load_cifar100(self.data_root, "train", download=p.download)
        self.test_arrays = load_cifar100(self.data_root, "test", download=p.download)
        self.classes = list(self.train_arrays.fine_names)
        k = len(self.classes)

        self.model = create_model(
            p.model,
            k,
            pretrained=p.pretrained,
            weights=p.weights,
            download=p.download,
            upsample_size=p.upsample_size,
        )
        cfg = data_config(self.model)
        self.mean, self.std = cfg["mean"], cfg["std"]
        train_tf = build_transform(
            p.augment, p.img_size, train=True, mean=self.mean, std=self.std, **self.batch_augment_options()
        )
        eval_tf = build_transform(p.augment, p.img_size, train=False, mean=self.mean, std=self.std)
        if p.batch_augment:  # arrays are decoded already: uint8 tensors, augmented per batch on the device
            train_tf = eval_tf = T.PILToTensor()
        self.train_set = CifarDataset(self.train_arrays, train_tf)
        self.test_set = CifarDataset(self.test_arrays, eval_tf)
        self.train_loader = self.make_loader(self.train_set, shuffle=True)
        self.test_loader = self.make_loader(self.test_set, shuffle=False)

        self.loss_fn = LOSSES.create_from(p.loss, [p, {"num_classes": k}])
        # the MC loss also needs the last feature map: its own step
        self.strategy = create_strategy("features" if p.loss == "mc" else "plain")
        self.build_optimization()
        self.trainer = self.make_trainer(self.classes)

    # ------------------------------------------------------------------ views
    def summary(self) -> dict[str, Any]:
        p = self.params
        return {
            "data_root": str(self.data_root),
            "classes": len(self.classes),
            "train / test images": (len(self.train_set), len(self.test_set)),
            "model": p.model,
            "input -> upsampled": f"{p.img_size} px -> {p.upsample_size or p.img_size} px",
            "parameters (M)": round(sum(t.numel() for t in self.model.parameters()) / 1e6, 2),
            "loss": p.loss,
            "optimizer / schedule": f"{p.optimizer} / {p.scheduler}",
            "device": str(self.device),
            "run_dir": str(self.run_dir),
        }

    def short_name(self, label: int, width: int | None = None) -> str:
        """The class name, whole (figures wrap long titles); cut to ``width`` characters only when given."""
        return self.classes[label][:width]

    def figure_augmentations(self, n: int = 12, seed: int = 0) -> Figure:
        """Training images after the augmentation preset."""
        return self.figure_samples(
            self.train_set,
            self.short_name,
            n=n,
            seed=seed,
            title=f"augmentation preset '{self.params.augment}'",
        )

    def lr_plan(self) -> list[float]:
        """The exponential schedule's LR for every epoch, ``lr0 * f^(epoch / period)``."""
        p = self.params
        if p.scheduler != "exponential":
            return []
        return [p.lr * p.lr_decay ** (e / p.lr_period) for e in range(p.epochs)]

    # ------------------------------------------------------------------ running
    def _run(self) -> dict[str, Any]:
        p = self.params
        history = self.fit(
            self.test_loader,
            title=f"cifar100: {p.model}, {p.loss}",
            lr_title=f"LR ({p.scheduler}: f={p.lr_decay}, period={p.lr_period})",
            planned_lr=self.lr_plan(),
            val_label="test",  # as the report, the test split is evaluated after every epoch
        )
        logits, targets = self.trainer.predict(self.test_loader)
        self.interpret("test", self.test_set, logits=logits, targets=targets)
        final = history[-1]
        ece = expected_calibration_error(logits, targets, n_bins=p.ece_bins)
        self.save_figure(
            "reliability",
            reliability_diagram(logits, targets, n_bins=p.ece_bins, title=f"{p.model}, {p.loss}"),
        )
        acc = topk_accuracy(logits, targets, ks=(1, 5))
        top1, top5 = acc[1], acc[5]
        metrics: dict[str, Any] = {
            "epochs_run": len(history),
            "best_epoch": self.trainer.best_epoch,
            "eval_split": "test",
            "top1_acc": top1,
            "top5_acc": top5,
            "top1_error": 1.0 - top1,
            "val_loss": final["val_loss"],
            "ece": ece,
            "best_top1_acc": max(r["val_acc"] for r in history),
            "num_classes": len(self.classes),
            "chance_acc": 1.0 / len(self.classes),
            "train_images": len(self.train_set),
            "test_images": len(self.test_set),
        }
        if p.cam_images > 0:
            picks = np.unique(
                np.linspace(0, len(self.test_set) - 1, num=min(p.cam_images, len(self.test_set)))
            )
            xs = self.model_inputs(torch.stack([self.test_set[int(i)][0] for i in picks]))
            labels = [int(self.test_set[int(i)][1]) for i in picks]
            self.cam_grid(xs, labels, self.short_name, shown=p.cam_images)
        return metrics


def run(params: Cifar100Params | Mapping[str, Any]) -> ExperimentResult:
    """Build and run a cifar100 experiment in one call."""
    return Cifar100Experiment(params).run()
