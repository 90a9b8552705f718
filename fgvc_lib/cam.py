"""Class activation maps through the grad-cam package, plus the pointing-game score.

``compute_cams`` runs Grad-CAM (or another pytorch_grad_cam method by name, ``CAM_METHODS``) on
``model.cam_layer`` (the hook every ``fgvc_lib`` model exposes) or on the layers given, one target per image,
with ``model.cam_reshape_transform`` for channels-last activations. The default ``cam_layer`` of CNNs is the
last stage whose output stride is at most 16 (EfficientNet ``net.blocks.4``, ResNet ``net.layer3``,
Inception v3 ``net.Mixed_6e`` ...; ``models.wrappers.default_cam_layer_name``): the last feature map (stride
32, 3x3 at 96 px) scored below a random peak on the bird pointing game (docs/cam_layers.md,
tools/compare_cam_layers.py). For Swin V1 it is ``layers[-1].blocks[-1].norm1``, not the final normalised map
(docs/swin_cam_layer.md). ``resolve_cam_layers`` turns the ``cam_layer`` parameter (one dotted module path, or
several separated by commas: their CAMs are averaged, pytorch_grad_cam's multi-layer fusion) into modules,
with a did-you-mean error. ``pointing_game`` scores whether each CAM's maximum falls within a radius of a
known part location.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .registry import closest, did_you_mean, unknown_name_error

CAM_METHODS = (
    "gradcam",
    "gradcam++",
    "hirescam",
    "layercam",
    "xgradcam",
    "eigencam",
    "eigengradcam",
    "segeigencam",
    "gradcamelementwise",
)
"""pytorch_grad_cam methods by name (the ``cam_method`` parameter); the gradient-free perturbation methods
(ScoreCAM, AblationCAM) are left out: they need a forward pass per channel."""


def _cam_class(method: str):
    import pytorch_grad_cam as pgc

    table = {
        "gradcam": pgc.GradCAM,
        "gradcam++": pgc.GradCAMPlusPlus,
        "hirescam": pgc.HiResCAM,
        "layercam": pgc.LayerCAM,
        "xgradcam": pgc.XGradCAM,
        "eigencam": pgc.EigenCAM,
        "eigengradcam": pgc.EigenGradCAM,
        "segeigencam": pgc.SegEigenCAM,
        "gradcamelementwise": pgc.GradCAMElementWise,
    }
    if method not in table:
        raise unknown_name_error("CAM method", method, table)
    return table[method]


def check_cam_method(method: str, param: str = "cam_method") -> str:
    """``method`` when it is one of ``CAM_METHODS``, else a ValueError naming ``param`` with a did-you-mean."""
    if method not in CAM_METHODS:
        raise ValueError(
            f"parameter {param!r}: unknown CAM method {method!r}{did_you_mean(method, CAM_METHODS)} "
            f"(expected one of: {', '.join(CAM_METHODS)})"
        )
    return method


def _module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def resolve_cam_layers(model: nn.Module, spec: str, param: str = "cam_layer") -> list[nn.Module]:
    """Modules of ``spec``: one dotted path inside ``model`` (e.g. ``net.blocks.4``) or several separated by
    commas (fused: their CAMs are averaged). Empty: the model's default ``cam_layer``.

    A path that is not a submodule raises a ValueError naming ``param``, the value and the closest module
    names of the model.
    """
    paths = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not paths:
        default = getattr(model, "cam_layer", None)
        if default is None:
            raise ValueError(f"parameter {param!r}: the model has no default `cam_layer`; name a module path")
        return [default]
    modules = []
    for path in paths:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            names = _module_names(model)
            close = closest(path, names, n=5, cutoff=0.5)
            default = getattr(model, "cam_layer_name", "")
            hint = f"; closest module names: {', '.join(close)}" if close else ""
            hint += f"; default for this model: {default!r}" if default else ""
            raise ValueError(
                f"parameter {param!r}: {path!r} is not a module of model "
                f"{getattr(model, 'name', type(model).__name__)!r}{hint} "
                f"(a dotted path from model.named_modules(), several separated by commas)"
            ) from None
        modules.append(module)
    return modules


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int] | None = None,
    *,
    layer: nn.Module | Sequence[nn.Module] | None = None,
    method: str = "gradcam",
    reshape_transform=None,
) -> np.ndarray:
    """CAMs of shape (B, H, W) in [0, 1] for the classes ``targets`` (None: each image's predicted class).

    ``layer``: the target module, or several (each one's CAM is upsampled to the input and scaled to [0, 1],
    then they are averaged: pytorch_grad_cam's multi-layer fusion); None: ``model.cam_layer``. The model is
    left in eval mode (grad-cam switches it).
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = layer if layer is not None else getattr(model, "cam_layer", None)
    if reshape_transform is None:  # e.g. Swin's channels-last maps, derived from the model's own layout
        reshape_transform = getattr(model, "cam_reshape_transform", None)
    if layer is None:
        raise ValueError("no CAM layer: pass `layer=` or use a model with a `cam_layer` attribute")
    device = next(model.parameters()).device
    images = images.to(device)
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"targets: expected one per image ({len(images)}), got {len(targets)}")
    cam_targets = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    layers = [layer] if isinstance(layer, nn.Module) else list(layer)
    if not layers:
        raise ValueError("no CAM layer: `layer=` is an empty sequence")
    with _cam_class(method)(model=model, target_layers=layers, reshape_transform=reshape_transform) as cam:
        return cam(input_tensor=images, targets=cam_targets)


def cam_peaks(cams: np.ndarray) -> np.ndarray:
    """(B, 2) array of (x, y) pixel positions of each CAM's maximum."""
    b, h, w = cams.shape
    flat = cams.reshape(b, -1).argmax(axis=1)
    return np.stack([flat % w, flat // w], axis=1).astype(float)


def pointing_game(cams: np.ndarray, points: Sequence[tuple[float, float] | None], radius: float) -> float:
    """Share of images whose CAM peak lies within ``radius`` pixels of their point (images without one skipped).

    Returns NaN when no image has a point.
    """
    if len(points) != len(cams):
        raise ValueError(f"points: expected one per CAM ({len(cams)}), got {len(points)}")
    peaks = cam_peaks(cams)
    hits = [
        float(np.hypot(*(peak - np.asarray(pt, dtype=float))) <= radius)
        for peak, pt in zip(peaks, points, strict=False)
        if pt is not None
    ]
    return float(np.mean(hits)) if hits else float("nan")


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """Blend an RGB float image in [0, 1] (H, W, 3) with its CAM; returns uint8 RGB."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(
        np.clip(image, 0, 1).astype(np.float32), cam, use_rgb=True, image_weight=image_weight
    )


# ---------------------------------------------------------------------------------------------- CAM-guided crops
def cam_box(cam: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float, float]:
    """(x, y, w, h) box around the connected region of ``cam >= threshold * max`` that holds the CAM peak."""
    from scipy import ndimage

    if cam.ndim != 2:
        raise ValueError(f"cam: expected a 2-D map, got shape {cam.shape}")
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    mask = cam >= threshold * float(cam.max()) if cam.max() > 0 else np.ones_like(cam, dtype=bool)
    labels, _ = ndimage.label(mask)
    ys, xs = np.nonzero(labels == labels[peak])
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def expand_box(
    box: tuple[float, float, float, float], margin: float, width: float, height: float
) -> tuple[float, float, float, float]:
    """Grow a box by ``margin`` of its size on every side, clipped to the image."""
    x, y, w, h = box
    x0, y0 = max(0.0, x - margin * w), max(0.0, y - margin * h)
    x1, y1 = min(float(width), x + w + margin * w), min(float(height), y + h + margin * h)
    return x0, y0, x1 - x0, y1 - y0


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax0, ay0, ax1, ay1 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx0, by0, bx1, by1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def crop_to_boxes(
    images: torch.Tensor, boxes: Sequence[tuple[float, float, float, float]], size: int
) -> torch.Tensor:
    """Crop each image of a (B, C, H, W) batch to its (x, y, w, h) box and resize to ``size`` (one roi_align)."""
    from torchvision.ops import roi_align

    rois = torch.tensor([[i, x, y, x + w, y + h] for i, (x, y, w, h) in enumerate(boxes)], dtype=images.dtype)
    return roi_align(images, rois.to(images.device), output_size=(size, size), aligned=True)
