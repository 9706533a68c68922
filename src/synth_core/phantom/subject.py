"""One phantom subject: demographics, anatomy, every modality, and its ground truth."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synth_core.errors import UserError
from synth_core.phantom.anatomy import build_anatomy
from synth_core.phantom.contrast import pet_age_key, render
from synth_core.phantom.parameters import (
    AGE_RANGE_YEARS,
    DIAGNOSIS_PROBABILITY,
    DIAGNOSIS_SEVERITY,
    LABEL_IDS,
    LESION_KINDS,
    MODALITIES_WRITTEN,
    PET_REGIONS,
    PRESETS,
)
from synth_core.phantom.template import template_maps
from synth_core.volume import Volume


@dataclass
class PhantomSubject:
    """A generated subject.

    Attributes:
        subject_id: "sub-001" for index 0.
        age: years, in [55, 95]. sex: "F" or "M". diagnosis: "CN", "MCI" or "AD".
        volumes: every modality of ``MODALITIES_WRITTEN`` (noisy), plus "brainmask"
            (0/1) and "labels" (``LABELS`` ids), all on one grid.
        clean: the noise-free twin of each modality.
        region_pet: true mean FDG uptake (SUV) of the noise-free PET per region of
            ``PET_REGIONS``; NaN for a region absent from the labels.
        params: every drawn parameter (JSON-serialisable).
        counterfactual_pet: per counterfactual age (years), the (noisy, clean) PET of the
            same subject (same anatomy, scanner and noise field) with only the age-driven
            uptake moved to that age; empty unless ``pet_ages`` was given.
    """

    subject_id: str
    age: float
    sex: str
    diagnosis: str
    volumes: dict[str, Volume]
    clean: dict[str, Volume]
    region_pet: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    counterfactual_pet: dict[float, tuple[Volume, Volume]] = field(default_factory=dict)


def _draw_demographics(rng: np.random.Generator) -> tuple[float, str, str, float]:
    """(age years, sex, diagnosis, AD-type severity); P(AD) rises with age."""
    low, high = AGE_RANGE_YEARS
    age = float(rng.uniform(low, high))
    sex = "F" if rng.random() < 0.5 else "M"
    p = DIAGNOSIS_PROBABILITY
    p_ad = p["ad_at_55"] + (p["ad_at_95"] - p["ad_at_55"]) * (age - low) / (high - low)
    draw = rng.random()
    diagnosis = "AD" if draw < p_ad else "MCI" if draw < p_ad + p["mci"] else "CN"
    severity = float(rng.uniform(*DIAGNOSIS_SEVERITY[diagnosis]))
    return round(age, 1), sex, diagnosis, severity


def region_means(image: np.ndarray, labels: np.ndarray,
                 regions: tuple[str, ...] = PET_REGIONS) -> dict[str, float]:
    """Mean of ``image`` over each named region of ``labels`` (NaN when a region is empty)."""
    flat_labels = labels.ravel().astype(np.int64)
    size = max(LABEL_IDS.values()) + 1
    sums = np.bincount(flat_labels, weights=image.ravel().astype(np.float64), minlength=size)
    counts = np.bincount(flat_labels, minlength=size)
    return {name: float(sums[LABEL_IDS[name]] / counts[LABEL_IDS[name]])
            if counts[LABEL_IDS[name]] else float("nan") for name in regions}


def check_pet_ages(ages: tuple[float, ...]) -> tuple[float, ...]:
    """The counterfactual ages, checked against the phantom's age range (years)."""
    low, high = AGE_RANGE_YEARS
    for age in ages:
        if not (np.isfinite(age) and low <= age <= high):
            raise UserError(f"counterfactual age {age:g} is outside the phantom's age range "
                            f"{low:g}-{high:g} years; give ages in that range")
    if len(set(ages)) != len(ages):
        raise UserError(f"counterfactual ages repeat: {', '.join(f'{a:g}' for a in ages)}; "
                        "give each age once")
    return tuple(float(a) for a in ages)


def _check(index: int, seed: int, preset: str, lesion: str | None) -> None:
    if preset not in PRESETS:
        raise UserError(f"unknown phantom preset {preset!r}; use one of {', '.join(PRESETS)}")
    if int(index) < 0 or int(seed) < 0:
        raise UserError(f"phantom index and seed must be >= 0, got index={index} seed={seed}")
    if lesion is not None and lesion not in LESION_KINDS:
        raise UserError(f"unknown lesion kind {lesion!r}; use one of {', '.join(LESION_KINDS)} "
                        "or none")


