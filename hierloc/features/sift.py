"""SIFT keypoints and descriptors from OpenCV (default) or pycolmap, with the RootSIFT option."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from .base import ExtractorConfig, LocalFeatureExtractor

SIFT_BACKENDS = ("opencv", "pycolmap")


@dataclass
class SIFTConfig(ExtractorConfig):
    """OpenCV or pycolmap SIFT; RootSIFT (L1 normalisation, square root) by default."""

    root_sift: bool = True
    backend: str = "opencv"
    contrast_threshold: float = 0.02  # COLMAP's default (peak_threshold 0.02 / 3); OpenCV's is 0.04
    edge_threshold: float = 10.0
    upright: bool = False


def normalize_sift(descriptors: np.ndarray, root: bool) -> np.ndarray:
    """Unit-norm SIFT (L2) or RootSIFT (L1 then element-wise square root, which is L2-normalised)."""
    descriptors = np.asarray(descriptors, dtype=np.float32)
    if root:
        l1 = np.maximum(np.abs(descriptors).sum(axis=1, keepdims=True), 1e-12)
        return np.sqrt(descriptors / l1)
    return descriptors / np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)


class SIFT(LocalFeatureExtractor):
    """Difference-of-Gaussians keypoints with SIFT descriptors, the strongest `max_keypoints` kept."""

    name = "sift"
    grayscale = True
    uses_torch = False  # OpenCV or pycolmap

    def __init__(self, config: SIFTConfig | None = None) -> None:
        config = config or SIFTConfig()
        super().__init__(config)
        if config.backend not in SIFT_BACKENDS:
            raise ValueError(f"unknown SIFT backend {config.backend!r}; choose one of {', '.join(SIFT_BACKENDS)}")
        self._lock = threading.Lock()
        if config.backend == "opencv":
            # Without precise upscaling OpenCV's doubled first octave shifts every keypoint by +0.25 px
            # (measured on Gaussian blobs); that bias shows at the centimetre level of localization.
            self._sift = cv2.SIFT_create(nfeatures=config.max_keypoints, contrastThreshold=config.contrast_threshold,
                                         edgeThreshold=config.edge_threshold, enable_precise_upscale=True)
        else:
            import pycolmap

            options = pycolmap.FeatureExtractionOptions()
            options.sift.max_num_features = config.max_keypoints
            options.sift.peak_threshold = config.contrast_threshold / 3.0
            options.sift.edge_threshold = config.edge_threshold
            options.sift.upright = config.upright
            options.sift.normalization = (pycolmap.Normalization.L1_ROOT if config.root_sift
                                          else pycolmap.Normalization.L2)
            self._sift = pycolmap.FeatureExtractor.create(options, device=pycolmap.Device.cpu)

    @property
    def descriptor_dim(self) -> int:
        """SIFT descriptors have 128 bins."""
        return 128

    def _detect(self, image: np.ndarray) -> dict[str, np.ndarray]:
        if self.config.backend == "opencv":
            return self._detect_opencv(image)
        return self._detect_pycolmap(image)

    def _detect_opencv(self, image: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            keypoints, descriptors = self._sift.detectAndCompute(image, None)
        if not keypoints:
            return self._empty()
        if self.config.upright:
            # One descriptor per location: OpenCV repeats a keypoint for each dominant orientation.
            _, keep = np.unique(np.array([k.pt for k in keypoints]).round(3), axis=0, return_index=True)
            keypoints = [keypoints[i] for i in sorted(keep)]
            descriptors = descriptors[sorted(keep)]
        xy = np.array([k.pt for k in keypoints], dtype=np.float32)
        responses = np.array([k.response for k in keypoints], dtype=np.float32)
        order = np.argsort(-responses, kind="stable")[: self.config.max_keypoints]
        return {
            "keypoints": xy[order],
            "descriptors": normalize_sift(descriptors[order], self.config.root_sift),
            "scores": responses[order],
            "scales": np.array([k.size / 2.0 for k in keypoints], dtype=np.float32)[order],
            "orientations": np.radians([k.angle for k in keypoints]).astype(np.float32)[order],
        }

    def _detect_pycolmap(self, image: np.ndarray) -> dict[str, np.ndarray]:
        import pycolmap

        with self._lock:
            keypoints, descriptors = self._sift.extract_from_uint8_array(np.ascontiguousarray(image))
        matrix = pycolmap.keypoints_to_matrix(keypoints)
        if len(matrix) == 0:
            return self._empty()
        raw = np.asarray(descriptors.data, dtype=np.float32)  # uint8, normalised by COLMAP and scaled to 512
        return {
            "keypoints": matrix[:, :2] - 0.5,  # COLMAP pixels -> the OpenCV pixels `_detect` returns
            "descriptors": normalize_sift(raw, root=False),
            "scores": matrix[:, 2],  # COLMAP exposes no detector response; the scale ranks stability
            "scales": matrix[:, 2],
            "orientations": matrix[:, 3],
        }

    @staticmethod
    def _empty() -> dict[str, np.ndarray]:
        return {"keypoints": np.zeros((0, 2), np.float32), "descriptors": np.zeros((0, 128), np.float32),
                "scores": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32),
                "orientations": np.zeros(0, np.float32)}
