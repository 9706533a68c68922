"""`make demo`: the main job on the built-in phantom.

Generates a small phantom cohort, summarises one subject, translates its T1 to PET
with the bundled pix2pix checkpoint, evaluates the result against the phantom's own
PET and prints the figures and where the outputs are. The napari part (a viewer with
the sample data and the Translate and Compare widgets) runs when a display is present;
without one a screenshot of the viewer is saved instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

import synth_core as sc
from synth_core.phantom import generate_subject, noise_floor_psnr, write_cohort
from synth_core.zoo import list_checkpoints

OUT = Path(os.environ.get("DEMO_OUT", "demo_out"))


def main() -> int:
    cohort = OUT / "phantom"
    if not (cohort / "participants.tsv").exists():
        print(f"generating a 4-subject `small` phantom cohort in {cohort} ...")
        write_cohort(cohort, 4, seed=7, preset="small", overwrite=True)
    subject = generate_subject(0, seed=7, preset="small")
    subject.volumes["t1"]
    print(f"\nsubject {subject.subject_id}: age {subject.age:.1f}, sex {subject.sex}, "
          f"diagnosis {subject.diagnosis}")
    for name, vol in subject.volumes.items():
        print(f"  {name:<10} shape {vol.shape}  spacing {tuple(round(s, 2) for s in vol.spacing)} mm  "
              f"range [{vol.data.min():.1f}, {vol.data.max():.1f}]")
    print("\nnoise-floor PSNR (noisy vs noise-free phantom, each modality's own range):")
    for name, value in noise_floor_psnr(subject).items():
        print(f"  {name:<10} {value:6.2f} dB")

    if not list_checkpoints("pix2pix", "t1", "pet"):
        print("\nno pix2pix t1->pet checkpoint is installed; see docs/benchmarks.md to train one")
        return 0
    t1_path = cohort / subject.subject_id / f"{subject.subject_id}_t1.nii.gz"
    pet_path = cohort / subject.subject_id / f"{subject.subject_id}_pet.nii.gz"
    mask_path = cohort / subject.subject_id / f"{subject.subject_id}_brainmask.nii.gz"
    out_path = OUT / f"{subject.subject_id}_pet_synth.nii.gz"
    result = sc.translate(sc.load_volume(t1_path), method="pix2pix", to="pet")
    sc.save_volume(result.volume, out_path, overwrite=True, provenance=result.provenance)
    truth = sc.load_volume(pet_path)
    mask = sc.load_volume(mask_path).data > 0
    from synth_core.benchmark import normalised_scores

    scores = normalised_scores(result.volume, truth, "pet", mask)
    floor = normalised_scores(subject.clean["pet"], truth, "pet", mask)
    print(f"\ntranslated {t1_path.name} -> PET with pix2pix ({result.provenance['Checkpoint']})")
    print("scores against the phantom's PET inside the brain (each SUVR-normalised, range 2),")
    print("beside the noise floor (the noise-free PET scored the same way):")
    for key in ("mae", "psnr", "ssim", "corrcoef"):
        print(f"  {key:<9} {scores[key]:8.4f}   noise floor {floor[key]:8.4f}")
    print(f"\noutputs: {out_path} and its sidecar {out_path.with_suffix('').with_suffix('.json')}")
    print(f"synthetic flag in sidecar: {result.provenance['Synthetic']}")
    assert np.isfinite(result.volume.data).all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
