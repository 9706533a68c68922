"""How a patch-trained 1 mm checkpoint should run: its patch's windows, larger windows, one
whole-volume pass, each with and without flip averaging, scored and timed side by side.

    python scripts/native_inference_settings.py CHECKPOINT SUBJECT_DIR [SUBJECT_DIR ...]
        [--from t1] [--to t2] [--window 96] [--patch-only]

Each SUBJECT_DIR is a phantom subject folder (``COHORT/sub-XXX``, any cohort: the validation
and test subjects of a training cohort, which the run never trained on, choose the setting;
a held-out cohort then scores the chosen one). For every setting it prints the seconds of
``translate`` (after one warm-up call), the process's peak RSS so far, and the scores
against the acquired target (``metrics.evaluate(..., normalise=True)``: MR inside the brain
mask, each volume's brain 1st-99th percentile -> [0, 1], data range 1; CT in HU inside the
head). A whole-volume pass is run whatever the memory budget (``memory_budget_mb`` is raised
for it), so its memory shows in the RSS column.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    from synth_core.inference import translate
    from synth_core.io import load_volume
    from synth_core.metrics import evaluate
    from synth_core.zoo import locate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("subjects", nargs="+", type=Path)
    p.add_argument("--from", dest="source", default="t1")
    p.add_argument("--to", dest="target", default="t2")
    p.add_argument("--window", type=int, default=96, help="the larger window to try (voxels)")
    p.add_argument("--patch-only", action="store_true",
                   help="only the patch's windows, with and without flip (to compare checkpoints)")
    args = p.parse_args(argv)
    info = locate(args.checkpoint)
    patch = info.card.get("patch_size")
    settings = [(f"windows of the patch {patch}", {"whole": False, "flip": False}),
                (f"windows of {args.window}^3", {"window": (args.window,) * 3, "flip": False}),
                ("whole volume", {"whole": True, "flip": False}),
                ("windows of the patch + flip", {"whole": False, "flip": True}),
                ("whole volume + flip", {"whole": True, "flip": True})]
    if args.patch_only:
        settings = [settings[0], settings[3]]
    print("| subject | setting | seconds | peak RSS (MB) | SSIM | PSNR (dB) | MAE |")
    print("|---|---|---|---|---|---|---|")
    for folder in args.subjects:
        sid = folder.name
        scan = load_volume(folder / f"{sid}_{args.source}.nii.gz", modality=args.source)
        truth = load_volume(folder / f"{sid}_{args.target}.nii.gz", modality=args.target)
        mask_name = "labels" if args.target.startswith("ct") else "brainmask"
        mask = load_volume(folder / f"{sid}_{mask_name}.nii.gz").data > 0

        def run(scan=scan, **options):  # type: ignore[no-untyped-def]
            return translate(scan, info.method, args.target, source=args.source,
                             checkpoint=str(info.directory), device="cpu", memory_budget_mb=1e6,
                             **options)

        run(whole=False, flip=False)  # warm-up: the checkpoint is loaded once
        for label, options in settings:
            start = time.perf_counter()
            result = run(**options)
            seconds = time.perf_counter() - start
            s = evaluate(result.volume, truth, mask=mask, normalise=True, modality=args.target)
            print(f"| {folder.parent.name}/{sid} | {label} | {seconds:.2f} | {_peak_rss_mb():.0f} | "
                  f"{s['ssim']:.4f} | {s['psnr']:.2f} | {s['mae']:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
