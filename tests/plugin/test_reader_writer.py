"""Reader, writer and sample data: the voxels and world placement survive napari."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from napari.layers import Image, Labels, Layer

from napari_modality_synth import _sample_data
from napari_modality_synth._reader import get_reader
from napari_modality_synth.layers import (
    is_synthetic,
    layer_modality,
    layer_to_volume,
    volume_to_layer_data,
)
from synth_core.io import read_sidecar, sidecar_path

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
PLUGIN = "napari-modality-synth"
LPS = np.diag([-1.0, -1.0, 1.0])  # ITK's world is LPS, NIfTI's RAS


def _read(path: Path) -> list[tuple]:
    reader = get_reader(str(path))
    assert reader is not None, f"no reader for {path}"
    return reader(str(path))


def _corners(shape: tuple[int, ...]) -> np.ndarray:
    """The 8 corner voxel centres, shape (8, 3)."""
    return np.array(list(itertools.product(*[(0, n - 1) for n in shape])), dtype=np.float64)


def _write_metaimage(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """``data`` (X, Y, Z) with RAS ``affine`` as MetaImage: spacing, LPS origin and direction."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.T))  # ITK arrays are (z, y, x)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((LPS @ affine[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin((LPS @ affine[:3, 3]).tolist())
    sitk.WriteImage(image, str(path))


@pytest.mark.parametrize(
    "name", ["anatomical.nii", "standard.nii.gz", "reoriented_anat_moved.nii"]
)
def test_reader_gives_nibabel_voxels_and_affine(name: str) -> None:
    path = NIBABEL_DATA / name
    [(data, kwargs, layer_type)] = _read(path)
    image = nib.load(path)
    assert layer_type == "image"
    np.testing.assert_allclose(data, image.get_fdata(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(kwargs["affine"], image.affine, atol=1e-6)
    np.testing.assert_allclose(kwargs["metadata"]["affine"], image.affine, atol=1e-6)
    assert kwargs["metadata"]["source_path"] == str(path.resolve())
    assert kwargs["metadata"]["header"]["dim"] == image.header["dim"].tolist()
    low, high = kwargs["contrast_limits"]
    assert np.min(data) <= low < high <= np.max(data)


def test_reader_turns_a_4d_file_into_a_notification(error_messages) -> None:
    result = _read(NIBABEL_DATA / "example_nifti2.nii.gz")
    assert result == [(None,)]  # napari's "read, nothing to show"
    [message] = error_messages()
    assert "example_nifti2.nii.gz" in message and "4D" in message


def test_reader_declines_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path)) is None  # a folder without DICOM files


def test_reader_names_modality_and_opens_labels_as_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    pet = rng.gamma(2.0, 1.0, (8, 7, 6)).astype(np.float32)
    labels = rng.integers(0, 5, (8, 7, 6)).astype(np.int16)
    nib.save(nib.Nifti1Image(pet, affine), tmp_path / "sub-001_pet.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "sub-001_labels.nii.gz")
    [(pet_data, pet_kwargs, pet_type)] = _read(tmp_path / "sub-001_pet.nii.gz")
    [(label_data, label_kwargs, label_type)] = _read(tmp_path / "sub-001_labels.nii.gz")
    assert (pet_type, pet_kwargs["name"], pet_kwargs["colormap"]) == ("image", "sub-001_pet [pet]", "hot")
    assert pet_kwargs["contrast_limits"][1] == pytest.approx(np.percentile(pet, 99.5), rel=1e-5)
    assert label_type == "labels" and label_kwargs["name"] == "sub-001_labels"
    assert np.issubdtype(label_data.dtype, np.integer)
    np.testing.assert_array_equal(label_data, labels)


def test_reader_opens_a_dicom_series_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    hu = rng.integers(-50, 120, (6, 5, 4)).astype(np.int16)  # (X, Y, Z)
    origin_lps, spacing = np.array([10.0, -20.0, 5.0]), (0.8, 0.7, 2.5)
    uid = "1.2.826.0.1.3680043.2.1125.1.4242"
    for k in range(hu.shape[2]):
        position = origin_lps + np.array([0.0, 0.0, k * spacing[2]])
        plane = sitk.GetImageFromArray(hu[:, :, k].T[np.newaxis])  # one (1, Y, X) slice
        plane.SetSpacing((spacing[0], spacing[1], spacing[2]))
        tags = {
            "0008|0060": "CT", "0020|000e": uid, "0020|000d": uid + ".1",
            "0020|0013": str(k + 1), "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0018|0050": str(spacing[2]), "0028|1052": "0", "0028|1053": "1",
        }
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(tmp_path / f"slice{k:02d}.dcm"))
        writer.Execute(plane)
    [(data, kwargs, layer_type)] = _read(tmp_path)
    np.testing.assert_array_equal(data, hu.astype(np.float32))
    expected = np.eye(4)
    expected[:3, :3] = LPS @ np.diag(spacing)
    expected[:3, 3] = LPS @ origin_lps
    np.testing.assert_allclose(kwargs["affine"], expected, atol=1e-4)
    assert kwargs["name"] == f"{tmp_path.name} [ct]"
    assert kwargs["contrast_limits"] == (0.0, 80.0)


