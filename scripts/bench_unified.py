"""Unified any-to-any against 12 pairwise pix2pix models and the ablation without eq. 5.

    modality-synth phantom DATA --subjects 24 --seed 40 --lesion-fraction 0.75
    python scripts/bench_unified.py unified  --data DATA --out OUT --steps 10000
    python scripts/bench_unified.py ablation --data DATA --out OUT --steps 10000
    python scripts/bench_unified.py pairwise --data DATA --out OUT
    (add --spatial 3d to the training stages for whole volumes instead of 2D slices, --set
    backbone=resunet to give the pairwise models the cpu preset's residual U-Net)
    python scripts/bench_unified.py score    --out OUT [--seed 1000 --subjects 8 --lesion-fraction 0.75]
    python scripts/bench_unified.py segmenter --data DATA --out OUT --steps 600
    python scripts/bench_unified.py dice     --out OUT [--seed 1000 --subjects 8 --lesion-fraction 0.75]

Each stage keeps what an earlier call finished, so the stages can run as separate jobs.
``pairwise`` gives the twelve models together the unified run's wall time (read from
OUT/unified/bench_run.json). ``score`` writes OUT/unified.json and OUT/unified.md (the tables
of docs/methods/unified.md). ``segmenter`` trains the tumour segmenter on DATA's real
contrasts; ``dice`` scores it on the held-out subjects with real and synthesized contrasts
(OUT/dice.json, OUT/dice.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from synth_core import benchmark_unified as bench
from synth_core.cli import parse_settings
from synth_core.errors import UserError


def _trained(out: Path, names: tuple[str, ...]) -> dict[str, Callable[[str, str], str]]:
    """The runs of ``names`` (in that order) that OUT holds: each as the run folder of a
    direction (source, target); the unified model and its ablation answer every one."""
    folders: dict[str, Callable[[str, str], str]] = {
        "unified": lambda s, t: str(out / "unified"),
        "ablation": lambda s, t: str(out / "ablation"),
        "pix2pix": lambda s, t: str(out / f"pix2pix-{s}-{t}")}
    return {k: folders[k] for k in names if Path(folders[k]("t1", "t2")).is_dir()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["unified", "ablation", "pairwise", "score", "segmenter", "dice"])
    p.add_argument("--data", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--spatial", choices=("2d", "3d"), default="2d",
                   help="train on 2D axial slices (the paper's setting) or whole 3D volumes")
    p.add_argument("--preset", default=None,
                   help="the unified and ablation runs' preset (default cpu, or cpu-3d with "
                        "--spatial 3d; cpu-unet is the earlier pix2pix-U-Net recipe)")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--lesion-fraction", type=float, default=0.75)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a training setting for the unified, ablation and pairwise runs alike "
                        "(as train --set), e.g. --set ema_decay=0.999")
    args = p.parse_args(argv)
    settings = parse_settings(args.settings)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("unified", "ablation"):
        entry = bench.train_unified(args.data, args.out, args.steps, ablation=args.stage == "ablation",
                                    settings=settings, spatial=args.spatial, preset=args.preset)
        print(entry)
    elif args.stage == "pairwise":
        unified = json.loads((args.out / "unified" / "bench_run.json").read_text())
        entry = bench.train_pairwise(args.data, args.out, unified["seconds"], settings=settings,
                                     spatial=args.spatial)
        (args.out / "pairwise.json").write_text(json.dumps(entry, indent=2))
    elif args.stage == "segmenter":
        print(bench.train_segmenter(args.data, args.out / "segmenter", args.steps))
    elif args.stage == "dice":
        cohort = bench.heldout_cohort(args.seed, args.subjects, args.lesion_fraction)
        models = _trained(args.out, ("unified", "pix2pix", "ablation"))
        dice = bench.score_segmentation(args.out / "segmenter", models, cohort)
        dice["cohort"] = {"seed": args.seed, "subjects": args.subjects,
                          "lesion_fraction": args.lesion_fraction}
        print(bench.dice_report(dice, args.out).read_text())
    else:
        cohort = bench.heldout_cohort(args.seed, args.subjects, args.lesion_fraction)
        models = _trained(args.out, ("unified", "ablation", "pix2pix"))
        scores = bench.score_models(models, cohort)
        runs = {k: json.loads((Path(v("t1", "t2")) / "bench_run.json").read_text())
                for k, v in models.items()}
        if "pix2pix" in models:
            pairwise = json.loads((args.out / "pairwise.json").read_text())
            runs["pix2pix"] = {"steps_each": pairwise["steps_each"], "seconds": sum(
                r["seconds"] for r in pairwise["runs"].values()), "models": 12}
        params = {"unified": bench.parameters(args.out / "unified")}
        if "pix2pix" in models:
            params["pix2pix (12 models)"] = sum(bench.parameters(models["pix2pix"](s, t))
                                                for s, t in bench.directions())
        results = {"cohort": {"seed": args.seed, "subjects": args.subjects,
                              "lesion_fraction": args.lesion_fraction, "preset": "small"},
                   "runs": runs, "parameters": params, "scores": scores}
        print(bench.report(results, args.out).read_text())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
