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
    WINDOW_OVERLAP,
    Capabilities,
    Method,
    StepContext,
    SynthesisRequest,
    TrainSettings,
    apply_overrides,
    build_config,
    check_modalities,
    check_patch_size,
    config_from_dict,
    get_method_class,
    method_keys,
    patch_window,
    register,
    synthesize_slices,
    synthesize_windows,
)

__all__ = [
    "WINDOW_OVERLAP",
    "Capabilities",
    "Method",
    "StepContext",
    "SynthesisRequest",
    "TrainSettings",
    "apply_overrides",
    "build_config",
    "check_modalities",
    "check_patch_size",
    "config_from_dict",
    "get_method_class",
    "method_keys",
    "patch_window",
    "register",
    "synthesize_slices",
    "synthesize_windows",
]
