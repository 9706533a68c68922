"""The phantom's fixed parameters: grids, labels, tissues and every true effect size.

Everything a subject is drawn from lives here, so that ``cohort.json`` can state the
ground truth in full (``cohort.cohort_parameters()``) and a reader of the code finds each
number once. Units: mm, ms, years, HU, SUV (g/ml), mM (gadolinium).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Centre of the MNI152 2009 brain mask's bounding box, world mm (RAS+).
MNI_BRAIN_CENTRE_MM: tuple[float, float, float] = (0.0, -17.0, 5.0)


@dataclass(frozen=True)
class PhantomPreset:
    """A phantom grid: isotropic ``spacing_mm`` and ``shape`` (X, Y, Z), centred on the MNI brain.

    ``template_mm`` is the resolution of nilearn's MNI152 maps the grid is built from
    (1 or 2 mm): a grid finer than 2 mm needs the 1 mm maps, or its detail would be
    interpolated 2 mm anatomy.
    """

    name: str
    spacing_mm: float
    shape: tuple[int, int, int]
    template_mm: int = 2

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world (RAS+ mm) matrix; the grid's centre is the MNI brain centre."""
        affine = np.diag([self.spacing_mm] * 3 + [1.0])
        half_extent = (np.asarray(self.shape, dtype=np.float64) - 1.0) / 2.0 * self.spacing_mm
        affine[:3, 3] = np.asarray(MNI_BRAIN_CENTRE_MM) - half_extent
        return affine


# Every grid is a multiple of 16 so that U-Nets of depth 4 need no padding; all three
# cover the same 192 x 224 x 192 mm field of view (the 4 mm one a little less in x and z).
PRESETS: dict[str, PhantomPreset] = {
    "fine": PhantomPreset("fine", 1.0, (192, 224, 192), template_mm=1),
    "full": PhantomPreset("full", 2.0, (96, 112, 96)),
    "small": PhantomPreset("small", 4.0, (48, 64, 48)),
}


def nearest_preset(spacing_mm: Sequence[float] | None) -> str:
    """The preset whose voxel size is nearest the mean of ``spacing_mm`` (``small``, 4 mm,
    when no spacing is given): the grid a checkpoint is scored on at its own resolution."""
    if not spacing_mm:
        return "small"
    size = float(np.mean(spacing_mm))
    return min(PRESETS, key=lambda name: abs(PRESETS[name].spacing_mm - size))


MODALITIES_WRITTEN: tuple[str, ...] = (
    "t1", "t1ce", "t2", "flair", "pet", "ct", "t1-lowres", "ct-sharp", "ct-smooth",
)
MR_MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

# Region and tissue labels written to ``sub-XXX_labels.nii.gz``. 1-10 are grey-matter
# regions, 11-13 the other brain compartments, 14-15 the head outside the brain,
# 16-18 lesions (present only in subjects given one).
LABELS: dict[int, str] = {
    0: "background",
    1: "frontal",
    2: "parietal",
    3: "temporal",
    4: "occipital",
    5: "anterior_cingulate",
    6: "posterior_cingulate",
    7: "precuneus",
    8: "hippocampus",
    9: "deep_grey",
    10: "cerebellum",
    11: "white_matter",
    12: "ventricles",
    13: "csf",
    14: "skull",
    15: "scalp",
    16: "tumour",
    17: "oedema",
    18: "wmh",
}
LABEL_IDS: dict[str, int] = {name: key for key, name in LABELS.items()}
GREY_REGIONS: tuple[str, ...] = tuple(LABELS[k] for k in range(1, 11))
CORTICAL_REGIONS: tuple[str, ...] = tuple(LABELS[k] for k in range(1, 8))
# Regions whose true mean PET is reported (participants.tsv ``pet_<region>``).
PET_REGIONS: tuple[str, ...] = tuple(LABELS[k] for k in range(1, 14))

# Tissue classes whose fractions make up every voxel (air is 1 minus their sum).
TISSUES: tuple[str, ...] = (
    "gm", "wm", "csf", "dura", "bone", "marrow", "fat", "skin", "blood",
    "wmh", "oedema", "enhancing", "necrosis",
)
TISSUE_INDEX: dict[str, int] = {name: i for i, name in enumerate(TISSUES)}

