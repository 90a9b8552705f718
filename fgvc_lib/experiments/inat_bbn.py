"""The inat_bbn experiment: long-tailed iNaturalist-2019 with a Bilateral-Branch Network (uniform + reversed
samplers, cumulative alpha), the plain / class-balanced / complement-entropy alternatives, head/medium/tail
accuracy, and CAM-guided localisation crops (box IoU against the recorded object boxes on synthetic data).

The crops follow the report's high-resolution pipeline: the CAM box found on the ``img_size`` input is mapped
back to the original image's pixels (:class:`fgvc_lib.crops.EvalGeometry`, read off the eval transform in use),
cut out of the original file at full resolution and resized to ``img_size`` (``crop_source: original``);
``crop_source: resized`` cuts it out of the ``img_size`` input and upsamples it (the ablation: no new detail).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import plots
from ..cam import box_iou, cam_box, crop_to_boxes, expand_box, overlay
from ..config import InatBBNParams
from ..crops import Box, EvalGeometry, clip_box, crops_from_originals, original_size
from ..data.datasets import ImageRecord, load_rgb
from ..data.inat import class_counts, read_inat
from ..data.samplers import ClassAwareSampler, ReversedPairDataset
from ..data.synth.inat import write_inat
from ..data.transforms import build_transform, denormalize
from ..engine import create_strategy
from ..fileio import write_text_atomic
from ..losses import LOSSES
from ..metrics import group_accuracy, per_class_accuracy, shot_groups, topk_accuracy
from ..models import create_model, data_config
from ..models.bbn import alpha_schedule, create_bbn
from ..optim import OPTIMIZERS
from ..runs import ensure_embedded_data
from .base import Experiment, ExperimentResult

NOTEBOOK = "inat_bbn"
EMBEDDED_SEED = 0


def embedded_inat_root(
    classes: int, max_per_class: int, imbalance: float, val_per_class: int, size: int
) -> Path:
    """The embedded synthetic iNat-2019 tree for these sizes, generated on first use (deterministic)."""
    name = f"inat-synthetic-c{classes}-n{max_per_class}-r{imbalance:g}-v{val_per_class}-s{size}-seed{EMBEDDED_SEED}"
    return ensure_embedded_data(
        name,
        lambda root: (root / "val2019.json").is_file() and (root / "train2019.json").is_file(),
        lambda root: write_inat(
            root,
            classes=classes,
            max_per_class=max_per_class,
            imbalance=imbalance,
            val_per_class=val_per_class,
            size=size,
            seed=EMBEDDED_SEED,
        ),
    )


class InatBBNExperiment(Experiment):
    """Builds an inat_bbn run from ``InatBBNParams``; ``run()`` trains, evaluates and writes ``metrics.json``."""

    NOTEBOOK = NOTEBOOK
    PARAMS = InatBBNParams
    params: InatBBNParams

    @classmethod
    def model_spec(cls, params: InatBBNParams, num_classes: int) -> dict[str, Any]:
        """The network for prediction: ``create_bbn`` for ``method: bbn``, else ``create_model``."""
        spec = super().model_spec(params, num_classes)
        return {**spec, "builder": "bbn"} if params.method == "bbn" else spec

    def _build(self) -> None:
        p = self.params
        self.data_root = self.resolve_data_root(
            lambda: embedded_inat_root(
                p.synth_classes, p.synth_max_per_class, p.synth_imbalance, p.synth_val_per_class, p.synth_size
            )
        )
        self.train_data = read_inat(self.data_root, "train")
        self.val_data = read_inat(self.data_root, "val")
        self.classes = self.train_data.classes
        k = len(self.classes)
        self.train_counts = class_counts(self.train_data)

        if p.method == "bbn":
            self.model = create_bbn(
                p.model, k, pretrained=p.pretrained, weights=p.weights, download=p.download
            )
        else:
            self.model = create_model(
                p.model, k, pretrained=p.pretrained, weights=p.weights, download=p.download
            )
        cfg = data_config(self.model)
        self.mean, self.std = cfg["mean"], cfg["std"]
        train_tf = build_transform(p.augment, p.img_size, train=True, mean=self.mean, std=self.std)
        eval_tf = build_transform(p.augment, p.img_size, train=False, mean=self.mean, std=self.std)
        self.eval_transform = eval_tf
        labels = [r.label for r in self.train_data.records]
        self.train_set = self.image_dataset(self.data_root, self.train_data.items(), train_tf, name="train")
        self.val_set = self.image_dataset(self.data_root, self.val_data.items(), eval_tf, name="val")

        if p.method == "bbn":  # uniform loader for x_c; each item draws its reversed partner x_r
            pairs = ReversedPairDataset(self.train_set, labels, kind="reversed", seed=p.seed)
            self.train_loader = self.make_loader(pairs, shuffle=True)
        elif p.sampler == "uniform":
            self.train_loader = self.make_loader(self.train_set, shuffle=True)
        else:
            sampler = ClassAwareSampler(labels, p.sampler, generator=torch.Generator().manual_seed(p.seed))
            self.train_loader = self.make_loader(
                self.train_set, shuffle=True, sampler=sampler, drop_last=True
            )
        self.val_loader = self.make_loader(self.val_set, shuffle=False)

        self.loss_fn = LOSSES.create("ce")
        # multistep: the LR is multiplied by lr_gamma IN the (1-based) epochs of lr_steps, as BBN's loop
        self.build_optimization(scheduler="multistep")  # no lr_steps: a constant LR
        if p.method == "bbn":
            self.alpha_fn = alpha_schedule(p.alpha, p.epochs, t_max=p.t_max or None)
            self.strategy = create_strategy("bbn", alpha_fn=self.alpha_fn)
        elif p.method == "cot":
            self.strategy = create_strategy(
                "cot",
                complement_loss=LOSSES.create("complement", num_classes=k),
                complement_optimizer=OPTIMIZERS.create_from(p.optimizer, p, self.model.parameters()),
            )
        else:
            self.strategy = create_strategy("plain")
        self.trainer = self.make_trainer(self.classes)

    # ------------------------------------------------------------------ views
    def summary(self) -> dict[str, Any]:
        p = self.params
        return {
            "data_root": str(self.data_root),
            "classes": len(self.classes),
            "train / val images": (len(self.train_set), len(self.val_set)),
            "largest / smallest class": (int(self.train_counts.max()), int(self.train_counts.min())),
            "imbalance ratio": round(float(self.train_counts.max() / max(1, self.train_counts.min())), 1),
            "method": p.method
            + (f" (alpha: {p.alpha})" if p.method == "bbn" else f" (sampler: {p.sampler})"),
            "model": getattr(self.model, "name", p.model),
            "parameters (M)": round(sum(t.numel() for t in self.model.parameters()) / 1e6, 2),
            "device": str(self.device),
            "run_dir": str(self.run_dir),
        }

    def short_name(self, label: int, width: int | None = None) -> str:
        """The class name, whole (figures wrap long titles); cut to ``width`` characters only when given."""
        return self.classes[label][:width]

    def figure_class_histogram(self) -> Figure:
        """Training images per class, sorted, log scale (the report's Figure 4.1)."""
        fig = plots.class_histogram(self.train_counts, title="training images per class (sorted)")
        return self.save_figure("class_histogram", fig)

    def figure_alpha(self) -> Figure | str:
        """BBN's alpha over the epochs (1-indexed, as the official code)."""
        if self.params.method != "bbn":
            return "alpha applies to method: bbn"
        p = self.params
        values = [self.alpha_fn(e) for e in range(1, p.epochs + 1)]
        return self.save_figure(
            "bbn_alpha", plots.schedule_plot(values, ylabel="alpha", title=f"BBN alpha ({p.alpha})")
        )

    def shot_thresholds(self) -> tuple[int, int]:
        """(many, few): user values, else the upper and lower terciles of the training class counts."""
        p = self.params
        many = p.many_shot or int(np.quantile(self.train_counts, 2 / 3))
        few = p.few_shot or int(np.ceil(np.quantile(self.train_counts, 1 / 3)))
        return many, few

    # ------------------------------------------------------------------ running
    def _run(self) -> dict[str, Any]:
        p = self.params
        history = self.fit(
            self.val_loader, title=f"inat_bbn: {p.method}, {p.model}",
            lr_title=f"LR (x{p.lr_gamma} in epochs {', '.join(map(str, p.lr_steps))})" if p.lr_steps else "LR",
        )
        self.figure_alpha()
        logits, targets = self.trainer.predict(self.val_loader)
        self.interpret("val", self.val_set, logits=logits, targets=targets)
        k = len(self.classes)
        acc = topk_accuracy(logits, targets, ks=(1, 5))
        top1, top5 = acc[1], acc[5]
        per_class = per_class_accuracy(logits, targets, k)
        many, few = self.shot_thresholds()
        groups = shot_groups(self.train_counts, many=many, few=few)
        metrics: dict[str, Any] = {
            "epochs_run": len(history),
            "best_epoch": self.trainer.best_epoch,
            "eval_split": "val",
            "top1_acc": top1,
            "top1_error": 1.0 - top1,
            "top5_acc": top5,
            "val_loss": history[-1]["val_loss"],
            **group_accuracy(per_class, groups),
            "many_shot": many,
            "few_shot": few,
            "num_classes": k,
            "chance_acc": 1.0 / k,
            "train_images": len(self.train_set),
            "val_images": len(self.val_set),
        }
        self.save_figure(
            "per_class_accuracy",
            plots.per_class_accuracy(
                per_class,
                self.train_counts,
                many=many,
                few=few,
                title=f"{p.method}: accuracy vs class frequency",
            ),
        )
        if p.cam_crop:
            metrics.update(self._cam_crops())
        return metrics

    def crop_geometry(self) -> EvalGeometry:
        """How the model's ``img_size`` inputs were made from the original files: the per-image eval transform,
        or the batched one when ``batch_augment``, behind the decode-once cache (``cache_size``) when used."""
        p = self.params
        transform = self.batch_transforms()[1] if p.batch_augment else self.eval_transform
        cache_size = (p.cache_size or p.img_size) if self.uses_cache else 0
        return EvalGeometry.from_transform(transform, cache_size=cache_size)

    def _cam_crops(self, max_images: int = 200) -> dict[str, float]:
        """CAM of the predicted class -> box -> crop (of the original file at full resolution, or of the
        resized input: ``crop_source``) -> classify again; IoU with the recorded object boxes in original pixels.
        Writes ``cam_crops.json`` (every image's boxes and predictions)."""
        p = self.params
        picks = np.unique(
            np.linspace(0, len(self.val_set) - 1, num=min(max_images, len(self.val_set))).astype(int)
        )
        records: list[ImageRecord] = [self.val_data.records[int(i)] for i in picks]
        xs = self.model_inputs(torch.stack([self.val_set[int(i)][0] for i in picks]))
        labels = torch.tensor([r.label for r in records])
        preds = self.trainer.predict([(xs, labels)])[0].argmax(1)
        cams = self.batched_cams(xs, preds.tolist())
        s = p.img_size
        boxes = [expand_box(cam_box(c, p.crop_threshold), p.crop_margin, s, s) for c in cams]
        geometry = self.crop_geometry()
        paths = [self.data_root / r.relpath for r in records]
        if p.crop_source == "original":  # cut out of the file at full resolution (whole pixels)
            crops = crops_from_originals(paths, boxes, geometry, size=s, mean=self.mean, std=self.std).images
        else:
            crops = crop_to_boxes(xs, boxes, s)
        # the CAM boxes in original pixels, as the recorded object boxes (the same for both crop sources)
        sizes = [original_size(path) for path in paths]
        original_boxes = [clip_box(geometry.to_original(b, wh), wh) for b, wh in zip(boxes, sizes, strict=True)]
        crop_preds = self.trainer.predict([(crops, labels)])[0].argmax(1)
        ious = [
            box_iou(b, r.bbox) if r.bbox is not None else None
            for b, r in zip(original_boxes, records, strict=True)
        ]
        measured = [v for v in ious if v is not None]
        out = {
            "crop_top1_acc": float((crop_preds == labels).float().mean()),
            "uncropped_top1_acc_same_images": float((preds == labels).float().mean()),
        }
        if measured:
            out["crop_iou"] = float(np.mean(measured))
        if self.dist.is_main:
            self._write_crop_boxes(records, boxes, original_boxes, sizes, ious, preds, crop_preds, geometry)
        self._crop_figure(xs, cams, crops, original_boxes, records, preds, crop_preds)
        return out

    def _write_crop_boxes(
        self, records, boxes, original_boxes, sizes, ious, preds, crop_preds, geometry
    ) -> None:
        """``cam_crops.json``: per image the CAM box in model-input pixels (``input_box``), the same box in original
        pixels (``crop_box``; ``crop_source: original`` cuts the whole pixels nearest to it) and the recorded
        ``object_box`` (x, y, w, h), the original size, their IoU and the predictions without / with the crop."""
        rows = [
            {
                "file": r.relpath,
                "label": r.label,
                "pred": int(pred),
                "crop_pred": int(crop_pred),
                "original_size": list(wh),
                "input_box": [round(v, 4) for v in box],
                "crop_box": [round(v, 4) for v in obox],
                "object_box": list(r.bbox) if r.bbox is not None else None,
                "iou": iou,
            }
            for r, box, obox, wh, iou, pred, crop_pred in zip(
                records, boxes, original_boxes, sizes, ious, preds.tolist(), crop_preds.tolist(), strict=True
            )
        ]
        payload = {
            "crop_source": self.params.crop_source,
            "img_size": self.params.img_size,
            "geometry": repr(geometry),
            "images": rows,
        }
        write_text_atomic(self.run_dir / "cam_crops.json", json.dumps(payload, indent=1) + "\n")

    def _crop_figure(self, xs, cams, crops, original_boxes: list[Box], records, preds, crop_preds) -> None:
        """Original file (CAM crop box yellow, recorded object box green) / CAM on the model input / the crop."""
        from PIL import ImageDraw

        n = min(self.params.cam_images, len(xs))
        if n == 0:
            return
        pick = np.unique(np.linspace(0, len(xs) - 1, num=n).astype(int))
        images, titles = [], []
        source = "original file" if self.params.crop_source == "original" else "resized input"
        for i in pick:
            original = load_rgb(self.data_root / records[i].relpath)
            draw = ImageDraw.Draw(original)
            line = max(1, round(max(original.size) / 150))
            for box, color in ((records[i].bbox, (0, 255, 0)), (original_boxes[i], (255, 255, 0))):
                if box is not None:
                    x, y, w, h = box  # the outline on the box's outermost pixels (PIL includes x1, y1)
                    draw.rectangle((x, y, max(x, x + w - 1), max(y, y + h - 1)), outline=color, width=line)
            img = denormalize(xs[i], self.mean, self.std)
            crop = denormalize(crops[i], self.mean, self.std)
            images += [np.asarray(original), overlay(img, cams[i]), crop]
            truth = self.short_name(records[i].label)
            titles += [
                f"true {truth}\n{original.size[0]}x{original.size[1]} px",
                f"CAM, pred {self.short_name(int(preds[i]))}",
                f"crop, pred {self.short_name(int(crop_preds[i]))}",
            ]
        self.save_figure(
            "cam_crops",
            plots.image_grid(
                images,
                titles,
                cols=3,
                title=f"original (crop box yellow, object green) / {self.cam_title()} of the prediction / crop of "
                f"the {source}",
            ),
        )


def run(params: InatBBNParams | Mapping[str, Any]) -> ExperimentResult:
    """Build and run an inat_bbn experiment in one call."""
    return InatBBNExperiment(params).run()
