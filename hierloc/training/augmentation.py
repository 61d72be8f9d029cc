"""Batch augmentation for distillation (kornia): photometric changes and small crops.

The configuration follows the original's (hfnet's `augmentation.photometric`, pixel units 0..255):

    augmentation:
      photometric:
        enable: true
        primitives: [random_brightness, random_contrast, additive_gaussian_noise, additive_shade, motion_blur]
        params:
          random_brightness: {delta_range: [-75, 40]}
          random_contrast: {strength_range: [0.3, 1.5]}
          additive_gaussian_noise: {stddev_range: [0, 10], prob: 0.5}
          additive_shade: {transparency_range: [-0.5, 0.5], prob: 0.5}
          motion_blur: {kernel_size: [13, 21], prob: 0.1}
      crop: {enable: true, scale: [0.7, 1.0], ratio: [0.9, 1.1]}

It runs on whole batches on the training device after loading (on the GPU where there is one). kornia
draws from torch's global generator; given a `seed`, the batch is augmented under a forked and
seeded global generator (`hierloc.training.randomness`), which is how training keeps augmentation
on its own checkpointed stream.
"""

from __future__ import annotations

import torch
from torch import nn

PHOTOMETRIC_PRIMITIVES = ("random_brightness", "random_contrast", "additive_gaussian_noise", "additive_shade",
                          "motion_blur")
DEFAULT_PARAMS = {
    "random_brightness": {"delta_range": [-75.0, 40.0], "prob": 1.0},
    "random_contrast": {"strength_range": [0.3, 1.5], "prob": 1.0},
    "additive_gaussian_noise": {"stddev_range": [0.0, 10.0], "prob": 0.5},
    "additive_shade": {"transparency_range": [-0.5, 0.5], "prob": 0.5},
    "motion_blur": {"kernel_size": [13, 21], "prob": 0.1},
}


def _odd(value: int) -> int:
    return int(value) if int(value) % 2 else int(value) + 1


def _primitive(name: str, params: dict) -> nn.Module:
    import kornia.augmentation as K

    p = dict(DEFAULT_PARAMS[name], **(params or {}))
    prob = float(p["prob"])
    if name == "random_brightness":
        low, high = p["delta_range"]
        return K.RandomBrightness((1.0 + low / 255.0, 1.0 + high / 255.0), p=prob)
    if name == "random_contrast":
        return K.RandomContrast(tuple(float(v) for v in p["strength_range"]), p=prob)
    if name == "additive_gaussian_noise":
        # kornia draws noise of one standard deviation: the top of the range, applied with `prob`.
        return K.RandomGaussianNoise(mean=0.0, std=float(p["stddev_range"][1]) / 255.0, p=prob)
    if name == "additive_shade":
        return RandomSmoothShade(tuple(float(v) for v in p["transparency_range"]), prob)
    if name == "motion_blur":
        sizes = p["kernel_size"]
        sizes = (_odd(sizes[0]), _odd(sizes[1])) if isinstance(sizes, (list, tuple)) else _odd(sizes)
        return K.RandomMotionBlur(sizes, angle=180.0, direction=(-1.0, 1.0), p=prob)
    raise ValueError(f"unknown photometric augmentation {name!r}; known: {', '.join(PHOTOMETRIC_PRIMITIVES)}")


class RandomSmoothShade(nn.Module):
    """Multiply by 1 + t * (smooth random field in [0, 1]), t drawn from `transparency_range`.

    The original's `additive_shade` darkens or brightens blurred random blobs. kornia's
    RandomPlasmaShadow takes about a second per batch on a small CPU, so this draws a coarse
    random grid and upsamples it bicubically: the same kind of smooth shading in microseconds.
    """

    def __init__(self, transparency_range: tuple[float, float] = (-0.5, 0.5), p: float = 0.5,
                 grid: tuple[int, int] = (3, 4)) -> None:
        super().__init__()
        self.transparency_range = transparency_range
        self.p = p
        self.grid = grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Shade each image of the batch with a random smooth field (with probability `p`)."""
        b, _, h, w = images.shape
        device = images.device
        field = torch.rand(b, 1, *self.grid, device=device)
        field = torch.nn.functional.interpolate(field, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
        low, high = self.transparency_range
        strength = torch.empty(b, 1, 1, 1, device=device).uniform_(low, high)
        strength = strength * (torch.rand(b, 1, 1, 1, device=device) < self.p)
        return images * (1.0 + strength * field)


class BatchAugmentation(nn.Module):
    """uint8/float [B, C, H, W] raw pixels -> augmented float [B, C, H, W] in 0..255."""

    def __init__(self, photometric: list[nn.Module], crop: nn.Module | None) -> None:
        super().__init__()
        self.photometric = nn.ModuleList(photometric)
        self.crop = crop

    def forward(self, images: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Scale to [0, 1], crop, apply the photometric operations (clamped) and scale back to 0..255.

        `seed`: draw from torch's global generators seeded with it, leaving their states unchanged;
        None: draw from them as they are.
        """
        if seed is not None:
            from .randomness import seeded_global_rng

            with seeded_global_rng(seed, images.device):
                return self._augment(images)
        return self._augment(images)

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        if self.crop is not None:
            x = self.crop(x)
        for op in self.photometric:
            x = op(x).clamp_(0.0, 1.0)
        return x * 255.0


def build_augmentation(config: dict | None, image_size: tuple[int, int] | None) -> BatchAugmentation | None:
    """The augmentation a `data.augmentation` config describes, or None when nothing is enabled."""
    import kornia.augmentation as K

    config = config or {}
    unknown = set(config) - {"photometric", "crop"}
    if unknown:
        raise ValueError(f"unknown augmentation sections {sorted(unknown)}: use 'photometric' and 'crop'")
    photometric_config = config.get("photometric") or {}
    photometric: list[nn.Module] = []
    if photometric_config.get("enable", False):
        primitives = photometric_config.get("primitives", list(PHOTOMETRIC_PRIMITIVES))
        params = photometric_config.get("params") or {}
        for name in primitives:
            if name not in PHOTOMETRIC_PRIMITIVES:
                raise ValueError(f"unknown photometric augmentation {name!r}; "
                                 f"known: {', '.join(PHOTOMETRIC_PRIMITIVES)}")
            photometric.append(_primitive(name, params.get(name, {})))
    crop = None
    crop_config = config.get("crop") or {}
    if crop_config.get("enable", False):
        if image_size is None:
            raise ValueError("augmentation.crop needs a fixed image size: set data.preprocessing.resize")
        height, width = image_size
        low, high = crop_config.get("ratio", [0.9, 1.1])
        aspect = width / height
        crop = K.RandomResizedCrop((height, width), scale=tuple(crop_config.get("scale", [0.7, 1.0])),
                                   ratio=(aspect * low, aspect * high))
    if not photometric and crop is None:
        return None
    return BatchAugmentation(photometric, crop)
