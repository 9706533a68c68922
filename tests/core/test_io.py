"""Reading and writing volumes: geometry against SimpleITK and nibabel, atomic writes, errors."""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from synth_core.errors import UserError
from synth_core.io import (
    atomic_write,
    atomic_write_json,
    guess_modality,
    load_volume,
    read_sidecar,
    save_volume,
    sidecar_path,
    validate_volume,
    write_sidecar,
)
from synth_core.volume import Volume

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def rotation(deg_x: float, deg_z: float) -> np.ndarray:
    """Rotation by deg_x about x, then deg_z about z, shape (3, 3)."""
    ax, az = np.radians([deg_x, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def oblique_affine() -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation(20, 20) @ np.diag([0.7, 1.3, 2.1])
    affine[:3, 3] = [12.5, -30.0, 7.25]
    return affine


def oblique_sitk_image(shape_xyz: tuple[int, int, int] = (7, 9, 11)) -> sitk.Image:
    rng = np.random.default_rng(0)
    array_zyx = rng.normal(100.0, 30.0, shape_xyz[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing((0.7, 1.3, 2.1))
    image.SetOrigin((12.5, -30.0, 7.25))
    image.SetDirection(rotation(20, 20).ravel().tolist())
    return image


def nifti_file(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    image = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)
    return path


def small_volume(**metadata: object) -> Volume:
    data = np.random.default_rng(1).random((5, 6, 7), dtype=np.float32)
    return Volume(data, oblique_affine(), "pet", dict(metadata))


def all_indices(shape: tuple[int, ...]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)


# ------------------------------------------------------------------ geometry


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".mhd"])
def test_oblique_sitk_file_world_positions_equal_simpleitk(tmp_path: Path, suffix: str) -> None:
    image = oblique_sitk_image()
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(image, str(path))
    volume = load_volume(path)
    assert volume.shape == (7, 9, 11)
    assert volume.metadata["format"] == ("nrrd" if suffix == ".nrrd" else "metaimage")
    index = all_indices(volume.shape)
    expected = np.array([image.TransformIndexToPhysicalPoint(tuple(int(v) for v in i)) for i in index])
    expected[:, :2] *= -1  # LPS -> RAS
    np.testing.assert_allclose(volume.world_coordinates(index), expected, atol=1e-4, rtol=0)
    values = np.array([image.GetPixel(*(int(v) for v in i)) for i in index])
    np.testing.assert_array_equal(volume.data[tuple(index.T)], values)


def test_nifti_round_trip_keeps_scaling_affine_codes_units_descrip(tmp_path: Path) -> None:
    raw = np.random.default_rng(2).integers(-300, 3000, (6, 7, 8)).astype(np.int16)
    affine = oblique_affine()
    image = nib.Nifti1Image(raw, affine)
    image.header.set_slope_inter(2.5, -10.0)
    image.set_sform(affine, code=2)
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = b"test scan 42"
    source = tmp_path / "sub-01_T2w.nii.gz"
    nib.save(image, source)

    first = load_volume(source)
    expected = raw.astype(np.float64) * 2.5 - 10.0
    np.testing.assert_allclose(first.data, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(first.affine, affine, atol=1e-6)
    assert first.modality == "t2"
    assert first.metadata["source_path"] == str(source.resolve())
    json.dumps(first.metadata["header"], allow_nan=False)  # JSON-serialisable as promised

    out = save_volume(first, tmp_path / "copy.nii.gz")
    second = load_volume(out)
    np.testing.assert_allclose(second.data, first.data, atol=1e-6, rtol=0)
    np.testing.assert_allclose(second.affine, affine, atol=1e-6)
    header = second.metadata["header"]
    assert (header["sform_code"], header["qform_code"]) == (2, 1)
    assert header["xyzt_units"]["space"] == "mm" and header["xyzt_units"]["time"] == "sec"
    assert header["descrip"] == "test scan 42"
    written = nib.load(out)
    np.testing.assert_allclose(written.get_qform(), affine, atol=1e-5)  # qform holds it too
    assert not (tmp_path / "copy.json").exists()  # a real scan gets no sidecar


def test_nifti_in_microns_is_converted_to_mm(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.diag([500.0, 500, 1000, 1]))
    image.header.set_xyzt_units("micron")
    nib.save(image, tmp_path / "micro.nii")
    np.testing.assert_allclose(load_volume(tmp_path / "micro.nii").affine, np.diag([0.5, 0.5, 1.0, 1.0]))


def test_same_scan_as_nifti_and_metaimage_gives_same_volume(tmp_path: Path) -> None:
    data = np.random.default_rng(3).normal(size=(6, 5, 4)).astype(np.float32)
    affine = oblique_affine()
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nii = tmp_path / "scan.nii.gz"
    nib.save(image, nii)
    sitk.WriteImage(sitk.ReadImage(str(nii)), str(tmp_path / "scan.mha"))
    from_nifti, from_mha = load_volume(nii), load_volume(tmp_path / "scan.mha")
    np.testing.assert_allclose(from_mha.data, from_nifti.data, atol=1e-4)
    np.testing.assert_allclose(from_mha.affine, from_nifti.affine, atol=1e-4)
    np.testing.assert_allclose(from_nifti.affine, affine, atol=1e-6)


def write_dicom_series(folder: Path, image: sitk.Image, series_uid: str) -> None:
    """One int16 file a slice, with the tags GDCM needs to stack them back in place."""
    folder.mkdir(exist_ok=True)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    orientation = "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetSize()[2]):
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT", "0008|103e": "phantom head",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.7", "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 1}", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.10f}" for v in position), "0020|0037": orientation,
            "0018|0050": f"{image.GetSpacing()[2]}", "0028|1053": "2", "0028|1052": "-5",
        }
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid[-1]}_slice{k:03d}.dcm"))
        writer.Execute(plane)


