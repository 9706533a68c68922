"""``modality-synth benchmark --suite validity``: the validity measures for every model.

For every bundled checkpoint (and any the user names with ``--checkpoint``), each at the
phantom grid of its card's voxel size, and every direction it offers:

- scores against the noisy target beside the noise floor (the clean truth against that
  target), both with ``metrics.evaluate(normalise=True)``, mean and SD over subjects;
- MR targets: the invented volume on healthy subjects and the lesion contrast ratio
  (tumour, oedema, white-matter hyperintensities) on subjects given lesions;
- T1 -> PET: the disease signal, AD against CN from the synthetic PET beside the true PET,
  the anatomy oracle, the T1 itself (the realistic ceiling) and age alone
  (``validity.disease``);
- age-conditioned PET models: the counterfactual-age agreement, the model's PET at 90
  minus at 60 years (one sample, temperature 0, seed 0) against the phantom's true change;
- stochastic models: sample SD against error and coverage of ``K`` samples;
- the shared input check (and a model's own likelihood, where it has one): AUROC of other
  modalities passed as the source against true sources.

Subjects are phantom subjects generated in memory from a cohort seed no bundled checkpoint
was trained on, so the truth (clean images, counterfactual ages, lesion labels, diagnosis)
is exact. Writes ``OUT/validity.json``, ``OUT/validity.md`` and PNG figures under
``OUT/validity-figures/``, atomically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from synth_core._version import __version__
from synth_core.errors import ModalityMismatch, UserError
from synth_core.inference import translate
from synth_core.input_check import check_input
from synth_core.input_check import score as fingerprint_score
from synth_core.io import atomic_write_text
from synth_core.methods import Method, get_method_class
from synth_core.metrics import evaluate, scoring_kind
from synth_core.phantom import PRESETS, generate_subject
from synth_core.phantom.parameters import GREY_REGIONS, LABEL_IDS, PET_REGIONS, nearest_preset
from synth_core.phantom.template import template_maps
from synth_core.validity import (
    age_change_agreement,
    hallucination_volume,
    lesion_contrast_ratio,
    noise_floor,
    noise_sd,
    plots,
)
from synth_core.validity.disease import (
    N_BOOTSTRAP,
    disease_signal,
    label_volume_features,
    paired_difference,
    pet_features,
    t1_features,
)
from synth_core.validity.uncertainty import ood_report, sample_calibration
from synth_core.validity_report import FIGURES, render_markdown
from synth_core.zoo import CheckpointInfo, list_checkpoints, locate

DEFAULT_SEED = 11  # no bundled checkpoint's training cohort (refused if one ever is)
COUNTERFACTUAL_AGES = (60.0, 90.0)
LESIONS = ("tumour", "oedema", "wmh")
METRICS = ("mae", "psnr", "ssim", "corrcoef")
GAP_GOAL = 0.1  # synthetic PET within this balanced accuracy of the T1 ceiling
SAMPLE_TEMPERATURE = 0.7  # Glow's sampling temperature: several samples spread meaningfully
OOD_KINDS = ("t1", "t2", "flair", "pet", "ct")  # inputs passed as the source
# Regions read from the fixed atlas (the template's parcels: the same for every subject).
ATLAS_IDS = [LABEL_IDS[r] for r in GREY_REGIONS]
NOT_MEASURED: tuple[str, ...] = ()


@dataclass(frozen=True)
class SuiteSettings:
    """How many phantom subjects each part of the suite draws (at the ``small`` 4 mm grid).

    ``disease``: subjects drawn for the disease signal (MCI left out, so about three
    quarters of them count); ``samples``: ``K`` for the uncertainty measure; ``ood``: true
    inputs per kind for the out-of-distribution AUROC. Finer grids cost 8 (2 mm) or 64
    (1 mm) times as much per subject, so they take fewer (``for_preset``).
    """

    healthy: int
    lesioned: int
    disease: int
    folds: int
    samples: int
    uncertainty_subjects: int
    ood: int

    @classmethod
    def for_run(cls, quick: bool) -> SuiteSettings:
        if quick:
            return cls(healthy=1, lesioned=1, disease=40, folds=3, samples=2,
                       uncertainty_subjects=1, ood=2)
        return cls(healthy=10, lesioned=4, disease=240, folds=5, samples=8,
                   uncertainty_subjects=3, ood=10)

    def for_preset(self, preset: str) -> SuiteSettings:
        if preset == "small":
            return self
        # 2 mm: 8 times the voxels; 1 mm: 64 times (and seconds per subject to draw), so
        # two healthy subjects and one with lesions there (one and one with --quick). The
        # disease signal keeps half its subjects at 2 mm (about a second each to draw): a
        # quarter would leave about a dozen AD subjects to judge a PET model by.
        scale = 4 if preset == "full" else 16
        return SuiteSettings(
            healthy=max(min(2, self.healthy), self.healthy // scale),
            lesioned=max(1, self.lesioned // scale),
            disease=0 if preset == "fine" else max(40, self.disease // 2), folds=self.folds,
            samples=self.samples, uncertainty_subjects=1, ood=max(2, self.ood // scale))


def _training_seeds(checkpoints: list[CheckpointInfo]) -> dict[str, int]:
    seeds = {}
    for info in checkpoints:
        seed = ((info.card.get("training_data") or {}).get("phantom") or {}).get("seed")
        if seed is not None:
            seeds[info.name] = int(seed)
    return seeds


def check_request(out: Path, seed: int, checkpoints: list[CheckpointInfo]) -> None:
    """Every mistake the suite can find before any translation starts."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the validity report")
    for name in ("validity.json", "validity.md"):
        if (out / name).exists():
            raise UserError(f"{out / name} exists; choose a new --out folder or remove it")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    used = [name for name, s in _training_seeds(checkpoints).items() if s == seed]
    if used:
        raise UserError(f"seed {seed} made the training cohort of {', '.join(used)}; choose "
                        f"another --seed (the default {DEFAULT_SEED} is held out)")
    if not checkpoints:
        raise UserError("no bundled checkpoint found: reinstall napari-modality-synth")


