"""A 1 mm subject translated by a 1 mm checkpoint and by a 4 mm one, beside the truth.

    python scripts/native_resolution_figure.py COHORT_DIR FINE:METHOD COARSE:METHOD \
        [--subject sub-001] [--to t2] [--from t1] [-o docs/native-resolution.png]

COHORT_DIR: a 1 mm phantom cohort (``modality-synth phantom DIR --preset fine --seed S``) none of
the checkpoints was trained on. FINE and COARSE are checkpoint names or run folders; each
translates the subject's source scan with ``translate`` (the 4 mm one runs on its 4 mm grid and
its result comes back to 1 mm, as for any user). The figure shows one axial slice and a 4x
enlarged crop of it: the source, the 1 mm result, the 4 mm result, and the acquired target, each
titled with the slice's SSIM in the brain (the project's scoring, ``metrics.evaluate``) where it
is a synthesis (for ``--to ct``: MAE in HU inside the head, CT panels in a fixed -200..1600 HU
window). Written atomically.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

CT_WINDOW = (-200.0, 1600.0)  # HU: soft tissue dark grey, bone white


def _panel(ax, image: np.ndarray, title: str, lo: float, hi: float) -> None:
    ax.imshow(image.T, cmap="gray", origin="lower", vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cohort", type=Path)
    p.add_argument("fine")
    p.add_argument("coarse")
    p.add_argument("--subject", default="sub-001")
    p.add_argument("--from", dest="source", default="t1")
    p.add_argument("--to", dest="target", default="t2")
    p.add_argument("--slice", type=int, default=None, help="axial slice (default: the brain's middle)")
    p.add_argument("-o", "--out", type=Path, default=Path("docs/native-resolution.png"))
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synth_core.inference import translate
    from synth_core.io import load_volume
    from synth_core.metrics import evaluate
    from synth_core.zoo import resolve

    folder = args.cohort / args.subject
    sid = args.subject
    scan = load_volume(folder / f"{sid}_{args.source}.nii.gz", modality=args.source)
    truth = load_volume(folder / f"{sid}_{args.target}.nii.gz", modality=args.target)
    brain = load_volume(folder / f"{sid}_brainmask.nii.gz").data > 0
    ct = args.target == "ct"
    # CT is scored as the project scores it (MAE in HU inside the head: phantom labels > 0) and
    # shown in a fixed window that holds both brain and bone; MR by SSIM inside the brain.
    head = load_volume(folder / f"{sid}_labels.nii.gz").data > 0 if ct else None
    results = []
    for spec in (args.fine, args.coarse):
        name, method = spec.rsplit(":", 1)
        info = resolve(name, method=method, source=args.source, target=args.target)
        out = translate(scan, method, args.target, source=args.source, checkpoint=name, device="cpu")
        spacing = "x".join(f"{v:g}" for v in info.card.get("spacing") or (4, 4, 4))
        if ct:
            mae = evaluate(out.volume, truth, mask=head, normalise=True)["mae"]
            score = f"MAE {mae:.0f} HU (head, whole volume)"
        else:
            ssim = evaluate(out.volume, truth, mask=brain, normalise=True)["ssim"]
            score = f"SSIM {ssim:.3f} (brain, whole volume)"
        results.append((f"{method} at {spacing} mm\n{score}", out.volume.data))
    z = args.slice if args.slice is not None else int(np.mean(np.nonzero(brain.any(axis=(0, 1)))))
    grid = "x".join(f"{v:g}" for v in scan.spacing)
    rows = [(f"{args.source.upper()} input ({grid} mm)", scan.data)] + results + [
        (f"acquired {args.target.upper()} ({grid} mm)", truth.data)]
    xs, ys = np.nonzero(brain[:, :, z])
    half = max(4, round(24 / float(scan.spacing[0])))  # a 48 mm square over the lateral cortex
    x0 = int(np.clip(xs.min() - half // 4, 0, brain.shape[0] - 2 * half))
    y0 = int(np.clip(ys.mean() - half, 0, brain.shape[1] - 2 * half))
    crop = (slice(x0, x0 + 2 * half), slice(y0, y0 + 2 * half))
    fig, axes = plt.subplots(2, len(rows), figsize=(3.0 * len(rows), 6.4))
    for col, (title, data) in enumerate(rows):
        image = data[:, :, z]
        lo, hi = CT_WINDOW if ct and col > 0 else np.percentile(data[brain], [1, 99.5])
        _panel(axes[0, col], image, title, lo, hi)
        _panel(axes[1, col], image[crop], "enlarged: the yellow 48 x 48 mm square", lo, hi)
        axes[0, col].add_patch(matplotlib.patches.Rectangle(
            (crop[0].start, crop[1].start), 2 * half, 2 * half, fill=False, color="yellow", lw=0.8))
    fig.suptitle(f"phantom {sid}, axial slice {z}: {args.source.upper()} -> "
                 f"{args.target.upper()}, each model on its own grid, shown on the input's", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(suffix=".png", dir=args.out.parent)
    os.close(handle)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
