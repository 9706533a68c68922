"""Reading and writing 3D scans as Volumes, with provenance sidecars and atomic writes.

Reads NIfTI-1/2 (nibabel) and MetaImage, NRRD and DICOM series (SimpleITK, see
``io_sitk``); writes NIfTI. Every Volume read has float32 data (X, Y, Z) with the
file's scaling applied and a 4x4 voxel-to-world affine in RAS+ millimetres. Every
write goes to a temporary file in the target folder that is renamed into place,
so an interrupted write leaves no partial file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from synth_core.errors import UserError
from synth_core.io_sitk import read_dicom_series, read_image_file
from synth_core.volume import ALL_MODALITIES, Volume

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
SITK_FORMATS: dict[str, str] = {".mha": "metaimage", ".mhd": "metaimage", ".nrrd": "nrrd", ".nhdr": "nrrd"}
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".ima")
SUPPORTED = ".nii, .nii.gz, .mha, .mhd, .nrrd, .nhdr, or a DICOM series (its folder or a .dcm file)"

# NIfTI space units -> mm; nibabel's affine is in the file's own unit.
_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}


_MODALITY_WORDS: dict[str, str] = {
    **dict.fromkeys(("t1-lowres", "t1lowres"), "t1-lowres"),
    "ct-sharp": "ct-sharp", "ct-smooth": "ct-smooth",
    **dict.fromkeys(("t1ce", "t1c", "t1gd", "t1-ce", "t1post", "t1wce"), "t1ce"),
    **dict.fromkeys(("flair", "t2flair", "t2-flair"), "flair"),
    **dict.fromkeys(("t2", "t2w"), "t2"),
    **dict.fromkeys(("t1", "t1w", "mprage"), "t1"),
    **dict.fromkeys(("pet", "fdg"), "pet"),
    "ct": "ct",
}
# Too ambiguous in file names ("pt" = patient), clear in a DICOM Modality tag.
_HEADER_ONLY_WORDS = {"pt": "pet"}
# BIDS entities (key-value) that never name the modality itself.
_BIDS_KEYS = {
    "sub", "ses", "task", "acq", "rec", "run", "echo", "dir", "part", "space", "desc",
    "inv", "flip", "mt", "chunk", "res", "den", "label", "hemi", "mod", "sample",
}
_KNOWN_EXTENSIONS = (*NIFTI_SUFFIXES, *SITK_FORMATS, *DICOM_SUFFIXES, ".json")


def guess_modality(path: str | os.PathLike[str], header_text: str = "") -> str | None:
    """Guess a modality key (see ``ALL_MODALITIES``) from a file name, else from header text.

    The name is read as BIDS-like tokens, last first (``sub-01_ce-gd_T1w`` -> ``t1ce``,
    ``sub-01_trc-FDG_pet`` -> ``pet``, ``IXI002-Guys-T2`` -> ``t2``); the header text
    (a NIfTI descrip, DICOM Modality and SeriesDescription) first to last. None if unknown.
    """
    name = Path(path).name.lower()
    name = next((name[: -len(e)] for e in _KNOWN_EXTENSIONS if name.endswith(e)), name)
    found = _modality_from_words(list(reversed(re.split(r"[_.\s]+", name))), header=False)
    if found is None and header_text:
        words = re.split(r"[^0-9a-z\-]+", header_text.lower())
        found = _modality_from_words(words, header=True)
    return found


def _modality_from_words(words: list[str], header: bool) -> str | None:
    enhanced = any(w.startswith("ce-") for w in words)  # BIDS contrast-enhanced entity
    for word in words:
        key, _, value = word.partition("-")
        if value and key == "trc":  # BIDS PET tracer entity
            return "pet"
        if value and key in _BIDS_KEYS | {"ce"}:
            continue
        for candidate in [word, *reversed(word.split("-"))]:
            found = _MODALITY_WORDS.get(candidate) or (header and _HEADER_ONLY_WORDS.get(candidate))
            if found:
                return "t1ce" if enhanced and found == "t1" else found
    return "t1ce" if enhanced else None


def load_volume(path: str | os.PathLike[str], modality: str | None = None) -> Volume:
    """Read a 3D scan: NIfTI, MetaImage, NRRD, or a DICOM series folder (its first series).

    Returns a Volume with data float32 (X, Y, Z) (slope and intercept applied), affine
    4x4 voxel-to-world in RAS+ mm, ``modality`` as given or guessed (``guess_modality``),
    and metadata ``source_path`` (absolute), ``format``, ``header`` (JSON-serialisable).
    Raises UserError for a missing, unreadable or unsupported file and for anything
    ``validate_volume`` rejects.
    """
    source = Path(path)
    name = str(path)
    if modality is not None and modality.lower() not in ALL_MODALITIES:
        raise UserError(f"unknown modality '{modality}'; choose one of {', '.join(ALL_MODALITIES)}")
    if not source.exists():
        raise UserError(f"{name} does not exist; check the path (relative to {Path.cwd()})")
    check_shape = functools.partial(spatial_shape, name=name)
    suffix = _suffix(source)
    if source.is_dir():
        volume = read_dicom_series(source, check_shape)
    elif suffix in NIFTI_SUFFIXES:
        volume = _read_nifti(source, name)
    elif suffix in SITK_FORMATS:
        volume = read_image_file(source, SITK_FORMATS[suffix], check_shape)
    elif suffix in DICOM_SUFFIXES:
        volume = read_dicom_series(source.parent, check_shape, containing=source)
    else:
        raise UserError(f"{name}: unsupported file type '{suffix or source.name}'; give a {SUPPORTED}")
    header = _json_safe(volume.metadata["header"])
    volume.metadata.update(source_path=str(source.resolve()), header=header)
    volume.metadata["modality_guessed"] = modality is None
    volume.modality = modality.lower() if modality else guess_modality(source, _header_text(header))
    validate_volume(volume, name)
    return volume


def spatial_shape(shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    """The (X, Y, Z) shape of an image of ``shape``; trailing singleton axes are squeezed.

    Raises UserError for images with fewer than 3 axes of size > 1 along (x, y, z)
    and for 4D and higher ones.
    """
    dims = [int(d) for d in shape]
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) > 3:
        extra = ", ".join(f"dim {axis} = {size}" for axis, size in enumerate(dims[3:], start=4))
        what = f"with {dims[3]} time points " if len(dims) == 4 else ""
        raise UserError(f"{name}: {len(dims)}D volume {what}({extra}); extract one 3D volume first, "
                        "e.g. with fslroi or nibabel (img.slicer[..., 0])")
    if len(dims) < 3 or min(dims) <= 1:
        size = " x ".join(str(d) for d in dims)
        raise UserError(f"{name}: a 2D image ({size} voxels), not a 3D volume; give the whole "
                        "scan (a 3D NIfTI or a DICOM series folder), not a single slice")
    return dims[0], dims[1], dims[2]


def validate_volume(volume: Volume, path: str | os.PathLike[str]) -> None:
    """Reject voxels and geometry no method can use; raise UserError naming ``path``.

    Checks: no NaN or infinite voxel, not all voxels equal, an affine that is finite with
    voxel sizes > 0 mm and non-parallel voxel axes (|det| > 1e-6 x product of sizes).
    """
    name, data = str(path), volume.data
    if not np.isfinite(data).all():
        n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
        raise UserError(f"{name}: {n_nan + n_inf} of {data.size} voxels are not finite ({n_nan} NaN, "
                        f"{n_inf} infinite); replace them (e.g. numpy.nan_to_num) and save again")
    low, high = float(data.min()), float(data.max())
    if low == high:
        raise UserError(f"{name}: every voxel has the same value ({low:g}), so the image is "
                        "empty; check that this is the right file")
    linear = volume.affine[:3, :3]
    sizes = np.linalg.norm(linear, axis=0)
    if not np.isfinite(volume.affine).all() or not (sizes > 0).all():
        raise _spacing_error(name, sizes)
    if abs(np.linalg.det(linear)) <= 1e-6 * float(np.prod(sizes)):
        raise UserError(f"{name}: its affine is singular (voxel axes are parallel); fix the "
                        "sform/qform or direction in the header and load it again")


def _spacing_error(name: str, sizes: Any) -> UserError:
    shown = ", ".join(f"{float(s):g}" for s in sizes)
    return UserError(f"{name}: voxel spacing ({shown}) mm is zero, negative or not a number; "
                     "fix the voxel size (pixdim, spacing) in the header and load it again")


def _read_nifti(path: Path, name: str) -> Volume:
    nibabel_log = logging.getLogger("nibabel.global")
    level, nibabel_log.level = nibabel_log.level, logging.ERROR  # its header fixes: we say what matters
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for files that are not NIfTI
        raise UserError(f"{name} is not a readable NIfTI image ({_reason(exc)}); check the "
                        "file type, or convert it to .nii.gz") from None
    finally:
        nibabel_log.setLevel(level)
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise UserError(f"{name} is a {type(image).__name__}, not NIfTI; convert it to .nii.gz")
    header = image.header
    shape = spatial_shape(image.shape, name)
    if header.get_data_dtype().kind not in "biuf":
        raise UserError(f"{name} stores {header.get_data_dtype()} voxels (colour or complex); "
                        "give a scalar, real-valued 3D scan")
    fields = _nifti_header(header)
    if fields["sform_code"] == 0:  # the affine then comes from pixdim
        # nibabel silently turns zero or negative pixdim into 1 or |pixdim|: read the raw header.
        with nib.openers.ImageOpener(str(path)) as stream:
            raw = type(header).from_fileobj(stream, check=False)
        zooms = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
        if not (np.isfinite(zooms) & (zooms > 0)).all():
            raise _spacing_error(name, zooms)
    try:
        data = image.get_fdata(dtype=np.float32)  # applies scl_slope / scl_inter
    except Exception as exc:  # EOFError, OSError, zlib.error, ... for cut or damaged files
        raise UserError(f"{name} is truncated or corrupt: its voxels cannot be read "
                        f"({_reason(exc)}); copy or export the file again") from None
    affine = np.array(image.affine, dtype=np.float64)
    affine[:3, :] *= _UNIT_TO_MM.get(fields["xyzt_units"]["space"], 1.0)
    fmt = "nifti2" if isinstance(image, nib.Nifti2Image) else "nifti1"
    return Volume(data.reshape(shape), affine, None, {"format": fmt, "header": fields})


def _nifti_header(header: Any) -> dict[str, Any]:
    """The NIfTI header fields worth keeping, as plain Python values."""
    space, time = header.get_xyzt_units()
    freq, phase, slice_axis = header.get_dim_info()
    slope, inter = header.get_slope_inter()
    codes = int(header["sform_code"]), int(header["qform_code"])
    return {
        "descrip": _text(header["descrip"]), "aux_file": _text(header["aux_file"]),
        "xyzt_units": {"space": space, "time": time, "code": int(header["xyzt_units"])},
        "sform_code": codes[0], "qform_code": codes[1],
        "affine_source": "sform" if codes[0] else ("qform" if codes[1] else "pixdim"),
        "sform": header.get_sform().tolist(), "qform": header.get_qform().tolist(),
        "dim": header["dim"].tolist(), "pixdim": header["pixdim"].tolist(),
        "dim_info": {"freq": freq, "phase": phase, "slice": slice_axis},
        "intent": {"code": int(header["intent_code"]), "name": _text(header["intent_name"]),
                   "params": [float(header[f"intent_p{i}"]) for i in (1, 2, 3)]},
        "datatype": str(header.get_data_dtype()), "scl_slope": slope, "scl_inter": inter,
        "cal_min": float(header["cal_min"]), "cal_max": float(header["cal_max"]),
        "toffset": float(header["toffset"]),
    }


def _header_text(header: Mapping[str, Any]) -> str:
    # NIfTI descrip; MetaImage Modality; DICOM Modality, SeriesDescription, ProtocolName.
    keys = ("descrip", "Modality", "0008|0060", "0008|103e", "0018|1030")
    return " ".join(str(header[k]) for k in keys if k in header)


def save_volume(volume: Volume, path: str | os.PathLike[str], *, overwrite: bool = False,
                provenance: dict[str, Any] | None = None, description: str | None = None) -> Path:
    """Write ``volume`` as NIfTI (``.nii`` or ``.nii.gz``), atomically; return the path.

    The affine goes into both sform and qform (the source's codes when it was NIfTI,
    else 1, scanner), units mm, float32 voxels. A synthetic volume (or one given
    ``provenance``, which then counts as synthetic unless it says ``"Synthetic": false``)
    also gets its BIDS sidecar (``sidecar_path``) and a descrip starting with SYNTHETIC.
    Never writes onto the volume's own source file; an existing file only with ``overwrite``.
    """
    target = Path(path)
    name = str(path)
    if _suffix(target) not in NIFTI_SUFFIXES:
        raise UserError(f"cannot write {name}: output must be NIfTI; name it with .nii.gz (or .nii)")
    _refuse_own_input(volume, target, name)
    check_writable_folder(target.parent, what="output file name", may_create=True)
    record = {**volume.metadata.get("provenance", {}), **(provenance or {})}
    with_record = provenance is not None or volume.is_synthetic
    synthetic = with_record and bool(record.get("Synthetic", True))
    side = sidecar_path(target) if with_record else None
    for existing in (target, side):
        if existing is not None and existing.exists() and not overwrite:
            raise UserError(_exists_message(existing))
    image = _nifti_image(volume, _description(volume, description, synthetic, record))
    side_text = _sidecar_text(record, synthetic) if side is not None else None
    with ExitStack() as stack:  # the sidecar lands just before the image; any error before: neither
        image_tmp = stack.enter_context(atomic_write(target, overwrite=overwrite))
        if side is not None and side_text is not None:
            side_tmp = stack.enter_context(atomic_write(side, overwrite=overwrite))
            side_tmp.write_text(side_text, encoding="utf-8")
        _write_image(image, image_tmp, gzipped=_suffix(target) == ".nii.gz")
    return target


def _write_image(image: nib.Nifti1Image, path: Path, *, gzipped: bool) -> None:
    """Write ``image`` to ``path``; ``.nii.gz`` through ``gzip_bytes`` (nibabel's own gzip
    writer deflates on one core with zlib: 1.3 s for a 1 mm float32 synthetic)."""
    if gzipped:
        path.write_bytes(gzip_bytes(image.to_bytes()))
    else:
        nib.save(image, path)


def default_threads() -> int:
    """The threads a parallel step may use: ``OMP_NUM_THREADS`` when set, else every core."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