def dicom_test_image() -> sitk.Image:
    # Odd values survive the writer's inverse rescale (v + 5) / 2 exactly.
    values = 2 * np.random.default_rng(4).integers(-50, 500, (4, 6, 5)) + 1
    image = sitk.GetImageFromArray(values.astype(np.int16))
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection(rotation(20, 15).ravel().tolist())
    return image


def test_dicom_series_values_and_world_positions(tmp_path: Path) -> None:
    image = dicom_test_image()
    folder = tmp_path / "series"
    write_dicom_series(folder, image, "1.2.826.0.1.3680043.2.1125.7.1")
    volume = load_volume(folder)
    assert volume.shape == (5, 6, 4)
    assert volume.metadata["format"] == "dicom" and volume.modality == "ct"
    assert volume.metadata["dicom_series"]["series_in_folder"] == 1
    index = all_indices(volume.shape)
    expected = np.array([image.TransformIndexToPhysicalPoint(tuple(int(v) for v in i)) for i in index])
    expected[:, :2] *= -1
    np.testing.assert_allclose(volume.world_coordinates(index), expected, atol=1e-3)
    values = np.array([image.GetPixel(*(int(v) for v in i)) for i in index])
    np.testing.assert_array_equal(volume.data[tuple(index.T)], values)
    one_file = load_volume(folder / "1_slice002.dcm")  # a file of the series reads the series
    np.testing.assert_array_equal(one_file.data, volume.data)


def _pydicom_series(name: str) -> Path:
    """A series from the scanner files pydicom ships as test data (no one here wrote them)."""
    data = pytest.importorskip("pydicom.data")
    folder = Path(data.__file__).parent / "test_files" / "dicomdirtests" / name
    if not folder.is_dir():
        pytest.skip(f"pydicom's test data lacks {name}")
    return folder


@pytest.mark.parametrize("series, message", [
    # 4 slices at z = -99.48, 103.02, 104.27, 105.52 mm: gaps 202.5, 1.25, 1.25
    ("77654033/CT2", r"unevenly spaced \(gaps of 1.25 to 202.5 mm .*about 161 slices missing\)"),
    # 7 radial slices, each with its own orientation
    ("98892003/MR700", "not parallel"),
])
def test_real_scanner_series_with_missing_or_tilted_slices_are_refused(series, message, capfd,
                                                                       tmp_path) -> None:
    from synth_core.cli import main

    folder = _pydicom_series(series)
    with pytest.raises(UserError, match=message):
        load_volume(folder)
    out = tmp_path / "never.nii.gz"
    assert main(["translate", str(folder), "-o", str(out), "--method", "pix2pix", "--to", "pet"]) == 2
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "ImageSeriesReader" not in err, err
    assert not out.exists()


def test_a_real_evenly_spaced_series_reads_at_its_spacing() -> None:
    volume = load_volume(_pydicom_series("98892001/CT5N"))  # 5 slices 2.5 mm apart
    assert volume.shape == (16, 16, 5)
    np.testing.assert_allclose(volume.spacing, (0.488281, 0.488281, 2.5), atol=1e-5)


def test_a_written_series_with_a_slice_removed_is_refused(tmp_path: Path) -> None:
    image = dicom_test_image()
    folder = tmp_path / "series"
    write_dicom_series(folder, image, "1.2.826.0.1.3680043.2.1125.7.1")
    (folder / "1_slice002.dcm").unlink()
    with pytest.raises(UserError, match=r"gaps of 2.5 to 5 mm .*about 1 slices missing"):
        load_volume(folder)


