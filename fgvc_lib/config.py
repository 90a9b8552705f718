"""Typed experiment parameters: defaults, coercion of papermill/YAML values, clear errors.

Every notebook has one dataclass here (``BirdParams`` ...). Its defaults are the embedded CPU default and
must equal the notebook's ``parameters`` cell (a test checks this through ``papermill.inspect_notebook``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from .registry import did_you_mean


class ParameterError(ValueError):
    """A parameter is unknown, of the wrong type or out of range; the message names it.

    ``key`` is the parameter concerned (when one is) and ``detail`` the message without the ``parameter
    'key':`` prefix, so a caller that knows where the value came from can say so (:meth:`with_source`)."""

    def __init__(self, message: str, *, key: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.key = key
        self.detail = detail if detail is not None else message

    @classmethod
    def of(cls, key: str, detail: str) -> ParameterError:
        """``parameter '<key>': <detail>``."""
        return cls(f"parameter '{key}': {detail}", key=key, detail=detail)

    def with_source(self, source: str | None) -> ParameterError:
        """The same error naming where the value was given: ``-p <key>: <detail>`` for a command-line value,
        ``<file>: <message>`` for a parameter file (``None``: unchanged)."""
        if not source:
            return self
        if source.startswith("-p"):
            return ParameterError(f"{source}: {self.detail}", key=self.key, detail=self.detail)
        return ParameterError(f"{source}: {self}", key=self.key, detail=self.detail)


def param(
    default: Any,
    help: str,  # noqa: A002
    *,
    min: float | None = None,  # noqa: A002
    max: float | None = None,  # noqa: A002
    gt: float | None = None,
) -> Any:
    """A dataclass field with a help text and optional numeric bounds: ``min`` / ``max`` inclusive, ``gt`` an
    exclusive lower bound (list defaults are copied per instance)."""
    metadata = {"help": help, "min": min, "max": max, "gt": gt}
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


def _list_items(value: Any) -> list[Any] | tuple[Any, ...] | None:
    """The items of a list value however it was written: a list; one number (``-p lr_steps 15``: YAML and
    papermill's ``-p`` make it an int); a string ``15,30`` (``;`` too) or ``[15, 30]`` (YAML flow list, as
    papermill's ``-p`` passes it on, a string). None when it is none of these."""
    if isinstance(value, (list, tuple)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            items = yaml.safe_load(text)
        except yaml.YAMLError:
            return None
        return items if isinstance(items, list) else None
    return [v for v in (s.strip() for s in text.replace(";", ",").split(",")) if v]


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from YAML, papermill ``-p``/``-r`` or Python) to type ``tp`` or raise ParameterError."""

    def fail(extra: str = "") -> ParameterError:
        detail = f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__}){extra}"
        return ParameterError(f"parameter '{key}': {detail}", key=key.split("[")[0], detail=detail)

    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        text = str(value).strip() if isinstance(value, (str, int, float)) else value
        if text in choices:
            return text
        raise fail(did_you_mean(str(text), choices))
    if origin in (list, tuple):
        (inner,) = typing.get_args(tp)[:1]
        items = _list_items(value)
        if items is None:
            raise fail(" (write a list as 15, 15,30 or [15, 30])")
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


# ---------------------------------------------------------------------------------------------- checks
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _bound(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _check_bounds(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    """The field's ``min`` / ``max`` (inclusive) and ``gt`` (exclusive) bounds; a float must be finite."""
    values = value if isinstance(value, list) else [value]
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if isinstance(item, float) and not math.isfinite(item):
            if gt is not None:
                expected = f" > {_bound(gt)}"
            elif lo is not None and hi is not None:
                expected = f" in [{_bound(lo)}, {_bound(hi)}]"
            elif lo is not None or hi is not None:
                expected = f" >= {_bound(lo)}" if lo is not None else f" <= {_bound(hi)}"
            else:
                expected = ""
            raise ParameterError.of(key, f"expected a finite number{expected}, got {item!r}")
        if gt is not None and item <= gt:
            raise ParameterError.of(key, f"expected a value > {_bound(gt)}, got {item!r}")
        if lo is not None and item < lo:
            raise ParameterError.of(key, f"expected a value >= {_bound(lo)}, got {item!r}")
        if hi is not None and item > hi:
            raise ParameterError.of(key, f"expected a value <= {_bound(hi)}, got {item!r}")


def _check_model(params: Any, key: str, name: str) -> None:
    from .models.factory import check_model_name

    try:
        check_model_name(name)
    except ValueError as exc:
        raise ParameterError.of(key, str(exc)) from None


def _check_preset(params: Any, key: str, name: str) -> None:
    from .data.transforms import PRESETS

    if name not in PRESETS:
        raise ParameterError.of(
            key,
            f"unknown augmentation preset {name!r}{did_you_mean(name, PRESETS.names())} "
            f"(expected one of: {', '.join(PRESETS.names())})",
        )


def part_names(data_root: str | Path = "") -> tuple[tuple[str, ...], str]:
    """The part names a bird data set declares and where they come from: ``data_root/parts/parts.txt`` when
    that file is there and readable (``<part_id> <part name>`` per line), else the 15 CUB-200-2011 parts (the
    embedded set writes those; a data set without parts has no pointing game at all)."""
    from .data.synth.cub import CUB_PART_NAMES

    if data_root:
        path = Path(data_root).expanduser() / "parts" / "parts.txt"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            names = tuple(line.split(maxsplit=1)[1].strip() for line in lines if len(line.split(maxsplit=1)) == 2)
        except (OSError, UnicodeDecodeError):
            names = ()
        if names:
            return names, str(path)
    return CUB_PART_NAMES, "the CUB-200-2011 parts"


def _check_part(params: Any, key: str, name: str) -> None:
    if not name:  # no pointing game
        return
    names, source = part_names(getattr(params, "data_root", ""))
    if name not in names:
        raise ParameterError.of(
            key,
            f"unknown part {name!r}{did_you_mean(name, names)} (expected one of {source}: {', '.join(names)})",
        )


def _check_bbn_alpha(params: Any, key: str, value: str) -> None:
    try:
        number = float(value)
    except ValueError:
        number = None
    if value != "cumulative" and (number is None or not 0.0 <= number <= 1.0):
        raise ParameterError.of(key, f"expected 'cumulative' or a number in [0, 1], got {value!r}")


_NAME_CHECKS: dict[str, Any] = {
    "model": _check_model,
    "preset": _check_preset,
    "part": _check_part,
    "bbn alpha": _check_bbn_alpha,
}


def available_devices() -> list[str]:
    """The devices this process can use: ``cpu``, ``cuda:0`` ... ``cuda:N-1``, ``mps``."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str, key: str = "device") -> None:
    """ParameterError naming ``key`` when ``device`` (cuda, cuda:N, mps) is not available in this process,
    with the devices that are; ``auto`` and ``cpu`` always are."""
    name = str(device).strip()
    if name in ("auto", "cpu") or not _DEVICE.fullmatch(name):
        return
    devices = available_devices()
    if name == "mps":
        ok = "mps" in devices
    else:
        index = int(name.partition(":")[2] or 0)
        ok = f"cuda:{index}" in devices
    if not ok:
        cuda = [d for d in devices if d.startswith("cuda")]
        what = f"{len(cuda)} CUDA device(s)" if cuda else "no CUDA device"
        what = what if name != "mps" else "no MPS device"
        raise ParameterError.of(
            key, f"{name!r} asked for, but this machine has {what} (available: {', '.join(devices)}, auto)"
        )


def read_yaml_file(path: str | Path, what: str = "parameter file") -> Any:
    """The YAML document of ``path``; a missing or unreadable file or a syntax error is one ParameterError
    line: ``FILE:LINE:COLUMN: YAML syntax error: <problem>`` (no PyYAML traceback)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParameterError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ParameterError(f"{what} {path} is not UTF-8 text (byte {exc.start}); expected a YAML file") from None
    except OSError as exc:
        raise ParameterError(f"{what} {path} cannot be read ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        context = f" ({' '.join(exc.context.split())})" if exc.context and exc.problem else ""
        raise ParameterError(f"{where}: YAML syntax error: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: YAML syntax error: {' '.join(str(exc).split())}") from None


# Names an IPython kernel defines by itself; they are not parameters.
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


#: ``cam_method`` choices: ``fgvc_lib.cam.CAM_METHODS`` (tests check the two agree).
CamMethod = Literal[
    "gradcam", "gradcam++", "hirescam", "layercam", "xgradcam", "eigencam", "eigengradcam", "segeigencam",
    "gradcamelementwise",
]


@dataclass
class ExperimentParams:
    """Parameters shared by all notebooks (names fixed by DESIGN.md)."""

    NOTEBOOK: ClassVar[str] = ""
    #: Fields holding a name, checked by :meth:`validate` against what accepts it: ``model`` (the model
    #: factory), ``preset`` (augmentation presets), ``part`` (the data set's part names). A notebook whose
    #: ``model`` is not a factory name drops it here.
    NAME_FIELDS: ClassVar[dict[str, str]] = {"model": "model"}

    data_root: str = param(
        "", "data set root (CUB-200-2011 or ImageFolder); empty: the embedded synthetic set"
    )
    model: str = param("resnet18", "model name: timm name, efficientnet-bN, or torchvision:<name>")
    pretrained: bool = param(False, "load ImageNet weights (offline for tf_efficientnet_lite0)")
    img_size: int = param(224, "training/eval image side in pixels", min=16)
    batch_size: int = param(32, "mini-batch size", min=1)
    epochs: int = param(10, "number of training epochs", min=1)
    lr: float = param(1e-3, "initial learning rate", gt=0.0)
    seed: int = param(0, "random seed (data split, init, augmentation)", min=0, max=2**32 - 1)
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
    cam_method: CamMethod = param(
        "layercam", "CAM method of the grad-cam package (LayerCAM localises best: docs/cam_layers.md)"
    )

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
                f"(known: {', '.join(sorted(types_))})",
                key=key,
            )
        kwargs = {k: coerce(k, v, types_[k]) for k, v in merged.items()}
        obj = cls(**kwargs)
        obj.validate()
        return obj

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> ExperimentParams:
        """Read a YAML file of parameters (a mapping), then apply overrides."""
        path = Path(path)
        data = read_yaml_file(path) or {}
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
        """Everything that needs no data: numeric bounds of the field metadata (floats finite too), the
        ``device`` spelling and the names in ``NAME_FIELDS`` (models, augmentation presets, CAM parts). A
        ParameterError names the parameter, the value and what was expected."""
        for f in dataclasses.fields(self):
            _check_bounds(f.name, getattr(self, f.name), f.metadata)
        device = str(getattr(self, "device", "auto")).strip()
        if not _DEVICE.fullmatch(device):
            raise ParameterError.of("device", f"expected auto, cpu, cuda, cuda:N or mps, got {device!r}")
        for name, kind in self.NAME_FIELDS.items():
            _NAME_CHECKS[kind](self, name, getattr(self, name))

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
    NAME_FIELDS: ClassVar[dict[str, str]] = {
        "model": "model", "model_b": "model", "augment": "preset", "pointing_part": "part"
    }

    model: str = param("tf_efficientnet_lite0", "backbone (report: efficientnet-b4)")
    pretrained: bool = param(True, "ImageNet weights (lite0 ships offline; others need weights or download)")
    img_size: int = param(96, "image side (report: 380)", min=16)
    batch_size: int = param(32, "mini-batch size (report: 24)", min=1)
    epochs: int = param(12, "epochs (report: 200)", min=1)
    lr: float = param(0.01, "SGD learning rate (report: 0.005)", gt=0.0)
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
    NAME_FIELDS: ClassVar[dict[str, str]] = {"model": "model", "augment": "preset"}

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
    lr: float = param(1e-3, "AdamW learning rate (report: 1e-3 EfficientNet, 3e-5 Swin)", gt=0.0)
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
    NAME_FIELDS: ClassVar[dict[str, str]] = {"model": "model", "augment": "preset", "alpha": "bbn alpha"}

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
    lr: float = param(0.01, "SGD learning rate (report: 0.05)", gt=0.0)
    synth_classes: int = param(30, "embedded set: number of classes", min=2, max=200)
    synth_max_per_class: int = param(60, "embedded set: images of the largest class", min=1)
    synth_imbalance: float = param(20.0, "embedded set: imbalance ratio n_max / n_min", min=1.0)
    synth_val_per_class: int = param(10, "embedded set: validation images per class (iNat-2019: 3)", min=1)
    synth_size: int = param(
        192, "embedded set: image side in pixels (3x img_size: CAM crops cut from it add detail)", min=32
    )
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
    cam_crop: bool = param(True, "CAM-guided localisation: crop to the CAM box and classify again")
    cam_method: CamMethod = param(
        "segeigencam", "CAM method of the grad-cam package (Seg-Eigen-CAM: crop boxes closest to the objects, "
        "docs/cam_crops.md)"
    )
    crop_threshold: float = param(
        0.1, "CAM box: share of the CAM maximum (0.1 with Seg-Eigen-CAM: docs/cam_crops.md)", min=0.0, max=1.0
    )
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
    NAME_FIELDS: ClassVar[dict[str, str]] = {"model": "model", "augment": "preset"}

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
        0.01, "peak LR of the one-cycle schedule / Adam LR (report: 0.01 SGD, 1e-3 Adam)", gt=0.0
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


def parse_overrides(pairs: list[list[str]] | None) -> dict[str, Any]:
    """``-p key value`` pairs; values are parsed as YAML scalars (3 -> int, true -> bool, 1e-3 -> float)."""
    values: dict[str, Any] = {}
    for key, raw in pairs or []:
        try:
            values[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            values[key] = raw
    return values


def check_command_line(
    notebook: str, files: list[str] | None, pairs: list[list[str]] | None, *, device: bool = True
) -> ExperimentParams:
    """What ``fgvc run`` and ``fgvc train`` check before a kernel starts or a run folder exists: the
    parameter files (later wins), then ``-p key value`` pairs, as the notebook's typed parameters, and the
    device when ``device``. A ParameterError names where the bad value was given (``-p lr: ...`` or
    ``file.yaml: parameter 'lr': ...``), the value and what was expected."""
    cls = params_class(notebook)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for file in files or []:
        data = read_yaml_file(file) or {}
        if not isinstance(data, dict):
            raise ParameterError(
                f"parameter file {file}: expected a mapping of name: value, got {type(data).__name__}"
            )
        values.update(data)
        sources.update(dict.fromkeys(map(str, data), str(file)))
    for key, _ in pairs or []:
        sources[key] = f"-p {key}"
    values.update(parse_overrides(pairs))
    try:
        params = cls.from_dict(values)
        if device:
            check_device(params.device)
    except ParameterError as exc:
        raise exc.with_source(sources.get(exc.key or "")) from None
    return params
