"""Which modalities and checkpoints a method offers: pure functions, no Qt.

The widgets read a method's capabilities (``synth_core.list_methods()``) and the cards
of its checkpoints (``synth_core.list_checkpoints(method)``), never the method itself.
A checkpoint translates its card's ``source`` (or each of ``capabilities.sources``, for a
labelled model of several) to its ``target``; a bidirectional one
also runs back (target -> source); an any-to-any one maps any two of its card's
``modalities``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from synth_core.volume import ALL_MODALITIES


def directions(info: Any, capabilities: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (source, target) pairs one checkpoint can translate."""
    if capabilities.get("any_to_any") or info.card.get("any_to_any"):
        modalities = list(info.card.get("modalities") or [info.source, info.target])
        return [(a, b) for a in modalities for b in modalities if a != b]
    # A labelled model (DUIIT) may take several sources, listed in its card's capabilities.
    sources = list((info.card.get("capabilities") or {}).get("sources") or [info.source])
    pairs = [(s, info.target) for s in sources]
    if capabilities.get("bidirectional"):
        pairs += [(info.target, s) for s in sources]
    return pairs


def source_options(infos: Iterable[Any], capabilities: Mapping[str, Any]) -> list[str]:
    """Input modalities some checkpoint accepts, in the engine's modality order."""
    found = {source for info in infos for source, _ in directions(info, capabilities)}
    return _ordered(found)


def target_options(infos: Iterable[Any], capabilities: Mapping[str, Any], source: str | None) -> list[str]:
    """Target modalities some checkpoint reaches from ``source``."""
    found = {t for info in infos for s, t in directions(info, capabilities) if s == source}
    return _ordered(found)


def fitting(
    infos: Sequence[Any], capabilities: Mapping[str, Any], source: str | None, target: str | None
) -> list[Any]:
    """The checkpoints that translate ``source`` to ``target``, in the zoo's order (user's newest first)."""
    return [info for info in infos if (source, target) in directions(info, capabilities)]


def runs_reverse(info: Any, source: str | None, target: str | None) -> bool:
    """True when ``info`` must run backwards (its target -> its source) for this translation."""
    if info.card.get("any_to_any"):
        return False  # one model, every direction: nothing runs backwards
    sources = list((info.card.get("capabilities") or {}).get("sources") or [info.source])
    return source == info.target and target in sources and source not in sources


def age_range(info: Any | None) -> tuple[float, float] | None:
    """The checkpoint card's ``age_range`` [lo, hi] in years, or None when it has none."""
    if info is None:
        return None
    bounds = info.card.get("age_range")
    if not bounds:
        return None
    lo, hi = (float(v) for v in bounds)
    return (lo, hi) if hi >= lo else None


def methods_with_condition(methods: Mapping[str, Mapping[str, Any]], condition: str) -> list[str]:
    """Keys of the methods whose capabilities list ``condition`` (e.g. "age")."""
    return [key for key, entry in methods.items() if condition in entry["capabilities"]["conditions"]]


def checkpoint_label(info: Any) -> str:
    """What a checkpoint combo shows: ``name (t1 -> pet, user)``, ``name (t1/pet -> ct, user)``
    for a model of several sources, or ``name (any of t1, t1ce, t2, flair, user)``."""
    if info.card.get("any_to_any"):
        return f"{info.name} (any of {', '.join(info.card.get('modalities') or [])}, {info.origin})"
    sources = (info.card.get("capabilities") or {}).get("sources") or [info.source]
    return f"{info.name} ({'/'.join(sources)} -> {info.target}, {info.origin})"


#: The Translate widget's "To" entry that completes a study: every target an any-to-any
#: checkpoint reaches from the input's modality, one layer each.
ALL_MISSING = "(all missing contrasts)"


def all_missing_label(targets: Sequence[str]) -> str:
    """The "To" entry's text, naming what it adds: ``all missing contrasts (t1ce, t2, flair)``."""
    return f"all missing contrasts ({', '.join(targets)})"


def study_targets(info: Any, capabilities: Mapping[str, Any], source: str | None) -> list[str]:
    """Every target one checkpoint reaches from ``source`` (the contrasts a study lacks when
    only ``source`` was acquired), in the engine's modality order."""
    return _ordered({t for s, t in directions(info, capabilities) if s == source})


def _ordered(modalities: set[str]) -> list[str]:
    known = [m for m in ALL_MODALITIES if m in modalities]
    return known + sorted(modalities - set(known))
