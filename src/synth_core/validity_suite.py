"""``modality-synth benchmark --suite validity``: the validity measures for every bundled model.

What it runs today (the rest of the validity suite is listed in the report as not measured):

- every bundled checkpoint and every direction it offers: its scores against the noisy target
  beside the noise floor (the clean truth against that target), both with
  ``metrics.evaluate(normalise=True)``;
- MR targets: the hallucinated volume on healthy subjects and the lesion contrast ratio
  (tumour, oedema, white-matter hyperintensities) on subjects given lesions;
- age-conditioned checkpoints with a PET target (DUAL-GLOW): the counterfactual-age agreement,
  the model's PET at 90 minus at 60 years (one sample, temperature 0, seed 0) against the
  phantom's true change.

Subjects are phantom subjects generated in memory from a cohort seed no bundled checkpoint was
trained on, so the truth (clean images, counterfactual ages, lesion labels) is exact.
Writes ``OUT/validity.json`` and ``OUT/validity.md``, atomically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synth_core._version import __version__
from synth_core.errors import UserError
from synth_core.inference import translate
from synth_core.io import atomic_write_text
from synth_core.metrics import evaluate, scoring_kind
from synth_core.phantom import PRESETS, generate_subject
from synth_core.phantom.parameters import LABEL_IDS
from synth_core.validity import (
    age_change_agreement,
    hallucination_volume,
    lesion_contrast_ratio,
    noise_floor,
    noise_sd,
)
from synth_core.zoo import CheckpointInfo, list_checkpoints

DEFAULT_SEED = 11  # no bundled checkpoint's training cohort (refused if one ever is)
COUNTERFACTUAL_AGES = (60.0, 90.0)
LESIONS = ("tumour", "oedema", "wmh")
METRICS = ("mae", "psnr", "ssim", "corrcoef")
NOT_MEASURED = (
    "disease signal (AD against CN from true, anatomical, T1 and synthetic PET)",
    "uncertainty calibration (DUAL-GLOW with several samples)",
    "out-of-distribution detection (AUROC of non-T1 inputs passed as T1)",
    "plots (change maps, slope per region, accuracy bars, lesion ratios)",
)


@dataclass(frozen=True)
class SuiteSettings:
    """How many phantom subjects the suite draws (``small`` preset, 4 mm voxels)."""

    healthy: int
    lesioned: int

    @classmethod
    def for_run(cls, quick: bool) -> SuiteSettings:
        return cls(healthy=1, lesioned=1) if quick else cls(healthy=6, lesioned=4)


def _training_seeds(bundled: list[CheckpointInfo]) -> dict[str, int]:
    seeds = {}
    for info in bundled:
        seed = ((info.card.get("training_data") or {}).get("phantom") or {}).get("seed")
        if seed is not None:
            seeds[info.name] = int(seed)
    return seeds


def check_request(out: Path, seed: int, bundled: list[CheckpointInfo]) -> None:
    """Every mistake the suite can find before any translation starts."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the validity report")
    for name in ("validity.json", "validity.md"):
        if (out / name).exists():
            raise UserError(f"{out / name} exists; choose a new --out folder or remove it")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    used = [name for name, s in _training_seeds(bundled).items() if s == seed]
    if used:
        raise UserError(f"seed {seed} made the training cohort of {', '.join(used)}; choose "
                        f"another --seed (the default {DEFAULT_SEED} is held out)")
    if not bundled:
        raise UserError("no bundled checkpoint found: reinstall napari-modality-synth")


def _directions(info: CheckpointInfo) -> list[tuple[str, str]]:
    pairs = [(info.source, info.target)]
    if (info.card.get("capabilities") or {}).get("bidirectional"):
        pairs.append((info.target, info.source))
    return pairs


def _age_for(info: CheckpointInfo, age: float) -> float | None:
    caps = info.card.get("capabilities") or {}
    if "age" not in caps.get("conditions", ()):
        return None
    lo, hi = info.card.get("age_range") or (age, age)
    return float(min(max(age, lo), hi))


def _translate(info: CheckpointInfo, subject: Any, source: str, target: str,
               age: float | None = None) -> np.ndarray:
    caps = info.card.get("capabilities") or {}
    result = translate(subject.volumes[source], info.method, target, source=source,
                       checkpoint=str(info.directory),
                       age=_age_for(info, subject.age if age is None else age),
                       temperature=0.0 if caps.get("stochastic") else None, seed=0,
                       device="cpu",
                       # The phantom made this scan as ``source``, so the modality is known;
                       # the input check would refuse a lesioned scan as unlike the training
                       # data, and how a model treats a lesion is what is measured here.
                       check_modality=False)
    return result.volume.data


def _mean(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in keys} if rows else {}


