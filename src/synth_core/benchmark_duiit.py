"""The DUIIT benchmark: the paper's Tables 2 and 3 in miniature, on phantom subjects.

Per random split of one phantom pool: ``n_target`` labelled CT training subjects, ``n_source``
T1 and ``n_source`` PET subjects who are other people (the sources), and ``n_test`` CT test
subjects; nobody appears twice. The task is the paper's: age from CT, scored by the squared
error (years^2) and the absolute error (years) of each test subject's prediction, the mean
over its brain slices. Every row trains the same fresh predictor (the ``cpu`` preset's small
ResNet on axial slices, standardised age target with the output at the training mean, Adam
with weight decay, a fixed number of steps) on a different training set:

* ``mean``: no network, the mean age of the CT training subjects (what a predictor must beat);
* ``pure-ct``: the CT training slices alone;
* ``oracle-ct``: plus the real CT of the T1 and PET subjects (which the phantom has): what a
  perfect translator could give at best, and whether this predictor can use the age signal
  in CT at all when it has enough subjects;
* ``mix-ct-mri``, ``mix-ct-pet``, ``mix-ct-mri-pet``: plus the T1 / PET / both subjects
  translated to CT by a DUIIT translator trained jointly with its predictor on this split
  (one translator run with both sources serves the three rows: the MRI row uses its T1
  generator, the PET row its PET generator);
* ``cyclegan-mri``, ``cyclegan-pet``: the same with a translator trained without the
  predictor's term (lambda 0: plain CycleGAN);
* ``simple-augment``: CT slices with MONAI's random flips, small rotations and intensity jitter;
* ``transfer``: pretrained on the T1 subjects' slices with their ages, then fine-tuned on CT;
* ``dann``: CT and T1 slices, with a domain classifier behind a gradient-reversal layer on
  the predictor's features (Ganin and Lempitsky);
* ``duiit-joint``: DUIIT's own jointly trained predictor (no retraining), as a check.

Each translated or real image weighs alike in a predictor's training set (the paper's eq. 2
and section 3.2). ``age_signal`` reports how much the phantom's CT says about age at its
voxel size: the correlation of age with the brain's CSF fraction, and the leave-one-out
error of a straight line through it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from synth_core.data import LabelledDataset, VolumeStore, discover_subjects
from synth_core.errors import UserError
from synth_core.io import atomic_write_json
from synth_core.methods import build_config, get_method_class
from synth_core.nn.gradient_reversal import reverse_gradient
from synth_core.nn.predictor import Predictor, PredictorSettings

ROWS = ("mean", "pure-ct", "oracle-ct", "mix-ct-mri", "mix-ct-pet", "mix-ct-mri-pet", "cyclegan-mri",
        "cyclegan-pet", "simple-augment", "transfer", "dann", "duiit-joint")
TARGET, MRI, PET = "ct", "t1", "pet"
#: Slices whose brain-mask area is at least this share of the subject's largest (as training).
MIN_SLICE_FRACTION = 0.05
#: CSF in the phantom's CT: below this many HU inside the brain mask, halfway between its CSF
#: (12 HU) and white matter (30 HU).
CSF_HU = 21.0


@dataclass
class Settings:
    """One benchmark run's sizes and budgets (the defaults are the documented run)."""

    splits: int = 5
    n_target: int = 8
    n_source: int = 40
    n_test: int = 40
    translator_steps: int = 150
    translator_batch: int = 2
    predictor_steps: int = 150
    predictor_batch: int = 32
    predictor_lr: float = 1e-3
    weight_decay: float = 1e-4
    lambda_pred: float = 1e-3
    seed: int = 0
    preset: str = "cpu"
    #: the predictor's slices: brain-mask area at least this share of the subject's largest
    slice_fraction: float = MIN_SLICE_FRACTION


# ---------------------------------------------------------------- data of one split

@dataclass
class Subjects:
    """Slices of some subjects of one modality: images (N, 1, X, Y), their subject index,
    and one age per subject (years)."""

    images: torch.Tensor
    owner: torch.Tensor
    ages: torch.Tensor

    @property
    def slice_ages(self) -> torch.Tensor:
        return self.ages[self.owner]

    @staticmethod
    def join(parts: list[Subjects]) -> Subjects:
        offset, owners = 0, []
        for part in parts:
            owners.append(part.owner + offset)
            offset += len(part.ages)
        return Subjects(torch.cat([p.images for p in parts]), torch.cat(owners),
                        torch.cat([p.ages for p in parts]))


