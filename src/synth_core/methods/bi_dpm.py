"""Bi-DPM: bi-directional discrete process matching.

One velocity network u(x, t) is integrated forward from the source image x with Euler
steps over time points 0 = t_0 < ... < t_N = 1, and backward from the target image z
(eq. 5); training matches the two processes at every time point (eq. 6):
``L = sum_n w_n d(X^f_{t_n}, X^b_{t_n})`` with w = 1 at t = 0 and 1 and 0.5 between.
Paired items use an image distance d (LPIPS in the paper, eq. 7; L1 + SSIM by default
here, see ``synth_core.nn.perceptual``); unpaired items add lambda_u times the MMD
between the forward and backward states of the batch (eq. 8 and 9), lambda_u 0.2-0.3.
Adam at a constant 1e-4 with an EMA of the weights. Inference (Algorithm 2) runs the
same network forward (source -> target) or backward (``--reverse``) on the trained time
points. The network is matched only at those times: a model trained on one time point and
run with two Euler steps evaluates it at t = 0.5, which it never saw, and the result
collapses. So a checkpoint's card allows exactly its trained step count; a model for two
steps is trained with the ``-2step`` presets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from synth_core.errors import UserError
from synth_core.methods._velocity import (
    MAX_STEPS,
    VelocityMethod,
    VelocityNetSettings,
    cpu_net,
    cpu_train,
    paper_train,
    tiny_net,
    tiny_train,
)
from synth_core.methods.base import Capabilities, TrainSettings, register
from synth_core.nn.flow_matching import bidpm_states, bidpm_weights, mmd, uniform_times
from synth_core.nn.perceptual import l1_ssim, load_lpips

DISTANCES = ("l1-ssim", "lpips")


@dataclass
class BiDPMConfig:
    """Bi-DPM settings; the defaults are the paper's where it gives them (``paper``).

    Attributes:
        net: the velocity U-Net (the paper names only "a UNet").
        time_points: N, the number of uniform steps trained (paper: 1 and 2).
        weight_ends, weight_middle: w_n at t = 0, 1 and in between (paper: 1 and 0.5).
        distance: "l1-ssim" (default, weight-free) or "lpips" (the paper's; needs
            ``lpips_weights``, a local VGG16 state dict, and optionally ``lpips_lin``).
        ssim_weight: share of (1 - SSIM) in the l1-ssim distance.
        lambda_u: weight of the MMD term for unpaired items (paper: 0.2 or 0.3).
        mmd_bandwidths: Gaussian kernel bandwidths, as multiples of the batch's median
            squared distance.
        paired_share: with partially paired data, the share of each batch that is paired
            (paper: half).
        beta1, beta2: Adam betas (the paper names Adam only; PyTorch's defaults).
    """

    net: VelocityNetSettings = field(default_factory=VelocityNetSettings)
    time_points: int = 1
    weight_ends: float = 1.0
    weight_middle: float = 0.5
    distance: str = "l1-ssim"
    ssim_weight: float = 0.5
    lpips_weights: str | None = None
    lpips_lin: str | None = None
    lambda_u: float = 0.25
    mmd_bandwidths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    paired_share: float = 0.5
    beta1: float = 0.9
    beta2: float = 0.999
    train: TrainSettings = field(default_factory=paper_train)


def _cpu() -> BiDPMConfig:
    # The `small` phantom on CPU, with the baselines' network and optimisation.
    return BiDPMConfig(net=cpu_net(), train=cpu_train())


def _cpu_2step() -> BiDPMConfig:
    config = _cpu()
    config.time_points = 2
    return config


def _paper() -> BiDPMConfig:
    return BiDPMConfig()


def _paper_2step() -> BiDPMConfig:
    config = _paper()
    config.time_points = 2
    return config


def _tiny() -> BiDPMConfig:
    return BiDPMConfig(net=tiny_net(), train=tiny_train())


@register
class BiDPM(VelocityMethod):
    key = "bi-dpm"
    title = "Bi-DPM (bi-directional discrete process matching)"
    paper = ("Anonymous authors, Bi-modality medical images synthesis by a bi-directional discrete "
             "process matching method, manuscript under double-blind review")
    capabilities = Capabilities(spatial=("2d", "3d"), data=("paired", "partial"),
                                steps=(1, MAX_STEPS), default_steps=None, bidirectional=True,
                                sliding_window=True)
    config_class = BiDPMConfig
    presets = {"cpu": _cpu, "cpu-2step": _cpu_2step, "paper": _paper, "paper-2step": _paper_2step,
               "tiny": _tiny}

    def __init__(self, config: BiDPMConfig, source: str, target: str) -> None:
        super().__init__(config, source, target)
        if config.time_points < 1:
            raise UserError(f"time_points must be at least 1, got {config.time_points}")
        if config.distance not in DISTANCES:
            raise UserError(f"unknown distance {config.distance!r}; choose one of {', '.join(DISTANCES)}")
        self._lpips: list[Any] = []  # a list, so the frozen VGG stays out of the state dict
        if config.distance == "lpips":
            if not config.lpips_weights:
                raise UserError("distance lpips needs lpips_weights, the path of local VGG16 "
                                "weights; or use distance l1-ssim")
            self._lpips.append(load_lpips(config.lpips_weights, config.lpips_lin))

    def default_steps(self) -> int:
        return int(self.config.time_points)

    def card_capabilities(self) -> dict[str, Any]:
        n = int(self.config.time_points)
        return {"default_steps": n, "steps": [n, n]}

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self._lpips:
            lpips = self._lpips[0].to(a.device)
            return lpips(a, b)
        return l1_ssim(a, b, self.config.ssim_weight)

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.config
        x, z = batch["source"], batch["target"]
        paired = torch.as_tensor(batch.get("paired", torch.ones(len(x), dtype=torch.bool)),
                                 device=x.device).bool().flatten()
        times = uniform_times(c.time_points)
        weights = bidpm_weights(c.time_points, c.weight_ends, c.weight_middle)
        forward, backward = bidpm_states(self.u, x, z, times)
        loss_p = x.new_zeros(())
        loss_u = x.new_zeros(())
        if bool(paired.any()):
            for w, f, b in zip(weights, forward, backward, strict=True):
                loss_p = loss_p + w * self.distance(f[paired], b[paired])
        if c.lambda_u > 0 and not bool(paired.all()):
            # Sec. 3.2.2: the MMD compares the unpaired items with all items of the batch.
            for f, b in zip(forward, backward, strict=True):
                loss_u = loss_u + 0.5 * (mmd(f[~paired], b, c.mmd_bandwidths)
                                         + mmd(f, b[~paired], c.mmd_bandwidths))
        loss = loss_p + c.lambda_u * loss_u
        return {"loss": loss, "paired": loss_p.detach(), "mmd": loss_u.detach()}
