"""What Bi-DPM and the flow-matching baselines share: one velocity U-Net ``u(x, t)``
integrated with Euler steps, forward (source -> target) or backward (``--reverse``).

Any step count from 1 to 100 runs on a uniform grid; each method says its default
(Bi-DPM: the time points it was trained on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from synth_core.methods.base import Method, SynthesisRequest, TrainSettings
from synth_core.nn.flow_matching import euler, uniform_times
from synth_core.nn.velocity import VelocityUNet

MAX_STEPS = 100


@dataclass
class VelocityNetSettings:
    """The velocity U-Net (``synth_core.nn.velocity.VelocityUNet``).

    Attributes:
        features: width at full resolution.
        mults: width multiplier per level (``len(mults) - 1`` down-samplings; inputs are
            padded to a multiple of ``2**(len(mults) - 1)``).
        blocks: residual blocks per level.
    """

    features: int = 64
    mults: tuple[int, ...] = (1, 2, 2, 4)
    blocks: int = 2


# Bi-DPM and its baselines are compared with the same network and optimisation: one
# definition of each preset's shared part, so they cannot drift apart.
def paper_train() -> TrainSettings:
    """Paper presets: the paper's Adam 1e-4 and EMA; steps and batch are our choice (paper silent)."""
    return TrainSettings(max_steps=100_000, batch_size=16, lr=1e-4, spatial="2d", ema_decay=0.9999,
                         val_every=2000, checkpoint_every=1000, multiple=8)


def cpu_net() -> VelocityNetSettings:
    """A 16-wide four-level U-Net: 0.30 M parameters, 0.6 MB in float16."""
    return VelocityNetSettings(features=16, mults=(1, 1, 2, 2), blocks=1)


def cpu_train() -> TrainSettings:
    """Axial slices of the `small` phantom (48x64 at 4 mm), 8 per step, 3000 steps. Adam 1e-3
    (measured better than the paper's 1e-4 at this budget); EMA 0.999, since with a few
    thousand steps 0.9999 would still average in the first, untrained weights."""
    return TrainSettings(max_steps=3000, batch_size=8, lr=1e-3, spatial="2d", ema_decay=0.999,
                         val_every=500, checkpoint_every=250, multiple=8)


def tiny_net() -> VelocityNetSettings:
    return VelocityNetSettings(features=4, mults=(1, 2), blocks=1)


def tiny_train() -> TrainSettings:
    return TrainSettings(max_steps=4, batch_size=4, lr=1e-3, spatial="2d", ema_decay=0.9,
                         val_every=2, checkpoint_every=2, multiple=4)


class VelocityMethod(Method):
    """Base of the ODE methods: builds ``self.velocity`` and integrates it."""

    def __init__(self, config, source: str, target: str) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config, source, target)
        net = config.net
        dims = 3 if config.train.spatial == "3d" else 2
        self.velocity = VelocityUNet(dims, 1, 1, features=net.features, mults=tuple(net.mults),
                                     blocks=net.blocks)
        if config.train.multiple % self.velocity.multiple:
            raise ValueError(f"train.multiple {config.train.multiple} must be a multiple of "
                             f"{self.velocity.multiple} for {len(net.mults)} U-Net levels")

    def inference_modules(self) -> list[str]:
        return ["velocity"]

    def default_steps(self) -> int:
        return 10

    def card_capabilities(self) -> dict[str, Any]:
        return {"default_steps": self.default_steps()}

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        c = self.config
        return [torch.optim.Adam(self.velocity.parameters(), lr=c.train.lr, betas=(c.beta1, c.beta2))]

    def u(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return self.velocity(x, t)

    @torch.no_grad()
    def synthesize(self, x: torch.Tensor, request: SynthesisRequest) -> torch.Tensor:
        steps = request.steps or self.default_steps()
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must lie in 1..{MAX_STEPS}, got {steps}")
        return euler(self.u, x, uniform_times(steps), reverse=request.reverse).unsqueeze(0)
