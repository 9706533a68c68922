"""Image formation: tissue fractions -> MR, CT and FDG-PET images, clean and noisy.

Every image is linear in the tissue fractions (partial volume): I(x) = sum_t f_t(x) s_t,
with s_t the tissue's signal in that modality, from the MR signal equations
(``parameters.MR_SEQUENCES``), Hounsfield units or FDG uptake. Scanner effects follow:
a smooth multiplicative bias and Rician noise for MR; reconstruction kernels and
Gaussian noise for CT; resolution blur, count-like noise (variance proportional to the
signal) and a global dose scale for PET.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from synth_core.phantom.fields import random_smooth_field
from synth_core.phantom.parameters import (
    AGE_REFERENCE_YEARS,
    CT_HU,
    CT_JITTER,
    CT_KERNELS,
    GADOLINIUM_MM,
    GADOLINIUM_R1,
    LABEL_IDS,
    LOWRES_FACTORS,
    MR_GM_SIGNAL,
    MR_JITTER,
    MR_MODALITIES,
    MR_NOISE_FRACTION,
    MR_SEQUENCES,
    MR_TISSUE,
    PET_AD_EFFECT,
    PET_AGE_SLOPE,
    PET_DOSE_SD,
    PET_FWHM_MM,
    PET_GM_SUV,
    PET_NOISE,
    PET_REGION_BASELINE,
    PET_UPTAKE,
    TISSUE_INDEX,
    TISSUES,
)

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _tissue_array(values: dict[str, float]) -> np.ndarray:
    return np.array([values[name] for name in TISSUES], dtype=np.float64)


def mr_signal(sequence: dict[str, Any], t1_ms: np.ndarray, t2_ms: np.ndarray,
              pd: np.ndarray) -> np.ndarray:
    """Steady-state signal of each tissue (arrays over tissues) for one sequence."""
    e1 = np.exp(-float(sequence["tr_ms"]) / t1_ms)
    decay = np.exp(-float(sequence["te_ms"]) / t2_ms)
    kind = sequence["kind"]
    if kind == "spgr":
        flip = np.deg2rad(float(sequence["flip_deg"]))
        return pd * np.sin(flip) * (1.0 - e1) / (1.0 - np.cos(flip) * e1) * decay
    if kind == "spin_echo":
        return pd * (1.0 - e1) * decay
    if kind == "flair":
        inversion = np.exp(-float(sequence["ti_ms"]) / t1_ms)
        return pd * np.abs(1.0 - 2.0 * inversion + e1) * decay
    raise ValueError(f"unknown MR sequence kind {kind!r}")


def _relaxation() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t1, t2, pd = (np.array([MR_TISSUE[n][k] for n in TISSUES]) for k in range(3))
    return t1, t2, pd


def _with_gadolinium(t1_ms: np.ndarray) -> np.ndarray:
    """1/T1' = 1/T1 + r1 C, with C per tissue (mM) and r1 in 1/(mM s)."""
    concentration = np.array([GADOLINIUM_MM.get(n, 0.0) for n in TISSUES])
    return 1.0 / (1.0 / t1_ms + GADOLINIUM_R1 * concentration / 1000.0)


def mr_tissue_signals(modality: str, t1_ms: np.ndarray, t2_ms: np.ndarray, pd: np.ndarray,
                      sequence: dict[str, Any] | None = None) -> np.ndarray:
    """Per-tissue intensity of an MR modality, scaled so nominal grey matter reads 1000."""
    nominal = MR_SEQUENCES[modality]
    sequence = nominal if sequence is None else sequence
    t1_gd = _with_gadolinium(t1_ms) if modality == "t1ce" else t1_ms
    nt1, nt2, npd = _relaxation()
    reference = mr_signal(nominal, nt1, nt2, npd)[TISSUE_INDEX["gm"]]
    return mr_signal(sequence, t1_gd, t2_ms, pd) * (MR_GM_SIGNAL / reference)


def nominal_contrasts() -> dict[str, dict[str, float]]:
    """Each modality's nominal intensity of every pure tissue (MR a.u., CT HU, PET SUV)."""
    t1, t2, pd = _relaxation()
    table = {m: mr_tissue_signals(m, t1, t2, pd) for m in MR_MODALITIES}
    table["ct"] = _tissue_array(CT_HU)
    table["pet"] = _tissue_array(PET_UPTAKE) * PET_GM_SUV
    return {m: {n: round(float(v), 3) for n, v in zip(TISSUES, values, strict=True)}
            for m, values in table.items()}


