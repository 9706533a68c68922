"""napari writer: an image layer to NIfTI (``.nii.gz`` or ``.nii``) through ``synth_core.save_volume``.

The file gets the layer's world placement (``layers.state_to_volume``: the affine read
from its file, else napari's own transform) and, for a layer read from NIfTI, that
header's sform/qform codes and time unit. A synthetic layer (provenance with
``"Synthetic": true``) also gets its BIDS sidecar ``<name>.json``.

An existing file is replaced: napari's save dialog has already asked. The layer's own
source file never is: ``save_volume`` refuses, and the refusal, like every user
mistake, becomes an error notification and nothing is written.
"""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_error

from napari_modality_synth.layers import state_to_volume
from synth_core import UserError, save_volume


def write_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer (data (X, Y, Z), napari's layer state ``meta``) to ``path``.

    Returns ``[path]`` when written, ``[]`` (after an error notification) when not.
    """
    try:
        written = save_volume(state_to_volume(data, meta), path, overwrite=True)
    except UserError as exc:
        show_error(str(exc))
        return []
    return [str(written)]
