"""The validity measures: questions only a phantom's known truth can answer.

Pure functions of arrays (no model, no files), so each is tested on hand-built volumes with
known answers; ``synth_core.validity_suite`` runs them over bundled checkpoints and writes the
report.

- ``lesions``: a lesion's contrast kept, and regions invented where there is none.
- ``counterfactual_age``: does an age slider move what ageing moves, and nothing else.
- ``floor``: the score of the clean truth against the noisy target.
"""

from synth_core.validity.counterfactual_age import age_change_agreement, change_voxel_sets
from synth_core.validity.floor import noise_floor
from synth_core.validity.lesions import (
    hallucination_volume,
    lesion_contrast_ratio,
    linear_match,
    noise_sd,
)

__all__ = [
    "age_change_agreement",
    "change_voxel_sets",
    "hallucination_volume",
    "lesion_contrast_ratio",
    "linear_match",
    "noise_floor",
    "noise_sd",
]
