"""The phantom: a paired multi-modal cohort with known ground truth.

Built on the MNI152 2009 template that nilearn bundles. Each subject has its own smooth
deformation, age, sex and diagnosis driving atrophy and FDG hypometabolism, optional
lesions, scanner variation and the noise of each modality. See DESIGN.md, "The phantom".

    from synth_core.phantom import generate_subject, write_cohort
    subject = generate_subject(0, seed=0, preset="small")
    subject.volumes["t1"], subject.volumes["pet"], subject.region_pet["frontal"]
    write_cohort("phantom/", n_subjects=12, seed=0)
"""

from synth_core.phantom.cohort import cohort_parameters, write_cohort
from synth_core.phantom.parameters import (
    LABELS,
    MODALITIES_WRITTEN,
    PET_REGIONS,
    PRESETS,
    PhantomPreset,
)
from synth_core.phantom.subject import (
    PhantomSubject,
    bench_subject,
    generate_subject,
    noise_floor_psnr,
    region_means,
)

__all__ = [
    "LABELS",
    "MODALITIES_WRITTEN",
    "PET_REGIONS",
    "PRESETS",
    "PhantomPreset",
    "PhantomSubject",
    "bench_subject",
    "cohort_parameters",
    "generate_subject",
    "noise_floor_psnr",
    "region_means",
    "write_cohort",
]
