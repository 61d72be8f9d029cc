"""NetVLAD (Arandjelovic et al., CVPR 2016): VGG16 conv5_3 + VLAD + whitening; the teacher."""

from __future__ import annotations

import torch

from .aggregation import MatConvNetVLAD
from .aggregation.netvlad import l2_normalize_tf
from .backbones import VGG16Conv5
from .base import GlobalDescriptorModel
from .configs import NetVLADConfig


class NetVLADModel(GlobalDescriptorModel):
    """RGB image minus the learned average colour -> VGG16 -> L2 per pixel -> NetVLAD -> WPCA."""

    kind = "netvlad"
    input_channels = 3

    def __init__(self, config: NetVLADConfig | None = None, name: str = "netvlad") -> None:
        config = config or NetVLADConfig()
        super().__init__(name, config)
        self.backbone = VGG16Conv5(relu_last=False)
        self.aggregation = MatConvNetVLAD(512, config.num_clusters, config.whitening_dim)
        self.register_buffer("average_rgb", torch.tensor(config.average_rgb, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """Subtract the average RGB colour, replicating grayscale images to 3 channels first."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return images - self.average_rgb

    def local_features(self, images: torch.Tensor) -> torch.Tensor:
        """The conv5_3 feature map with every pixel's feature L2-normalised."""
        # The original normalises every pixel's 512-D feature before the VLAD pooling.
        return l2_normalize_tf(super().local_features(images), dim=1)
