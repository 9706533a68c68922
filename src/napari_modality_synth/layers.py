"""Volume <-> napari layer data: the one place that maps a Volume's affine onto napari.

Axis convention. A Volume's data is indexed (i, j, k) = (x, y, z) voxel axes and its
affine maps (i, j, k, 1) to RAS+ world millimetres. The layer keeps the data in that
order, so napari's data axes 0, 1, 2 are the voxel axes i, j, k, napari's world axes
0, 1, 2 are R, A, S in mm, and the layer's ``affine`` parameter is the Volume's 4x4
affine unchanged. napari slides along world axis 0 (x, left-right) by default and shows
(y, z) on the canvas; roll or transpose the dims to see axial slices.

Layer metadata written here: ``affine`` (4x4, as read), ``header``, ``source_path``,
``format``, ``modality`` and, for synthetic volumes, ``provenance``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.transforms import Affine, CompositeAffine

from synth_core import UserError, Volume
from synth_core.io import guess_modality

LayerDataTuple = tuple[np.ndarray, dict[str, Any], str]

AXIS_LABELS: tuple[str, str, str] = ("x (R)", "y (A)", "z (S)")
UNITS: tuple[str, str, str] = ("mm", "mm", "mm")
CT_BRAIN_WINDOW_HU: tuple[float, float] = (0.0, 80.0)
# Percentiles for MR and PET contrast: robust to hot voxels and to the zero background.
ROBUST_PERCENTILES: tuple[float, float] = (1.0, 99.5)

_LABEL_NAME = re.compile(r"(label|mask|seg|parc)", re.IGNORECASE)
_MAX_LABEL_VALUES = 1000
# The metadata keys a Volume hands on to its layer (and back).
_CARRIED = ("header", "source_path", "format", "provenance")


def volume_to_layer_data(
    volume: Volume, name: str | None = None, *, as_labels: bool | None = None
) -> LayerDataTuple:
    """A napari layer data tuple ``(data, kwargs, layer_type)`` placing ``volume`` in world mm.

    Args:
        volume: the scan; data (X, Y, Z), affine voxel -> RAS+ mm.
        name: layer name; default ``"<file stem> [<modality>]"`` from the source path.
        as_labels: force a labels (True) or image (False) layer; by default a labels
            layer for integer volumes with few values whose name says label, mask or seg.

    Returns:
        ``(data, kwargs, "image" | "labels")``: data (X, Y, Z), float32 for images and the
        smallest fitting integer type for labels; kwargs with ``affine``, ``name``,
        ``metadata`` and, for images, ``colormap`` and ``contrast_limits``.
    """
    stem = _stem(volume)
    if name is None:
        name = f"{stem} [{volume.modality}]" if volume.modality else stem
    if as_labels is None:
        as_labels = looks_like_labels(volume.data, stem)
    metadata: dict[str, Any] = {
        key: volume.metadata[key] for key in _CARRIED if key in volume.metadata
    }
    metadata.update(affine=np.array(volume.affine, dtype=np.float64), modality=volume.modality)
    kwargs: dict[str, Any] = {
        "name": name, "affine": np.array(volume.affine, dtype=np.float64),
        "metadata": metadata, "axis_labels": AXIS_LABELS, "units": UNITS,
    }
    if as_labels:
        return _label_array(volume.data), kwargs, "labels"
    data = np.asarray(volume.data, dtype=np.float32)
    kwargs.update(display_settings(data, volume.modality))
    return data, kwargs, "image"


def display_settings(data: np.ndarray, modality: str | None) -> dict[str, Any]:
    """Colormap and contrast limits that suit ``modality``.

    PET: "hot", 0 to the 99.5th percentile. CT: gray, the brain window 0-80 HU. MR and
    unknown: gray, 1st to 99.5th percentile.
    """
    kind = modality.split("-", 1)[0] if modality else None  # ct-sharp -> ct
    if kind == "ct":
        return {"colormap": "gray", "contrast_limits": CT_BRAIN_WINDOW_HU}
    low, high = (float(v) for v in np.percentile(data, ROBUST_PERCENTILES))
    if kind == "pet":
        low = min(0.0, low)
    if not high > low:  # mostly constant images (a mask stored as float): use the full range
        low, high = float(data.min()), float(data.max())
    if not high > low:
        high = low + 1.0
    return {"colormap": "hot" if kind == "pet" else "gray", "contrast_limits": (low, high)}


def looks_like_labels(data: np.ndarray, name: str) -> bool:
    """True for integer-valued data with at most 1000 values and a name saying label/mask/seg."""
    if not _LABEL_NAME.search(name):
        return False
    if not np.array_equal(data, np.round(data)):
        return False
    return np.unique(data).size <= _MAX_LABEL_VALUES


def world_affine(state: Mapping[str, Any], ndim: int = 3) -> np.ndarray:
    """The 4x4 data -> world matrix of a layer state (``layer.as_layer_data_tuple()[1]``).

    napari places a layer by ``affine`` after (scale, translate, rotate, shear); the
    product is the Volume's affine. Missing entries count as identity.
    """
    inner = CompositeAffine(
        scale=state.get("scale"), translate=state.get("translate"),
        rotate=state.get("rotate"), shear=state.get("shear"), ndim=ndim,
    )
    outer = state.get("affine")
    if outer is None:
        outer_matrix = np.eye(ndim + 1)
    elif isinstance(outer, Affine):
        outer_matrix = outer.affine_matrix
    else:
        outer_matrix = np.asarray(outer, dtype=np.float64)
    return np.asarray(outer_matrix @ inner.affine_matrix, dtype=np.float64)


def state_to_volume(data: Any, state: Mapping[str, Any]) -> Volume:
    """A Volume from layer data (X, Y, Z) and its state (kwargs) as napari hands them to writers.

    The affine is ``metadata["affine"]`` when present (the file's own, exactly as read), else
    the layer's own placement (``world_affine``). Header, source path, format, modality and
    provenance come from the metadata; the modality is guessed from the name otherwise.
    Raises UserError for data that is not 3D.
    """
    array = np.asarray(data)
    if array.ndim != 3:
        raise UserError(
            f"layer '{state.get('name', '')}' has {array.ndim} dimensions {array.shape}, not a "
            "3D volume; choose a 3D image layer"
        )
    metadata = dict(state.get("metadata") or {})
    affine = metadata.get("affine")
    affine = world_affine(state) if affine is None else np.asarray(affine, dtype=np.float64)
    modality = metadata.get("modality") or _modality_from_name(str(state.get("name", "")))
    carried = {key: metadata[key] for key in _CARRIED if key in metadata}
    return Volume(array.astype(np.float32), affine, modality, carried)


def layer_to_volume(layer: Any) -> Volume:
    """The Volume shown by an image or labels layer: data (X, Y, Z) float32, affine as in ``state_to_volume``."""
    state = {
        "name": layer.name, "metadata": layer.metadata, "scale": layer.scale,
        "translate": layer.translate, "rotate": layer.rotate, "shear": layer.shear,
        "affine": layer.affine,
    }
    return state_to_volume(layer.data, state)


def layer_modality(layer: Any) -> str | None:
    """The layer's modality key: from its metadata, else guessed from its name; None if unknown."""
    return layer.metadata.get("modality") or _modality_from_name(layer.name)


def is_synthetic(layer: Any) -> bool:
    """True when the layer's provenance says ``"Synthetic": true`` (made by a method)."""
    provenance = layer.metadata.get("provenance") or {}
    return bool(provenance.get("Synthetic", False))


def _modality_from_name(name: str) -> str | None:
    # A name made here ends in " [t1]"; others are read like file names.
    bracket = re.search(r"\[([a-z0-9\-]+)\]\s*$", name)
    return bracket.group(1) if bracket else guess_modality(name)


def _stem(volume: Volume) -> str:
    source = volume.metadata.get("source_path")
    if not source:
        return volume.modality or "volume"
    stem = Path(source).name
    for extension in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm"):
        if stem.lower().endswith(extension):
            return stem[: -len(extension)]
    return stem


def _label_array(data: np.ndarray) -> np.ndarray:
    values = np.rint(data)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= np.iinfo(np.uint8).max:
        return values.astype(np.uint8)
    if low >= 0 and high <= np.iinfo(np.uint16).max:
        return values.astype(np.uint16)
    return values.astype(np.int32)
