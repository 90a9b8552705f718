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
    """A dataclass field with a help text and optional numeric bounds."""
    return field(default=default, metadata={"help": help, "min": min, "max": max})


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
    weights: str = param("", "local checkpoint file with ImageNet weights for `model`")
    download: bool = param(False, "allow downloading data/weights (needs internet)")
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
    ohem_ratio: float = param(0.7, "keep ratio when ohem_schedule is constant", min=0.0, max=1.0)
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
    num_workers: int = param(2, "DataLoader worker processes", min=0)
    cam_images: int = param(8, "validation images in the CAM grid", min=0)
    pointing_part: str = param("left wing", "CUB part whose location the CAM peak should hit")
    pointing_radius: float = param(0.15, "pointing-game radius as a share of the image side", min=0.0)
    progress: bool = param(True, "tqdm progress bars")


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
    weights: str = param("", "local checkpoint file with ImageNet weights for `model`")
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
    num_workers: int = param(2, "DataLoader worker processes", min=0)
    cam_images: int = param(8, "test images in the CAM grid", min=0)
    progress: bool = param(True, "tqdm progress bars")


PARAMS_BY_NOTEBOOK: dict[str, type[ExperimentParams]] = {"bird": BirdParams, "cifar100": Cifar100Params}


def params_class(notebook: str) -> type[ExperimentParams]:
    """The parameter class of a notebook name."""
    try:
        return PARAMS_BY_NOTEBOOK[notebook]
    except KeyError:
        raise ParameterError(
            f"unknown notebook '{notebook}', expected one of ({', '.join(PARAMS_BY_NOTEBOOK)})"
        ) from None
