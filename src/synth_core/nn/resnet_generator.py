"""CycleGAN's ResNet generator (Zhu et al., 2017, appendix 7.2; Johnson et al., 2016), in 2D or 3D."""

from __future__ import annotations

import torch
from torch import nn

from synth_core.nn.blocks import (
    ConvBlock,
    PaddingMode,
    ResidualBlock,
    check_spatial_size,
    check_upsample,
    conv_nd,
    linear_upsample,
    make_activation,
)


class ResnetGenerator(nn.Module):
    """``c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-C_out``: ``(B, C_in, *S) -> (B, C_out, *S)``.

    In CycleGAN's notation ``c7s1-k`` is a 7x7 stride-1 convolution, norm, ReLU; ``dk`` a
    3x3 stride-2 convolution, norm, ReLU; ``Rk`` a residual block (two 3x3 convolutions);
    ``uk`` a 3x3 stride-1/2 (transposed) convolution, norm, ReLU. Here every kernel is
    cubic in 3D. The last convolution has no norm and is followed by
    ``final_activation``.

    Variants the papers use:
        - CycleGAN: ``n_blocks=6`` for 128x128 images, 9 for 256x256 and larger.
        - RevGAN (van der Ouderaa) 2D baselines: ``features=32`` ("width 32"), 6 or 9 blocks.
        - RevGAN's 3D ResNet, whose encoder and decoder this class gives with
          ``n_blocks=0`` (its core is a stack of reversible blocks instead):
          ``features=32, n_downsampling=1, outer_kernel=5`` (the paper does not say
          whether its stride-2 convolution doubles the channels; here it does).
        - The discriminative augmentation method (DUIIT) keeps CycleGAN's generator unchanged.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: C_in and C_out.
        features: channels of the first convolution (CycleGAN: 64).
        n_downsampling: stride-2 steps; channels double at each, sizes must be divisible
            by ``2**n_downsampling``.
        n_blocks: residual blocks at the bottleneck.
        norm: one of ``synth_core.nn.blocks.NORM_KINDS``.
        final_activation: "tanh" for outputs in [-1, 1], or "none".
        outer_kernel: kernel of the first and last convolution (7 in CycleGAN).
        padding_mode: padding of the outer convolutions and residual blocks ("reflect" in
            CycleGAN).
        dropout: dropout inside the residual blocks (CycleGAN's default: none).
        upsample: "transpose" (CycleGAN's stride-2 transposed convolutions) or "interp"
            (linear interpolation and a 3x3(x3) convolution, as ``InterpConv``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: int = 64,
        n_downsampling: int = 2,
        n_blocks: int = 9,
        norm: str = "instance",
        final_activation: str | None = "tanh",
        outer_kernel: int = 7,
        padding_mode: PaddingMode = "reflect",
        dropout: float = 0.0,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        check_upsample(upsample)
        if outer_kernel % 2 == 0:
            raise ValueError(f"outer_kernel must be odd to keep the size, got {outer_kernel}")
        if n_downsampling < 0 or n_blocks < 0:
            raise ValueError("n_downsampling and n_blocks must not be negative")
        self.spatial_dims = spatial_dims
        self.n_downsampling = n_downsampling
        # Reflection padding needs more voxels than it pads, at the outer convolutions
        # (outer_kernel // 2) and at the bottleneck's residual blocks (1).
        outer_pad = outer_kernel // 2
        self.min_size = max(outer_pad + 1, 2 * 2**n_downsampling if n_blocks else 1)
        if padding_mode == "zeros":
            self.min_size = 1

        layers: list[nn.Module] = [
            ConvBlock(spatial_dims, in_channels, features, outer_kernel, padding=outer_pad,
                      padding_mode=padding_mode, norm=norm)
        ]
        width = features
        for _ in range(n_downsampling):
            layers.append(ConvBlock(spatial_dims, width, 2 * width, 3, stride=2, padding=1,
                                    norm=norm))
            width *= 2
        for _ in range(n_blocks):
            layers.append(ResidualBlock(spatial_dims, width, norm=norm,
                                        padding_mode=padding_mode, dropout=dropout))
        for _ in range(n_downsampling):
            if upsample == "interp":  # as InterpConv, with ConvBlock's norm and ReLU
                layers.append(linear_upsample(spatial_dims))
                layers.append(ConvBlock(spatial_dims, width, width // 2, 3, norm=norm))
            else:
                # kernel 3, stride 2, padding 1 and output_padding 1 doubles the size exactly.
                layers.append(ConvBlock(spatial_dims, width, width // 2, 3, stride=2, padding=1,
                                        norm=norm, transposed=True, output_padding=1))
            width //= 2
        layers.append(
            conv_nd(spatial_dims)(width, out_channels, outer_kernel, padding=outer_pad,
                                  padding_mode=padding_mode)
        )
        layers.append(make_activation(final_activation))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, *S)`` with every size in S divisible by ``2**n_downsampling``."""
        check_spatial_size(
            x, self.spatial_dims, multiple=2**self.n_downsampling, minimum=self.min_size,
            context=f"for n_downsampling {self.n_downsampling}",
        )
        return self.model(x)
