"""Counterfactual age in the phantom: the same scan with only the age-driven FDG uptake moved.

The age model (``phantom.contrast.pet_region_multipliers``): the uptake of the frontal and
anterior-cingulate parcels falls by their true slope per year; nothing else changes.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from synth_core.cli import main
from synth_core.phantom import generate_subject
from synth_core.phantom.anatomy import build_anatomy
from synth_core.phantom.contrast import pet_region_multipliers
from synth_core.phantom.parameters import (
    AGE_REFERENCE_YEARS,
    LABEL_IDS,
    PET_AGE_SLOPE,
    PET_GM_SUV,
    PET_NOISE,
    PET_UPTAKE,
    TISSUES,
)
from synth_core.phantom.subject import _draw_demographics
from synth_core.phantom.template import template_maps

SEED, INDEX = 5, 1
AGES = (60.0, 90.0)
AGEING = ("frontal", "anterior_cingulate")


@pytest.fixture(scope="module")
def subjects():
    plain = generate_subject(INDEX, SEED, "small")
    with_ages = generate_subject(INDEX, SEED, "small", pet_ages=AGES + (plain.age,))
    return plain, with_ages


def test_age_factor_moves_only_the_ageing_parcels_by_their_slope():
    young, old = pet_region_multipliers(55.0, 0.0), pet_region_multipliers(95.0, 0.0)
    for name, key in LABEL_IDS.items():
        expected = 1.0 + PET_AGE_SLOPE.get(name, 0.0) * 40.0  # frontal 0.8, cingulate 0.76
        assert old[key] / young[key] == pytest.approx(expected, rel=1e-6), name


def test_requesting_counterfactuals_changes_nothing_else(subjects):
    plain, with_ages = subjects
    for name, volume in plain.volumes.items():
        np.testing.assert_array_equal(volume.data, with_ages.volumes[name].data, err_msg=name)
    assert plain.params == with_ages.params


def test_the_subjects_own_age_reproduces_its_pet_with_the_same_noise(subjects):
    plain, with_ages = subjects
    noisy, clean = with_ages.counterfactual_pet[plain.age]
    np.testing.assert_array_equal(noisy.data, plain.volumes["pet"].data)
    np.testing.assert_array_equal(clean.data, plain.clean["pet"].data)


def test_noise_field_is_shared_between_ages(subjects):
    # Count-like noise: noisy = clean + sqrt(k (clean + floor)) z; z must be the same field.
    _, subject = subjects
    k = PET_NOISE["relative_at_gm"] ** 2 * PET_GM_SUV
    floor = PET_NOISE["floor_fraction"] * PET_GM_SUV
    fields = []
    for age in AGES:
        noisy, clean = (v.data.astype(np.float64) for v in subject.counterfactual_pet[age])
        fields.append(((noisy - clean) / np.sqrt(k * (np.maximum(clean, 0) + floor)), noisy > 0))
    (z60, kept60), (z90, kept90) = fields
    kept = kept60 & kept90  # noisy PET is clipped at 0
    assert kept.mean() > 0.5 and z60[kept].std() > 0.5
    np.testing.assert_allclose(z90[kept], z60[kept], atol=1e-3)
    changed = np.abs(subject.counterfactual_pet[90.0][1].data
                     - subject.counterfactual_pet[60.0][1].data) > 0.05
    assert changed.sum() > 100  # the shared field is checked where the images differ too


def test_change_lies_where_the_age_model_puts_it_and_has_its_size(subjects):
    _, subject = subjects
    labels = subject.volumes["labels"].data.astype(int)
    change = (subject.counterfactual_pet[90.0][1].data.astype(np.float64)
              - subject.counterfactual_pet[60.0][1].data)
    assert change.max() < 1e-5  # ageing only lowers uptake

    maps = template_maps("small")
    streams = np.random.SeedSequence([SEED, INDEX]).spawn(4)
    demographic_rng, lesion_rng = (np.random.default_rng(s) for s in streams[:2])
    age, sex, _, severity = _draw_demographics(demographic_rng)
    anatomy = build_anatomy(maps, age, sex, severity, demographic_rng, lesion_rng, None)
    ageing = np.isin(anatomy.parcel, [LABEL_IDS[r] for r in AGEING])
    # Far (> 5 voxels = 20 mm, over 6 PET blur sigmas) from the ageing parcels, nothing changes.
    far = ndi.distance_transform_edt(~ageing) > 5
    assert far.sum() > 1000
    assert np.abs(change[far]).max() < 1e-3 * np.abs(change).max()

    # Total change (the blur keeps the sum): SUV * dose * sum m_region * uptake * slope * 30.
    uptake = np.tensordot(np.array([PET_UPTAKE[t] for t in TISSUES]), anatomy.fractions, axes=1)
    slope = np.zeros(max(LABEL_IDS.values()) + 1)
    for region, value in PET_AGE_SLOPE.items():
        slope[LABEL_IDS[region]] = value
    base = pet_region_multipliers(AGE_REFERENCE_YEARS, severity)[anatomy.parcel]
    expected = (PET_GM_SUV * subject.params["pet_dose"] * 30.0
                * np.sum(base * uptake * slope[anatomy.parcel]))
    assert expected < 0
    assert change.sum() == pytest.approx(expected, rel=0.02)

    # Frontal grey matter loses what the slope says (less a little for the blur); occipital
    # grey matter, far from the ageing parcels, keeps its uptake.
    pet60 = subject.counterfactual_pet[60.0][1].data
    relative = {name: change[labels == LABEL_IDS[name]].mean() / pet60[labels == LABEL_IDS[name]].mean()
                for name in ("frontal", "occipital")}
    true_frontal = (1 + PET_AGE_SLOPE["frontal"] * 35) / (1 + PET_AGE_SLOPE["frontal"] * 5) - 1
    assert true_frontal * 1.0 <= relative["frontal"] <= true_frontal * 0.6
    assert abs(relative["occipital"]) < 0.05 * abs(relative["frontal"])


def test_cli_writes_the_counterfactual_files(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert main(["phantom", str(out), "--subjects", "1", "--seed", "2", "--ages", "60,90",
                 "--clean"]) == 0
    for age in ("60", "90"):
        for name in ("pet", "pet_clean"):
            image = nib.load(out / "sub-001" / f"age-{age}" / f"sub-001_{name}.nii.gz")
            assert image.shape == nib.load(out / "sub-001" / "sub-001_pet.nii.gz").shape
    subject = generate_subject(0, 2, "small", pet_ages=(90.0,))
    np.testing.assert_allclose(
        np.asarray(nib.load(out / "sub-001" / "age-90" / "sub-001_pet.nii.gz").dataobj),
        subject.counterfactual_pet[90.0][0].data, rtol=1e-6)


@pytest.mark.parametrize("ages, message", [("60,abc", "comma-separated"),
                                           ("40,90", "outside the phantom's age range"),
                                           ("60,60", "repeat")])
def test_cli_refuses_bad_ages_and_writes_nothing(tmp_path, capsys, ages, message):
    out = tmp_path / "cohort"
    assert main(["phantom", str(out), "--subjects", "1", "--ages", ages]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []
