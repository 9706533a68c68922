"""Bundle a trained run's weights inside the package, or make a bundled card fit to ship.

    python scripts/bundle_checkpoint.py bundle RUN_DIR NAME "the commands" --seed S [--preset P]
        [--parent TEXT]
    python scripts/bundle_checkpoint.py tidy NAME --seed S [--preset P]
    python scripts/bundle_checkpoint.py reference NAME DATA

``bundle`` copies the run's weights as float16 (``zoo.export_copy``) into
``synth_core/checkpoints/NAME``; compare the held-out figures of the run folder and of the
bundle (``scripts/evaluate_checkpoint.py``) to see that float16 loses nothing measurable.
Both then rewrite the card with ``synth_core.training.card.public_card`` (no data path, no
subject IDs, only their fingerprints, no machine paths in notes), record the phantom cohort
the model was trained on (``training_data.phantom``: seed, preset, subjects; ``--seed`` and
``--preset`` as the training command's ``modality-synth phantom`` used them), and set the
``intended_use`` every bundled checkpoint states. ``--parent`` records the checkpoint a run
started from. Then score it on held-out subjects and store the figures with
``python scripts/evaluate_checkpoint.py NAME --write-card`` (``--both`` for a bidirectional
model). Writes are atomic; ``tidy`` leaves the weights and their sha256 untouched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from synth_core.errors import UserError
from synth_core.io import atomic_write_text
from synth_core.methods import get_method_class
from synth_core.training.card import public_card, scrub_text
from synth_core.zoo import CARD, PHANTOM_INTENDED_USE, bundled_dir, export_copy

# Fields an earlier version of this script wrote, now held by public_card's own fields.
_SUPERSEDED = ("cohort", "subject_ids_sha256", "summary")


def shipped_card(card: dict[str, Any], seed: int, preset: str) -> dict[str, Any]:
    """The card fit to ship: ``public_card``, the phantom cohort, the intended use."""
    out = public_card(card, paper=get_method_class(card["method"]).paper)
    data = {k: v for k, v in out.get("training_data", {}).items() if k not in _SUPERSEDED}
    data["phantom"] = {"seed": int(seed), "preset": preset,
                       "n_subjects": int(data.get("n_subjects", 0))}
    out["training_data"] = data
    out["intended_use"] = PHANTOM_INTENDED_USE
    return out


def refresh_reference(name: str, data: Path) -> dict[str, Any]:
    """Recompute a bundled card's ``input_reference`` with today's input check, from the same
    training subjects training read: DATA's subjects with the card's modalities, split with
    the card's split seed, checked against the card's fingerprint of its training split
    (a one-line error if DATA is not the data it was trained on). Weights untouched."""
    from synth_core.data import discover_subjects, split_subjects, subjects_fingerprint
    from synth_core.training.run import _input_references

    card_path = bundled_dir() / name / CARD
    if not card_path.is_file():
        raise UserError(f"no bundled checkpoint {name!r}: see `modality-synth models`")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    data_card = card.get("training_data") or {}
    modalities = list(card.get("input_reference") or {})
    needed = card.get("modalities") if card.get("any_to_any") else [card["source"], card["target"]]
    records = [r for r in discover_subjects(data) if all(m in r.paths for m in needed)]
    split = split_subjects(records, seed=int(data_card.get("split_seed", 0)))
    expected = ((data_card.get("splits") or {}).get("train") or {}).get("subjects_sha256")
    if subjects_fingerprint([r.subject_id for r in split.train]) != expected:
        raise UserError(f"{data} is not the data {name} was trained on (its training subjects' "
                        "fingerprint differs); pass the phantom cohort its card names")
    card["input_reference"] = _input_references(list(split.train), modalities, card.get("spacing"))
    atomic_write_text(card_path, json.dumps(card, indent=2) + "\n", overwrite=True)
    return card["input_reference"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bundle")
    b.add_argument("run", type=Path)
    b.add_argument("name")
    b.add_argument("note", help="the commands that made the run (data, training)")
    b.add_argument("--parent", default=None,
                   help="the checkpoint the run started from (name, sha256, its training data)")
    t = sub.add_parser("tidy")
    t.add_argument("name")
    r = sub.add_parser("reference", help="recompute the card's input reference from its training data")
    r.add_argument("name")
    r.add_argument("data", type=Path)
    for q in (b, t):
        q.add_argument("--seed", type=int, required=True, help="the training cohort's phantom seed")
        q.add_argument("--preset", default="small")
    args = p.parse_args(argv)
    if args.command == "reference":
        for modality, ref in refresh_reference(args.name, args.data).items():
            print(f"{args.name}: {modality} reference from {ref['n_subjects']} training subjects")
        return 0
    destination = bundled_dir() / args.name
    if args.command == "bundle":
        info = export_copy(args.run, destination, dtype="float16",
                           note=f"trained with: {scrub_text(args.note)}")
        print(f"bundled {args.name}: {info.weights.stat().st_size / 2**20:.1f} MiB, "
              f"sha256 {info.sha256[:16]}")
    card_path = destination / CARD
    if not card_path.is_file():
        raise UserError(f"no bundled checkpoint {args.name!r}: see `modality-synth models`")
    card = shipped_card(json.loads(card_path.read_text(encoding="utf-8")), args.seed, args.preset)
    if args.command == "bundle" and args.parent:
        card["parent"] = scrub_text(args.parent)
    atomic_write_text(card_path, json.dumps(card, indent=2) + "\n", overwrite=True)
    data = card["training_data"]
    print(f"card of {args.name}: {data['n_subjects']} phantom subjects (seed {args.seed}, "
          f"preset {args.preset}), subjects {str(data.get('subjects_sha256', '?'))[:16]}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
