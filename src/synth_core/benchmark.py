"""Speed and memory figures (``make bench``, ``modality-synth benchmark``).

Every figure is measured when the command runs, never copied. Peak memory is the
peak resident set size (``VmHWM``) of a fresh child process doing only that job, so
earlier work in this process does not inflate it.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from synth_core.errors import UserError
from synth_core.metrics import evaluate
from synth_core.volume import Volume


def normalised_scores(pred: Volume, target: Volume, modality: str,
                      mask: np.ndarray | None = None) -> dict[str, Any]:
    """``metrics.evaluate`` in the project's one scoring normalisation for ``modality``.

    A synthetic PET carries the training cohort's typical scale, a real one its own
    injected dose; normalising each volume on its own (PET / its 95th percentile, MR 1st-99th
    percentile -> [0, 1], CT left in HU) compares shapes of uptake and contrast, not doses
    or gains. The dict carries ``units`` and ``normalisation`` beside the figures.
    """
    return evaluate(pred, target, mask=mask, normalise=True, modality=modality)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB).

    Linux keeps ``ru_maxrss`` across ``execve``, so a child started from a large parent
    would report the parent's peak; ``VmHWM`` belongs to the new address space.
    """
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_translate_full() -> dict[str, Any]:
    """Translate a `full` (2 mm whole-brain) phantom T1 with the pix2pix checkpoint."""
    from synth_core.inference import translate
    from synth_core.phantom import generate_subject

    t1 = generate_subject(0, seed=5, preset="full").volumes["t1"]
    start = time.perf_counter()
    res = translate(t1, method="pix2pix", to="pet", device="cpu")
    wall = time.perf_counter() - start
    return {"shape": list(t1.shape), "wall_s": wall, "peak_rss_mb": _peak_rss_mb(),
            "checkpoint": res.provenance["Checkpoint"]}


def child_sliding_window_1mm(window: int = 96) -> dict[str, Any]:
    """The pix2pix generator run at 1 mm on a 197x233x189 volume in overlapping windows.

    ``translate`` would resample to the model's 4 mm first; this applies the network
    at 1 mm directly to exercise the windowed path on a volume that cannot run whole
    (about 9 GB of activations at this width).
    """
    import torch

    from synth_core.methods import SynthesisRequest
    from synth_core.nn.sliding_window import sliding_window
    from synth_core.zoo import load_method, resolve

    model = load_method(resolve(None, method="pix2pix", source="t1", target="pet"))
    x = torch.randn(1, 1, 197, 233, 189) * 0.3
    start = time.perf_counter()
    with torch.no_grad():
        out = sliding_window(lambda w: model.synthesize(w, SynthesisRequest()), x,
                             (window,) * 3, overlap=0.25)
    wall = time.perf_counter() - start
    return {"shape": list(out.shape[3:]), "window": window, "wall_s": wall,
            "peak_rss_mb": _peak_rss_mb()}


def _in_child(name: str, module: str = "synth_core.benchmark", **kwargs: Any) -> dict[str, Any]:
    code = (f"import json, {module} as b; "
            f"print(json.dumps(b.{name}(**{kwargs!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def training_rate(method: str, data: Path, steps: int, source: str = "t1",
                  target: str = "pet", mode: str | None = None) -> dict[str, Any]:
    """Steady-state training steps per second of a method's `cpu` preset."""
    from synth_core.training import TrainRequest, train

    times: list[float] = []

    def sink(event: Any) -> None:
        if event.kind == "step":
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        train(TrainRequest(method=method, data=data, source=source, target=target,
                           out=Path(tmp) / "run", preset="cpu", mode=mode, register=False,
                           overrides={"max_steps": steps, "val_every": 10**6}), sink=sink)
    steady = times[2:]  # the first steps include warm-up
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 2 else float("nan")
    return {"method": method, "steps": steps, "steps_per_second": rate,
            "seconds_per_step": 1 / rate if rate else float("nan")}


