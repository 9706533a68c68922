"""Synthesis methods: the contract (``base``) and one module per method.

A method's module is imported when its key is first asked for (``get_method_class``,
through ``base.METHOD_MODULES``), not here: a pix2pix translation then loads pix2pix only.
"""

from synth_core.methods.base import (
    METHOD_MODULES,
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
    "METHOD_MODULES",
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
