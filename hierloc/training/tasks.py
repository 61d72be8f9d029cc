"""What is learned: distillation from teacher descriptors, or triplets mined from poses.

A task builds its training and validation datasets from the `data` config and turns a batch into a
loss and metrics; the trainer does everything else.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .augmentation import build_augmentation
from .config import DEFAULT_DISTILLATION_MODEL
from .data import DistillationDataset, list_distillation_items, split_items
from .losses import distillation_loss, similarity_distillation_loss, triplet_loss

logger = logging.getLogger(__name__)


def _image_size(preprocessing: dict) -> tuple[int, int] | None:
    resize = preprocessing.get("resize")
    return (int(resize[0]), int(resize[1])) if resize else None


def _augmented(augmentation, images: torch.Tensor, augment: bool, seed: int | None) -> torch.Tensor:
    if augment and augmentation is not None:
        return augmentation(images, seed=seed)
    return images.float()


def similarity_anchors(dataset: DistillationDataset, count: int, seed: int = 0) -> torch.Tensor:
    """[M, D] teacher descriptors of `count` training items (all when fewer), chosen with `seed`."""
    if count < 1:
        raise ValueError(f"model.distill_anchors must be at least 1, got {count}")
    chosen = range(len(dataset))
    if count < len(dataset):
        generator = torch.Generator().manual_seed(seed)
        chosen = sorted(torch.randperm(len(dataset), generator=generator)[:count].tolist())
    return torch.from_numpy(np.stack([dataset.read_descriptor(dataset.items[i]) for i in chosen]))


class DistillationTask:
    """Student descriptors regress the teacher's: loss l2_weight * 0.5 * |s - t|^2, plus optionally
    similarity_weight * KL of the teacher's and the student's similarities to teacher anchors
    (`similarity_distillation_loss`); the validation error is 0.5 * |s - t|^2.

    model keys: `distill_l2_weight` (1), `distill_similarity_weight` (0: the original's plain L2),
    `distill_temperature` (0.05), `distill_anchors` (4096 teacher descriptors of training images).
    """

    validation_metric = "l2_error"

    def __init__(self, config: dict, data_root=None) -> None:
        data = config["data"]
        items = list_distillation_items(data, data_root)
        train_items, validation_items = split_items(items, int(data["validation_size"]))
        self.train_dataset = DistillationDataset(train_items, data["preprocessing"], data["cache_in_memory"])
        # The validation set is small and read every validation: always kept in memory.
        self.validation_dataset = DistillationDataset(validation_items, data["preprocessing"], cache_in_memory=True)
        self.target_dim = self.train_dataset.descriptor_dim
        self.augmentation = build_augmentation(data.get("augmentation"), _image_size(data["preprocessing"]))
        model = config["model"]
        options = {**DEFAULT_DISTILLATION_MODEL, **model}
        self.l2_weight = float(options["distill_l2_weight"])
        self.similarity_weight = float(options["distill_similarity_weight"])
        self.temperature = float(options["distill_temperature"])
        if self.l2_weight < 0 or self.similarity_weight < 0 or self.l2_weight + self.similarity_weight <= 0:
            raise ValueError("model.distill_l2_weight and model.distill_similarity_weight must be >= 0, "
                             "not both 0")
        self.anchors = None
        if self.similarity_weight > 0:
            self.anchors = similarity_anchors(self.train_dataset, int(options["distill_anchors"]),
                                              seed=int(config.get("seed", 0)))
        logger.info("distillation data: %d training and %d validation images, %d-D teacher descriptors%s",
                    len(self.train_dataset), len(self.validation_dataset), self.target_dim,
                    f"; similarity term on {len(self.anchors)} teacher anchors at temperature {self.temperature}"
                    if self.anchors is not None else "")

    def sample_images(self, count: int) -> list[torch.Tensor]:
        """[1, C, H, W] float images of the first training items (for k-means initialisation)."""
        count = min(count, len(self.train_dataset))
        return [self.train_dataset[i]["image"][None].float() for i in range(count)]

    def loss(self, model, batch: dict, device: torch.device, augment: bool,
             augmentation_seed: int | None = None) -> tuple[torch.Tensor, dict]:
        """(loss, metrics) of one batch; `augmentation_seed` see `BatchAugmentation.forward`."""
        images = batch["image"].to(device, non_blocking=True)
        images = _augmented(self.augmentation, images, augment, augmentation_seed)
        student = model(images)
        terms = self._terms(student, batch["descriptor"].to(device, non_blocking=True))
        loss = self.l2_weight * terms["l2_error"]
        if "similarity_kl" in terms:
            loss = loss + self.similarity_weight * terms["similarity_kl"]
        if self.anchors is None:  # the plain L2 loss: its only term is the loss
            return loss, {"loss": loss.detach()}
        return loss, {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    def _terms(self, student: torch.Tensor, teacher: torch.Tensor) -> dict:
        terms = {"l2_error": distillation_loss(student, teacher)}
        if self.anchors is not None:
            self.anchors = self.anchors.to(student.device)
            terms["similarity_kl"] = similarity_distillation_loss(student, teacher, self.anchors, self.temperature)
        return terms

    def validation_metrics(self, model, batch: dict, device: torch.device) -> dict:
        """Per-batch validation metrics (averaged over the set by the trainer)."""
        student = model(batch["image"].to(device).float())
        return self._terms(student, batch["descriptor"].to(device))


class TripletTask:
    """Anchor-positive-negative triplets mined from poses; the original's triplet loss variants."""

    validation_metric = "loss"

    def __init__(self, config: dict, data_root=None) -> None:
        from .triplets import TripletDataset, load_triplet_map, triplets_for

        data = config["data"]
        model = config["model"]
        self.margin = float(model["triplet_margin"])
        self.squared = bool(model["loss_squared"])
        self.loss_in = bool(model["loss_in"])
        keyframes = load_triplet_map(data, data_root)
        triplets = triplets_for(keyframes, data, data_root)
        train, validation = split_items(list(triplets), int(data["validation_size"]))
        self.train_dataset = TripletDataset(keyframes, train, data["preprocessing"], data["cache_in_memory"])
        self.validation_dataset = TripletDataset(keyframes, validation, data["preprocessing"], cache_in_memory=True)
        self.triplets = triplets
        self.target_dim = None
        self.augmentation = build_augmentation(data.get("augmentation"), _image_size(data["preprocessing"]))
        logger.info("triplet data: %d training and %d validation triplets over %d keyframes",
                    len(self.train_dataset), len(self.validation_dataset), len(keyframes))

    def sample_images(self, count: int) -> list[torch.Tensor]:
        """[1, C, H, W] float anchor images of the first training triplets."""
        count = min(count, len(self.train_dataset))
        return [self.train_dataset[i]["image"][None].float() for i in range(count)]

    def _descriptors(self, model, batch: dict, device: torch.device, augment: bool,
                     augmentation_seed: int | None = None):
        # One forward pass over the three images: the towers share weights, and DDP needs a single pass.
        images = torch.cat([batch["image"], batch["p"], batch["n"]]).to(device, non_blocking=True)
        return model(_augmented(self.augmentation, images, augment, augmentation_seed)).chunk(3)

    def loss(self, model, batch: dict, device: torch.device, augment: bool,
             augmentation_seed: int | None = None) -> tuple[torch.Tensor, dict]:
        """(loss, metrics) of one batch; `augmentation_seed` see `BatchAugmentation.forward`."""
        a, p, n = self._descriptors(model, batch, device, augment, augmentation_seed)
        loss, dp, dn = triplet_loss(a, p, n, self.margin, self.squared, self.loss_in)
        return loss, {"loss": loss.detach(), "distance_p": dp.detach(), "distance_n": dn.detach()}

    def validation_metrics(self, model, batch: dict, device: torch.device) -> dict:
        """Per-batch validation metrics (averaged over the set by the trainer)."""
        a, p, n = self._descriptors(model, batch, device, augment=False)
        loss, dp, dn = triplet_loss(a, p, n, self.margin, self.squared, self.loss_in)
        return {"loss": loss, "distance_p": dp, "distance_n": dn,
                "triplet_accuracy": ((a - p).norm(dim=-1) < (a - n).norm(dim=-1)).float().mean()}


def make_task(config: dict, data_root=None):
    """The task the `data.name` of a config asks for."""
    kind = config["data"]["name"]
    if kind == "distillation":
        return DistillationTask(config, data_root)
    if kind == "triplets":
        return TripletTask(config, data_root)
    raise ValueError(f"unknown data.name {kind!r}: use 'distillation' or 'triplets'")
