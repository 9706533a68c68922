"""Measure a DUAL-GLOW checkpoint on held-out phantom subjects (docs/benchmarks.md, DUAL-GLOW).

    python scripts/measure_dual_glow.py CHECKPOINT_DIR --pix2pix PIX2PIX_DIR \
        --cohort /work/data/phantom-eval [--json OUT.json] [--skip-cost]

Prints every figure: accuracy against the true PET beside pix2pix and the noise floor,
the age response (the paper's fig. 7 with a ground truth), disentanglement of age in
the MRI latents, AD-vs-CN classification from regional PET (the paper's table 2), the
out-of-distribution check, and speed and memory. The cohort must be written with
``modality-synth phantom ... --clean`` (the noise-free PET is the ground truth).

Accuracy and the out-of-distribution check go through ``synth_core.translate`` (the
user's path). The age grid, the latents and the downstream features call the model on
the tensor directly (ages outside the trained range are allowed there), normalised
exactly as ``translate`` and the training store normalise a scan (its own foreground).
Every accuracy is computed in SUVR space (``synth_core.benchmark.normalised_scores``):
prediction and truth are each normalised with ``fit_normalisation(data, "pet",
mask=brainmask)`` and compared inside the brain mask with a data range of 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dg_stats import kfold_ridge_r2, loo_svm_accuracy, r2, ridge_r2, spearman, svm_fit, svm_predict

import synth_core as sc
from synth_core import preprocess, zoo
from synth_core.benchmark import normalised_scores
from synth_core.methods import SynthesisRequest

AGES = np.arange(55.0, 95.1, 5.0)
AGEING = ("frontal", "anterior_cingulate")
FLAT = ("occipital", "parietal", "temporal", "posterior_cingulate", "precuneus", "cerebellum",
        "deep_grey")
SVM_REGIONS = ("frontal", "parietal", "temporal", "occipital", "anterior_cingulate",
               "posterior_cingulate", "precuneus", "hippocampus", "deep_grey", "cerebellum")


# -- data -----------------------------------------------------------------------------
def load_cohort(root: Path) -> list[dict[str, Any]]:
    """Subjects of a phantom folder: id, age, diagnosis, and their volumes (loaded lazily)."""
    with open(root / "participants.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    names = {v: int(k) for k, v in json.loads((root / "labels.json").read_text()).items()}
    subjects = []
    for row in rows:
        sid = row["participant_id"]
        subjects.append({"id": sid, "age": float(row["age"]), "diagnosis": row["diagnosis"],
                         "dir": root / sid, "labels_ids": names})
    return subjects


def volume(subject: dict[str, Any], key: str) -> sc.Volume:
    return sc.load_volume(str(subject["dir"] / f"{subject['id']}_{key}.nii.gz"))


def brain(subject: dict[str, Any]) -> np.ndarray:
    return volume(subject, "brainmask").data > 0.5


def suvr(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return preprocess.normalise(data, preprocess.fit_normalisation(data, "pet", mask=mask))


def as_input(data: np.ndarray, modality: str = "t1") -> torch.Tensor:
    """Normalise like ``translate`` and the training store (own foreground) -> (1, 1, X, Y, Z)."""
    x = preprocess.normalise(data, preprocess.fit_normalisation(data, modality))
    if any(s % 16 for s in x.shape):
        raise SystemExit(f"volume shape {x.shape} is not a multiple of 16: use the small phantom")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]


class Model:
    """A checkpoint folder with its method, for both input paths."""

    def __init__(self, directory: Path, key: str) -> None:
        self.info = zoo.resolve(str(directory), method=key)
        self.key = key
        self.method = zoo.load_method(self.info)
        self.takes_age = "age" in self.method.capabilities.conditions
        self.age_range = tuple(self.info.card.get("age_range") or (0.0, 120.0))

    def clamp(self, age: float) -> float:
        """Subjects older or younger than every training subject get the nearest trained age
        (``translate`` refuses ages outside the card's range)."""
        return float(min(max(age, self.age_range[0]), self.age_range[1]))

    def normalised(self, t1: np.ndarray, age: float | None = None, samples: int = 1,
                   temperature: float | None = None, seed: int = 0) -> np.ndarray:
        """Direct path: normalised PET samples (K, X, Y, Z); PET SUV is proportional to n + 1."""
        request = SynthesisRequest(age=age if self.takes_age else None, samples=samples,
                                   temperature=temperature if self.takes_age else None,
                                   generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return self.method.synthesize(as_input(t1), request)[:, 0, 0].numpy()

    def translated(self, t1: sc.Volume, age: float | None = None, samples: int = 1,
                   temperature: float | None = None) -> sc.TranslationResult:
        stochastic = self.takes_age
        return sc.translate(t1, method=self.key, to="pet", checkpoint=str(self.info.directory),
                            source="t1", age=self.clamp(age) if stochastic and age else None,
                            samples=samples if stochastic else 1,
                            temperature=temperature if stochastic else None)


# -- accuracy ------------------------------------------------------------------------
def accuracy(models: dict[str, Model], subjects: list[dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, list[dict[str, float]]] = {}
    failures: dict[str, list[str]] = {}
    for s in subjects:
        mask, t1 = brain(s), volume(s, "t1")
        noisy, clean = volume(s, "pet"), volume(s, "pet_clean")
        truth = {"noisy": noisy, "clean": clean}
        preds = {"noise floor (noisy PET)": noisy.data}
        for name, model in models.items():
            age = model.clamp(s["age"]) if model.takes_age else None
            try:
                preds[name] = model.translated(t1, age).volume.data
            except sc.UserError as exc:  # non-finite output: counted, not scored
                failures.setdefault(name, []).append(f"{s['id']}: {exc}")
            if model.takes_age:
                try:
                    preds[f"{name}, mean of 8 at T=0.7"] = model.translated(
                        t1, age, samples=8, temperature=0.7).volume.data
                except sc.UserError as exc:  # non-finite samples: counted, not scored
                    failures.setdefault(f"{name}, mean of 8 at T=0.7", []).append(f"{s['id']}: {exc}")
        for name, pred in preds.items():
            p = sc.Volume(np.asarray(pred, dtype=np.float32), noisy.affine, "pet")
            for against, t in truth.items():
                if name.startswith("noise floor") and against == "noisy":
                    continue
                scores = normalised_scores(p, t, "pet", mask)
                rows.setdefault(f"{name} vs {against}", []).append(scores)
    out: dict[str, Any] = {k: {m: (float(np.mean([r[m] for r in v])), float(np.std([r[m] for r in v])))
                               for m in v[0]} for k, v in rows.items()}
    if failures:
        out["failed (translate refused non-finite output)"] = failures
    return out


# -- age response --------------------------------------------------------------------
def true_log_slope(slope: float, reference: float = 55.0) -> float:
    """Least-squares slope over AGES of log(1 + slope (age - reference)): the phantom's
    multiplicative age model, in the same per-year log units the synthesis is fitted in."""
    return float(np.polyfit(AGES, np.log1p(slope * (AGES - reference)), 1)[0])


def age_response(model: Model, subjects: list[dict[str, Any]], cohort: Path) -> dict[str, Any]:
    """Region means of one MRI synthesized at every age of AGES, per held-out subject.

    Three views: ``raw`` (proportional to SUV, the model's own scale), ``suvr`` (each
    synthesis normalised by its brain's 95th percentile, as a reader would), and the
    ratio to the occipital lobe (which the phantom does not age), whose log-slope is
    compared with the phantom's true one.
    """
    truth = json.loads((cohort / "cohort.json").read_text())["parameters"]
    slopes_true = truth["pet"]["age_slope_per_year"]
    regions = AGEING + FLAT
    raw = {r: [] for r in regions}  # per subject: region mean per age
    rel = {r: [] for r in regions}
    for s in subjects:
        mask, t1 = brain(s), volume(s, "t1").data
        labels = np.rint(volume(s, "labels").data).astype(int)
        ids = s["labels_ids"]
        means = {r: [] for r in regions}
        scaled = {r: [] for r in regions}
        for age in AGES:
            pet = model.normalised(t1, float(age))[0] + 1.0
            p95 = suvr(pet, mask) + 1.0
            for r in regions:
                means[r].append(float(pet[labels == ids[r]].mean()))
                scaled[r].append(float(p95[labels == ids[r]].mean()))
        for r in regions:
            raw[r].append(means[r])
            rel[r].append(scaled[r])
    out: dict[str, Any] = {"subjects": len(subjects), "ages": AGES.tolist(),
                           "trained_age_range": list(model.age_range), "regions": {}}
    occipital = np.log(np.array(raw["occipital"]))
    inside = (AGES >= model.age_range[0]) & (AGES <= model.age_range[1])
    for r in regions:
        c, v = np.array(raw[r]), np.array(rel[r])  # (subjects, ages)
        ratio = np.log(c) - occipital
        out["regions"][r] = {
            "raw_mean_curve": c.mean(0).round(4).tolist(),
            "suvr_mean_curve": v.mean(0).round(4).tolist(),
            "spearman_raw": float(np.mean([spearman(AGES, row) for row in c])),
            "spearman_suvr": float(np.mean([spearman(AGES, row) for row in v])),
            "spearman_vs_occipital": float(np.mean([spearman(AGES, row) for row in ratio])),
            "log_slope_raw": float(np.mean([np.polyfit(AGES, np.log(row), 1)[0] for row in c])),
            "log_slope_suvr": float(np.mean([np.polyfit(AGES, np.log(row), 1)[0] for row in v])),
            "slope_vs_occipital": float(np.mean([np.polyfit(AGES, row, 1)[0] for row in ratio])),
            "slope_vs_occipital_trained_ages": float(np.mean(
                [np.polyfit(AGES[inside], row[inside], 1)[0] for row in ratio])),
            "true_slope_vs_occipital": true_log_slope(slopes_true.get(r, 0.0)),
        }
    return out


# -- disentanglement -------------------------------------------------------------------
def _latent_features(model: Model, subjects: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per subject: pooled lower and top MRI latents and the model's own age heads' output."""
    flow = model.method.flow
    out: dict[str, list[Any]] = {"lower": [], "top": [], "keep_head": [], "adversary_heads": [],
                                 "pet_top": [], "pet_keep_head": [], "age": [],
                                 "lower_voxels": [], "top_voxels": [], "pet_top_voxels": []}
    lo, hi = flow.config.age_range

    def years(normalised: torch.Tensor) -> float:  # the inverse of DualGlow.normalise_age
        return lo + (float(normalised) + 1.0) * (hi - lo) / 2.0

    for s in subjects:
        with torch.no_grad():
            latents, _ = flow.encode_mri(as_input(volume(s, "t1").data))
            out["keep_head"].append(years(flow.age_keep_mri(latents[-1])))
            out["adversary_heads"].append([years(head(z)) for head, z in
                                           zip(flow.age_adversaries, latents[:-1], strict=True)])
            pet_latents, _ = flow.pet_flow.encode(as_input(volume(s, "pet").data, "pet"))
            out["pet_keep_head"].append(years(flow.age_keep_pet(pet_latents[-1])))
        pooled = [torch.cat([z.mean((2, 3, 4)), z.std((2, 3, 4))], 1)[0].numpy()
                  for z in (*latents, pet_latents[-1])]
        out["lower"].append(np.concatenate(pooled[:-2]))
        out["top"].append(pooled[-2])
        out["pet_top"].append(pooled[-1])
        out["lower_voxels"].append(torch.cat([z.flatten() for z in latents[:-1]]).numpy())
        out["top_voxels"].append(latents[-1].flatten().numpy())
        out["pet_top_voxels"].append(pet_latents[-1].flatten().numpy())
        out["age"].append(s["age"])
    return {k: np.array(v) for k, v in out.items()}


def disentanglement(model: Model, subjects: list[dict[str, Any]],
                    train_subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """How well age is predicted from the lower and the top MRI latents of held-out subjects
    (and from the top PET latent of their true PET, which a head also keeps age in).

    Four predictors: ridge regression on pooled latents (per-channel mean and SD) by nested
    cross-validation on the held-out subjects alone; the same ridge fitted on the training
    cohort's latents (when given); ridge on every latent voxel (``*_voxels``, fitted on the
    training cohort), which can read where a pattern is and not only how much of it there
    is; and the model's own age heads, trained with it (the top MRI head without gradient
    reversal, the lower ones behind it).
    """
    held = _latent_features(model, subjects)
    y = held["age"]
    out: dict[str, Any] = {
        "subjects": len(y), "features_lower": held["lower"].shape[1],
        "features_top": held["top"].shape[1],
        "r2_lower": kfold_ridge_r2(held["lower"], y), "r2_top": kfold_ridge_r2(held["top"], y),
        "r2_top_keep_head": r2(y, held["keep_head"]),
        "r2_pet_top": kfold_ridge_r2(held["pet_top"], y),
        "r2_pet_top_keep_head": r2(y, held["pet_keep_head"]),
        "r2_lower_adversary_heads": [r2(y, p) for p in held["adversary_heads"].T],
    }
    if train_subjects:
        fit = _latent_features(model, train_subjects)
        out["probe_training_subjects"] = len(fit["age"])
        for part in ("lower", "top", "pet_top", "lower_voxels", "top_voxels", "pet_top_voxels"):
            out[f"r2_{part}_probe_fitted_on_training_cohort"] = ridge_r2(
                fit[part], fit["age"], held[part], y)
    return out


# -- downstream: AD vs CN ----------------------------------------------------------------
def regional_features(pet: np.ndarray, subject: dict[str, Any], mask: np.ndarray) -> np.ndarray:
    labels = np.rint(volume(subject, "labels").data).astype(int)
    p = suvr(pet, mask)
    return np.array([p[labels == subject["labels_ids"][r]].mean() for r in SVM_REGIONS])


def downstream(models: dict[str, Model], subjects: list[dict[str, Any]],
               train_subjects: list[dict[str, Any]]) -> dict[str, Any]:
    chosen = [s for s in subjects if s["diagnosis"] in ("AD", "CN")]
    y = np.array([1.0 if s["diagnosis"] == "AD" else -1.0 for s in chosen])
    feats: dict[str, np.ndarray] = {"true PET": np.array(
        [regional_features(volume(s, "pet").data, s, brain(s)) for s in chosen])}
    for name, model in models.items():
        feats[f"{name} PET"] = np.array([regional_features(
            model.normalised(volume(s, "t1").data, model.clamp(s["age"]))[0] + 1.0, s, brain(s))
            for s in chosen])
    out: dict[str, Any] = {"AD": int((y > 0).sum()), "CN": int((y < 0).sum()),
                           "leave_one_out_accuracy": {k: loo_svm_accuracy(v, y)
                                                      for k, v in feats.items()}}
    train = [s for s in train_subjects if s["diagnosis"] in ("AD", "CN")]
    if train:  # a classifier fitted on true PET of the training cohort, applied to each
        xt = np.array([regional_features(volume(s, "pet").data, s, brain(s)) for s in train])
        yt = np.array([1.0 if s["diagnosis"] == "AD" else -1.0 for s in train])
        mu, sd = xt.mean(0), xt.std(0) + 1e-8
        fit = svm_fit((xt - mu) / sd, yt)
        out["trained_on_true_pet_of_training_cohort"] = {
            k: float((svm_predict(fit, (v - mu) / sd) == y).mean()) for k, v in feats.items()}
    return out


# -- out of distribution ------------------------------------------------------------------
def ood(model: Model, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """Bits per voxel and warnings of ``translate`` for each phantom modality given as T1."""
    out: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for given in ("t1", "t2", "flair", "pet", "ct"):
        bits, warned = [], 0
        for s in subjects:
            vol = volume(s, given)
            res = model.translated(sc.Volume(vol.data, vol.affine, "t1"), s["age"])
            info = res.provenance["InputLikelihood"]
            bits.append(info["bits_per_voxel"])
            warned += bool(res.warnings)
        out[f"{given} given as t1"] = {"bits_mean": float(np.mean(bits)), "bits_min": min(bits),
                                       "bits_max": max(bits), "warned": warned,
                                       "subjects": len(subjects)}
    out["reference"] = {k: v for k, v in info.items() if k != "bits_per_voxel"}
    return out


# -- speed and memory ---------------------------------------------------------------------
def probe(args: argparse.Namespace) -> None:
    """Child process: one training configuration's seconds per step and peak memory."""
    import resource

    from synth_core.methods import build_config, get_method_class

    torch.manual_seed(0)
    cfg = build_config("dual-glow", "cpu", {"steps_per_level": args.probe_steps,
                                            "checkpointing": bool(args.probe_checkpointing)})
    method = get_method_class("dual-glow")(cfg, "t1", "pet")
    s = load_cohort(args.cohort)[0]
    batch = {"source": as_input(volume(s, "t1").data),
             "target": as_input(volume(s, "pet").data, "pet"), "age": torch.tensor([s["age"]])}
    with torch.no_grad():
        method.losses(batch)  # actnorm initialisation; the no-grad forward sets the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params_mb = sum(p.numel() for p in method.parameters()) * 4 / 2**20
    times = []
    for _ in range(3):
        start = time.perf_counter()
        method.zero_grad(set_to_none=True)
        method.losses(batch)["loss"].backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"steps_per_level": args.probe_steps,
                      "checkpointing": bool(args.probe_checkpointing),
                      "s_per_forward_backward": float(np.median(times)), "peak_rss_mb": peak,
                      "baseline_rss_mb": base, "params_mb": params_mb,
                      "activation_mb": peak - base - params_mb}))