def run_benchmarks(out: Path, quick: bool = False, only: str | None = None) -> dict[str, Any]:
    """Measure and print every figure (or ``only="native"``: the native-resolution ones,
    ``synth_core.benchmark_native``); write them to ``out/benchmark.json``."""
    from synth_core.benchmark_native import run_native
    from synth_core.phantom import bench_subject, write_cohort
    from synth_core.zoo import list_checkpoints

    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": _machine()}
    print(f"machine: {report['machine']}")
    if only is not None and only != "native":
        raise UserError(f"unknown benchmark {only!r}; use --only native, or no --only for all")
    run_native(report, quick=quick)
    if only == "native":
        (out / "benchmark.json").write_text(json.dumps(report, indent=2))
        print(f"wrote {out / 'benchmark.json'}")
        return report
    fine = min(bench_subject("fine") for _ in range(1 if quick else 2))
    report["phantom_fine_s"] = fine
    print(f"phantom: one `fine` (1 mm) subject {fine:.1f} s")
    bench_subject("full")  # builds and caches the template
    report["phantom_full_s"] = min(bench_subject("full") for _ in range(3))
    report["phantom_small_s"] = min(bench_subject("small") for _ in range(3))
    print(f"phantom: one `full` subject {report['phantom_full_s']:.2f} s (target <= 3 s); "
          f"one `small` subject {report['phantom_small_s']:.2f} s")

    if list_checkpoints("pix2pix", "t1", "pet"):
        full = _in_child("child_translate_full")
        report["translate_full"] = full
        if "error" not in full:
            print(f"translate full phantom T1 {tuple(full['shape'])} with pix2pix: "
                  f"{full['wall_s']:.2f} s, peak RSS {full['peak_rss_mb']:.0f} MB")
        window = _in_child("child_sliding_window_1mm")
        report["sliding_window_1mm"] = window
        if "error" not in window:
            print(f"1 mm 197x233x189 through {window['window']}^3 windows: {window['wall_s']:.1f} s, "
                  f"peak RSS {window['peak_rss_mb']:.0f} MB (target < 4096 MB)")
    else:
        print("no pix2pix t1->pet checkpoint: translate figures skipped")

    with tempfile.TemporaryDirectory() as tmp:
        data = write_cohort(Path(tmp) / "cohort", 6, seed=0, preset="small")
        steps = 8 if quick else 30
        rates = []
        for method, target, mode in (("pix2pix", "pet", None), ("cyclegan", "t2", "unpaired")):
            try:
                rate = training_rate(method, data, steps, target=target, mode=mode)
            except UserError as exc:
                rate = {"method": method, "error": str(exc)}
            rates.append(rate)
            if "error" not in rate:
                print(f"training {method} cpu preset: {rate['seconds_per_step']:.3f} s/step "
                      f"({rate['steps_per_second']:.2f} steps/s)")
        report["training"] = rates
    (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'benchmark.json'}")
    return report


def _machine() -> str:
    import os
    import platform

    import torch

    return (f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def evaluate_checkpoint(checkpoint: str | Path, method: str, data: Path, split: str = "test",
                        reverse: bool = False) -> dict[str, Any]:
    """Scores of a checkpoint on its own held-out subjects of a phantom cohort.

    For each subject of ``split`` (the card's split found again in ``data`` by its seed and
    checked against its fingerprints, ``synth_core.data.recover_split``), the
    source scan is translated and scored against the acquired target inside the brain
    mask (``normalised_scores``). Beside it, the noise floor in the same space: the
    phantom's noise-free target scored against the noisy one, the best any method can
    reach against noisy targets.
    """
    from synth_core.data import discover_subjects, recover_split
    from synth_core.inference import translate
    from synth_core.io import load_volume
    from synth_core.phantom import generate_subject
    from synth_core.zoo import resolve

    info = resolve(checkpoint, method=method)
    src, tgt = (info.target, info.source) if reverse else (info.source, info.target)
    records = discover_subjects(data)
    paired = [r for r in records if src in r.paths and tgt in r.paths]
    parts = recover_split([paired, records], info.card["training_data"]).parts()
    ids = [r.subject_id for r in parts[split]]
    cohort = json.loads((data / "cohort.json").read_text(encoding="utf-8"))
    rows = []
    for sid in ids:
        folder = data / sid
        mask = load_volume(folder / f"{sid}_brainmask.nii.gz").data > 0
        truth = load_volume(folder / f"{sid}_{tgt}.nii.gz")
        result = translate(load_volume(folder / f"{sid}_{src}.nii.gz"), method, tgt,
                           checkpoint=str(info.directory), device="cpu")
        scores = normalised_scores(result.volume, truth, tgt, mask)
        subject = generate_subject(int(sid.split("-")[1]) - 1, seed=int(cohort["seed"]),
                                   preset=str(cohort["preset"]))
        floor = normalised_scores(subject.clean[tgt], truth, tgt, mask)
        rows.append({"subject": sid, **scores, "noise_floor_psnr": floor["psnr"],
                     "noise_floor_ssim": floor["ssim"]})
    keys = ("mae", "psnr", "ssim", "corrcoef", "noise_floor_psnr", "noise_floor_ssim")
    summary = {k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows])))
               for k in keys}
    return {"checkpoint": info.name, "sha256": info.sha256, "direction": f"{src}->{tgt}",
            "split": split, "subjects": ids, "rows": rows, "mean_sd": summary}
