"""The multilabel experiment: 14 labels, about half the images without any; iterative-stratified 80/20 split,
sigmoid outputs with BCE or MSE, SGD + one-cycle (LR and momentum cycled per batch) or Adam, a frozen-backbone
option, an untrained sanity check, micro/macro-F1 and exact match against the all-negative baseline, and
threshold search (global and per label) on the validation split, scored honestly: searched on one half of the
validation images and scored on the other, both ways round (``_thresholds``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.utils.data import Subset

from .. import plots
from ..cam import overlay
from ..config import MultilabelParams
from ..data.multilabel import (
    MultiLabelDataset,
    all_negative_share,
    frequency_table,
    iterative_split,
    read_multilabel_csv,
    read_multilabel_folder,
)
from ..data.synth.multilabel import write_multilabel
from ..data.transforms import build_transform, denormalize
from ..engine import create_strategy
from ..losses import LOSSES
from ..models import create_model, data_config
from ..multilabel_metrics import (
    exact_match,
    held_out_report,
    held_out_thresholds,
    macro_f1,
    micro_f1,
    search_threshold_global,
    search_thresholds_per_label,
    split_halves,
)
from ..optim import OPTIMIZERS, SCHEDULERS
from ..runs import ensure_embedded_data
from .base import Experiment, ExperimentResult

NOTEBOOK = "multilabel"
EMBEDDED_SEED = 0


def embedded_multilabel_root(images: int, size: int) -> Path:
    """The embedded synthetic multi-label set (report layout), generated on first use (deterministic)."""
    return ensure_embedded_data(
        f"multilabel-synthetic-n{images}-s{size}-seed{EMBEDDED_SEED}",
        lambda root: (root / "annotations").is_dir() and (root / "images").is_dir(),
        lambda root: write_multilabel(root, images=images, size=size, seed=EMBEDDED_SEED),
    )


class MultilabelExperiment(Experiment):
    """Builds a multilabel run from ``MultilabelParams``; ``run()`` trains, evaluates, searches thresholds."""

    NOTEBOOK = NOTEBOOK
    PARAMS = MultilabelParams
    params: MultilabelParams

    @classmethod
    def model_spec(cls, params: MultilabelParams, num_classes: int) -> dict[str, Any]:
        """The network for prediction; the small CNN's flatten size follows ``img_size``."""
        spec = super().model_spec(params, num_classes)
        if params.model == "small_cnn":
            spec["options"] = {**spec["options"], "img_size": params.img_size}
        return spec

    def _build(self) -> None:
        p = self.params
        self.data_root = self.resolve_data_root(
            lambda: embedded_multilabel_root(p.synth_images, p.synth_size)
        )
        if p.csv:
            self.data = read_multilabel_csv(Path(p.csv).expanduser(), self.data_root / "images")
        else:
            self.data = read_multilabel_folder(self.data_root)
        self.labels = list(self.data.labels)
        self.train_idx, self.val_idx = iterative_split(
            self.data.targets, test_size=p.val_fraction, seed=p.seed
        )

        self.model = create_model(
            p.model,
            len(self.labels),
            pretrained=p.pretrained,
            weights=p.weights,
            download=p.download,
            **({"img_size": p.img_size} if p.model == "small_cnn" else {}),
        )
        if p.freeze_backbone:
            head = set(map(id, self.model.classifier().parameters()))
            for param in self.model.parameters():
                param.requires_grad_(id(param) in head)
        cfg = data_config(self.model)
        self.mean, self.std = cfg["mean"], cfg["std"]
        train_tf = build_transform(p.augment, p.img_size, train=True, mean=self.mean, std=self.std)
        eval_tf = build_transform(p.augment, p.img_size, train=False, mean=self.mean, std=self.std)
        if self.uses_cache:  # decode once; uint8 tensors when batch_augment
            from ..data.cache import CachedImageDataset

            cache = self.image_cache("all", self.data.root, self.data.files)
            targets = self.data.targets.astype(np.float32)
            if p.batch_augment:
                train_tf = eval_tf = None
            self.train_set = CachedImageDataset(
                cache, targets[self.train_idx], train_tf, indices=self.train_idx.tolist()
            )
            self.val_set = CachedImageDataset(cache, targets[self.val_idx], eval_tf, indices=self.val_idx.tolist())
        else:
            self.train_set = Subset(MultiLabelDataset(self.data, train_tf), self.train_idx.tolist())
            self.val_set = Subset(MultiLabelDataset(self.data, eval_tf), self.val_idx.tolist())
        self.train_loader = self.make_loader(self.train_set, shuffle=True)
        self.val_loader = self.make_loader(self.val_set, shuffle=False)

        self.loss_fn = LOSSES.create_from(p.loss, p)
        self.build_optimization()  # one-cycle: per batch, ending at lr_min; trainable parameters only
        self.strategy = create_strategy("plain")
        self.trainer = self.make_trainer(self.labels, task="multilabel")

    # ------------------------------------------------------------------ views
    def summary(self) -> dict[str, Any]:
        p = self.params
        return {
            "data_root": str(self.data_root),
            "images (train / val)": (len(self.train_idx), len(self.val_idx)),
            "labels": len(self.labels),
            "images without any label": round(all_negative_share(self.data.targets), 4),
            "model": p.model + (" (frozen backbone)" if p.freeze_backbone else ""),
            "trainable parameters (M)": round(
                sum(t.numel() for t in self.model.parameters() if t.requires_grad) / 1e6, 3
            ),
            "loss / optimizer / schedule": f"{p.loss} / {p.optimizer} / {p.scheduler}",
            "device": str(self.device),
            "run_dir": str(self.run_dir),
        }

    def split_frequencies(self) -> pd.DataFrame:
        """Relative label frequencies on both sides of the iterative-stratified split (as the report prints)."""
        return frequency_table(self.data, self.train_idx, self.val_idx)

    def figure_augmentations(self, n: int = 12) -> Figure:
        def names(target: torch.Tensor) -> str:
            on = [self.labels[i] for i in torch.nonzero(torch.as_tensor(target)).flatten().tolist()]
            return ", ".join(on) or "(no label)"

        return self.figure_samples(
            self.train_set, names, n=n, title=f"augmentation preset '{self.params.augment}'"
        )

    def schedule_trace(self) -> tuple[list[float], list[float]]:
        """The one-cycle LR and momentum at every batch step, from a throw-away copy of the schedule."""
        p = self.params
        probe = torch.nn.Parameter(torch.zeros(1))
        opt = OPTIMIZERS.create_from(p.optimizer, p, [probe])
        steps = len(self.train_loader)
        sched = SCHEDULERS.create_from("onecycle", p, opt, steps_per_epoch=steps)
        key = "momentum" if p.optimizer == "sgd" else "betas"
        lrs, moms = [], []
        for _ in range(p.epochs * steps):
            group = opt.param_groups[0]
            lrs.append(group["lr"])
            moms.append(group[key] if key == "momentum" else group[key][0])
            opt.step()
            sched.step_batch()
        return lrs, moms

    def figure_schedule(self) -> Figure | str:
        if self.params.scheduler != "onecycle":
            return "no schedule (scheduler: none)"
        lrs, moms = self.schedule_trace()
        fig = Figure(figsize=(10, 3.2))
        ax1, ax2 = fig.subplots(1, 2)
        ax1.plot(lrs)
        ax1.set_yscale("log")
        ax1.set_title("learning rate per batch (one-cycle)")
        ax2.plot(moms, color="tab:orange")
        ax2.set_title("momentum (SGD) / beta1 (Adam) per batch")
        for ax in (ax1, ax2):
            ax.set_xlabel("batch step")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        return self.save_figure("schedule", fig)

    # ------------------------------------------------------------------ running
    def _probabilities(self) -> tuple[np.ndarray, np.ndarray]:
        logits, targets = self.trainer.predict(self.val_loader)
        return torch.sigmoid(logits).numpy(), targets.numpy().astype(np.uint8)

    def _run(self) -> dict[str, Any]:
        p = self.params
        probs0, truth = self._probabilities() if self.trainer.epoch == 0 else (None, None)
        untrained = {}
        if probs0 is not None:  # the report's sanity check: the untrained network on the validation split
            untrained = {
                "untrained_micro_f1": micro_f1(probs0, truth),
                "untrained_exact_match": exact_match(probs0, truth),
            }
        history = self.fit(
            self.val_loader,
            title=f"multilabel: {p.model}, {p.loss}, {p.optimizer}",
            metrics=(("loss", f"loss ({p.loss})"), ("f1", "micro-F1 at 0.5"), ("acc", "exact match at 0.5")),
        )
        self.figure_schedule()
        probs, truth = self._probabilities()
        self.interpret("val", probs=probs, targets=truth)
        thresholds = self._thresholds(probs, truth)
        self.trainer.update_checkpoint_meta(thresholds={  # for fgvc_lib.predict; searched with this epoch's model
            "global": thresholds["threshold_global"], "per_label": thresholds["thresholds_per_label"],
            "epoch": self.trainer.epoch})
        baseline = all_negative_share(truth)
        metrics: dict[str, Any] = {
            "epochs_run": len(history),
            "best_epoch": self.trainer.best_epoch,
            "eval_split": "val",
            "micro_f1": micro_f1(probs, truth),
            "macro_f1": macro_f1(probs, truth),
            "exact_match": exact_match(probs, truth),
            "baseline_all_negative_acc": baseline,
            "val_loss": history[-1]["val_loss"],
            **thresholds,
            "num_labels": len(self.labels),
            "train_images": len(self.train_idx),
            "val_images": len(self.val_idx),
            **untrained,
        }
        if p.cam_images > 0:
            self._label_cams(probs, truth)
        return metrics

    def _thresholds(self, probs: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
        """Threshold search, honestly scored; sets ``threshold_table`` and returns the metrics.

        ``threshold_global`` / ``thresholds_per_label``: searched on the whole validation split (the values to
        use on new data). ``micro_f1_global_threshold``, ``exact_match_global_threshold``,
        ``micro_f1_per_label_thresholds``, ``exact_match_per_label_thresholds``: HELD OUT - the validation
        images are split in two halves (iterative-stratified, seeded by ``seed``), the search runs on one half
        and scores the other, both ways round, and the figure is over all validation images, each scored by
        thresholds that never saw it. ``..._tuned_half``: the mean micro-F1 on the half the search ran on
        (the optimistic figure; the gap to the held-out one is how much the search overfits).
        """
        t_global, _ = search_threshold_global(probs, truth)
        t_labels, _ = search_thresholds_per_label(probs, truth)
        metrics: dict[str, Any] = {
            "threshold_global": float(t_global),
            "thresholds_per_label": {label: float(t) for label, t in zip(self.labels, t_labels, strict=True)},
        }
        if len(truth) < 4:  # too few images to split: no held-out figure
            self.threshold_table = None
            return metrics
        try:  # stratified halves keep rare labels on both sides; a seeded permutation when that fails
            halves = iterative_split(truth, test_size=0.5, seed=self.params.seed)
        except ValueError:
            halves = split_halves(len(truth), self.params.seed)
        held = held_out_thresholds(probs, truth, halves)
        self.threshold_table = held_out_report(probs, truth, held)
        for kind, suffix in (("global", "global_threshold"), ("per_label", "per_label_thresholds")):
            metrics[f"micro_f1_{suffix}"] = held[kind]["micro_f1"]
            metrics[f"exact_match_{suffix}"] = held[kind]["exact_match"]
            metrics[f"micro_f1_{suffix}_tuned_half"] = held[kind]["micro_f1_tuned_half"]
        metrics["threshold_global_halves"] = [float(d["threshold"]) for d in held["global"]["directions"]]
        return metrics

    def _label_cams(self, probs: np.ndarray, truth: np.ndarray) -> None:
        """One CAM (``cam_method``) per positive label for the first ``cam_images`` validation images that have labels."""
        rows = [i for i in range(len(truth)) if truth[i].any()][: self.params.cam_images]
        pairs = [(i, j) for i in rows for j in np.nonzero(truth[i])[0]]
        if not pairs:
            return
        xs = self.model_inputs(torch.stack([self.val_set[i][0] for i, _ in pairs]))
        cams = self.batched_cams(xs, [int(j) for _, j in pairs])
        images = [overlay(denormalize(xs[k], self.mean, self.std), cams[k]) for k in range(len(pairs))]
        titles = [f"{self.labels[j]} (p={probs[i, j]:.2f})" for i, j in pairs]
        self.save_figure(
            "cam_labels", plots.image_grid(images, titles, cols=4, title=f"{self.cam_title()} for each positive label")
        )


def run(params: MultilabelParams | Mapping[str, Any]) -> ExperimentResult:
    """Build and run a multilabel experiment in one call."""
    return MultilabelExperiment(params).run()