def test_dicom_folder_with_two_series_reads_one_and_says_so(tmp_path: Path) -> None:
    image = dicom_test_image()
    write_dicom_series(tmp_path / "both", image, "1.2.826.0.1.3680043.2.1125.7.1")
    write_dicom_series(tmp_path / "both", image * 3, "1.2.826.0.1.3680043.2.1125.7.2")
    with pytest.warns(UserWarning, match="2 DICOM series"):
        volume = load_volume(tmp_path / "both")
    assert volume.metadata["dicom_series"]["series_in_folder"] == 2
    assert volume.shape == (5, 6, 4)


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz", "reoriented_anat_moved.nii"])
def test_nibabel_test_data_3d_files_match_nibabel(name: str) -> None:
    reference = nib.load(NIBABEL_DATA / name)
    volume = load_volume(NIBABEL_DATA / name)
    np.testing.assert_allclose(volume.data, reference.get_fdata(), rtol=1e-6)
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "points"),
    [("example4d.nii.gz", 2), ("example_nifti2.nii.gz", 2), ("functional.nii", 20)],
)
def test_nibabel_test_data_4d_files_are_refused(name: str, points: int) -> None:
    with pytest.raises(UserError, match=rf"{name}: 4D volume with {points} time points \(dim 4 = {points}\)"):
        load_volume(NIBABEL_DATA / name)


def test_singleton_fourth_dimension_is_squeezed(tmp_path: Path) -> None:
    data = np.random.default_rng(5).random((4, 5, 6, 1)).astype(np.float32)
    volume = load_volume(nifti_file(tmp_path / "one.nii.gz", data))
    np.testing.assert_array_equal(volume.data, data[..., 0])


# ------------------------------------------------------------------ atomic writes


def test_atomic_write_leaves_nothing_after_an_exception(tmp_path: Path) -> None:
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.endswith(".nii.gz")
        temporary.write_bytes(b"half a file")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_commits_and_refuses_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    target = atomic_write_json(tmp_path / "card.json", {"a": np.float32(0.5), "b": Path("x")})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 0.5, "b": "x"}
    other = tmp_path / "late.txt"
    with pytest.raises(UserError, match="late.txt already exists"), atomic_write(other) as temporary:
        temporary.write_text("mine")
        other.write_text("theirs")  # another writer wins the race
    assert other.read_text(encoding="utf-8") == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "late.txt"]


def test_save_refuses_existing_file_unless_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"precious")
    with pytest.raises(UserError, match="overwrite") as error:
        save_volume(small_volume(), target)
    assert str(target) in str(error.value)
    assert target.read_bytes() == b"precious"
    save_volume(small_volume(), target, overwrite=True)
    np.testing.assert_allclose(load_volume(target).data, small_volume().data)


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_save_never_writes_onto_its_own_input(tmp_path: Path, how: str) -> None:
    source = nifti_file(tmp_path / "in.nii.gz", np.arange(120, dtype=np.float32).reshape(4, 5, 6))
    before = source.read_bytes()
    target = {"same path": source, "symlink": tmp_path / "sym.nii.gz", "hard link": tmp_path / "hard.nii.gz"}[how]
    if how == "symlink":
        target.symlink_to(source)
    elif how == "hard link":
        os.link(source, target)
    volume = load_volume(source)
    with pytest.raises(UserError, match="own input") as error:
        save_volume(volume, target, overwrite=True)
    assert str(target) in str(error.value)
    assert source.read_bytes() == before
    assert {p.name for p in tmp_path.iterdir()} == {"in.nii.gz", target.name}  # no temporary left


# ------------------------------------------------------------------ user errors


def _text_file(path: Path) -> Path:
    path.write_text("these are not voxels\n" * 20)
    return path


def _truncated(path: Path) -> Path:
    if path.suffix == ".mha":
        sitk.WriteImage(oblique_sitk_image((20, 20, 20)), str(path))
    else:
        nifti_file(path, np.random.default_rng(6).random((20, 20, 20)).astype(np.float32))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path


def _nifti(data: np.ndarray, sform: np.ndarray | None = None, zooms: tuple[float, ...] | None = None):
    """A maker of a NIfTI file whose header may be broken in ways nibabel's API refuses."""

    def make(path: Path) -> Path:
        header = nib.Nifti1Header()
        header.set_data_dtype(np.float32)
        header.set_data_shape(data.shape)
        if sform is not None:
            header.set_sform(sform, code=1)
        header["qform_code"] = 1 if zooms is not None else 0  # affine from qform and pixdim
        content = nib.Nifti1Image(data.astype(np.float32), None, header).to_bytes()
        if zooms is not None:  # nibabel fixes bad pixdim on writing: patch the bytes (offset 80)
            content = content[:80] + struct.pack("<3f", *zooms) + content[92:]
        path.write_bytes(gzip.compress(content) if path.name.endswith(".gz") else content)
        return path

    return make