def _direction_report(info: CheckpointInfo, source: str, target: str, healthy: list[Any],
                      lesioned: list[Any], voxel_mm3: float) -> dict[str, Any]:
    kind = scoring_kind(target)
    scores, floors, invented = [], [], []
    for subject in healthy:
        brain = subject.volumes["brainmask"].data > 0
        mask = None if kind == "ct" else brain  # CT: the head, as evaluate's default
        pred = _translate(info, subject, source, target)
        noisy, clean = subject.volumes[target].data, subject.clean[target].data
        scores.append(evaluate(pred, noisy, mask=mask, normalise=True, modality=target))
        floors.append(noise_floor(clean, noisy, target, mask))
        if kind == "mr":
            invented.append(hallucination_volume(pred, clean, brain, noise_sd(noisy, clean, brain),
                                                 voxel_mm3))
    report: dict[str, Any] = {
        "source": source, "target": target, "units": scores[0]["units"],
        "normalisation": scores[0]["normalisation"], "subjects": len(healthy),
        "scores": _mean(scores, METRICS), "noise_floor": _mean(floors, METRICS),
        "hallucination": None, "lesions": None}
    if invented:
        report["hallucination"] = {
            "volume_mm3": _mean(invented, ("volume_mm3",))["volume_mm3"],
            "per_subject_mm3": [r["volume_mm3"] for r in invented],
            "regions": [r["regions"] for r in invented],
            "brain_mm3": float(np.mean([(s.volumes["brainmask"].data > 0).sum() * voxel_mm3
                                        for s in healthy])),
            "definition": "connected (26) brain regions of >= 5 voxels departing > 3 noise SD "
                          "from the clean truth after a linear intensity match, mm^3"}
    if kind == "mr" and lesioned:
        ratios: dict[str, list[dict[str, float]]] = {k: [] for k in LESIONS}
        for subject in lesioned:
            pred = _translate(info, subject, source, target)
            labels = np.rint(subject.volumes["labels"].data).astype(int)
            white_matter = labels == LABEL_IDS["white_matter"]
            for lesion in LESIONS:
                mask = labels == LABEL_IDS[lesion]
                if mask.sum() >= 5:
                    ratios[lesion].append(lesion_contrast_ratio(
                        pred, subject.clean[target].data, mask, white_matter))
        report["lesions"] = {
            k: {**_mean(v, ("ratio", "contrast_true", "contrast_pred")), "subjects": len(v)}
            for k, v in ratios.items() if v}
    return report


def _suvr(image: np.ndarray, reference: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``image`` over the 95th percentile of ``reference`` in the brain (both ages share it)."""
    scale = float(np.percentile(reference[brain], 95.0))
    return np.asarray(image, np.float64) / scale


def _counterfactual_report(info: CheckpointInfo, healthy: list[Any]) -> dict[str, Any]:
    young, old = COUNTERFACTUAL_AGES
    rows = []
    for subject in healthy:
        brain = subject.volumes["brainmask"].data > 0
        true_young = subject.counterfactual_pet[young][1].data
        true_old = subject.counterfactual_pet[old][1].data
        pred_young = _translate(info, subject, "t1", "pet", age=young)
        pred_old = _translate(info, subject, "t1", "pet", age=old)
        rows.append(age_change_agreement(
            _suvr(pred_old, pred_young, brain) - _suvr(pred_young, pred_young, brain),
            _suvr(true_old, true_young, brain) - _suvr(true_young, true_young, brain), brain))
    keys = ("slope_ratio", "leak_ratio", "correlation")
    return {"ages": list(COUNTERFACTUAL_AGES), "subjects": len(rows), **_mean(rows, keys),
            "per_subject": rows,
            "goal": {"slope_ratio": [0.8, 1.2], "leak_ratio_below": 0.2, "correlation_above": 0.6},
            "units": "change in SUVR (each age's PET over the younger PET's 95th percentile "
                     "in the brain)"}


def _finite(value: Any) -> Any:
    """The report with NaN and infinities as null (JSON has neither)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def read_cohort(folder: Path) -> tuple[int, str, list[int], list[tuple[int, str]]]:
    """(seed, preset, healthy indices, (index, lesion) of lesioned subjects) of a phantom folder.

    The suite regenerates the subjects in memory (the phantom is deterministic per seed and
    index), which also gives it the counterfactual ages and noise-free images the folder may
    lack; ``verify_cohort`` checks that the folder is what this version generates.
    """
    manifest = folder / "cohort.json"
    if not manifest.is_file():
        raise UserError(f"{folder} has no cohort.json: --cohort takes a folder made by "
                        "`modality-synth phantom`; use --seed for a fresh cohort")
    try:
        cohort = json.loads(manifest.read_text(encoding="utf-8"))
        seed, preset = int(cohort["seed"]), str(cohort["preset"])
        subjects = cohort["subjects"]
        healthy = [int(p["index"]) for p in subjects.values()
                   if p.get("lesion", "none") == "none"]
        lesioned = [(int(p["index"]), str(p["lesion"])) for p in subjects.values()
                    if p.get("lesion", "none") != "none"]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"{manifest} is not a phantom cohort description ({error}); "
                        "regenerate the cohort with `modality-synth phantom`") from None
    if preset not in PRESETS:
        raise UserError(f"{manifest} names an unknown preset {preset!r}; regenerate the cohort")
    return seed, preset, sorted(healthy), sorted(lesioned)


