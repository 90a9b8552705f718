"""torchvision classification models behind ``Classifier``: the ``torchvision:<name>`` names of ``create_model``.

``torchvision:resnet50`` builds ``torchvision.models.get_model("resnet50", weights=None, num_classes=...)``. The
torchvision ResNets (ResNet, ResNeXt, Wide ResNet) become ``Classifier`` kind ``'torchvision_resnet'`` (the
layout the antialiased-cnns ResNets share, so BBN and CAM treat them alike); every other supported family is
kind ``'torchvision'`` with a ``family`` naming how its feature map, pooling and final ``nn.Linear`` are
reached (see ``FAMILIES``). Models without a 2-D feature map before a linear head (ViT, MaxViT, SqueezeNet's
convolutional classifier, GoogLeNet / Inception v3 with their auxiliary heads) are refused with a clear error.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

PREFIX = "torchvision:"

# family -> torchvision classes (names in torchvision.models), matched with isinstance in this order.
FAMILIES: dict[str, tuple[str, ...]] = {
    "resnet": ("ResNet",),
    "regnet": ("RegNet",),
    "swin": ("SwinTransformer",),
    "densenet": ("DenseNet",),
    "mnasnet": ("MNASNet",),
    "shufflenet": ("ShuffleNetV2",),
    # `features` -> (avgpool) -> classifier Sequential ending in the final Linear
    "features": ("EfficientNet", "MobileNetV2", "MobileNetV3", "ConvNeXt", "VGG", "AlexNet"),
}

# name prefix -> why it is not supported
UNSUPPORTED = {
    "vit_": "a Vision Transformer returns a token sequence with a class token, no 2-D feature map",
    "maxvit_": "MaxViT's pooling sits inside its classifier block, no separable feature map",
    "squeezenet": "SqueezeNet classifies with a convolution, it has no linear head",
    "googlenet": "GoogLeNet's auxiliary heads do not fit the single-head interface",
    "inception_v3": "Inception v3's auxiliary head does not fit the single-head interface (use timm's inception_v3)",
}


@lru_cache(maxsize=1)
def all_names() -> tuple[str, ...]:
    """Every torchvision classification model name (without the prefix)."""
    import torchvision.models as tvm

    return tuple(tvm.list_models(module=tvm))


def unsupported_reason(name: str) -> str:
    return next((why for prefix, why in UNSUPPORTED.items() if name.startswith(prefix)), "")


def supported_names() -> tuple[str, ...]:
    """torchvision names ``create_model`` accepts (without the prefix)."""
    return tuple(n for n in all_names() if not unsupported_reason(n))


def family(net: nn.Module) -> str:
    """The ``FAMILIES`` key of a torchvision network (ValueError for an unsupported class)."""
    import torchvision.models as tvm

    for fam, classes in FAMILIES.items():
        if isinstance(net, tuple(getattr(tvm, c) for c in classes)):
            return fam
    raise ValueError(f"unsupported torchvision network class {type(net).__name__}")


def _head_slot(net: nn.Module, fam: str) -> tuple[nn.Module, str | int]:
    """(parent module, attribute name or index) of the final classifier layer."""
    if fam in ("resnet", "regnet", "shufflenet"):
        return net, "fc"
    if fam == "swin":
        return net, "head"
    if fam == "densenet":
        return net, "classifier"
    return net.classifier, len(net.classifier) - 1  # mnasnet, features: a Sequential ending in the Linear


def head_layer(net: nn.Module, fam: str) -> nn.Module:
    parent, key = _head_slot(net, fam)
    return parent[key] if isinstance(key, int) else getattr(parent, key)


def set_head(net: nn.Module, fam: str, module: nn.Module) -> None:
    parent, key = _head_slot(net, fam)
    if isinstance(key, int):
        parent[key] = module
    else:
        setattr(parent, key, module)


def features(net: nn.Module, fam: str, x: torch.Tensor) -> torch.Tensor:
    """The last feature map before pooling (NCHW; NHWC for Swin, after its final norm)."""
    if fam == "regnet":
        return net.trunk_output(net.stem(x))
    if fam == "swin":
        return net.norm(net.features(x))
    if fam == "mnasnet":
        return net.layers(x)
    if fam == "shufflenet":
        x = net.maxpool(net.conv1(x))
        return net.conv5(net.stage4(net.stage3(net.stage2(x))))
    return net.features(x)  # densenet, features


def pool(net: nn.Module, fam: str, fmap: torch.Tensor) -> torch.Tensor:
    """The pre-logit vector the final Linear reads, exactly as the network's own ``forward`` computes it."""
    if fam == "regnet":
        return net.avgpool(fmap).flatten(1)
    if fam == "swin":
        return net.flatten(net.avgpool(net.permute(fmap)))
    if fam == "densenet":
        return F.adaptive_avg_pool2d(F.relu(fmap), 1).flatten(1)
    if fam in ("mnasnet", "shufflenet"):
        pooled = fmap.mean([2, 3])
        return net.classifier[:-1](pooled) if fam == "mnasnet" else pooled
    # features: EfficientNet, MobileNetV3, ConvNeXt, VGG, AlexNet have `avgpool`; MobileNetV2 pools in forward
    pooled = net.avgpool(fmap) if hasattr(net, "avgpool") else F.adaptive_avg_pool2d(fmap, 1)
    body = net.classifier[:-1]
    if not any(isinstance(m, nn.Flatten) for m in body):  # ConvNeXt flattens inside its classifier
        pooled = pooled.flatten(1)
    return body(pooled)


def data_config(name: str) -> dict[str, Any]:
    """Preprocessing of the DEFAULT ImageNet weights (mean, std, crop size, interpolation); no download."""
    import torchvision.models as tvm

    try:
        preset = tvm.get_model_weights(name).DEFAULT.transforms()
    except (ValueError, AttributeError, TypeError):  # pragma: no cover - every classification model has weights
        return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "input_size": (3, 224, 224), "interpolation": "bilinear"}
    crop = int(preset.crop_size[0])
    return {
        "mean": tuple(float(v) for v in preset.mean),
        "std": tuple(float(v) for v in preset.std),
        "input_size": (3, crop, crop),
        "interpolation": preset.interpolation.value,
    }
