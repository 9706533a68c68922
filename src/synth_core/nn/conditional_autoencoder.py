"""A modality-agnostic encoder and a decoder conditioned on the target modality (Liu et al.,
a unified conditional disentanglement framework, section 2.1), in 2D or 3D.

The encoder and decoder are the pix2pix U-Net's two halves (``synth_core.nn.UNet``: the same
stride-2 4x4(x4) convolutions, widths, norms and skip connections), so a unified model and a
pairwise pix2pix model share one backbone. The paper conditions the decoder by replicating the
one-hot code ``m_y`` over space and concatenating it with the encoder's output; we do that, but
it conditions a U-Net whose decoder normalises per instance poorly: the per-channel offset a
constant code plane adds is what instance norm subtracts, so what is left of the code after the
first norm is the period-2 pattern a stride-2 transposed convolution makes of a constant input
(its even and odd taps differ) and effects at the borders. Every decoder level therefore also
applies a feature-wise affine map of the code after its normalisation (FiLM, Perez et al.,
2018): ``h * (1 + g(m)) + b(m)`` with ``g``, ``b`` linear in the one-hot ``m``, i.e. a learned
scale and shift per target modality and channel, which the next norm does not undo because the
next level's convolution mixes channels before normalising.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

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
from synth_core.nn.unet import SUBPIXEL_MAX_CHANNELS
from synth_core.nn.velocity import TimeResBlock


class FiLM(nn.Module):
    """Feature-wise scale and shift from a code: ``(B, C, *S), (B, M) -> (B, C, *S)``.

    ``h * (1 + gamma(m)) + beta(m)`` with ``(gamma, beta) = gain * linear(m)``; initialised
    near the identity (weights N(0, 0.02), biases 0). ``gain`` sets how fast the per-code
    scales can move: Adam moves each weight by about the learning rate a step, and turning a
    channel's sign for one target (T1 from T2 is nearly T2 inverted) takes a scale change of
    about 2, i.e. 2000 steps at 1e-3 with gain 1; with gain 10, a tenth of that.
    """

    def __init__(self, code_size: int, channels: int, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = float(gain)
        self.linear = nn.Linear(code_size, 2 * channels)
        nn.init.normal_(self.linear.weight, 0.0, 0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        gamma, beta = (self.gain * self.linear(code)).chunk(2, dim=1)
        shape = (*gamma.shape, *([1] * (h.dim() - 2)))
        return h * (1 + gamma.view(shape)) + beta.view(shape)


class ConditionalEncoder(nn.Module):
    """The U-Net's down path: ``(B, C_in, *S) -> [level 0, ..., level depth-1]`` features,
    level ``i`` of shape ``(B, min(features * 2**i, max_features), *S / 2**(i+1))``. The
    last is the bottleneck; the others are the skip connections. Takes no modality code."""

    def __init__(self, spatial_dims: int, in_channels: int, features: int, depth: int,
                 max_features: int = 512, norm: str = "instance") -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.spatial_dims, self.depth = spatial_dims, depth
        self.widths = [min(features * 2**i, max_features) for i in range(depth)]
        conv = conv_nd(spatial_dims)
        self.down = nn.ModuleList()
        for i in range(depth):
            outermost, innermost = i == 0, i == depth - 1
            level_norm = "none" if outermost or innermost else norm
            layers: list[nn.Module] = [] if outermost else [nn.LeakyReLU(LEAKY_SLOPE)]
            c_in = in_channels if outermost else self.widths[i - 1]
            layers.append(conv(c_in, self.widths[i], 4, stride=2, padding=1,
                               bias=conv_bias(level_norm)))
            layers.append(norm_nd(level_norm, spatial_dims, self.widths[i]))
            self.down.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_spatial_size(x, self.spatial_dims, multiple=2**self.depth,
                           context=f"for depth {self.depth}")
        features = []
        h = x
        for down in self.down:
            h = down(h)
            features.append(h)
        return features


class ConditionalDecoder(nn.Module):
    """The U-Net's up path, conditioned on a one-hot code at every level:
    ``(encoder features, code (B, M)) -> (B, C_out, *S)``.

    The code is replicated over space and concatenated with the bottleneck (the paper's
    conditioning), and every level applies :class:`FiLM` of the code after its norm (see
    the module docstring for why both).
    """

    def __init__(self, spatial_dims: int, out_channels: int, code_size: int, features: int,
                 depth: int, max_features: int = 512, norm: str = "instance",
                 final_activation: str | None = "tanh", upsample: str = "transpose",
                 film_gain: float = 1.0) -> None:
        super().__init__()
        check_upsample(upsample)
        self.spatial_dims, self.depth, self.code_size = spatial_dims, depth, code_size
        widths = [min(features * 2**i, max_features) for i in range(depth)]
        conv_t = conv_transpose_nd(spatial_dims)
        self.up = nn.ModuleList()
        self.film = nn.ModuleList()
        self.tail = nn.ModuleList()
        for i in range(depth):
            outermost, innermost = i == 0, i == depth - 1
            level_norm = "none" if outermost else norm
            c_in = widths[i] + code_size if innermost else 2 * widths[i]
            c_out = out_channels if outermost else widths[i - 1]
            if upsample == "interp":
                up = InterpConv(spatial_dims, c_in, c_out, bias=conv_bias(level_norm))
            elif c_out <= SUBPIXEL_MAX_CHANNELS:  # as the U-Net: same numbers, faster on CPU
                up = subpixel_conv_transpose_nd(spatial_dims)(c_in, c_out,
                                                              bias=conv_bias(level_norm))
            else:
                up = conv_t(c_in, c_out, 4, stride=2, padding=1, bias=conv_bias(level_norm))
            self.up.append(nn.Sequential(nn.ReLU(), up, norm_nd(level_norm, spatial_dims, c_out)))
            self.film.append(FiLM(code_size, c_out, film_gain))
            self.tail.append(make_activation(final_activation) if outermost else nn.Identity())

    def forward(self, features: list[torch.Tensor], code: torch.Tensor) -> torch.Tensor:
        if code.shape != (features[-1].shape[0], self.code_size):
            raise ValueError(f"code must be (B, {self.code_size}), got {tuple(code.shape)}")
        bottleneck = features[-1]
        planes = code.view(*code.shape, *([1] * self.spatial_dims)).expand(
            *code.shape, *bottleneck.shape[2:])
        h = torch.cat([bottleneck, planes.to(bottleneck.dtype)], dim=1)
        for i in reversed(range(self.depth)):
            h = self.tail[i](self.film[i](self.up[i](h), code))
            if i > 0:
                h = torch.cat([features[i - 1], h], dim=1)
        return h


class ConditionalAutoencoder(nn.Module):
    """``Dec(Enc(x), m_y)``: ``(B, C_in, *S), code (B, M) -> (B, C_out, *S)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: image channels (1 for one MR contrast).
        code_size: M, the number of modalities (the one-hot code's length).
        features, depth, max_features, norm, upsample: as ``synth_core.nn.UNet``.
        film_gain: see :class:`FiLM`.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, code_size: int,
                 features: int = 64, depth: int = 4, max_features: int = 512,
                 norm: str = "instance", upsample: str = "transpose",
                 film_gain: float = 1.0) -> None:
        super().__init__()
        self.encoder = ConditionalEncoder(spatial_dims, in_channels, features, depth,
                                          max_features, norm)
        self.decoder = ConditionalDecoder(spatial_dims, out_channels, code_size, features, depth,
                                          max_features, norm, upsample=upsample,
                                          film_gain=film_gain)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x), code)


