"""Class activation maps through the grad-cam package, plus the pointing-game score.

``compute_cams`` runs Grad-CAM (or another pytorch_grad_cam method by name) on ``model.cam_layer`` (the
feature-map hook every ``fgvc_lib`` model exposes), one target per image. ``pointing_game`` scores whether
each CAM's maximum falls within a radius of a known part location.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .registry import unknown_name_error

CAM_METHODS = ("gradcam", "gradcam++", "hirescam", "layercam", "eigencam")


def _cam_class(method: str):
    import pytorch_grad_cam as pgc

    table = {
        "gradcam": pgc.GradCAM,
        "gradcam++": pgc.GradCAMPlusPlus,
        "hirescam": pgc.HiResCAM,
        "layercam": pgc.LayerCAM,
        "eigencam": pgc.EigenCAM,
    }
    if method not in table:
        raise unknown_name_error("CAM method", method, table)
    return table[method]


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int] | None = None,
    *,
    layer: nn.Module | None = None,
    method: str = "gradcam",
    reshape_transform=None,
) -> np.ndarray:
    """CAMs of shape (B, H, W) in [0, 1] for the classes ``targets`` (None: each image's predicted class).

    The model is left in eval mode (grad-cam switches it).
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
    with _cam_class(method)(model=model, target_layers=[layer], reshape_transform=reshape_transform) as cam:
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
