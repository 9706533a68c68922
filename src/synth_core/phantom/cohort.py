"""Writing a phantom cohort to disk: BIDS-like folders, participants.tsv, cohort.json.

Layout (see DESIGN.md):

    OUT/participants.tsv       participant_id, age, sex, diagnosis, lesion, pet_<region>...
    OUT/cohort.json            preset, grid, labels, the generator's true parameters, per-subject draws
    OUT/labels.json            LABELS
    OUT/sub-001/sub-001_<mod>.nii.gz        every modality, plus _brainmask (uint8), _labels (int16)
    OUT/sub-001/sub-001_<mod>_clean.nii.gz  with clean=True
    OUT/sub-001/age-60/sub-001_pet.nii.gz   with pet_ages=(60, ...): the counterfactual PET
                                            (and _pet_clean with clean=True)

Every file is written to a temporary name in its folder and renamed into place, and a
new cohort is assembled in a hidden sibling folder that is renamed to OUT at the end, so
an interruption never leaves a partial file behind.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from synth_core.errors import UserError
from synth_core.phantom.contrast import nominal_contrasts
from synth_core.phantom.parameters import (
    AGE_RANGE_YEARS,
    AGE_REFERENCE_YEARS,
    ATROPHY,
    CT_HU,
    CT_JITTER,
    CT_KERNELS,
    DEFORMATION,
    DIAGNOSIS_PROBABILITY,
    DIAGNOSIS_SEVERITY,
    GADOLINIUM_MM,
    GADOLINIUM_R1,
    GREY_REGIONS,
    HEAD_LAYERS_MM,
    LABELS,
    LESIONS,
    LOWRES_FACTORS,
    MODALITIES_WRITTEN,
    MR_GM_SIGNAL,
    MR_JITTER,
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
    PET_REGIONS,
    PET_UPTAKE,
    PRESETS,
    TISSUES,
)
from synth_core.phantom.subject import PhantomSubject, check_pet_ages, generate_subject

_DTYPES = {"brainmask": np.uint8, "labels": np.int16}


def package_version() -> str:
    try:
        return metadata.version("napari-modality-synth")
    except metadata.PackageNotFoundError:
        return "unknown"


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary sibling of ``path``, then rename it to ``path``."""
    # nibabel picks the format from the name, so the temporary keeps the suffixes.
    tmp = path.with_name(f".{uuid.uuid4().hex[:12]}.tmp{''.join(path.suffixes)}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, description: str) -> None:
    """Write one volume as NIfTI-1 (qform and sform = affine, mm), atomically."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header["descrip"] = description.encode("ascii")[:79]
    _replace_atomically(path, lambda tmp: nib.save(image, tmp))


def write_text(path: Path, text: str) -> None:
    _replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def cohort_parameters() -> dict[str, Any]:
    """The generator's fixed parameters, as written to ``cohort.json`` (JSON-serialisable).

    Includes the true PET age slopes (fraction per year relative to age 55), the AD
    effect per region, the nominal tissue contrast of every modality, and noise levels.
    """
    return copy.deepcopy({
        "age_range_years": list(AGE_RANGE_YEARS),
        "age_reference_years": AGE_REFERENCE_YEARS,
        "diagnosis_probability": DIAGNOSIS_PROBABILITY,
        "diagnosis_severity": {k: list(v) for k, v in DIAGNOSIS_SEVERITY.items()},
        "pet": {
            "gm_suv": PET_GM_SUV,
            "uptake_relative_to_gm": PET_UPTAKE,
            "region_baseline": PET_REGION_BASELINE,
            "age_slope_per_year": {r: PET_AGE_SLOPE.get(r, 0.0) for r in GREY_REGIONS},
            "age_slope_applies_to": "all tissue of the region's parcel",
            "ad_effect": {r: PET_AD_EFFECT.get(r, 0.0) for r in GREY_REGIONS},
            "mci_severity": list(DIAGNOSIS_SEVERITY["MCI"]),
            "fwhm_mm": list(PET_FWHM_MM),
            "dose_sd": PET_DOSE_SD,
            "noise": PET_NOISE,
            "region_pet_definition": ("mean of the noise-free (blurred) PET over the region's "
                                      "label, SUV, including the subject's pet_dose scale"),
        },
        "mr": {
            "tissues_t1_t2_ms_pd": {k: list(v) for k, v in MR_TISSUE.items()},
            "sequences": MR_SEQUENCES,
            "gadolinium_r1_per_mM_s": GADOLINIUM_R1,
            "gadolinium_mM": GADOLINIUM_MM,
            "gm_signal": MR_GM_SIGNAL,
            "jitter": MR_JITTER,
            "noise": {"kind": "rician", "sigma_fraction_of_gm": MR_NOISE_FRACTION},
            "lowres_factors_xyz": list(LOWRES_FACTORS),
        },
        "ct": {"hu": CT_HU, "jitter": CT_JITTER, "kernels": CT_KERNELS},
        "contrasts": nominal_contrasts(),
        "atrophy": ATROPHY,
        "deformation": DEFORMATION,
        "head_layers_mm": HEAD_LAYERS_MM,
        "lesions": LESIONS,
        "tissues": list(TISSUES),
    })


def _write_subject(folder: Path, subject: PhantomSubject, clean: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sid = subject.subject_id
    for pet_age, (noisy, noise_free) in subject.counterfactual_pet.items():
        age_dir = folder / f"age-{pet_age:g}"
        age_dir.mkdir(exist_ok=True)
        description = f"napari-modality-synth phantom pet at age {pet_age:g}"
        write_nifti(age_dir / f"{sid}_pet.nii.gz", noisy.data.astype(np.float32), noisy.affine,
                    description)
        if clean:
            write_nifti(age_dir / f"{sid}_pet_clean.nii.gz", noise_free.data.astype(np.float32),
                        noise_free.affine, description + " clean")
    for name, volume in subject.volumes.items():
        dtype = _DTYPES.get(name, np.float32)
        data = np.rint(volume.data) if name in _DTYPES else volume.data
        write_nifti(folder / f"{sid}_{name}.nii.gz", data.astype(dtype), volume.affine,
                    f"napari-modality-synth phantom {name}")
    if clean:
        for name, volume in subject.clean.items():
            write_nifti(folder / f"{sid}_{name}_clean.nii.gz", volume.data.astype(np.float32),
                        volume.affine, f"napari-modality-synth phantom {name} clean")


def _lesion_plan(n_subjects: int, seed: int, lesion_fraction: float,
                 wmh_fraction: float) -> list[str | None]:
    """Which subjects get a tumour and which white-matter hyperintensities.

    round(fraction * n) subjects each, chosen by seeded permutations (independent for
    the two kinds, so some subjects may get both).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), n_subjects, 7919]))
    tumour = set(rng.permutation(n_subjects)[: round(lesion_fraction * n_subjects)].tolist())
    wmh = set(rng.permutation(n_subjects)[: round(wmh_fraction * n_subjects)].tolist())
    kinds = {(True, True): "both", (True, False): "tumour", (False, True): "wmh"}
    return [kinds.get((i in tumour, i in wmh)) for i in range(n_subjects)]


