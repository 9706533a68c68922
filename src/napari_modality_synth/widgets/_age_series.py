"""One MRI synthesized across ages, and region means against age: the Age explorer's numbers, no Qt.

``synthesize_ages`` calls ``translate`` once per age (years) and stacks the results as
(n_ages, X, Y, Z); ``region_means`` averages each labelled region of every volume;
``age_affine`` places the stack in napari with age as its first world axis.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synth_core import UserError, Volume

# The phantom's labels file and layer: "sub-001_labels", "sub-001_labels.nii.gz".
_PHANTOM_LABELS = re.compile(r"_labels(\.nii(\.gz)?)?\s*$", re.IGNORECASE)


@dataclass
class AgeSeries:
    """One input synthesized at several ages.

    Attributes:
        ages: years, shape (n_ages,).
        stack: synthesized volumes, shape (n_ages, X, Y, Z), on the input's grid.
        affine: the input's 4x4 voxel -> RAS+ mm affine.
        modality: the synthesized modality.
        provenance: the first translation's provenance, with ``Parameters.age`` = all ages.
        region_means: region name -> mean synthesized intensity per age, shape (n_ages,).
    """

    ages: np.ndarray
    stack: np.ndarray
    affine: np.ndarray
    modality: str
    provenance: dict[str, Any]
    region_means: dict[str, np.ndarray] = field(default_factory=dict)


def age_affine(affine: np.ndarray, first_age: float, step: float) -> np.ndarray:
    """The 5x5 (age, x, y, z) affine: age = first_age + step * index (years), space as ``affine``."""
    extended = np.eye(5)
    extended[0, 0], extended[0, 4] = step, first_age
    extended[1:4, 1:4] = affine[:3, :3]
    extended[1:4, 4] = affine[:3, 3]
    return extended


def age_grid(first: float, last: float, step: float) -> np.ndarray:
    """Ages ``first, first + step, ...`` up to ``last`` included (years); UserError if empty."""
    if step <= 0 or last < first:
        raise UserError(
            f"ages from {first:g} to {last:g} in steps of {step:g} make no range; "
            "choose 'from' at most 'to' and a positive step"
        )
    return np.arange(first, last + step * 1e-6, step, dtype=float)


def region_means(stack: np.ndarray, labels: np.ndarray | None,
                 names: Mapping[int, str]) -> dict[str, np.ndarray]:
    """Mean of every labelled region (label > 0) of each volume of ``stack`` (n, X, Y, Z).

    Without labels: one entry, the whole volume. Region names come from ``names``
    (``label <v>`` when missing). Returns name -> shape (n,).
    """
    if labels is None:
        return {"whole volume": stack.reshape(len(stack), -1).mean(axis=1)}
    labels = np.asarray(labels)
    if labels.shape != stack.shape[1:]:
        raise UserError(
            f"the labels layer has shape {labels.shape}, the MRI {stack.shape[1:]}; choose labels "
            "on the MRI's grid (or none)"
        )
    flat_labels = labels.reshape(-1)
    flat = stack.reshape(len(stack), -1)
    means = {}
    for value in np.unique(flat_labels):
        if value <= 0:
            continue
        means[names.get(int(value), f"label {int(value)}")] = flat[:, flat_labels == value].mean(axis=1)
    return means


def region_names(layer: Any) -> dict[int, str]:
    """Label value -> region name for a labels layer; a value without a name reads ``label <v>``.

    In this order: the layer's features (an ``index`` column and a text column); the
    phantom's ``LABELS`` for the phantom's own labels (a name or file ending in
    ``_labels``); for a mask (one value above 0, e.g. a brain mask) the layer's name, so
    the plot names the region actually averaged; else nothing.
    """
    features = getattr(layer, "features", None)
    if features is not None and len(features) and "index" in features:
        # Any non-numeric column names the regions (object, string or category dtype).
        text = [c for c in features.columns if c != "index" and features[c].dtype.kind not in "biufc"]
        if text:
            return {int(i): str(n) for i, n in zip(features["index"], features[text[0]], strict=False)}
    source = str((getattr(layer, "metadata", None) or {}).get("source_path") or "")
    if any(_PHANTOM_LABELS.search(text) for text in (layer.name, source)):
        from synth_core.phantom import LABELS

        return dict(LABELS)
    values = np.unique(np.asarray(layer.data))
    values = values[values > 0]
    if values.size == 1:
        return {int(values[0]): str(layer.name)}
    return {}


def synthesize_ages(volume: Volume, method: str, info: Any, ages: np.ndarray, *,
                    source: str | None, device: str, labels: np.ndarray | None,
                    names: Mapping[int, str], report: Callable[[Any], None],
                    translate_fn: Callable[..., Any]) -> AgeSeries:
    """Translate ``volume`` at each age with ``translate_fn`` (``synth_core.translate``), then ROI means."""
    volumes = []
    provenance: dict[str, Any] = {}
    n = len(ages)
    for i, age in enumerate(ages):
        def progress(fraction: float, message: str, i: int = i, age: float = age) -> None:
            report(((i + fraction) / n, f"age {age:g} ({i + 1}/{n}): {message}"))

        result = translate_fn(volume, method, info.target, source=source, checkpoint=str(info.directory),
                              age=float(age), device=device, progress=progress)
        volumes.append(np.asarray(result.volume.data, dtype=np.float32))
        provenance = provenance or dict(result.provenance)
    stack = np.stack(volumes)
    provenance["Parameters"] = dict(provenance.get("Parameters", {}), age=[float(a) for a in ages])
    return AgeSeries(ages, stack, np.asarray(volume.affine), info.target, provenance,
                     region_means(stack, labels, names))
