"""What every notebook's experiment shares: run folder, failure recording, loaders, figures, CAM grids.

A subclass sets ``NOTEBOOK`` and ``PARAMS``, builds its data/model/trainer in ``_build`` and computes its
metrics in ``_run`` (returning a flat dict); ``run()`` records success or failure in ``metrics.json``.
"""

from __future__ import annotations

import hashlib
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

from .. import distributed as ddp
from .. import plots
from ..callbacks import LiveLearningCurves
from ..cam import check_cam_method, compute_cams, overlay, pointing_game, resolve_cam_layers
from ..config import ExperimentParams, ParameterError, check_device
from ..data.datasets import ImageListDataset
from ..data.transforms import denormalize
from ..data.verify import verify_datasets
from ..engine import Trainer, resolve_device, seed_everything, set_deterministic
from ..fileio import OUTPUT_ERRNOS, OutputWriteError, describe_write_error, save_figure_atomic
from ..param_paths import path_params, resolve_path
from ..resume import check_resume_params
from ..runs import RunDirError, outputs_root, prepare_run_dir, release_run_dir, write_metrics, write_params
from ..tracking import TB_FOLDER, TensorBoardLogger, hparams_of


@dataclass
class ExperimentResult:
    """What a finished run produced (also on disk in ``run_dir``)."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    figures: dict[str, Figure] = field(default_factory=dict)
    interpretation: Any = None  # fgvc_lib.interpretation: where the model fails on the evaluation split

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
        for name in path_params(type(self.params)):  # relative paths: the working folder's (a notebook's)
            if isinstance(getattr(self.params, name, None), str):
                setattr(self.params, name, resolve_path(getattr(self.params, name), Path.cwd()))
        check_device(self.params.device)  # a device this machine lacks: refused before the run folder exists
        self.started = time.time()
        # under torchrun: join the process group; rank 0 makes the run folder and tells the others
        wants_cuda = torch.cuda.is_available() and not str(self.params.device).startswith(("cpu", "mps"))
        self.dist = ddp.init_distributed("cuda" if wants_cuda else "cpu")
        self.run_dir = self._shared_run_dir()
        # a resume that cannot start leaves an earlier run's files exactly as they were
        resume = self.params.resume and (
            any((self.run_dir / name).exists() for name in ("metrics.json", "params.yaml"))
            or any((self.run_dir / "checkpoints").glob("*.pt"))
        )
        self._batch_transforms: tuple[Any, Any] | None = None
        self._loader_datasets: list[Dataset] = []  # every image they read is checked once after _build
        self.figures: dict[str, Figure] = {}
        self.metrics: dict[str, Any] = {}
        # TensorBoard event files in <run_dir>/tensorboard/ (rank 0): epoch scalars, figures, hparams, results
        self.tracking = TensorBoardLogger(self.run_dir / TB_FOLDER, enabled=self.dist.is_main,
                                          hparams=hparams_of(self.params.to_dict(), self.NOTEBOOK))
        try:
            if self.dist.is_main and not resume:
                write_params(self.run_dir, self.params.to_dict())
            if resume and self.dist.is_main:  # the run's own params.yaml: only epochs, device ... may change
                check_resume_params(self.run_dir, self.params)
            if self.params.deterministic:
                set_deterministic(True)
            seed_everything(self.params.seed)
            self.device = resolve_device(self.params.device)
            self._build()
            verify_datasets(self._loader_datasets, log=print if self.dist.is_main else None)
            self.check_cam_options()  # a bad `cam_layer` / `cam_method` fails here, before any training
        except BaseException as exc:
            if not resume:
                self._record_failure(exc)
            self.tracking.finish(status="failed")
            release_run_dir(self.run_dir)
            raise
        if self.dist.is_main and resume:
            write_params(self.run_dir, self.params.to_dict())

    def _shared_run_dir(self) -> Path:
        if not self.dist.enabled:
            return prepare_run_dir(self.NOTEBOOK, self.params.run_dir, resume=self.params.resume)
        folder, error = None, None
        if self.dist.is_main:
            try:
                folder = str(prepare_run_dir(self.NOTEBOOK, self.params.run_dir, resume=self.params.resume))
            except Exception as exc:  # the other ranks must not wait forever for the folder
                error = exc
        folder, message = ddp.broadcast_object((folder, f"{type(error).__name__}: {error}" if error else None))
        if error is not None:
            raise error
        if message is not None:
            raise RuntimeError(f"rank 0 could not prepare the run folder: {message}")
        return Path(folder)

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
            try:
                metrics = self._run()
            except BaseException as exc:
                self._record_failure(exc)
                self.tracking.finish(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
                raise
            self.metrics = metrics
            ddp.barrier()
            if self.dist.is_main:
                self._write_finished(metrics)
                self.tracking.finish({**metrics, "seconds": time.time() - self.started})
        finally:
            self.tracking.close()
            release_run_dir(self.run_dir)  # the run folder's lock (taken by prepare_run_dir)
        history = list(getattr(getattr(self, "trainer", None), "history", []))
        interpretation = getattr(self, "interpretation", None)
        return ExperimentResult(self.run_dir, metrics, history, dict(self.figures), interpretation)

    def _write_finished(self, metrics: dict[str, Any]) -> None:
        write_metrics(
            self.run_dir,
            notebook=self.NOTEBOOK,
            params=self.params.to_dict(),
            status="finished",
            seconds=time.time() - self.started,
            **metrics,
        )

    def _record_failure(self, exc: BaseException) -> None:
        if not getattr(self, "dist", ddp.DistEnv()).is_main:
            return
        history = getattr(getattr(self, "trainer", None), "history", None) or []
        try:
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
        except (OSError, OutputWriteError):  # full disk / read-only: the original error is the one to raise
            pass

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
        workers = p.num_workers
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
        self._loader_datasets.append(dataset)
        if "sampler" not in options and "batch_sampler" not in options:
            options["generator"] = torch.Generator().manual_seed(p.seed)
        else:
            options.pop("shuffle")
        return DataLoader(dataset, **ddp.shard_loader_options(dataset, options))

    # ------------------------------------------------------------------ fast data path
    @property
    def uses_cache(self) -> bool:
        """Image files decoded once into ``outputs/cache/`` (``cache``, or ``batch_augment`` which needs it)."""
        return bool(self.params.cache or self.params.batch_augment)

    def image_dataset(
        self, root: Path, items: Sequence[tuple[str, int]], transform: Callable | None, *, name: str
    ) -> Dataset:
        """``ImageListDataset`` over ``(relpath, label)`` items, or the same items from the decode-once cache
        (uint8 tensors when ``batch_augment``; the per-sample ``transform`` on cached pixels otherwise)."""
        if not self.uses_cache:
            return ImageListDataset(root, items, transform)
        from ..data.cache import CachedImageDataset

        cache = self.image_cache(name, root, [relpath for relpath, _ in items])
        labels = [label for _, label in items]
        return CachedImageDataset(cache, labels, None if self.params.batch_augment else transform)

    def image_cache(self, name: str, root: Path, relpaths: Sequence[str]) -> Any:
        """The decode-once cache of these files at ``cache_size`` (default ``img_size``) pixels."""
        from ..data.cache import build_image_cache

        p = self.params
        tag = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:8]
        try:
            return build_image_cache(
                root,
                list(relpaths),
                p.cache_size or p.img_size,
                name=f"{self.NOTEBOOK}-{name}-{tag}",
                workers=max(1, p.num_workers),
                log=print if self.dist.is_main else None,
            )
        except (OSError, OutputWriteError) as exc:
            if isinstance(exc, OSError) and exc.errno not in OUTPUT_ERRNOS:
                raise
            cause = str(exc) if isinstance(exc, OutputWriteError) else describe_write_error(
                exc.filename or outputs_root() / "cache", exc)
            raise RunDirError(
                f"image cache folder {outputs_root() / 'cache'}: {cause}; or set `cache: false`"
            ) from None

    def batch_augment_options(self) -> dict[str, Any]:
        """Options of the augmentation preset, picked from the parameters by name (e.g. cifar100's noise)."""
        from ..data.transforms import preset_options

        return preset_options(self.params.augment, self.params)

    def batch_transforms(self) -> tuple[Any, Any]:
        """(train, eval) batched tensor transforms when ``batch_augment``, else (None, None)."""
        if not self.params.batch_augment:
            return None, None
        if self._batch_transforms is None:
            from ..data.batch_transforms import build_batch_transform

            p = self.params
            if getattr(self, "device", torch.device("cpu")).type == "cpu" and self.dist.is_main:
                print(
                    "note: batch_augment on the CPU is about as fast as the per-sample presets (benchmarks/); "
                    "cache: true alone is the faster CPU setting, batch_augment pays on a GPU"
                )
            mean, std = self.data_mean_std()
            train = build_batch_transform(
                p.augment, p.img_size, train=True, mean=mean, std=std, **self.batch_augment_options()
            )
            self._batch_transforms = (train, build_batch_transform(p.augment, p.img_size, train=False,
                                                                   mean=mean, std=std))
        return self._batch_transforms

    def model_inputs(self, xs: torch.Tensor) -> torch.Tensor:
        """Images as the model sees them in evaluation (uint8 cache batches are resized and normalised)."""
        if xs.dtype == torch.uint8:
            return self.batch_transforms()[1](xs)
        return xs

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
            progress=p.progress,
            task=task,
            checkpoint_extra={"params": p.to_dict(), "classes": list(classes)},
            checkpoint_meta=self.prediction_meta(classes, task),
            amp=p.amp,
            channels_last=p.channels_last,
            compile=p.compile,
            batch_transform=self.batch_transforms()[0],
            eval_transform=self.batch_transforms()[1],
            ohem_schedule=getattr(self, "ohem_schedule", None),
            callbacks=[LiveLearningCurves(f"{self.NOTEBOOK}: {p.model}")] if p.progress else [],
        )
        trainer.add_callback(self.tracking)
        if p.resume:
            trainer.resume()
        return trainer

    @classmethod
    def model_spec(cls, params: ExperimentParams, num_classes: int) -> dict[str, Any]:
        """How to rebuild this run's network without its data (``fgvc_lib.predict.build_model``): the factory's
        ``create_model(model, num_classes, upsample_size=...)``; BBN, ensembles and the small CNN override."""
        upsample = getattr(params, "upsample_size", 0)
        return {"builder": "model", "name": params.model, "num_classes": int(num_classes),
                "options": {"upsample_size": upsample} if upsample else {}}

    def prediction_meta(self, classes: Sequence[str], task: str) -> dict[str, Any]:
        """The checkpoints' ``meta``: model spec, class names, task, eval preprocessing (``fgvc_lib.predict``)."""
        from ..predict import meta_from_params

        try:
            mean, std = self.data_mean_std()
        except AttributeError:  # an experiment that keeps no mean / std: the model's data config
            mean = std = None
        return meta_from_params(self.NOTEBOOK, self.params, classes, task=task, mean=mean, std=std,
                                model=getattr(self, "model", None),
                                spec=type(self).model_spec(self.params, len(classes)))

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100, **options: Any) -> Any:
        """fastai-style LR range test on the training batches (``fgvc_lib.lr_finder.lr_find``); model, optimiser,
        schedule and RNG are left exactly as they were. Returns an ``LRFinderResult`` (``.suggestions``,
        ``.plot()``)."""
        from ..lr_finder import lr_find

        return lr_find(self.trainer, self.train_loader, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter,
                       **options)

    def build_optimization(self, parameters: Any = None, *, scheduler: str | None = None, **options: Any) -> None:
        """``self.optimizer`` from ``optimizer`` and ``self.scheduler`` from ``scheduler`` (or the name given),
        each factory taking its options from the parameters by name (``fgvc_lib.registry.options_from``);
        ``options`` go to the scheduler and win."""
        from ..optim import OPTIMIZERS, SCHEDULERS

        p = self.params
        params = [t for t in (self.model.parameters() if parameters is None else parameters) if t.requires_grad]
        self.optimizer = OPTIMIZERS.create_from(p.optimizer, p, params)
        name = scheduler or getattr(p, "scheduler", "none")
        self.scheduler = SCHEDULERS.create_from(
            name, p, self.optimizer, steps_per_epoch=len(self.train_loader), **options
        )

    def fit(
        self, val_loader: Any, *, title: str, lr_title: str = "", planned_lr: Sequence[float] = (), **curves: Any
    ) -> list:
        """Train; save the learning curves (``curves``: options of ``plots.learning_curves``) and the LR per
        epoch (the plan, if given, with the LR used)."""
        history = self.trainer.fit(self.train_loader, val_loader)
        self.save_figure("learning_curves", plots.learning_curves(history, title=title, **curves))
        used = [r["lr"] for r in history]
        self.save_figure("lr", plots.schedule_plot(
            list(planned_lr) or used, ylabel="learning rate", log=True, observed=used if planned_lr else None,
            title=lr_title or f"LR ({getattr(self.params, 'scheduler', 'none')})"))
        return history

    def check_cam_options(self) -> None:
        """Validate ``cam_method``, and ``cam_layer`` when one is named (the family default is looked up when a
        CAM is drawn, so a model without one only fails if CAMs are asked for)."""
        p = self.params
        try:
            check_cam_method(getattr(p, "cam_method", "layercam"))
        except ValueError as exc:
            raise ParameterError(str(exc)) from None
        if getattr(p, "cam_layer", ""):
            self.cam_layers()

    def cam_layers(self) -> list[Any]:
        """The CAM target modules of ``self.model``: the ``cam_layer`` parameter's (ParameterError naming it, the
        value and the closest module names) or the model's default; checks ``cam_method`` too."""
        p = self.params
        try:
            check_cam_method(getattr(p, "cam_method", "layercam"))
            model = getattr(self, "model", None)
            if model is None:
                return []
            return resolve_cam_layers(model, getattr(p, "cam_layer", ""))
        except ValueError as exc:
            raise ParameterError(str(exc)) from None

    def batched_cams(self, xs: torch.Tensor, classes: Sequence[int], batch_size: int = 32) -> np.ndarray:
        """CAMs of ``classes[i]`` on ``xs[i]``, in batches of ``batch_size``, with the ``cam_method`` on the
        ``cam_layer`` (default: the model family's stride-16 stage, docs/cam_layers.md)."""
        layers = self.cam_layers()
        method = getattr(self.params, "cam_method", "layercam")
        cams = [compute_cams(self.model, xs[i : i + batch_size], list(classes[i : i + batch_size]),
                             layer=layers, method=method)
                for i in range(0, len(xs), batch_size)]
        return np.concatenate(cams)

    def cam_title(self) -> str:
        """``Grad-CAM`` / ``LayerCAM`` ... as the figures name the method, with the layer when it is not the default."""
        names = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "layercam": "LayerCAM",
                 "xgradcam": "XGrad-CAM", "eigencam": "Eigen-CAM", "eigengradcam": "Eigen-Grad-CAM",
                 "segeigencam": "Seg-Eigen-CAM",
                 "gradcamelementwise": "Grad-CAM (element-wise)"}
        method = getattr(self.params, "cam_method", "layercam")
        layer = getattr(self.params, "cam_layer", "")
        return names.get(method, method) + (f" on {layer}" if layer else "")

    def save_figure(self, name: str, fig: Figure) -> Figure:
        """Keep the figure for the notebook, write ``figures/<name>.png`` and add it to the TensorBoard events."""
        self.figures[name] = fig
        if self.dist.is_main:
            path = save_figure_atomic(fig, self.run_dir / "figures" / f"{name}.png")
            self.tracking.add_figure_file(name, path)  # the same PNG, as a TensorBoard image
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
    ) -> float:
        """Grad-CAM for the true class on ``xs``; saves ``cam_grid``; returns the pointing-game score (NaN
        when no image has a point)."""
        cams = self.batched_cams(xs, labels)
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
                title=f"{self.cam_title()} for the true class{suffix}",
            ),
        )
        return score

    def interpret(
        self, split: str, dataset: Dataset | None = None, *, logits: Any = None, probs: Any = None,
        targets: Any = None, loader: Any = None,
    ) -> Any:
        """Where the model fails (``fgvc_lib.interpretation``), from the evaluation pass the run made (``logits``
        or ``probs`` with ``targets``; else one ``predict`` over ``loader``): saves ``interpretation.npz`` and the
        figures of ``interpret_plots.report_figures`` (top losses from ``dataset``); ``result.interpretation``."""
        from ..interpret_plots import report_figures
        from ..interpretation import Interpretation, MultiLabelInterpretation

        if logits is None and probs is None:
            logits, targets = self.trainer.predict(loader)
        if self.trainer.task == "multilabel":
            cls, names = MultiLabelInterpretation, list(self.labels)
        else:
            short = getattr(self, "short_name", lambda k: self.classes[k])
            cls, names = Interpretation, [short(k) for k in range(len(self.classes))]
        build = cls.from_logits if probs is None else cls.from_probs
        self.interpretation = build(logits if probs is None else probs, targets, names, split=split)
        if self.dist.is_main:
            self.interpretation.save(self.run_dir)
        for name, fig in report_figures(self, self.interpretation, dataset).items():
            self.save_figure(name, fig)
        return self.interpretation

    def data_mean_std(self) -> tuple[Sequence[float], Sequence[float]]:
        return self.mean, self.std

    def figure_samples(
        self, dataset: Dataset, class_name: Callable[[int], str], *, title: str, n: int = 12, seed: int = 0
    ) -> Figure:
        """Training images after augmentation, with class names; saved as ``augmentations``."""
        torch.manual_seed(seed)
        idx = np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int)
        mean, std = self.data_mean_std()
        xs, titles = [], []
        for i in idx:
            x, y = dataset[int(i)]
            xs.append(x)
            titles.append(class_name(y))
        if xs and xs[0].dtype == torch.uint8:  # cached pixels: the batched preset augments them here
            xs = list(self.batch_transforms()[0](torch.stack(xs)))
        images = [denormalize(x, mean, std) for x in xs]
        return self.save_figure("augmentations", plots.image_grid(images, titles, title=title))
