"""Many subjects at once: translate a cohort folder or manifest, and score it.

Every command that writes more than one volume uses one layout::

    OUT_DIR/sub-XXX/sub-XXX_<target>.nii.gz      the synthetic volume
    OUT_DIR/sub-XXX/sub-XXX_<target>.json        its provenance sidecar
    OUT_DIR/sub-XXX/sub-XXX_<target>_std.nii.gz  voxel-wise SD (and its sidecar), with samples
    OUT_DIR/summary.tsv                          subject, target, output, seconds, checkpoint, status

``plan_translation`` checks everything and decides every output before any work;
``run_translation`` runs the plan with Lightning's ``Trainer.predict`` on one or several
devices; ``evaluate_cohort`` scores a translated cohort against its targets.
"""

from synth_core.cohort.evaluate import CohortScores, evaluate_cohort, write_scores
from synth_core.cohort.plan import (
    SUMMARY,
    CohortPlan,
    OutputJob,
    check_out_dir,
    file_subject_id,
    plan_translation,
    subject_id,
)
from synth_core.cohort.predict import CohortResult, run_translation

__all__ = [
    "SUMMARY", "CohortPlan", "CohortResult", "CohortScores", "OutputJob", "check_out_dir",
    "evaluate_cohort", "file_subject_id", "plan_translation", "run_translation", "subject_id",
    "write_scores",
]
