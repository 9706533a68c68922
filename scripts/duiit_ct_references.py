"""How close to the CT bundle floor (40 HU MAE in the head) can any translator get on the phantom?

    python scripts/duiit_ct_references.py OUT.json [--seed 1000] [--subjects 8]
        [--preset small] [--atlas-seed 7] [--atlas-subjects 48]
    python scripts/duiit_ct_references.py OUT.json --checkpoint NAME|PATH --from t1,pet

Scores reference volumes (the noise-free CT, it with the population's bone density, blurred
or moved by part of a voxel, the training subjects' mean CT) against the noisy CT of held-out
phantom subjects exactly as ``scripts/evaluate_checkpoint.py`` scores a model, and measures
what the T1 and PET show of the skull (``synth_core.benchmark_duiit_ct``). No training; the
subjects are generated from their seeds. Prints markdown tables; OUT.json holds everything.
With ``--checkpoint``, it instead says where a duiit CT model's error is: per label group
(brain, skull, scalp) of the same subjects, the mean predicted and true CT and the MAE, for
each source ``--from`` names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synth_core.benchmark_duiit_ct import (
    ct_references,
    label_errors,
    skull_profile,
    source_visibility,
)
from synth_core.heldout import HELDOUT_PRESET, HELDOUT_SEED, HELDOUT_SUBJECTS
from synth_core.io import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=HELDOUT_SEED)
    p.add_argument("--subjects", type=int, default=HELDOUT_SUBJECTS)
    p.add_argument("--preset", default=HELDOUT_PRESET)
    p.add_argument("--atlas-seed", type=int, default=7)
    p.add_argument("--atlas-subjects", type=int, default=48)
    p.add_argument("--checkpoint", default=None, help="a duiit CT model to break down by label")
    p.add_argument("--from", dest="sources", default="t1", help="its sources to score, e.g. t1,pet")
    args = p.parse_args(argv)
    if args.checkpoint:
        result = {}
        print("| source | label | predicted (HU) | true (HU) | MAE (HU) |\n|---|---|---|---|---|")
        for source in args.sources.split(","):
            result[source] = label_errors(args.checkpoint, source, seed=args.seed,
                                          subjects=args.subjects, preset=args.preset)
            for group, row in result[source].items():
                print(f"| {source} | {group} | {row['predicted']:.0f} | {row['true']:.0f} | "
                      f"{row['mae']:.0f} |")
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n", overwrite=True)
        return 0
    if args.atlas_seed == args.seed:
        print("error: the atlas seed is the held-out seed; give another --atlas-seed",
              file=sys.stderr)
        return 2
    refs = ct_references(seed=args.seed, subjects=args.subjects, preset=args.preset,
                         atlas_seed=args.atlas_seed, atlas_subjects=args.atlas_subjects)
    vis = source_visibility(seed=args.seed, subjects=args.subjects, preset=args.preset)
    profile = skull_profile(seed=args.seed, index=0, preset=args.preset)
    print(f"{args.subjects} subjects of phantom seed {args.seed} ({args.preset}); atlas: "
          f"{args.atlas_subjects} subjects of seed {args.atlas_seed}; {refs['units']}")
    print("| reference | MAE (HU) | PSNR (dB) | SSIM |\n|---|---|---|---|")
    for name, row in refs["rows"].items():
        print(f"| {name} | {row['mae'][0]:.1f} ± {row['mae'][1]:.1f} | "
              f"{row['psnr'][0]:.1f} ± {row['psnr'][1]:.1f} | {row['ssim'][0]:.3f} |")
    print(f"skull voxels: {100 * refs['skull_share_of_head']:.1f} % of the head")
    print("\n| image | CSF | skull | scalp | noise SD | (skull - CSF) / SD | (scalp - skull) / SD |")
    print("|---|---|---|---|---|---|---|")
    for mod, row in vis.items():
        print(f"| {mod} | {row['csf']:.3g} | {row['skull']:.3g} | {row['scalp']:.3g} | "
              f"{row['noise_sd']:.3g} | {row['skull_minus_csf_snr']:+.1f} | "
              f"{row['scalp_minus_skull_snr']:+.1f} |")
    print("\n| y (voxel) | label | CT noise-free (HU) | T1 | PET (SUV) |\n|---|---|---|---|---|")
    for r in profile:
        print(f"| {r['y']} | {r['label']} | {r['ct_clean']:.0f} | {r['t1']:.0f} | {r['pet']:.2f} |")
    atomic_write_text(args.out, json.dumps({"references": refs, "visibility": vis,
                                            "profile": profile}, indent=2) + "\n",
                      overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
