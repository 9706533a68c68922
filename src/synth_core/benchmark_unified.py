"""Unified any-to-any against pairwise pix2pix: the paper's Table 1 in miniature.

One unified model (``modality-synth train --method unified --modalities t1,t1ce,t2,flair``),
its ablation without the disentanglement loss (eq. 5), and one pix2pix model per direction
(12 for four contrasts) of the same spatial mode and backbone (the same U-Net; 2D axial slices,
batch 8, or with ``spatial="3d"`` whole volumes, batch 1), the twelve sharing the unified
model's training time: each gets the steps that fit a
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


def seconds_per_step(method: str, overrides: dict[str, Any], shape: tuple[int, ...] = (48, 64),
                     steps: int = 6) -> float:
    """A training step's wall time (s) on random slices (or volumes) of ``shape``, after two
    warm-up steps: how the pairwise models' step counts are set to the unified model's time."""
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


#: Per spatial mode: the unified preset, and the pix2pix batch and step-timing shape (the
#: `small` phantom's 48 x 64 slices or 48 x 64 x 48 volumes).
SPATIAL = {"2d": {"preset": "cpu", "batch_size": BATCH, "shape": (48, 64)},
           "3d": {"preset": "cpu-3d", "batch_size": 1, "shape": (48, 64, 48)}}


def train_unified(data: Path, out: Path, steps: int, *, ablation: bool = False,
                  settings: dict[str, Any] | None = None, spatial: str = "2d",
                  preset: str | None = None) -> dict[str, Any]:
    """The unified model (``preset``, by default ``cpu`` for 2D and ``cpu-3d`` for 3D) for
    ``steps`` steps; with ``ablation`` the disentanglement weight is 0. ``settings`` (as
    ``train --set``) apply on top."""
    overrides: dict[str, Any] = {"max_steps": steps} | (settings or {})
    if ablation:
        overrides["lambda_disentangle"] = 0.0
    return _train(out / ("ablation" if ablation else "unified"), method="unified", data=data,
                  source="", target="", modalities=MODALITIES,
                  preset=preset or SPATIAL[spatial]["preset"],
                  overrides=overrides)


#: The pairwise models' settings: the unified ``cpu`` preset's backbone, batch, learning
#: rate and schedule, and its objective where pix2pix has the term (L1 100, 1 - SSIM 200,
#: no adversarial term).
PAIRWISE = {"spatial": "2d", "batch_size": BATCH, "val_every": 100_000, "lr": 1e-3,
            "lambda_gan": 0.0, "lambda_ssim": 200.0}


def train_pairwise(data: Path, out: Path, total_seconds: float,
                   log: Callable[[str], None] = print,
                   settings: dict[str, Any] | None = None, spatial: str = "2d") -> dict[str, Any]:
    """Twelve pix2pix models (the unified model's spatial mode, backbone and batch) sharing
    ``total_seconds`` of training: steps each = total / 12 / the measured step time.
    ``settings`` (as ``train --set``, for example the weight average) apply to each."""
    mode = SPATIAL[spatial]
    settings = PAIRWISE | {"spatial": spatial, "batch_size": mode["batch_size"]} | (settings or {})
    per_step = seconds_per_step("pix2pix", settings, shape=mode["shape"])
    steps = max(1, int(total_seconds / len(directions()) / per_step))
    log(f"pix2pix: {per_step:.3f} s a step -> {steps} steps for each of {len(directions())} models")
    runs = {}
    for source, target in directions():
        runs[f"{source}->{target}"] = _train(
            out / f"pix2pix-{source}-{target}", method="pix2pix", data=data, source=source,
            target=target, preset="cpu", overrides=settings | {"max_steps": steps})
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


# -- the paper's Table 2 in miniature: a tumour segmenter on real and synthesized contrasts --

LESION_LABELS = {"tumour": 16, "oedema": 17}  # phantom labels; "lesion" is both together


def segmenter_input(volumes: dict[str, Any], mask: np.ndarray,
                    modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
    """``(M, X, Y, Z)`` float32: each contrast in the scoring normalisation (1st-99th
    percentile of the brain to [0, 1]) and zero outside the brain (skull-stripped, as BraTS
    gives its scans), so a synthesized contrast and a real one enter on the same scale."""
    from synth_core.metrics import scoring_normalise

    return np.stack([scoring_normalise(np.asarray(volumes[m].data), m, mask) * mask
                     for m in modalities]).astype(np.float32)


def segmenter_target(labels: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` int64 classes: 0 background, 1 tumour, 2 oedema."""
    out = np.zeros(labels.shape, dtype=np.int64)
    for k, value in enumerate(LESION_LABELS.values(), start=1):
        out[labels == value] = k
    return out


def make_segmenter() -> Any:
    """MONAI's 3D UNet, four contrasts in, background/tumour/oedema out; small enough to
    train in minutes on one CPU thread at 4 mm (48 x 64 x 48)."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=len(MODALITIES), out_channels=1 + len(LESION_LABELS),
                channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1)


def train_segmenter(data: Path, out: Path, steps: int, seed: int = 0,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the segmenter on the real four contrasts of every subject in ``data`` (a
    ``modality-synth phantom`` folder) with MONAI's DiceCELoss (its DiceLoss, softmax,
    background left out, plus cross-entropy), Adam 1e-3, two volumes a step, random
    left-right flips; weights to ``out/segmenter.safetensors`` (kept if that exists).

    Dice alone left the oedema class spread over the whole brain after 600 steps (its Dice
    0.03 with four real contrasts, the tumour's 0.93): with few steps and a small class the
    soft Dice's gradient favours over-segmentation, and the cross-entropy term is the usual
    remedy (nnU-Net trains with both)."""
    import torch
    from monai.losses import DiceCELoss
    from safetensors.torch import save_file

    from synth_core.data import discover_subjects
    from synth_core.io import load_volume

    weights = out / "segmenter.safetensors"
    record = out / "segmenter.json"
    if weights.is_file() and record.is_file():
        return json.loads(record.read_text(encoding="utf-8"))
    images, targets = [], []
    for rec in discover_subjects(data):
        paths = rec.paths
        if not all(m in paths for m in (*MODALITIES, "labels", "brainmask")):
            continue
        vols = {m: load_volume(paths[m]) for m in MODALITIES}
        mask = load_volume(paths["brainmask"]).data > 0
        images.append(segmenter_input(vols, mask))
        targets.append(segmenter_target(np.asarray(load_volume(paths["labels"]).data)))
    if not images:
        raise ValueError(f"no subject in {data} has all of {MODALITIES}, labels and a brain mask")
    x_all = torch.from_numpy(np.stack(images))
    y_all = torch.from_numpy(np.stack(targets))[:, None]
    torch.manual_seed(seed)
    net = make_segmenter()
    loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(x_all), (2,), generator=g)
        x, y = x_all[idx], y_all[idx]
        if bool(torch.rand((), generator=g) < 0.5):
            x, y = x.flip(2), y.flip(2)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"segmenter step {step}: Dice + CE loss {float(loss.detach()):.4f}")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    entry = {"subjects": len(images), "steps": steps, "seconds": time.perf_counter() - start,
             "seed": seed}
    atomic_write_json(record, entry, overwrite=True)
    return entry