def brain_slices(store: VolumeStore, ids: list[str], modality: str,
                 fraction: float = MIN_SLICE_FRACTION) -> Subjects:
    """Every subject's axial slices whose brain-mask area is at least ``fraction`` of its largest."""
    images, owner, ages = [], [], []
    for i, sid in enumerate(ids):
        volume, mask = store.get(sid, modality)[0], store.mask(sid)[0]
        area = mask.sum(dim=(0, 1)).double()
        keep = torch.nonzero(area >= max(1.0, fraction * float(area.max()))).flatten()
        images.append(volume[:, :, keep].permute(2, 0, 1).unsqueeze(1))
        owner.append(torch.full((len(keep),), i, dtype=torch.long))
        ages.append(float(store.records[sid].age))
    return Subjects(torch.cat(images), torch.cat(owner), torch.tensor(ages, dtype=torch.float32))


def split_roles(ids: list[str], settings: Settings, split: int) -> dict[str, list[str]]:
    """Disjoint roles of one split, drawn from the pool with the split's own seed."""
    need = settings.n_target + 2 * settings.n_source + settings.n_test
    if len(ids) < need:
        raise UserError(f"the pool has {len(ids)} labelled subjects; a split needs {need}: make a "
                        "larger phantom (--subjects) or lower the split sizes")
    order = [ids[i] for i in np.random.default_rng([0xD1, split]).permutation(len(ids))]
    a, b = settings.n_target, settings.n_target + settings.n_source
    c = b + settings.n_source
    return {"train": sorted(order[:a]), MRI: sorted(order[a:b]), PET: sorted(order[b:c]),
            "test": sorted(order[c:c + settings.n_test])}


# ---------------------------------------------------------------- predictors

def _predictor_settings(preset: str) -> PredictorSettings:
    return build_config("duiit", preset).predictor


def train_predictor(data: Subjects, settings: Settings, seed: int, *,
                    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    start: Predictor | None = None, steps: int | None = None,
                    domain: Subjects | None = None) -> tuple[Predictor, float, float]:
    """A fresh predictor (or ``start``, fine-tuned) on ``data``'s slices; returns it with the
    age scaling it regresses (mean, sd of the training subjects' ages).

    ``domain``: DANN, labelled slices of another modality: the age loss covers both, and a
    domain classifier behind a gradient-reversal layer pushes the features to agree.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    every = data if domain is None else Subjects.join([data, domain])
    mean, sd = float(every.ages.mean()), float(max(every.ages.std(unbiased=False), 1.0))
    net = start if start is not None else Predictor(2, 1, _predictor_settings(settings.preset))
    if start is not None:
        with torch.no_grad():  # the regression re-centred on this training set's ages
            net.head.bias.zero_()
    params = list(net.parameters())
    critic = None
    if domain is not None:
        critic = nn.Sequential(nn.Linear(net.head.in_features, 32), nn.ReLU(), nn.Linear(32, 1))
        params += list(critic.parameters())
    opt = torch.optim.Adam(params, lr=settings.predictor_lr, weight_decay=settings.weight_decay)
    total = steps or settings.predictor_steps
    net.train()
    for step in range(total):
        pick = torch.from_numpy(rng.integers(0, len(every.images), settings.predictor_batch))
        x, y = every.images[pick], (every.slice_ages[pick] - mean) / sd
        if transform is not None:
            x = transform(x)
        features = net.dropout(net.features(x))
        loss = F.mse_loss(net.head(features)[:, 0], y)
        if critic is not None:
            is_source = (pick >= len(data.images)).float()
            grl = min(1.0, 2.0 / (1.0 + math.exp(-10 * step / total)) - 1.0)  # Ganin's ramp
            loss = loss + F.binary_cross_entropy_with_logits(
                critic(reverse_gradient(features, grl))[:, 0], is_source)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval(), mean, sd


@torch.no_grad()
def predict_subjects(net: Predictor, mean: float, sd: float, test: Subjects) -> np.ndarray:
    """Each test subject's age (years): the mean over its slices of the de-standardised output."""
    net.eval()
    out = torch.cat([net(test.images[i:i + 128])[:, 0] for i in range(0, len(test.images), 128)])
    ages = np.zeros(len(test.ages))
    for i in range(len(test.ages)):
        ages[i] = float(out[test.owner == i].mean()) * sd + mean
    return ages


