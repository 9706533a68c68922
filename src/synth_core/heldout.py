"""Held-out scores of a checkpoint on phantom subjects it never saw, and the quality floor.

A checkpoint's own validation figures are measured in its training space (normalised to
[-1, 1], on subjects of its training cohort), so they neither compare across methods nor
say how a user's output will look. Here a checkpoint translates the subjects of a phantom
cohort drawn with a seed no bundle was trained or validated on, at the phantom preset's
spacing, and is scored in the project's one scoring normalisation
(``metrics.evaluate(..., normalise=True)``): inside the brain for MR and PET, inside the
head (the phantom's labels > 0) for CT. Beside the scores, the noise floor: each subject's
noise-free target scored the same way against its noisy twin, the best any method can
reach against noisy targets. And the scale check of the output's units: the median over
subjects of (synthetic brain median / true brain median), CT: the median of (synthetic head
median - true head median) in HU.

The floor a bundled checkpoint must pass (``passes_floor``): MR and PET SSIM at least
``SSIM_FLOOR_FRACTION`` of the noise floor's SSIM; CT MAE inside the head at most
``CT_MAE_FLOOR_HU``; and the scale within ``SCALE_RATIO_RANGE`` (CT within
``CT_SCALE_HU``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synth_core.errors import UserError
from synth_core.metrics import evaluate, scoring_kind

# A seed none of the bundled checkpoints was trained or validated on (their cards' training
# data were drawn with seeds 1 and 21; the older tests use 99).
HELDOUT_SEED = 1000
HELDOUT_PRESET = "small"
HELDOUT_SUBJECTS = 8

SSIM_FLOOR_FRACTION = 0.9  # MR and PET: SSIM >= 0.9 x the noise floor's SSIM
CT_MAE_FLOOR_HU = 40.0  # CT: MAE inside the head <= 40 HU
SCALE_RATIO_RANGE = (0.8, 1.25)  # median over subjects of synthetic / true brain median
CT_SCALE_HU = 10.0  # CT: |median over subjects of (synthetic - true head median)| <= 10 HU
SCORE_KEYS = ("mae", "psnr", "ssim", "corrcoef")


def heldout_preset(card: dict[str, Any]) -> str:
    """The phantom preset a checkpoint is scored on: the one at its card's spacing (a card
    without one is a 4 mm model, ``small``); a spacing no preset has is refused."""
    from synth_core.phantom.parameters import PRESETS, nearest_preset

    spacing = card.get("spacing")
    if not spacing:
        return HELDOUT_PRESET
    preset = nearest_preset([max(spacing)])  # the coarsest axis decides
    if PRESETS[preset].spacing_mm != float(max(spacing)):
        raise UserError(f"no phantom preset has the checkpoint's spacing {spacing} mm; score it "
                        "on a cohort of your own with --cohort DIR")
    return preset


class _CohortSubject:
    """A subject read back from a phantom folder: the ``volumes`` and ``clean`` it was written with."""

    def __init__(self, folder: Path, modalities: tuple[str, ...], age: float | None) -> None:
        from synth_core.io import load_volume

        sid = folder.name
        self.subject_id = sid
        self.volumes = {"brainmask": load_volume(folder / f"{sid}_brainmask.nii.gz"),
                        "labels": load_volume(folder / f"{sid}_labels.nii.gz")}
        self.clean = {}
        for mod in modalities:
            self.volumes[mod] = load_volume(folder / f"{sid}_{mod}.nii.gz", modality=mod)
            clean = folder / f"{sid}_{mod}_clean.nii.gz"
            if clean.is_file():
                self.clean[mod] = load_volume(clean, modality=mod)
        self.age = age


def _ages(folder: Path) -> dict[str, float]:
    """participant_id -> age from a phantom folder's participants.tsv (empty without one)."""
    table = Path(folder) / "participants.tsv"
    if not table.is_file():
        return {}
    lines = table.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line]
    return {r["participant_id"]: float(r["age"]) for r in rows if r.get("age")}


def read_cohort(folder: Path) -> tuple[int, str, list[Path]]:
    """(seed, preset, subject folders) of a phantom folder written by ``modality-synth phantom``;
    UserError when it is not one."""
    manifest = Path(folder) / "cohort.json"
    if not manifest.is_file():
        raise UserError(f"{folder} has no cohort.json: write it with `modality-synth phantom "
                        f"{folder} --seed S --preset P --clean`")
    import json

    cohort = json.loads(manifest.read_text(encoding="utf-8"))
    subjects = sorted(p for p in Path(folder).iterdir() if p.is_dir() and p.name.startswith("sub-"))
    if not subjects:
        raise UserError(f"{folder} holds no sub-XXX folders: write the cohort again")
    return int(cohort["seed"]), str(cohort["preset"]), subjects


