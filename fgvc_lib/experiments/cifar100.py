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

from .. import plots
from ..calibration import expected_calibration_error, reliability_diagram
from ..config import Cifar100Params
from ..data.cifar import CifarDataset, load_cifar100, write_cifar100
from ..data.transforms import build_transform
from ..engine import create_strategy
from ..losses import create_loss
from ..models import create_model, data_config
from ..optim import create_optimizer, create_scheduler
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

    def batch_augment_options(self) -> dict[str, Any]:
        p = self.params
        return {"noise_std": p.noise_std, "noise_p": p.noise_p} if p.augment == "cifar100" else {}

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
        options = {"noise_std": p.noise_std, "noise_p": p.noise_p} if p.augment == "cifar100" else {}
        train_tf = build_transform(p.augment, p.img_size, train=True, mean=self.mean, std=self.std, **options)
        eval_tf = build_transform(p.augment, p.img_size, train=False, mean=self.mean, std=self.std)
        if p.batch_augment:  # arrays are decoded already: uint8 tensors, augmented per batch on the device
            train_tf = eval_tf = T.PILToTensor()
        self.train_set = CifarDataset(self.train_arrays, train_tf)
        self.test_set = CifarDataset(self.test_arrays, eval_tf)
        self.train_loader = self.make_loader(self.train_set, shuffle=True)
        self.test_loader = self.make_loader(self.test_set, shuffle=False)

        if p.loss == "mc":
            self.loss_fn = create_loss("mc", num_classes=k, mu=p.mc_mu, lam=p.mc_lambda)
            self.strategy = create_strategy("features")
        else:
            kwargs = {"gamma": p.gamma} if p.loss == "focal" else {}
            self.loss_fn = create_loss(p.loss, **kwargs)
            self.strategy = create_strategy("plain")
        self.optimizer = create_optimizer(
            p.optimizer, self.model.parameters(), lr=p.lr, weight_decay=p.weight_decay, momentum=p.momentum
        )
        sched_kwargs = {"factor": p.lr_decay, "period": p.lr_period} if p.scheduler == "exponential" else {}
        self.scheduler = create_scheduler(
            p.scheduler,
            self.optimizer,
            epochs=p.epochs,
            steps_per_epoch=len(self.train_loader),
            **sched_kwargs,
        )
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

    def short_name(self, label: int, width: int = 22) -> str:
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
        history = self.trainer.fit(self.train_loader, self.test_loader)
        self.save_figure(
            "learning_curves", plots.learning_curves(history, title=f"cifar100: {p.model}, {p.loss}")
        )
        self.save_figure(
            "lr",
            plots.schedule_plot(
                self.lr_plan() or [r["lr"] for r in history],
                ylabel="learning rate",
                log=True,
                observed=[r["lr"] for r in history],
                title=f"LR ({p.scheduler}: f={p.lr_decay}, period={p.lr_period})",
            ),
        )
        logits, targets = self.trainer.predict(self.test_loader)
        final = history[-1]
        ece = expected_calibration_error(logits, targets, n_bins=p.ece_bins)
        self.save_figure(
            "reliability",
            reliability_diagram(logits, targets, n_bins=p.ece_bins, title=f"{p.model}, {p.loss}"),
        )
        k = min(5, logits.shape[1])
        top1 = float((logits.argmax(1) == targets).float().mean())
        top5 = float(logits.topk(k, 1).indices.eq(targets[:, None]).any(1).float().mean())
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
