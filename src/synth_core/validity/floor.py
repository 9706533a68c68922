"""The noise floor: how well the noise-free truth itself scores against the noisy target."""

from __future__ import annotations

from typing import Any

import numpy as np

from synth_core.metrics import evaluate


def noise_floor(clean: np.ndarray, noisy: np.ndarray, modality: str,
                mask: np.ndarray | None = None) -> dict[str, Any]:
    """``metrics.evaluate(clean, noisy, normalise=True)``: the score no method can beat.

    A method is scored against the noisy target a user would have; even a perfect method
    (the clean truth) loses the noise there. Shown beside a checkpoint's score, it says how
    much of the gap is left. Same units and normalisation as the checkpoint's figures.

    Args:
        clean, noisy: (X, Y, Z) the noise-free and the noisy true target.
        modality: the target's modality key (chooses the scoring normalisation).
        mask: the brain for MR and PET, the head for CT; None uses the noisy target's
            foreground, as ``evaluate`` does.
    """
    return evaluate(clean, noisy, mask=mask, normalise=True, modality=modality)
