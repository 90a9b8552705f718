"""What every notebook's experiment shares: run folder, failure recording, loaders, figures, CAM grids.

A subclass sets ``NOTEBOOK`` and ``PARAMS``, builds its data/model/trainer in ``_build`` and computes its
metrics in ``_run`` (returning a flat dict); ``run()`` records success or failure in ``metrics.json``.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Dataset

from .. import plots
from ..cam import compute_cams, overlay, pointing_game
from ..config import ExperimentParams, ParameterError
from ..data.transforms import denormalize
from ..engine import Trainer, resolve_device, seed_everything
from ..runs import prepare_run_dir, write_metrics, write_params


@dataclass
class ExperimentResult:
    """What a finished run produced (also on disk in ``run_dir``)."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    figures: dict[str, Figure] = field(default_factory=dict)

    def figure(self, name: str) -> Figure:
        if name not in self.figures:
            raise KeyError(f"no figure '{name}', expected one of ({', '.join(self.figures)})")
        return self.figures[name]


class Experiment:
    """Base class: ``Experiment(params)`` builds, ``run()`` trains/evaluates and writes ``metrics.json``."""

    NOTEBOOK: ClassVar[str] = ""
    PARAMS: ClassVar[type[ExperimentParams]] = ExperimentParams

    def __init__(self, params: ExperimentParams | Mapping[str, Any]):
        self.params = params if isinstance(params, self.PARAMS) else self.PARAMS.from_dict(dict(params))
        self.started = time.time()
        self.run_dir = prepare_run_dir(self.NOTEBOOK, self.params.run_dir, resume=self.params.resume)
        write_params(self.run_dir, self.params.to_dict())
        self.figures: dict[str, Figure] = {}
        self.metrics: dict[str, Any] = {}
        try:
            seed_everything(self.params.seed)
            self.device = resolve_device(self.params.device)
            self._build()
        except BaseException as exc:
            self._record_failure(exc)
            raise

    # ------------------------------------------------------------------ to implement
    def _build(self) -> None:
        raise NotImplementedError

    def _run(self) -> dict[str, Any]:
        raise NotImplementedError

    def resolve_data_root(self, embedded: Callable[[], Path]) -> Path:
        """``data_root`` when given, else the embedded synthetic set (generated on first use)."""
        return Path(self.params.data_root).expanduser() if self.params.data_root else embedded()

    # ------------------------------------------------------------------ running
    def run(self) -> ExperimentResult:
        """Train and evaluate; ``metrics.json`` says finished (with the metrics) or failed (with the error)."""
        try:
            metrics = self._run()
        except BaseException as exc:
            self._record_failure(exc)
            raise
        self.metrics = metrics
        write_metrics(
            self.run_dir,
            notebook=self.NOTEBOOK,
            params=self.params.to_dict(),
            status="finished",
            seconds=time.time() - self.started,
            **metrics,
        )
        history = list(getattr(getattr(self, "trainer", None), "history", []))
        return ExperimentResult(self.run_dir, metrics, history, dict(self.figures))

    def _record_failure(self, exc: BaseException) -> None:
        history = getattr(getattr(self, "trainer", None), "history", None) or []
        write_metrics(
            self.run_dir,
            notebook=self.NOTEBOOK,
            params=self.params.to_dict(),
            status="failed",
            seconds=time.time() - self.started,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=20),
            epochs_run=len(history),
        )

    # ------------------------------------------------------------------ helpers for subclasses
    def make_loader(
        self, dataset: Dataset, *, shuffle: bool, batch_size: int | None = None, **kwargs: Any
    ) -> DataLoader:
        """A DataLoader with the run's batch size, workers and seeded generator; training drops the last
        incomplete batch (no size-1 batch reaches BatchNorm)."""
        p = self.params
        batch_size = batch_size or p.batch_size
        if shuffle and len(dataset) < batch_size:
            raise ParameterError(
                f"parameter 'batch_size': {batch_size} is larger than the training split ({len(dataset)} images); "
                f"training drops the last incomplete batch, so no step would run"
            )
        workers = getattr(p, "num_workers", 0)
        device = getattr(self, "device", torch.device("cpu"))
        options: dict[str, Any] = dict(
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            drop_last=shuffle,
        )
        options.update(kwargs)
        if "sampler" not in options and "batch_sampler" not in options:
            options["generator"] = torch.Generator().manual_seed(p.seed)
        else:
            options.pop("shuffle")
        return DataLoader(dataset, **options)

    def make_trainer(self, classes: Sequence[str], *, task: str = "single") -> Trainer:
        """The Trainer over ``self.model / optimizer / loss_fn / scheduler / strategy`` with the run's settings;
        continues from ``last.pt`` when ``resume`` is set."""
        p = self.params
        trainer = Trainer(
            self.model,
            self.optimizer,
            self.loss_fn,
            epochs=p.epochs,
            scheduler=self.scheduler,
            strategy=self.strategy,
            device=self.device,
            run_dir=self.run_dir,
            seed=p.seed,
            progress=getattr(p, "progress", True),
            task=task,
            checkpoint_extra={"params": p.to_dict(), "classes": list(classes)},
        )
        if p.resume:
            trainer.resume()
        return trainer

    def save_figure(self, name: str, fig: Figure) -> Figure:
        """Keep the figure for the notebook and write ``figures/<name>.png``."""
        self.figures[name] = fig
        plots.save_figure(fig, self.run_dir / "figures" / f"{name}.png")
        return fig

    def cam_grid(
        self,
        xs: torch.Tensor,
        labels: Sequence[int],
        class_name: Callable[[int], str],
        *,
        shown: int,
        points: Sequence[tuple[float, float] | None] | None = None,
        radius: float = 0.0,
        part: str = "",
        reshape_transform: Callable | None = None,
    ) -> float:
        """Grad-CAM for the true class on ``xs``; saves ``cam_grid``; returns the pointing-game score (NaN
        when no image has a point)."""
        model = self.model
        cams = np.concatenate(
            [
                compute_cams(model, xs[i : i + 32], labels[i : i + 32], reshape_transform=reshape_transform)
                for i in range(0, len(xs), 32)
            ]
        )
        preds = self.trainer.predict([(xs, torch.tensor(list(labels)))])[0].argmax(1).tolist()
        score = pointing_game(cams, points, radius) if points is not None else float("nan")
        pick = np.unique(np.linspace(0, len(xs) - 1, num=min(shown, len(xs))).astype(int))
        mean, std = self.data_mean_std()
        images = [overlay(denormalize(xs[i], mean, std), cams[i]) for i in pick]
        titles = [f"true {class_name(labels[i])}\npred {class_name(preds[i])}" for i in pick]
        colors = ["green" if preds[i] == labels[i] else "red" for i in pick]
        suffix = "" if np.isnan(score) else f" - pointing game ({part}): {score:.2f}"
        self.save_figure(
            "cam_grid",
            plots.image_grid(
                images,
                titles,
                colors=colors,
                points=[points[i] for i in pick] if points else None,
                cols=4,
                title=f"Grad-CAM for the true class{suffix}",
            ),
        )
        return score

    def data_mean_std(self) -> tuple[Sequence[float], Sequence[float]]:
        return self.mean, self.std

    def figure_samples(
        self, dataset: Dataset, class_name: Callable[[int], str], *, title: str, n: int = 12, seed: int = 0
    ) -> Figure:
        """Training images after augmentation, with class names; saved as ``augmentations``."""
        torch.manual_seed(seed)
        idx = np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int)
        mean, std = self.data_mean_std()
        images, titles = [], []
        for i in idx:
            x, y = dataset[int(i)]
            images.append(denormalize(x, mean, std))
            titles.append(class_name(y))
        return self.save_figure("augmentations", plots.image_grid(images, titles, title=title))
