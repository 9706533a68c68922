"""Synthesis methods: the contract (``base``) and one module per method."""

from synth_core.methods import cyclegan, dual_glow, pix2pix  # noqa: F401  (registers the methods)
from synth_core.methods.base import (
    Capabilities,
    Method,
    StepContext,
    SynthesisRequest,
    TrainSettings,
    build_config,
    check_modalities,
    config_from_dict,
    get_method_class,
    method_keys,
    register,
)

__all__ = [
    "Capabilities",
    "Method",
    "StepContext",
    "SynthesisRequest",
    "TrainSettings",
    "build_config",
    "check_modalities",
    "config_from_dict",
    "get_method_class",
    "method_keys",
    "register",
]
