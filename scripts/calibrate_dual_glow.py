"""Recompute a DUAL-GLOW checkpoint's out-of-distribution reference with its own weights.

    .venv/bin/python scripts/calibrate_dual_glow.py CHECKPOINT_DIR DATA_DIR [--subjects N]

Training records the bits per voxel of its MRIs batch by batch, with the weights of that
moment; an EMA or a later step scores inputs with other weights. This encodes the T1 of
the last N (default: the model's ``ood_window``) training subjects of the card's split
(found again in DATA_DIR and checked against the card's fingerprints),
prepared exactly as ``translate`` prepares an input, and writes the checkpoint again (new
sha256 in its card, ``calibrated`` noted). Was used for the formerly bundled ``dual-glow-t1-pet-small``
(docs/methods/dual-glow.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import synth_core as sc
from synth_core import zoo
from synth_core.data import discover_subjects, recover_split
from synth_core.inference import model_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path, help="the training data folder (subject folders)")
    parser.add_argument("--subjects", type=int, default=0)
    args = parser.parse_args()
    info = zoo.locate(str(args.checkpoint))
    method = zoo.load_method(info)
    records = discover_subjects(args.data)
    paired = [r for r in records if info.source in r.paths and info.target in r.paths]
    ids = [r.subject_id for r in recover_split([paired, records], info.card["training_data"]).train]
    ids = ids[-(args.subjects or method.config.ood_window):]
    tensors = []
    for sid in ids:
        vol = sc.load_volume(str(args.data / sid / f"{sid}_{info.source}.nii.gz"))
        x, _ = model_input(vol, info.card, info.source)
        tensors.append(torch.from_numpy(x)[None, None])
    count = method.calibrate(tensors)
    mean, std, _ = method.stats.bits_reference()
    card = dict(info.card, calibrated=f"bits reference from {count} training subjects' "
                f"{info.source} with these weights (scripts/calibrate_dual_glow.py)")
    zoo.save_model(method, info.directory, card)
    levels = [round(float(v), 3) for v in method.stats.level_reference()[0]]
    print(json.dumps({"subjects": count, "bits_mean": round(mean, 4), "bits_std": round(std, 4),
                      "level_means": levels}))


if __name__ == "__main__":
    main()
