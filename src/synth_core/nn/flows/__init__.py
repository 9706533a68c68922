"""Normalising flows in 3D: Glow layers, a multi-scale Glow, and DUAL-GLOW (MRI -> PET)."""

from synth_core.nn.flows.config import (
    DualGlowConfig,
    DualGlowNetworkSettings,
    cpu_preset,
    paper_preset,
    preset,
)
from synth_core.nn.flows.dual_glow import DualGlow
from synth_core.nn.flows.glow import Glow3d, latent_channels
from synth_core.nn.flows.layers import (
    ActNorm3d,
    AffineCoupling3d,
    FlowStep,
    InvConv1x1x1LU,
    Split3d,
    Squeeze3d,
)
from synth_core.nn.flows.priors import AgeRegressor, RelationNet, gaussian_log_prob

__all__ = [
    "ActNorm3d",
    "AffineCoupling3d",
    "AgeRegressor",
    "DualGlow",
    "DualGlowConfig",
    "DualGlowNetworkSettings",
    "FlowStep",
    "Glow3d",
    "InvConv1x1x1LU",
    "RelationNet",
    "Split3d",
    "Squeeze3d",
    "cpu_preset",
    "gaussian_log_prob",
    "latent_channels",
    "paper_preset",
    "preset",
]
