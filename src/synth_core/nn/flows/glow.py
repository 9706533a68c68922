"""A multi-scale 3D Glow: the invertible network f of DUAL-GLOW (eq. 3-5 and fig. 3).

Level ``i`` squeezes (x8 channels, /2 each spatial size), runs ``steps_per_level``
flow steps, then, except at the top, factors half of its channels out as the latent
``z_i``. For a (B, 1, 48, 64, 48) volume and 3 levels the latents are
(B, 4, 24, 32, 24), (B, 16, 12, 16, 12) and the top (B, 128, 6, 8, 6).

Memory: plain autograd keeps every step's coupling-network activations; with the
paper's 512 hidden channels on a 64x96x64 volume that is about 0.4 GB per step at
the first level, some 15 GB per volume for the two flows (an estimate).
``checkpointing=True`` wraps each flow step in ``torch.utils.checkpoint``: only the
step's input is kept and its insides are recomputed during backward, the
memory-saving gradients the paper cites (its ref. [5]); activation memory falls to
about one step's worth. Cost: one extra forward pass per step (about 30-40% more time
per training step on the cpu preset); gradients are identical. A flow could go
further and rebuild inputs from outputs with its own inverse (memcnn-style); that is
not done here.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from synth_core.nn.blocks import InputShapeError
from synth_core.nn.flows.layers import FlowStep, Split3d, Squeeze3d


def latent_channels(in_channels: int, levels: int) -> list[int]:
    """Channels of each level's latent, bottom to top, for a flow on ``in_channels``."""
    channels, out = in_channels, []
    for level in range(levels):
        channels *= 8
        if level < levels - 1:
            out.append(channels - channels // 2)
            channels //= 2
    out.append(channels)
    return out


class Glow3d(nn.Module):
    """Multi-scale 3D Glow.

    Args:
        in_channels: channels of the input volume (1 for a single scan).
        levels: number of squeeze levels L; spatial sizes must be multiples of 2**L.
        steps_per_level: flow steps (actnorm, 1x1x1 conv, coupling) per level, K.
        hidden_channels: width of each coupling network.
        checkpointing: recompute each step in backward instead of storing its
            activations (less memory, about 30% more time; see the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        levels: int,
        steps_per_level: int,
        hidden_channels: int,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if levels < 1 or steps_per_level < 1:
            raise ValueError(
                f"Glow3d needs levels >= 1 and steps >= 1, got {levels}, {steps_per_level}"
            )
        self.in_channels = in_channels
        self.levels = levels
        self.checkpointing = checkpointing
        self.squeeze = Squeeze3d()
        self.split = Split3d()
        self.stages = nn.ModuleList()
        channels = in_channels
        for level in range(levels):
            channels *= 8
            self.stages.append(
                nn.ModuleList(FlowStep(channels, hidden_channels) for _ in range(steps_per_level))
            )
            if level < levels - 1:
                channels //= 2
        self.latent_channels = latent_channels(in_channels, levels)

    def latent_shapes(self, spatial: tuple[int, int, int]) -> list[tuple[int, int, int, int]]:
        """(C, D, H, W) of each latent, bottom to top, for an input of spatial size ``spatial``."""
        self.check_input_shape((1, self.in_channels, *spatial))
        shapes = []
        for level, channels in enumerate(self.latent_channels):
            factor = 2 ** (level + 1)
            shapes.append((channels, *(s // factor for s in spatial)))
        return shapes

    def check_input_shape(self, shape: tuple[int, ...] | torch.Size) -> None:
        """Raise InputShapeError (a UserError) when a (B, C, D, H, W) shape cannot pass the flow."""
        multiple = 2**self.levels
        if len(shape) != 5 or shape[1] != self.in_channels:
            raise InputShapeError(
                f"the flow expects volumes of shape (B, {self.in_channels}, D, H, W), got "
                f"{tuple(shape)}; give a batch of {self.in_channels}-channel 3D volumes"
            )
        if any(s % multiple for s in shape[2:]):
            raise InputShapeError(
                f"volume size {tuple(shape[2:])} does not fit a {self.levels}-level flow; "
                f"pad or crop every spatial size to a multiple of {multiple}"
            )

    def _steps(self, level: int) -> list[FlowStep]:
        return cast(list[FlowStep], list(cast(nn.ModuleList, self.stages[level])))

    def _step(self, step: FlowStep, h: Tensor) -> tuple[Tensor, Tensor]:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(step, h, use_reentrant=False)
        return step(h)

    def encode(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """x (B, C, D, H, W) -> (latents bottom to top, logdet (B,) in nats): z = f(x)."""
        self.check_input_shape(x.shape)
        latents: list[Tensor] = []
        logdet = x.new_zeros(x.shape[0])
        h = x
        for level in range(self.levels):
            h, _ = self.squeeze(h)
            for step in self._steps(level):
                h, ld = self._step(step, h)
                logdet = logdet + ld
            if level < self.levels - 1:
                h, z = self.split(h)
                latents.append(z)
        latents.append(h)
        return latents, logdet

    def decode(self, latents: list[Tensor]) -> Tensor:
        """The inverse g = f^-1: latents bottom to top (as ``encode`` returns them) -> x."""
        if len(latents) != self.levels:
            raise ValueError(f"decode needs {self.levels} latents, got {len(latents)}")
        h = latents[-1]
        for level in reversed(range(self.levels)):
            if level < self.levels - 1:
                h = self.split.inverse(h, latents[level])
            for step in reversed(self._steps(level)):
                h = step.inverse(h)
            h = self.squeeze.inverse(h)
        return h

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        return self.encode(x)
