"""Disease-signal measures on hand-built data whose separability is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synth_core.errors import UserError
from synth_core.validity.disease import (
    balanced_accuracy,
    disease_signal,
    label_volume_features,
    paired_difference,
    pet_features,
    region_means,
    t1_features,
    three_class_levels,
)


def test_balanced_accuracy_by_hand():
    truth = np.array([1, 1, 1, 1, 0, 0], bool)
    predicted = np.array([1, 1, 1, 0, 0, 1], bool)
    # AD: 3 of 4 right; CN: 1 of 2 right.
    assert balanced_accuracy(truth, predicted) == pytest.approx(0.5 * (0.75 + 0.5))
    # A constant guess scores 0.5 whatever the class balance.
    assert balanced_accuracy(truth, np.zeros(6, bool)) == 0.5
    assert math.isnan(balanced_accuracy(np.ones(4, bool), np.ones(4, bool)))


def _two_gaussians(n: int, separation_sd: float, noise_features: int, seed: int):
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.3  # unbalanced, as AD against CN is
    signal = rng.normal(size=n) + separation_sd * truth
    noise = rng.normal(size=(n, noise_features))
    return np.column_stack([signal, noise]), truth


def test_known_separability_is_recovered():
    # Two unit-variance Gaussians 2 SD apart: the best threshold (midway) is right with
    # probability Phi(1) = 0.841 in each class, so balanced accuracy 0.841.
    features, truth = _two_gaussians(800, 2.0, 3, seed=1)
    noise_only = features[:, 1:]
    separable = np.column_stack([truth + 0.01 * np.arange(truth.size) % 0.1, noise_only])
    result = disease_signal({"gauss": features, "noise": noise_only, "perfect": separable},
                            truth, seed=0, n_bootstrap=300)
    expected = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert result["gauss"]["balanced_accuracy"] == pytest.approx(expected, abs=0.04)
    lo, hi = result["gauss"]["interval"]
    assert lo < result["gauss"]["balanced_accuracy"] < hi and hi - lo < 0.1
    assert result["noise"]["balanced_accuracy"] == pytest.approx(0.5, abs=0.06)
    assert result["noise"]["interval"][0] < 0.5 < result["noise"]["interval"][1]
    assert result["perfect"]["balanced_accuracy"] == 1.0
    assert result["perfect"]["interval"] == [1.0, 1.0]
    assert result["_subjects"] == {"ad": int(truth.sum()), "cn": int((~truth).sum())}
    assert result["gauss"]["features"] == 4
    diff = paired_difference(truth, result["_predictions"]["perfect"],
                             result["_predictions"]["noise"], n=300)
    assert diff["interval"][0] > 0.3
    same = paired_difference(truth, result["_predictions"]["gauss"],
                             result["_predictions"]["gauss"], n=50)
    assert same == {"difference": 0.0, "interval": [0.0, 0.0]}


def test_too_few_subjects_in_a_class_is_refused():
    truth = np.array([True] * 3 + [False] * 20)
    with pytest.raises(UserError, match="smaller class"):
        disease_signal({"x": np.zeros((23, 2))}, truth)


def test_pet_features_are_regional_suvr():
    labels = np.zeros((4, 4, 4), int)
    labels[:2] = 1
    labels[2:] = 2
    pet = np.where(labels == 1, 2.0, 6.0)
    brain = labels > 0
    features = pet_features(pet, labels, brain, [1, 2])
    assert features == pytest.approx([0.5, 1.5])  # brain mean 4
    # A global dose scale cancels.
    assert pet_features(7.3 * pet, labels, brain, [1, 2]) == pytest.approx(features)
    assert np.isnan(region_means(pet, labels, [1, 3])[1])
    with pytest.raises(UserError, match="shape"):
        pet_features(pet, labels[:2], brain, [1])


def test_label_volume_features_are_fractions_of_the_brain():
    labels = np.zeros((10, 10, 10), int)
    labels[:5] = 1
    labels[5:8] = 2
    labels[8:] = 3
    assert label_volume_features(labels, [1, 2], [1, 2, 3]) == pytest.approx([0.5, 0.3])


def test_three_class_levels_and_t1_tissue_fractions():
    rng = np.random.default_rng(0)
    levels = np.array([200.0, 600.0, 900.0])
    values = rng.choice(levels, size=6000) + rng.normal(0, 20, size=6000)
    assert three_class_levels(values) == pytest.approx(levels, rel=0.02)

    # Atlas region 1 all grey matter, 3 all white matter, 4 a CSF pool (the "ventricles"),
    # and region 2 a small block midway between CSF and grey: half of each by partial volume.
    shape = (12, 12, 12)
    atlas = np.zeros(shape, int)
    atlas[:4], atlas[4:8], atlas[8:] = 1, 4, 3
    t1 = np.where(atlas == 1, 600.0, np.where(atlas == 4, 200.0, 900.0))
    t1[5:7, 5:7, 5:7] = 400.0
    atlas[5:7, 5:7, 5:7] = 2
    brain = np.ones(shape, bool)
    f = t1_features(t1 * 1.7, brain, atlas, [1, 2, 3], atlas == 4)  # any gain
    grey, csf, intensity, ventricles = f[:3], f[3:6], f[6:9], f[9]
    assert grey == pytest.approx([1.0, 0.5, 0.0], abs=0.02)
    assert csf == pytest.approx([0.0, 0.5, 0.0], abs=0.02)
    assert intensity == pytest.approx([600 / 900, 400 / 900, 1.0], rel=0.02)
    assert ventricles == pytest.approx(1.0)
    with pytest.raises(UserError, match="three tissue levels"):
        t1_features(np.ones(shape), brain, atlas, [1], atlas == 4)


def test_pix2pix_regional_uptake_loss():
    # The optional loss on regional uptake (retraining for the disease signal): the L1 of
    # 4-voxel block means, added to the generator's loss with its weight; off by default.
    import torch

    from synth_core.methods import build_config, get_method_class

    config = build_config("pix2pix", "tiny")
    assert config.lambda_regional == 0.0
    config.lambda_regional, config.regional_pool = 10.0, 4
    method = get_method_class("pix2pix")(config, "t1", "pet")
    assert "lambda_regional" in method.resumable
    fake = torch.zeros(1, 1, 8, 8, 8)
    true = torch.zeros(1, 1, 8, 8, 8)
    true[..., :4, :4, :4] = 2.0  # one block of eight is 2 higher
    assert float(torch.nn.functional.l1_loss(method._regional(fake), method._regional(true))) \
        == pytest.approx(2.0 / 8)

    class Ctx:
        def optimize(self, index, loss):
            return True

    torch.manual_seed(0)
    batch = {"source": torch.randn(1, 1, 8, 8, 8), "target": torch.randn(1, 1, 8, 8, 8)}
    losses = method.adversarial_step(batch, Ctx())
    expected = losses["g_gan"] + config.lambda_l1 * losses["g_l1"] + 10.0 * losses["g_regional"]
    assert float(losses["loss"]) == pytest.approx(float(expected), rel=1e-5)
