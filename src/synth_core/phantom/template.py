"""The MNI152 2009 template on a preset's grid, with regions, cached.

nilearn bundles the skull-stripped MNI152 2009 template with its grey- and white-matter
probability maps and brain mask at 1 mm (197 x 233 x 189 voxels) and 2 mm (99 x 117 x 95);
the 4 and 2 mm presets are built from the 2 mm maps, the 1 mm ``fine`` preset from the
1 mm ones (``PhantomPreset.template_mm``). Loading and deriving them takes seconds (about
3 s at 2 mm, more at 1 mm), so each preset's maps are cached in memory and, when the user
cache folder is writable, on disk (keyed by nilearn version and preset).

Regions come from MNI coordinates (``parcellate``): ellipsoids for the hippocampi and
deep grey nuclei, boxes for the cingulate and precuneus, planes between the lobes and
under the tentorium. A voxel's label is its parcel where grey matter dominates it (see
``anatomy.label_map``), so regions follow each subject's own cortex.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from synth_core.phantom.parameters import LABEL_IDS, PRESETS, PhantomPreset

_CACHE_FORMAT = 2  # bump when the maps' definition changes
_SHARPEN = 2.0  # exponent applied to the tissue probabilities (see _template_arrays)
_PAD_MM = 24.0  # room around the template for the skull and scalp shells
_CLOSING_MM = 4.0  # closing radius that smooths the brain mask into the skull's inner surface
_PARCEL_MARGIN_MM = 6.0  # parcels reach this far outside the brain mask

# Ellipsoids (centre mm, semi-axes mm) in MNI space; both hemispheres by symmetry in x.
_HIPPOCAMPUS = ((26.0, -22.0, -14.0), (7.0, 16.0, 8.0))
_DEEP_GREY = (
    ((11.0, -18.0, 7.0), (8.0, 11.0, 8.0)),  # thalamus
    ((13.0, 10.0, 10.0), (5.0, 12.0, 9.0)),  # caudate head and body
    ((23.0, 2.0, 0.0), (7.0, 14.0, 9.0)),  # putamen and pallidum
)
_HIPPOCAMPUS_CENTRES_MM = ((-26.0, -22.0, -14.0), (26.0, -22.0, -14.0))


@dataclass(frozen=True)
class TemplateMaps:
    """Template-derived maps on a preset grid, arrays of shape ``preset.shape``.

    Attributes:
        gm, wm: grey/white-matter fractions in [0, 1], zero outside the brain mask.
        distance: signed distance to the brain surface, mm (negative inside the brain).
        parcel: region id (LABELS keys 1-10) of every voxel within 6 mm of the brain.
        ventricle_zone: 1 in the lateral ventricles (dilated by one template voxel), else 0.
        ventricle_centre_mm: centroid of the lateral ventricles, MNI mm.
        tumour_sites_mm: (N, 3) MNI mm of deep white-matter voxels where a tumour may sit.
    """

    preset: PhantomPreset
    gm: np.ndarray
    wm: np.ndarray
    distance: np.ndarray
    parcel: np.ndarray
    ventricle_zone: np.ndarray
    ventricle_centre_mm: tuple[float, float, float]
    tumour_sites_mm: np.ndarray

    @property
    def hippocampus_centres_mm(self) -> tuple[tuple[float, float, float], ...]:
        return _HIPPOCAMPUS_CENTRES_MM


def _in_ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre, axes) -> np.ndarray:
    """Voxels inside the ellipsoid or its mirror image across the midline (x -> -x)."""
    (cx, cy, cz), (ax, ay, az) = centre, axes
    rest = ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2
    return (((np.abs(x) - cx) / ax) ** 2 + rest) <= 1.0


def parcellate(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Region id of each MNI point (mm arrays of one shape) -> int16 array, ids 1-10.

    Priority, first match wins: hippocampus (ellipsoids), deep grey (thalamus, caudate,
    putamen ellipsoids), cerebellum (y < -38 and under the tentorium plane
    z < -20 - 0.3 (y + 40)), anterior cingulate (|x| < 12, -10 <= y < 42, -8 < z < 42),
    posterior cingulate (|x| < 12, -58 <= y < -10, 5 < z < 40), precuneus
    (|x| < 18, -82 <= y < -45, z >= 18), occipital (behind the
    plane y = -70 - 0.3 (z - 10)), temporal (|x| > 28, y < 25, below the plane
    z = 6 - 0.15 (y + 20)), frontal (in front of the central sulcus plane
    y = -10 - 0.5 (z - 20)), parietal (the rest).
    """
    ids = LABEL_IDS
    ax = np.abs(x)
    parcel = np.full(x.shape, ids["parietal"], dtype=np.int16)
    frontal = y > -10.0 - 0.5 * (z - 20.0)
    parcel[frontal] = ids["frontal"]
    temporal = (ax > 28.0) & (y < 25.0) & (z < 6.0 - 0.15 * (y + 20.0))
    parcel[temporal] = ids["temporal"]
    parcel[y < -70.0 - 0.3 * (z - 10.0)] = ids["occipital"]
    medial = ax < 18.0
    parcel[medial & (y >= -82.0) & (y < -45.0) & (z >= 18.0)] = ids["precuneus"]
    cingulate = ax < 12.0
    parcel[cingulate & (y >= -58.0) & (y < -10.0) & (z > 5.0) & (z < 40.0)] = ids[
        "posterior_cingulate"
    ]
    parcel[cingulate & (y >= -10.0) & (y < 42.0) & (z > -8.0) & (z < 42.0)] = ids[
        "anterior_cingulate"
    ]
    parcel[(y < -38.0) & (z < -20.0 - 0.3 * (y + 40.0))] = ids["cerebellum"]
    for centre, axes in _DEEP_GREY:
        parcel[_in_ellipsoid(x, y, z, centre, axes)] = ids["deep_grey"]
    parcel[_in_ellipsoid(x, y, z, *_HIPPOCAMPUS)] = ids["hippocampus"]
    return parcel


