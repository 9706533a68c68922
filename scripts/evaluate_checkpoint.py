"""Score a checkpoint on held-out phantom subjects, beside the noise floor; optionally write
the figures into its card (the ``heldout`` block ``modality-synth models`` prints).

    python scripts/evaluate_checkpoint.py NAME|PATH [--reverse] [--seed S] [--subjects N]
        [--preset small|full|fine] [--cohort DIR] [--flip] [--write-card]

Each subject of the phantom cohort drawn with seed S (default: ``heldout.HELDOUT_SEED``,
one no bundled checkpoint was trained on) is translated and scored in the project's scoring
normalisation (brain for MR/PET, head for CT); the noise floor is the noise-free target
scored against the noisy one. The preset defaults to the one at the checkpoint's spacing
(4 mm ``small``, 2 mm ``full``, 1 mm ``fine``). ``--cohort DIR`` reads the subjects from a
phantom folder written with ``--clean`` (``modality-synth phantom DIR --seed S --preset P
--subjects N --clean``) instead of generating them again: its seed and preset apply. ``--write-card`` stores the result under
``heldout.directions["SRC->TGT"]`` in the card (atomically; the weights and their sha256 are
untouched). A bidirectional checkpoint is scored both ways when ``--both`` is given; an
any-to-any checkpoint is scored in every direction among its modalities; one with several
sources (a labelled ``duiit`` model) is scored from the one ``--from`` names (``--lesion-fraction``
gives that share of the cohort a tumour, as ``phantom --lesion-fraction`` does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from synth_core.errors import UserError
from synth_core.heldout import HELDOUT_SEED, HELDOUT_SUBJECTS, heldout_scores
from synth_core.io import atomic_write_text
from synth_core.zoo import locate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--reverse", action="store_true")
    p.add_argument("--both", action="store_true", help="score both directions of a bidirectional model")
    p.add_argument("--seed", type=int, default=HELDOUT_SEED)
    p.add_argument("--subjects", type=int, default=HELDOUT_SUBJECTS)
    p.add_argument("--preset", choices=("small", "full", "fine"), default=None,
                   help="phantom preset (default: the one at the checkpoint's spacing)")
    p.add_argument("--cohort", type=Path, default=None,
                   help="read the subjects from this phantom folder (written with --clean)")
    p.add_argument("--lesion-fraction", type=float, default=0.0,
                   help="share of the generated cohort with a tumour (any-to-any MR models)")
    p.add_argument("--from", dest="source", default=None,
                   help="the source to score of a model with several (duiit --from t1,pet)")
    p.add_argument("--flip", action="store_true",
                   help="average in the left-right mirrored pass; with --write-card the card's "
                        "inference block then says so, so translate runs the way it was scored")
    p.add_argument("--write-card", action="store_true")
    p.add_argument("--card-field", default="heldout", choices=("heldout", "heldout_tumour"),
                   help="the card field --write-card fills: heldout (the floor's cohort, "
                        "printed by `models`) or heldout_tumour (an any-to-any MR model's "
                        "scores on a cohort with tumours, --lesion-fraction)")
    args = p.parse_args(argv)
    info = locate(args.checkpoint)
    directions: list = [False, True] if args.both else [args.reverse]
    if info.any_to_any:
        directions = [(a, b) for a in info.modalities for b in info.modalities if a != b]
    card_path = info.directory / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    for way in directions:
        start = time.perf_counter()
        entry = heldout_scores(str(info.directory), info.method, reverse=way is True,
                               seed=args.seed, subjects=args.subjects, preset=args.preset,
                               cohort=args.cohort,
                               direction=way if isinstance(way, tuple) else None,
                               lesion_fraction=args.lesion_fraction, source=args.source,
                               flip=True if args.flip else None)
        seconds = time.perf_counter() - start
        s, f = entry["scores"], entry["noise_floor"]
        c = entry["cohort"]
        print(f"{info.name} {entry['direction']}: {c['subjects']} subjects of phantom seed "
              f"{c['seed']} ({c['preset']}), {seconds:.0f} s")
        print(f"  units: {entry['units']}; inside the {entry['mask']}")
        ran = entry["inference"]
        print(f"  ran: {'whole volume' if ran['window'] == 'whole' else ran['window']}"
              f"{', flip averaged' if ran['flip'] else ''}")
        for key in ("mae", "psnr", "ssim", "corrcoef"):
            print(f"  {key:<9} {s[key]:9.4f} +- {entry['scores_sd'][key]:.4f}   "
                  f"noise floor {f[key]:9.4f}")
        print(f"  scale: {entry['scale']['what']} = {entry['scale']['value']:.3f}")
        verdict = entry["floor"]
        print(f"  floor ({verdict['rule']}; threshold {verdict['threshold']:.3f}): "
              f"{'PASS' if verdict['passes'] else 'FAIL'}")
        heldout = card.setdefault(args.card_field, {"directions": {}})
        heldout["directions"][entry["direction"]] = entry
    if args.write_card:
        if args.flip:
            card["inference"] = {**card.get("inference", {}), "flip": True}
        card[args.card_field]["command"] = (
            "python scripts/evaluate_checkpoint.py NAME " + ("--both " if args.both else "")
            + ("--cohort heldout " if args.cohort else "")
            + (f"--lesion-fraction {args.lesion_fraction:g} " if args.lesion_fraction else "")
            + (f"--from {args.source} " if args.source else "")
            + ("--flip " if args.flip else "")
            + "--write-card"
            + (f" --card-field {args.card_field}" if args.card_field != "heldout" else ""))
        atomic_write_text(card_path, json.dumps(card, indent=2) + "\n", overwrite=True)
        print(f"wrote the held-out scores into {info.name}'s card")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
