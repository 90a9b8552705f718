"""Models by name (timm, efficientnet-pytorch), offline ImageNet weights, ensembles."""

from .ensemble import FeatureConcatEnsemble, WeightedLogitEnsemble
from .factory import create_ensemble, create_model, data_config, list_models
from .pretrained import PretrainedWeightsUnavailable
from .wrappers import Classifier

__all__ = [
    "Classifier",
    "FeatureConcatEnsemble",
    "PretrainedWeightsUnavailable",
    "WeightedLogitEnsemble",
    "create_ensemble",
    "create_model",
    "data_config",
    "list_models",
]
