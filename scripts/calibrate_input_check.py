"""Calibrate the shared input check (``synth_core.input_check``) on phantom cohorts.

    python scripts/calibrate_input_check.py --reference REF_DIR [REF_DIR ...] --test TEST_DIR [...]
    python scripts/calibrate_input_check.py --card NAME|CHECKPOINT_DIR --test TEST_DIR [...]

Builds each modality's reference from the subjects under the reference folders (as
training does at export) and checks every modality of every subject under the test
folders (seeds the reference never saw) as if it were passed with ``--from`` each
modality in turn. Prints, per claimed modality, the range of scores of each true
modality and how many were refused (by the physics rule or the fingerprint limit).
A true input (diagonal) should never be refused; a mislabelled one should be. With
``--card``, the checkpoint's own ``input_reference`` is used (its input modalities only),
and each volume is first brought onto the checkpoint's grid as ``translate`` does (a test
cohort at another voxel size is resampled, and one coarser than the model's gets the
limit of an upsampled input).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from synth_core.errors import UserError
from synth_core.input_check import LIMIT, check_input, make_reference, score
from synth_core.io import load_volume
from synth_core.zoo import locate

MODALITIES = ("t1", "t1ce", "t2", "flair", "pet", "ct")


def _subjects(folders: list[Path]) -> list[Path]:
    return sorted(p for folder in folders for p in folder.glob("sub-*") if p.is_dir())


def _read(subject: Path, modality: str) -> np.ndarray:
    return load_volume(subject / f"{subject.name}_{modality}.nii.gz", modality=modality).data


def _on_model_grid(subject: Path, actual: str, claimed: str,
                   card: dict) -> tuple[np.ndarray, np.ndarray, bool]:
    """A test volume as ``translate`` checks it: on the card's grid, with its foreground
    mask, and whether it was interpolated from a coarser grid."""
    from synth_core.inference import model_input, upsampled_input

    volume = load_volume(subject / f"{subject.name}_{actual}.nii.gz", modality=claimed)
    _, (ras, _, work, _, _, _, head) = model_input(volume, card, claimed)
    return work.data, head, upsampled_input(ras, work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, nargs="+", default=[])
    parser.add_argument("--card", default=None, help="a bundled checkpoint's name or a run folder")
    parser.add_argument("--test", type=Path, nargs="+", required=True)
    args = parser.parse_args()
    ref_subjects, test_subjects = _subjects(args.reference), _subjects(args.test)
    info = locate(args.card) if args.card else None
    card = json.loads((info.directory / "model.json").read_text(encoding="utf-8")) if info else {}
    stored = card.get("input_reference", {})
    data = {(s, m): _read(s, m) for s in ref_subjects + test_subjects for m in MODALITIES}
    where = f"card {info.name}" if info else f"{len(ref_subjects)} subjects"
    print(f"reference: {where}; test: {len(test_subjects)} subjects; limit {LIMIT} spreads")
    print("| given as \\ true | " + " | ".join(MODALITIES) + " |")
    print("|---" * (len(MODALITIES) + 1) + "|")
    for claimed in (list(stored) if args.card else MODALITIES):
        reference = stored.get(claimed) or make_reference([data[(s, claimed)] for s in ref_subjects], claimed)
        cells = []
        for actual in MODALITIES:
            scores, refused = [], 0
            for subject in test_subjects:
                volume, mask, upsampled = data[(subject, actual)], None, False
                if info is not None:
                    volume, mask, upsampled = _on_model_grid(subject, actual, claimed, card)
                try:
                    check_input(volume, claimed, reference, mask=mask, upsampled=upsampled)
                except UserError:
                    refused += 1
                try:
                    scores.append(score(volume, claimed, reference, mask))
                except UserError:
                    scores.append(float("nan"))
            shown = f"{np.nanmin(scores):.1f}-{np.nanmax(scores):.1f}"
            cells.append(f"{shown} ({refused}/{len(test_subjects)} refused)")
        print(f"| {claimed} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