class ResidualEncoder(nn.Module):
    """A residual U-Net's down path (the design of ``synth_core.nn.velocity.VelocityUNet``:
    group norm, SiLU, 3x3(x3) convolutions in residual blocks, stride-2 down-sampling),
    without any code: ``(B, C_in, *S) -> [stem, every block's and down-sampler's output, ...,
    bottleneck]``, the last entry the bottleneck, the others the decoder's skips."""

    def __init__(self, spatial_dims: int, in_channels: int, features: int,
                 mults: tuple[int, ...], blocks: int) -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.spatial_dims, self.levels = spatial_dims, len(mults)
        self.stem = conv(in_channels, features, 3, padding=1)
        self.stages = nn.ModuleList()
        self.downsample = nn.ModuleList()
        self.skip_widths = [features]
        c = features
        for level, mult in enumerate(mults):
            stage = nn.ModuleList()
            for _ in range(blocks):
                stage.append(TimeResBlock(spatial_dims, c, features * mult, 0))
                c = features * mult
                self.skip_widths.append(c)
            self.stages.append(stage)
            if level < self.levels - 1:
                self.downsample.append(conv(c, c, 3, stride=2, padding=1))
                self.skip_widths.append(c)
        self.mid = TimeResBlock(spatial_dims, c, c, 0)
        self.width = c

    @property
    def multiple(self) -> int:
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_spatial_size(x, self.spatial_dims, multiple=self.multiple,
                           context=f"for {self.levels} levels")
        h = self.stem(x)
        features = [h]
        for level, stage in enumerate(self.stages):
            for block in stage:
                h = block(h)
                features.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)
                features.append(h)
        features.append(self.mid(h))
        return features


