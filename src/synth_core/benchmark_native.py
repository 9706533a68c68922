"""Native-resolution speed figures: 1 mm translation, the CPU's ceiling, CLI start-up.

``modality-synth benchmark --only native`` (and ``scripts/bench.py``) print these:

- the sgemm ceiling: a 2048 x 2048 float32 matrix product, GFLOP/s, measured in the same
  run as everything else, so the achieved fraction below compares like with like;
- a 1 mm whole-brain translation (nilearn's 1 mm MNI152 T1, 197 x 233 x 189 voxels) with a
  pix2pix checkpoint at 1 mm, in a fresh child process: wall seconds, peak RSS, and the
  generator's achieved GFLOP/s (floating-point operations counted by PyTorch's
  ``FlopCounterMode`` on one window, times the windows run, over the time spent in them);
- the two U-Net upsamplings (transposed convolution, interpolation plus convolution) on
  one window, and trilinear resampling 4 mm -> 1 mm with scipy and with SimpleITK;
- the steps around the network, each beside what it replaced: hole filling and the input
  check's depth map (scipy, SimpleITK), and the output's gzip on one thread and on every core;
- where a 1 mm ``translate`` spends its time: imports, reading, loading the checkpoint, the
  translation, writing (a fresh process);
- CLI start-up: ``modality-synth models`` and a 1 mm ``translate`` end to end, as
  subprocesses, beside a bare ``python -c pass``.

Without a bundled 1 mm pix2pix checkpoint, an untrained one of the ``cpu-l1`` preset (64^3
windows) at 1 mm stands in: speed and memory do not depend on the weights' values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FINE_CHECKPOINT = "pix2pix-t1-t2-fine"  # the bundled 1 mm checkpoint, when present


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of an n x n float32 matrix product (2 n^3 operations)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def mni_t1_1mm(path: Path) -> Path:
    """Write nilearn's 1 mm MNI152 T1 template (197 x 233 x 189) to ``path`` (NIfTI)."""
    import nibabel as nib
    from nilearn import datasets

    image = datasets.load_mni152_template(resolution=1)
    data = image.get_fdata(dtype="float32")
    nib.save(nib.Nifti1Image(data, image.affine), path)
    return path


def stand_in_checkpoint(out: Path, patch: int = 64, reference: Path | None = None) -> Path:
    """An untrained ``cpu-l1``-preset pix2pix with a 1 mm trained-on-patches card (for timing
    only: the network, window and card of the 1 mm runs, without their weights). With a
    ``reference`` T1 the card carries an input reference made from it, as a trained card
    does, so ``translate`` runs the input check's fingerprint as it would for a real one."""
    from synth_core import zoo
    from synth_core.methods import build_config, get_method_class

    extra = {}
    if reference is not None:
        from synth_core.input_check import make_reference
        from synth_core.io import load_volume

        data = load_volume(reference, modality="t1").data
        extra["input_reference"] = {"t1": make_reference([data, data], "t1")}

    config = build_config("pix2pix", "cpu-l1", {"patch_size": patch})
    method = get_method_class("pix2pix")(config, "t1", "t2").eval()
    zoo.save_model(method, out, {
        "method": "pix2pix", "source": "t1", "target": "t2", "preset": "cpu-l1",
        "config": __import__("dataclasses").asdict(config),
        "capabilities": method.capabilities.to_dict(), "spacing": [1.0, 1.0, 1.0],
        "patch_size": [patch] * 3, "multiple": config.train.multiple,
        "normalisation": {"source": "per-volume"}, "note": "untrained stand-in for timing",
        **extra})
    return out


def _checkpoint(tmp: Path, reference: Path | None = None) -> tuple[str, str]:
    from synth_core.zoo import list_checkpoints

    for info in list_checkpoints("pix2pix", "t1", "t2"):
        if info.name == FINE_CHECKPOINT:
            return str(info.directory), info.name
    return (str(stand_in_checkpoint(tmp / "stand-in", reference=reference)),
            "untrained stand-in (cpu-l1 preset)")