def gzip_bytes(data: bytes, threads: int | None = None) -> bytes:
    """``data`` as a standard gzip file (level 1, as nibabel writes), compressed by ISA-L
    (the ``isal`` package), several times faster than zlib on one core, and on
    ``threads`` cores when more than one (default ``OMP_NUM_THREADS`` when set, else every
    core). Any gzip reader reads it (tested against the gzip module and nibabel)."""
    import io as _io

    from isal import igzip, igzip_threaded

    threads = default_threads() if threads is None else threads
    if threads <= 1:
        return igzip.compress(data, compresslevel=1)
    buffer = _io.BytesIO()
    with igzip_threaded.open(buffer, "wb", compresslevel=1, threads=threads) as handle:
        handle.write(data)
    return buffer.getvalue()


def _refuse_own_input(volume: Volume, target: Path, name: str) -> None:
    source = volume.metadata.get("source_path")
    if not source:
        return
    same = Path(source).resolve() == target.resolve()
    if not same and target.exists() and Path(source).exists():
        same = os.path.samefile(source, target)  # hard links, bind mounts
    if same:
        raise UserError(f"refusing to write {name}: it is this volume's own input file; choose "
                        "another output name (--overwrite never replaces the input)")


def _nifti_image(volume: Volume, description: str) -> nib.Nifti1Image:
    source = volume.metadata.get("header", {}) if _from_nifti(volume) else {}
    sform_code = int(source.get("sform_code") or source.get("qform_code") or 1)
    qform_code = int(source.get("qform_code") or sform_code)
    image = nib.Nifti1Image(np.asarray(volume.data, dtype=np.float32), volume.affine)
    image.set_sform(volume.affine, code=sform_code)
    image.set_qform(volume.affine, code=qform_code)  # nearest rigid + zooms: qform has no shear
    time_unit = source.get("xyzt_units", {}).get("time", "unknown")
    image.header.set_xyzt_units("mm", time_unit)
    # descrip is char[80]: cut at a UTF-8 character boundary.
    image.header["descrip"] = description.encode("utf-8")[:80].decode("utf-8", "ignore").encode()
    return image


