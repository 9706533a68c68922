"""Each preprocessing step applied and undone, on small in-memory volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from nibabel.orientations import aff2axcodes

from synth_core.errors import UserError
from synth_core.preprocess import (
    NormParams,
    crop_or_pad_to_shape,
    denormalise,
    fit_normalisation,
    foreground_mask,
    normalise,
    pad_to_multiple,
    reorient_to_ras,
    resample,
    resample_to_grid,
    restore_orientation,
    shift_affine,
    undo_crop_or_pad,
    unpad,
)
from synth_core.registration import coregister, volume_to_sitk
from synth_core.volume import Volume


def rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    a, b = [i for i in range(3) if i != axis]
    r = np.eye(3)
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def centred_affine(columns: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel-to-world affine with the given direction*spacing columns, centred on world 0."""
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = -columns @ ((np.asarray(shape) - 1) / 2)
    return affine


def world_grid(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """World mm of every voxel, shape (X, Y, Z, 3)."""
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# ---------------------------------------------------------------- orientation


@pytest.fixture
def oblique_lpi() -> Volume:
    # voxel axes run I, L, P (permuted and flipped), tilted by 10 degrees, odd spacings
    columns = rotation(2, 10.0) @ np.array([[0, -1.0, 0], [0, 0, -2.0], [-1.5, 0, 0]])
    affine = centred_affine(columns, (5, 6, 7))
    affine[:3, 3] += [3.3, -7.1, 12.9]
    data = np.random.default_rng(0).normal(size=(5, 6, 7))
    return Volume(data, affine, modality="t1")


def test_reorient_to_ras_and_back_is_exact(oblique_lpi):
    ras, info = reorient_to_ras(oblique_lpi)
    assert aff2axcodes(oblique_lpi.affine) == ("I", "L", "P")
    assert aff2axcodes(ras.affine) == ("R", "A", "S")
    assert ras.shape == (6, 7, 5)
    back = restore_orientation(ras, info)
    np.testing.assert_array_equal(back.data, oblique_lpi.data)
    np.testing.assert_array_equal(back.affine, oblique_lpi.affine)


def test_reorient_keeps_each_value_at_its_world_position(oblique_lpi):
    ras, _ = reorient_to_ras(oblique_lpi)
    for index in [(0, 0, 0), (4, 5, 6), (1, 3, 2), (4, 0, 6)]:
        world = oblique_lpi.world_coordinates(np.array([index]))[0]
        ras_index = np.linalg.solve(ras.affine, np.append(world, 1.0))[:3]
        np.testing.assert_allclose(ras_index, np.round(ras_index), atol=1e-9)
        assert ras.data[tuple(np.round(ras_index).astype(int))] == oblique_lpi.data[index]


# ---------------------------------------------------------------- resampling


@pytest.fixture
def smooth_volume() -> Volume:
    affine = centred_affine(rotation(0, 12.0) @ np.diag([1.0, 1.2, 1.0]), (24, 22, 20))
    xyz = world_grid((24, 22, 20), affine)
    data = np.sin(xyz[..., 0] / 7.0) + np.cos(xyz[..., 1] / 9.0) * np.sin(xyz[..., 2] / 8.0 + 0.3)
    return Volume(data, affine, modality="t1")


def test_resample_to_2mm_and_back_is_close(smooth_volume):
    coarse = resample(smooth_volume, 2.0)
    assert coarse.shape == (12, 13, 10)
    np.testing.assert_allclose(coarse.spacing, 2.0, rtol=1e-12)
    # same orientation, same field-of-view centre
    direction = smooth_volume.affine[:3, :3] / smooth_volume.spacing
    np.testing.assert_allclose(coarse.affine[:3, :3] / coarse.spacing, direction, atol=1e-12)
    centre = lambda v: v.world_coordinates(((np.asarray(v.shape) - 1) / 2)[None])[0]  # noqa: E731
    np.testing.assert_allclose(centre(coarse), centre(smooth_volume), atol=1e-9)

    back = resample_to_grid(coarse, smooth_volume.shape, smooth_volume.affine)
    a, b = back.data.ravel(), smooth_volume.data.ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.99
    assert np.abs(a - b).mean() < 0.03 * (b.max() - b.min())


def test_resample_keeps_a_point_feature_at_its_world_position(smooth_volume):
    spot = np.array([2.5, -3.0, 4.0])  # mm
    xyz = world_grid(smooth_volume.shape, smooth_volume.affine)
    blob = np.exp(-np.sum((xyz - spot) ** 2, axis=-1) / (2 * 2.5**2))
    for spacing in (2.0, (1.5, 0.8, 1.7)):
        out = resample(smooth_volume.with_data(blob), spacing)
        w = out.data / out.data.sum()
        centroid = np.tensordot(w, world_grid(out.shape, out.affine), axes=3)
        np.testing.assert_allclose(centroid, spot, atol=0.2)


def test_resample_order_zero_keeps_labels():
    labels = np.zeros((15, 14, 13))
    labels[3:9, 4:10, 2:8] = 3
    labels[8:12, 2:6, 6:11] = 7
    vol = Volume(labels, np.diag([1.0, 1.0, 1.3, 1.0]))
    out = resample(vol, 1.7, order=0)
    assert set(np.unique(out.data)) == {0.0, 3.0, 7.0}
    back = resample_to_grid(out, vol.shape, vol.affine, order=0)
    assert set(np.unique(back.data)) == {0.0, 3.0, 7.0}
    assert (back.data == vol.data).mean() > 0.9


def test_resample_to_shifted_grid_is_exact_and_fills_outside(smooth_volume):
    shifted = shift_affine(smooth_volume.affine, (5, -3, 0))
    out = resample_to_grid(smooth_volume, smooth_volume.shape, shifted, order=3, fill=-9.0)
    np.testing.assert_allclose(out.data[:-5, 3:], smooth_volume.data[5:, :-3], atol=1e-5)
    assert np.all(out.data[-5:] == -9.0) and np.all(out.data[:, :3] == -9.0)


def test_resample_rejects_non_positive_spacing(smooth_volume):
    with pytest.raises(UserError, match="spacing"):
        resample(smooth_volume, (1.0, 0.0, 1.0))


# ---------------------------------------------------------------- foreground


def test_foreground_mask_finds_a_noisy_sphere():
    rng = np.random.default_rng(1)
    xyz = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), axis=-1) - 15.5
    sphere = np.linalg.norm(xyz, axis=-1) < 10
    data = 100.0 * sphere + np.abs(rng.normal(0, 25.0, size=sphere.shape))
    data[sphere & (np.linalg.norm(xyz - 2, axis=-1) < 3)] = 5.0  # dark "ventricle"
    data[1:3, 1:3, 1:3] = 300.0  # bright speck outside the head
    assert dice(foreground_mask(data, "t1"), sphere) > 0.95


