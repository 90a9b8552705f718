"""A trained run on new images: ``Predictor.from_run(run_dir)`` -> top-k classes (or labels above threshold).

Every checkpoint carries a ``meta`` dict (written by the Trainer, filled in by the experiment; see
:func:`meta_from_params`): how to rebuild the network without its data (``model``: the factory call, e.g.
``create_model('tf_efficientnet_lite0', 10)``, a BBN over ``resnet50``, or an ensemble), the class names, the
task (``single`` / ``multilabel``, with the thresholds once the run has searched them), and the preprocessing
of the run's evaluation in the shape of timm's data config (``input_size``, ``interpolation``, ``mean``,
``std``, ``crop_pct``, ``crop_mode``) plus this workbook's decode-once cache (``cache_size``) and batched eval
resize (``tensor_resize``), so new images go through exactly the pixels path the run's evaluation used.
Checkpoints written before ``meta`` existed still work: the meta is rebuilt from the run's parameters.

    predictor = Predictor.from_run("outputs/runs/bird/<run-id>")     # best.pt; checkpoint="last" for last.pt
    table = predictor.predict(["a.jpg", "b.jpg"], topk=5)             # pandas DataFrame, one row per image
    overlays = predictor.cam_overlays(["a.jpg"])                      # CAM of the predicted class, uint8 RGB

``fgvc predict RUN_DIR IMAGE...|FOLDER [--topk 5] [--cam] [--out predictions.csv]`` is :func:`predict_command`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

META_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

ImageInput = str | Path | Image.Image


# ---------------------------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocessing:
    """The run's evaluation pixels path, in the shape of timm's data config.

    ``crop_mode`` ``squash``: stretch the whole image to ``input_size`` (``Resize((h, w))``, every preset's eval
    transform); ``center``: shorter side to ``size / crop_pct``, then a centre crop. ``cache_size`` > 0: the
    decode-once cache stretched each file to a square of that side first (bilinear). ``tensor_resize``: the
    final resize ran on uint8 tensor batches (``batch_augment``), not on PIL images.
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    crop_mode: str = "squash"
    cache_size: int = 0
    tensor_resize: bool = False

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> Preprocessing:
        known = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        for key in ("input_size", "mean", "std"):
            known[key] = tuple(known[key])
        return cls(**known)

    @classmethod
    def from_eval_transform(
        cls, transform: Any, mean: Sequence[float], std: Sequence[float], *, cache_size: int = 0,
        tensor_resize: bool = False,
    ) -> Preprocessing:
        """Read the geometry off an eval transform (``Resize((h, w))``, or ``Resize(r)`` + ``CenterCrop``)."""
        from .crops import EvalGeometry

        geometry = EvalGeometry.from_transform(transform)
        resize = next((s for s in getattr(transform, "transforms", [transform]) if isinstance(s, T.Resize)), None)
        interpolation = resize.interpolation.value if resize is not None else "bilinear"
        if geometry.crop is None:
            h, w = geometry.resize if not isinstance(geometry.resize, int) else (geometry.resize,) * 2
            mode, pct = "squash", 1.0
        else:
            (h, w), mode = geometry.crop, "center"
            pct = min(h, w) / int(geometry.resize)
        return cls((3, int(h), int(w)), tuple(map(float, mean)), tuple(map(float, std)), interpolation, pct,
                   mode, int(cache_size), bool(tensor_resize))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def img_size(self) -> int:
        return self.input_size[1]

    def pil_transform(self) -> T.Compose:
        """Resize (+ crop) + ToTensor + Normalize on one PIL image (the path without ``tensor_resize``)."""
        _, h, w = self.input_size
        mode = T.InterpolationMode(self.interpolation)
        if self.crop_mode == "squash":
            steps: list[Any] = [T.Resize((h, w), interpolation=mode)]
        elif self.crop_mode == "center":
            steps = [T.Resize(int(min(h, w) / self.crop_pct), interpolation=mode), T.CenterCrop((h, w))]
        else:
            raise ValueError(f"preprocessing crop_mode: expected squash or center, got {self.crop_mode!r}")
        return T.Compose([*steps, T.ToTensor(), T.Normalize(list(self.mean), list(self.std))])

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """A normalised float batch (B, 3, H, W) of RGB PIL images."""
        images = [img.convert("RGB") for img in images]
        if self.cache_size:  # the decode-once cache's bilinear stretch (fgvc_lib.data.cache)
            s = self.cache_size
            images = [img if img.size == (s, s) else img.resize((s, s), Image.BILINEAR) for img in images]
        if self.tensor_resize:
            from .data.batch_transforms import build_batch_transform

            if len({img.size for img in images}) > 1:
                raise ValueError("tensor_resize preprocessing needs images of one size (the cache's cache_size)")
            batch = torch.stack([T.functional.pil_to_tensor(img) for img in images])
            return build_batch_transform("none", self.img_size, train=False, mean=self.mean, std=self.std)(batch)
        tf = self.pil_transform()
        return torch.stack([tf(img) for img in images])


