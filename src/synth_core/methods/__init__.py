"""Synthesis methods: the contract (``base``) and one module per method."""

from synth_core.methods import (  # noqa: F401  (registers the methods)
    bi_dpm,
    cyclegan,
    dual_glow,
    flow_matching,
    pix2pix,
    revgan,
)
from synth_core.methods.base import (
    Capabilities,
    Method,
    StepContext,
    SynthesisRequest,
    TrainSettings,
    apply_overrides,
    build_config,
    check_modalities,
    config_from_dict,
    get_method_class,
    method_keys,
    register,
    synthesize_slices,
)

__all__ = [
    "Capabilities",
    "Method",
    "StepContext",
    "SynthesisRequest",
    "TrainSettings",
    "apply_overrides",
    "build_config",
    "check_modalities",
    "config_from_dict",
    "get_method_class",
    "method_keys",
    "register",
    "synthesize_slices",
]
