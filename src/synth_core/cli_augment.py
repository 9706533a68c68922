"""``modality-synth augment``: a labelled cohort translated into another modality, as a
data set another tool can train on (see ``synth_core.cohort.augment``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("augment", help="translate a labelled cohort into the modality a study "
                       "lacks, as a labelled data set (participants.tsv carried over)")
    a.add_argument("--method", required=True)
    a.add_argument("--checkpoint", required=True, help="name (see `models`), folder or model.safetensors")
    a.add_argument("--data", type=Path, required=True, help="the labelled cohort folder")
    a.add_argument("--from", dest="source", required=True, metavar="MOD[,MOD...]",
                   help="the source modalities to translate (each subject's scans of them)")
    a.add_argument("--to", dest="to", required=True)
    a.add_argument("-o", "--output", type=Path, required=True)
    a.add_argument("--resume", action="store_true",
                   help="skip outputs whose sidecar matches this checkpoint and options")
    a.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run")
    a.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    a.add_argument("--seed", type=int, default=0)


def augment_command(args: argparse.Namespace) -> int:
    """Exit 0 when every output was written (or up to date), 1 when some failed."""
    from synth_core.cohort import run_translation
    from synth_core.cohort.augment import label_column, plan_augment, write_participants

    sources = [s.strip() for s in args.source.split(",") if s.strip()]
    plan = plan_augment(args.data, args.output, method=args.method, checkpoint=args.checkpoint,
                        sources=sources, target=args.to, seed=args.seed, resume=args.resume,
                        overwrite=args.overwrite)
    info = next(iter(plan.checkpoints.values()))
    column = label_column(info)
    print(f"checkpoint {info.name} ({info.origin}, sha256 {info.sha256[:12]}); "
          f"{', '.join(sources)} -> {args.to}; labels carried: "
          f"{column or 'every participants.tsv column'}", file=sys.stderr)
    print(f"{len(plan.jobs)} outputs to make, {len(plan.skipped)} up to date", file=sys.stderr)
    result = run_translation(plan, accelerator=args.device, progress_bar=sys.stderr.isatty())
    participants = write_participants(args.data, plan, result.rows)
    if result.interrupted:
        print(f"interrupted: {result.count('done')} outputs written; continue with --resume",
              file=sys.stderr)
        return 130
    for row in result.failed:
        print(f"failed: {row['subject']} {row['target']}: {row['message']}", file=sys.stderr)
    print(f"wrote {result.count('done')} synthetic {args.to} volumes to {plan.out_dir} "
          f"({result.count('skipped')} up to date, {len(result.failed)} failed); labels "
          f"{participants}; summary {result.summary}")
    return 1 if result.failed else 0
