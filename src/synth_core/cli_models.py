"""``modality-synth models``: the checkpoint table, each figure with its units.

Kept apart from ``cli`` so the table's layout and legend sit in one place; it needs no
torch (the zoo lists cards without it), so ``models`` starts fast.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def models_command(args: argparse.Namespace) -> int:
    """`modality-synth models`: list checkpoints with their held-out scores, or set a default."""
    from synth_core.zoo import list_checkpoints, set_default

    if args.default is not None:
        info = set_default(args.default)
        print(f"{info.name} ({info.origin}) is now the default for {info.method} "
              f"{info.task}; --checkpoint still chooses another")
        return 0
    rows = [c.summary() for c in list_checkpoints()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no checkpoints; train one with `modality-synth train`")
        return 0
    # Columns as wide as their longest entry, so long keys (rectified-flow, cpu-2step) stay aligned.
    w_name = max(34, *(len(r["name"]) for r in rows))
    w_method = max(12, *(len(r["method"]) for r in rows))
    w_task = max(16, *(len(_task(r)) for r in rows))
    print(f"{'name':<{w_name}} {'method':<{w_method}} {'source->target':<{w_task}} {'origin':<8} "
          f"{'default':<7} {'steps':>6}  {'SSIM':>6} {'noise':>6} {'PSNR dB':>8} {'MAE':>8}  "
          f"{'scored as':<18} sha256")
    keys_seen: set[str] = set()
    for r in rows:
        scores = _shown_scores(r)
        keys_seen.add(scores["key"])
        print(f"{r['name']:<{w_name}} {r['method']:<{w_method}} "
              f"{_task(r):<{w_task}} {r['origin']:<8} "
              f"{'yes' if r.get('default') else '':<7} {str(r['steps'] or '-'):>6}  "
              f"{_fmt(scores['ssim'], 3):>6} {_fmt(scores['floor'], 3):>6} "
              f"{_fmt(scores['psnr'], 2):>8} {_fmt(scores['mae'], 3):>8}  {scores['key']:<18} "
              f"{r['sha256'][:12]}")
    print("\nnoise: the noise floor's SSIM (each noise-free phantom scan against its noisy twin, "
          "scored the same way); PSNR in dB; bundles must reach 0.9 x the noise floor's SSIM "
          "(CT: MAE <= 40 HU)")
    if any(r.get("any_to_any") for r in rows):
        print("any of ...: one any-to-any checkpoint maps each listed modality to every other; "
              "its held-out figures are the mean over those directions")
    for key in sorted(keys_seen):
        print(f"{key}: {SCORING_LEGEND.get(key, '')}")
    return 0


SCORING_LEGEND = {
    "mr-p1-p99": "held-out phantom subjects, inside the brain; each volume's 1st-99th percentile "
                 "-> [0, 1], data range 1 (MAE in those units)",
    "pet-p95": "held-out phantom subjects, inside the brain; each volume / its 95th percentile "
               "(SUVR-like), data range 1 (MAE in those units)",
    "ct-hu": "held-out phantom subjects, inside the head; MAE in HU, PSNR and SSIM over "
             "[-1024, 3000] HU",
    "val, model space": "the run's own validation subjects in the model's normalised [-1, 1] "
                        "space: not comparable across methods; score a checkpoint with "
                        "`modality-synth evaluate --normalise`",
    "-": "not measured",
}


def _shown_scores(row: dict[str, Any]) -> dict[str, Any]:
    """The figures `models` prints for a checkpoint: its held-out scores in the scoring
    normalisation (forward direction) with the noise floor's SSIM, else its validation
    figures labelled as the model's own space."""
    nan = float("nan")
    heldout = (row.get("heldout") or {}).get("directions") or {}
    if row.get("any_to_any") and heldout:
        entries = list(heldout.values())
        return {**{k: sum(e["scores"][k] for e in entries) / len(entries)
                   for k in ("ssim", "psnr", "mae")},
                "floor": sum(e["noise_floor"]["ssim"] for e in entries) / len(entries),
                "key": entries[0]["normalisation"]}
    entry = heldout.get(f"{row['source']}->{row['target']}")
    if entry:
        s = entry["scores"]
        return {"ssim": s["ssim"], "floor": entry["noise_floor"]["ssim"], "psnr": s["psnr"],
                "mae": s["mae"], "key": entry["normalisation"]}
    val = row.get("validation") or {}
    if val:
        return {"ssim": val.get("val_ssim", nan), "floor": nan, "psnr": val.get("val_psnr", nan),
                "mae": val.get("val_mae", nan), "key": "val, model space"}
    return {"ssim": nan, "floor": nan, "psnr": nan, "mae": nan, "key": "-"}


def _task(row: dict[str, Any]) -> str:
    """The table's direction cell: ``t1->pet``, or ``any of t1, t1ce, t2, flair``."""
    if row.get("any_to_any"):
        return "any of " + ", ".join(row.get("modalities") or [])
    return f"{row['source']}->{row['target']}"


def _fmt(value: Any, digits: int) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if number != number else f"{number:.{digits}f}"