def preset_for(info: CheckpointInfo) -> str:
    """The phantom grid at the card's voxel size (``small`` when the card states none)."""
    return nearest_preset(info.card.get("spacing"))


def _directions(info: CheckpointInfo) -> list[tuple[str, str]]:
    if info.any_to_any:  # one model, every ordered pair of its modalities
        return [(a, b) for a in info.modalities for b in info.modalities if a != b]
    pairs = [(info.source, info.target)]
    if (info.card.get("capabilities") or {}).get("bidirectional"):
        pairs.append((info.target, info.source))
    return pairs


def _caps(info: CheckpointInfo) -> dict[str, Any]:
    return info.card.get("capabilities") or {}


def _age_for(info: CheckpointInfo, age: float) -> float | None:
    if "age" not in _caps(info).get("conditions", ()):
        return None
    lo, hi = info.card.get("age_range") or (age, age)
    return float(min(max(age, lo), hi))


def _translate(info: CheckpointInfo, volume: Any, source: str, target: str, age: float,
               *, temperature: float | None = None, seed: int = 0) -> Any:
    if temperature is None and _caps(info).get("stochastic"):
        temperature = 0.0  # the most probable image: one sample at temperature 0
    return translate(volume, info.method, target, source=source,
                     checkpoint=str(info.directory), age=_age_for(info, age),
                     temperature=temperature, seed=seed, device="cpu",
                     # The phantom made this scan as ``source``, so the modality is known;
                     # the input check would refuse a lesioned scan as unlike the training
                     # data, and how a model treats a lesion is what is measured here.
                     check_modality=False)


def _synth(info: CheckpointInfo, subject: Any, source: str, target: str,
           age: float | None = None) -> np.ndarray:
    result = _translate(info, subject.volumes[source], source, target,
                        subject.age if age is None else age)
    return result.volume.data


