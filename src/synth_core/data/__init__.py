"""Training data: subject discovery, subject-wise splits, the volume store, and the
paired / unpaired / partially paired and labelled datasets of 3D volumes, 3D patches or 2D slices."""

from synth_core.data.datasets import TranslationDataset, ValidationVolumes
from synth_core.data.discover import SubjectRecord, discover_subjects, phantom_cohort
from synth_core.data.labelled import LabelledDataset
from synth_core.data.multicontrast import MultiContrastDataset, MultiContrastValidation
from synth_core.data.split import (
    Split,
    recover_split,
    split_subjects,
    subjects_fingerprint,
    summarise,
)
from synth_core.data.store import VolumeStore, target_norm_reference

__all__ = [
    "LabelledDataset",
    "MultiContrastDataset",
    "MultiContrastValidation",
    "Split",
    "SubjectRecord",
    "TranslationDataset",
    "ValidationVolumes",
    "VolumeStore",
    "discover_subjects",
    "phantom_cohort",
    "recover_split",
    "split_subjects",
    "subjects_fingerprint",
    "summarise",
    "target_norm_reference",
]