@functools.lru_cache(maxsize=2)
def _template_arrays(resolution: int = 2) -> dict[str, np.ndarray]:
    """The nilearn maps at ``resolution`` mm (1 or 2), zero-padded, with derived distance
    and ventricle maps. Every morphological size is in mm, so both resolutions describe
    the same anatomy."""
    from nilearn import datasets

    spacing = float(resolution)
    mask_img = datasets.load_mni152_brain_mask(resolution=resolution)
    mask = mask_img.get_fdata() > 0.5
    gm = datasets.load_mni152_gm_template(resolution=resolution).get_fdata() * mask
    wm = datasets.load_mni152_wm_template(resolution=resolution).get_fdata() * mask
    # The template's tissue maps average many brains, so their boundaries are wider than
    # one brain's; raising the probabilities to a power and renormalising gives one
    # brain's sharper partial-volume profile (a voxel holds at most one unit of tissue).
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    gm, wm, csf = (np.clip(a, 0.0, 1.0) ** _SHARPEN for a in (gm, wm, csf))
    total = np.maximum(gm + wm + csf, 1e-6)
    gm, wm = gm / total * mask, wm / total * mask
    pad = int(round(_PAD_MM / spacing))
    gm, wm, mask = (np.pad(a, pad) for a in (gm, wm, mask))
    affine = mask_img.affine.copy()
    affine[:3, 3] -= pad * spacing

    # Signed distance to the brain surface, which lies half a voxel beyond the outer
    # mask voxel centres. A closed, filled mask gives the skull a smooth inner surface.
    smooth_mask = ndi.binary_fill_holes(
        ndi.binary_closing(mask, iterations=int(round(_CLOSING_MM / spacing))))
    outside = ndi.distance_transform_edt(~smooth_mask) * spacing
    inside = ndi.distance_transform_edt(smooth_mask) * spacing
    half = spacing / 2.0
    distance = np.where(smooth_mask, half - inside, outside - half)

    # Lateral ventricles: the largest CSF-dominated component in a central box.
    csf = mask * np.clip(1.0 - gm - wm, 0.0, 1.0)
    x, y, z = _world_grid(affine, mask.shape)
    box = (np.abs(x) < 30) & (y > -45) & (y < 35) & (z > -5) & (z < 35)
    components, n = ndi.label((csf > 0.5) & box)
    sizes = ndi.sum_labels(np.ones_like(csf), components, index=np.arange(1, n + 1))
    ventricles = components == (int(np.argmax(sizes)) + 1)
    centre = [float(np.broadcast_to(c, mask.shape)[ventricles].mean()) for c in (x, y, z)]
    zone = ndi.binary_dilation(ventricles, iterations=int(round(2.0 / spacing)))  # 2 mm
    return {
        "gm": gm.astype(np.float32), "wm": wm.astype(np.float32),
        "distance": distance.astype(np.float32), "ventricle_zone": zone.astype(np.float32),
        "ventricle_centre_mm": np.asarray(centre), "affine": affine,
    }


