"""Sample data "Phantom subject": every modality of one phantom subject, its brain mask and labels.

The subject (``synth_core.phantom.generate_subject(0, seed=0, preset="small")``) is made
on the fly, once per session, and kept in memory. All layers share the subject's affine,
so they overlay in world mm; images get their modality's colormap and contrast limits
(``layers.display_settings``). Only T1 and the labels start visible: stacked opaque
images would hide each other anyway.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from napari_modality_synth.layers import LayerDataTuple, volume_to_layer_data

SAMPLE_SUBJECT = {"index": 0, "seed": 0, "preset": "small"}
MASK_KEYS: tuple[str, ...] = ("brainmask", "labels")
VISIBLE: tuple[str, ...] = ("t1", "labels")


@lru_cache(maxsize=1)
def _subject() -> Any:
    from synth_core.phantom import generate_subject

    return generate_subject(**SAMPLE_SUBJECT)


def phantom_subject() -> list[LayerDataTuple]:
    """Layer data tuples: one image layer per modality, then brain mask and labels (labels layers).

    Names are ``"sub-001_<modality> [<modality>]"`` and ``"sub-001_brainmask"``,
    ``"sub-001_labels"``; the labels layer's features name each region.
    """
    subject = _subject()
    images = [key for key in subject.volumes if key not in MASK_KEYS]
    layers: list[LayerDataTuple] = []
    for key in images + [key for key in MASK_KEYS if key in subject.volumes]:
        volume = subject.volumes[key]
        name = f"{subject.subject_id}_{key}" + (f" [{volume.modality}]" if volume.modality else "")
        data, kwargs, layer_type = volume_to_layer_data(volume, name=name, as_labels=key in MASK_KEYS)
        # Copies: a user painting on a labels layer must not edit the cached subject.
        data = np.array(data, copy=True)
        kwargs["visible"] = key in VISIBLE
        kwargs["metadata"]["phantom"] = {
            "subject_id": subject.subject_id, "age": subject.age, "diagnosis": subject.diagnosis,
        }
        if key == "labels":
            kwargs.update(features=_region_features(), opacity=0.4)
        layers.append((data, kwargs, layer_type))
    return layers


def _region_features() -> dict[str, list[Any]]:
    # napari shows a label's row of this table under the cursor: the region's name.
    from synth_core.phantom import LABELS

    names = {0: "background", **LABELS}
    return {"index": sorted(names), "region": [names[i] for i in sorted(names)]}
