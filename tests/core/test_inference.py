"""The translate path: any grid in, the same grid out, provenance, option checks, windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import synth_core as sc
from synth_core.errors import UserError
from synth_core.nn.sliding_window import sliding_window
from synth_core.volume import Volume


def _input_volume(cohort, sid="sub-006", mod="t1") -> Volume:
    return sc.load_volume(cohort / sid / f"{sid}_{mod}.nii.gz")


def _oblique_lps(vol: Volume) -> Volume:
    """The same scan stored flipped (LPS-like), resampled to 3 mm on a rotated grid."""
    from synth_core.preprocess import resample_to_grid

    theta = np.deg2rad(12)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-3.0, -3.0, 3.5])
    centre = vol.affine[:3, :3] @ (np.array(vol.shape) - 1) / 2 + vol.affine[:3, 3]
    shape = (21, 22, 18)
    affine[:3, 3] = centre - affine[:3, :3] @ (np.array(shape) - 1) / 2
    out = resample_to_grid(vol, shape, affine, order=1)
    out.modality = vol.modality
    return out


def test_output_lies_on_the_input_grid_with_provenance(trained, tiny_cohort):
    vol = _oblique_lps(_input_volume(tiny_cohort))
    res = sc.translate(vol, method="pix2pix", to="pet")
    assert res.volume.shape == vol.shape
    np.testing.assert_allclose(res.volume.affine, vol.affine, atol=1e-9)
    assert res.std is None
    prov = res.provenance
    assert prov["Synthetic"] is True and prov["Method"] == "pix2pix"
    assert prov["Checkpoint"] == "tiny-pix2pix-t1-pet"
    assert prov["CheckpointSHA256"] == trained["pix2pix"].model.card["sha256"]
    assert prov["SourceModality"] == "t1" and prov["TargetModality"] == "pet"
    assert res.volume.modality == "pet" and res.volume.is_synthetic
    assert np.isfinite(res.volume.data).all()


def test_translation_is_equivariant_to_how_the_grid_is_stored(trained, tiny_cohort):
    """Flipping the voxel order (same world) must give the same synthetic voxels, flipped."""
    vol = _input_volume(tiny_cohort)
    flipped = Volume(vol.data[::-1].copy(), vol.affine @ np.array(
        [[-1, 0, 0, vol.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float), "t1")
    a = sc.translate(vol, method="pix2pix", to="pet").volume.data
    b = sc.translate(flipped, method="pix2pix", to="pet").volume.data
    np.testing.assert_allclose(a, b[::-1], atol=1e-5)


def test_bidirectional_model_runs_both_ways(trained, tiny_cohort):
    t1 = _input_volume(tiny_cohort, mod="t1")
    t2 = _input_volume(tiny_cohort, mod="t2")
    fwd = sc.translate(t1, method="cyclegan", to="t2")
    back = sc.translate(t2, method="cyclegan", to="t1")
    assert back.provenance["Parameters"]["reverse"] is True
    assert fwd.provenance["Parameters"]["reverse"] is False
    assert not np.allclose(fwd.volume.data, back.volume.data)


@pytest.mark.parametrize("kwargs, message", [
    ({"age": 70}, "takes no age"),
    ({"steps": 4}, "integrates no ODE"),
    ({"samples": 4}, "deterministic"),
    ({"temperature": 0.5}, "deterministic"),
    ({"reverse": True}, "runs one way only"),
    ({"device": "tpu"}, "unknown device"),
])
def test_options_the_method_does_not_support_are_refused(trained, tiny_cohort, kwargs, message):
    with pytest.raises(UserError, match=message):
        sc.translate(_input_volume(tiny_cohort), method="pix2pix", to="pet", **kwargs)


def test_unknown_method_modality_and_unfit_checkpoint(trained, tiny_cohort):
    vol = _input_volume(tiny_cohort)
    with pytest.raises(UserError, match="unknown method"):
        sc.translate(vol, method="magic", to="pet")
    with pytest.raises(UserError, match="no checkpoint for method 'pix2pix'"):
        sc.translate(vol, method="pix2pix", to="ct")
    with pytest.raises(UserError, match=r"no checkpoint for method 'pix2pix' \(flair -> pet\)"):
        sc.translate(vol, method="pix2pix", to="pet", source="flair")
    with pytest.raises(UserError, match="expects t1 input, not 'flair'"):
        sc.translate(vol, method="pix2pix", to="pet", source="flair", checkpoint="tiny-pix2pix-t1-pet")


def test_too_large_for_memory_is_split_into_windows(trained, tiny_cohort, monkeypatch):
    import synth_core.inference as inference

    calls = []

    def spy(fn, x, window, overlap, progress):
        calls.append(window)
        return sliding_window(fn, x, window, overlap, progress)

    monkeypatch.setattr(inference, "sliding_window", spy)
    vol = _input_volume(tiny_cohort)
    sc.translate(vol, method="pix2pix", to="pet")
    assert calls == []  # fits the default budget: one pass
    tiled = sc.translate(vol, method="pix2pix", to="pet", memory_budget_mb=0.01).volume
    assert len(calls) == 1 and tiled.shape == vol.shape and np.isfinite(tiled.data).all()
    assert all(w % 4 == 0 for w in calls[0])  # windows respect the network's multiple


def test_sliding_window_blending_is_exact_for_a_voxelwise_model():
    x = torch.randn(1, 1, 23, 17, 30)
    fn = lambda w: (2 * w + 1).unsqueeze(0)  # noqa: E731
    out = sliding_window(fn, x, (8, 8, 8), overlap=0.5)
    torch.testing.assert_close(out[0], 2 * x + 1)


def test_sliding_window_matches_a_local_model_away_from_window_edges():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 1, 3, padding=1)
    x = torch.randn(1, 1, 24, 24, 24)
    with torch.no_grad():
        whole = conv(x)
        tiled = sliding_window(lambda w: conv(w).unsqueeze(0), x, (12, 12, 12), overlap=0.5)[0]
    # windows see zero padding at their borders; blending weights those voxels least
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    assert (whole - tiled)[inner].abs().mean() < 0.05 * whole.abs().mean()


def test_training_data_is_normalised_exactly_as_translate_normalises_a_scan(tiny_cohort):
    """Same volume, same map: a brain mask on disk must not change the training inputs."""
    from synth_core.data import VolumeStore, discover_subjects
    from synth_core.preprocess import fit_normalisation, foreground_mask

    records = discover_subjects(tiny_cohort)
    assert all("brainmask" in r.paths for r in records)
    store = VolumeStore(records, multiple=4)
    vol = _input_volume(tiny_cohort, sid="sub-002")
    at_inference = fit_normalisation(vol.data, "t1", mask=foreground_mask(vol.data, "t1"))
    assert store.norm_params("sub-002", "t1").to_dict() == at_inference.to_dict()


def test_non_finite_model_output_is_an_error_not_a_volume(trained, tiny_cohort, monkeypatch):
    import torch

    from synth_core import inference

    def broken(model, x, request, *args, **kwargs):
        out = torch.zeros((1, *x.shape))
        out[..., 0, 0, 0] = float("nan")
        return out, "whole", None

    monkeypatch.setattr(inference, "_run", broken)
    with pytest.raises(UserError, match=r"non-finite values .* check that the input"):
        sc.translate(_input_volume(tiny_cohort), method="pix2pix", to="pet")
