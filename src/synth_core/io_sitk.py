"""MetaImage, NRRD and DICOM series read through SimpleITK, as Volumes.

SimpleITK differs from the Volume convention twice: its arrays are indexed
(z, y, x), and its geometry (origin, direction, spacing) lives in LPS world
coordinates. With F = diag(-1, -1, 1), D the direction matrix (columns = voxel
axes), s the spacing (mm) and o the origin (mm), the RAS+ voxel-to-world affine is

    affine[:3, :3] = F @ D @ diag(s),    affine[:3, 3] = F @ o,

so that ``affine @ (i, j, k, 1)`` equals ``TransformIndexToPhysicalPoint((i, j, k))``
with its x and y negated. ``synth_core.io.load_volume`` is the public entry point.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from synth_core.errors import UserError
from synth_core.volume import Volume

#: Checks a size (x, y, z, ...) and returns the 3D shape, or raises UserError.
ShapeCheck = Callable[[tuple[int, ...]], tuple[int, int, int]]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """The 4x4 RAS+ voxel-to-world affine (mm) of the first three axes of ``image``."""
    n = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(n, n)[:3, :3]
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)[:3]
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = LPS_TO_RAS @ origin
    return affine


def itk_reason(exc: BaseException) -> str:
    """The useful part of an ITK exception (the text after its last ``ERROR:``), one line."""
    text = str(exc)
    text = text.rsplit("ERROR:", 1)[-1]
    text = re.sub(r"\w+\(0x[0-9a-fA-F]+\):", "", text)  # object addresses help nobody
    text = " ".join(text.split())
    return text[:200] or type(exc).__name__


def read_image_file(path: Path, fmt: str, check_shape: ShapeCheck) -> Volume:
    """Read a MetaImage (``.mha``/``.mhd``) or NRRD (``.nrrd``/``.nhdr``) file.

    Returns a Volume with data float32 (X, Y, Z), the RAS+ affine, and metadata
    ``format`` and ``header`` (the file's metadata keys and its LPS geometry).
    """
    name = str(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _read_error(name, fmt, exc, stage="header") from None
    if reader.GetNumberOfComponents() > 1:
        raise UserError(
            f"{name} has {reader.GetNumberOfComponents()} values per voxel (a vector or colour "
            "image); give a scalar 3D scan"
        )
    shape = check_shape(tuple(int(s) for s in reader.GetSize()))
    header = {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise _read_error(name, fmt, exc, stage="voxels") from None
    return _to_volume(image, shape, name, fmt, header)


def read_dicom_series(
    folder: Path, check_shape: ShapeCheck, containing: Path | None = None
) -> Volume:
    """Read one DICOM series from ``folder``: the first SimpleITK finds, or the one holding ``containing``.

    The rescale slope and intercept (0028,1053 / 0028,1052) are applied by GDCM.
    Returns a Volume as ``read_image_file`` does; ``header`` holds the tags of the
    first slice, and metadata ``dicom_series`` says which series of how many was read.
    """
    name = str(folder)
    warn_before = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "no series found" is ours to say
    try:
        series_ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as exc:
        raise UserError(f"cannot scan {name} for DICOM files ({itk_reason(exc)})") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn_before)
    if not series_ids:
        raise UserError(
            f"{name}: no DICOM series found in this folder; give the folder that holds the "
            ".dcm files of one series, or a .nii.gz/.mha/.nrrd file"
        )
    chosen, files = series_ids[0], None
    for series_id in series_ids:
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id)
        if containing is None or containing.resolve() in {Path(n).resolve() for n in names}:
            chosen, files = series_id, names
            break
    if files is None:
        raise UserError(f"{containing} is not part of a readable DICOM series; give its folder")
    if containing is None and len(series_ids) > 1:
        warnings.warn(
            f"{name} holds {len(series_ids)} DICOM series; reading the first ({chosen}). "
            "Put each series in its own folder to choose another.",
            stacklevel=3,
        )
    check_slice_positions(files, name)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOn()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # its spacing warning: checked above, in words
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise _read_error(name, "dicom", exc, stage="voxels") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn_before)
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise UserError(f"{name} is a colour DICOM series; give a greyscale 3D scan")
    shape = check_shape(tuple(int(s) for s in image.GetSize()))
    header = {key: reader.GetMetaData(0, key) for key in reader.GetMetaDataKeys(0)}
    volume = _to_volume(image, shape, name, "dicom", header)
    volume.metadata["dicom_series"] = {
        "SeriesInstanceUID": chosen,
        "series_in_folder": len(series_ids),
        "slices": len(files),
        "note": f"series {series_ids.index(chosen) + 1} of {len(series_ids)} found in the folder",
    }
    return volume


#: Slice gaps may differ from their median by this fraction (plus 1 micrometre) before a
#: series counts as unevenly spaced: scanners write positions to about 1e-5 mm.
GAP_TOLERANCE = 0.01


def _vector(text: str) -> np.ndarray | None:
    try:
        return np.asarray([float(v) for v in text.strip().split("\\")], dtype=np.float64)
    except ValueError:
        return None


def check_slice_positions(files: list[str] | tuple[str, ...], name: str) -> dict[str, Any] | None:
    """Refuse a DICOM series whose slices are not parallel, not evenly spaced, or repeated.

    Reads each file's header only: Image Position (Patient) (0020,0032) and Image
    Orientation (Patient) (0020,0037). The positions are projected on the first slice's
    normal (row x column direction cosines); their gaps (mm) must agree within
    ``GAP_TOLERANCE``. ITK would otherwise read such a series as if evenly spaced (only a
    warning on stderr), so every voxel past a gap would sit at the wrong place in the world.
    We refuse rather than resample: a missing slice cannot be made up, and a silent
    interpolation across 200 mm would be worse than no volume. Returns the gaps found
    (None when the headers lack the tags, e.g. one multi-frame file).
    """
    if len(files) < 2:
        return None
    positions, normals = [], []
    header = sitk.ImageFileReader()
    for path in files:
        header.SetFileName(str(path))
        try:
            header.ReadImageInformation()
        except RuntimeError:
            return None  # unreadable headers are reported when the voxels are read
        if not (header.HasMetaDataKey("0020|0032") and header.HasMetaDataKey("0020|0037")):
            return None
        position = _vector(header.GetMetaData("0020|0032"))
        cosines = _vector(header.GetMetaData("0020|0037"))
        if position is None or cosines is None or position.size != 3 or cosines.size != 6:
            return None
        normal = np.cross(cosines[:3], cosines[3:])
        positions.append(position)
        normals.append(normal / (np.linalg.norm(normal) or 1.0))
    tilt = max(float(np.degrees(np.arccos(np.clip(abs(n @ normals[0]), -1.0, 1.0)))) for n in normals)
    if tilt > 0.5:
        raise UserError(
            f"{name}: its DICOM slices are not parallel (their orientations differ by up to "
            f"{tilt:.0f} degrees: a radial or localizer series), so they do not form one 3D "
            "grid; give a series of parallel slices (one acquisition per folder)")
    along = np.sort(np.asarray(positions) @ normals[0])
    gaps = np.diff(along)
    median = float(np.median(gaps))
    if float(gaps.min()) <= 1e-3:
        raise UserError(
            f"{name}: two of its {len(files)} DICOM slices lie at the same position, so the "
            "folder mixes acquisitions or holds duplicates; give one acquisition per folder")
    if float(np.abs(gaps - median).max()) > GAP_TOLERANCE * median + 1e-3:
        smallest = float(gaps.min())
        missing = int(np.sum(np.round(gaps / smallest) - 1))
        raise UserError(
            f"{name}: its {len(files)} DICOM slices are unevenly spaced (gaps of "
            f"{smallest:g} to {float(gaps.max()):g} mm along the slice normal; about {missing} "
            "slices missing), so no single voxel size places them right; give the complete "
            "series (every slice, one acquisition per folder)")
    return {"slices": len(files), "gap_mm": median}


def _to_volume(
    image: sitk.Image, shape: tuple[int, int, int], name: str, fmt: str, header: dict[str, Any]
) -> Volume:
    array = sitk.GetArrayViewFromImage(image)  # (..., z, y, x)
    if np.iscomplexobj(array):
        raise UserError(f"{name} holds complex voxels; give a magnitude (real-valued) scan")
    data = np.ascontiguousarray(array.reshape(shape[::-1]).T, dtype=np.float32)
    header = dict(header)
    header["ITK_geometry_LPS"] = {
        "size": list(image.GetSize()),
        "spacing": list(image.GetSpacing()),
        "origin": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
        "pixel_type": image.GetPixelIDTypeAsString(),
    }
    return Volume(data, sitk_affine(image), None, {"format": fmt, "header": header})


def _read_error(name: str, fmt: str, exc: BaseException, stage: str) -> UserError:
    reason = itk_reason(exc)
    fmt = {"metaimage": "MetaImage", "nrrd": "NRRD", "dicom": "DICOM"}.get(fmt, fmt)
    if "spacing" in reason.lower():
        return UserError(
            f"{name}: its voxel spacing is zero or negative ({reason}); fix the spacing in "
            "the header (e.g. ElementSpacing or 'space directions') and load it again"
        )
    if stage == "header":
        return UserError(
            f"{name} is not a readable {fmt} image ({reason}); check the file type, or "
            "convert it to .nii.gz"
        )
    # ITK reports a cut file as "cannot be read ... No such file": name both causes.
    return UserError(
        f"{name} is truncated or corrupt, or a data file it names is missing: its voxels "
        f"cannot be read (ITK: {reason}); copy or export the {fmt} file again"
    )
