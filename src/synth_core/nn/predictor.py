"""A predictor head on images: ResNet features, then a regression or classification output.

The network is MONAI's ResNet (``monai.networks.nets.ResNet``), which serves 2D slices and
3D volumes alike; this module only picks its sizes (a small basic-block ResNet for the
CPU, the bottleneck ResNet-50 for the paper's setting) and sets the output layer's bias so
that an untrained regressor predicts the mean of its standardised target (zero) rather
than a random offset, which on a few labelled subjects it might never unlearn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PredictorSettings:
    """Sizes of the predictor.

    Attributes:
        block: "basic" (ResNet-18/34 blocks) or "bottleneck" (ResNet-50 and up).
        layers: blocks in each of the four stages (ResNet-50: 3, 4, 6, 3).
        widths: channels of each of the four stages (ResNet-50: 64, 128, 256, 512).
        dropout: dropout before the output layer (0 = off).
    """

    block: str = "bottleneck"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    dropout: float = 0.0


class Predictor(nn.Module):
    """Image (B, 1, *S) -> (B, outputs): ``outputs`` 1 for a regression, else class logits.

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        outputs: 1 for a regression, the number of classes for a classification.
        settings: network sizes.
    """

    def __init__(self, spatial_dims: int, outputs: int, settings: PredictorSettings) -> None:
        super().__init__()
        from monai.networks.nets import ResNet

        if len(settings.layers) != 4 or len(settings.widths) != 4:
            raise ValueError("MONAI's ResNet has four stages: give four layers and four widths")
        self.features = ResNet(
            block=settings.block, layers=list(settings.layers), block_inplanes=list(settings.widths),
            spatial_dims=spatial_dims, n_input_channels=1, conv1_t_size=7 if spatial_dims == 2 else 3,
            conv1_t_stride=2, num_classes=outputs, feed_forward=False,
        )
        width = settings.widths[-1] * (4 if settings.block == "bottleneck" else 1)
        self.dropout = nn.Dropout(settings.dropout) if settings.dropout > 0 else nn.Identity()
        self.head = nn.Linear(width, outputs)
        nn.init.zeros_(self.head.bias)  # standardised regression target: start at its mean
        nn.init.normal_(self.head.weight, std=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))