# Relaxation times and proton density at 3 T (rounded literature values):
# (T1 ms, T2 ms, PD relative to water).
MR_TISSUE: dict[str, tuple[float, float, float]] = {
    "gm": (1350.0, 95.0, 0.80),
    "wm": (850.0, 70.0, 0.70),
    "csf": (4200.0, 2000.0, 1.00),
    "dura": (1000.0, 50.0, 0.50),
    "bone": (250.0, 0.5, 0.05),
    "marrow": (400.0, 90.0, 0.85),
    "fat": (380.0, 110.0, 0.95),
    "skin": (1400.0, 45.0, 0.75),
    "blood": (1650.0, 150.0, 0.85),
    "wmh": (1200.0, 160.0, 0.80),
    "oedema": (1500.0, 200.0, 0.88),
    "enhancing": (1400.0, 120.0, 0.82),
    "necrosis": (2800.0, 600.0, 0.95),
}
# Sequences. t1/t1ce: spoiled gradient echo, S = PD sin(a)(1-E1)/(1-cos(a)E1) exp(-TE/T2);
# t2: spin echo, S = PD (1-exp(-TR/T1)) exp(-TE/T2);
# flair: inversion recovery, S = PD |1 - 2exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2),
# TI chosen to null CSF.
MR_SEQUENCES: dict[str, dict[str, float | str]] = {
    "t1": {"kind": "spgr", "tr_ms": 20.0, "te_ms": 4.0, "flip_deg": 25.0},
    "t1ce": {"kind": "spgr", "tr_ms": 20.0, "te_ms": 4.0, "flip_deg": 25.0},
    "t2": {"kind": "spin_echo", "tr_ms": 4000.0, "te_ms": 100.0},
    "flair": {"kind": "flair", "tr_ms": 9000.0, "ti_ms": 2400.0, "te_ms": 120.0},
}
# Gadolinium: 1/T1' = 1/T1 + r1 C (r1 in 1/(mM s)); concentrations in t1ce, mM.
GADOLINIUM_R1: float = 4.0
GADOLINIUM_MM: dict[str, float] = {"enhancing": 0.5, "blood": 1.0, "dura": 0.3}
MR_GM_SIGNAL: float = 1000.0  # nominal grey-matter intensity of every MR image (a.u.)
MR_JITTER = {
    "relaxation_sd": 0.03,  # per subject and tissue, log-normal on T1 and T2
    "pd_sd": 0.02,
    "sequence_sd": 0.03,  # per acquisition, log-normal on TR, TE and flip angle (not TI)
    "gain_sd": 0.10,  # receiver gain, log-normal
    "bias_sd": 0.08,  # SD of the log bias field (DCT orders 0-2)
    "noise_sd": 0.15,  # per-acquisition jitter of the noise level, log-normal
}
# Rician noise: sigma of each complex channel as a fraction of the GM intensity.
MR_NOISE_FRACTION: dict[str, float] = {
    "t1": 0.03, "t1ce": 0.03, "t2": 0.035, "flair": 0.04, "t1-lowres": 0.03,
}
# t1-lowres: thick-slice acquisition, downsampled by these factors (x, y, z).
LOWRES_FACTORS: tuple[float, float, float] = (1.5, 1.5, 3.0)

# CT Hounsfield units per tissue; air is -1000.
CT_HU: dict[str, float] = {
    "gm": 40.0, "wm": 30.0, "csf": 12.0, "dura": 50.0, "bone": 1500.0, "marrow": 550.0,
    "fat": -100.0, "skin": 40.0, "blood": 50.0, "wmh": 22.0, "oedema": 18.0,
    "enhancing": 38.0, "necrosis": 15.0,
}
CT_JITTER = {"soft_tissue_hu_sd": 2.0, "bone_hu_sd": 120.0, "noise_sd": 0.15}
# Reconstruction kernels, sigmas in voxels of the preset grid so the task is alike at
# both presets. standard: light correlation only; sharp: unsharp mask
# x + amount (x - G x); smooth: Gaussian.
CT_KERNELS: dict[str, dict[str, float]] = {
    "ct": {"noise_hu": 6.0, "noise_sigma_vox": 0.6},
    "ct-sharp": {"noise_hu": 15.0, "unsharp_sigma_vox": 1.0, "unsharp_amount": 1.0},
    "ct-smooth": {"noise_hu": 3.0, "sigma_vox": 1.0},
}

