"""Training: distillation from any teacher, triplets mined from poses, and the data tools around them."""

from .config import load_config, shipped_configs
from .export_descriptors import export_descriptors
from .losses import distillation_loss, similarity_distillation_loss, triplet_loss
from .trainer import TrainingError, train
from .triplets import mine_triplets

__all__ = ["load_config", "shipped_configs", "train", "TrainingError", "distillation_loss",
           "similarity_distillation_loss", "triplet_loss",
           "mine_triplets", "export_descriptors"]