def pet_region_multipliers(age: float, severity: float) -> np.ndarray:
    """FDG multiplier per parcel id: baseline (1 + slope (age - 55)) (1 + effect severity).

    Every factor scales all tissue of the parcel, so the age factor lowers the white matter,
    CSF and ventricles inside the frontal and anterior-cingulate parcels as much as their
    cortex. Cortical decline alone would be the closer physiology; the bundled checkpoints'
    held-out figures are pinned to this model, so it stays until they are re-scored (see
    docs/architecture.md, "The phantom's counterfactual age").
    """
    table = np.ones(max(LABEL_IDS.values()) + 1, dtype=np.float32)
    for name, key in LABEL_IDS.items():
        table[key] = (PET_REGION_BASELINE.get(name, 1.0)
                      * (1.0 + PET_AGE_SLOPE.get(name, 0.0) * (age - AGE_REFERENCE_YEARS))
                      * (1.0 + PET_AD_EFFECT.get(name, 0.0) * severity))
    return table


def pet_age_key(age: float) -> str:
    """Key of a counterfactual PET in ``render``'s images: "pet@age-60" for 60 years."""
    return f"pet@age-{age:g}"


def rician(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """|clean + n_re + i n_im|, n ~ N(0, sigma^2): the magnitude of complex Gaussian noise."""
    real = clean + np.float32(sigma) * rng.standard_normal(clean.shape, dtype=np.float32)
    imaginary = np.float32(sigma) * rng.standard_normal(clean.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary)


def _unit(noise: np.ndarray) -> np.ndarray:
    return noise / np.float32(max(float(noise.std()), 1e-12))


def _lowres(image: np.ndarray, shape: tuple[int, ...], sigma: np.ndarray) -> np.ndarray:
    """Blur by the slice profile and sample the thick-slice grid (grid edges aligned)."""
    blurred = ndi.gaussian_filter(image, sigma)
    factors = [lo / hi for lo, hi in zip(shape, image.shape, strict=True)]
    return ndi.zoom(blurred, factors, order=1, mode="nearest", grid_mode=True)


def _back(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    factors = [hi / lo for hi, lo in zip(shape, image.shape, strict=True)]
    return ndi.zoom(image, factors, order=1, mode="nearest", grid_mode=True)


def render(fractions: np.ndarray, parcel: np.ndarray, spacing_mm: float, age: float,
           severity: float, rng: np.random.Generator, noise_rng: np.random.Generator,
           pet_ages: tuple[float, ...] = ()) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """All modalities of one subject.

    Args:
        fractions: (T, X, Y, Z) tissue fractions in ``TISSUES`` order.
        parcel: (X, Y, Z) region ids (PET multipliers apply per parcel).
        spacing_mm: isotropic voxel size.
        age: years; severity: AD-type severity (0 CN, ~0.5 MCI, ~1 AD).
        rng: scanner draws (contrast jitter, bias, dose, resolution); noise_rng: noise.
        pet_ages: counterfactual ages (years): each adds a PET under ``pet_age_key(age)``
            to both dicts, drawn with the same anatomy, scanner and noise field.

    Returns:
        (clean, noisy, params): float32 (X, Y, Z) images keyed by modality, and draws.
    """
    shape = fractions.shape[1:]
    flat = fractions.reshape(len(TISSUES), -1)
    t1, t2, pd = _relaxation()
    # A subject's tissues differ a little from the nominal values (contrast jitter).
    t1 = t1 * np.exp(MR_JITTER["relaxation_sd"] * rng.standard_normal(len(TISSUES)))
    t2 = t2 * np.exp(MR_JITTER["relaxation_sd"] * rng.standard_normal(len(TISSUES)))
    pd = pd * np.exp(MR_JITTER["pd_sd"] * rng.standard_normal(len(TISSUES)))
    rows, gains = [], {}
    for modality in MR_MODALITIES:
        # TI stays as set: protocols choose it to null CSF.
        sequence = {k: (v * float(np.exp(MR_JITTER["sequence_sd"] * rng.standard_normal()))
                        if isinstance(v, float) and k != "ti_ms" else v)
                    for k, v in MR_SEQUENCES[modality].items()}
        gains[modality] = float(np.exp(MR_JITTER["gain_sd"] * rng.standard_normal()))
        rows.append(mr_tissue_signals(modality, t1, t2, pd, sequence) * gains[modality])
    hu = _tissue_array(CT_HU) + CT_JITTER["soft_tissue_hu_sd"] * rng.standard_normal(len(TISSUES))
    hu[TISSUE_INDEX["bone"]] = CT_HU["bone"] + CT_JITTER["bone_hu_sd"] * rng.standard_normal()
    rows.append(hu + 1000.0)  # air (all fractions zero) is -1000 HU
    rows.append(_tissue_array(PET_UPTAKE))
    images = (np.asarray(rows, dtype=np.float32) @ flat).reshape((len(rows),) + shape)

    clean: dict[str, np.ndarray] = {}
    noisy: dict[str, np.ndarray] = {}
    params: dict[str, Any] = {"mr_gain": gains, "ct_bone_hu": float(hu[TISSUE_INDEX["bone"]])}
    sigmas = {}
    for i, modality in enumerate(MR_MODALITIES):
        bias = np.exp(random_smooth_field(rng, shape, 3, MR_JITTER["bias_sd"]))
        clean[modality] = images[i] * bias
        sigmas[modality] = (MR_NOISE_FRACTION[modality] * MR_GM_SIGNAL * gains[modality]
                            * float(np.exp(MR_JITTER["noise_sd"] * rng.standard_normal())))
        noisy[modality] = rician(clean[modality], sigmas[modality], noise_rng)

    # t1-lowres: the same T1 acquired with thick slices, then put back on the grid.
    factors = np.asarray(LOWRES_FACTORS)
    low_shape = tuple(int(np.ceil(n / f)) for n, f in zip(shape, factors, strict=True))
    low = _lowres(clean["t1"], low_shape, factors / _FWHM_PER_SIGMA)
    sigmas["t1-lowres"] = sigmas["t1"] * MR_NOISE_FRACTION["t1-lowres"] / MR_NOISE_FRACTION["t1"]
    clean["t1-lowres"] = _back(low, shape)
    noisy["t1-lowres"] = _back(rician(low, sigmas["t1-lowres"], noise_rng), shape)
    params["mr_noise_sigma"] = sigmas

    # CT: one noise realisation seen through three reconstruction kernels.
    ct = images[len(MR_MODALITIES)] - np.float32(1000.0)
    white = noise_rng.standard_normal(shape, dtype=np.float32)
    level = {k: v["noise_hu"] * float(np.exp(CT_JITTER["noise_sd"] * rng.standard_normal()))
             for k, v in CT_KERNELS.items()}
    clean["ct"] = ct
    noisy["ct"] = ct + level["ct"] * _unit(
        ndi.gaussian_filter(white, CT_KERNELS["ct"]["noise_sigma_vox"]))
    smooth = CT_KERNELS["ct-smooth"]["sigma_vox"]
    clean["ct-smooth"] = ndi.gaussian_filter(ct, smooth)
    noisy["ct-smooth"] = clean["ct-smooth"] + level["ct-smooth"] * _unit(
        ndi.gaussian_filter(white, smooth))
    sharp, amount = (CT_KERNELS["ct-sharp"][k] for k in ("unsharp_sigma_vox", "unsharp_amount"))
    clean["ct-sharp"] = ct + np.float32(amount) * (ct - ndi.gaussian_filter(ct, sharp))
    noisy["ct-sharp"] = clean["ct-sharp"] + level["ct-sharp"] * _unit(
        white + np.float32(amount) * (white - ndi.gaussian_filter(white, sharp)))
    params["ct_noise_hu"] = level

    # FDG PET in SUV. Counterfactual ages reuse every draw (dose, resolution, the noise
    # field): only the age-driven uptake differs between them.
    dose = float(np.exp(PET_DOSE_SD * rng.standard_normal()))
    fwhm = float(rng.uniform(*PET_FWHM_MM))
    variance_scale = PET_NOISE["relative_at_gm"] ** 2 * PET_GM_SUV
    floor = PET_NOISE["floor_fraction"] * PET_GM_SUV
    counts = _unit(ndi.gaussian_filter(noise_rng.standard_normal(shape, dtype=np.float32),
                                       PET_NOISE["correlation_sigma_vox"]))
    for key, pet_age in ((("pet", age),) + tuple((pet_age_key(a), a) for a in pet_ages)):
        uptake = images[-1] * pet_region_multipliers(pet_age, severity)[parcel]
        pet = ndi.gaussian_filter(uptake * np.float32(PET_GM_SUV * dose),
                                  fwhm / _FWHM_PER_SIGMA / spacing_mm)
        clean[key] = pet
        noisy[key] = np.maximum(
            pet + np.sqrt(np.float32(variance_scale) * (np.maximum(pet, 0.0) + np.float32(floor)))
            * counts, 0.0)
    params.update(pet_dose=dose, pet_fwhm_mm=fwhm)
    clean = {k: v.astype(np.float32, copy=False) for k, v in clean.items()}
    noisy = {k: v.astype(np.float32, copy=False) for k, v in noisy.items()}
    return clean, noisy, params