def errors(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return {"mse": float(np.mean(diff ** 2)), "mae": float(np.mean(np.abs(diff)))}


def simple_augment(seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Flips, small rotations and intensity jitter, from MONAI's transforms, image by image."""
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandFlip,
        RandRotate,
        RandShiftIntensity,
    )

    chain = Compose([RandFlip(prob=0.5, spatial_axis=0),
                     RandRotate(range_x=math.radians(10), prob=0.8, padding_mode="border"),
                     RandShiftIntensity(offsets=0.05, prob=0.8),
                     RandAdjustContrast(prob=0.5, gamma=(0.9, 1.1))])
    chain.set_random_state(seed=seed)

    def apply(batch: torch.Tensor) -> torch.Tensor:
        # RandAdjustContrast works on [0, 1]-like ranges: shift the normalised [-1, 1] there and back.
        return torch.stack([torch.as_tensor(chain((x + 1) / 2)) * 2 - 1 for x in batch]).float()

    return apply


# ---------------------------------------------------------------- translators

class _Steps:
    """The step context of a plain loop: zero, backward, step; a non-finite loss is skipped."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        self.global_step = 0

    def optimize(self, index: int, loss: torch.Tensor) -> bool:
        if not torch.isfinite(loss.detach()).all():
            return False
        opt = self.optimizers[index]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return True


def train_translator(store: VolumeStore, roles: dict[str, list[str]], settings: Settings,
                     lambda_pred: float, seed: int) -> Any:
    """A DUIIT model (T1 and PET to CT) on this split's subjects; ``lambda_pred`` 0 is plain
    CycleGAN (the predictor still trains alongside but does not steer the translators)."""
    cls = get_method_class("duiit")
    config = build_config("duiit", settings.preset, {"lambda_pred": lambda_pred,
                                           "max_steps": settings.translator_steps,
                                           "batch_size": settings.translator_batch, "seed": seed})
    records = list(store.records.values())
    data = LabelledDataset(store, records, [MRI, PET], TARGET, seed=seed,
                           pools={TARGET: roles["train"], MRI: roles[MRI], PET: roles[PET]})
    cls.fit_labels(config, data.label_summary(), [MRI, PET])
    torch.manual_seed(seed)
    method = cls(config, f"{MRI},{PET}", TARGET)
    optimizers = method.configure_optimizers()
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, method.lr_lambda) for o in optimizers]
    ctx = _Steps(optimizers)
    loader = torch.utils.data.DataLoader(data, batch_size=settings.translator_batch, drop_last=True)
    step, epoch = 0, 0
    method.train()
    while step < settings.translator_steps:
        data.set_epoch(epoch)
        for batch in loader:
            method.adversarial_step(batch, ctx)
            for schedule in schedules:
                schedule.step()
            step += 1
            ctx.global_step = step
            if step >= settings.translator_steps:
                break
        epoch += 1
    return method.eval()


@torch.no_grad()
def translate_slices(method: Any, source: str, subjects: Subjects) -> Subjects:
    net = method.to_target[source]
    out = torch.cat([net(subjects.images[i:i + 64]) for i in range(0, len(subjects.images), 64)])
    return Subjects(out, subjects.owner, subjects.ages)


# ---------------------------------------------------------------- the signal

def age_signal(store: VolumeStore, ids: list[str]) -> dict[str, Any]:
    """How much the phantom's CT says about age: CSF fraction of the brain mask (HU below
    ``CSF_HU``, from the de-normalised CT) against age, its correlation and the
    leave-one-out squared error of a straight line, beside the mean's."""
    from synth_core.preprocess import denormalise

    ages, csf = [], []
    for sid in ids:
        mask = store.mask(sid)[0].numpy()
        hu = denormalise(store.get(sid, TARGET)[0].numpy(), store.norm_params(sid, TARGET))
        csf.append(float((hu[mask] < CSF_HU).mean()))
        ages.append(float(store.records[sid].age))
    a, c = np.asarray(ages), np.asarray(csf)
    line_err, mean_err = [], []
    for i in range(len(a)):
        keep = np.arange(len(a)) != i
        guess = a[keep].mean()
        if np.ptp(c[keep]) > 0:  # a CSF fraction that varies at all
            slope, icpt = np.polyfit(c[keep], a[keep], 1)
            guess = slope * c[i] + icpt
        line_err.append((guess - a[i]) ** 2)
        mean_err.append((a[keep].mean() - a[i]) ** 2)
    corr = float(np.corrcoef(a, c)[0, 1]) if np.ptp(c) > 0 else 0.0
    return {"subjects": len(a), "csf_hu_below": CSF_HU, "corr_age_csf_fraction": corr,
            "loo_mse_line_years2": float(np.mean(line_err)), "loo_mse_mean_years2": float(np.mean(mean_err))}