def verify_cohort(folder: Path, seed: int, preset: str, index: int) -> None:
    """Refuse a folder whose subject ``index`` T1 is not what this version generates."""
    import nibabel as nib

    sid = f"sub-{index + 1:03d}"
    on_disk = folder / sid / f"{sid}_t1.nii.gz"
    made = generate_subject(index, seed, preset)
    if not on_disk.is_file() or not np.allclose(
            np.asarray(nib.load(on_disk).dataobj), made.volumes["t1"].data, atol=1e-3):
        raise UserError(f"{on_disk} differs from the phantom this version generates for seed "
                        f"{seed}: regenerate the cohort with this version, or use --seed {seed}")


def run_validity(out: Path, seed: int | None = None, quick: bool = False,
                 progress: Callable[[str], None] | None = None,
                 cohort: Path | None = None) -> dict[str, Any]:
    """Run the validity suite on phantom subjects of ``seed`` and write the report.

    Args:
        out: report folder (``validity.json``, ``validity.md``); must not hold a report.
        seed: phantom cohort seed (default ``DEFAULT_SEED``); refused if it made a bundled
            checkpoint's training cohort.
        quick: one healthy and one lesioned subject (the CI setting).
        progress: called with a line per finished piece.
        cohort: a phantom folder whose subjects to use instead of a fresh ``seed`` cohort
            (regenerated in memory from its seed; with ``quick``, its first healthy and first
            lesioned subject).

    Returns:
        The report written to ``validity.json``.
    """
    say = progress or (lambda line: None)
    if cohort is not None and seed is not None:
        raise UserError("--cohort and --seed both choose the subjects; give one of them")
    bundled = sorted((c for c in list_checkpoints() if c.origin == "bundled"),
                     key=lambda c: c.name)
    settings = SuiteSettings.for_run(quick)
    if cohort is not None:
        seed, preset, healthy_ids, lesion_ids = read_cohort(Path(cohort))
        healthy_ids = healthy_ids[:settings.healthy] if quick else healthy_ids
        lesion_ids = lesion_ids[:settings.lesioned] if quick else lesion_ids
        if not healthy_ids:
            raise UserError(f"{cohort} has no subject without a lesion: the noise floor, "
                            "invented volume and counterfactual age need healthy subjects")
    else:
        seed = DEFAULT_SEED if seed is None else int(seed)
        preset = "small"
        healthy_ids = list(range(settings.healthy))
        lesion_ids = [(settings.healthy + i, "both") for i in range(settings.lesioned)]
    check_request(out, seed, bundled)
    if cohort is not None:
        verify_cohort(Path(cohort), seed, preset, healthy_ids[0])
    start = time.perf_counter()
    ages = COUNTERFACTUAL_AGES
    healthy = [generate_subject(i, seed, preset, pet_ages=ages) for i in healthy_ids]
    lesioned = [generate_subject(i, seed, preset, lesion=kind) for i, kind in lesion_ids]
    voxel_mm3 = PRESETS[preset].spacing_mm ** 3
    checkpoints = []
    for info in bundled:
        entry: dict[str, Any] = {"name": info.name, "method": info.method, "sha256": info.sha256,
                                 "directions": [], "counterfactual_age": None}
        for source, target in _directions(info):
            entry["directions"].append(
                _direction_report(info, source, target, healthy, lesioned, voxel_mm3))
            say(f"{info.name} {source}->{target}: done")
        caps = info.card.get("capabilities") or {}
        if "age" in caps.get("conditions", ()) and info.target == "pet":
            entry["counterfactual_age"] = _counterfactual_report(info, healthy)
            say(f"{info.name} counterfactual age: done")
        checkpoints.append(entry)
    chosen = (f" --cohort {Path(cohort).name}" if cohort is not None
              else f" --seed {seed}" if seed != DEFAULT_SEED else "")
    command = ("modality-synth benchmark --suite validity --out OUT" + chosen
               + (" --quick" if quick else ""))
    report = {
        "suite": "validity", "version": __version__, "command": command,
        "cohort": {"seed": seed, "preset": preset, "healthy_subjects": len(healthy),
                   "lesioned_subjects": len(lesioned),
                   "lesions": sorted({kind for _, kind in lesion_ids}),
                   "voxel_mm": PRESETS[preset].spacing_mm},
        "seconds": round(time.perf_counter() - start, 1),
        "checkpoints": checkpoints, "not_measured": list(NOT_MEASURED),
    }
    report = _finite(report)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the report folder {out}: {error.strerror}; "
                        "choose a writable folder") from error
    atomic_write_text(out / "validity.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "validity.md", render_markdown(report))
    return report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


MIN_TRUE_CONTRAST = 0.05  # below this the ratio divides by almost nothing: not shown


def _lesion_cell(lesion: dict[str, Any] | None) -> str:
    if lesion is None:
        return "–"
    if abs(lesion["contrast_true"]) < MIN_TRUE_CONTRAST:
        return f"(true contrast {lesion['contrast_true']:+.2f})"
    return f"{lesion['ratio']:.2f} (true {lesion['contrast_true']:+.2f})"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown page (every figure from ``report``)."""
    cohort = report["cohort"]
    lines = ["# Validity report", "", f"Made by `{report['command']}` (napari-modality-synth "
             f"{report['version']}) in {report['seconds']:.0f} s.", "",
             f"Phantom cohort seed {cohort['seed']} ({cohort['preset']} preset, "
             f"{cohort['voxel_mm']:g} mm voxels): {cohort['healthy_subjects']} healthy subjects, "
             f"{cohort['lesioned_subjects']} with lesions ({', '.join(cohort['lesions']) or 'none'}); "
             "figures are means over subjects.", "",
             "## Scores beside the noise floor", "",
             "Each checkpoint against the noisy target, and the clean truth against the same "
             "target (the best any method can score).", "",
             "| checkpoint | direction | PSNR (dB) | floor PSNR (dB) | SSIM | floor SSIM | units |",
             "|---|---|---|---|---|---|---|"]
    for c in report["checkpoints"]:
        for d in c["directions"]:
            lines.append(f"| `{c['name']}` | {d['source']} → {d['target']} | "
                         f"{_fmt(d['scores']['psnr'], 2)} | {_fmt(d['noise_floor']['psnr'], 2)} | "
                         f"{_fmt(d['scores']['ssim'])} | {_fmt(d['noise_floor']['ssim'])} | "
                         f"{d['normalisation']} |")
    lines += ["", "## Lesions kept, none invented (MR targets)", "",
              "Lesion contrast against normal white matter as a ratio of the true target's (1 is "
              "kept exactly, 0 erased), with the true relative contrast beside it (a ratio is not "
              f"shown where the true contrast is under {MIN_TRUE_CONTRAST:.0%}); invented volume: mm^3 of connected regions (>= 5 voxels) "
              "departing more than 3 noise SD from the clean truth after a linear intensity "
              "match, on healthy subjects, beside the brain's volume.", "",
              "| checkpoint | direction | tumour | oedema | WMH | invented of brain (mm^3) |",
              "|---|---|---|---|---|---|"]
    for c in report["checkpoints"]:
        for d in c["directions"]:
            if d["hallucination"] is None and d["lesions"] is None:
                continue
            lesions = d["lesions"] or {}
            cells = [_lesion_cell(lesions.get(k)) for k in LESIONS]
            h = d["hallucination"]
            invented = (f"{h['volume_mm3']:.0f} of {h['brain_mm3']:.0f}" if h else "–")
            lines.append(f"| `{c['name']}` | {d['source']} → {d['target']} | "
                         + " | ".join(cells) + f" | {invented} |")
    lines += ["", "## Counterfactual age (age-conditioned PET models)", "",
              "The model's PET at 90 minus at 60 years against the phantom's true change; ageing "
              "and unchanged voxels taken from the true change map. Goal: slope ratio 0.8-1.2, "
              "leak below 0.2, correlation above 0.6.", "",
              "| checkpoint | slope ratio | leak ratio | correlation | subjects |", "|---|---|---|---|---|"]
    if all(c["counterfactual_age"] is None for c in report["checkpoints"]):
        lines.append("| (no bundled checkpoint is age-conditioned) | – | – | – | – |")
    for c in report["checkpoints"]:
        a = c["counterfactual_age"]
        if a is not None:
            lines.append(f"| `{c['name']}` | {_fmt(a['slope_ratio'], 2)} | "
                         f"{_fmt(a['leak_ratio'], 2)} | {_fmt(a['correlation'], 2)} | "
                         f"{a['subjects']} |")
    lines += ["", "## Not measured yet", ""] + [f"- {item}" for item in report["not_measured"]]
    return "\n".join(lines) + "\n"
