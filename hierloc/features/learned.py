"""Learned local features from kornia: XFeat, ALIKED and DISK, with weights from hierloc's registry.

kornia's `from_pretrained` downloads; here the same networks are built empty and loaded from the
files that `hierloc.models.weights.resolve_weights` finds (cache, offline pip packages), so
nothing is downloaded at run time.
"""

from __future__ import annotations

import copy
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
    # XFeat's keypoints are integer pixels of the image it sees; `subpixel` refines each with a
    # quadratic fit of its 3x3 heatmap neighbourhood (as SIFT refines its extrema). Strecha at 800 px,
    # median position error: fountain 0.48 -> 0.36 cm, Herz-Jesus unchanged (0.76 -> 0.77 cm).
    subpixel: bool = False


def fuse_for_inference(network: torch.nn.Module) -> torch.nn.Module:
    """An evaluation-mode copy of a CNN with each Conv2d + BatchNorm2d folded into one convolution, channels-last.

    On a CPU, channels-last convolutions of XFeat's thin layers (1 to 128 channels) run in about
    half the time of the default layout (oneDNN's blocked kernels), and folding the batch norms saves
    one pass over every feature map; outputs agree with the original within float rounding (1e-5).
    """
    network = copy.deepcopy(network).eval()
    for module in network.modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
                module[i] = torch.nn.utils.fuse_conv_bn_eval(conv, norm)
                module[i + 1] = torch.nn.Identity()
    return network.to(memory_format=torch.channels_last)


def refine_peaks(heatmap: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(N, 2) float (x, y) of integer peaks `positions` (N, 2) of an (H, W) heatmap, refined to subpixels.

    Per axis, the vertex of the parabola through the peak and its two neighbours, limited to half a
    pixel; peaks on the border or without a strict curvature stay where they are.
    """
    height, width = heatmap.shape
    x, y = positions[:, 0].long(), positions[:, 1].long()
    inside = (x > 0) & (x < width - 1) & (y > 0) & (y < height - 1)
    xc, yc = x.clamp(1, width - 2), y.clamp(1, height - 2)
    centre = heatmap[yc, xc]
    offsets = []
    for before, after in ((heatmap[yc, xc - 1], heatmap[yc, xc + 1]), (heatmap[yc - 1, xc], heatmap[yc + 1, xc])):
        curvature = before - 2.0 * centre + after
        safe = inside & (curvature < 0)
        offset = 0.5 * (before - after) / torch.where(safe, curvature, torch.ones_like(curvature))
        offsets.append(torch.where(safe, offset.clamp(-0.5, 0.5), torch.zeros_like(offset)))
    return positions.float() + torch.stack(offsets, dim=1)


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
        self._network = fuse_for_inference(self.model.net)

    @property
    def descriptor_dim(self) -> int:
        """XFeat descriptors have 64 dimensions."""
        return 64

    def describe_config(self) -> dict:
        """As the base class; `subpixel` only when on, so feature and match files written before it stay valid."""
        described = super().describe_config()
        if not described["subpixel"]:
            del described["subpixel"]
        return described

    @torch.inference_mode()
    def _detect(self, image: np.ndarray) -> dict[str, np.ndarray]:
        # kornia's detectAndCompute step by step, on the fused network: the image already has sides
        # divisible by 32 (`size_multiple`), so kornia's resize to them would only copy it.
        model, height, width = self.model, image.shape[0], image.shape[1]
        tensor = self._tensor(image).contiguous(memory_format=torch.channels_last)
        dense, logits, reliability = self._network(tensor)
        heatmap = model._get_kpts_heatmap(logits)
        positions = model._nms(heatmap, threshold=self.config.detection_threshold, kernel_size=5)
        scores = (model._nearest(heatmap, positions, height, width)
                  * model._bilinear(reliability, positions, height, width)).squeeze(-1)
        scores[torch.all(positions == -1, dim=-1)] = -1
        scores, order = torch.topk(scores, k=min(self.config.max_keypoints, scores.shape[-1]), dim=-1)
        positions = positions[0, order[0]]
        keep = scores[0] > 0
        scores, positions = scores[0, keep], positions[keep]
        descriptors = model.interpolator(torch.nn.functional.normalize(dense, dim=1), positions[None], H=height,
                                         W=width)[0]
        descriptors = torch.nn.functional.normalize(descriptors, dim=-1)
        keypoints = refine_peaks(heatmap[0, 0], positions) if self.config.subpixel else positions.float()
        return {"keypoints": keypoints.cpu().numpy(), "descriptors": descriptors.float().cpu().numpy(),
                "scores": scores.float().cpu().numpy()}


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