# ---------------------------------------------------------------- one split, the whole run

def run_split(store: VolumeStore, ids: list[str], settings: Settings, split: int,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every row of one split: {"rows": {row: {"mse", "mae"}}, "roles": ..., "seconds": ...}."""
    started = time.perf_counter()
    roles = split_roles(ids, settings, split)
    seed = settings.seed + 1000 * split
    f = settings.slice_fraction
    train = brain_slices(store, roles["train"], TARGET, f)
    test = brain_slices(store, roles["test"], TARGET, f)
    mri = brain_slices(store, roles[MRI], MRI, f)
    pet = brain_slices(store, roles[PET], PET, f)
    truth = test.ages.numpy()
    rows: dict[str, dict[str, float]] = {}
    timing: dict[str, float] = {}

    def score(name: str, data: Subjects, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        net, mean, sd = train_predictor(data, settings, seed, **kwargs)
        rows[name] = errors(predict_subjects(net, mean, sd, test), truth)
        timing[name] = time.perf_counter() - t0
        log(f"split {split} {name}: MSE {rows[name]['mse']:.1f} years^2, MAE {rows[name]['mae']:.2f} years")

    rows["mean"] = errors(np.full(len(truth), float(train.ages.mean())), truth)
    log(f"split {split} mean: MSE {rows['mean']['mse']:.1f} years^2")
    score("pure-ct", train)
    score("oracle-ct", Subjects.join([train, brain_slices(store, roles[MRI] + roles[PET], TARGET, f)]))
    score("simple-augment", train, transform=simple_augment(seed))
    t0 = time.perf_counter()
    pretrained, _, _ = train_predictor(mri, settings, seed + 1)
    timing["transfer-pretrain"] = time.perf_counter() - t0
    score("transfer", train, start=pretrained)
    score("dann", train, domain=mri)
    for name, lam in (("duiit", settings.lambda_pred), ("cyclegan", 0.0)):
        t0 = time.perf_counter()
        method = train_translator(store, roles, settings, lam, seed)
        timing[f"{name}-translator"] = time.perf_counter() - t0
        fake_mri, fake_pet = translate_slices(method, MRI, mri), translate_slices(method, PET, pet)
        if name == "duiit":
            joint = [method.predict_volume(store.get(s, TARGET)[None], store.mask(s)[None])["age"]
                     for s in roles["test"]]
            rows["duiit-joint"] = errors(np.asarray(joint), truth)
            score("mix-ct-mri", Subjects.join([train, fake_mri]))
            score("mix-ct-pet", Subjects.join([train, fake_pet]))
            score("mix-ct-mri-pet", Subjects.join([train, fake_mri, fake_pet]))
        else:
            score("cyclegan-mri", Subjects.join([train, fake_mri]))
            score("cyclegan-pet", Subjects.join([train, fake_pet]))
    return {"split": split, "roles": roles, "rows": rows, "seconds": time.perf_counter() - started,
            "timing": timing}


#: Predictor settings ``tune_predictor`` chooses among (names for the record).
CANDIDATES: dict[str, dict[str, Any]] = {
    "base": {},
    "central-slices": {"slice_fraction": 0.5},
    "slow": {"predictor_lr": 3e-4, "predictor_steps": 100},
    "central-slow": {"slice_fraction": 0.5, "predictor_lr": 3e-4, "predictor_steps": 100},
    "central-strong-decay": {"slice_fraction": 0.5, "weight_decay": 1e-2},
}


def tune_predictor(pool: Path, settings: Settings, splits: int = 3,
                   log: Callable[[str], None] = print) -> tuple[Settings, dict[str, Any]]:
    """Choose the predictor's settings (``CANDIDATES``) on CT alone, on another phantom pool
    than the benchmark's (so no test subject of the benchmark takes part): per tuning split,
    ``n_target`` training and up to ``n_test`` test subjects; the lowest mean squared error
    over the splits wins. Returns the chosen settings and every candidate's scores."""
    records = [r for r in discover_subjects(pool) if r.age is not None and TARGET in r.paths]
    store = VolumeStore(records, multiple=4)
    ids = sorted(r.subject_id for r in records)
    scores: dict[str, Any] = {}
    for name, change in CANDIDATES.items():
        trial = Settings(**(asdict(settings) | change))
        mse, guess = [], []
        for split in range(splits):
            order = [ids[i] for i in np.random.default_rng([0x7E, split]).permutation(len(ids))]
            train_ids = sorted(order[:settings.n_target])
            test_ids = sorted(order[settings.n_target:settings.n_target + settings.n_test])
            train = brain_slices(store, train_ids, TARGET, trial.slice_fraction)
            test = brain_slices(store, test_ids, TARGET, trial.slice_fraction)
            net, mean, sd = train_predictor(train, trial, trial.seed + split)
            mse.append(errors(predict_subjects(net, mean, sd, test), test.ages.numpy())["mse"])
            guess.append(errors(np.full(len(test.ages), float(train.ages.mean())), test.ages.numpy())["mse"])
        scores[name] = {"mse": float(np.mean(mse)), "mean_guess_mse": float(np.mean(guess)), **change}
        log(f"tuning {name}: MSE {scores[name]['mse']:.1f} years^2 (mean guess {np.mean(guess):.1f})")
    best = min(scores, key=lambda k: scores[k]["mse"])
    return Settings(**(asdict(settings) | CANDIDATES[best])), {"chosen": best, "candidates": scores,
                                                               "pool": str(pool), "splits": splits}


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and SD (over splits) of each row's MSE and MAE."""
    out = {}
    for row in ROWS:
        values = [r["rows"][row] for r in results if row in r["rows"]]
        if not values:
            continue
        mse = np.array([v["mse"] for v in values])
        mae = np.array([v["mae"] for v in values])
        out[row] = {"mse_mean": float(mse.mean()), "mse_sd": float(mse.std(ddof=1)) if len(mse) > 1 else 0.0,
                    "mae_mean": float(mae.mean()), "mae_sd": float(mae.std(ddof=1)) if len(mae) > 1 else 0.0,
                    "splits": len(values)}
    return out


def run(pool: Path, out: Path, settings: Settings | None = None,
        log: Callable[[str], None] = print, tune_pool: Path | None = None) -> dict[str, Any]:
    """Every split not yet in ``out`` (``split-K.json``; a killed run resumes), then
    ``results.json`` with the summary, the settings and the CT age signal. With
    ``tune_pool``, the predictor's settings are first chosen there (``tune_predictor``)."""
    settings = settings or Settings()
    torch.set_num_threads(1)
    tuning = None
    if tune_pool is not None:
        out.mkdir(parents=True, exist_ok=True)
        file = out / "tuning.json"
        if file.is_file():
            tuning = json.loads(file.read_text())
            settings = Settings(**(asdict(settings) | CANDIDATES[tuning["chosen"]]))
        else:
            settings, tuning = tune_predictor(tune_pool, settings, log=log)
            atomic_write_json(file, tuning)
    records = [r for r in discover_subjects(pool) if r.age is not None
               and all(m in r.paths for m in (TARGET, MRI, PET))]
    store = VolumeStore(records, multiple=4)
    ids = sorted(r.subject_id for r in records)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for split in range(settings.splits):
        file = out / f"split-{split}.json"
        if file.is_file() and json.loads(file.read_text())["settings"] == asdict(settings):
            results.append(json.loads(file.read_text()))
            continue
        result = run_split(store, ids, settings, split, log) | {"settings": asdict(settings)}
        atomic_write_json(file, result, overwrite=True)
        results.append(result)
    report = {"pool": str(pool), "settings": asdict(settings), "tuning": tuning,
              "summary": summarise(results),
              "age_signal": age_signal(store, ids),
              "cpu_seconds": float(sum(r["seconds"] for r in results)), "units": {
                  "mse": "years^2", "mae": "years"}}
    atomic_write_json(out / "results.json", report, overwrite=True)
    return report


def table(report: dict[str, Any]) -> str:
    """The summary as a markdown table (mean +- SD over splits)."""
    lines = ["| training data | MSE (years^2) | MAE (years) |", "|---|---|---|"]
    for row, entry in report["summary"].items():
        lines.append(f"| {row} | {entry['mse_mean']:.1f} +- {entry['mse_sd']:.1f} | "
                     f"{entry['mae_mean']:.2f} +- {entry['mae_sd']:.2f} |")
    return "\n".join(lines)


__all__ = ["ROWS", "Settings", "age_signal", "run", "run_split", "summarise", "table"]