def _sitk(image: sitk.Image):
    def make(path: Path) -> Path:
        sitk.WriteImage(image, str(path))
        return path
    return make


def _zero_spacing_mha(path: Path) -> Path:
    _sitk(oblique_sitk_image((4, 4, 4)))(path)
    text = re.sub(rb"ElementSpacing = [^\n]*", b"ElementSpacing = 0.7 0 2.1", path.read_bytes())
    path.write_bytes(text)
    return path


_RAMP = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
_BAD = _RAMP.copy()
_BAD.ravel()[[1, 5, 9]] = np.nan
_BAD.ravel()[[2, 7]] = [np.inf, -np.inf]
_PARALLEL = np.array([[1.0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
_ZERO_COLUMN = np.diag([1.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("missing.nii.gz", None, "does not exist"),
        ("half.nii.gz", _truncated, "truncated or corrupt"),
        ("half.mha", _truncated, "truncated or corrupt"),
        ("notes.nii", _text_file, "not a readable NIfTI"),
        ("notes.mha", _text_file, "not a readable MetaImage"),
        ("photo.png", _text_file, "unsupported file type '.png'; give a .nii, .nii.gz, .mha"),
        ("flat.nii.gz", _nifti(_RAMP[:, :, 0]), "2D image"),
        ("slice.nii.gz", _nifti(_RAMP[:, :, :1]), "2D image"),
        ("slice.mha", _sitk(sitk.Image(6, 7, sitk.sitkFloat32)), "2D image"),
        ("fmri.nii.gz", _nifti(np.zeros((4, 5, 6, 12), np.float32)), "4D volume with 12 time points (dim 4 = 12)"),
        ("field.nii.gz", _nifti(np.zeros((4, 5, 6, 1, 3), np.float32)), "5D volume (dim 4 = 1, dim 5 = 3)"),
        ("series.mha", _sitk(sitk.Image([4, 5, 6, 3], sitk.sitkFloat32)), "4D volume with 3 time points"),
        ("nan.nii.gz", _nifti(_BAD), "5 of 120 voxels are not finite (3 NaN, 2 infinite)"),
        ("blank.nii.gz", _nifti(np.full((4, 5, 6), 7.0, np.float32)), "same value (7)"),
        ("pixdim0.nii.gz", _nifti(_RAMP, zooms=(1.0, 0.0, 1.0)), "spacing (1, 0, 1) mm"),
        ("pixdim-.nii", _nifti(_RAMP, zooms=(1.0, -2.0, 1.0)), "spacing (1, -2, 1) mm"),
        ("column.nii.gz", _nifti(_RAMP, sform=_ZERO_COLUMN), "spacing (1, 0, 1) mm"),
        ("parallel.nii.gz", _nifti(_RAMP, sform=_PARALLEL), "singular"),
        ("spacing.mha", _zero_spacing_mha, "spacing"),
        ("empty_folder", lambda p: p.mkdir() or p, "no DICOM series"),
    ],
)
def test_load_errors_name_the_file_and_the_problem(tmp_path: Path, name: str, make, expected: str) -> None:
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(UserError) as error:
        load_volume(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    assert expected in message


def test_unknown_modality_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown modality 'dwi'; choose one of t1, t1ce"):
        load_volume(nifti_file(tmp_path / "a.nii.gz", _RAMP), modality="dwi")


def test_validate_volume_accepts_a_good_volume_and_names_the_path() -> None:
    validate_volume(small_volume(), "ok.nii.gz")
    with pytest.raises(UserError, match="mem.nii: every voxel has the same value"):
        validate_volume(Volume(np.zeros((3, 3, 3)), np.eye(4)), "mem.nii")


@pytest.mark.parametrize("name", ["out.png", "out.mha", "out"])
def test_save_only_writes_nifti(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match=r"\.nii\.gz") as error:
        save_volume(small_volume(), tmp_path / name)
    assert str(tmp_path / name) in str(error.value)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ sidecars


PROVENANCE = {
    "Synthetic": True,
    "GeneratedBy": [{"Name": "napari-modality-synth", "Version": "0.1.0"}],
    "Method": "dual-glow",
    "Checkpoint": "dual-glow-t1-pet",
    "CheckpointSHA256": "ab" * 32,
    "Parameters": {"age": 72, "temperature": np.float32(0.5), "samples": np.int64(8)},
    "Sources": ["sub-001_t1.nii.gz"],
}


def test_synthetic_volume_gets_sidecar_and_synthetic_descrip(tmp_path: Path) -> None:
    out = save_volume(small_volume(provenance=PROVENANCE), tmp_path / "pet_synth.nii.gz")
    side = tmp_path / "pet_synth.json"
    assert sidecar_path(out) == side
    record = read_sidecar(out)
    assert record is not None and next(iter(record)) == "Synthetic" and record["Synthetic"] is True
    assert record["Parameters"] == {"age": 72, "temperature": 0.5, "samples": 8}
    assert {k: record[k] for k in ("GeneratedBy", "Method", "CheckpointSHA256", "Sources")} == {
        k: PROVENANCE[k] for k in ("GeneratedBy", "Method", "CheckpointSHA256", "Sources")
    }
    descrip = nib.load(out).header["descrip"].item().decode()
    assert descrip == "SYNTHETIC pet by dual-glow"
    assert load_volume(out).modality == "pet"


def test_given_provenance_marks_synthetic_unless_it_says_otherwise(tmp_path: Path) -> None:
    long_text = "é" * 60  # 120 bytes of UTF-8: cut to whole characters within 80 bytes
    save_volume(small_volume(), tmp_path / "a.nii", provenance={"Method": "x"}, description=long_text)
    assert read_sidecar(tmp_path / "a.nii") == {"Synthetic": True, "Method": "x"}
    descrip = nib.load(tmp_path / "a.nii").header["descrip"].item()
    assert descrip.decode("utf-8") == "SYNTHETIC " + "é" * 35 and len(descrip) == 80
    save_volume(small_volume(), tmp_path / "b.nii.gz", provenance={"Synthetic": False, "Method": "resample"})
    assert read_sidecar(tmp_path / "b.nii.gz") == {"Synthetic": False, "Method": "resample"}
    assert nib.load(tmp_path / "b.nii.gz").header["descrip"].item() == b""


def test_existing_sidecar_blocks_the_whole_save(tmp_path: Path) -> None:
    (tmp_path / "out.json").write_text("{}")
    with pytest.raises(UserError, match="out.json already exists; pass --overwrite"):
        save_volume(small_volume(provenance=PROVENANCE), tmp_path / "out.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_sidecar_helpers(tmp_path: Path) -> None:
    assert sidecar_path("d/out.nii.gz") == Path("d/out.json")
    assert sidecar_path("d/out.nii") == Path("d/out.json")
    assert read_sidecar(tmp_path / "none.nii.gz") is None
    written = write_sidecar(tmp_path / "x.nii.gz", {"Method": "cfm"}, synthetic=False)
    assert json.loads(written.read_text(encoding="utf-8")) == {"Synthetic": False, "Method": "cfm"}
    written.write_text("{not json")
    with pytest.raises(UserError, match="x.json is not valid JSON"):
        read_sidecar(tmp_path / "x.nii.gz")


# ------------------------------------------------------------------ modality names


@pytest.mark.parametrize(
    ("name", "header", "expected"),
    [
        ("sub-01_T1w.nii.gz", "", "t1"),
        ("sub-01_ce-gadolinium_T1w.nii.gz", "", "t1ce"),
        ("BraTS20_Training_001_t1ce.nii.gz", "", "t1ce"),
        ("case_T1c.mha", "", "t1ce"),
        ("sub-01_T2w.nii", "", "t2"),
        ("BraTS20_Training_001_flair.nii.gz", "", "flair"),
        ("IXI002-Guys-0828-T2.nii.gz", "", "t2"),
        ("sub-001_pet.nii.gz", "", "pet"),
        ("sub-01_trc-FDG_rec-acdyn_img.nii.gz", "", "pet"),
        ("sub-001_ct.nrrd", "", "ct"),
        ("sub-001_ct-sharp.nii.gz", "", "ct-sharp"),
        ("sub-001_ct-smooth.nii.gz", "", "ct-smooth"),
        ("sub-001_t1-lowres.nii.gz", "", "t1-lowres"),
        ("sub-ct01_acq-t2_bold.nii.gz", "", None),
        ("scan.nii.gz", "T1 MPRAGE SAG", "t1"),
        ("series", "PT FDG brain", "pet"),
        ("patient_pt.nii.gz", "", None),
        ("scan.nii.gz", "FSL5.0", None),
    ],
)
def test_guess_modality(name: str, header: str, expected: str | None) -> None:
    assert guess_modality(name, header) == expected