def child_translate_1mm(input_path: str, checkpoint: str) -> dict[str, Any]:
    """Translate the 1 mm T1 at 1 mm; time the generator's windows and count their FLOPs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from synth_core import inference
    from synth_core.benchmark import _peak_rss_mb
    from synth_core.io import load_volume
    from synth_core.methods import SynthesisRequest

    volume = load_volume(input_path, modality="t1")
    start = time.perf_counter()
    info = inference.zoo.resolve(checkpoint, method="pix2pix", target="t2")
    model = inference._cached_method(str(info.directory), info.sha256, "cpu")
    timing = {"windows": 0, "seconds": 0.0, "shape": None}
    plain = model.synthesize

    def timed(x: torch.Tensor, request: SynthesisRequest) -> torch.Tensor:
        begin = time.perf_counter()
        out = plain(x, request)
        timing["seconds"] += time.perf_counter() - begin
        timing["windows"] += 1
        timing["shape"] = list(x.shape[2:])
        return out

    model.synthesize = timed  # type: ignore[method-assign]
    result = inference.translate(volume, "pix2pix", "t2", checkpoint=checkpoint, device="cpu")
    wall = time.perf_counter() - start
    model.synthesize = plain  # type: ignore[method-assign]
    window = torch.zeros(1, 1, *timing["shape"])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        plain(window, SynthesisRequest())
    flops = counter.get_total_flops() * timing["windows"]
    return {"shape": list(volume.shape), "wall_s": wall, "network_s": timing["seconds"],
            "windows": timing["windows"], "window": timing["shape"], "gflop": flops / 1e9,
            "gflops_per_s": flops / 1e9 / timing["seconds"], "peak_rss_mb": _peak_rss_mb(),
            "model_grid": result.provenance["Resolution"]["ModelGrid"],
            "threads": torch.get_num_threads()}


def child_translate_stages(input_path: str, checkpoint: str, out_path: str) -> dict[str, Any]:
    """Where a 1 mm ``translate`` spends its time, stage by stage, in a fresh process (call it
    through ``benchmark._in_child``): the imports the CLI's translate needs, reading the input,
    loading the checkpoint, ``translate`` itself (reorient, normalise, the network in windows,
    back to the input's grid) and writing the NIfTI and its sidecar. The interpreter's own
    start-up is not included (``cli_startup`` measures it)."""
    begin = time.perf_counter()
    import torch

    from synth_core import cli, inference  # noqa: F401  (what a CLI translate imports)
    from synth_core.io import load_volume, save_volume
    from synth_core.methods import get_method_class

    get_method_class("pix2pix")
    stages = {"imports_s": time.perf_counter() - begin}
    start = time.perf_counter()
    volume = load_volume(input_path, modality="t1")
    stages["read_s"] = time.perf_counter() - start
    start = time.perf_counter()
    info = inference.zoo.resolve(checkpoint, method="pix2pix", target="t2")
    inference._cached_method(str(info.directory), info.sha256, "cpu")
    stages["load_s"] = time.perf_counter() - start
    model = inference._cached_method(str(info.directory), info.sha256, "cpu")
    plain, network = model.synthesize, [0.0]

    def timed(*args: Any) -> Any:
        begin = time.perf_counter()
        out = plain(*args)
        network[0] += time.perf_counter() - begin
        return out

    model.synthesize = timed  # type: ignore[method-assign]
    start = time.perf_counter()
    result = inference.translate(volume, "pix2pix", "t2", checkpoint=checkpoint, device="cpu")
    stages["translate_s"] = time.perf_counter() - start
    model.synthesize = plain  # type: ignore[method-assign]
    stages["of_which_network"] = network[0]
    start = time.perf_counter()
    save_volume(result.volume, out_path, overwrite=True)
    stages["save_s"] = time.perf_counter() - start
    stages["total_s"] = time.perf_counter() - begin
    stages["threads"] = torch.get_num_threads()
    # nibabel imports pydicom whenever it is installed (the dev extra): about 0.3 s of imports.
    stages["pydicom_imported"] = "pydicom" in sys.modules
    return stages


def upsampling_seconds(size: int = 64, repeats: int = 3) -> dict[str, float]:
    """Forward seconds of the ``cpu`` pix2pix U-Net on one size^3 window, per upsampling:
    transposed convolutions as the U-Net runs them (the output level through
    ``synth_core.nn.subpixel``), the same with every level a plain ``ConvTranspose3d``, and
    interpolation plus convolution."""
    import torch

    from synth_core.nn import UNet, unet

    x = torch.randn(1, 1, size, size, size)
    out = {}
    default = unet.SUBPIXEL_MAX_CHANNELS
    for label, kind, subpixel in (("transpose", "transpose", default),
                                  ("transpose_plain", "transpose", 0),
                                  ("interp", "interp", default)):
        unet.SUBPIXEL_MAX_CHANNELS = subpixel
        try:
            net = UNet(3, 1, 1, features=16, depth=4, dropout=0.0, upsample=kind).eval()
        finally:
            unet.SUBPIXEL_MAX_CHANNELS = default
        with torch.no_grad():
            net(x)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                net(x)
                best = min(best, time.perf_counter() - start)
        out[label] = best
    return out


def resampling_seconds(repeats: int = 2) -> dict[str, float]:
    """Best-of seconds to map a 4 mm grid (49 x 58 x 47) back onto 1 mm (197 x 233 x 189),
    trilinear: scipy's ``affine_transform`` against the SimpleITK path ``translate`` uses."""
    import numpy as np
    from scipy import ndimage

    from synth_core.preprocess import _sitk_affine

    source = np.random.default_rng(0).random((49, 58, 47), dtype=np.float32)
    matrix, offset, shape = np.eye(3) * 0.25, np.full(3, -0.375), (197, 233, 189)
    out = {"scipy": float("inf"), "simpleitk": float("inf")}
    for _ in range(repeats):
        start = time.perf_counter()
        ndimage.affine_transform(source, matrix, offset, shape, np.float32, 1, "nearest")
        out["scipy"] = min(out["scipy"], time.perf_counter() - start)
        start = time.perf_counter()
        _sitk_affine(source, matrix, offset, shape, 1)
        out["simpleitk"] = min(out["simpleitk"], time.perf_counter() - start)
    return out


def preparation_seconds(t1_path: Path, repeats: int = 2) -> dict[str, float]:
    """Best-of seconds of the steps around the network on a 1 mm T1, each beside what it
    replaced: filling the foreground mask's holes (scipy, SimpleITK), the input check's
    depth map (scipy's Euclidean distance transform, SimpleITK's Maurer map), and gzip
    compression of a 1 mm float32 synthetic-like volume (the T1 plus 1 % noise, as little
    compressible as a network's output): zlib as nibabel writes it, ISA-L on one thread and
    on every core."""
    import gzip

    import numpy as np
    from scipy import ndimage

    from synth_core.io import default_threads, gzip_bytes, load_volume
    from synth_core.preprocess import distance_inside, fill_holes, foreground_mask

    data = load_volume(t1_path, modality="t1").data
    mask = foreground_mask(data, "t1")
    noisy = data + np.random.default_rng(0).normal(0, 0.01 * float(data.max()), data.shape)
    raw = noisy.astype(np.float32).tobytes()
    threads = default_threads()
    steps = {"fill_holes_scipy": lambda: ndimage.binary_fill_holes(mask),
             "fill_holes_simpleitk": lambda: fill_holes(mask),
             "distance_scipy": lambda: ndimage.distance_transform_edt(mask),
             "distance_simpleitk": lambda: distance_inside(mask),
             "gzip_zlib_1_thread": lambda: gzip.compress(raw, compresslevel=1),
             "gzip_isal_1_thread": lambda: gzip_bytes(raw, threads=1),
             f"gzip_isal_{threads}_threads": lambda: gzip_bytes(raw, threads=threads)}
    out = {}
    for name, step in steps.items():
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - start)
        out[name] = best
    return out