def _world_grid(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """World mm of every voxel of a diagonal-affine grid, as three broadcastable arrays."""
    axes = [affine[a, a] * np.arange(n) + affine[a, 3] for a, n in enumerate(shape)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    return x, y, z


def _resample(array: np.ndarray, src_affine: np.ndarray, preset: PhantomPreset,
              fill: float) -> np.ndarray:
    """Linear resampling of a template map onto the preset grid (anti-aliased)."""
    factor = preset.spacing_mm / abs(float(src_affine[0, 0]))
    if factor > 1.0:
        # A Gaussian whose FWHM makes the template voxel into a preset voxel.
        array = ndi.gaussian_filter(array, np.sqrt(factor**2 - 1.0) / 2.355)
    x, y, z = _world_grid(preset.affine, preset.shape)
    index = [
        np.broadcast_to((c - src_affine[a, 3]) / src_affine[a, a], preset.shape)
        for a, c in enumerate((x, y, z))
    ]
    return ndi.map_coordinates(array, index, order=1, mode="constant", cval=fill,
                               output=np.float32)


def _build(preset: PhantomPreset) -> dict[str, np.ndarray]:
    src = _template_arrays(preset.template_mm)
    affine = src["affine"]
    far = float(src["distance"].max())
    maps = {
        "gm": _resample(src["gm"], affine, preset, 0.0),
        "wm": _resample(src["wm"], affine, preset, 0.0),
        "distance": _resample(src["distance"], affine, preset, far),
        "ventricle_zone": _resample(src["ventricle_zone"], affine, preset, 0.0),
    }
    x, y, z = (np.broadcast_to(c, preset.shape) for c in _world_grid(preset.affine, preset.shape))
    parcel = parcellate(x, y, z)
    parcel[maps["distance"] > _PARCEL_MARGIN_MM] = 0
    maps["parcel"] = parcel
    cerebral = np.isin(parcel, [LABEL_IDS[r] for r in ("frontal", "parietal", "temporal")])
    sites = cerebral & (maps["wm"] > 0.8) & (maps["ventricle_zone"] < 0.01) & (
        maps["distance"] < -12.0
    )
    maps["tumour_sites_mm"] = np.stack([x[sites], y[sites], z[sites]], axis=1)
    maps["ventricle_centre_mm"] = src["ventricle_centre_mm"]
    return maps


def _cache_file(preset: PhantomPreset) -> Path | None:
    try:
        import nilearn
        import platformdirs

        folder = Path(platformdirs.user_cache_dir("napari-modality-synth")) / "phantom"
    except Exception:  # no cache folder is fine; the maps are rebuilt
        return None
    return folder / f"template-{preset.name}-nilearn{nilearn.__version__}-v{_CACHE_FORMAT}.npz"


def _load_or_build(preset: PhantomPreset) -> dict[str, np.ndarray]:
    path = _cache_file(preset)
    if path is not None and path.is_file():
        try:
            with np.load(path) as stored:
                maps = {key: stored[key] for key in stored.files}
            if maps["gm"].shape == preset.shape:
                return maps
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is rebuilt below
    maps = _build(preset)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
        except OSError:
            return maps  # a read-only cache folder only costs the rebuild next time
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **maps)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
    return maps


@functools.cache
def template_maps(preset_name: str) -> TemplateMaps:
    """The template's maps on the grid of ``PRESETS[preset_name]`` (cached)."""
    preset = PRESETS[preset_name]
    maps = _load_or_build(preset)
    maps["parcel"] = maps["parcel"].astype(np.int16)
    for key in ("gm", "wm", "distance", "ventricle_zone", "parcel"):
        maps[key].setflags(write=False)  # shared by every subject: never modified
    return TemplateMaps(
        preset=preset,
        gm=maps["gm"], wm=maps["wm"], distance=maps["distance"],
        parcel=maps["parcel"], ventricle_zone=maps["ventricle_zone"],
        ventricle_centre_mm=tuple(float(c) for c in maps["ventricle_centre_mm"]),
        tumour_sites_mm=maps["tumour_sites_mm"],
    )
