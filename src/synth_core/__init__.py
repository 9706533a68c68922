"""synth_core: the engine of napari-modality-synth.

The public API (the CLI and the napari plugin use only this)::

    import synth_core as sc
    vol = sc.load_volume("sub-001_t1.nii.gz")
    res = sc.translate(vol, method="pix2pix", to="pet")
    sc.save_volume(res.volume, "pet_synth.nii.gz")
    sc.evaluate(res.volume, sc.load_volume("sub-001_pet.nii.gz"))
    sc.list_methods()
"""

from __future__ import annotations

from typing import Any

from synth_core._version import __version__ as __version__

__all__ = [
    "UserError",
    "Volume",
    "evaluate",
    "list_checkpoints",
    "list_methods",
    "load_volume",
    "save_volume",
    "translate",
]


def list_methods() -> dict[str, dict[str, Any]]:
    """Registry keys with their title, paper, capabilities and presets."""
    from synth_core.methods import get_method_class, method_keys

    out = {}
    for key in method_keys():
        cls = get_method_class(key)
        out[key] = {"title": cls.title, "paper": cls.paper,
                    "capabilities": cls.capabilities.to_dict(), "presets": sorted(cls.presets)}
    return out


def __getattr__(name: str) -> Any:
    # Lazy: `import synth_core` stays light (no torch) for the CLI's --help and the plugin's start.
    if name in ("load_volume", "save_volume"):
        from synth_core import io

        return getattr(io, name)
    if name == "translate":
        from synth_core.inference import translate

        return translate
    if name == "evaluate":
        from synth_core.metrics import evaluate

        return evaluate
    if name == "Volume":
        from synth_core.volume import Volume

        return Volume
    if name == "UserError":
        from synth_core.errors import UserError

        return UserError
    if name == "list_checkpoints":
        from synth_core.zoo import list_checkpoints

        return list_checkpoints
    raise AttributeError(f"module 'synth_core' has no attribute {name!r}")
