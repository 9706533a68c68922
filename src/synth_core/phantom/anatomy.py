"""One subject's anatomy: tissue fractions and labels on the preset grid.

A subject voxel at world position x samples the template at p = phi(x):

    q = c + R (x - c) / scale                  head size and orientation
    p = q + u(x) - s_v w_v(q) (q - c_v) + s_h sum_h w_h(q) (q - c_h) - s_t w_t(q) (q - c_t)

with u a smooth random displacement (a few mm), and radial terms with Gaussian weights w
that enlarge the ventricles (s_v grows with age and AD), shrink the hippocampi (s_h) and
push tissue away from a tumour (s_t). Each radial map stays one-to-one for s < 1. After
warping, cortical grey matter facing CSF is thinned into CSF, and the skull and scalp are
built as shells at given distances outside the brain surface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from synth_core.phantom.fields import random_smooth_field
from synth_core.phantom.parameters import (
    AGE_REFERENCE_YEARS,
    ATROPHY,
    DEFORMATION,
    HEAD_LAYERS_MM,
    LABEL_IDS,
    LESIONS,
    MNI_BRAIN_CENTRE_MM,
    TISSUE_INDEX,
    TISSUES,
)
from synth_core.phantom.template import TemplateMaps


@dataclass
class Anatomy:
    """Tissue fractions (T, X, Y, Z) in the order of ``TISSUES`` (air is 1 - their sum),
    the region parcel and labels (int16, X, Y, Z), the brain mask (bool) and the drawn
    geometric parameters."""

    fractions: np.ndarray
    parcel: np.ndarray
    labels: np.ndarray
    brainmask: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def _ramp(t: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume step: 0 for t << 0, 1 for t >> 0, linear over one voxel ``width``."""
    return np.clip(t / np.float32(width) + np.float32(0.5), 0.0, 1.0)


def _gaussian_weight(q: list[np.ndarray], centre, sigma) -> np.ndarray:
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (3,))
    r2 = sum(((qi - ci) / si) ** 2 for qi, ci, si in zip(q, centre, sigma, strict=True))
    return np.exp(-0.5 * r2).astype(np.float32)


def _compact_weight(q: list[np.ndarray], centre, radius: float) -> np.ndarray:
    """(1 - r^2 / radius^2)^2 inside the radius, 0 outside: a bump with compact support."""
    u = sum(((qi - np.float32(ci)) / np.float32(radius)) ** 2 for qi, ci in zip(q, centre, strict=True))
    return np.square(np.clip(1.0 - u, 0.0, None)).astype(np.float32)


def _grid(maps: TemplateMaps) -> list[np.ndarray]:
    """World mm of the preset grid as three sparse (broadcastable) float32 arrays."""
    affine, shape = maps.preset.affine, maps.preset.shape
    axes = [(affine[a, a] * np.arange(n) + affine[a, 3]).astype(np.float32)
            for a, n in enumerate(shape)]
    return list(np.meshgrid(*axes, indexing="ij", sparse=True))


