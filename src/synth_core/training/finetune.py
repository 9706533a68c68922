"""Fine-tuning: a new run that starts from a trained checkpoint's weights (``--init-from``).

A researcher with a few real paired scans starts from a phantom-trained model. The parent
must be the same method and the same source and target; its architecture (the config in
its card) and its voxel size are kept, and the weights come from its safetensors (sha256
checked, never a pickle). Only training settings may change: how long, how fast, how often
to validate and save, and the settings the method lists as ``resumable`` (loss weights);
anything else would not fit the parent's weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from synth_core import zoo
from synth_core.errors import UserError
from synth_core.methods import Method, apply_overrides, config_from_dict

#: Training settings that do not change the network, so a fine-tuning run may set them.
_FIXED_TRAIN = ("train.spatial", "train.multiple")


def parent_checkpoint(name_or_path: str, method: str, source: str, target: str) -> zoo.CheckpointInfo:
    """The checkpoint ``--init-from`` names (a zoo name, a folder or a model.safetensors).

    Raises UserError when it is not found or is another method or direction."""
    info = zoo.locate(name_or_path)
    if (info.method, info.source, info.target) != (method, source, target):
        raise UserError(
            f"--init-from {name_or_path}: that checkpoint is {info.method} {info.source} -> "
            f"{info.target}, not {method} {source} -> {target}; pick one of the same method and "
            "modalities (see `modality-synth models`) or train from scratch"
        )
    return info


def parent_config(parent: zoo.CheckpointInfo, overrides: dict[str, Any],
                  resumable: tuple[str, ...]) -> Any:
    """The parent's config with the request's training overrides applied.

    Raises UserError for an override that changes the architecture (anything outside
    ``train.*``, ``train.spatial``, ``train.multiple``) unless the method lists it as resumable."""
    config = config_from_dict(parent.method, parent.card.get("config", {}))
    before = flatten_config(dataclasses.asdict(config))
    apply_overrides(parent.method, config, overrides)
    after = flatten_config(dataclasses.asdict(config))
    refused = [k for k in after if after[k] != before.get(k)
               and (not k.startswith("train.") or k in _FIXED_TRAIN) and k not in resumable]
    if refused:
        shown = ", ".join(f"{k} ({before.get(k)!r} -> {after[k]!r})" for k in refused)
        raise UserError(
            f"cannot change {shown} when fine-tuning from {parent.name}: the architecture comes "
            "from its card; drop the setting, or train from scratch without --init-from"
        )
    return config


def load_parent_weights(method: Method, parent: zoo.CheckpointInfo) -> None:
    """Copy the parent's exported (inference) weights into ``method``, exactly (float16
    bundles are cast to the model's float32). Training-only parts (a discriminator) start new."""
    loaded = zoo.load_method(parent, "cpu")  # safetensors only; sha256 checked against the card
    prefixes = tuple(f"{name}." for name in loaded.inference_modules())
    state = {k: v for k, v in loaded.state_dict().items() if k.startswith(prefixes)}
    missing, unexpected = method.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.startswith(prefixes)]
    if missing or unexpected:  # the card's config built both, so this is a damaged card
        raise UserError(f"{parent.weights} does not fit its own card ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected tensors); re-export the parent")


def parent_record(parent: zoo.CheckpointInfo) -> dict[str, Any]:
    """What the new card and config.json say about the parent."""
    return {"name": parent.name, "sha256": parent.sha256, "origin": parent.origin,
            "method": parent.method, "steps": parent.card.get("steps"),
            "preset": parent.card.get("preset")}


def parent_spacing(parent: zoo.CheckpointInfo) -> float | None:
    """The parent's isotropic voxel size (mm), which the fine-tuning data is resampled to."""
    spacing = parent.card.get("spacing")
    if spacing and max(spacing) - min(spacing) < 1e-6:
        return float(spacing[0])
    return None


def flatten_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested settings dict as ``{"net.features": 32, ...}`` (tuples as lists, as in JSON)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten_config(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat
