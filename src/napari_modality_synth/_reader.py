"""napari reader: NIfTI, MetaImage, NRRD files and DICOM series folders, placed in world mm.

Every file goes through ``synth_core.load_volume``, so napari shows what the engine and
the command line see: the same voxels (slope and intercept applied) and the same RAS+
affine, whatever the format. ``layers.volume_to_layer_data`` places the layer, so a NIfTI
and a MetaImage of one scan overlay exactly. A file the engine refuses (4D, empty, NaN
voxels, ...) becomes one error notification naming the file and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_warning

from napari_modality_synth.layers import LayerDataTuple, volume_to_layer_data
from synth_core import UserError, load_volume
from synth_core.io import read_sidecar

PathOrPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
ReaderFunction = Callable[[PathOrPaths], list[Any]]

FILE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm", ".ima")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".ima")
# napari's "this reader ran and found nothing" value: no other reader is tried after it.
_NOTHING_READ: list[Any] = [(None,)]


def get_reader(path: PathOrPaths) -> ReaderFunction | None:
    """``read_layers`` when every path is a scan this plugin reads, else None.

    Files: ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``, ``.dcm``, ``.ima``;
    folders: those holding a DICOM series (``.dcm``/``.ima`` files, or any file GDCM
    recognises as DICOM).
    """
    paths = _as_list(path)
    if paths and all(is_readable(p) for p in paths):
        return read_layers
    return None


def is_readable(path: str | os.PathLike[str]) -> bool:
    """True for a file with a supported suffix or a folder holding a DICOM series."""
    candidate = Path(path)
    if candidate.is_dir():
        return is_dicom_folder(candidate)
    return candidate.name.lower().endswith(FILE_SUFFIXES)


def is_dicom_folder(folder: Path) -> bool:
    """True when ``folder`` holds ``.dcm``/``.ima`` files or a series GDCM finds."""
    files = (child for child in folder.iterdir() if child.is_file())
    if any(child.suffix.lower() in DICOM_SUFFIXES for child in files):
        return True
    import SimpleITK as sitk  # only for folders of suffix-less DICOM files

    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return False


def read_layers(path: PathOrPaths) -> list[Any]:
    """Layer data tuples ``(data, kwargs, "image" | "labels")``, one per scan in ``path``.

    Several ``.dcm`` files of one folder are read once, as the series holding the first.
    A scan the engine refuses is skipped with an error notification.
    """
    layers: list[LayerDataTuple] = []
    for source in _scans(_as_list(path)):
        try:
            volume = load_volume(source)
        except UserError as exc:
            show_error(str(exc))
            continue
        _attach_sidecar(volume.metadata)
        layers.append(volume_to_layer_data(volume))
    return list(layers) or _NOTHING_READ


def _attach_sidecar(metadata: dict[str, Any]) -> None:
    # A broken sidecar should not hide the image: say so and show the image without it.
    source = metadata.get("source_path")
    if not source or Path(source).is_dir():
        return
    try:
        record = read_sidecar(source)
    except UserError as exc:
        show_warning(str(exc))
        return
    if record is not None:
        metadata["provenance"] = record


def _scans(paths: list[Path]) -> list[Path]:
    """Paths to load, with ``.dcm`` files of one folder kept once (its series is read whole)."""
    scans: list[Path] = []
    dicom_folders: set[Path] = set()
    for path in paths:
        if path.is_file() and path.suffix.lower() in DICOM_SUFFIXES:
            if path.parent.resolve() in dicom_folders:
                continue
            dicom_folders.add(path.parent.resolve())
        scans.append(path)
    return scans


def _as_list(path: PathOrPaths) -> list[Path]:
    if isinstance(path, str | os.PathLike):
        return [Path(path)]
    return [Path(p) for p in path]