def _description(volume: Volume, text: str | None, synthetic: bool, record: Mapping[str, Any]) -> str:
    if text is None and synthetic:
        method = record.get("Method")
        text = " ".join(str(w) for w in (volume.modality, method and f"by {method}") if w)
    elif text is None:
        text = str(volume.metadata.get("header", {}).get("descrip", "")) if _from_nifti(volume) else ""
    if synthetic and not text.upper().startswith("SYNTHETIC"):
        text = f"SYNTHETIC {text}".strip()
    return text


def _from_nifti(volume: Volume) -> bool:
    return str(volume.metadata.get("format", "")).startswith("nifti")


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The BIDS sidecar of an image: ``out.nii.gz`` -> ``out.json``, ``out.nii`` -> ``out.json``."""
    image = Path(path)
    stem, _ = _split_extension(image.name)
    return image.with_name(f"{stem}.json")


def write_sidecar(path_of_image: str | os.PathLike[str], provenance: Mapping[str, Any], *,
                  overwrite: bool = False, synthetic: bool = True) -> Path:
    """Write ``provenance`` (BIDS-style CamelCase keys) as the image's JSON sidecar, atomically.

    ``Synthetic`` comes first, taken from ``provenance`` or else ``synthetic``. Returns its path.
    """
    text = _sidecar_text(provenance, synthetic)
    return atomic_write_text(sidecar_path(path_of_image), text, overwrite=overwrite)


def read_sidecar(path_of_image: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The image's sidecar as a dict, or None when there is none."""
    side = sidecar_path(path_of_image)
    if not side.is_file():
        return None
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{side} is not valid JSON ({_reason(exc)}); fix or delete it") from None
    if not isinstance(record, dict):
        raise UserError(f"{side} does not hold a JSON object; fix or delete it")
    return record


