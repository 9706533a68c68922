"""The pix2pix U-Net generator (Isola et al., 2017, appendix 6.1.1), in 2D or 3D."""

from __future__ import annotations

import torch
from torch import nn

from synth_core.nn.blocks import (
    LEAKY_SLOPE,
    InterpConv,
    check_spatial_size,
    check_upsample,
    conv_bias,
    conv_nd,
    conv_transpose_nd,
    make_activation,
    norm_nd,
)
from synth_core.nn.subpixel import subpixel_conv_transpose_nd

#: Transposed convolutions with at most this many output channels run as one ordinary
#: convolution and a pixel shuffle (``synth_core.nn.subpixel``): measured on CPU, that path
#: was about 5 times faster for the output level (1 channel) and slower for 16 or more.
SUBPIXEL_MAX_CHANNELS = 8


class UNet(nn.Module):
    """Encoder-decoder with skip connections: ``(B, C_in, *S) -> (B, C_out, *S)``.

    Each of the ``depth`` levels halves the size with a 4x4(x4) stride-2 convolution
    on the way down (LeakyReLU 0.2 before it) and doubles it with a 4x4(x4) stride-2
    transposed convolution on the way up (ReLU before it). The decoder at level ``i``
    takes the encoder's level-``i`` features concatenated with the level below it, so
    fine detail reaches the output without passing the bottleneck. As in pix2pix, the
    outermost and innermost encoder convolutions have no normalisation, and the innermost
    ``dropout_levels`` decoder levels apply dropout (the paper's "CD" layers; pix2pix
    keeps dropout at test time as its noise source, here ``eval()`` disables it).

    Channels at level ``i`` are ``min(features * 2**i, max_features)``. pix2pix's 256x256
    generator is ``depth=8`` (a 1x1 bottleneck); ``depth=4`` suits 3D volumes of about
    64-128 voxels a side, where 8 levels would not fit.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: C_in and C_out.
        features: channels of the first level (pix2pix: 64).
        depth: number of stride-2 levels; every input size must be divisible by
            ``2**depth``.
        max_features: channel cap for the deep levels (pix2pix: 512).
        norm: one of ``synth_core.nn.blocks.NORM_KINDS``.
        dropout: dropout probability in the innermost decoder levels (pix2pix: 0.5).
        dropout_levels: how many decoder levels, from the innermost out, use dropout
            (pix2pix: 3); the output level never does.
        final_activation: "tanh" for outputs in [-1, 1] (images normalised to that range),
            or "none" for an unbounded output such as a velocity field.
        upsample: "transpose" (pix2pix's 4x4(x4) stride-2 transposed convolution) or
            "interp" (linear interpolation and a 3x3(x3) convolution, ``InterpConv``:
            free of checkerboard artefacts). Transposed convolutions with at most
            ``SUBPIXEL_MAX_CHANNELS`` outputs are computed as a convolution and a pixel
            shuffle (same weights, same numbers, faster on CPU).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: int = 64,
        depth: int = 4,
        max_features: int = 512,
        norm: str = "instance",
        dropout: float = 0.5,
        dropout_levels: int = 3,
        final_activation: str | None = "tanh",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        check_upsample(upsample)
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.spatial_dims = spatial_dims
        self.depth = depth
        conv, conv_t = conv_nd(spatial_dims), conv_transpose_nd(spatial_dims)
        subpixel = subpixel_conv_transpose_nd(spatial_dims)
        widths = [min(features * 2**i, max_features) for i in range(depth)]

        self.down = nn.ModuleList()
        for i in range(depth):
            outermost, innermost = i == 0, i == depth - 1
            level_norm = "none" if outermost or innermost else norm
            layers: list[nn.Module] = [] if outermost else [nn.LeakyReLU(LEAKY_SLOPE)]
            c_in = in_channels if outermost else widths[i - 1]
            layers.append(conv(c_in, widths[i], 4, stride=2, padding=1, bias=conv_bias(level_norm)))
            layers.append(norm_nd(level_norm, spatial_dims, widths[i]))
            self.down.append(nn.Sequential(*layers))

        # up[i] maps level i back to the size of level i - 1 (up[0] gives the output).
        self.up = nn.ModuleList()
        for i in range(depth):
            outermost, innermost = i == 0, i == depth - 1
            level_norm = "none" if outermost else norm
            c_in = widths[i] if innermost else 2 * widths[i]
            c_out = out_channels if outermost else widths[i - 1]
            if upsample == "interp":
                up = InterpConv(spatial_dims, c_in, c_out, bias=conv_bias(level_norm))
            elif c_out <= SUBPIXEL_MAX_CHANNELS:
                up = subpixel(c_in, c_out, bias=conv_bias(level_norm))
            else:
                up = conv_t(c_in, c_out, 4, stride=2, padding=1, bias=conv_bias(level_norm))
            layers = [nn.ReLU(), up, norm_nd(level_norm, spatial_dims, c_out)]
            if outermost:
                layers.append(make_activation(final_activation))
            elif dropout > 0 and i >= depth - dropout_levels:
                layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, *S)`` with every size in S divisible by ``2**depth``."""
        check_spatial_size(
            x, self.spatial_dims, multiple=2**self.depth, context=f"for depth {self.depth}"
        )
        skips: list[torch.Tensor] = []
        h = x
        for down in self.down:
            h = down(h)
            skips.append(h)
        for i in reversed(range(self.depth)):
            h = self.up[i](h)
            if i > 0:
                h = torch.cat([skips[i - 1], h], dim=1)
        return h
