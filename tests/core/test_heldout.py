"""The bundle floor's verdict and the card helpers, on figures worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from synth_core.heldout import floor_verdict, scale_check


def _entry(ssim: float, floor_ssim: float, mae: float, scale: float) -> dict:
    return {"scores": {"ssim": ssim, "mae": mae}, "noise_floor": {"ssim": floor_ssim},
            "scale": {"value": scale}}


@pytest.mark.parametrize("ssim, floor_ssim, scale, passes", [
    (0.86, 0.95, 1.0, True),    # 0.86 >= 0.9 * 0.95 = 0.855
    (0.85, 0.95, 1.0, False),   # just under 0.855
    (0.93, 0.99, 0.36, False),  # good structure, a third of the true scale (defect 1)
    (0.93, 0.99, 1.26, False),
])
def test_mr_pet_floor_is_ssim_fraction_and_scale(ssim, floor_ssim, scale, passes):
    verdict = floor_verdict(_entry(ssim, floor_ssim, 0.1, scale), "pet")
    assert verdict["passes"] is passes
    assert verdict["threshold"] == pytest.approx(0.9 * floor_ssim)


@pytest.mark.parametrize("mae, shift, passes", [(39.9, 3.0, True), (65.5, 0.5, False),
                                                (20.0, -10.5, False)])
def test_ct_floor_is_mae_in_hu_and_median_shift(mae, shift, passes):
    assert floor_verdict(_entry(0.99, 0.99, mae, shift), "ct-sharp")["passes"] is passes


def test_scale_check_ratio_and_hu_difference_use_medians():
    mask = np.ones((3, 1, 1), dtype=bool)
    truth = np.array([1.0, 2.0, 100.0]).reshape(3, 1, 1)  # median 2
    pred = np.array([3.0, 3.0, 3.0]).reshape(3, 1, 1)
    assert scale_check(pred, truth, mask, "pet") == pytest.approx(1.5)
    assert scale_check(pred + 40, truth, mask, "ct") == pytest.approx(41.0)


def test_heldout_preset_follows_the_cards_spacing():
    from synth_core.errors import UserError
    from synth_core.heldout import heldout_preset

    assert heldout_preset({}) == "small"
    assert heldout_preset({"spacing": [4.0, 4.0, 4.0]}) == "small"
    assert heldout_preset({"spacing": [2.0, 2.0, 2.0]}) == "full"
    assert heldout_preset({"spacing": [1.0, 1.0, 1.0]}) == "fine"
    with pytest.raises(UserError, match="--cohort DIR"):
        heldout_preset({"spacing": [1.5, 1.5, 1.5]})


def test_scores_read_from_a_cohort_folder_equal_the_generated_ones(tmp_path):
    from synth_core.errors import UserError
    from synth_core.heldout import heldout_scores
    from synth_core.phantom import write_cohort

    data = write_cohort(tmp_path / "heldout", 1, seed=11, preset="small", clean=True)
    read = heldout_scores("bi-dpm-t1-t2-small", "bi-dpm", cohort=data)
    made = heldout_scores("bi-dpm-t1-t2-small", "bi-dpm", seed=11, subjects=1)
    assert read["cohort"]["seed"] == 11 and read["cohort"]["preset"] == "small"
    assert read["cohort"]["spacing_mm"] == [4.0, 4.0, 4.0]
    for key in ("mae", "psnr", "ssim", "corrcoef"):
        assert read["scores"][key] == pytest.approx(made["scores"][key], rel=1e-6)
        assert read["noise_floor"][key] == pytest.approx(made["noise_floor"][key], rel=1e-6)
    assert read["inference"] == {"window": "slices", "flip": False}  # a 2D model
    mirrored = heldout_scores("bi-dpm-t1-t2-small", "bi-dpm", cohort=data, flip=True)
    assert mirrored["inference"] == {"window": "slices", "flip": True}
    assert mirrored["scores"]["ssim"] != read["scores"]["ssim"]
    plain = write_cohort(tmp_path / "noclean", 1, seed=11, preset="small")
    with pytest.raises(UserError, match="--clean"):
        heldout_scores("bi-dpm-t1-t2-small", "bi-dpm", cohort=plain)
    with pytest.raises(UserError, match="cohort.json"):
        heldout_scores("bi-dpm-t1-t2-small", "bi-dpm", cohort=tmp_path)