def _sidecar_text(provenance: Mapping[str, Any], synthetic: bool) -> str:
    record = {"Synthetic": bool(provenance.get("Synthetic", synthetic))}
    record.update((k, v) for k, v in provenance.items() if k != "Synthetic")
    return _json_text(record)


@contextmanager
def atomic_write(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The temporary name keeps the extension (``.nii.gz`` stays last) so writers that
    choose a format by name work. On any exception the temporary file is removed and
    ``path`` is untouched. Without ``overwrite`` an existing ``path`` is a UserError,
    checked on entry and again, race-free through a hard link, at the rename.
    """
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{target} is a folder; give a file name to write")
    if target.exists() and not overwrite:
        raise UserError(_exists_message(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    stem, extension = _split_extension(target.name)
    temporary = target.with_name(f".{stem}.{secrets.token_hex(6)}.tmp{extension}")
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())  # the data is on disk before the name points at it
        _commit(temporary, target, overwrite)
    finally:
        temporary.unlink(missing_ok=True)


def check_writable_folder(folder: str | os.PathLike[str], *, what: str = "output",
                          may_create: bool = False) -> Path:
    """Refuse, before any work, a folder that cannot be written into; return it.

    ``folder`` must be a folder (or, with ``may_create``, not exist yet below an existing
    folder): a path through a file is refused. Writability is tested by creating and
    removing a temporary file in the nearest existing folder, because permission bits and
    ``os.access`` say nothing about a read-only mount, an immutable folder, or a user
    (root) whom the bits do not bind. ``what`` names the option in the message (``-o``,
    ``--out``). Raises UserError naming the folder and the fix.
    """
    wanted = Path(folder).expanduser()
    existing = wanted
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write to {wanted}: {existing} is a file, not a folder; "
                        f"choose another {what}")
    if existing != wanted and not may_create:
        raise UserError(f"output folder {wanted} does not exist; create it first or choose another {what}")
    try:
        handle, probe = tempfile.mkstemp(prefix=".modality-synth-probe-", dir=existing)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"cannot write to {existing} ({reason}); choose a writable {what} "
                        "or fix the folder's permissions") from None
    os.close(handle)
    os.unlink(probe)
    return wanted


def _commit(temporary: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, target)
        return
    try:
        os.link(temporary, target)  # fails if target appeared meanwhile
    except FileExistsError:
        raise UserError(_exists_message(target)) from None
    except OSError:  # file systems without hard links
        if target.exists():
            raise UserError(_exists_message(target)) from None
        os.replace(temporary, target)


def atomic_write_text(path: str | os.PathLike[str], text: str, overwrite: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` through ``atomic_write``; return ``path``."""
    target = Path(path)
    with atomic_write(target, overwrite=overwrite) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return target


def atomic_write_json(path: str | os.PathLike[str], obj: Any, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON (numpy values, paths, dataclasses converted) atomically."""
    return atomic_write_text(path, _json_text(obj), overwrite=overwrite)


def _json_text(obj: Any) -> str:
    return json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n"


def _json_safe(obj: Any) -> Any:
    """Plain JSON values: numpy -> Python, Path -> str, NaN/inf -> None, dataclass -> dict."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | np.ndarray):
        return [_json_safe(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _json_safe(dataclasses.asdict(obj))
    raise TypeError(f"cannot write {type(obj).__name__} to JSON: {obj!r:.80}")


def _suffix(path: Path) -> str:
    return _split_extension(path.name.lower())[1]


def _split_extension(name: str) -> tuple[str, str]:
    """``a.nii.gz`` -> (``a``, ``.nii.gz``); ``a.b.json`` -> (``a.b``, ``.json``)."""
    if name.lower().endswith(".nii.gz"):
        return name[:-7], name[-7:]
    stem, dot, extension = name.rpartition(".")
    return (stem, dot + extension) if dot and stem else (name, "")


def _text(field: Any) -> str:
    return np.asarray(field).item().decode("utf-8", "replace").rstrip("\x00")


def _exists_message(path: Path) -> str:
    return f"{path} already exists; pass --overwrite (overwrite=True) to replace it, or choose another name"


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
