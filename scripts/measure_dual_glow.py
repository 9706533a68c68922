"""Measure a DUAL-GLOW checkpoint on held-out phantom subjects (docs/benchmarks-dual-glow.md).

    python scripts/measure_dual_glow.py CHECKPOINT_DIR --pix2pix PIX2PIX_DIR \
        --cohort /work/data/phantom-eval [--json OUT.json] [--skip-cost]

Prints every figure: accuracy against the true PET beside pix2pix and the noise floor,
the age response (the paper's fig. 7 with a ground truth), disentanglement of age in
the MRI latents, AD-vs-CN classification from regional PET (the paper's table 2), the
out-of-distribution check, and speed and memory. The cohort must be written with
``modality-synth phantom ... --clean`` (the noise-free PET is the ground truth).

Two input paths are measured. ``brainmask``: the T1 is normalised in its brain mask,
exactly as the training data were (``synth_core.data.VolumeStore``), and the model runs
on the tensor. ``translate``: the user's path, ``synth_core.translate`` on the file.
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
from dg_stats import kfold_ridge_r2, loo_svm_accuracy, spearman, svm_fit, svm_predict

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


def as_input(data: np.ndarray, mask: np.ndarray, modality: str = "t1") -> torch.Tensor:
    """Normalise like the training store (in the brain mask) -> (1, 1, X, Y, Z)."""
    x = preprocess.normalise(data, preprocess.fit_normalisation(data, modality, mask=mask))
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

    def normalised(self, t1: np.ndarray, mask: np.ndarray, age: float | None = None,
                   samples: int = 1, temperature: float | None = None, seed: int = 0) -> np.ndarray:
        """Brainmask path: normalised PET samples (K, X, Y, Z); PET SUV is proportional to n + 1."""
        request = SynthesisRequest(age=age if self.takes_age else None, samples=samples,
                                   temperature=temperature if self.takes_age else None,
                                   generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return self.method.synthesize(as_input(t1, mask), request)[:, 0, 0].numpy()

    def translated(self, t1: sc.Volume, age: float | None = None) -> sc.TranslationResult:
        return sc.translate(t1, method=self.key, to="pet", checkpoint=str(self.info.directory),
                            source="t1", age=self.clamp(age) if self.takes_age and age else None)


# -- accuracy ------------------------------------------------------------------------
def accuracy(models: dict[str, Model], subjects: list[dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, list[dict[str, float]]] = {}
    for s in subjects:
        mask, t1 = brain(s), volume(s, "t1")
        noisy, clean = volume(s, "pet"), volume(s, "pet_clean")
        truth = {"noisy": noisy, "clean": clean}
        preds = {"noise floor (noisy PET)": noisy.data}
        for name, model in models.items():
            age = model.clamp(s["age"]) if model.takes_age else None
            preds[f"{name} / brainmask"] = model.normalised(t1.data, mask, age)[0] + 1.0
            preds[f"{name} / translate"] = model.translated(t1, age).volume.data
            if model.takes_age:
                preds[f"{name} / brainmask, mean of 8 at T=0.7"] = (
                    model.normalised(t1.data, mask, age, samples=8, temperature=0.7).mean(0) + 1.0)
        for name, pred in preds.items():
            p = sc.Volume(np.asarray(pred, dtype=np.float32), noisy.affine, "pet")
            for against, t in truth.items():
                if name.startswith("noise floor") and against == "noisy":
                    continue
                scores = normalised_scores(p, t, "pet", mask)
                rows.setdefault(f"{name} vs {against}", []).append(scores)
    return {k: {m: (float(np.mean([r[m] for r in v])), float(np.std([r[m] for r in v])))
                for m in v[0]} for k, v in rows.items()}


# -- age response --------------------------------------------------------------------
def true_log_slope(slope: float, reference: float = 55.0) -> float:
    """Least-squares slope over AGES of log(1 + slope (age - reference)): the phantom's
    multiplicative age model, in the same per-year log units the synthesis is fitted in."""
    return float(np.polyfit(AGES, np.log1p(slope * (AGES - reference)), 1)[0])


def age_response(model: Model, subjects: list[dict[str, Any]], cohort: Path) -> dict[str, Any]:
    truth = json.loads((cohort / "cohort.json").read_text())["parameters"]
    slopes_true = truth["pet"]["age_slope_per_year"]
    regions = AGEING + FLAT
    curves = {r: [] for r in regions}  # per subject: region mean (SUV-proportional) per age
    for s in subjects:
        mask, t1 = brain(s), volume(s, "t1").data
        labels = np.rint(volume(s, "labels").data).astype(int)
        ids = s["labels_ids"]
        means = {r: [] for r in regions}
        for age in AGES:
            pet = model.normalised(t1, mask, float(age))[0] + 1.0
            for r in regions:
                means[r].append(float(pet[labels == ids[r]].mean()))
        for r in regions:
            curves[r].append(means[r])
    out: dict[str, Any] = {"subjects": len(subjects), "ages": AGES.tolist(), "regions": {}}
    occipital = np.log(np.array(curves["occipital"]))
    for r in regions:
        c = np.array(curves[r])  # (subjects, ages)
        avg = c.mean(0)
        log_slopes = [np.polyfit(AGES, np.log(row), 1)[0] for row in c]
        rel_slopes = [np.polyfit(AGES, np.log(row) - occ, 1)[0] for row, occ in zip(c, occipital, strict=True)]
        out["regions"][r] = {
            "mean_curve": avg.round(4).tolist(),
            "spearman_of_average": spearman(AGES, avg),
            "spearman_mean_over_subjects": float(np.mean([spearman(AGES, row) for row in c])),
            "log_slope_per_year": float(np.mean(log_slopes)),
            "slope_vs_occipital_per_year": float(np.mean(rel_slopes)),
            "true_slope_per_year": true_log_slope(slopes_true.get(r, 0.0)),
        }
    return out


# -- disentanglement -------------------------------------------------------------------
def disentanglement(model: Model, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """R^2 of ridge regression of age on pooled MRI latents (nested CV, see dg_stats)."""
    flow = model.method.flow
    lower, top, ages = [], [], []
    for s in subjects:
        with torch.no_grad():
            latents, _ = flow.encode_mri(as_input(volume(s, "t1").data, brain(s)))
        pooled = [torch.cat([z.mean((2, 3, 4)), z.std((2, 3, 4))], 1)[0].numpy() for z in latents]
        lower.append(np.concatenate(pooled[:-1]))
        top.append(pooled[-1])
        ages.append(s["age"])
    y = np.array(ages)
    return {"subjects": len(y), "features_lower": len(lower[0]), "features_top": len(top[0]),
            "r2_lower": kfold_ridge_r2(np.array(lower), y),
            "r2_top": kfold_ridge_r2(np.array(top), y)}


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
            model.normalised(volume(s, "t1").data, brain(s), model.clamp(s["age"]))[0] + 1.0,
            s, brain(s))
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
    out: dict[str, Any] = {}
    for given in ("t1", "ct", "pet", "t2"):
        bits_b, flags_b, flags_t, bits_t = [], [], [], []
        for s in subjects:
            vol, mask = volume(s, given), brain(s)
            result = model.method.out_of_distribution(as_input(vol.data, mask, "t1"))
            bits_b.append(result["bits_per_voxel"])
            flags_b.append("warning" in result)
            res = model.translated(sc.Volume(vol.data, vol.affine, "t1"), s["age"])
            bits_t.append(res.provenance["InputLikelihood"]["bits_per_voxel"])
            flags_t.append(bool(res.warnings))
        out[f"{given} given as t1"] = {
            "brainmask_bits_mean": float(np.mean(bits_b)), "brainmask_warned": int(sum(flags_b)),
            "translate_bits_mean": float(np.mean(bits_t)), "translate_warned": int(sum(flags_t)),
            "subjects": len(subjects)}
    out["reference"] = {k: v for k, v in result.items() if k != "warning"}
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
    mask = brain(s)
    batch = {"source": as_input(volume(s, "t1").data, mask),
             "target": as_input(volume(s, "pet").data, mask, "pet"), "age": torch.tensor([s["age"]])}
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
    t1, mask = volume(s, "t1").data, brain(s)
    out: dict[str, Any] = {}
    for k in (1, 8):
        times = []
        for rep in range(3):
            start = time.perf_counter()
            model.normalised(t1, mask, s["age"], samples=k, temperature=0.7, seed=rep)
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


# -- main -------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="DUAL-GLOW checkpoint folder")
    parser.add_argument("--pix2pix", type=Path, help="pix2pix t1->pet checkpoint folder")
    parser.add_argument("--cohort", type=Path, required=True, help="held-out phantom (with --clean)")
    parser.add_argument("--train-cohort", type=Path, default=None,
                        help="training phantom, for the SVM trained on true PET")
    parser.add_argument("--subjects", type=int, default=0, help="use only the first N (0: all)")
    parser.add_argument("--age-subjects", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--probe-steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--probe-checkpointing", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_steps:
        probe(args)
        return
    torch.set_grad_enabled(False)
    subjects = load_cohort(args.cohort)[: args.subjects or None]
    models = {"dual-glow": Model(args.checkpoint, "dual-glow")}
    if args.pix2pix:
        models["pix2pix"] = Model(args.pix2pix, "pix2pix")
    dg = models["dual-glow"]
    report: dict[str, Any] = {"checkpoint": str(args.checkpoint), "cohort": str(args.cohort),
                              "card_steps": dg.info.card.get("steps"),
                              "card_validation": dg.info.card.get("validation")}
    sections = [
        ("accuracy", lambda: accuracy(models, subjects)),
        ("age_response", lambda: age_response(dg, subjects[: args.age_subjects], args.cohort)),
        ("disentanglement", lambda: disentanglement(dg, subjects)),
        ("downstream", lambda: downstream(
            models, subjects, load_cohort(args.train_cohort) if args.train_cohort else [])),
        ("out_of_distribution", lambda: ood(dg, subjects)),
    ]
    if not args.skip_cost:
        sections.append(("cost", lambda: cost(dg, args, subjects)))
    for name, run in sections:
        start = time.perf_counter()
        report[name] = run()
        print(f"== {name} ({time.perf_counter() - start:.0f} s)")
        print(json.dumps(report[name], indent=1))
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