def _wall(args: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def cli_startup(input_path: Path, checkpoint: str, tmp: Path, repeats: int = 3) -> dict[str, float]:
    """Best-of wall seconds: bare interpreter, ``models``, a 1 mm ``translate`` end to end."""
    python = [sys.executable]
    cli = python + ["-m", "synth_core.cli"]
    out = tmp / "t2.nii.gz"
    translate = cli + ["translate", str(input_path), "-o", str(out), "--method", "pix2pix",
                       "--to", "t2", "--checkpoint", checkpoint, "--device", "cpu", "--overwrite"]
    return {"python_s": _wall(python + ["-c", "pass"], repeats),
            "models_s": _wall(cli + ["models"], repeats),
            "translate_1mm_s": _wall(translate, max(1, repeats - 1))}


def run_native(report: dict[str, Any], quick: bool = False) -> dict[str, Any]:
    """Measure and print the native-resolution figures into ``report["native"]``."""
    from synth_core.benchmark import _in_child

    native: dict[str, Any] = {"threads_env": os.environ.get("OMP_NUM_THREADS", "all cores")}
    native["sgemm_gflops"] = sgemm_gflops()
    print(f"sgemm ceiling (2048^2 float32): {native['sgemm_gflops']:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        t1 = mni_t1_1mm(tmp / "mni_t1.nii.gz")
        checkpoint, name = _checkpoint(tmp, reference=t1)
        native["checkpoint"] = name
        run = _in_child("child_translate_1mm", input_path=str(t1), checkpoint=checkpoint,
                        module="synth_core.benchmark_native")
        native["translate_1mm"] = run
        if "error" not in run:
            fraction = run["gflops_per_s"] / native["sgemm_gflops"]
            run["fraction_of_sgemm"] = fraction
            print(f"1 mm translate {tuple(run['shape'])} with {name}: {run['wall_s']:.2f} s "
                  f"({run['windows']} windows of {run['window']}, network {run['network_s']:.2f} s), "
                  f"peak RSS {run['peak_rss_mb']:.0f} MB (goal <= 4096), generator "
                  f"{run['gflops_per_s']:.1f} GFLOP/s = {fraction:.2f} of sgemm (goal >= 0.4)")
        else:
            print(f"1 mm translate failed: {run['error']}")
        native["resampling_s"] = resampling_seconds()
        r = native["resampling_s"]
        print(f"4 mm -> 1 mm trilinear resampling: scipy {r['scipy']:.2f} s, "
              f"SimpleITK {r['simpleitk']:.2f} s")
        native["upsampling_s"] = upsampling_seconds(64, 2 if quick else 3)
        up = native["upsampling_s"]
        print(f"U-Net forward on 64^3: transposed convolutions {up['transpose']:.2f} s "
              f"(all plain ConvTranspose3d: {up['transpose_plain']:.2f} s), "
              f"interpolation + convolution {up['interp']:.2f} s")
        native["preparation_s"] = preparation_seconds(t1)
        print("around the network (1 mm T1): "
              + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in native["preparation_s"].items()))
        stages = _in_child("child_translate_stages", input_path=str(t1), checkpoint=checkpoint,
                           out_path=str(tmp / "stages_t2.nii.gz"), module="synth_core.benchmark_native")
        native["translate_stages"] = stages
        if "error" not in stages:
            print("1 mm translate by stage (fresh process, after the interpreter's start-up): "
                  + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in stages.items() if k.endswith("_s"))
                  + f" (translate's network {stages['of_which_network']:.2f} s; pydicom "
                  + ("imported by nibabel, a development-only dependency"
                     if stages["pydicom_imported"] else "not installed") + ")")
        native["cli"] = cli_startup(t1, checkpoint, tmp, 2 if quick else 3)
        c = native["cli"]
        print(f"CLI start-up: python -c pass {c['python_s']:.2f} s, models {c['models_s']:.2f} s "
              f"(goal < 0.5), 1 mm translate end to end {c['translate_1mm_s']:.2f} s (goal < 3)")
    report["native"] = native
    return native