def test_ct_foreground_is_the_body_above_minus_500_hu():
    xyz = np.stack(np.meshgrid(*[np.arange(24)] * 3, indexing="ij"), axis=-1) - 11.5
    r = np.linalg.norm(xyz, axis=-1)
    data = np.where(r < 9, 40.0, -1000.0)
    data[r < 3] = -1000.0  # an enclosed air cavity belongs to the body
    data[0:2, 0:2, :] = 0.0  # the table, not connected to the body
    mask = foreground_mask(data, "ct-sharp")
    np.testing.assert_array_equal(mask, r < 9)


# ---------------------------------------------------------------- normalisation


def _scan(modality: str | None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    xyz = np.stack(np.meshgrid(*[np.arange(20)] * 3, indexing="ij"), axis=-1) - 9.5
    r = np.linalg.norm(xyz, axis=-1)
    head = r < 8
    if modality is not None and modality.startswith("ct"):
        data = np.where(head, 40.0, -1000.0) + np.where((r > 6.5) & head, 1200.0, 0.0)
        return data + rng.normal(0, 10.0, size=r.shape), head
    data = np.where(head, 300.0 + 40.0 * xyz[..., 0], 0.0) + rng.gamma(2.0, 5.0, size=r.shape)
    return data, head


@pytest.mark.parametrize(
    "modality", ["t1", "t1ce", "t2", "flair", "t1-lowres", "pet", "ct", "ct-smooth", "dwi", None]
)
def test_normalise_then_denormalise_is_exact(modality):
    data, _ = _scan(modality)
    params = fit_normalisation(data, modality)
    y = normalise(data, params)
    assert y.dtype == np.float32
    back = denormalise(y, params)
    np.testing.assert_allclose(back, data, rtol=1e-5, atol=1e-6 * np.abs(data).max())


@pytest.mark.parametrize("modality", ["t1", "pet", "ct"])
def test_single_precision_volumes_normalise_as_double_ones_do(modality):
    data, _ = _scan(modality)
    params = fit_normalisation(data, modality)
    single = data.astype(np.float32)
    y32, y64 = normalise(single, params), normalise(single.astype(np.float64), params)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-6, atol=1e-6)
    back32, back64 = denormalise(y32, params), denormalise(y32.astype(np.float64), params)
    assert back32.dtype == np.float32
    np.testing.assert_allclose(back32, back64, rtol=1e-6, atol=1e-6 * np.abs(data).max())
    np.testing.assert_allclose(normalise(data.astype(np.int16), params),
                               normalise(data.astype(np.int16).astype(np.float64), params),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("modality", ["t2", "dwi"])
def test_mr_foreground_maps_onto_minus_one_one(modality):
    data, head = _scan(modality)
    params = fit_normalisation(data, modality, mask=head)
    assert params.kind == "percentile"
    y = normalise(data, params)[head]
    np.testing.assert_allclose(np.percentile(y, [0.5, 99.5]), [-1.0, 1.0], atol=1e-5)
    assert -1.3 < y.min() and y.max() < 1.3


def test_pet_reference_region_has_mean_suvr_one():
    data, head = _scan("pet")
    reference = head & (np.arange(20)[:, None, None] < 8)
    params = fit_normalisation(data, "pet", reference_mask=reference)
    assert params.suvr_reference == "reference-mask"
    assert (data / params.suvr_scale)[reference].mean() == pytest.approx(1.0, rel=1e-9)
    # SUVR 1 lands at -1 + 2 / suvr_max after the linear map; SUVR 0 at -1
    y = normalise(data, params)
    assert y[reference].mean() == pytest.approx(-1 + 2 / params.suvr_max, abs=1e-5)
    assert normalise(np.zeros(1), params)[0] == pytest.approx(-1.0, abs=1e-7)


def test_pet_without_reference_scales_by_the_95th_foreground_percentile():
    data, head = _scan("pet")
    params = fit_normalisation(data, "pet", mask=head)
    assert params.suvr_scale == pytest.approx(np.percentile(data[head], 95), rel=1e-9)
    assert params.hi == pytest.approx(3.0 * params.suvr_scale, rel=1e-12)


def test_ct_window_maps_its_ends_onto_minus_one_and_one():
    data, _ = _scan("ct")
    params = fit_normalisation(data, "ct")
    np.testing.assert_allclose(normalise(np.array([-1200.0, 1000.0, 3200.0]), params), [-1, 0, 1])
    legacy = fit_normalisation(data, "ct", ct_window=(0.0, 1000.0))
    np.testing.assert_allclose(normalise(np.array([-1000.0, 0.0, 1000.0]), legacy), [-1, 0, 1])
    narrow = fit_normalisation(data, "ct", ct_window=(40.0, 40.0))
    np.testing.assert_allclose(normalise(np.array([0.0, 80.0]), narrow), [-1, 1])


@pytest.mark.parametrize("modality", ["t1", "pet", "ct"])
def test_norm_params_round_trip_through_json(modality):
    data, _ = _scan(modality)
    params = fit_normalisation(data, modality)
    again = NormParams.from_dict(json.loads(json.dumps(params.to_dict())))
    assert again == params
    with pytest.raises(UserError, match="lo"):
        NormParams.from_dict({k: v for k, v in params.to_dict().items() if k != "lo"})


def test_normalisation_rejects_a_mask_of_the_wrong_shape():
    data, _ = _scan("t1")
    with pytest.raises(UserError, match=r"mask shape \(20, 20, 19\)"):
        fit_normalisation(data, "t1", mask=np.ones((20, 20, 19), dtype=bool))


# ---------------------------------------------------------------- crop and pad


def test_pad_to_multiple_and_unpad_are_exact_on_odd_shapes():
    data = np.random.default_rng(2).normal(size=(2, 7, 9, 5)).astype(np.float32)
    padded, info = pad_to_multiple(data, 4)
    assert padded.shape == (2, 8, 12, 8)
    assert info.before == (0, 1, 1)
    assert np.all(padded[:, :, :, 0] == data.min())  # default fill: the background
    np.testing.assert_array_equal(unpad(padded, info), data)
    edge, info = pad_to_multiple(data, 8, mode="edge")
    assert edge.shape == (2, 8, 16, 8)
    np.testing.assert_array_equal(edge[:, :, 0], edge[:, :, info.before[1]])
    np.testing.assert_array_equal(unpad(edge, info), data)


def test_crop_or_pad_to_shape_and_undo():
    data = np.random.default_rng(4).normal(size=(7, 9, 5))
    out, info = crop_or_pad_to_shape(data, (4, 12, 5), value=-3.0)
    assert out.shape == (4, 12, 5)
    np.testing.assert_array_equal(out[:, 1:10], data[1:5])  # centred crop, centred pad
    assert np.all(out[:, 0] == -3.0) and np.all(out[:, 10:] == -3.0)
    back = undo_crop_or_pad(out, info, fill=-5.0)
    assert back.shape == data.shape
    np.testing.assert_array_equal(back[1:5], data[1:5])
    assert np.all(back[[0, 5, 6]] == -5.0)
    np.testing.assert_array_equal(undo_crop_or_pad(*crop_or_pad_to_shape(data, (9, 11, 7))), data)


def test_shift_affine_keeps_a_padded_volume_in_place():
    affine = centred_affine(rotation(1, 20.0) @ np.diag([1.1, 0.9, 2.0]), (7, 9, 5))
    data = np.random.default_rng(5).normal(size=(7, 9, 5))
    padded, info = pad_to_multiple(data, 8)
    padded_affine = shift_affine(affine, info.offset)
    for index in [(0, 0, 0), (6, 8, 4), (3, 2, 1)]:
        new_index = np.add(index, info.before)
        assert padded[tuple(new_index)] == data[index]
        np.testing.assert_allclose(
            padded_affine @ np.append(new_index, 1), affine @ np.append(index, 1), atol=1e-12
        )


# ---------------------------------------------------------------- co-registration

# (centre mm, semi-axes mm, intensity in the fixed contrast, intensity in the moving one)
ELLIPSOIDS = [
    ((0.0, 0.0, 0.0), (24.0, 18.0, 12.0), 1.0, 2.0),
    ((7.0, 5.0, 3.0), (8.0, 4.0, 5.0), 1.0, -1.5),
    ((-8.0, -4.0, -3.0), (4.0, 9.0, 4.0), -0.6, 1.0),
    ((2.0, -9.0, 5.0), (5.0, 3.0, 4.0), 1.5, -1.0),
]


def blobs(xyz: np.ndarray, contrast: int) -> np.ndarray:
    """Smooth ellipsoids at world points xyz (..., 3); contrast 0 fixed, 1 moving."""
    out = np.zeros(xyz.shape[:-1])
    for centre, axes, *values in ELLIPSOIDS:
        r = np.linalg.norm((xyz - np.asarray(centre)) / np.asarray(axes), axis=-1)
        out += values[contrast] / (1.0 + np.exp((r - 1.0) / 0.08))
    return out


def test_volume_to_sitk_has_lps_geometry(oblique_lpi):
    image = volume_to_sitk(oblique_lpi)
    for index in [(0, 0, 0), (4, 5, 6), (1, 3, 2)]:
        ras = oblique_lpi.world_coordinates(np.array([index]))[0]
        lps = image.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(lps, ras * [-1, -1, 1], atol=1e-9)
        assert image.GetPixel(index) == pytest.approx(oblique_lpi.data[index], abs=0)


def scans_of_a_moved_object(motion: np.ndarray) -> tuple[Volume, Volume]:
    """A fixed T1-like scan and a T2-like scan of the object moved by ``motion`` (4x4 RAS),
    the latter on another grid (x flipped, other spacings and shape)."""
    fixed_affine = centred_affine(np.diag([2.0, 2.0, 2.0]), (32, 32, 32))
    fixed = Volume(blobs(world_grid((32, 32, 32), fixed_affine), 0), fixed_affine, "t1")
    moving_shape = (30, 32, 28)
    moving_affine = centred_affine(np.diag([-2.1, 2.0, 2.2]), moving_shape)
    xyz = world_grid(moving_shape, moving_affine)
    inverse = np.linalg.inv(motion)
    object_xyz = xyz @ inverse[:3, :3].T + inverse[:3, 3]
    return fixed, Volume(blobs(object_xyz, 1), moving_affine, "t2")


def test_coregister_recovers_a_known_rigid_motion_across_contrasts():
    motion = np.eye(4)
    motion[:3, :3] = rotation(2, 7.0) @ rotation(0, -5.0)
    motion[:3, 3] = [3.0, -2.0, 2.5]
    fixed, moving = scans_of_a_moved_object(motion)

    aligned, transform = coregister(moving, fixed, "rigid", seed=0)

    assert aligned.shape == fixed.shape
    np.testing.assert_array_equal(aligned.affine, fixed.affine)
    truth = blobs(world_grid(fixed.shape, fixed.affine), 1)  # moving contrast, not moved
    assert np.corrcoef(aligned.data.ravel(), truth.ravel())[0, 1] > 0.95
    expected = np.linalg.inv(motion)  # moving -> fixed
    residual = transform[:3, :3] @ expected[:3, :3].T
    angle = np.degrees(np.arccos(np.clip((np.trace(residual) - 1) / 2, -1, 1)))
    assert angle < 2.0
    np.testing.assert_allclose(np.linalg.svd(transform[:3, :3])[1], 1.0, atol=1e-6)  # rigid
    corners = np.array(np.meshgrid(*[[-15.0, 15.0]] * 3, indexing="ij")).reshape(3, -1).T
    points = np.c_[corners, np.ones(len(corners))]
    assert np.abs(points @ (transform - expected).T).max() < 2.0  # one fixed voxel, mm


def test_coregister_affine_recovers_a_scaling():
    motion = np.eye(4)
    motion[:3, :3] = rotation(2, -6.0) @ np.diag([1.08, 0.95, 1.0])
    motion[:3, 3] = [-2.0, 1.0, 1.5]
    fixed, moving = scans_of_a_moved_object(motion)

    aligned, transform = coregister(moving, fixed, "affine", seed=1)

    truth = blobs(world_grid(fixed.shape, fixed.affine), 1)
    assert np.corrcoef(aligned.data.ravel(), truth.ravel())[0, 1] > 0.95
    # points inside the object, where the images constrain the transform
    box = np.array(np.meshgrid([-12.0, 12.0], [-9.0, 9.0], [-6.0, 6.0], indexing="ij"))
    points = np.c_[box.reshape(3, -1).T, np.ones(8)]
    assert np.abs(points @ (transform - np.linalg.inv(motion)).T).max() < 2.0


def test_the_head_mask_keeps_a_scalp_that_the_threshold_cut_off_from_the_brain():
    from synth_core.preprocess import foreground_mask, foreground_masks

    grid = np.indices((40, 44, 40)).astype(np.float32)
    r = np.sqrt(((grid - np.array([20, 22, 20])[:, None, None, None]) ** 2).sum(0))
    brain = r < 12
    # a shell open at the neck, cut off from the brain by a dark gap (skull, CSF), smaller
    # than the brain: the largest component is then the brain, as in a 1 mm head
    scalp = (r > 15) & (r < 16.2) & (grid[2] > 12)
    data = np.where(brain, 600.0, 0.0) + np.where(scalp, 900.0, 0.0)
    data += np.random.default_rng(0).normal(0, 5.0, data.shape)
    largest, head = foreground_masks(data, "t1")
    assert np.array_equal(largest, foreground_mask(data, "t1"))
    assert scalp.sum() < brain.sum() and largest[20, 22, 20] and not largest[scalp].any()
    assert head[scalp].all() and head[brain].all()
    joined = data + np.where((r >= 12) & (r <= 15), 700.0, 0.0)  # no gap: one component
    a, b = foreground_masks(joined, "t1")
    assert np.array_equal(a, b) and a[scalp].all()
