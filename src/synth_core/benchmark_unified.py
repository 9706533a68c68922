"""Unified any-to-any against pairwise pix2pix: the paper's Table 1 in miniature.

One unified model (``modality-synth train --method unified --modalities t1,t1ce,t2,flair``),
its ablation without the disentanglement loss (eq. 5), and one pix2pix model per direction
(12 for four contrasts) of the same spatial mode and backbone (the same U-Net, 2D axial slices,
batch 8), the twelve sharing the unified model's training time: each gets the steps that fit a
twelfth of it at the step time measured here for each method. Every model is scored on
held-out phantom subjects (a cohort seed none was trained on, tumours in a stated share of
them) in every direction: MAE (L1), PSNR and SSIM inside the brain mask in the project's
scoring normalisation (``metrics.evaluate(..., normalise=True)``: each volume's 1st-99th
percentile to [0, 1]), and the lesion fidelity: the tumour's contrast against normal white
matter in the synthesis as a ratio of the true target's (``validity.lesions``).

``scripts/bench_unified.py`` runs the stages (each resumable: a finished run is kept) and
writes ``unified.json`` and ``unified.md``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synth_core.io import atomic_write_json, atomic_write_text

MODALITIES = ("t1", "t1ce", "t2", "flair")
TUMOUR, WHITE_MATTER = 16, 11  # phantom labels
BATCH = 8  # slices a step, for every model


def directions(modalities: tuple[str, ...] = MODALITIES) -> list[tuple[str, str]]:
    return [(a, b) for a in modalities for b in modalities if a != b]


def seconds_per_step(method: str, overrides: dict[str, Any], shape: tuple[int, int] = (48, 64),
                     steps: int = 6) -> float:
    """A training step's wall time (s) on random slices of ``shape``, after two warm-up steps:
    how the pairwise models' step counts are set to the unified model's time."""
    import torch

    from synth_core.methods import build_config, get_method_class

    config = build_config(method, "cpu", overrides)
    model = get_method_class(method)(config, "t1", "t2")
    optimizers = model.configure_optimizers()

    class _Ctx:
        global_step = 0

        def optimize(self, index: int, loss: torch.Tensor) -> bool:
            optimizers[index].zero_grad()
            loss.backward()
            optimizers[index].step()
            return True

    g = torch.Generator().manual_seed(0)
    x = torch.rand(config.train.batch_size, 1, *shape, generator=g) * 2 - 1
    codes = torch.arange(config.train.batch_size) % 2
    batch = {"source": x, "target": x.flip(-1), "source_code": codes, "target_code": 1 - codes}
    for _ in range(2):
        model.adversarial_step(batch, _Ctx())
    start = time.perf_counter()
    for _ in range(steps):
        model.adversarial_step(batch, _Ctx())
    return (time.perf_counter() - start) / steps


def _train(out: Path, **request: Any) -> dict[str, Any]:
    """Train one run into ``out`` (kept if it finished before); its wall time and steps."""
    from synth_core.training import TrainRequest, train

    record = out / "bench_run.json"
    if record.is_file():
        return json.loads(record.read_text(encoding="utf-8"))
    start = time.perf_counter()
    result = train(TrainRequest(out=out, register=False, **request))
    entry = {"run": out.name, "steps": result.steps, "seconds": time.perf_counter() - start}
    atomic_write_json(record, entry, overwrite=True)
    return entry


def train_unified(data: Path, out: Path, steps: int, *, ablation: bool = False) -> dict[str, Any]:
    """The unified model (``cpu`` preset, 2D) for ``steps`` steps; with ``ablation`` the
    disentanglement weight is 0."""
    overrides: dict[str, Any] = {"max_steps": steps}
    if ablation:
        overrides["lambda_disentangle"] = 0.0
    return _train(out / ("ablation" if ablation else "unified"), method="unified", data=data,
                  source="", target="", modalities=MODALITIES, preset="cpu", overrides=overrides)


PAIRWISE = {"spatial": "2d", "batch_size": BATCH, "val_every": 100_000}


def train_pairwise(data: Path, out: Path, total_seconds: float,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Twelve pix2pix models (2D, the unified model's backbone and batch) sharing
    ``total_seconds`` of training: steps each = total / 12 / the measured step time."""
    per_step = seconds_per_step("pix2pix", PAIRWISE)
    steps = max(1, int(total_seconds / len(directions()) / per_step))
    log(f"pix2pix: {per_step:.3f} s a step -> {steps} steps for each of {len(directions())} models")
    runs = {}
    for source, target in directions():
        runs[f"{source}->{target}"] = _train(
            out / f"pix2pix-{source}-{target}", method="pix2pix", data=data, source=source,
            target=target, preset="cpu", overrides=PAIRWISE | {"max_steps": steps})
        log(f"pix2pix {source} -> {target}: {runs[f'{source}->{target}']}")
    return {"seconds_per_step": per_step, "steps_each": steps, "runs": runs}


