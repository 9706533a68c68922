"""Export a run's latest training state (``last.ckpt``) as a checkpoint folder.

A run exports the weights with the best validation score; for a conditioned model
that score (translation at the training ages) may not be what is being studied, e.g.
the age response of DUAL-GLOW, which is measured on the weights of a given step:

    .venv/bin/python scripts/export_last.py RUN_DIR OUT_DIR

OUT_DIR gets ``model.safetensors`` and a card copied from the run's, with the step
count of ``last.ckpt``. The checkpoint is read with ``weights_only=True``. Where the
method keeps an EMA of its weights the EMA weights are exported, as training does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from synth_core import zoo
from synth_core.methods import config_from_dict, get_method_class
from synth_core.training.module import SynthesisModule


def export_last(run: Path, out: Path) -> zoo.CheckpointInfo:
    card = json.loads((run / zoo.CARD).read_text())
    ckpt = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    method = get_method_class(card["method"])(
        config_from_dict(card["method"], card["config"]), card["source"], card["target"])
    module = SynthesisModule(method)
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    card.pop("validation", None)  # those scores belong to the best step, not this one
    return zoo.save_model(module.inference_copy(), out, card | {"steps": module.batches_done})


if __name__ == "__main__":
    run_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    if out_dir.exists():
        sys.exit(f"{out_dir} exists; choose a new folder")
    info = export_last(run_dir, out_dir)
    print(f"exported step {info.card['steps']} of {run_dir} to {out_dir}")