def run_native_report(out: Path, quick: bool = False) -> dict[str, Any]:
    """``modality-synth benchmark --only native``: these figures alone, in ``out/benchmark.json``."""
    from synth_core.benchmark import run_benchmarks

    return run_benchmarks(out, quick=quick, only="native")


if __name__ == "__main__":  # pragma: no cover - for `python -m synth_core.benchmark_native`
    result: dict[str, Any] = {}
    run_native(result, quick="--quick" in sys.argv)
    print(json.dumps(result, indent=2))


def score_native(data: Path, checkpoints: list[tuple[str, str]], source: str = "t1",
                 targets: tuple[str, ...] = ("t2", "ct")) -> list[dict[str, Any]]:
    """Each checkpoint's translations of every subject of a phantom cohort, scored at the
    cohort's own (native) resolution, with the noise floor beside them.

    Args:
        data: a phantom cohort written with ``--clean`` (subjects no model trained on: a
            cohort seed of its own).
        checkpoints: (name or folder, method) pairs; each runs from ``source`` to every
            target of ``targets`` it fits (a 4 mm checkpoint runs on its 4 mm grid and its
            result comes back to the cohort's grid, as ``translate`` always does).
        targets: target modalities to score.

    Every score is ``metrics.evaluate(..., normalise=True)`` against the acquired (noisy)
    target: MR in the brain mask (1st-99th percentile -> [0, 1], data range 1), CT in the
    head (labels > 0) in HU. The noise floor scores the noise-free twin the same way.

    Returns:
        Rows {"subject", "target", "model", "spacing_mm", "mae", "psnr", "ssim", "units"};
        ``model`` is the checkpoint's name, or "noise floor".
    """
    from synth_core.inference import translate
    from synth_core.io import load_volume
    from synth_core.metrics import evaluate
    from synth_core.zoo import resolve

    rows: list[dict[str, Any]] = []
    subjects = sorted(p.name for p in Path(data).iterdir() if p.is_dir() and p.name.startswith("sub-"))
    for sid in subjects:
        folder = Path(data) / sid
        scan = load_volume(folder / f"{sid}_{source}.nii.gz", modality=source)
        brain = load_volume(folder / f"{sid}_brainmask.nii.gz").data > 0
        head = load_volume(folder / f"{sid}_labels.nii.gz").data > 0
        for target in targets:
            truth = load_volume(folder / f"{sid}_{target}.nii.gz", modality=target)
            mask = head if target == "ct" else brain
            clean = load_volume(folder / f"{sid}_{target}_clean.nii.gz", modality=target)
            floor = evaluate(clean, truth, mask=mask, normalise=True)
            rows.append({"subject": sid, "target": target, "model": "noise floor",
                         "spacing_mm": list(scan.spacing), **floor})
            for name, method in checkpoints:
                try:
                    info = resolve(name, method=method, source=source, target=target)
                except Exception:  # the checkpoint does not translate to this target
                    continue
                result = translate(scan, method, target, source=source, checkpoint=name,
                                   device="cpu")
                scores = evaluate(result.volume, truth, mask=mask, normalise=True)
                rows.append({"subject": sid, "target": target, "model": info.name,
                             "spacing_mm": info.card.get("spacing"), **scores})
    return rows


def score_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of ``score_native`` rows: mean over subjects per target and model."""
    lines = ["| target | model | model spacing (mm) | subjects | MAE | PSNR (dB) | SSIM | units |",
             "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["target"], r["model"]) for r in rows}, key=lambda k: (k[0], k[1] != "noise floor", k[1]))
    for target, model in keys:
        group = [r for r in rows if (r["target"], r["model"]) == (target, model)]
        mean = {k: sum(float(r[k]) for r in group) / len(group) for k in ("mae", "psnr", "ssim")}
        spacing = group[0]["spacing_mm"]
        shown = "x".join(f"{v:g}" for v in spacing) if spacing else "?"
        lines.append(f"| {target} | {model} | {shown} | {len(group)} | {mean['mae']:.4f} | "
                     f"{mean['psnr']:.2f} | {mean['ssim']:.4f} | {group[0]['units']} |")
    return "\n".join(lines)
