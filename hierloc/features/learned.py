"""Learned local features from kornia: XFeat, ALIKED and DISK, with weights from hierloc's registry.

kornia's `from_pretrained` downloads; here the same networks are built empty and loaded from the
files that `hierloc.models.weights.resolve_weights` finds (cache, offline pip packages), so
nothing is downloaded at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..utils.device import resolve_device
from .base import ExtractorConfig, LocalFeatureExtractor
from .torch_utils import load_state_dict, read_weights


class _TorchExtractor(LocalFeatureExtractor):
    """A kornia network on a device; images go in as float tensors in [0, 1]."""

    def __init__(self, config: ExtractorConfig, device: str | torch.device = "cpu") -> None:
        super().__init__(config)
        self.device = resolve_device(device)

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        array = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)[None].float() / 255.0


@dataclass
class XFeatConfig(ExtractorConfig):
    """XFeat sparse keypoints (64-D descriptors); `weights` is a registry name or a file."""

    detection_threshold: float = 0.05
    weights: str = "xfeat"


class XFeat(_TorchExtractor):
    """XFeat (CVPR 2024): a light CNN, keypoints at heatmap maxima, bicubic-sampled 64-D descriptors."""

    name = "xfeat"
    grayscale = True
    size_multiple = 32  # resized here, so that the keypoints map back exactly (kornia would truncate)

    def __init__(self, config: XFeatConfig | None = None, device: str | torch.device = "cpu") -> None:
        import kornia.feature as KF

        config = config or XFeatConfig()
        super().__init__(config, device)
        self.model = KF.XFeat(top_k=config.max_keypoints, detection_threshold=config.detection_threshold)
        state_dict, source = read_weights(config.weights)
        load_state_dict(self.model.net, state_dict, source)
        self.model = self.model.eval().to(self.device)

    @property
    def descriptor_dim(self) -> int:
        """XFeat descriptors have 64 dimensions."""
        return 64

    @torch.inference_mode()
    def _detect(self, image: np.ndarray) -> dict[str, np.ndarray]:
        out = self.model.detectAndCompute(self._tensor(image), top_k=self.config.max_keypoints)[0]
        return {k: out[k].float().cpu().numpy() for k in ("keypoints", "descriptors", "scores")}


@dataclass
class ALIKEDConfig(ExtractorConfig):
    """ALIKED; detection_threshold <= 0 keeps the `max_keypoints` strongest maxima (top-k mode)."""

    model: str = "aliked-n16"
    detection_threshold: float = 0.0
    nms_radius: int = 2
    weights: str | None = None  # default: the registry entry named like `model`


class ALIKED(_TorchExtractor):
    """ALIKED (TIM 2023): deformable descriptor heads, sub-pixel keypoints, 128-D descriptors (n16/n32)."""

    name = "aliked"
    grayscale = False

    def __init__(self, config: ALIKEDConfig | None = None, device: str | torch.device = "cpu") -> None:
        import kornia.feature as KF

        config = config or ALIKEDConfig()
        super().__init__(config, device)
        self.model = KF.ALIKED(config.model, max_num_keypoints=config.max_keypoints,
                               detection_threshold=config.detection_threshold, nms_radius=config.nms_radius)
        state_dict, source = read_weights(config.weights or config.model)
        load_state_dict(self.model, state_dict, source, derived=("dkd.hw_grid",))
        self.model = self.model.eval().to(self.device)
        self._dim = int(self.model.desc_head.sf_conv.out_channels)

    @property
    def descriptor_dim(self) -> int:
        """128 for aliked-n16/n32, 64 for aliked-t16."""
        return self._dim

    @torch.inference_mode()
    def _detect(self, image: np.ndarray) -> dict[str, np.ndarray]:
        out = self.model(self._tensor(image))[0]
        return {"keypoints": out.keypoints.float().cpu().numpy(), "descriptors": out.descriptors.float().cpu().numpy(),
                "scores": out.keypoint_scores.float().cpu().numpy()}


@dataclass
class DISKConfig(ExtractorConfig):
    """DISK (depth checkpoint), the `max_keypoints` strongest maxima of a 5x5 window."""

    nms_window: int = 5
    weights: str = "disk_depth"


class DISK(_TorchExtractor):
    """DISK (NeurIPS 2020): a U-Net giving a keypoint heatmap and dense 128-D descriptors."""

    name = "disk"
    grayscale = False

    def __init__(self, config: DISKConfig | None = None, device: str | torch.device = "cpu") -> None:
        import kornia.feature as KF

        config = config or DISKConfig()
        super().__init__(config, device)
        self.model = KF.DISK()
        state_dict, source = read_weights(config.weights)
        load_state_dict(self.model, state_dict.get("extractor", state_dict), source)
        self.model = self.model.eval().to(self.device)

    @property
    def descriptor_dim(self) -> int:
        """DISK descriptors have 128 dimensions."""
        return 128

    @torch.inference_mode()
    def _detect(self, image: np.ndarray) -> dict[str, np.ndarray]:
        out = self.model(self._tensor(image), n=self.config.max_keypoints, window_size=self.config.nms_window,
                         pad_if_not_divisible=True)[0]
        descriptors = torch.nn.functional.normalize(out.descriptors.float(), dim=-1)
        return {"keypoints": out.keypoints.float().cpu().numpy(), "descriptors": descriptors.cpu().numpy(),
                "scores": out.detection_scores.float().cpu().numpy()}
