"""The phantom cohort: files, contrasts, known effects, determinism and noise floor.

One cohort of 12 ``small`` subjects (seed 3, with clean twins) is written once per module
and read back with nibabel, so the checks see what users and data sets see.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import stats

from synth_core.errors import UserError
from synth_core.phantom import (
    LABELS,
    MODALITIES_WRITTEN,
    PET_REGIONS,
    PRESETS,
    cohort_parameters,
    generate_subject,
    noise_floor_psnr,
    write_cohort,
)

SEED = 3
N_SUBJECTS = 12
CORTICAL = list(range(1, 8))  # frontal ... precuneus
ID = {name: key for key, name in LABELS.items()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom")  # exists and is empty: allowed
    calls = []
    write_cohort(out, N_SUBJECTS, SEED, "small", clean=True,
                 progress=lambda i, total: calls.append((i, total)))
    assert calls == [(i, N_SUBJECTS) for i in range(N_SUBJECTS)]
    return out


def _participants(cohort: Path) -> list[dict[str, str]]:
    with open(cohort / "participants.tsv", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _load(cohort: Path, sid: str, name: str) -> np.ndarray:
    return np.asarray(nib.load(cohort / sid / f"{sid}_{name}.nii.gz").dataobj)


def _relative_slope(age: np.ndarray, value: np.ndarray) -> float:
    """Slope of value against age as a fraction of the fitted value at 55 years, per year."""
    slope, intercept = np.polyfit(age, value, 1)
    return float(slope / (intercept + 55.0 * slope))


def test_tree_is_written(cohort: Path) -> None:
    rows = _participants(cohort)
    assert [r["participant_id"] for r in rows] == [f"sub-{i:03d}" for i in range(1, 13)]
    expected = ["participant_id", "age", "sex", "diagnosis"] + [f"pet_{r}" for r in PET_REGIONS]
    assert set(expected) <= set(rows[0])
    assert all(55.0 <= float(r["age"]) <= 95.0 for r in rows)
    assert {r["sex"] for r in rows} <= {"F", "M"}
    assert {r["diagnosis"] for r in rows} <= {"CN", "MCI", "AD"}
    assert json.loads((cohort / "labels.json").read_text(encoding="utf-8")) == {str(k): v for k, v in LABELS.items()}
    meta = json.loads((cohort / "cohort.json").read_text(encoding="utf-8"))
    assert (meta["preset"], meta["seed"], meta["shape"]) == ("small", SEED, [48, 64, 48])
    assert meta["spacing_mm"] == [4.0, 4.0, 4.0]
    assert meta["parameters"] == json.loads(json.dumps(cohort_parameters()))

    preset = PRESETS["small"]
    for row in rows:
        sid = row["participant_id"]
        names = [*MODALITIES_WRITTEN, "brainmask", "labels"]
        names += [f"{m}_clean" for m in MODALITIES_WRITTEN]
        files = sorted(p.name for p in (cohort / sid).iterdir())
        assert files == sorted(f"{sid}_{n}.nii.gz" for n in names)
        for name in names:
            image = nib.load(cohort / sid / f"{sid}_{name}.nii.gz")
            assert image.shape == preset.shape
            np.testing.assert_allclose(image.affine, preset.affine, atol=1e-5)
            assert image.header["descrip"].tobytes().startswith(b"napari-modality-synth phantom")
        assert nib.load(cohort / sid / f"{sid}_labels.nii.gz").get_data_dtype() == np.int16


def test_affine_is_ras_and_centred_on_the_brain() -> None:
    for preset in PRESETS.values():
        assert all(n % 16 == 0 for n in preset.shape)
        affine = preset.affine
        assert np.allclose(np.diag(affine)[:3], preset.spacing_mm)  # RAS+, no flips
        centre = affine @ np.append((np.asarray(preset.shape) - 1) / 2.0, 1.0)
        np.testing.assert_allclose(centre[:3], [0.0, -17.0, 5.0])


def test_contrast_orderings_in_written_files(cohort: Path) -> None:
    for row in _participants(cohort)[:4]:
        sid = row["participant_id"]
        labels = _load(cohort, sid, "labels")
        cortex, wm, ventricles = np.isin(labels, CORTICAL), labels == ID["white_matter"], labels == ID["ventricles"]

        tissues = (wm, cortex, ventricles)
        w, g, c = (_load(cohort, sid, "t1")[m].mean() for m in tissues)
        assert w > 1.1 * g and g > 1.1 * c
        w, g, c = (_load(cohort, sid, "t2")[m].mean() for m in tissues)
        assert c > 1.3 * g and g > 1.1 * w
        _, g, c = (_load(cohort, sid, "flair")[m].mean() for m in tissues)
        assert c < 0.8 * g
        # PET: cortical grey matter about three times white matter. Partial volume at
        # 4 mm and the 6-7 mm PET blur lower the mean contrast, so compare the upper
        # part of the cortex with the deep white matter.
        pet = _load(cohort, sid, "pet")
        deep_wm = ndi.binary_erosion(wm)
        assert 2.0 < np.percentile(pet[cortex], 90) / np.median(pet[deep_wm]) < 4.0
        ct = _load(cohort, sid, "ct")
        assert ct[labels == ID["skull"]].mean() > 500.0
        assert 20.0 < ct[(labels >= 1) & (labels <= ID["white_matter"])].mean() < 60.0


def test_frontal_pet_declines_with_the_true_slope(cohort: Path) -> None:
    rows = [r for r in _participants(cohort) if r["diagnosis"] == "CN"]
    assert len(rows) >= 4
    age = np.array([float(r["age"]) for r in rows])
    assert age.max() - age.min() > 20.0
    truth = json.loads((cohort / "cohort.json").read_text(encoding="utf-8"))["parameters"]["pet"]
    slope = truth["age_slope_per_year"]["frontal"]
    assert slope < 0 and truth["age_slope_per_year"]["occipital"] == 0.0

    def column(region: str) -> np.ndarray:
        return np.array([float(r[f"pet_{region}"]) for r in rows])

    # Ratios to an unaffected region cancel each subject's injected-dose scale.
    frontal = _relative_slope(age, column("frontal") / column("occipital"))
    occipital = _relative_slope(age, column("occipital") / column("cerebellum"))
    assert frontal == pytest.approx(slope, rel=0.3)
    assert abs(occipital) < 0.3 * abs(slope)

    # The same effect measured on the written (noisy) PET images.
    measured = []
    for r in rows:
        labels = _load(cohort, r["participant_id"], "labels")
        pet = _load(cohort, r["participant_id"], "pet")
        measured.append(pet[labels == ID["frontal"]].mean() / pet[labels == ID["occipital"]].mean())
    assert _relative_slope(age, np.array(measured)) == pytest.approx(slope, rel=0.3)


def test_ventricles_grow_with_age(cohort: Path) -> None:
    rows = _participants(cohort)
    age = [float(r["age"]) for r in rows]
    volume_ml = [(_load(cohort, r["participant_id"], "labels") == ID["ventricles"]).sum()
                 * 64.0 / 1000.0 for r in rows]
    assert stats.spearmanr(age, volume_ml).statistic > 0.6
    assert 5.0 < min(volume_ml) and max(volume_ml) < 80.0  # millilitres, as in adults


def test_subjects_are_deterministic_and_distinct(cohort: Path) -> None:
    a = generate_subject(2, SEED, "small")
    b = generate_subject(2, SEED, "small")
    for name in a.volumes:
        np.testing.assert_array_equal(a.volumes[name].data, b.volumes[name].data)
    # What was written is that subject, bit for bit.
    np.testing.assert_array_equal(_load(cohort, "sub-003", "t1"), a.volumes["t1"].data)
    np.testing.assert_array_equal(_load(cohort, "sub-003", "pet_clean"), a.clean["pet"].data)
    other = generate_subject(3, SEED, "small")
    reseeded = generate_subject(2, SEED + 1, "small")
    for name in ("t1", "pet", "ct"):
        assert not np.array_equal(a.volumes[name].data, other.volumes[name].data)
        assert not np.array_equal(a.volumes[name].data, reseeded.volumes[name].data)
    row = _participants(cohort)[2]
    assert (float(row["age"]), row["sex"], row["diagnosis"]) == (a.age, a.sex, a.diagnosis)
    assert float(row["pet_frontal"]) == pytest.approx(a.region_pet["frontal"], rel=1e-4)


def test_noise_floor_psnr_matches_the_written_noise(cohort: Path) -> None:
    subject = generate_subject(0, SEED, "small")
    psnr = noise_floor_psnr(subject)
    assert set(psnr) == set(MODALITIES_WRITTEN)
    labels = _load(cohort, "sub-001", "labels")
    head = labels > 0
    for modality, value in psnr.items():
        assert np.isfinite(value) and 15.0 < value < 60.0, (modality, value)
        clean = _load(cohort, "sub-001", f"{modality}_clean")[head].astype(np.float64)
        noisy = _load(cohort, "sub-001", modality)[head].astype(np.float64)
        rmse = np.sqrt(np.mean((noisy - clean) ** 2))
        assert value == pytest.approx(20 * np.log10(np.ptp(clean) / rmse), abs=1e-3)
    # CT noise in the brain equals each kernel's documented level (sharp > standard > smooth).
    drawn = json.loads((cohort / "cohort.json").read_text(encoding="utf-8"))["subjects"]["sub-001"]["ct_noise_hu"]
    brain = (labels >= 1) & (labels <= ID["white_matter"])
    for kernel in ("ct", "ct-sharp", "ct-smooth"):
        noise = _load(cohort, "sub-001", kernel) - _load(cohort, "sub-001", f"{kernel}_clean")
        assert noise[brain].std() == pytest.approx(drawn[kernel], rel=0.15)
    assert drawn["ct-sharp"] > drawn["ct"] > drawn["ct-smooth"]


def test_lowres_t1_has_thick_slices(cohort: Path) -> None:
    t1 = _load(cohort, "sub-001", "t1_clean")
    low = _load(cohort, "sub-001", "t1-lowres_clean")

    def roughness(image: np.ndarray, axis: int) -> float:
        return float(np.abs(np.diff(image, axis=axis)).mean())

    # Downsampled 1.5x in-plane and 3x through-plane: z loses the most detail.
    assert roughness(low, 2) < 0.6 * roughness(t1, 2)
    assert roughness(low, 2) / roughness(t1, 2) < roughness(low, 0) / roughness(t1, 0)


def test_lesions_show_in_each_modality() -> None:
    plain = generate_subject(5, SEED, "small")
    sick = generate_subject(5, SEED, "small", lesion="both")
    assert (plain.age, plain.diagnosis) == (sick.age, sick.diagnosis)
    assert not np.isin(plain.volumes["labels"].data, [16, 17, 18]).any()
    labels = sick.volumes["labels"].data
    tumour, oedema, wmh, wm = (labels == ID[n] for n in ("tumour", "oedema", "wmh", "white_matter"))
    assert tumour.sum() > 10 and oedema.sum() > 10 and wmh.sum() > 5
    clean = {m: v.data for m, v in sick.clean.items()}
    assert clean["t1ce"][tumour].max() > 1.5 * clean["t1ce"][wm].mean()  # enhancing rim
    assert clean["t1ce"][tumour].max() > 1.5 * clean["t1"][tumour].max()  # gadolinium
    assert clean["flair"][oedema].mean() > 1.5 * clean["flair"][wm].mean()
    assert clean["flair"][wmh].mean() > 1.3 * clean["flair"][wm].mean()
    assert clean["t2"][wmh].mean() > 1.3 * clean["t2"][wm].mean()
    # The necrotic core is cold on PET, the rim hot.
    pet = clean["pet"][tumour]
    assert pet.min() < 0.7 * pet.max()


def test_a_tumour_changes_nothing_beyond_its_reach() -> None:
    plain = generate_subject(5, SEED, "small")
    sick = generate_subject(5, SEED, "small", lesion="tumour")
    radius = sick.params["tumour"]["radius_mm"]
    centre = np.argwhere(sick.volumes["labels"].data == ID["tumour"]).mean(axis=0)
    grid = np.indices(PRESETS["small"].shape, dtype=np.float64)
    distance_mm = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))) * 4.0
    # Mass effect reaches 3 radii; image blurs (PET, t1-lowres, CT kernels) < 25 mm.
    far = distance_mm > 3.0 * radius + 25.0
    near = distance_mm < radius
    brain = plain.volumes["brainmask"].data > 0
    assert far.sum() > 10_000
    for modality in MODALITIES_WRITTEN:
        a, b = plain.clean[modality].data, sick.clean[modality].data
        np.testing.assert_allclose(a[far], b[far], rtol=1e-5, atol=1e-3, err_msg=modality)
        # CT sees a tumour as soft tissue a few HU from white matter.
        change = 5.0 if modality.startswith("ct") else 0.2 * np.ptp(a[brain])
        assert np.abs(a[near] - b[near]).max() > change, modality


def test_user_mistakes_raise_user_error(cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not empty"):
        write_cohort(cohort, 1, SEED)
    with pytest.raises(UserError, match="preset"):
        generate_subject(0, preset="huge")
    with pytest.raises(UserError, match="lesion"):
        generate_subject(0, lesion="cyst")
    with pytest.raises(UserError, match="fraction"):
        write_cohort(tmp_path / "new", 2, lesion_fraction=1.5)
    (tmp_path / "keep.txt").write_text("mine")
    out = write_cohort(tmp_path, 1, SEED, overwrite=True, lesion_fraction=1.0)
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"
    assert _participants(out)[0]["lesion"] == "tumour"
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
