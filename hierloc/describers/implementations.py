"""The three kinds of describers: a hierloc network, an exported network file, DenseVLAD."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..extraction.global_descriptors import GlobalExtractor, run_by_shape
from ..models.base import GlobalDescriptorModel
from ..models.checkpoint import save_checkpoint, tensors_sha256
from ..models.configs import canonical_model_name
from ..utils.hashing import arrays_sha256, file_sha256
from .base import IDENTITY_PREPROCESSING, NETWORK_PREPROCESSING, Describer, Preprocessing


class TensorDescriber(Describer):
    """A describer whose network takes [B, C, H, W] raw-pixel tensors (`run`), batched by image size."""

    def run(self, batch: torch.Tensor) -> np.ndarray:
        """[B, C, H, W] raw-pixel tensor of prepared images -> [B, D] float32 unit descriptors."""
        raise NotImplementedError

    def describe_prepared(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """[N, D] descriptors; images of equal size go through the network together."""
        return run_by_shape(images, self.run, self.descriptor_dim)


class NetworkDescriber(TensorDescriber):
    """A hierloc network (`hierloc.models`) run by GlobalExtractor (traced fast path, precision, device)."""

    kind = "network"

    def __init__(self, model: GlobalDescriptorModel, preprocessing: Preprocessing = NETWORK_PREPROCESSING,
                 device: str | torch.device = "auto", precision: str = "auto", fast: bool = True,
                 runtime: str = "auto") -> None:
        super().__init__(canonical_model_name(model.name), preprocessing)
        self.model = model
        # runtime/precision choices: hierloc.utils.device (one policy; descriptors checked by bench/inference.py)
        self.extractor = GlobalExtractor(model, device=device, precision=precision, fast=fast, runtime=runtime)
        self._sha256: str | None = None
        self._sha_lock = threading.Lock()

    @property
    def descriptor_dim(self) -> int:
        """Size of the descriptors."""
        return self.extractor.descriptor_dim

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the network's tensors (computed once)."""
        with self._sha_lock:
            if self._sha256 is None:
                self._sha256 = tensors_sha256(self.model.state_dict())
            return self._sha256

    def forget_fingerprint(self) -> None:
        """Call after changing the weights in place (e.g. k-means initialisation of the clusters)."""
        with self._sha_lock:
            self._sha256 = None
        self.extractor.reset()  # traced copies and exported engines hold the old weights

    def run(self, batch: torch.Tensor) -> np.ndarray:
        """[B, C, H, W] raw-pixel tensor -> [B, D]."""
        return self.extractor.run(batch)

    def weights_file_suffix(self) -> str:
        """Networks are stored as hierloc checkpoints."""
        return ".pth"

    def write_weights(self, path) -> None:
        """A hierloc checkpoint (configuration + state dict), read with `weights_only=True`."""
        save_checkpoint(self.model, path, provenance={"weights_sha256": self.weights_sha256})


class ExportedDescriber(TensorDescriber):
    """An ONNX or TorchScript file written by `hierloc export-model`."""

    kind = "exported"

    def __init__(self, runtime, preprocessing: Preprocessing = NETWORK_PREPROCESSING) -> None:
        super().__init__(canonical_model_name(runtime.model_name), preprocessing)
        self.runtime = runtime
        self.path = Path(runtime.path)
        # Exports record their network's fingerprint; older ones are known by their file.
        self._sha256 = runtime.metadata.get("weights_sha256") or file_sha256(self.path)

    @property
    def descriptor_dim(self) -> int:
        """Size of the descriptors."""
        return self.runtime.descriptor_dim

    @property
    def weights_sha256(self) -> str:
        """The exported network's fingerprint."""
        return self._sha256

    def run(self, batch: torch.Tensor) -> np.ndarray:
        """[B, C, H, W] raw-pixel tensor -> [B, D]."""
        return self.runtime.run(batch)

    def weights_file_suffix(self) -> str:
        """The file's own suffix (.onnx, .pt)."""
        return self.path.suffix or ".onnx"

    def write_weights(self, path) -> None:
        """A copy of the exported file."""
        from ..utils.io import atomic_path

        with atomic_path(Path(path), suffix=self.weights_file_suffix()) as tmp:
            shutil.copyfile(self.path, tmp)


class DenseVLADDescriber(Describer):
    """DenseVLAD (dense RootSIFT, VLAD, PCA-whitening); its vocabulary file is its weights."""

    kind = "densevlad"

    def __init__(self, model, preprocessing: Preprocessing = IDENTITY_PREPROCESSING) -> None:
        super().__init__("densevlad", preprocessing)
        self.model = model
        arrays = {name: getattr(model, name) for name in ("centroids", "pca_mean", "pca_matrix")
                  if getattr(model, name) is not None}
        # Only settings that differ from their defaults: a field added later with a default that keeps
        # the old behaviour leaves the fingerprint of existing vocabularies (and the indexes recording it) valid.
        defaults = asdict(type(model.config)())
        settings = {key: value for key, value in asdict(model.config).items() if defaults.get(key) != value}
        self._sha256 = arrays_sha256(arrays, json.dumps(settings, sort_keys=True, default=str))

    @property
    def descriptor_dim(self) -> int:
        """Size of the descriptors."""
        return self.model.descriptor_dim

    @property
    def weights_sha256(self) -> str:
        """Fingerprint of the vocabulary, PCA and configuration."""
        return self._sha256

    def describe_prepared(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """[N, D] descriptors."""
        return self.model.describe_batch(list(images))

    def weights_file_suffix(self) -> str:
        """DenseVLAD files are .npz."""
        return ".npz"

    def write_weights(self, path) -> None:
        """The vocabulary file (`DenseVLAD.save`)."""
        self.model.save(path)