def _participants_tsv(subjects: list[dict[str, Any]]) -> str:
    header = ["participant_id", "age", "sex", "diagnosis", "lesion"]
    header += [f"pet_{region}" for region in PET_REGIONS]
    lines = ["\t".join(header)]
    for row in subjects:
        values = [row["participant_id"], f"{row['age']:.1f}", row["sex"], row["diagnosis"],
                  row["lesion"]]
        values += ["n/a" if np.isnan(row["pet"][r]) else f"{row['pet'][r]:.5f}"
                   for r in PET_REGIONS]
        lines.append("\t".join(values))
    return "\n".join(lines) + "\n"


def _check_arguments(out: Path, n_subjects: int, seed: int, preset: str,
                     lesion_fraction: float, wmh_fraction: float, overwrite: bool) -> None:
    if preset not in PRESETS:
        raise UserError(f"unknown phantom preset {preset!r}; use one of {', '.join(PRESETS)}")
    if int(n_subjects) < 1:
        raise UserError(f"the phantom needs at least one subject, got {n_subjects}")
    if int(seed) < 0:
        raise UserError(f"the phantom seed must be >= 0, got {seed}")
    for name, value in (("lesion_fraction", lesion_fraction), ("wmh_fraction", wmh_fraction)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{name} must be between 0 and 1, got {value}")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the phantom cohort")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty; choose a new folder or pass overwrite")


