"""The velocity network ``u(x, t)`` of Bi-DPM and of the flow-matching baselines.

Bi-DPM (sec. 3.2 of its paper) says only "a UNet, as in other flow-based methods"; the
flow-matching papers it compares with (Lipman et al. 2022, Liu et al. 2022, Tong et al.
2023) all use the DDPM-style U-Net: residual blocks with group norm and SiLU, a
sinusoidal embedding of t added inside every block, stride-2 down and nearest-neighbour
up-sampling, skip connections by concatenation. This is that design, cut to what the
phantom needs (no attention: at 48x64 slices a 3x3 receptive field already spans the
brain after three down-samplings), and written for 2D slices or 3D volumes with one
``spatial_dims`` argument. The choices are recorded and measured in docs/methods/bi-dpm.md.

Shapes: ``x`` (B, C, *S) with every size in S a multiple of ``2**(len(mults) - 1)``,
``t`` (B,) or a scalar in [0, 1]; output (B, C_out, *S).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from synth_core.nn.blocks import check_spatial_size, conv_nd


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t (transformer positional encoding, scaled to t in [0, 1])
    followed by a two-layer MLP: ``(B,) -> (B, dim)``."""

    def __init__(self, dim: int, scale: float = 1000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding width must be even, got {dim}")
        self.dim, self.scale = dim, scale
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.SiLU(), nn.Linear(dim * 2, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        angles = self.scale * t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=1))


class TimeResBlock(nn.Module):
    """``x + conv(act(norm(conv(act(norm(x))) + proj(emb))))`` with a 1x1 skip when widths differ.

    ``emb_dim`` 0 makes a plain residual block (no embedding; ``forward(x)``). With
    ``scale_shift`` the embedding scales and shifts the second norm's output instead,
    ``norm(h) * (1 + s) + b`` (the conditioning of Dhariwal and Nichol's U-Net), which a
    following norm does not undo the way it removes a per-channel offset; the unified model's
    decoder uses it to condition on the target modality.
    """

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, emb_dim: int,
                 scale_shift: bool = False) -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = conv(c_in, c_out, 3, padding=1)
        self.scale_shift = scale_shift and emb_dim > 0
        self.emb = nn.Linear(emb_dim, (2 if self.scale_shift else 1) * c_out) if emb_dim > 0 else None
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1)
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is None:
            h = self.norm2(h)
        else:
            if emb is None:
                raise ValueError("this block is conditioned: give its embedding")
            e = self.emb(emb).view(*emb.shape[:1], -1, *([1] * self.spatial_dims))
            if self.scale_shift:
                scale, shift = e.chunk(2, dim=1)
                h = self.norm2(h) * (1 + scale) + shift
            else:
                h = self.norm2(h + e)
        return self.skip(x) + self.conv2(F.silu(h))


class VelocityUNet(nn.Module):
    """A time-conditioned U-Net for 2D slices or 3D volumes.

    Args:
        spatial_dims: 2 (axial slices, the paper's setting) or 3.
        in_channels, out_channels: image channels (1 for one modality).
        features: width at full resolution.
        mults: width multiplier per level; ``len(mults) - 1`` down-samplings.
        blocks: residual blocks per level (encoder; the decoder has one more per level
            for the skip connection, as in DDPM).
        time_dim: width of the time embedding (default 4 * features).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1,
                 features: int = 32, mults: Sequence[int] = (1, 2, 4), blocks: int = 1,
                 time_dim: int | None = None) -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.spatial_dims = spatial_dims
        self.levels = len(mults)
        emb = time_dim or 4 * features
        self.time = TimeEmbedding(emb)
        self.stem = conv(in_channels, features, 3, padding=1)
        widths = [features * m for m in mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [features]
        c = features
        for level, w in enumerate(widths):
            stage = nn.ModuleList()
            for _ in range(blocks):
                stage.append(TimeResBlock(spatial_dims, c, w, emb))
                c = w
                skips.append(c)
            self.down.append(stage)
            if level < self.levels - 1:
                self.downsample.append(conv(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([TimeResBlock(spatial_dims, c, c, emb), TimeResBlock(spatial_dims, c, c, emb)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            stage = nn.ModuleList()
            for _ in range(blocks + 1):
                stage.append(TimeResBlock(spatial_dims, c + skips.pop(), w, emb))
                c = w
            self.up.append(stage)
            if level > 0:
                self.upsample.append(conv(c, c, 3, padding=1))
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = conv(c, out_channels, 3, padding=1)
        # Zero velocity at the start: the first Euler steps leave the input unchanged, and
        # early losses are those of the identity map rather than of a random field.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def multiple(self) -> int:
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        check_spatial_size(x, self.spatial_dims, self.multiple, context="for the velocity U-Net")
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.time(t)
        h = self.stem(x)
        hs = [h]
        for level, stage in enumerate(self.down):
            for block in stage:
                h = block(h, emb)
                hs.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)
                hs.append(h)
        for block in self.mid:
            h = block(h, emb)
        for i, stage in enumerate(self.up):
            for block in stage:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            if i < self.levels - 1:
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))