def _rotation(pitch_deg: float, yaw_deg: float) -> np.ndarray:
    a, b = np.deg2rad(pitch_deg), np.deg2rad(yaw_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def draw_geometry(rng: np.random.Generator, age: float, sex: str, severity: float) -> dict:
    """The subject's geometric parameters (head size, pose, atrophy, head layers)."""
    years = age - AGE_REFERENCE_YEARS
    skull, fat, skin = (float(rng.uniform(*HEAD_LAYERS_MM[k])) for k in ("skull", "fat", "skin"))
    ventricles = (ATROPHY["ventricle_expansion_per_year"] * years
                  + ATROPHY["ventricle_expansion_ad"] * severity
                  + ATROPHY["ventricle_expansion_sd"] * rng.standard_normal())
    return {
        "head_scale": float(DEFORMATION["head_scale"][sex]
                            * np.exp(DEFORMATION["head_scale_sd"] * rng.standard_normal())),
        "rotation_deg": [float(DEFORMATION["rotation_sd_deg"] * v)
                         for v in rng.standard_normal(2)],
        "ventricle_expansion": float(np.clip(ventricles, 0.0, 0.7)),
        "hippocampal_contraction": float(ATROPHY["hippocampal_contraction_per_year"] * years
                                         + ATROPHY["hippocampal_contraction_ad"] * severity),
        "cortical_thinning": float(ATROPHY["cortical_thinning_per_year"] * years),
        "csf_shell_mm": float(ATROPHY["csf_shell_mm_at_55"]
                              + ATROPHY["csf_shell_mm_per_year"] * years),
        "skull_mm": skull, "fat_mm": fat, "skin_mm": skin,
    }


def draw_tumour(rng: np.random.Generator, maps: TemplateMaps) -> dict:
    """A tumour site (MNI mm, in deep cerebral white matter), radius and rim thickness (mm)."""
    site = maps.tumour_sites_mm[rng.integers(len(maps.tumour_sites_mm))]
    return {"centre_mm": [float(v) for v in site],
            "radius_mm": float(rng.uniform(*LESIONS["tumour_radius_mm"])),
            "rim_mm": float(rng.uniform(*LESIONS["tumour_rim_mm"]))}


def _template_positions(maps: TemplateMaps, geometry: dict, tumour: dict | None,
                        rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(q, p): head-aligned and fully warped MNI mm of each subject voxel, float32 (X, Y, Z)."""
    shape = maps.preset.shape
    x = _grid(maps)
    centre = np.asarray(MNI_BRAIN_CENTRE_MM, dtype=np.float32)
    a = (_rotation(*geometry["rotation_deg"]) / geometry["head_scale"]).astype(np.float32)
    q = [centre[i] + sum(a[i, j] * (x[j] - centre[j]) for j in range(3)) for i in range(3)]
    q = [np.broadcast_to(qi, shape) for qi in q]
    p = [qi + random_smooth_field(rng, shape, DEFORMATION["dct_orders"],
                                  DEFORMATION["smooth_sd_mm"]) for qi in q]

    def radial(strength: float, centre_mm, weight: np.ndarray) -> None:
        weight = np.float32(strength) * weight
        for i in range(3):
            p[i] += weight * (q[i] - np.float32(centre_mm[i]))

    centre_v = maps.ventricle_centre_mm
    radial(-geometry["ventricle_expansion"], centre_v,
           _gaussian_weight(q, centre_v, ATROPHY["ventricle_sigma_mm"]))
    for centre_h in maps.hippocampus_centres_mm:
        radial(geometry["hippocampal_contraction"], centre_h,
               _gaussian_weight(q, centre_h, ATROPHY["hippocampal_sigma_mm"]))
    if tumour is not None:
        # Compact support: the tumour leaves tissue beyond this reach untouched.
        reach = LESIONS["tumour_mass_effect_reach"] * tumour["radius_mm"]
        radial(-LESIONS["tumour_mass_effect"], tumour["centre_mm"],
               _compact_weight(q, tumour["centre_mm"], reach))
    return q, p


def _warp(maps: TemplateMaps, p: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Template maps sampled at p: linear for fractions and distance, nearest for parcels."""
    affine = maps.preset.affine
    index = np.stack([(p[i] - np.float32(affine[i, 3])) / np.float32(affine[i, i])
                      for i in range(3)])

    def sample(array: np.ndarray, order: int, mode: str) -> np.ndarray:
        return ndi.map_coordinates(array, index, order=order, mode=mode, output=np.float32)

    return {
        "gm": sample(maps.gm, 1, "constant"),
        "wm": sample(maps.wm, 1, "constant"),
        "distance": sample(maps.distance, 1, "nearest"),
        "ventricle_zone": sample(maps.ventricle_zone, 1, "constant"),
        "parcel": sample(maps.parcel.astype(np.float32), 0, "constant").astype(np.int16),
    }


def _thinning_table(geometry: dict, severity: float) -> np.ndarray:
    """Fraction of CSF-facing grey matter turned into CSF, per parcel id."""
    table = np.full(max(LABEL_IDS.values()) + 1, geometry["cortical_thinning"], np.float32)
    table[0] = 0.0
    for region, extra in ATROPHY["ad_thinning"].items():
        table[LABEL_IDS[region]] += extra * severity
    return table


def _tumour(f: dict[str, np.ndarray], p: list[np.ndarray], tumour: dict, voxel: float,
            rng: np.random.Generator) -> None:
    """Necrotic core, enhancing rim and white-matter oedema, in place on fractions f."""
    shape = f["gm"].shape
    radius = tumour["radius_mm"]
    wobble = 1.0 + LESIONS["tumour_irregularity"] * random_smooth_field(rng, shape, 5, 1.0)
    r = np.sqrt(sum((pi - np.float32(ci)) ** 2 for pi, ci in zip(p, tumour["centre_mm"], strict=True)))
    r = r / np.clip(wobble, 0.5, None)
    total = _ramp(radius - r, voxel)
    core = _ramp(radius - tumour["rim_mm"] - r, voxel)
    zone = _ramp(LESIONS["oedema_radius_factor"] * radius - r, voxel) - total
    for name in TISSUES:
        f[name] *= 1.0 - total
    f["oedema"] = zone * f["wm"]
    f["wm"] -= f["oedema"]
    f["necrosis"] = core
    f["enhancing"] = total - core


def _wmh(f: dict[str, np.ndarray], ventricle_zone: np.ndarray, parcel: np.ndarray,
         severity: float, voxel: float, rng: np.random.Generator) -> None:
    """White-matter hyperintensities: periventricular caps and deep blobs, in place."""
    blobs = ndi.gaussian_filter(rng.standard_normal(parcel.shape, dtype=np.float32),
                                LESIONS["wmh_blob_sigma_mm"] / voxel)
    blobs /= max(float(blobs.std()), 1e-6)
    near = ndi.gaussian_filter(ventricle_zone, LESIONS["wmh_periventricular_sigma_mm"] / voxel)
    near /= max(float(near.max()), 1e-6)
    score = blobs + 2.5 * near
    cerebral = (parcel >= LABEL_IDS["frontal"]) & (parcel <= LABEL_IDS["precuneus"])
    amount = np.clip((score - (2.6 - 1.2 * severity)) / 0.5, 0.0, 1.0) * cerebral
    f["wmh"] = amount * f["wm"]
    f["wm"] -= f["wmh"]


def label_map(fractions: np.ndarray, parcel: np.ndarray, ventricle_zone: np.ndarray) -> np.ndarray:
    """Labels (int16) from the dominant tissue group of each voxel.

    Grey matter takes its parcel's region id; white matter 11; CSF 12 inside the
    ventricle zone, else 13; dura, bone, marrow and blood 14 (skull); fat and skin 15
    (scalp); lesions 16-18; air 0.
    """
    t = TISSUE_INDEX
    groups = [
        1.0 - fractions.sum(axis=0),
        fractions[t["gm"]], fractions[t["wm"]], fractions[t["csf"]],
        fractions[t["dura"]] + fractions[t["bone"]] + fractions[t["marrow"]]
        + fractions[t["blood"]],
        fractions[t["fat"]] + fractions[t["skin"]],
        fractions[t["enhancing"]] + fractions[t["necrosis"]],
        fractions[t["oedema"]], fractions[t["wmh"]],
    ]
    # A running comparison instead of np.argmax over a stacked (9, X, Y, Z) array: the
    # same first-maximum winner, without the 9-volume copy and the strided reduction
    # (seconds at 1 mm).
    best = groups[0]
    winner = np.zeros(best.shape, dtype=np.int64)
    for index, group in enumerate(groups[1:], start=1):
        better = group > best
        winner[better] = index
        best = np.where(better, group, best)
    ids = LABEL_IDS
    lookup = np.array([0, 0, ids["white_matter"], ids["csf"], ids["skull"], ids["scalp"],
                       ids["tumour"], ids["oedema"], ids["wmh"]], dtype=np.int16)
    labels = lookup[winner]
    grey = winner == 1
    labels[grey] = np.where(parcel[grey] > 0, parcel[grey], ids["csf"])
    labels[(winner == 3) & (ventricle_zone > 0.5)] = ids["ventricles"]
    return labels


def build_anatomy(maps: TemplateMaps, age: float, sex: str, severity: float,
                  rng: np.random.Generator, lesion_rng: np.random.Generator,
                  lesion: str | None) -> Anatomy:
    """Warp, atrophy, head shells and lesions for one subject -> ``Anatomy``.

    ``rng`` draws everything but the lesions, which come from ``lesion_rng``, so a
    subject with and without a lesion shares the rest of its anatomy.
    """
    voxel = maps.preset.spacing_mm
    geometry = draw_geometry(rng, age, sex, severity)
    tumour = draw_tumour(lesion_rng, maps) if lesion in ("tumour", "both") else None
    q, p = _template_positions(maps, geometry, tumour, rng)
    w = _warp(maps, p)
    d = w["distance"]

    brain = _ramp(-d, voxel)
    gm, wm = w["gm"], w["wm"]
    scale = np.minimum(1.0, brain / np.maximum(gm + wm, 1e-6))
    gm, wm = gm * scale, wm * scale
    csf = np.maximum(brain - gm - wm, 0.0)
    # Thinning turns grey matter that faces CSF (sulci, surface) into CSF.
    facing = np.clip(2.0 * ndi.gaussian_filter(csf, 1.0), 0.0, 1.0)
    loss = _thinning_table(geometry, severity)[w["parcel"]] * gm * facing
    gm, csf = gm - loss, csf + loss

    b1 = geometry["csf_shell_mm"]
    b2 = b1 + HEAD_LAYERS_MM["dura"]
    b3 = b2 + geometry["skull_mm"]
    b4 = b3 + geometry["fat_mm"]
    b5 = b4 + geometry["skin_mm"]

    def beyond(depth: float) -> np.ndarray:
        return _ramp(d - np.float32(depth), voxel)

    shell_csf = (1.0 - brain) - beyond(b1)
    dura = beyond(b1) - beyond(b2)
    skull = beyond(b2) - beyond(b3)
    # Diploe: the middle of the skull is part marrow, between two tables of dense bone.
    table = 0.3 * geometry["skull_mm"]
    marrow = 0.7 * (beyond(b2 + table) - beyond(b3 - table))
    # The superior sagittal sinus: blood in the midline dura and CSF shell above the brain.
    sinus = _ramp(np.float32(4.0) - np.abs(q[0]), voxel) * (q[2] > 15.0)
    f = {name: np.zeros(maps.preset.shape, np.float32) for name in TISSUES}
    f.update(gm=gm, wm=wm, csf=csf + shell_csf * (1.0 - sinus), dura=dura * (1.0 - sinus),
             blood=(shell_csf + dura) * sinus, bone=skull - marrow, marrow=marrow,
             fat=beyond(b3) - beyond(b4), skin=beyond(b4) - beyond(b5))
    params = dict(geometry)
    if tumour is not None:
        _tumour(f, p, tumour, voxel, lesion_rng)
        params["tumour"] = tumour
    if lesion in ("wmh", "both"):
        wmh_severity = float(lesion_rng.uniform(*LESIONS["wmh_severity"]))
        _wmh(f, w["ventricle_zone"], w["parcel"], wmh_severity, voxel, lesion_rng)
        params["wmh_severity"] = wmh_severity

    fractions = np.stack([np.clip(f[name], 0.0, 1.0) for name in TISSUES]).astype(np.float32)
    total = fractions.sum(axis=0)
    fractions /= np.maximum(total, 1.0)  # rounding may overfill a voxel; never underfill
    labels = label_map(fractions, w["parcel"], w["ventricle_zone"])
    return Anatomy(fractions=fractions, parcel=w["parcel"], labels=labels,
                   brainmask=d < 0.0, params=params)
