"""How close to the CT bundle floor can a translator get on the phantom? References, no training.

The floor a bundled CT model must pass is an MAE of at most ``heldout.CT_MAE_FLOOR_HU`` inside
the head (phantom labels > 0, skull and scalp included) against the noisy CT, at the model's
spacing. This module scores, on the same held-out subjects and with the same scoring
(``metrics.evaluate(..., normalise=True, modality="ct")``), volumes that stand for what a
translator could produce:

- ``noise-free``: the subject's own noise-free CT (the noise floor);
- ``clipped-1000``: the noise-free CT clipped to -1000..1000 HU, all a generator ending in tanh
  could give under the former CT window (``preprocess.LEGACY_CT_WINDOW``; the window now
  reaches 3200 HU);
- ``nominal-bone``: the noise-free CT with the subject's bone density replaced by the
  population's (``CT_HU["bone"]``); everything else exact. A subject's bone density is drawn
  independently of every MR and PET parameter, so no source image tells it;
- ``blurred`` / ``blurred-half``: the noise-free CT smoothed with a Gaussian of sigma one /
  half a voxel;
- ``shifted`` / ``shifted-half``: the noise-free CT moved by one / half a voxel (linear
  interpolation; the mean over the six axis directions);
- ``atlas-mean`` / ``atlas-median``: the voxel-wise mean / median CT of training subjects
  (another cohort seed), the same volume for every subject: what a model that ignores its
  input gets.

``source_visibility`` measures what T1 and PET show of the skull: each one's mean in the skull
label against the CSF inside it and the scalp outside it, in units of the image's noise, and a
profile from the brain outwards through the skull.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from synth_core.metrics import evaluate

REFERENCES = ("noise-free", "clipped-1000", "nominal-bone", "blurred-half", "blurred",
              "shifted-half", "shifted", "atlas-mean", "atlas-median")


def bone_fraction(index: int, seed: int, preset: str) -> tuple[np.ndarray, Any]:
    """(bone fraction (X, Y, Z), subject) of phantom subject ``index`` of cohort ``seed``.

    The phantom does not return its tissue fractions, so the subject's anatomy is rebuilt
    from the same random streams ``generate_subject`` uses; its labels are checked against
    the subject's, so a change of the generator's streams fails here instead of giving
    wrong figures.
    """
    from synth_core.phantom import generate_subject
    from synth_core.phantom.anatomy import build_anatomy
    from synth_core.phantom.parameters import TISSUE_INDEX
    from synth_core.phantom.subject import _draw_demographics
    from synth_core.phantom.template import template_maps

    subject = generate_subject(index, seed=seed, preset=preset)
    streams = np.random.SeedSequence([int(seed), int(index)]).spawn(4)
    demographic_rng, lesion_rng = (np.random.default_rng(s) for s in streams[:2])
    age, sex, _, severity = _draw_demographics(demographic_rng)
    anatomy = build_anatomy(template_maps(preset), age, sex, severity, demographic_rng,
                            lesion_rng, None)
    if not np.array_equal(anatomy.labels, subject.volumes["labels"].data.astype(anatomy.labels.dtype)):
        raise RuntimeError("the rebuilt anatomy differs from generate_subject's: update "
                           "bone_fraction to the phantom's random streams")
    return anatomy.fractions[TISSUE_INDEX["bone"]].astype(np.float32), subject


def _shifted(image: np.ndarray, axis: int, step: float) -> np.ndarray:
    """``image`` moved by ``step`` voxels along ``axis`` (linear interpolation); the
    uncovered edge is air."""
    offset = [0.0] * image.ndim
    offset[axis] = step
    return ndi.shift(image, offset, order=1, mode="constant", cval=-1000.0)


def atlas(seed: int, subjects: int, preset: str) -> dict[str, np.ndarray]:
    """Voxel-wise mean and median of the noisy CT of ``subjects`` phantom subjects of ``seed``."""
    from synth_core.phantom import generate_subject

    stack = np.stack([generate_subject(i, seed=seed, preset=preset).volumes["ct"].data
                      for i in range(subjects)])
    return {"atlas-mean": stack.mean(axis=0), "atlas-median": np.median(stack, axis=0)}


def reference_volumes(subject: Any, bone: np.ndarray,
                      atlases: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``REFERENCES`` volumes for one subject (HU, float32, the subject's grid)."""
    from synth_core.phantom.parameters import CT_HU

    clean = subject.clean["ct"].data.astype(np.float32)
    nominal = clean + np.float32(CT_HU["bone"] - subject.params["ct_bone_hu"]) * bone
    def moved(step: float) -> list[np.ndarray]:
        return [_shifted(clean, axis, sign * step) for axis in range(3) for sign in (1, -1)]

    return {"noise-free": clean, "clipped-1000": np.clip(clean, -1000.0, 1000.0),
            "nominal-bone": nominal, "blurred-half": ndi.gaussian_filter(clean, 0.5),
            "blurred": ndi.gaussian_filter(clean, 1.0), "shifted-half": moved(0.5),
            "shifted": moved(1.0), **atlases}


