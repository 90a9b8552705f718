"""Models by name: ``create_model(name, num_classes, pretrained=...)`` for timm, torchvision and efficientnet-pytorch.

Names: any timm model (``resnet50``, ``resnest50d``, ``tf_efficientnet_lite0`` ...), ``torchvision:<name>`` for a
torchvision classification model (``torchvision:resnet50``, ``torchvision:efficientnet_b0``, ``torchvision:convnext_tiny``
...; see ``torchvision_models``), the efficientnet-pytorch names ``efficientnet-b0`` ... ``efficientnet-b8``
(hyphen, as that package spells them), and
``antialiased_resnet50``: Zhang's anti-aliased ResNet-50 from the antialiased-cnns package (BlurPool filter 4;
timm's own ``resnetblur50`` is a different variant: filter 3, unblurred shortcut), and ``small_cnn``: the
multi-label report's small CNN trained from scratch (``simple_cnn.SmallCNN``). ``pretrained=True``
never falls back to random weights silently: it loads offline weights, a local file, or downloads when
``download=True``, else raises ``PretrainedWeightsUnavailable`` saying how to supply them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..registry import closest
from . import torchvision_models as tv
from .ensemble import FeatureConcatEnsemble, WeightedLogitEnsemble
from .pretrained import (
    OFFLINE_WEIGHTS,
    PretrainedWeightsUnavailable,
    load_lite0_imagenet,
    load_weights_file,
    unavailable_message,
)
from .simple_cnn import SmallCNN
from .wrappers import Classifier

EFFICIENTNET_PYTORCH_NAMES = tuple(f"efficientnet-b{i}" for i in range(9))
# name -> (antialiased_cnns constructor, BlurPool filter size); official default filter 4 ("lpf4").
ANTIALIASED_CNNS_NAMES = {"antialiased_resnet50": ("resnet50", 4)}
# Networks defined in fgvc_lib itself, trained from scratch (no ImageNet weights exist).
SCRATCH_NAMES = ("small_cnn",)


@lru_cache(maxsize=1)
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def list_models(pattern: str = "") -> list[str]:
    """All model names the factory accepts (optionally filtered by a substring)."""
    names = (
        list(EFFICIENTNET_PYTORCH_NAMES)
        + list(ANTIALIASED_CNNS_NAMES)
        + list(SCRATCH_NAMES)
        + list(_timm_names())
        + [tv.PREFIX + n for n in tv.supported_names()]
    )
    return [n for n in names if pattern in n]


def _unknown(name: str) -> ValueError:
    close = closest(name, list_models(), n=5)
    hint = f"; closest names: {', '.join(close)}" if close else ""
    return ValueError(
        f"Unknown model '{name}', expected a timm name (see fgvc_lib.models.list_models()), "
        f"torchvision:<name>, or one of "
        f"{', '.join(EFFICIENTNET_PYTORCH_NAMES + tuple(ANTIALIASED_CNNS_NAMES) + SCRATCH_NAMES)}{hint}"
    )


def _unknown_torchvision(name: str) -> ValueError:
    tv_name = name[len(tv.PREFIX) :]
    why = tv.unsupported_reason(tv_name) if tv_name in tv.all_names() else ""
    close = closest(tv_name, tv.supported_names(), n=5)
    hint = f"; closest names: {', '.join(tv.PREFIX + n for n in close)}" if close else ""
    if why:
        return ValueError(f"Unsupported model '{name}': {why}{hint}")
    return ValueError(
        f"Unknown model '{name}', expected torchvision:<name> with a torchvision classification model "
        f"(see fgvc_lib.models.list_models('torchvision:')){hint}"
    )


def check_model_name(name: str) -> str:
    """``name`` when :func:`create_model` accepts it (nothing is built, no weights are read), else the
    ValueError ``create_model`` would raise: the accepted forms and the closest names."""
    if name in EFFICIENTNET_PYTORCH_NAMES or name in ANTIALIASED_CNNS_NAMES or name in SCRATCH_NAMES:
        return name
    if name.startswith(tv.PREFIX):
        if name[len(tv.PREFIX) :] not in tv.supported_names():
            raise _unknown_torchvision(name)
        return name
    if name not in _timm_names():
        raise _unknown(name)
    return name


def _timm_data_config(net: nn.Module) -> dict[str, Any]:
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    return {
        "mean": tuple(cfg.get("mean", IMAGENET_MEAN)),
        "std": tuple(cfg.get("std", IMAGENET_STD)),
        "input_size": tuple(cfg.get("input_size", (3, 224, 224))),
        "interpolation": cfg.get("interpolation", "bilinear"),
    }


def create_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights: str = "",
    download: bool = False,
    upsample_size: int = 0,
    **kwargs: Any,
) -> Classifier:
    """Build a classifier by name with ``num_classes`` outputs (0 = no classifier, features only).

    ``weights`` is a local ImageNet checkpoint used when ``pretrained``; ``download`` allows the hub.
    ``upsample_size`` puts a bilinear upsampling layer in front (the cifar100 report's 32 -> 224 px); models
    with a fixed input size (Swin) are then built for that size. Extra keyword arguments go to the timm
    constructor (e.g. ``drop_rate``, ``img_size``); ``aa_layer='blur'`` (or ``'avg'``) is passed on as
    the layer class, since timm's ResNet does not accept the string. ``small_cnn`` takes ``img_size``
    (default ``upsample_size`` or 128; its flatten size follows it), ``dropout`` (or ``drop_rate``) and
    ``in_chans``.
    """
    if num_classes < 0:
        raise ValueError(f"num_classes: expected >= 0, got {num_classes}")
    if name in EFFICIENTNET_PYTORCH_NAMES:
        model = _create_efficientnet_pytorch(name, num_classes, pretrained, weights, download)
        return _with_upsample(model, upsample_size)
    if name in ANTIALIASED_CNNS_NAMES:
        model = _create_antialiased_cnns(name, num_classes, pretrained, weights, download)
        return _with_upsample(model, upsample_size)
    if name in SCRATCH_NAMES:
        return _create_small_cnn(name, num_classes, pretrained, upsample_size, **kwargs)
    if name.startswith(tv.PREFIX):
        model = _create_torchvision(name, num_classes, pretrained, weights, download, **kwargs)
        return _with_upsample(model, upsample_size)
    if name not in _timm_names():
        raise _unknown(name)
    import timm

    if upsample_size and "img_size" not in kwargs and timm.get_pretrained_cfg(name) is not None:
        if getattr(timm.get_pretrained_cfg(name), "fixed_input_size", False):
            kwargs["img_size"] = upsample_size
    if isinstance(kwargs.get("aa_layer"), str):
        kwargs["aa_layer"] = _aa_layer_class(kwargs["aa_layer"])
    use_hub = pretrained and not weights and name not in OFFLINE_WEIGHTS
    if use_hub and not download:
        raise PretrainedWeightsUnavailable(unavailable_message(name))
    net = timm.create_model(name, pretrained=use_hub, num_classes=num_classes, **kwargs)
    if pretrained and weights:
        load_weights_file(net, weights)
    elif pretrained and name == "tf_efficientnet_lite0":
        load_lite0_imagenet(net)
    model = Classifier(net, "timm", name, num_classes, _timm_data_config(net), upsample_size=upsample_size)
    if pretrained:
        reset_head(model)
    return model


def _aa_layer_class(name: str) -> type[nn.Module]:
    """timm anti-aliasing layer class for a short name (timm 1.0.31's ResNet crashes on the string)."""
    from timm.layers import BlurPool2d

    classes: dict[str, type[nn.Module]] = {"blur": BlurPool2d, "blurpool": BlurPool2d, "avg": nn.AvgPool2d}
    if name not in classes:
        raise ValueError(f"aa_layer: expected one of ({', '.join(classes)}) or a layer class, got {name!r}")
    return classes[name]


def _create_antialiased_cnns(
    name: str, num_classes: int, pretrained: bool, weights: str, download: bool
) -> Classifier:
    """A torchvision-style anti-aliased ResNet from the antialiased-cnns package (weights: S3 download)."""
    import antialiased_cnns

    constructor, filter_size = ANTIALIASED_CNNS_NAMES[name]
    if pretrained and not weights and not download:
        raise PretrainedWeightsUnavailable(unavailable_message(name))
    net = getattr(antialiased_cnns, constructor)(
        pretrained=pretrained and not weights, filter_size=filter_size
    )
    if pretrained and weights:
        load_weights_file(net, weights)
    net.num_features = net.fc.in_features
    if num_classes != net.fc.out_features:
        net.fc = nn.Linear(net.num_features, num_classes) if num_classes else nn.Identity()
    config = {
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "input_size": (3, 224, 224),
        "interpolation": "bilinear",
    }
    model = Classifier(net, "torchvision_resnet", name, num_classes, config)
    return reset_head(model) if pretrained else model


def _create_torchvision(
    name: str, num_classes: int, pretrained: bool, weights: str, download: bool, **kwargs: Any
) -> Classifier:
    """``torchvision:<name>``: ``torchvision.models.get_model(<name>, weights=None, num_classes=...)``.

    ``pretrained`` loads ``weights`` (a local state dict of the same architecture) or, only when ``download``
    is allowed, torchvision's DEFAULT ImageNet weights (then the 1000-class head is replaced); otherwise
    ``PretrainedWeightsUnavailable``. ``num_classes=0`` replaces the final Linear with ``nn.Identity``.
    Extra keyword arguments go to the torchvision builder (e.g. ``dropout``).
    """
    import torchvision.models as tvm

    tv_name = name[len(tv.PREFIX) :]
    if tv_name not in tv.supported_names():
        raise _unknown_torchvision(name)
    from_hub = pretrained and not weights
    if from_hub and not download:
        raise PretrainedWeightsUnavailable(unavailable_message(name))
    if from_hub:
        net = tvm.get_model(tv_name, weights="DEFAULT", **kwargs)  # 1000 ImageNet classes
    else:
        net = tvm.get_model(tv_name, weights=None, num_classes=max(num_classes, 1), **kwargs)
    fam = tv.family(net)
    head = tv.head_layer(net, fam)
    net.num_features = head.in_features
    if from_hub and num_classes and num_classes != head.out_features:
        tv.set_head(net, fam, nn.Linear(head.in_features, num_classes))
    if num_classes == 0:
        tv.set_head(net, fam, nn.Identity())
    if pretrained and weights:
        load_weights_file(net, weights)
    kind = "torchvision_resnet" if fam == "resnet" else "torchvision"
    model = Classifier(net, kind, name, num_classes, tv.data_config(tv_name))
    return reset_head(model) if pretrained else model


def _create_small_cnn(
    name: str, num_classes: int, pretrained: bool, upsample_size: int, **kwargs: Any
) -> Classifier:
    """The report's small CNN behind the 'timm' interface; it has no pretrained weights."""
    if pretrained:
        raise PretrainedWeightsUnavailable(
            f"model '{name}' is trained from scratch and has no ImageNet weights; set `pretrained: false`"
        )
    if "drop_rate" in kwargs:
        if "dropout" in kwargs:
            raise TypeError(f"model '{name}': pass either dropout or drop_rate, not both")
        kwargs["dropout"] = kwargs.pop("drop_rate")
    kwargs.setdefault("img_size", upsample_size or 128)
    net = SmallCNN(num_classes=num_classes, **kwargs)
    return Classifier(net, "timm", name, num_classes, _timm_data_config(net), upsample_size=upsample_size)


def _with_upsample(model: Classifier, upsample_size: int) -> Classifier:
    if upsample_size:
        return Classifier(
            model.net, model.kind, model.name, model.num_classes, model.data_config, upsample_size
        )
    return model


def reset_head(model: Classifier, std: float = 0.01) -> Classifier:
    """Give a new classifier on pretrained features small weights and zero bias.

    Default inits (timm's EfficientNet uses U(+-1/sqrt(num_classes))) start a 10-class head at logits of +-10
    on ImageNet features, and the first epochs are spent undoing that.
    """
    head = model.classifier()
    if isinstance(head, nn.Linear) and head.out_features != 1000:
        nn.init.trunc_normal_(head.weight, std=std)
        nn.init.zeros_(head.bias)
    return model


def _create_efficientnet_pytorch(
    name: str, num_classes: int, pretrained: bool, weights: str, download: bool
) -> Classifier:
    from efficientnet_pytorch import EfficientNet

    out = max(num_classes, 1)
    if pretrained and not weights:
        if not download:
            raise PretrainedWeightsUnavailable(unavailable_message(name))
        net = EfficientNet.from_pretrained(name, num_classes=out)
    else:
        net = EfficientNet.from_name(name, num_classes=out)
        if pretrained:
            load_weights_file(net, weights)
    if num_classes == 0:
        net._fc = nn.Identity()
    config = {
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
    }
    model = Classifier(net, "efficientnet_pytorch", name, num_classes, config)
    model.num_features = net._bn1.num_features
    return reset_head(model) if pretrained else model


def create_ensemble(
    kind: str,
    name_a: str,
    name_b: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    download: bool = False,
    hidden: int = 2048,
) -> nn.Module:
    """The report's ensembles: ``logits`` (learnable w mixes logits) or ``concat`` (features -> MLP head)."""
    if kind == "logits":
        a = create_model(name_a, num_classes, pretrained=pretrained, download=download)
        b = create_model(name_b, num_classes, pretrained=pretrained, download=download)
        return WeightedLogitEnsemble(a, b)
    if kind == "concat":
        a = create_model(name_a, 0, pretrained=pretrained, download=download)
        b = create_model(name_b, 0, pretrained=pretrained, download=download)
        return FeatureConcatEnsemble(a, b, num_classes, hidden=hidden)
    raise ValueError(f"Unknown ensemble '{kind}', expected one of (logits, concat)")


def data_config(model: nn.Module) -> dict[str, Any]:
    """Preprocessing (mean, std, input size) the model's weights expect."""
    return dict(getattr(model, "data_config", {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}))


__all__ = [
    "Classifier",
    "PretrainedWeightsUnavailable",
    "check_model_name",
    "create_ensemble",
    "create_model",
    "data_config",
    "list_models",
]