# FDG PET. Uptake relative to grey matter, times GM_SUV, times region multipliers:
# m(region) = baseline * (1 + age_slope (age - 55)) * (1 + ad_effect * severity)
# applied to all tissue of the region's parcel (see contrast.pet_region_multipliers).
PET_GM_SUV: float = 8.0
PET_UPTAKE: dict[str, float] = {
    "gm": 1.0, "wm": 0.30, "csf": 0.03, "dura": 0.10, "bone": 0.05, "marrow": 0.15,
    "fat": 0.05, "skin": 0.15, "blood": 0.25, "wmh": 0.25, "oedema": 0.20,
    "enhancing": 1.30, "necrosis": 0.08,
}
PET_REGION_BASELINE: dict[str, float] = {
    "deep_grey": 1.08, "cerebellum": 0.85, "hippocampus": 0.75,
}
AGE_REFERENCE_YEARS: float = 55.0
AGE_RANGE_YEARS: tuple[float, float] = (55.0, 95.0)
# True age slopes of FDG uptake, fraction of the age-55 value per year.
PET_AGE_SLOPE: dict[str, float] = {"frontal": -0.005, "anterior_cingulate": -0.006}
# True AD hypometabolism, fraction (at severity 1); MCI subjects get severity ~0.5.
PET_AD_EFFECT: dict[str, float] = {
    "temporal": -0.22, "parietal": -0.20, "precuneus": -0.25,
    "posterior_cingulate": -0.25, "hippocampus": -0.10,
}
PET_FWHM_MM: tuple[float, float] = (6.0, 7.0)  # uniform per subject (scanner resolution)
PET_DOSE_SD: float = 0.12  # log-normal global scale (injected dose, weight, timing)
PET_NOISE = {
    "relative_at_gm": 0.07,  # SD / mean at the grey-matter SUV, variance prop. to signal
    "floor_fraction": 0.02,  # randoms/scatter floor, fraction of the GM SUV
    "correlation_sigma_vox": 0.7,
}

# Diagnosis: severity of AD-type effects drawn uniformly in these ranges.
DIAGNOSIS_SEVERITY: dict[str, tuple[float, float]] = {
    "CN": (0.0, 0.0), "MCI": (0.4, 0.6), "AD": (0.8, 1.2),
}
# P(AD) rises linearly with age from 0.10 at 55 to 0.40 at 95; P(MCI) = 0.25.
DIAGNOSIS_PROBABILITY = {"mci": 0.25, "ad_at_55": 0.10, "ad_at_95": 0.40}

ATROPHY = {
    # fraction of CSF-facing grey matter turned into CSF, per year after 55, everywhere
    "cortical_thinning_per_year": 0.004,
    # extra thinning at AD severity 1, per region
    "ad_thinning": {
        "temporal": 0.12, "parietal": 0.08, "precuneus": 0.10,
        "posterior_cingulate": 0.10, "hippocampus": 0.15,
    },
    # ventricles: radial expansion s = per_year (age - 55) + ad * severity + N(0, sd);
    # template position p = q - s w(q) (q - c), w a Gaussian of widths sigma_mm
    "ventricle_expansion_per_year": 0.010,
    "ventricle_expansion_ad": 0.08,
    "ventricle_expansion_sd": 0.02,
    "ventricle_sigma_mm": (26.0, 40.0, 24.0),
    # hippocampi: radial contraction p = q + s w(q) (q - c)
    "hippocampal_contraction_per_year": 0.004,
    "hippocampal_contraction_ad": 0.25,
    "hippocampal_sigma_mm": 10.0,
    # subarachnoid CSF shell widens with age
    "csf_shell_mm_at_55": 1.5,
    "csf_shell_mm_per_year": 0.04,
}
DEFORMATION = {
    "smooth_sd_mm": 2.0,  # SD of each displacement component (DCT orders 1-3)
    "dct_orders": 4,
    "head_scale": {"F": 0.95, "M": 1.00},
    "head_scale_sd": 0.025,
    "rotation_sd_deg": 3.0,  # about the x (pitch) and z (yaw) axes
}
HEAD_LAYERS_MM = {  # outward from the brain surface, after the CSF shell
    "dura": 1.0, "skull": (5.0, 8.0), "fat": (2.5, 5.0), "skin": (2.0, 3.5),
}
LESIONS = {
    "tumour_radius_mm": (9.0, 18.0),
    "tumour_rim_mm": (3.0, 6.0),  # enhancing rim thickness; the necrotic core fills the rest
    "oedema_radius_factor": 1.9,  # oedema reaches this many tumour radii, in white matter
    "tumour_mass_effect": 0.3,
    "tumour_mass_effect_reach": 3.0,  # in tumour radii; no displacement beyond
    "tumour_irregularity": 0.2,
    "wmh_severity": (0.4, 1.0),
    "wmh_blob_sigma_mm": 3.0,
    "wmh_periventricular_sigma_mm": 5.0,
}
LESION_KINDS: tuple[str, ...] = ("tumour", "wmh", "both")