def load_segmenter(out: Path) -> Any:
    from safetensors.torch import load_file

    net = make_segmenter()
    net.load_state_dict(load_file(str(out / "segmenter.safetensors")))
    return net.eval()


def segment(net: Any, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``(M, X, Y, Z)`` -> ``(X, Y, Z)`` classes (argmax), background outside ``mask``
    (the inputs are skull-stripped, so nothing outside the brain is a lesion)."""
    import torch

    with torch.no_grad():
        classes = net(torch.from_numpy(image)[None]).argmax(1)[0].numpy()
    return classes if mask is None else np.where(mask, classes, 0)


def dice_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MONAI's DiceMetric of the whole lesion (tumour and oedema together, the paper's one
    Dice) and of each label; NaN where the truth has none of it."""
    import torch
    from monai.metrics import DiceMetric

    out = {}
    parts = {"lesion": (1, 2), **{name: (k,) for k, name in enumerate(LESION_LABELS, start=1)}}
    for name, classes in parts.items():
        p = torch.from_numpy(np.isin(pred, classes))[None, None].float()
        t = torch.from_numpy(np.isin(truth, classes))[None, None].float()
        # The per-subject value (NaN for an empty truth: ignore_empty); aggregate() would
        # turn a lone NaN into 0.
        metric = DiceMetric(include_background=True, reduction="none", ignore_empty=True)
        out[name] = float(metric(p, t).flatten()[0])
    return out


def score_segmentation(seg_dir: Path, models: dict[str, Callable[[str, str], str]],
                       cohort: list[Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Dice on held-out subjects with (a) the four real contrasts and, for each model, (b)
    one real contrast and the three others synthesized from it by the model, for each of the
    four as the real one (the paper samples the real slice's modality at random).

    Returns ``{"real": {...}, model: {"from SRC": {...}, "mean": {...}}}`` with the means over
    subjects with a lesion of ``dice_scores``."""
    from synth_core.inference import translate

    net = load_segmenter(seg_dir)
    with_lesion = [s for s in cohort if np.isin(s.volumes["labels"].data,
                                                list(LESION_LABELS.values())).any()]
    rows: dict[str, dict[str, list[dict[str, float]]]] = {"real": {"four real": []}}
    for name in models:
        rows[name] = {f"from {m}": [] for m in MODALITIES}
    for subject in with_lesion:
        mask = subject.volumes["brainmask"].data > 0
        truth = segmenter_target(np.asarray(subject.volumes["labels"].data))
        real = {m: subject.volumes[m] for m in MODALITIES}
        rows["real"]["four real"].append(dice_scores(
            segment(net, segmenter_input(real, mask), mask), truth))
        for name, checkpoint_for in models.items():
            for source in MODALITIES:
                volumes = dict(real)
                for target in MODALITIES:
                    if target == source:
                        continue
                    checkpoint = checkpoint_for(source, target)
                    method = json.loads((Path(checkpoint) / "model.json").read_text())["method"]
                    volumes[target] = translate(real[source], method, target, source=source,
                                                checkpoint=checkpoint, device="cpu").volume
                rows[name][f"from {source}"].append(
                    dice_scores(segment(net, segmenter_input(volumes, mask), mask), truth))
    out: dict[str, Any] = {"subjects": len(with_lesion)}
    for name, groups in rows.items():
        out[name] = {g: {k: float(np.nanmean([r[k] for r in rs])) for k in rs[0]}
                     for g, rs in groups.items() if rs}
        if name != "real":
            out[name]["mean"] = {k: float(np.mean([out[name][g][k] for g in groups]))
                                 for k in ("lesion", *LESION_LABELS)}
        log(f"{name}: " + "; ".join(f"{g} lesion {v['lesion']:.3f}" for g, v in out[name].items()))
    return out


def dice_report(dice: dict[str, Any], out: Path) -> Path:
    """Write ``dice.json`` and the markdown table ``dice.md``; return the latter."""
    atomic_write_json(out / "dice.json", dice, overwrite=True)
    parts = ("lesion", *LESION_LABELS)
    lines = ["| inputs | " + " | ".join(f"Dice {p}" for p in parts) + " |",
             "|---|" + "---|" * len(parts)]
    for name, groups in dice.items():
        if not isinstance(groups, dict) or name == "cohort":
            continue
        for group, values in groups.items():
            label = group if name == "real" else f"{name}, {group.replace('from ', '')} real + 3 synthesized"
            if group == "mean":
                label = f"**{name}, mean over the real contrast**"
            lines.append(f"| {label} | " + " | ".join(f"{values[p]:.3f}" for p in parts) + " |")
    text = "\n".join(lines) + f"\n\n{dice.get('subjects', 0)} held-out subjects with a lesion\n"
    return atomic_write_text(out / "dice.md", text, overwrite=True)