def _stats(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> tuple[dict[str, float],
                                                                      dict[str, float]]:
    if not rows:
        return {}, {}
    return ({k: float(np.mean([r[k] for r in rows])) for k in keys},
            {k: float(np.std([r[k] for r in rows])) for k in keys})


def _mean(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    return _stats(rows, keys)[0]


class Subjects:
    """Phantom subjects of one cohort seed, drawn once and kept for every checkpoint."""

    def __init__(self, seed: int, healthy: dict[str, list[int]],
                 lesioned: dict[str, list[tuple[int, str]]],
                 disease: dict[str, list[int]]) -> None:
        self.seed = seed
        self._healthy_ids, self._lesion_ids, self._disease_ids = healthy, lesioned, disease
        self._cache: dict[tuple[Any, ...], Any] = {}

    def _get(self, index: int, preset: str, lesion: str | None, ages: tuple[float, ...]) -> Any:
        key = (index, preset, lesion, ages)
        if key not in self._cache:
            self._cache[key] = generate_subject(index, self.seed, preset, lesion=lesion,
                                                pet_ages=ages)
        return self._cache[key]

    def healthy(self, preset: str) -> list[Any]:
        return [self._get(i, preset, None, COUNTERFACTUAL_AGES)
                for i in self._healthy_ids[preset]]

    def lesioned(self, preset: str) -> list[Any]:
        return [self._get(i, preset, kind, ()) for i, kind in self._lesion_ids[preset]]

    def disease(self, preset: str) -> Iterator[Any]:
        """Subjects for the disease signal, drawn on demand (not kept: there are many)."""
        for index in self._disease_ids[preset]:
            yield generate_subject(index, self.seed, preset)

    def lesion_kinds(self, preset: str) -> list[str]:
        return sorted({kind for _, kind in self._lesion_ids[preset]})


def _direction_report(info: CheckpointInfo, source: str, target: str, healthy: list[Any],
                      lesioned: list[Any], voxel_mm3: float) -> dict[str, Any]:
    kind = scoring_kind(target)
    scores, floors, invented = [], [], []
    for subject in healthy:
        brain = subject.volumes["brainmask"].data > 0
        mask = subject.volumes["labels"].data > 0 if kind == "ct" else brain
        pred = _synth(info, subject, source, target)
        noisy, clean = subject.volumes[target].data, subject.clean[target].data
        scores.append(evaluate(pred, noisy, mask=mask, normalise=True, modality=target))
        floors.append(noise_floor(clean, noisy, target, mask))
        if kind == "mr":
            sd = noise_sd(noisy, clean, brain)
            invented.append({**hallucination_volume(pred, clean, brain, sd, voxel_mm3),
                             # A model that invents nothing but loses detail: the truth
                             # blurred by one voxel, judged the same way (the scale).
                             "blurred_truth_mm3": hallucination_volume(
                                 ndi.gaussian_filter(np.asarray(clean, np.float64), 1.0),
                                 clean, brain, sd, voxel_mm3)["volume_mm3"]})
    score_mean, score_sd = _stats(scores, METRICS)
    floor_mean, floor_sd = _stats(floors, METRICS)
    report: dict[str, Any] = {
        "source": source, "target": target, "units": scores[0]["units"],
        "normalisation": scores[0]["normalisation"], "subjects": len(healthy),
        "scores": score_mean, "scores_sd": score_sd, "noise_floor": floor_mean,
        "noise_floor_sd": floor_sd, "hallucination": None, "lesions": None}
    if invented:
        report["hallucination"] = {
            "volume_mm3": _mean(invented, ("volume_mm3",))["volume_mm3"],
            "per_subject_mm3": [r["volume_mm3"] for r in invented],
            "regions": [r["regions"] for r in invented],
            "largest_mm3": [r["largest_mm3"] for r in invented],
            "blurred_truth_mm3": _mean(invented, ("blurred_truth_mm3",))["blurred_truth_mm3"],
            "brain_mm3": float(np.mean([(s.volumes["brainmask"].data > 0).sum() * voxel_mm3
                                        for s in healthy])),
            "definition": "connected (26) brain regions of >= 5 voxels departing > 3 noise SD "
                          "from the clean truth after a linear intensity match, mm^3"}
    if kind == "mr" and lesioned:
        ratios: dict[str, list[dict[str, float]]] = {k: [] for k in LESIONS}
        for subject in lesioned:
            pred = _synth(info, subject, source, target)
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


def _counterfactual_report(info: CheckpointInfo, healthy: list[Any], preset: str,
                           ) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    young, old = COUNTERFACTUAL_AGES
    atlas = template_maps(preset).parcel
    rows, region_rows, first = [], [], None
    for subject in healthy:
        brain = subject.volumes["brainmask"].data > 0
        true_young = subject.counterfactual_pet[young][1].data
        true_old = subject.counterfactual_pet[old][1].data
        pred_young = _synth(info, subject, "t1", "pet", age=young)
        pred_old = _synth(info, subject, "t1", "pet", age=old)
        synthetic = _suvr(pred_old, pred_young, brain) - _suvr(pred_young, pred_young, brain)
        true = _suvr(true_old, true_young, brain) - _suvr(true_young, true_young, brain)
        rows.append(age_change_agreement(synthetic, true, brain))
        region_rows.append({name: (float(synthetic[brain & (atlas == LABEL_IDS[name])].mean()),
                                   float(true[brain & (atlas == LABEL_IDS[name])].mean()))
                            for name in GREY_REGIONS})
        first = first or (true, synthetic)
    keys = ("slope_ratio", "leak_ratio", "correlation")
    regions = [{"region": name,
                "synthetic_change": float(np.mean([r[name][0] for r in region_rows])),
                "true_change": float(np.mean([r[name][1] for r in region_rows]))}
               for name in GREY_REGIONS]
    report = {"ages": list(COUNTERFACTUAL_AGES), "subjects": len(rows), **_mean(rows, keys),
              "per_subject": rows, "regions": regions,
              "goal": {"slope_ratio": [0.8, 1.2], "leak_ratio_below": 0.2,
                       "correlation_above": 0.6},
              "units": "change in SUVR (each age's PET over the younger PET's 95th percentile "
                       "in the brain)"}
    return report, first


def _scaled(image: np.ndarray, reference: np.ndarray, mask: np.ndarray, target: str) -> np.ndarray:
    """Non-CT images over the reference's 95th percentile in ``mask`` (a shared scale)."""
    if scoring_kind(target) == "ct":
        return np.asarray(image, np.float64)
    return np.asarray(image, np.float64) / float(np.percentile(reference[mask], 95.0))


def _uncertainty_report(info: CheckpointInfo, subjects: list[Any], k: int) -> dict[str, Any]:
    source, target = info.source, info.target
    rows = []
    for subject in subjects:
        mask = subject.volumes["brainmask"].data > 0
        draws = np.stack([_translate(info, subject.volumes[source], source, target,
                                     subject.age, temperature=SAMPLE_TEMPERATURE,
                                     seed=s).volume.data for s in range(k)])
        truth = subject.clean[target].data
        scale_ref = draws.mean(axis=0)
        rows.append(sample_calibration(_scaled(draws, scale_ref, mask, target),
                                       _scaled(truth, truth, mask, target), mask))
    keys = ("correlation", "spearman", "coverage", "mean_sd", "mean_abs_error")
    return {"direction": f"{source}->{target}", "samples": k, "temperature": SAMPLE_TEMPERATURE,
            "subjects": len(rows), **_mean(rows, keys),
            "calibrated_coverage": rows[0]["calibrated_coverage"],
            "truth": "the noise-free target; images over their 95th percentile in the brain "
                     "(samples over their mean's)"}


def _ood_report(info: CheckpointInfo, subjects: list[Any]) -> dict[str, Any] | None:
    """AUROC of other modalities passed as the checkpoint's source, against true sources."""
    source = info.source
    reference = (info.card.get("input_reference") or {}).get(source)
    # A method with its own input likelihood overrides Method.out_of_distribution.
    likelihood = (get_method_class(info.method).out_of_distribution
                  is not Method.out_of_distribution)
    if reference is None and not likelihood:
        return None
    check: dict[str, list[float]] = {}
    bits: dict[str, list[float]] = {}
    centre = None
    for kind in [source] + [k for k in OOD_KINDS if k != source]:
        if kind not in subjects[0].volumes:
            continue
        for subject in subjects:
            data = subject.volumes[kind].data
            if reference is not None:
                try:  # the physics rule alone: a refusal ranks above every score
                    check_input(data, source, None)
                    value = fingerprint_score(data, source, reference)
                except ModalityMismatch:
                    value = float("inf")
                check.setdefault(kind, []).append(value)
            if likelihood:
                result = _translate(info, subject.volumes[kind], source, info.target,
                                    subject.age)
                entry = result.provenance.get("InputLikelihood") or {}
                centre = entry.get("training_mean", centre)
                bits.setdefault(kind, []).append(float(entry.get("bits_per_voxel", np.nan)))
    report: dict[str, Any] = {"source": source, "input_check": None, "likelihood": None}
    if check:
        report["input_check"] = {**ood_report(check, source),
                                 "score": "largest fingerprint deviation in spreads (the "
                                          "shared input check); a physics refusal counts as "
                                          "infinite"}
    if bits and centre is not None:
        distance = {k: [abs(b - centre) for b in v] for k, v in bits.items()}
        report["likelihood"] = {**ood_report(distance, source),
                                "score": "|bits per voxel - the training mean| of the "
                                         "model's input likelihood",
                                "bits_per_voxel": {k: float(np.mean(v)) for k, v in bits.items()}}
    return report


def _disease_section(preset: str, subjects: Subjects, pet_models: list[CheckpointInfo],
                     settings: SuiteSettings, seed: int, say: Callable[[str], None],
                     ) -> dict[str, Any] | None:
    """AD against CN from every input, one classifier, at one phantom grid."""
    maps = template_maps(preset)
    zone = maps.ventricle_zone > 0.5
    label_ids = [LABEL_IDS[r] for r in PET_REGIONS]
    rows: dict[str, list[np.ndarray]] = {}
    truth, mci, fixed_pet = [], 0, None

    def add(name: str, value: Any) -> None:
        rows.setdefault(name, []).append(np.asarray(value, np.float64).ravel())

    for subject in subjects.disease(preset):
        if subject.diagnosis not in ("AD", "CN"):
            mci += 1
            continue
        labels = subject.volumes["labels"].data
        brain = subject.volumes["brainmask"].data > 0
        atlas = np.where(brain, maps.parcel, 0)
        if fixed_pet is None:
            fixed_pet = subject.clean["pet"].data
        truth.append(subject.diagnosis == "AD")
        add("true_pet", pet_features(subject.volumes["pet"].data, atlas, brain, ATLAS_IDS))
        add("anatomy", label_volume_features(labels, label_ids, label_ids))
        add("t1", t1_features(subject.volumes["t1"].data, brain, maps.parcel, ATLAS_IDS, zone))
        add("age", [subject.age])
        add("control", pet_features(fixed_pet, labels, brain, label_ids))
        for info in pet_models:
            add(f"synthetic:{info.name}",
                pet_features(_synth(info, subject, "t1", "pet"), atlas, brain, ATLAS_IDS))
    y = np.array(truth, bool)
    if min(int(y.sum()), int((~y).sum())) < settings.folds:
        say(f"disease signal at {preset}: too few AD or CN subjects, skipped")
        return None
    features = {name: np.stack(v) for name, v in rows.items()}
    result = disease_signal(features, y, seed=seed, folds=settings.folds)
    predictions = result.pop("_predictions")
    counts = result.pop("_subjects")
    labels_of = {
        "true_pet": ("true PET (regional SUVR, fixed atlas)", "reference"),
        "anatomy": ("anatomy: the phantom's label volumes (an oracle)", "oracle"),
        "t1": ("T1: tissue fractions and intensity per atlas region (the ceiling)", "ceiling"),
        "age": ("age alone (the confound)", "confound"),
        "control": ("control: one fixed PET read through each subject's own labels", "control"),
    }
    inputs = []
    for name, entry in result.items():
        label, kind = labels_of.get(name) or (f"synthetic PET: {name.split(':', 1)[-1]}",
                                              "synthetic")
        inputs.append({"name": name, "label": label, "kind": kind, **entry})
    gaps = []
    for info in pet_models:
        diff = paired_difference(y, predictions["t1"], predictions[f"synthetic:{info.name}"],
                                 seed=seed)
        gaps.append({"checkpoint": info.name, "gap": diff["difference"],
                     "interval": diff["interval"], "meets_goal": diff["difference"] <= GAP_GOAL})
    say(f"disease signal at {preset}: done ({counts['ad']} AD, {counts['cn']} CN)")
    return {"preset": preset, "voxel_mm": PRESETS[preset].spacing_mm,
            "subjects": {**counts, "mci_left_out": mci}, "folds": settings.folds,
            "bootstrap": N_BOOTSTRAP, "goal_gap": GAP_GOAL, "inputs": inputs, "gaps": gaps,
            "classifier": "standardised features, L2 logistic regression (C = 1, class-balanced "
                          f"weights), stratified {settings.folds}-fold out-of-fold predictions; "
                          "95 % percentile bootstrap over subjects"}


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


def _checkpoints(extra: list[str]) -> list[CheckpointInfo]:
    bundled = sorted((c for c in list_checkpoints() if c.origin == "bundled"),
                     key=lambda c: c.name)
    chosen = list(bundled)
    for name in extra:
        info = locate(name)
        if any(c.directory.resolve() == info.directory.resolve() for c in chosen):
            continue
        chosen.append(info)
    return chosen


def _plot(report: dict[str, Any], out: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]],
          ) -> list[str]:
    """Draw the figures into ``out / FIGURES``; their file names relative to ``out``."""
    folder = out / FIGURES
    made = []
    for section in report["disease_signal"]:
        name = f"disease-signal-{section['preset']}.png"
        plots.accuracy_bars(section, folder / name)
        made.append(name)
    lesion_rows = [{"label": f"{c['name']} {d['source']}->{d['target']} {k}", "ratio": v["ratio"]}
                   for c in report["checkpoints"] for d in c["directions"]
                   for k, v in (d["lesions"] or {}).items()
                   if v.get("ratio") is not None and abs(v["contrast_true"]) >= 0.05]
    if lesion_rows:
        plots.lesion_ratios(lesion_rows, folder / "lesion-ratios.png")
        made.append("lesion-ratios.png")
    for c in report["checkpoints"]:
        if c["counterfactual_age"] is None:
            continue
        true, synthetic = arrays[c["name"]]
        plots.change_maps(true, synthetic, f"{c['name']}: PET at 90 minus at 60 years, first "
                          "subject", folder / f"age-change-{c['name']}.png")
        plots.region_changes(c["counterfactual_age"]["regions"],
                             f"{c['name']}: mean change per atlas region, 60 -> 90 years",
                             folder / f"age-regions-{c['name']}.png")
        made += [f"age-change-{c['name']}.png", f"age-regions-{c['name']}.png"]
    return [f"{FIGURES}/{name}" for name in made]