def write_cohort(out_dir: str | os.PathLike, n_subjects: int = 12, seed: int = 0,
                 preset: str = "small", *, clean: bool = False, lesion_fraction: float = 0.0,
                 wmh_fraction: float = 0.0, overwrite: bool = False,
                 pet_ages: tuple[float, ...] = (),
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Generate ``n_subjects`` phantom subjects and write them under ``out_dir``.

    Args:
        out_dir: the cohort folder; must not exist or be empty, unless ``overwrite``.
        n_subjects: number of subjects (sub-001 ... ).
        seed: cohort seed; subject i is ``generate_subject(i, seed, preset)``.
        preset: "small" (4 mm), "full" (2 mm) or "fine" (1 mm).
        clean: also write the noise-free ``_clean`` twin of every modality.
        lesion_fraction, wmh_fraction: fractions of subjects given a tumour / white-matter
            hyperintensities.
        overwrite: write into a non-empty folder, replacing files of the same names.
        pet_ages: counterfactual ages (years, 55-95): every subject also gets
            ``sub-XXX/age-<A>/sub-XXX_pet.nii.gz`` (and ``_pet_clean`` with ``clean``), the
            same scan with only the age-driven uptake moved to age A.
        progress: called as progress(i, n_subjects) once subject i (0-based) is written.

    Returns:
        The cohort folder.
    """
    out = Path(out_dir).expanduser()
    _check_arguments(out, n_subjects, seed, preset, lesion_fraction, wmh_fraction, overwrite)
    pet_ages = check_pet_ages(tuple(pet_ages))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        in_place = out.is_dir() and any(out.iterdir())
        target = out if in_place else Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        if not in_place:
            target.chmod(0o755)  # mkdtemp's 0700 would otherwise become the cohort's mode
    except OSError as error:
        raise UserError(f"cannot create the cohort folder {out}: {error.strerror}; "
                        "choose a writable folder") from error
    try:
        _write_all(target, n_subjects, seed, preset, clean,
                   _lesion_plan(n_subjects, seed, lesion_fraction, wmh_fraction), progress,
                   pet_ages)
        if not in_place:
            if out.is_dir():
                out.rmdir()  # empty, checked above
            os.replace(target, out)
    except BaseException:
        if not in_place:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return out


def _write_all(target: Path, n_subjects: int, seed: int, preset: str, clean: bool,
               lesions: list[str | None], progress: Callable[[int, int], None] | None,
               pet_ages: tuple[float, ...] = ()) -> None:
    rows, subject_params = [], {}
    for index in range(n_subjects):
        subject = generate_subject(index, seed, preset, lesion=lesions[index],
                                   pet_ages=pet_ages)
        _write_subject(target / subject.subject_id, subject, clean)
        rows.append({"participant_id": subject.subject_id, "age": subject.age,
                     "sex": subject.sex, "diagnosis": subject.diagnosis,
                     "lesion": lesions[index] or "none", "pet": subject.region_pet})
        subject_params[subject.subject_id] = subject.params
        if progress is not None:
            progress(index, n_subjects)
    grid = PRESETS[preset]
    try:
        import nilearn

        nilearn_version = nilearn.__version__
    except ImportError:  # pragma: no cover - nilearn is a dependency
        nilearn_version = "unknown"
    cohort = {
        "description": "napari-modality-synth phantom cohort: synthetic, not acquired data",
        "Synthetic": True,
        "version": package_version(),
        "template": f"MNI152 2009 (nilearn {nilearn_version})",
        "preset": preset, "seed": int(seed), "n_subjects": int(n_subjects),
        "spacing_mm": [grid.spacing_mm] * 3, "shape": list(grid.shape),
        "affine": grid.affine.tolist(),
        "modalities": list(MODALITIES_WRITTEN), "clean": bool(clean),
        "counterfactual_pet_ages": list(pet_ages),
        "labels": {str(k): v for k, v in LABELS.items()},
        "pet_regions": list(PET_REGIONS),
        "parameters": cohort_parameters(),
        "subjects": subject_params,
    }
    write_text(target / "labels.json", json.dumps({str(k): v for k, v in LABELS.items()},
                                                  indent=2) + "\n")
    write_text(target / "cohort.json", json.dumps(cohort, indent=2) + "\n")
    write_text(target / "participants.tsv", _participants_tsv(rows))