class ResidualDecoder(nn.Module):
    """The residual U-Net's up path, conditioned on a one-hot code: the code is replicated
    over space and concatenated with the bottleneck (the paper's conditioning) and, through a
    small embedding, scales and shifts every residual block's second norm (see
    ``TimeResBlock``): ``(encoder features, code (B, M)) -> (B, C_out, *S)``. With
    ``code_size`` 0 it takes no code (a plain residual U-Net, pix2pix's ``resunet``)."""

    def __init__(self, spatial_dims: int, out_channels: int, code_size: int,
                 encoder: ResidualEncoder, features: int, mults: tuple[int, ...], blocks: int,
                 final_activation: str | None = "tanh") -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.spatial_dims, self.code_size, self.levels = spatial_dims, code_size, len(mults)
        emb = 4 * features if code_size else 0
        self.embed = (nn.Sequential(nn.Linear(code_size, emb), nn.SiLU(), nn.Linear(emb, emb))
                      if code_size else None)
        skips = list(encoder.skip_widths)
        c = encoder.width
        self.mid = TimeResBlock(spatial_dims, c + code_size, c, emb, scale_shift=True)
        self.stages = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            stage = nn.ModuleList()
            for _ in range(blocks + 1):
                stage.append(TimeResBlock(spatial_dims, c + skips.pop(), features * mult, emb,
                                          scale_shift=True))
                c = features * mult
            self.stages.append(stage)
            if level > 0:
                self.upsample.append(conv(c, c, 3, padding=1))
        self.out_norm = nn.GroupNorm(math.gcd(8, c), c)
        self.out = conv(c, out_channels, 3, padding=1)
        self.tail = make_activation(final_activation)

    def forward(self, features: list[torch.Tensor],
                code: torch.Tensor | None = None) -> torch.Tensor:
        bottleneck = features[-1]
        if self.embed is None:
            emb, h = None, self.mid(bottleneck)
        else:
            if code is None or code.shape != (bottleneck.shape[0], self.code_size):
                shape = None if code is None else tuple(code.shape)
                raise ValueError(f"code must be (B, {self.code_size}), got {shape}")
            emb = self.embed(code.to(bottleneck.dtype))
            planes = code.view(*code.shape, *([1] * self.spatial_dims)).expand(
                *code.shape, *bottleneck.shape[2:])
            h = self.mid(torch.cat([bottleneck, planes.to(bottleneck.dtype)], dim=1), emb)
        skips = list(features[:-1])
        for i, stage in enumerate(self.stages):
            for block in stage:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < self.levels - 1:
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.tail(self.out(F.silu(self.out_norm(h))))


class ResidualConditionalAutoencoder(nn.Module):
    """``Dec(Enc(x), m_y)`` on a residual U-Net (:class:`ResidualEncoder`,
    :class:`ResidualDecoder`): ``(B, C_in, *S), code (B, M) -> (B, C_out, *S)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: image channels (1 for one MR contrast).
        code_size: M, the number of modalities (0: no code, an unconditioned U-Net).
        features: width at full resolution; ``mults`` the width multiplier per level
            (``len(mults) - 1`` down-samplings); ``blocks`` residual blocks a level.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, code_size: int,
                 features: int = 16, mults: tuple[int, ...] = (1, 1, 2, 2),
                 blocks: int = 1) -> None:
        super().__init__()
        mults = tuple(int(m) for m in mults)
        self.encoder = ResidualEncoder(spatial_dims, in_channels, features, mults, blocks)
        self.decoder = ResidualDecoder(spatial_dims, out_channels, code_size, self.encoder,
                                       features, mults, blocks)

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.encoder(x), code)