def cost(model: Model, args: argparse.Namespace, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    s = subjects[0]
    t1 = volume(s, "t1").data
    out: dict[str, Any] = {}
    for k in (1, 8):
        times = []
        for rep in range(3):
            start = time.perf_counter()
            model.normalised(t1, s["age"], samples=k, temperature=0.7, seed=rep)
            times.append(time.perf_counter() - start)
        out[f"s_per_volume_{k}_samples"] = float(np.median(times))
    start = time.perf_counter()
    model.translated(volume(s, "t1"), s["age"])
    out["s_translate_call_1_sample"] = time.perf_counter() - start
    probes = []
    for steps in (4, 16):
        for ck in (0, 1):
            cmd = [sys.executable, __file__, str(args.checkpoint), "--cohort", str(args.cohort),
                   "--probe-steps", str(steps), "--probe-checkpointing", str(ck)]
            env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            probes.append(json.loads(done.stdout.strip().splitlines()[-1]))
    out["training_probes"] = probes
    return out


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


# -- main -------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="DUAL-GLOW checkpoint folder")
    parser.add_argument("--pix2pix", type=Path, nargs="*", default=[],
                        help="pix2pix t1->pet checkpoint folders")
    parser.add_argument("--cohort", type=Path, required=True, help="held-out phantom (with --clean)")
    parser.add_argument("--train-cohort", type=Path, default=None,
                        help="training phantom: the SVM trained on true PET and the latent probe")
    parser.add_argument("--subjects", type=int, default=0, help="use only the first N (0: all)")
    parser.add_argument("--age-subjects", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="run only these sections")
    parser.add_argument("--probe-steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--probe-checkpointing", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_steps:
        probe(args)
        return
    torch.set_grad_enabled(False)
    subjects = load_cohort(args.cohort)[: args.subjects or None]
    train_cohort = load_cohort(args.train_cohort) if args.train_cohort else []
    models = {"dual-glow": Model(args.checkpoint, "dual-glow")}
    for folder in args.pix2pix:
        models[f"pix2pix ({folder.name})"] = Model(folder, "pix2pix")
    dg = models["dual-glow"]
    report: dict[str, Any] = {"checkpoint": str(args.checkpoint), "cohort": str(args.cohort),
                              "card_steps": dg.info.card.get("steps"),
                              "card_validation": dg.info.card.get("validation")}
    sections = [
        ("accuracy", lambda: accuracy(models, subjects)),
        ("age_response", lambda: age_response(dg, subjects[: args.age_subjects], args.cohort)),
        ("disentanglement", lambda: disentanglement(dg, subjects, train_cohort)),
        ("downstream", lambda: downstream(models, subjects, train_cohort)),
        ("out_of_distribution", lambda: ood(dg, subjects)),
    ]
    if not args.skip_cost:
        sections.append(("cost", lambda: cost(dg, args, subjects)))
    for name, run in sections:
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        report[name] = run()
        print(f"== {name} ({time.perf_counter() - start:.0f} s)")
        for key, value in report[name].items():
            print(f"  {key}: {json.dumps(_rounded(value))}")
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