# ---------------------------------------------------------------------------------------------- meta
def meta_from_params(
    notebook: str, params: Any, classes: Sequence[str], *, task: str, mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None, eval_transform: Any = None, model: nn.Module | None = None,
    spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint ``meta`` of a run: notebook, task, model spec (the experiment class's ``model_spec``),
    class names, preprocessing (from ``eval_transform``, default the preset's), CAM settings.
    ``mean`` / ``std`` default to the data config of ``model`` (else the rebuilt one), as the experiments take
    them. ``spec`` defaults to the declared notebook's experiment class's ``model_spec``."""
    from .catalog import get_notebook
    from .data.transforms import build_transform
    from .models import data_config

    p = _params_object(notebook, params)
    spec = dict(spec) if spec is not None else get_notebook(notebook).experiment_class().model_spec(p, len(classes))
    if mean is None or std is None:
        cfg = data_config(model if model is not None else build_model(spec))
        mean, std = cfg["mean"], cfg["std"]
    if eval_transform is None:
        eval_transform = build_transform(getattr(p, "augment", "none"), p.img_size, train=False, mean=mean, std=std)
    cached = bool(p.cache or p.batch_augment)
    pre = Preprocessing.from_eval_transform(
        eval_transform, mean, std, cache_size=(p.cache_size or p.img_size) if cached else 0,
        tensor_resize=bool(p.batch_augment),
    )
    return {
        "version": META_VERSION,
        "notebook": notebook,
        "task": task,
        "model": spec,
        "classes": [str(c) for c in classes],
        "num_classes": len(classes),
        "preprocessing": pre.to_dict(),
        "cam": {"method": getattr(p, "cam_method", "layercam"), "layer": getattr(p, "cam_layer", "")},
    }


def _params_object(notebook: str, params: Any) -> Any:
    """A parameters object (a mapping, e.g. an old checkpoint's ``params``, is read by the notebook's class)."""
    from .config import params_class

    return params_class(notebook).from_dict(dict(params)) if isinstance(params, Mapping) else params


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """The network of a ``model`` spec, untrained (its weights come from the checkpoint): ``builder`` ``model``
    (``create_model``), ``bbn`` (``create_bbn``) or ``ensemble`` (``create_ensemble``)."""
    from .models import create_ensemble, create_model
    from .models.bbn import create_bbn

    builder, name, k = spec.get("builder", "model"), spec["name"], int(spec["num_classes"])
    options = dict(spec.get("options") or {})
    if builder == "model":
        return create_model(name, k, pretrained=False, **options)
    if builder == "bbn":
        return create_bbn(name, k, pretrained=False, **options)
    if builder == "ensemble":
        return create_ensemble(spec["kind"], name, spec["name_b"], k, pretrained=False, **options)
    raise ValueError(f"checkpoint meta: unknown model builder {builder!r}, expected model, bbn or ensemble")


def checkpoint_file(run_dir: str | Path, checkpoint: str | Path = "best") -> Path:
    """``best`` / ``last`` -> ``run_dir/checkpoints/<name>.pt``; anything else is a path."""
    from .engine import CheckpointError

    name = str(checkpoint)
    path = Path(run_dir) / "checkpoints" / f"{name}.pt" if name in ("best", "last") else Path(name)
    if not path.is_file():
        found = sorted(p.name for p in (Path(run_dir) / "checkpoints").glob("*.pt"))
        raise CheckpointError(
            f"no checkpoint at {path}; expected a run folder with checkpoints/best.pt or last.pt "
            f"(found: {', '.join(found) or 'none'})"
        )
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    from .engine import CheckpointError

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a Trainer checkpoint (expected a dict with 'model')")
    return state


def run_meta(run_dir: str | Path, state: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint's ``meta``; for a checkpoint written before it existed, rebuilt from the run's parameters
    (checkpoint ``params`` or ``params.yaml``), class names and notebook (``metrics.json`` or the folder name).
    A multi-label run's thresholds come from ``metrics.json`` when the checkpoint has none."""
    import yaml

    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    meta = dict(state.get("meta") or {})
    if not meta:
        params = state.get("params") or yaml.safe_load((run_dir / "params.yaml").read_text())
        notebook = metrics.get("notebook") or run_dir.parent.name
        classes = state.get("classes")
        if not classes:
            raise ValueError(f"{run_dir}: the checkpoint has neither meta nor class names; cannot predict")
        multilabel = any("train_f1" in row for row in state.get("history") or [])
        meta = meta_from_params(notebook, params, classes, task="multilabel" if multilabel else "single")
    if meta.get("task") == "multilabel" and "thresholds" not in meta and "threshold_global" in metrics:
        meta["thresholds"] = {"global": metrics["threshold_global"],
                              "per_label": metrics.get("thresholds_per_label") or {}}
    return meta


# ---------------------------------------------------------------------------------------------- inputs
def collect_images(inputs: Iterable[ImageInput]) -> list[ImageInput]:
    """Image files, folders (their image files, recursively, sorted) and PIL images, in the order given."""
    out: list[ImageInput] = []
    for item in inputs:
        if isinstance(item, Image.Image):
            out.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            out += files
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder")
    return out


def _open(item: ImageInput) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    from .data.datasets import load_rgb

    return load_rgb(Path(item))


def _name(item: ImageInput, i: int) -> str:
    return str(item) if not isinstance(item, Image.Image) else f"<image {i}>"


# ---------------------------------------------------------------------------------------------- predictor
class Predictor:
    """A run's network in eval mode with its class names and preprocessing."""

    def __init__(self, model: nn.Module, meta: Mapping[str, Any], *, device: str | torch.device = "cpu",
                 source: str | Path = ""):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = dict(meta)
        self.classes: list[str] = list(meta["classes"])
        self.task: str = meta.get("task", "single")
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        self.source = str(source)

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str | Path = "best", device: str = "cpu") -> Predictor:
        """Rebuild the run's network from ``checkpoints/<checkpoint>.pt`` (``best``, ``last`` or a path)."""
        from .engine import CheckpointError, resolve_device

        path = checkpoint_file(run_dir, checkpoint)
        state = load_checkpoint(path)
        meta = run_meta(run_dir, state)
        model = build_model(meta["model"])
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not fit the rebuilt model: {str(exc)[:300]}") from None
        return cls(model, meta, device=resolve_device(device), source=path)

    # ------------------------------------------------------------------ inference
    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """The normalised model inputs of ``images`` (files or PIL images), as the run's evaluation made them."""
        return self.preprocessing([_open(item) for item in images])

    @torch.no_grad()
    def logits(self, images: Sequence[ImageInput], batch_size: int = 32) -> torch.Tensor:
        """(N, K) float logits on the CPU."""
        images = collect_images(images)
        out = [self.model(self.preprocess(images[i : i + batch_size]).to(self.device)).float().cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax (single-label) or sigmoid (multi-label) of the logits."""
        return torch.sigmoid(logits) if self.task == "multilabel" else torch.softmax(logits, dim=1)

    def thresholds(self, threshold: str | float | None = None) -> np.ndarray:
        """Per-label thresholds: a number, ``global`` / ``per_label`` (searched by the run on its validation split)
        or None (``global`` when the run searched one, else 0.5)."""
        k = len(self.classes)
        found = self.meta.get("thresholds") or {}
        if threshold is None:
            threshold = "global" if "global" in found else 0.5
        if threshold == "global":
            if "global" not in found:
                raise ValueError("threshold 'global': the run recorded no searched threshold; pass a number")
            return np.full(k, float(found["global"]))
        if threshold == "per_label":
            per = found.get("per_label") or {}
            if not per:
                raise ValueError("threshold 'per_label': the run recorded no per-label thresholds; pass a number")
            return np.array([float(per.get(c, found.get("global", 0.5))) for c in self.classes])
        try:
            return np.full(k, float(threshold))
        except ValueError:
            raise ValueError(f"threshold: expected global, per_label or a number, got {threshold!r}") from None

    def predict(self, images: Iterable[ImageInput] | ImageInput, topk: int = 5, *, batch_size: int = 32,
                threshold: str | float | None = None) -> pd.DataFrame:
        """One row per image. Single-label: ``file``, ``pred_index``, then ``class_i`` / ``prob_i`` for the top
        ``topk`` (i = 1 is the prediction). Multi-label: ``file``, ``labels`` (those at or above their threshold,
        ``;``-separated), ``n_labels`` and ``prob_<label>`` for every label."""
        items = collect_images([images] if isinstance(images, (str, Path, Image.Image)) else images)
        probs = self.probabilities(self.logits(items, batch_size)).numpy()
        names = [_name(item, i) for i, item in enumerate(items)]
        if self.task == "multilabel":
            on = probs >= self.thresholds(threshold)[None, :]
            table = pd.DataFrame({"file": names,
                                  "labels": [";".join(c for c, v in zip(self.classes, row, strict=True) if v)
                                             for row in on],
                                  "n_labels": on.sum(1)})
            probs_df = pd.DataFrame(probs, columns=[f"prob_{c}" for c in self.classes])
            return pd.concat([table, probs_df], axis=1)
        k = max(1, min(int(topk), len(self.classes)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        table: dict[str, Any] = {"file": names, "pred_index": order[:, 0]}
        for i in range(k):
            table[f"class_{i + 1}"] = [self.classes[j] for j in order[:, i]]
            table[f"prob_{i + 1}"] = np.take_along_axis(probs, order[:, i : i + 1], axis=1)[:, 0]
        return pd.DataFrame(table)

    # ------------------------------------------------------------------ CAMs
    def cams(self, images: Sequence[ImageInput], targets: Sequence[int] | None = None, *, method: str | None = None,
             layer: str | None = None, batch_size: int = 16) -> tuple[np.ndarray, torch.Tensor]:
        """(CAMs (N, H, W) in [0, 1], model inputs) for ``targets`` (default: the predicted class; multi-label:
        the most probable label), with the run's ``cam_method`` / ``cam_layer`` unless given."""
        from .cam import compute_cams, resolve_cam_layers

        images = collect_images(images)
        xs = torch.cat([self.preprocess(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
        if targets is None:
            with torch.no_grad():
                targets = [int(j) for i in range(0, len(xs), batch_size)
                           for j in self.model(xs[i : i + batch_size].to(self.device)).argmax(1).tolist()]
        cam = self.meta.get("cam") or {}
        layers = resolve_cam_layers(self.model, cam.get("layer", "") if layer is None else layer)
        method = method or cam.get("method", "layercam")
        maps = [compute_cams(self.model, xs[i : i + batch_size].to(self.device),
                             list(targets[i : i + batch_size]), layer=layers, method=method)
                for i in range(0, len(xs), batch_size)]
        self.model.eval()
        return np.concatenate(maps), xs

    def cam_overlays(self, images: Sequence[ImageInput], targets: Sequence[int] | None = None,
                     **options: Any) -> list[np.ndarray]:
        """uint8 RGB overlays of :meth:`cams` on the model inputs (``img_size`` pixels)."""
        from .cam import overlay
        from .data.transforms import denormalize

        maps, xs = self.cams(images, targets, **options)
        mean, std = self.preprocessing.mean, self.preprocessing.std
        return [overlay(denormalize(x, mean, std), m) for x, m in zip(xs, maps, strict=True)]


# ---------------------------------------------------------------------------------------------- CLI
def predict_command(args: argparse.Namespace) -> int:
    """``fgvc predict``: the CSV, the CAM overlays, and the first rows printed."""
    from .fileio import atomic_write

    predictor = Predictor.from_run(args.run_dir, args.checkpoint, device=args.device)
    images = collect_images(args.images)
    table = predictor.predict(images, args.topk, batch_size=args.batch_size, threshold=args.threshold)
    out = Path(args.out)
    atomic_write(out, lambda fh: table.to_csv(fh, index=False), newline="")
    shown = table.head(20).assign(file=[Path(f).name for f in table["file"].head(20)])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{len(table)} images -> {out}  ({predictor.task}, {len(predictor.classes)} classes, {predictor.source})")
    if args.cam:
        folder = Path(args.cam_dir) if args.cam_dir else out.with_name(f"{out.stem}_cams")
        folder.mkdir(parents=True, exist_ok=True)
        if predictor.task == "multilabel":  # the most probable label
            targets = table[[f"prob_{c}" for c in predictor.classes]].to_numpy().argmax(1).tolist()
        else:
            targets = table["pred_index"].tolist()
        for i in range(0, len(images), args.batch_size):
            chunk = images[i : i + args.batch_size]
            for j, img in enumerate(predictor.cam_overlays(chunk, targets[i : i + args.batch_size])):
                Image.fromarray(img).save(folder / f"{i + j:05d}_{Path(str(chunk[j])).stem}_cam.png")
        print(f"CAM overlays -> {folder}")
    return 0


__all__ = ["Predictor", "Preprocessing", "build_model", "collect_images", "meta_from_params", "run_meta"]