def generate_subject(index: int, seed: int = 0, preset: str = "small", *,
                     lesion: str | None = None, clean: bool = False,
                     pet_ages: tuple[float, ...] = ()) -> PhantomSubject:
    """Generate subject ``index`` of the cohort drawn with ``seed``.

    Deterministic per (seed, index): the same pair gives identical arrays. Demographics,
    anatomy, scanner and noise come from separate random streams, so adding a lesion
    ("tumour", "wmh" or "both") changes nothing else about the subject.

    Args:
        index: 0-based subject number (subject_id is ``sub-{index + 1:03d}``).
        seed: cohort seed (>= 0).
        preset: "small" (4 mm, 48 x 64 x 48), "full" (2 mm, 96 x 112 x 96) or "fine"
            (1 mm, 192 x 224 x 192, from the 1 mm template).
        lesion: None, "tumour", "wmh" or "both".
        clean: when True, ``volumes`` holds the noise-free images too (``clean`` always does).
        pet_ages: counterfactual ages (years, within 55-95) for ``counterfactual_pet``.

    Returns:
        A ``PhantomSubject`` whose volumes share the preset's RAS+ affine.
    """
    _check(index, seed, preset, lesion)
    pet_ages = check_pet_ages(tuple(pet_ages))
    maps = template_maps(preset)
    streams = np.random.SeedSequence([int(seed), int(index)]).spawn(4)
    demographic_rng, lesion_rng, scanner_rng, noise_rng = (
        np.random.default_rng(s) for s in streams)
    age, sex, diagnosis, severity = _draw_demographics(demographic_rng)
    anatomy = build_anatomy(maps, age, sex, severity, demographic_rng, lesion_rng, lesion)
    clean_images, noisy_images, scanner = render(
        anatomy.fractions, anatomy.parcel, maps.preset.spacing_mm, age, severity,
        scanner_rng, noise_rng, pet_ages)

    subject_id = f"sub-{int(index) + 1:03d}"
    affine = maps.preset.affine

    def volume(data: np.ndarray, modality: str | None, name: str) -> Volume:
        meta = {"phantom": {"subject_id": subject_id, "seed": int(seed), "index": int(index),
                            "preset": preset, "image": name},
                "description": f"napari-modality-synth phantom {name}"}
        return Volume(data, affine.copy(), modality, meta)

    clean_volumes = {m: volume(clean_images[m], m, m) for m in MODALITIES_WRITTEN}
    source = clean_images if clean else noisy_images
    volumes = {m: volume(source[m], m, m) for m in MODALITIES_WRITTEN}
    volumes["brainmask"] = volume(anatomy.brainmask.astype(np.float32), None, "brainmask")
    volumes["labels"] = volume(anatomy.labels.astype(np.float32), None, "labels")
    params = {"index": int(index), "seed": int(seed), "preset": preset, "age": age, "sex": sex,
              "diagnosis": diagnosis, "severity": severity, "lesion": lesion or "none",
              **anatomy.params, **scanner}
    counterfactual = {}
    for pet_age in pet_ages:
        key = pet_age_key(pet_age)
        noisy_pet = volume(source[key], "pet", key)
        noisy_pet.metadata["phantom"]["counterfactual_age"] = pet_age
        clean_pet = volume(clean_images[key], "pet", key)
        clean_pet.metadata["phantom"]["counterfactual_age"] = pet_age
        counterfactual[pet_age] = (noisy_pet, clean_pet)
    return PhantomSubject(
        subject_id=subject_id, age=age, sex=sex, diagnosis=diagnosis, volumes=volumes,
        clean=clean_volumes, region_pet=region_means(clean_images["pet"], anatomy.labels),
        params=params, counterfactual_pet=counterfactual)


def noise_floor_psnr(subject: PhantomSubject) -> dict[str, float]:
    """PSNR (dB) of each noisy modality against its clean twin, inside the head.

    PSNR = 20 log10(R / RMSE), R the range of the clean image in the head (labels > 0):
    the best score any method can reach when evaluated against the noisy images.
    """
    head = subject.volumes["labels"].data > 0
    result = {}
    for modality, clean in subject.clean.items():
        reference = clean.data[head].astype(np.float64)
        error = subject.volumes[modality].data[head].astype(np.float64) - reference
        rmse = float(np.sqrt(np.mean(error**2)))
        span = float(reference.max() - reference.min())
        result[modality] = float("inf") if rmse == 0 else 20.0 * np.log10(span / rmse)
    return result


def bench_subject(preset: str = "small") -> float:
    """Seconds to generate one subject of ``preset`` with the template already cached."""
    _check(0, 0, preset, None)
    template_maps(preset)
    start = time.perf_counter()
    generate_subject(0, 0, preset)
    return time.perf_counter() - start
