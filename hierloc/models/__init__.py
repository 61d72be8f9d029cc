"""Global descriptor networks (MobileNetVLAD, NetVLAD), their configurations and weights."""

from .base import GlobalDescriptorModel
from .checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from .configs import MODEL_SPECS, MobileNetVLADConfig, NetVLADConfig, get_model_spec
from .fetch import fetch_weights
from .loading import build_model, load_model, load_torchvision_mobilenetv2
from .mobilenetvlad import MobileNetVLAD
from .netvlad import NetVLADModel
from .weights import WEIGHTS, WeightsNotFoundError, resolve_weights

__all__ = [
    "GlobalDescriptorModel", "MobileNetVLAD", "NetVLADModel", "MobileNetVLADConfig", "NetVLADConfig",
    "MODEL_SPECS", "WEIGHTS", "build_model", "load_model", "get_model_spec", "save_checkpoint",
    "read_checkpoint", "resolve_weights", "load_torchvision_mobilenetv2", "CheckpointError",
    "WeightsNotFoundError", "fetch_weights",
]