def ct_references(*, seed: int, subjects: int, preset: str, atlas_seed: int,
                  atlas_subjects: int) -> dict[str, Any]:
    """Score every reference on ``subjects`` held-out subjects of cohort ``seed``.

    Returns ``{"rows": {reference: {"mae": (mean, sd), "psnr": ..., "ssim": ...}},
    "bone_hu": [...], "head_voxels_in_skull": fraction, ...}``; MAE in HU inside the head.
    """
    from synth_core.volume import Volume

    atlases = atlas(atlas_seed, atlas_subjects, preset)
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in REFERENCES}
    bone_hu, skull_share = [], []
    for index in range(subjects):
        bone, subject = bone_fraction(index, seed, preset)
        truth = subject.volumes["ct"]
        labels = subject.volumes["labels"].data
        head = labels > 0
        bone_hu.append(float(subject.params["ct_bone_hu"]))
        skull_share.append(float((labels[head] == 14).mean()))
        for name, data in reference_volumes(subject, bone, atlases).items():
            candidates = data if isinstance(data, list) else [data]
            rows = [evaluate(Volume(c, truth.affine, "ct"), truth, mask=head, normalise=True,
                             modality="ct") for c in candidates]
            scores[name].append({k: float(np.mean([r[k] for r in rows]))
                                 for k in ("mae", "psnr", "ssim")})
    table = {name: {k: (float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs])))
                    for k in ("mae", "psnr", "ssim")} for name, rs in scores.items()}
    return {"cohort": {"seed": seed, "subjects": subjects, "preset": preset},
            "atlas": {"seed": atlas_seed, "subjects": atlas_subjects},
            "units": "MAE in HU inside the head (labels > 0), PSNR in dB over 4024 HU",
            "rows": table, "per_subject": scores, "bone_hu": bone_hu,
            "skull_share_of_head": float(np.mean(skull_share))}


def source_visibility(*, seed: int, subjects: int, preset: str) -> dict[str, Any]:
    """What the noisy T1 and PET show of the skull, per held-out subject, averaged.

    For each modality: the mean in the CSF (label 13), skull (14) and scalp (15) labels,
    and the contrasts skull - CSF and scalp - skull in units of the noise SD (the SD of
    noisy minus noise-free inside the head). A skull darker than both neighbours by many
    noise SDs can be located; one as dark as the CSF inside it cannot be told from it.
    """
    from synth_core.phantom import generate_subject

    out: dict[str, dict[str, list[float]]] = {}
    for index in range(subjects):
        subject = generate_subject(index, seed=seed, preset=preset)
        labels = subject.volumes["labels"].data
        head = labels > 0
        for mod in ("t1", "pet", "ct"):
            noisy, clean = subject.volumes[mod].data, subject.clean[mod].data
            noise = float(np.std((noisy - clean)[head]))
            means = {name: float(noisy[labels == lab].mean())
                     for name, lab in (("csf", 13), ("skull", 14), ("scalp", 15))}
            row = out.setdefault(mod, {})
            for key, value in {**means, "noise_sd": noise,
                               "skull_minus_csf_snr": (means["skull"] - means["csf"]) / noise,
                               "scalp_minus_skull_snr": (means["scalp"] - means["skull"]) / noise,
                               }.items():
                row.setdefault(key, []).append(value)
    return {mod: {k: float(np.mean(v)) for k, v in row.items()} for mod, row in out.items()}


def skull_profile(*, seed: int, index: int, preset: str) -> list[dict[str, float]]:
    """Voxels along +y (anterior) from the brain's centre on the axial slice through it,
    from the last brain voxel outwards: label, noise-free CT, and noisy T1 and PET."""
    from synth_core.phantom import generate_subject

    subject = generate_subject(index, seed=seed, preset=preset)
    labels = subject.volumes["labels"].data
    cx, cy, cz = (int(round(c)) for c in ndi.center_of_mass(subject.volumes["brainmask"].data))
    line = labels[cx, :, cz]
    brain_end = int(np.nonzero((line > 0) & (line < 14))[0].max())
    rows = []
    for y in range(max(brain_end - 2, cy), min(brain_end + 6, labels.shape[1])):
        rows.append({"y": y, "label": int(line[y]),
                     "ct_clean": float(subject.clean["ct"].data[cx, y, cz]),
                     "t1": float(subject.volumes["t1"].data[cx, y, cz]),
                     "pet": float(subject.volumes["pet"].data[cx, y, cz])})
    return rows


LABEL_GROUPS = {"brain": tuple(range(1, 14)), "skull": (14,), "scalp": (15,)}


def label_errors(checkpoint: str, source: str, *, seed: int, subjects: int,
                 preset: str) -> dict[str, dict[str, float]]:
    """Where a CT model's error is: per label group (brain 1-13, skull 14, scalp 15) of the
    held-out subjects, the mean predicted and true CT (HU) and the MAE (HU), means over
    subjects; ``checkpoint`` translates from ``source`` (one of its sources)."""
    from synth_core.inference import translate
    from synth_core.phantom import generate_subject

    rows: dict[str, dict[str, list[float]]] = {g: {} for g in LABEL_GROUPS}
    for index in range(subjects):
        subject = generate_subject(index, seed=seed, preset=preset)
        labels = subject.volumes["labels"].data
        truth = subject.volumes["ct"].data
        pred = translate(subject.volumes[source], "duiit", "ct", source=source,
                         checkpoint=checkpoint).volume.data
        for group, ids in LABEL_GROUPS.items():
            mask = np.isin(labels, ids)
            for key, value in (("predicted", pred[mask].mean()), ("true", truth[mask].mean()),
                               ("mae", np.abs(pred[mask] - truth[mask]).mean())):
                rows[group].setdefault(key, []).append(float(value))
    return {g: {k: float(np.mean(v)) for k, v in row.items()} for g, row in rows.items()}