def score_mask(subject: Any, modality: str) -> np.ndarray:
    """Where a phantom subject is scored: the brain for MR and PET, the head for CT (bool)."""
    if scoring_kind(modality) == "ct":
        return subject.volumes["labels"].data > 0
    return subject.volumes["brainmask"].data > 0


def scale_check(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, modality: str) -> float:
    """One subject's scale figure: synthetic / true median inside ``mask`` (MR, PET), or
    synthetic - true median in HU (CT). Medians, so a few outlying voxels do not count."""
    p, t = float(np.median(pred[mask])), float(np.median(truth[mask]))
    if scoring_kind(modality) == "ct":
        return p - t
    if not t > 0:
        raise UserError(f"the true {modality} median inside the mask is {t:g}: cannot form a ratio")
    return p / t


def heldout_scores(checkpoint: str, method: str, *, reverse: bool = False,
                   seed: int = HELDOUT_SEED, subjects: int = HELDOUT_SUBJECTS,
                   preset: str | None = None, device: str = "cpu",
                   cohort: Path | None = None, direction: tuple[str, str] | None = None,
                   lesion_fraction: float = 0.0, source: str | None = None,
                   flip: bool | None = None) -> dict[str, Any]:
    """Translate ``subjects`` phantom subjects of cohort ``seed`` and score them.

    Args:
        checkpoint: name, folder or weights file (``zoo.resolve``).
        method: the method key.
        reverse: score the target -> source direction of a bidirectional checkpoint.
        seed, subjects, preset: the phantom cohort (``modality-synth phantom DIR --seed S
            --subjects N --preset P`` writes the same subjects); ``preset`` None is the one
            at the checkpoint's spacing (``heldout_preset``), so a 1 mm model is scored on
            1 mm subjects.
        device: where to run the model.
        cohort: a phantom folder written with ``--clean`` to read the subjects from instead
            of generating them (its own seed and preset then apply, ``subjects`` caps the
            count); a 1 mm subject takes a minute or more to generate.
        direction: (source, target) of an any-to-any checkpoint (its first two otherwise).
        lesion_fraction: share of the cohort's subjects with a tumour, as ``phantom
            --lesion-fraction`` draws them (the any-to-any MR models are scored with tumours,
            which make T1ce differ from T1).
        source: the input modality of a checkpoint with several sources (a labelled
            ``duiit`` model, ``--from t1,pet``): score that one's translator (its first
            otherwise).
        flip: average in the left-right mirrored pass (``translate(flip=...)``); None: as
            the card's ``inference`` block says.

    Returns:
        The card's ``heldout`` entry for this direction: cohort, direction, mask, the
        normalisation key and units, per-subject rows, mean (and SD) scores, the noise
        floor, the scale figure (median over subjects), the floor's verdict, and the
        checkpoint's sha256 the figures belong to.
    """
    from synth_core import zoo
    from synth_core.inference import translate
    from synth_core.methods import get_method_class
    from synth_core.phantom import generate_subject
    from synth_core.phantom.cohort import _lesion_plan

    info = zoo.resolve(checkpoint, method=method)
    src, tgt = (info.target, info.source) if reverse else (info.source, info.target)
    if direction is not None:
        if not info.any_to_any:
            raise UserError(f"checkpoint {info.name!r} has one direction; drop the direction")
        src, tgt = direction
    if source is not None:
        sources = list(zoo.model_sources(info))
        if reverse or source not in sources:
            raise UserError(f"checkpoint {info.name!r} translates from {', '.join(sources)} to "
                            f"{info.target}, not from {source}: give one of them")
        src = source
    lesions = _lesion_plan(subjects, seed, lesion_fraction, 0.0)
    conditions = get_method_class(info.method).capabilities.conditions
    folders: list[Path] = []
    if cohort is not None:
        seed, preset, folders = read_cohort(Path(cohort))
        folders = folders[:subjects]
        subjects = len(folders)
    elif preset is None:
        preset = heldout_preset(info.card)
    training_seeds = _training_seeds(info.card)
    if seed in training_seeds:
        raise UserError(f"cohort seed {seed} is the one checkpoint {info.name!r} was trained on: "
                        "pick another seed")
    rows = []
    for index in range(subjects):
        if folders:
            subject: Any = _CohortSubject(folders[index], (src, tgt),
                                          _ages(Path(cohort)).get(folders[index].name))
            if tgt not in subject.clean:
                raise UserError(f"{folders[index]} has no noise-free {tgt}: write the cohort with "
                                "--clean")
        else:
            subject = generate_subject(index, seed=seed, preset=preset, lesion=lesions[index])
        mask = score_mask(subject, tgt)
        truth = subject.volumes[tgt]
        age = float(subject.age) if "age" in conditions else None
        result = translate(subject.volumes[src], info.method, tgt, source=src,
                           checkpoint=str(info.directory), age=age, device=device, flip=flip)
        ran = result.provenance["Parameters"]
        scores = evaluate(result.volume, truth, mask=mask, normalise=True, modality=tgt)
        floor = evaluate(subject.clean[tgt], truth, mask=mask, normalise=True, modality=tgt)
        rows.append({"subject": subject.subject_id,
                     **{k: scores[k] for k in SCORE_KEYS},
                     **{f"noise_floor_{k}": floor[k] for k in SCORE_KEYS},
                     "scale": scale_check(result.volume.data, truth.data, mask, tgt)})
    kind = scoring_kind(tgt)
    entry: dict[str, Any] = {
        "checkpoint_sha256": info.sha256,
        "cohort": {"seed": seed, "preset": preset, "subjects": subjects,
                   "spacing_mm": [float(v) for v in truth.spacing],
                   "lesion_fraction": lesion_fraction,
                   "command": f"modality-synth phantom heldout --subjects {subjects} "
                              f"--seed {seed} --preset {preset} --clean"
                              + (f" --lesion-fraction {lesion_fraction:g}" if lesion_fraction else "")},
        "direction": f"{src}->{tgt}",
        "inference": {"window": ran.get("window"), "flip": bool(ran.get("flip"))},
        "mask": "head (phantom labels > 0)" if kind == "ct" else "brain mask",
        "normalisation": scores["normalisation"],
        "units": scores["units"] + "; PSNR in dB",
        "scores": {k: _mean(rows, k) for k in SCORE_KEYS},
        "scores_sd": {k: _sd(rows, k) for k in SCORE_KEYS},
        "noise_floor": {k: _mean(rows, f"noise_floor_{k}") for k in SCORE_KEYS},
        "scale": {"what": ("median over subjects of (synthetic - true head median), HU"
                           if kind == "ct" else
                           "median over subjects of (synthetic / true brain median)"),
                  "value": float(np.median([r["scale"] for r in rows]))},
        "rows": rows,
    }
    entry["floor"] = floor_verdict(entry, tgt)
    return entry


