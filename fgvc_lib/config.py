"""Typed experiment parameters: defaults, coercion of papermill/YAML values, clear errors.

Every notebook has one dataclass here (``BirdParams`` ...). Its defaults are the embedded CPU default and
must equal the notebook's ``parameters`` cell (a test checks this through ``papermill.inspect_notebook``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from .registry import did_you_mean


class ParameterError(ValueError):
    """A parameter is unknown, of the wrong type or out of range; the message names it."""


def param(default: Any, help: str, *, min: float | None = None, max: float | None = None) -> Any:  # noqa: A002
    """A dataclass field with a help text and optional numeric bounds (list defaults are copied per instance)."""
    metadata = {"help": help, "min": min, "max": max}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from YAML, papermill ``-p``/``-r`` or Python) to type ``tp`` or raise ParameterError."""

    def fail(extra: str = "") -> ParameterError:
        return ParameterError(
            f"parameter '{key}': expected {_type_name(tp)}, got {value!r} ({type(value).__name__}){extra}"
        )

    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        text = str(value).strip() if isinstance(value, (str, int, float)) else value
        if text in choices:
            return text
        raise fail(did_you_mean(str(text), choices))
    if origin in (list, tuple):
        (inner,) = typing.get_args(tp)[:1]
        items = value
        if isinstance(value, str):
            items = [v for v in (s.strip() for s in value.replace(";", ",").split(",")) if v]
        if not isinstance(items, (list, tuple)):
            raise fail()
        return [coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(items)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise fail()
    if tp is int:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise fail() from None
            if number.is_integer():
                return int(number)
        raise fail()
    if tp is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise fail() from None
        raise fail()
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail()
    raise TypeError(f"parameter '{key}': unsupported annotation {tp!r}")


# Names an IPython kernel defines by itself; they are not parameters.
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


@dataclass
class ExperimentParams:
    """Parameters shared by all notebooks (names fixed by DESIGN.md)."""

    NOTEBOOK: ClassVar[str] = ""

    data_root: str = param(
        "", "data set root (CUB-200-2011 or ImageFolder); empty: the embedded synthetic set"
    )
    model: str = param("resnet18", "model name: timm name, efficientnet-bN, or torchvision:<name>")
    pretrained: bool = param(False, "load ImageNet weights (offline for tf_efficientnet_lite0)")
    img_size: int = param(224, "training/eval image side in pixels", min=16)
    batch_size: int = param(32, "mini-batch size", min=1)
    epochs: int = param(10, "number of training epochs", min=1)
    lr: float = param(1e-3, "initial learning rate", min=0.0)
    seed: int = param(0, "random seed (data split, init, augmentation)")
    device: str = param("auto", "auto | cpu | cuda | cuda:N | mps")
    run_dir: str = param("", "output folder; empty: outputs/runs/<notebook>/<run-id>")
    resume: bool = param(False, "resume from run_dir/checkpoints/last.pt")
    deterministic: bool = param(False, "deterministic algorithms only (bitwise repeatable runs, slower)")
    # speed (README "Performance"): none changes what is computed, only how fast
    cache: bool = param(False, "decode images once into a memory-mapped uint8 array under outputs/cache/")
    cache_size: int = param(0, "side of the cached images in pixels; 0: img_size", min=0)
    batch_augment: bool = param(
        False, "augment whole batches on the training device (tensor ops; implies cache for image files)"
    )
    amp: Literal["off", "bf16", "fp16"] = param("off", "autocast: off | bf16 (CPU/CUDA) | fp16 (CUDA)")
    channels_last: bool = param(False, "NHWC memory format for model and batches")
    compile: bool = param(False, "torch.compile the model (slow first epoch, faster later ones)")
    weights: str = param("", "local checkpoint file with ImageNet weights for `model`")
    download: bool = param(False, "allow downloading data / weights (needs internet)")
    num_workers: int = param(2, "DataLoader worker processes", min=0)
    progress: bool = param(True, "progress bars and per-epoch lines (display only: never changes results)")
    # class activation maps (docs/cam_layers.md)
    cam_layer: str = param(
        "", "CAM target: dotted module path in the model (e.g. net.blocks.4; commas fuse several); empty: "
        "the family's stride-16 stage"
    )
    cam_method: Literal[
        "gradcam", "gradcam++", "hirescam", "layercam", "xgradcam", "eigencam", "eigengradcam", "gradcamelementwise"
    ] = param("layercam", "CAM method of the grad-cam package (LayerCAM localises best: docs/cam_layers.md)")

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> ExperimentParams:
        """Build from a mapping (YAML, papermill) plus keyword overrides; unknown keys are errors."""
        merged = {**dict(values or {}), **overrides}
        types_ = cls.field_types()
        unknown = [k for k in merged if k not in types_]
        if unknown:
            key = unknown[0]
            raise ParameterError(
                f"unknown parameter '{key}' for notebook '{cls.NOTEBOOK or cls.__name__}'{did_you_mean(key, types_)} "
                f"(known: {', '.join(sorted(types_))})"
            )
        kwargs = {k: coerce(k, v, types_[k]) for k, v in merged.items()}
        obj = cls(**kwargs)
        obj.validate()
        return obj

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> ExperimentParams:
        """Read a YAML file of parameters (a mapping), then apply overrides."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ParameterError(f"parameter file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ParameterError(f"parameter file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ParameterError(
                f"parameter file {path}: expected a mapping of name: value, got {type(data).__name__}"
            )
        try:
            return cls.from_dict(data, **overrides)
        except ParameterError as exc:
            raise ParameterError(f"{path}: {exc}") from None

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> ExperimentParams:
        """Collect parameters from a notebook's globals(); any other public variable there is an error.

        papermill only warns about an unknown ``-p`` name; this turns the typo into a clear failure.
        """
        types_ = cls.field_types()
        values: dict[str, Any] = {}
        for name, value in namespace.items():
            if name.startswith("_") or name in _KERNEL_NAMES:
                continue
            if isinstance(value, types.ModuleType) or callable(value):
                continue
            values[name] = value
        missing = [k for k in types_ if k not in values]
        if missing:
            raise ParameterError(f"notebook parameters cell does not define: {', '.join(missing)}")
        return cls.from_dict(values)

    # ------------------------------------------------------------------ checks and export
    def validate(self) -> None:
        """Check numeric bounds given in the field metadata."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            if lo is not None and isinstance(value, (int, float)) and value < lo:
                raise ParameterError(f"parameter '{f.name}': expected a value >= {lo}, got {value!r}")
            if hi is not None and isinstance(value, (int, float)) and value > hi:
                raise ParameterError(f"parameter '{f.name}': expected a value <= {hi}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ExperimentParams:
        return type(self).from_dict(self.to_dict(), **changes)

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


@dataclass
class BirdParams(ExperimentParams):
    """The bird notebook (CUB-200-2011 style). Defaults: the embedded CPU run."""

    NOTEBOOK: ClassVar[str] = "bird"

    model: str = param("tf_efficientnet_lite0", "backbone (report: efficientnet-b4)")
    pretrained: bool = param(True, "ImageNet weights (lite0 ships offline; others need weights or download)")
    img_size: int = param(96, "image side (report: 380)", min=16)
    batch_size: int = param(32, "mini-batch size (report: 24)", min=1)
    epochs: int = param(12, "epochs (report: 200)", min=1)
    lr: float = param(0.01, "SGD learning rate (report: 0.005)", min=0.0)
    synth_classes: int = param(10, "embedded set: number of classes", min=2, max=200)
    synth_per_class: int = param(150, "embedded set: images per class", min=2)
    synth_size: int = param(128, "embedded set: image side in pixels", min=32)
    val_fraction: float = param(
        0.3, "share of training images held out for validation (report: 0.3)", min=0.0, max=0.9
    )
    augment: str = param("bird", "augmentation preset: bird | light | none")
    loss: Literal["ce", "ohem"] = param("ce", "ce | ohem")
    label_smoothing: float = param(0.0, "label smoothing for CE/OHEM (SAM recipe: 0.1)", min=0.0, max=0.99)
    ohem_schedule: Literal["none", "constant", "cyclical", "step"] = param(
        "none", "OHEM ratio: none | constant | cyclical | step"
    )
    ohem_ratio: float = param(0.7, "keep ratio when ohem_schedule is none or constant", min=0.0, max=1.0)
    optimizer: Literal["sgd", "adam", "adamw", "sam"] = param("sgd", "sgd | adam | adamw | sam (SGD base)")
    momentum: float = param(0.9, "SGD momentum", min=0.0)
    weight_decay: float = param(1e-5, "weight decay", min=0.0)
    rho: float = param(0.05, "SAM neighbourhood size", min=0.0)
    scheduler: Literal["none", "plateau", "cosine_restarts", "cosine"] = param(
        "plateau", "LR: none | plateau | cosine_restarts | cosine"
    )
    t0: int = param(10, "cosine_restarts: epochs per cycle", min=1)
    ensemble: Literal["none", "logits", "concat"] = param(
        "none", "two-model ensemble: none | logits | concat"
    )
    model_b: str = param("resnest50d", "second model of the ensemble")
    cam_images: int = param(8, "validation images in the CAM grid", min=0)
    pointing_part: str = param("left wing", "CUB part whose location the CAM peak should hit")
    pointing_radius: float = param(0.15, "pointing-game radius as a share of the image side", min=0.0)


@dataclass
class Cifar100Params(ExperimentParams):
    """The cifar100 notebook. Defaults: the embedded CPU run (synthetic CIFAR-100 files, lite0 at 64 px)."""

    NOTEBOOK: ClassVar[str] = "cifar100"

    data_root: str = param("", "folder holding cifar-100-python/; empty: the embedded synthetic set")
    model: str = param(
        "tf_efficientnet_lite0", "efficientnet-b4 | swin_base_patch4_window12_384 | any timm name"
    )
    pretrained: bool = param(True, "ImageNet weights (lite0 ships offline; others need weights or download)")
    img_size: int = param(32, "input image side before the upsampling layer (CIFAR: 32)", min=8)
    upsample_size: int = param(
        64, "upsampling layer in front of the backbone, 0: none (report: 224 / 384)", min=0
    )
    batch_size: int = param(64, "mini-batch size (report: 32 or 64)", min=1)
    epochs: int = param(5, "epochs (report: 200)", min=1)
    lr: float = param(1e-3, "AdamW learning rate (report: 1e-3 EfficientNet, 3e-5 Swin)", min=0.0)
    download: bool = param(False, "allow downloading CIFAR-100 / weights (needs internet)")
    synth_train_per_class: int = param(20, "embedded set: training images per class", min=1)
    synth_test_per_class: int = param(5, "embedded set: test images per class", min=1)
    loss: Literal["ce", "mc", "focal", "flsd53"] = param("ce", "ce | mc | focal | flsd53")
    gamma: float = param(2.0, "focal loss gamma", min=0.0)
    mc_mu: float = param(1.5, "MC loss weight of L_dis (official HEAD: 1.5)", min=0.0)
    mc_lambda: float = param(20.0, "MC loss weight of the diversity term (official HEAD: 20)", min=0.0)
    optimizer: Literal["adamw", "adam", "sgd"] = param("adamw", "adamw | adam | sgd")
    momentum: float = param(0.9, "SGD momentum", min=0.0)
    weight_decay: float = param(1e-4, "weight decay (report: 1e-4)", min=0.0)
    scheduler: Literal["exponential", "none", "cosine", "plateau"] = param(
        "exponential", "LR: lr0 * f^(epoch/period)"
    )
    lr_decay: float = param(0.8, "exponential decay factor f (report: 0.8)", min=0.0, max=1.0)
    lr_period: float = param(3.0, "exponential decay period in epochs (report: 3)", min=1e-9)
    augment: str = param("cifar100", "augmentation preset: cifar100 | light | none")
    noise_std: float = param(0.05, "Gaussian noise sigma (on [0, 1] pixels)", min=0.0)
    noise_p: float = param(0.5, "probability of adding Gaussian noise", min=0.0, max=1.0)
    ece_bins: int = param(15, "bins of the expected calibration error", min=1)
    cam_images: int = param(8, "test images in the CAM grid", min=0)


@dataclass
class InatBBNParams(ExperimentParams):
    """The inat_bbn notebook (long-tailed iNaturalist-2019). Defaults: the embedded CPU run."""

    NOTEBOOK: ClassVar[str] = "inat_bbn"

    data_root: str = param(
        "", "iNat-2019 root (train2019.json, val2019.json, images); empty: embedded synthetic"
    )
    model: str = param(
        "tf_efficientnet_lite0", "backbone: antialiased_resnet50 (report) | resnetblur50 | resnet50 | ..."
    )
    pretrained: bool = param(True, "ImageNet weights (lite0 offline; BBN's iNat configs train from scratch)")
    img_size: int = param(
        64, "image side (report: 224; up to 560 for the high-resolution runs)", min=16, max=1024
    )
    batch_size: int = param(32, "mini-batch size (report: 128)", min=1)
    epochs: int = param(12, "epochs (report: 180)", min=1)
    lr: float = param(0.01, "SGD learning rate (report: 0.05)", min=0.0)
    synth_classes: int = param(30, "embedded set: number of classes", min=2, max=200)
    synth_max_per_class: int = param(60, "embedded set: images of the largest class", min=1)
    synth_imbalance: float = param(20.0, "embedded set: imbalance ratio n_max / n_min", min=1.0)
    synth_val_per_class: int = param(10, "embedded set: validation images per class (iNat-2019: 3)", min=1)
    synth_size: int = param(96, "embedded set: image side in pixels", min=32)
    method: Literal["bbn", "plain", "cot"] = param(
        "bbn", "bbn | plain (one branch, CE) | cot (CE + complement entropy)"
    )
    sampler: Literal["uniform", "balanced", "reversed"] = param(
        "uniform", "plain/cot sampler: uniform | balanced | reversed"
    )
    alpha: str = param("cumulative", "BBN alpha: cumulative (1 - ((T-1)/T_max)^2) | 0 | 1 | a fixed value")
    t_max: int = param(0, "BBN alpha divisor; 0: the official rule (epochs, or 100/200 for 90/180)", min=0)
    optimizer: Literal["sgd", "adam", "adamw"] = param("sgd", "sgd | adam | adamw")
    momentum: float = param(0.9, "SGD momentum", min=0.0)
    weight_decay: float = param(1e-4, "weight decay (report: 1e-4)", min=0.0)
    lr_steps: list[int] = param([9], "epochs at which the LR is multiplied by lr_gamma (report: 120, 160)")
    lr_gamma: float = param(0.1, "LR step factor", min=0.0)
    augment: str = param("light", "augmentation preset: inat (report) | light | none")
    many_shot: int = param(
        0, "head classes have more training images than this; 0: upper tercile of counts", min=0
    )
    few_shot: int = param(0, "tail classes have fewer training images than this; 0: lower tercile", min=0)
    cam_crop: bool = param(
        True,
        "CAM-guided localisation: crop to the CAM box and classify again",
    )
    crop_threshold: float = param(0.5, "CAM box: share of the CAM maximum", min=0.0, max=1.0)
    crop_margin: float = param(0.1, "CAM box: margin added on each side, share of the box size", min=0.0)
    crop_source: Literal["original", "resized"] = param(
        "original",
        "CAM crop cut from: original (the image file at full resolution, resized to img_size) | resized (the "
        "img_size model input, upsampled: no new detail)",
    )
    cam_images: int = param(6, "validation images shown with their CAM and crop", min=0)


@dataclass
class MultilabelParams(ExperimentParams):
    """The multilabel notebook (14 labels, half the images without any). Defaults: the embedded CPU run."""

    NOTEBOOK: ClassVar[str] = "multilabel"

    data_root: str = param(
        "", "folder with images/ and annotations/<label>.txt; empty: the embedded synthetic set"
    )
    csv: str = param("", "optional CSV (file,labels) instead of annotations/; images under data_root/images")
    model: str = param(
        "tf_efficientnet_lite0", "resnet34 (224 px) | wide_resnet50_2 (128 px) | small_cnn | timm"
    )
    pretrained: bool = param(True, "ImageNet weights (lite0 ships offline; small_cnn trains from scratch)")
    img_size: int = param(
        96, "image side (report: 224 for ResNet-34, 128 for WRN-50-2 and the small CNN)", min=16
    )
    batch_size: int = param(32, "mini-batch size (report: 32)", min=1)
    epochs: int = param(6, "epochs (report: 20)", min=1)
    lr: float = param(
        0.01, "peak LR of the one-cycle schedule / Adam LR (report: 0.01 SGD, 1e-3 Adam)", min=0.0
    )
    synth_images: int = param(1500, "embedded set: number of images", min=20)
    synth_size: int = param(128, "embedded set: image side (report: 128)", min=32)
    val_fraction: float = param(
        0.2, "validation share of the iterative-stratified split (report: 0.2)", min=0.05, max=0.9
    )
    loss: Literal["bce", "mse"] = param("bce", "bce | mse (on sigmoid probabilities)")
    optimizer: Literal["sgd", "adam"] = param("sgd", "sgd (momentum) | adam (betas 0.9/0.999, eps 1e-8)")
    momentum: float = param(
        0.9, "SGD momentum (cycled 0.95 -> 0.85 -> 0.95 by the one-cycle schedule)", min=0.0
    )
    weight_decay: float = param(1e-4, "weight decay (report: 1e-4 .. 1e-3)", min=0.0)
    scheduler: Literal["onecycle", "none"] = param("onecycle", "onecycle (per batch) | none")
    lr_min: float = param(1e-7, "lowest LR of the one-cycle schedule (report: 1e-7)", min=0.0)
    augment: str = param("multilabel", "augmentation preset: multilabel | light | none")
    freeze_backbone: bool = param(False, "train only the last layer")
    cam_images: int = param(4, "validation images whose positive labels get a CAM each", min=0)


def params_class(notebook: str) -> type[ExperimentParams]:
    """The parameter class of a notebook name (declared in ``fgvc_lib.catalog``)."""
    from .catalog import get_notebook, notebook_names

    try:
        declaration = get_notebook(notebook)
    except ValueError:
        raise ParameterError(
            f"unknown notebook '{notebook}', expected one of ({', '.join(notebook_names())})"
            f"{did_you_mean(notebook, notebook_names())}"
        ) from None
    return declaration.params_class()
