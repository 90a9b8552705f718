"""The bird report's two ensembles of two backbones."""

from __future__ import annotations

import torch
from torch import nn

from .wrappers import Classifier


class WeightedLogitEnsemble(nn.Module):
    """``w * a(x) + (1 - w) * b(x)`` with one learnable scalar ``w`` (initialised to 0.5)."""

    def __init__(self, model_a: Classifier, model_b: Classifier, w_init: float = 0.5):
        super().__init__()
        if model_a.num_classes != model_b.num_classes:
            raise ValueError(
                f"ensemble members disagree on num_classes: {model_a.num_classes} vs {model_b.num_classes}"
            )
        self.model_a, self.model_b = model_a, model_b
        self.w = nn.Parameter(torch.tensor(float(w_init)))
        self.num_classes = model_a.num_classes
        self.data_config = model_a.data_config
        self.name = f"logits({model_a.name}+{model_b.name})"

    @property
    def cam_layer_name(self) -> str:
        """The first member's CAM layer (see ``Classifier.cam_layer_name``)."""
        return f"model_a.{self.model_a.cam_layer_name}"

    @property
    def cam_layer(self) -> nn.Module:
        return self.model_a.cam_layer

    @property
    def cam_reshape_transform(self):
        return self.model_a.cam_reshape_transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * self.model_a(x) + (1 - self.w) * self.model_b(x)


class FeatureConcatEnsemble(nn.Module):
    """Concatenate both members' pooled features, then Linear(hidden) -> ReLU -> Linear(num_classes)."""

    def __init__(self, model_a: Classifier, model_b: Classifier, num_classes: int, hidden: int = 2048):
        super().__init__()
        self.model_a, self.model_b = model_a, model_b
        self.classifier = nn.Sequential(
            nn.Linear(model_a.num_features + model_b.num_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        self.num_classes = num_classes
        self.data_config = model_a.data_config
        self.name = f"concat({model_a.name}+{model_b.name})"

    @property
    def cam_layer_name(self) -> str:
        """The first member's CAM layer (see ``Classifier.cam_layer_name``)."""
        return f"model_a.{self.model_a.cam_layer_name}"

    @property
    def cam_layer(self) -> nn.Module:
        return self.model_a.cam_layer

    @property
    def cam_reshape_transform(self):
        return self.model_a.cam_reshape_transform

    def features(self, x: torch.Tensor) -> torch.Tensor:
        fa = self.model_a.pool(self.model_a.forward_features(x))
        fb = self.model_b.pool(self.model_b.forward_features(x))
        return torch.cat([fa, fb], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