def floor_verdict(entry: dict[str, Any], modality: str) -> dict[str, Any]:
    """Whether held-out figures pass the bundle floor, with the rule in words."""
    scale = float(entry["scale"]["value"])
    if scoring_kind(modality) == "ct":
        mae_hu = float(entry["scores"]["mae"])
        quality_ok, rule = mae_hu <= CT_MAE_FLOOR_HU, f"MAE inside the head <= {CT_MAE_FLOOR_HU:g} HU"
        scale_ok = abs(scale) <= CT_SCALE_HU
        rule += f"; |median difference| <= {CT_SCALE_HU:g} HU"
        threshold = CT_MAE_FLOOR_HU
    else:
        threshold = SSIM_FLOOR_FRACTION * float(entry["noise_floor"]["ssim"])
        quality_ok = float(entry["scores"]["ssim"]) >= threshold
        rule = f"SSIM >= {SSIM_FLOOR_FRACTION:g} x the noise floor's SSIM"
        scale_ok = SCALE_RATIO_RANGE[0] <= scale <= SCALE_RATIO_RANGE[1]
        rule += f"; median ratio in [{SCALE_RATIO_RANGE[0]:g}, {SCALE_RATIO_RANGE[1]:g}]"
    return {"rule": rule, "threshold": threshold, "quality": bool(quality_ok),
            "scale": bool(scale_ok), "passes": bool(quality_ok and scale_ok)}


def _training_seeds(card: dict[str, Any]) -> set[int]:
    phantom = (card.get("training_data") or {}).get("phantom") or {}
    return {int(phantom["seed"])} if "seed" in phantom else set()


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def _sd(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.std([r[key] for r in rows]))