def test_nifti_and_oblique_metaimage_overlay_in_napari(make_napari_viewer, tmp_path, small_volume) -> None:
    nifti, mha = tmp_path / "scan_t1.nii.gz", tmp_path / "scan_t1.mha"
    nib.save(nib.Nifti1Image(small_volume.data, small_volume.affine), nifti)
    _write_metaimage(small_volume.data, small_volume.affine, mha)
    viewer = make_napari_viewer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # napari: "non-orthogonal slicing ... not fully supported"
        [from_nifti] = viewer.open(nifti, plugin=PLUGIN)
        [from_mha] = viewer.open(mha, plugin=PLUGIN)
    corners = _corners(small_volume.shape)
    world_nifti = np.array([from_nifti.data_to_world(c) for c in corners])
    world_mha = np.array([from_mha.data_to_world(c) for c in corners])
    np.testing.assert_allclose(world_nifti, world_mha, atol=1e-4)
    # And both are where ITK itself puts the corners (LPS -> RAS).
    itk = sitk.ReadImage(str(mha))
    world_itk = np.array([LPS @ itk.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])
    np.testing.assert_allclose(world_mha, world_itk, atol=1e-4)
    np.testing.assert_array_equal(from_nifti.data, from_mha.data)


def test_writer_round_trip_keeps_voxels_affine_and_provenance(tmp_path, small_volume) -> None:
    provenance = {"Synthetic": True, "Method": "pix2pix", "Steps": 4}
    small_volume.metadata["provenance"] = provenance
    data, kwargs, layer_type = volume_to_layer_data(small_volume, name="synth [t1]")
    layer = Layer.create(data, kwargs, layer_type)
    [written] = layer.save(str(tmp_path / "synth_t1.nii.gz"), plugin=PLUGIN)
    [(back, back_kwargs, _)] = _read(Path(written))
    np.testing.assert_allclose(back, small_volume.data, atol=1e-6)
    np.testing.assert_allclose(back_kwargs["affine"], small_volume.affine, atol=1e-6)
    assert read_sidecar(written) == provenance
    assert back_kwargs["metadata"]["provenance"] == provenance
    back_layer = Layer.create(back, back_kwargs, "image")
    assert is_synthetic(back_layer) and layer_modality(back_layer) == "t1"


def test_writer_places_a_plain_layer_by_its_scale_and_translate(tmp_path) -> None:
    layer = Image(np.arange(60, dtype=np.float32).reshape(5, 4, 3) + 1,
                  scale=(0.5, 2.0, 3.0), translate=(4.0, -6.0, 1.5), name="plain")
    [written] = layer.save(str(tmp_path / "plain.nii"), plugin=PLUGIN)
    expected = np.diag([0.5, 2.0, 3.0, 1.0])
    expected[:3, 3] = (4.0, -6.0, 1.5)
    np.testing.assert_allclose(nib.load(written).affine, expected, atol=1e-6)
    np.testing.assert_allclose(layer_to_volume(layer).affine, expected, atol=1e-12)
    assert not sidecar_path(written).exists()  # not synthetic: no sidecar
    assert not is_synthetic(layer) and layer_modality(layer) is None


def test_writer_refuses_the_layers_own_file(tmp_path, small_volume, error_messages) -> None:
    source = tmp_path / "own_t1.nii.gz"
    nib.save(nib.Nifti1Image(small_volume.data, small_volume.affine), source)
    before = source.read_bytes()
    [(data, kwargs, layer_type)] = _read(source)
    layer = Layer.create(data + 1, kwargs, layer_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # napari: "did not return any written paths"
        assert layer.save(str(source), plugin=PLUGIN) == []
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["own_t1.nii.gz"]
    [message] = error_messages()
    assert "own_t1.nii.gz" in message and "own input" in message


def test_sample_data_has_every_modality_mask_and_labels(make_napari_viewer) -> None:
    subject = _sample_data._subject()
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "phantom_subject")
    by_key = {layer.name.split("_", 1)[1].split(" ")[0]: layer for layer in viewer.layers}
    assert set(by_key) == set(subject.volumes)
    for key, volume in subject.volumes.items():
        layer = by_key[key]
        assert isinstance(layer, Labels) == (key in ("brainmask", "labels"))
        np.testing.assert_allclose(layer.affine.affine_matrix, volume.affine, atol=1e-9)
        np.testing.assert_allclose(np.asarray(layer.data, dtype=np.float32), volume.data)
    assert by_key["pet"].colormap.name == "hot"
    assert tuple(by_key["ct"].contrast_limits) == (0.0, 80.0)
    by_key["labels"].data[:] = 0  # painting a layer leaves the cached subject alone
    assert _sample_data._subject().volumes["labels"].data.any()