@functools.lru_cache(maxsize=16)
def _subject(index: int, seed: int, lesion: str | None) -> Any:
    from synth_core.phantom import generate_subject

    return generate_subject(index, seed=seed, preset="small", lesion=lesion)


def heldout_cohort(seed: int, subjects: int, lesion_fraction: float) -> list[Any]:
    """The held-out subjects, as ``modality-synth phantom DIR --seed S --subjects N
    --lesion-fraction F`` draws them."""
    from synth_core.phantom.cohort import _lesion_plan

    lesions = _lesion_plan(subjects, seed, lesion_fraction, 0.0)
    return [_subject(i, seed, lesions[i]) for i in range(subjects)]


def score_models(models: dict[str, Callable[[str, str], str]], cohort: list[Any],
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every model in every direction on every subject.

    Args:
        models: name -> ``(source, target) -> checkpoint folder``.
        cohort: phantom subjects (``heldout_cohort``).

    Returns:
        ``{model: {"SRC->TGT": {"mae", "psnr", "ssim", "lesion_ratio", "subjects"}}}`` with the
        means over subjects (the lesion ratio over subjects with a tumour, NaN without).
    """
    from synth_core.inference import translate
    from synth_core.metrics import evaluate
    from synth_core.validity.lesions import lesion_contrast_ratio

    out: dict[str, Any] = {}
    for name, checkpoint_for in models.items():
        out[name] = {}
        for source, target in directions():
            checkpoint = checkpoint_for(source, target)
            method = json.loads((Path(checkpoint) / "model.json").read_text())["method"]
            rows, ratios = [], []
            for subject in cohort:
                result = translate(subject.volumes[source], method, target, source=source,
                                   checkpoint=checkpoint, device="cpu")
                truth = subject.volumes[target]
                mask = subject.volumes["brainmask"].data > 0
                scores = evaluate(result.volume, truth, mask=mask, normalise=True, modality=target)
                rows.append({k: scores[k] for k in ("mae", "psnr", "ssim")})
                labels = subject.volumes["labels"].data
                if (labels == TUMOUR).any():
                    ratios.append(lesion_contrast_ratio(result.volume.data, truth.data,
                                                        labels == TUMOUR,
                                                        labels == WHITE_MATTER)["ratio"])
            entry = {k: float(np.mean([r[k] for r in rows])) for k in ("mae", "psnr", "ssim")}
            entry["lesion_ratio"] = float(np.mean(ratios)) if ratios else float("nan")
            entry["subjects"] = len(rows)
            out[name][f"{source}->{target}"] = entry
            log(f"{name} {source}->{target}: SSIM {entry['ssim']:.3f} PSNR {entry['psnr']:.2f} "
                f"MAE {entry['mae']:.4f} lesion {entry['lesion_ratio']:.2f}")
    return out


def parameters(checkpoint: str | Path) -> int:
    """Numbers stored in a checkpoint's inference weights."""
    from safetensors import safe_open

    with safe_open(str(Path(checkpoint) / "model.safetensors"), "pt") as handle:
        return sum(int(np.prod(handle.get_slice(k).get_shape())) for k in handle.keys())


def report(results: dict[str, Any], out: Path) -> Path:
    """Write ``unified.json`` and the markdown tables ``unified.md``; return the latter."""
    atomic_write_json(out / "unified.json", results, overwrite=True)
    scores = results["scores"]
    names = list(scores)
    lines = ["| direction | " + " | ".join(f"{n} SSIM | {n} PSNR dB | {n} MAE" for n in names) + " |",
             "|---|" + "---|" * (3 * len(names))]
    for way in scores[names[0]]:
        cells = []
        for n in names:
            e = scores[n][way]
            cells += [f"{e['ssim']:.3f}", f"{e['psnr']:.2f}", f"{e['mae']:.4f}"]
        lines.append(f"| {way} | " + " | ".join(cells) + " |")
    means = []
    for n in names:
        entries = list(scores[n].values())
        means += [f"**{np.mean([e[k] for e in entries]):.{d}f}**"
                  for k, d in (("ssim", 3), ("psnr", 2), ("mae", 4))]
    lines.append("| mean | " + " | ".join(means) + " |")
    lines += ["", "| direction | " + " | ".join(f"{n} lesion ratio" for n in names) + " |",
              "|---|" + "---|" * len(names)]
    for way in scores[names[0]]:
        lines.append(f"| {way} | " + " | ".join(f"{scores[n][way]['lesion_ratio']:.2f}"
                                                 for n in names) + " |")
    if "unified" in scores and "pix2pix" in scores:
        wins = sum(scores["unified"][w]["ssim"] >= scores["pix2pix"][w]["ssim"]
                   for w in scores["unified"])
        lines += ["", f"unified at least as good as pix2pix (SSIM) in {wins} of "
                      f"{len(scores['unified'])} directions"]
    text = "\n".join(lines) + "\n"
    return atomic_write_text(out / "unified.md", text, overwrite=True)
