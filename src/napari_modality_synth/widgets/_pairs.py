"""Which two layers Compare offers first: a synthesized scan and its true target. No Qt.

A synthesized layer carries its provenance (``"Synthetic": true``, ``TargetModality``).
Its reference is a layer that is not synthetic, of that modality, of the same subject
(when both subjects are known: a scan of another subject is never its truth). Without
such a pair, two scans of one modality and subject are compared (a scan against a second
copy or a cleaner version of itself); without those, the first two images, as listed.

A layer's subject is, in this order: its metadata's ``subject_id`` (the Translate widget
records its input's), the phantom sample's ``phantom.subject_id``, or a BIDS
``sub-<label>`` in its name, its source file's path, or its provenance's ``Sources``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from napari_modality_synth.layers import is_synthetic, layer_modality

# BIDS: "sub-" and a label of letters and digits, ended by "_", "." or the end.
_SUBJECT = re.compile(r"(?:^|[^A-Za-z0-9])(sub-[A-Za-z0-9]+)(?=[_.\s/\\]|$)")
# Layers Compare makes itself (its difference maps) and a stochastic method's spread.
DERIVED_KEYS = ("difference_of", "std_of")


@dataclass(frozen=True)
class Pair:
    """Compare's default: the layer judged, its reference, and why (for the widget's hint)."""

    first: Any
    second: Any
    reason: str


def layer_subject(layer: Any) -> str | None:
    """The subject a layer shows (``sub-001``), or None when nothing says."""
    metadata = layer.metadata or {}
    if metadata.get("subject_id"):
        return str(metadata["subject_id"])
    phantom = metadata.get("phantom") or {}
    if phantom.get("subject_id"):
        return str(phantom["subject_id"])
    provenance = metadata.get("provenance") or {}
    for text in (layer.name, metadata.get("source_path"), *(provenance.get("Sources") or ())):
        found = _SUBJECT.search(str(text or ""))
        if found:
            return found.group(1)
    return None


def is_derived(layer: Any) -> bool:
    """True for a difference map made by Compare or a spread (std) layer made by Translate."""
    metadata = layer.metadata or {}
    return any(key in metadata for key in DERIVED_KEYS)


def target_modality(layer: Any) -> str | None:
    """The modality a synthesized layer stands in for: its provenance's, else its own."""
    provenance = layer.metadata.get("provenance") or {}
    return provenance.get("TargetModality") or layer_modality(layer)


def default_pair(layers: Sequence[Any]) -> Pair:
    """Compare's first choice among ``layers`` (3D image layers, bottom to top).

    The topmost synthesized layer that has a true target, with that target (its
    modality, its subject); else two layers of one modality and subject; else the first two.
    ``first`` or ``second`` is None when there are too few layers.
    """
    scans = [layer for layer in layers if not is_derived(layer)]
    for synthetic in reversed([layer for layer in scans if is_synthetic(layer)]):
        truth = true_target(synthetic, scans)
        if truth is not None:
            return Pair(synthetic, truth, f"'{synthetic.name}' against its true "
                        f"{target_modality(synthetic)}, '{truth.name}'")
    for i, first in enumerate(scans):
        modality, subject = layer_modality(first), layer_subject(first)
        twin = next((other for other in scans[i + 1:]
                     if modality is not None and layer_modality(other) == modality
                     and _same_subject(subject, layer_subject(other))), None)
        if twin is not None:
            return Pair(first, twin, f"two {modality} scans; no synthesized layer with its true target")
    pool = scans if len(scans) >= 2 else list(layers)
    first = pool[0] if pool else None
    second = pool[1] if len(pool) > 1 else None
    reason = ("no synthesized layer with its true target, nor two scans of one modality: "
              "choose the pair" if second is not None else "")
    return Pair(first, second, reason)


def true_target(synthetic: Any, layers: Sequence[Any]) -> Any | None:
    """The acquired layer a synthesized one should match: its target modality, same subject.

    A candidate whose subject is known and differs is never chosen; one of the same
    subject is preferred to one whose subject is unknown. None when there is none.
    """
    modality = target_modality(synthetic)
    if modality is None:
        return None
    subject = layer_subject(synthetic)
    candidates = [layer for layer in layers if layer is not synthetic and not is_synthetic(layer)
                  and not is_derived(layer) and layer_modality(layer) == modality]
    same = [layer for layer in candidates if subject is not None and layer_subject(layer) == subject]
    unknown = [layer for layer in candidates if _same_subject(subject, layer_subject(layer))]
    for group in (same, unknown):
        if group:
            return group[0]
    return None


def _same_subject(a: str | None, b: str | None) -> bool:
    # Unknown on either side may be the same subject; two known ones must match.
    return a is None or b is None or a == b
