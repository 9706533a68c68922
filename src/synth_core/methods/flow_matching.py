"""The flow-matching baselines of the Bi-DPM paper: rectified flow and conditional flow matching.

Both regress the velocity network onto a path's target velocity at a random time
(``E_t E_{x_t} |u(x_t, t) - v(x_t, t)|^2``, the Bi-DPM paper, sec. 2.2, Lipman et al. 2022):

* ``rectified-flow`` (Liu et al. 2022): x_t = (1 - t) x0 + t x1, v = x1 - x0;
* ``cfm`` (Tong et al. 2023) with ``variant`` ``i`` (I-CFM: the straight path with a
  small constant sigma), ``ot`` (OT-CFM: I-CFM on minibatch pairs re-drawn by exact
  optimal transport, which discards the given pairs) or ``vp`` (VP-CFM: the cosine
  path).

Pairs come from the data: paired items keep their partner; unpaired items (``partial``
and ``unpaired`` data) are random couplings, which is all these methods can use.
Same velocity U-Net, optimiser and EMA as Bi-DPM; inference integrates the ODE with
Euler steps, forward or backward (``--reverse``), 10 steps by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

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
from synth_core.nn.flow_matching import CFM_VARIANTS, make_path

DEFAULT_STEPS = 10


@dataclass
class FlowMatchingConfig:
    """Settings of ``rectified-flow`` and ``cfm``.

    Attributes:
        net: the velocity U-Net (shared with Bi-DPM so comparisons differ only in training).
        variant: ``cfm`` only: ``i``, ``ot`` or ``vp``.
        sigma: the constant path noise of the CFM variants; the paper gives none, 0.01 is
            small against images in [-1, 1].
        beta1, beta2: Adam betas.
    """

    net: VelocityNetSettings = field(default_factory=VelocityNetSettings)
    variant: str = "i"
    sigma: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    train: TrainSettings = field(default_factory=paper_train)


def _cpu(variant: str = "i") -> FlowMatchingConfig:
    # Bi-DPM's cpu network and optimisation (methods/_velocity.py).
    return FlowMatchingConfig(net=cpu_net(), variant=variant, train=cpu_train())


def _tiny(variant: str = "i") -> FlowMatchingConfig:
    return FlowMatchingConfig(net=tiny_net(), variant=variant, train=tiny_train())


class _FlowMatching(VelocityMethod):
    path_kind = "rectified"

    def __init__(self, config: FlowMatchingConfig, source: str, target: str) -> None:
        super().__init__(config, source, target)
        kind = self.path_kind if self.path_kind == "rectified" else config.variant
        if kind != "rectified" and kind not in CFM_VARIANTS:
            raise UserError(f"unknown cfm variant {kind!r}; choose one of {', '.join(CFM_VARIANTS)}")
        self.path = make_path(kind, config.sigma)

    def default_steps(self) -> int:
        return DEFAULT_STEPS

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x0, x1 = self.path.couple(batch["source"], batch["target"])
        t = torch.rand(x0.shape[0], device=x0.device)
        xt = self.path.sample(x0, x1, t)
        loss = F.mse_loss(self.velocity(xt, t), self.path.target(x0, x1, t))
        return {"loss": loss}


_CAPS = Capabilities(spatial=("2d", "3d"), data=("paired", "partial", "unpaired"),
                     steps=(1, MAX_STEPS), default_steps=DEFAULT_STEPS, bidirectional=True)


@register
class RectifiedFlow(_FlowMatching):
    key = "rectified-flow"
    title = "Rectified flow (straight-path flow matching)"
    paper = "Liu, Gong and Liu, Flow straight and fast: learning to generate and transfer data with rectified flow, ICLR 2023"
    capabilities = _CAPS
    config_class = FlowMatchingConfig
    presets = {"cpu": _cpu, "paper": FlowMatchingConfig, "tiny": _tiny}
    path_kind = "rectified"


@register
class ConditionalFlowMatching(_FlowMatching):
    key = "cfm"
    title = "Conditional flow matching (I-CFM, OT-CFM, VP-CFM)"
    paper = "Tong et al., Improving and generalizing flow-based generative models with minibatch optimal transport, TMLR 2024"
    capabilities = _CAPS
    config_class = FlowMatchingConfig
    presets = {"cpu": _cpu, "cpu-ot": lambda: _cpu("ot"), "cpu-vp": lambda: _cpu("vp"),
               "paper": FlowMatchingConfig, "paper-ot": lambda: FlowMatchingConfig(variant="ot"),
               "paper-vp": lambda: FlowMatchingConfig(variant="vp"), "tiny": _tiny}
    path_kind = "cfm"
