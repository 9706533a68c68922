"""The PatchGAN discriminator (Isola et al., 2017, appendix 6.1.2), in 2D or 3D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from synth_core.nn.blocks import ConvBlock, check_spatial_size, conv_nd

KERNEL = 4
PADDING = 1


def receptive_field(kernel_sizes: Sequence[int], strides: Sequence[int]) -> int:
    """Edge, in input voxels, of the window one output voxel of a chain of convolutions sees.

    ``r = 1 + sum_l (k_l - 1) * prod_{j<l} s_j`` (each layer widens the window by
    ``k_l - 1`` of its input's voxels, each of which spans ``prod_{j<l} s_j`` input voxels).
    """
    field, jump = 1, 1
    for k, s in zip(kernel_sizes, strides, strict=True):
        field += (k - 1) * jump
        jump *= s
    return field


class PatchDiscriminator(nn.Module):
    """Classifies overlapping patches as real or fake: ``(B, C_in, *S) -> (B, 1, *S')``.

    Layers (pix2pix ``C64-C128-C256-C512`` for ``n_layers=3``): 4x4(x4) convolutions with
    LeakyReLU 0.2, stride 2 for the first ``n_layers`` and stride 1 for the last two; no
    norm on the first; channels ``features * min(2**l, 8)``; the last maps to 1 channel
    with no activation (raw logits or least-squares scores, see ``GANLoss``).

    Each output voxel sees a ``receptive_field``-voxel window along every axis: 70 for
    ``n_layers=3`` (the "70x70 PatchGAN"), 34 for 2, 16 for 1. That locality holds exactly
    with ``norm="none"`` or batch norm in eval mode; instance norm also mixes in each
    channel's mean and variance over the whole image.

    Args:
        spatial_dims: 2 or 3.
        in_channels: C_in (pix2pix conditions on the source: source and target
            concatenated).
        features: channels of the first layer (pix2pix: 64).
        n_layers: stride-2 convolutions.
        norm: one of ``synth_core.nn.blocks.NORM_KINDS``.
        n_classes: when above 0, an auxiliary classifier head (Odena et al., 2017, as the
            unified synthesis model uses it, Liu et al. eq. 3): a second 4x4(x4) convolution
            on the last shared features, averaged over space to ``(B, n_classes)`` logits;
            read with :meth:`classify`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        self.spatial_dims = spatial_dims
        self.strides = (2,) * n_layers + (1, 1)
        widths = [features * min(2**i, 8) for i in range(n_layers + 1)]

        layers: list[nn.Module] = [
            ConvBlock(spatial_dims, in_channels, widths[0], KERNEL, stride=2, padding=PADDING,
                      norm="none", act="leaky_relu")
        ]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            layers.append(ConvBlock(spatial_dims, widths[i - 1], widths[i], KERNEL, stride=stride,
                                    padding=PADDING, norm=norm, act="leaky_relu"))
        layers.append(conv_nd(spatial_dims)(widths[-1], 1, KERNEL, stride=1, padding=PADDING))
        self.model = nn.Sequential(*layers)
        self.n_classes = int(n_classes)
        self.classifier = (conv_nd(spatial_dims)(widths[-1], n_classes, KERNEL, stride=1,
                                                 padding=PADDING) if n_classes > 0 else None)
        self.receptive_field = receptive_field([KERNEL] * len(self.strides), self.strides)
        self.min_size = self._min_input_size()

    def output_size(self, size: int) -> int:
        """Output length along one axis for an input of ``size`` voxels."""
        for s in self.strides:
            size = (size + 2 * PADDING - KERNEL) // s + 1
        return size

    def _min_input_size(self) -> int:
        size = 1
        while self.output_size(size) < 1:
            size += 1
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, *S)``, every size in S at least ``min_size`` (24 for 3 layers)."""
        check_spatial_size(x, self.spatial_dims, minimum=self.min_size,
                           context=f"for a PatchGAN with {len(self.strides) - 2} layers")
        return self.model(x)

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch scores and class logits of one pass: ``(B, 1, *S')`` and ``(B, n_classes)``.

        The class logits are the classifier head's map averaged over its patches, so every
        patch votes on the whole image's class."""
        if self.classifier is None:
            raise ValueError("this PatchDiscriminator has no classifier head (n_classes=0)")
        check_spatial_size(x, self.spatial_dims, minimum=self.min_size,
                           context=f"for a PatchGAN with {len(self.strides) - 2} layers")
        shared = self.model[:-1](x)
        return self.model[-1](shared), self.classifier(shared).flatten(2).mean(-1)
