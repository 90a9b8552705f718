"""The bird experiment (CUB-200-2011 style): data, split, model, training strategy, CAM, metrics.

Notebook use::

    exp = BirdExperiment(params)     # data + 70/30 split list files + model + trainer
    exp.figure_augmentations()
    result = exp.run()               # train, evaluate the best checkpoint, CAM, metrics.json, figures
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from .. import plots
from ..config import BirdParams, ParameterError
from ..data.datasets import (
    ClassificationData,
    DataError,
    ImageRecord,
    open_classification_data,
)
from ..data.splits import random_split, write_list_file
from ..data.transforms import build_transform
from ..engine import create_strategy
from ..losses import LOSSES
from ..losses.ohem import create_ohem_schedule
from ..models import create_ensemble, create_model, data_config
from ..runs import ensure_embedded_data
from .base import Experiment, ExperimentResult

NOTEBOOK = "bird"
EMBEDDED_SEED = 0


def embedded_bird_root(classes: int, per_class: int, size: int) -> Path:
    """The embedded synthetic CUB tree for these sizes, generated on first use (deterministic)."""
    from ..data.synth.cub import is_complete, write_cub

    return ensure_embedded_data(
        f"cub-synthetic-c{classes}-k{per_class}-s{size}-seed{EMBEDDED_SEED}",
        is_complete,
        lambda root: write_cub(root, classes=classes, per_class=per_class, size=size, seed=EMBEDDED_SEED),
    )


BirdResult = ExperimentResult  # kept as the bird name of the shared result type


class BirdExperiment(Experiment):
    """Builds everything for one bird run from ``BirdParams``; failures are recorded in ``metrics.json``."""

    NOTEBOOK = NOTEBOOK
    PARAMS = BirdParams
    params: BirdParams

    @classmethod
    def model_spec(cls, params: BirdParams, num_classes: int) -> dict[str, Any]:
        """The network for prediction: ``create_model``, or ``create_ensemble`` when ``ensemble`` is set."""
        if params.ensemble == "none":
            return super().model_spec(params, num_classes)
        return {"builder": "ensemble", "kind": params.ensemble, "name": params.model, "name_b": params.model_b,
                "num_classes": int(num_classes), "options": {}}

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        p = self.params
        if p.loss != "ohem" and p.ohem_schedule != "none":
            raise ParameterError(f"parameter 'ohem_schedule': {p.ohem_schedule!r} needs loss: ohem")
        self.data_root = self.resolve_data_root(
            lambda: embedded_bird_root(p.synth_classes, p.synth_per_class, p.synth_size)
        )
        self.data: ClassificationData = open_classification_data(self.data_root)
        self.classes = self.data.classes
        pool, test = self.data.split(True), self.data.split(False)
        if not pool:
            raise DataError(
                f"{self.data.root}: no training images (train_test_split.txt marks none as training)"
            )
        self.train_records, self.val_records = random_split(pool, p.val_fraction, p.seed)
        self.test_records: list[ImageRecord] = test

        k = self.data.num_classes
        if p.ensemble == "none":
            self.model = create_model(
                p.model, k, pretrained=p.pretrained, weights=p.weights, download=p.download
            )
        else:
            self.model = create_ensemble(
                p.ensemble, p.model, p.model_b, k, pretrained=p.pretrained, download=p.download
            )
        cfg = data_config(self.model)
        self.mean, self.std = cfg["mean"], cfg["std"]
        self.train_tf = build_transform(p.augment, p.img_size, train=True, mean=self.mean, std=self.std)
        self.eval_tf = build_transform(p.augment, p.img_size, train=False, mean=self.mean, std=self.std)
        root = self.data.root
        self.train_set = self.image_dataset(root, self.data.items(self.train_records), self.train_tf, name="train")
        self.val_set = self.image_dataset(root, self.data.items(self.val_records), self.eval_tf, name="val")
        self.test_set = self.image_dataset(root, self.data.items(test), self.eval_tf, name="test") if test else None
        self.train_loader = self.make_loader(self.train_set, shuffle=True)
        self.val_loader = self.make_loader(self.val_set, shuffle=False) if self.val_records else None
        self.test_loader = self.make_loader(self.test_set, shuffle=False) if self.test_set else None

        self.loss_fn = LOSSES.create_from(p.loss, p)
        # OHEM's keep ratio is a schedule over epochs (a callback), so it composes with any step (SAM too)
        self.ohem_schedule = (
            create_ohem_schedule(p.ohem_schedule, p.epochs, ratio=p.ohem_ratio) if p.loss == "ohem" else None
        )
        self.build_optimization()
        self.strategy = create_strategy("sam" if p.optimizer == "sam" else "plain")
        self.trainer = self.make_trainer(self.classes)  # resume: checks last.pt before anything is written
        if self.dist.is_main:
            splits = self.run_dir / "splits"
            write_list_file(splits / "train.txt", self.data.items(self.train_records))
            write_list_file(splits / "val.txt", self.data.items(self.val_records))
            if test:
                write_list_file(splits / "test.txt", self.data.items(test))

    # ------------------------------------------------------------------ views
    def summary(self) -> dict[str, Any]:
        """Sizes and settings at a glance."""
        return {
            "data_root": str(self.data.root),
            "format": self.data.format,
            "classes": self.data.num_classes,
            "train / val / test images": (
                len(self.train_records),
                len(self.val_records),
                len(self.test_records),
            ),
            "model": getattr(self.model, "name", self.params.model),
            "parameters (M)": round(sum(t.numel() for t in self.model.parameters()) / 1e6, 2),
            "device": str(self.device),
            "strategy": self.strategy.name,
            "run_dir": str(self.run_dir),
        }

    def figure_augmentations(self, n: int = 12, seed: int = 0) -> Figure:
        """Training images after the augmentation preset, with their class names."""
        return self.figure_samples(
            self.train_set,
            self.short_name,
            n=n,
            seed=seed,
            title=f"augmentation preset '{self.params.augment}'",
        )

    # ------------------------------------------------------------------ running
    def _run(self) -> dict[str, Any]:
        p = self.params
        history = self.fit(self.val_loader, title=f"bird: {self.summary()['model']}")
        if p.loss == "ohem":
            self.save_figure(
                "ohem_ratio",
                plots.schedule_plot(
                    self.ohem_schedule,
                    p.epochs,
                    ylabel="OHEM keep ratio",
                    title=f"OHEM ratio ({p.ohem_schedule})",
                    observed=[r["ohem_ratio"] for r in history],
                    first_epoch=1,
                ),
            )
        self.trainer.load_best()
        best = max(history, key=lambda r: r.get("val_acc", r["train_acc"]))
        metrics: dict[str, Any] = {
            "epochs_run": len(history),
            "best_epoch": self.trainer.best_epoch,
            "num_classes": self.data.num_classes,
            "chance_acc": 1.0 / self.data.num_classes,
            "train_images": len(self.train_records),
            "val_images": len(self.val_records),
            "test_images": len(self.test_records),
        }
        if self.val_loader is not None:
            val = self.trainer.evaluate(self.val_loader)
            metrics.update(val_loss=val["loss"], val_top1_acc=val["top1"], val_top5_acc=val["top5"])
        eval_loader, split = (self.test_loader, "test") if self.test_loader else (self.val_loader, "val")
        final = (
            self.trainer.evaluate(eval_loader)
            if eval_loader is not None
            else {"top1": best["train_acc"], "top5": float("nan")}
        )
        metrics.update(
            eval_split=split, top1_acc=final["top1"], top5_acc=final["top5"], top1_error=1 - final["top1"]
        )
        if eval_loader is not None:  # where it fails: from the logits of the evaluation just made
            logits, targets = self.trainer.last_predictions
            self.interpret(split, self.test_set if split == "test" else self.val_set, logits=logits, targets=targets)
        if p.cam_images > 0 and self.val_records:
            metrics["pointing_game"] = self._cam_report()
        return metrics

    def _cam_report(self, max_images: int = 200) -> float:
        """CAM grid of ``cam_images`` validation images (spread over classes), pointing game over up to 200."""
        p = self.params
        picks = np.unique(
            np.linspace(0, len(self.val_records) - 1, num=min(max_images, len(self.val_records)))
        )
        records = [self.val_records[int(i)] for i in picks]
        xs = self.model_inputs(torch.stack([self.val_set[int(i)][0] for i in picks]))
        return self.cam_grid(
            xs,
            [r.label for r in records],
            self.short_name,
            shown=p.cam_images,
            points=[self._part_point(r) for r in records],
            radius=p.pointing_radius * p.img_size,
            part=p.pointing_part,
        )

    def short_name(self, label: int, width: int | None = None) -> str:
        """A class name without CUB's ``NNN.`` prefix, whole (figures wrap long titles); cut to ``width``
        characters only when a width is given."""
        name = self.classes[label]
        head, _, rest = name.partition(".")
        return (rest if head.isdigit() and rest else name).replace("_Synthbird", "")[:width]

    def _part_point(self, record: ImageRecord) -> tuple[float, float] | None:
        """The pointing part's location in the eval-transformed (resized) image, if annotated."""
        if self.params.pointing_part not in record.parts:
            return None
        with Image.open(self.data.root / record.relpath) as img:
            width, height = img.size
        x, y = record.parts[self.params.pointing_part]
        s = self.params.img_size
        return (x * s / width, y * s / height)


def run(params: BirdParams | Mapping[str, Any]) -> ExperimentResult:
    """Build and run a bird experiment in one call."""
    return BirdExperiment(params).run()