def run_validity(out: Path, seed: int | None = None, quick: bool = False,
                 progress: Callable[[str], None] | None = None,
                 cohort: Path | None = None, checkpoints: list[str] | None = None,
                 ) -> dict[str, Any]:
    """Run the validity suite on phantom subjects of ``seed`` and write the report.

    Args:
        out: report folder (``validity.json``, ``validity.md``, ``validity-figures/``); must
            not hold a report.
        seed: phantom cohort seed (default ``DEFAULT_SEED``); refused if it made a
            checkpoint's training cohort.
        quick: the CI setting (one healthy and one lesioned subject, 40 for the disease
            signal, two samples).
        progress: called with a line per finished piece.
        cohort: a phantom folder whose subjects to use instead of a fresh ``seed`` cohort
            (regenerated in memory from its seed; with ``quick``, its first healthy and first
            lesioned subject); every checkpoint then runs on its grid.
        checkpoints: names or folders of checkpoints to judge besides the bundled ones.

    Returns:
        The report written to ``validity.json``.
    """
    say = progress or (lambda line: None)
    if cohort is not None and seed is not None:
        raise UserError("--cohort and --seed both choose the subjects; give one of them")
    models = _checkpoints(list(checkpoints or []))
    settings = SuiteSettings.for_run(quick)
    if cohort is not None:
        seed, cohort_preset, healthy_ids, lesion_ids = read_cohort(Path(cohort))
        if not healthy_ids:
            raise UserError(f"{cohort} has no subject without a lesion: the noise floor, "
                            "invented volume and counterfactual age need healthy subjects")
    else:
        seed = DEFAULT_SEED if seed is None else int(seed)
        cohort_preset = None
    check_request(out, seed, models)
    if cohort is not None:
        verify_cohort(Path(cohort), seed, cohort_preset, healthy_ids[0])
    start = time.perf_counter()
    grid = {info.name: cohort_preset or preset_for(info) for info in models}
    presets = sorted(set(grid.values()) | {cohort_preset or "small"},
                     key=lambda p: -PRESETS[p].spacing_mm)
    healthy, lesioned, disease = {}, {}, {}
    for preset in presets:
        s = settings.for_preset(preset)
        if cohort is not None:
            healthy[preset] = healthy_ids[:s.healthy] if quick else healthy_ids
            lesioned[preset] = lesion_ids[:s.lesioned] if quick else lesion_ids
            disease[preset] = healthy_ids[:s.disease] if quick else healthy_ids
        else:
            healthy[preset] = list(range(s.healthy))
            lesioned[preset] = [(s.healthy + i, "both") for i in range(s.lesioned)]
            disease[preset] = list(range(s.disease))
    subjects = Subjects(seed, healthy, lesioned, disease)

    entries, arrays = [], {}
    for info in models:
        preset = grid[info.name]
        s = settings.for_preset(preset)
        voxel_mm3 = PRESETS[preset].spacing_mm ** 3
        entry: dict[str, Any] = {"name": info.name, "method": info.method, "sha256": info.sha256,
                                 "origin": info.origin, "title": info.card.get("title", info.method),
                                 "preset": preset, "voxel_mm": PRESETS[preset].spacing_mm,
                                 "directions": [], "counterfactual_age": None,
                                 "uncertainty": None, "ood": None}
        for source, target in _directions(info):
            entry["directions"].append(_direction_report(
                info, source, target, subjects.healthy(preset), subjects.lesioned(preset),
                voxel_mm3))
            say(f"{info.name} {source}->{target}: done")
        caps = _caps(info)
        if "age" in caps.get("conditions", ()) and info.target == "pet":
            entry["counterfactual_age"], arrays[info.name] = _counterfactual_report(
                info, subjects.healthy(preset), preset)
            say(f"{info.name} counterfactual age: done")
        if caps.get("stochastic"):
            entry["uncertainty"] = _uncertainty_report(
                info, subjects.healthy(preset)[:s.uncertainty_subjects], s.samples)
            say(f"{info.name} uncertainty: done")
        entry["ood"] = _ood_report(info, subjects.healthy(preset)[:s.ood])
        entries.append(entry)

    main_preset = cohort_preset or "small"
    sections = []
    for preset in presets:
        s = settings.for_preset(preset)
        if s.disease == 0:
            continue
        pet_models = [info for info in models if grid[info.name] == preset
                      and ("t1", "pet") in _directions(info)]
        if not pet_models and preset != main_preset:
            continue  # the references alone are shown once, at the cohort's own grid
        section = _disease_section(preset, subjects, pet_models, s, seed, say)
        if section is not None:
            sections.append(section)

    chosen = (f" --cohort {Path(cohort).name}" if cohort is not None
              else f" --seed {seed}" if seed != DEFAULT_SEED else "")
    named = "".join(f" --checkpoint {name}" for name in (checkpoints or []))
    command = ("modality-synth benchmark --suite validity --out OUT" + chosen + named
               + (" --quick" if quick else ""))
    report = {
        "suite": "validity", "version": __version__, "command": command,
        "cohort": {"seed": seed, "preset": main_preset,
                   "healthy_subjects": len(healthy[main_preset]),
                   "lesioned_subjects": len(lesioned[main_preset]),
                   "lesions": subjects.lesion_kinds(main_preset),
                   "disease_subjects": len(disease[main_preset]),
                   "voxel_mm": PRESETS[main_preset].spacing_mm,
                   "presets": {p: {"healthy_subjects": len(healthy[p]),
                                   "lesioned_subjects": len(lesioned[p]),
                                   "disease_subjects": len(disease[p])} for p in presets}},
        "checkpoints": entries, "disease_signal": sections, "figures": [],
        "not_measured": list(NOT_MEASURED),
    }
    report = _finite(report)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the report folder {out}: {error.strerror}; "
                        "choose a writable folder") from error
    if plots.available():
        report["figures"] = _plot(report, out, arrays)
    else:
        report["not_measured"].append("figures: matplotlib is not installed (install the "
                                      "`dev` extra to draw them)")
    report["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_text(out / "validity.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "validity.md", render_markdown(report))
    return report
