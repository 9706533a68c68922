"""Disease signal: how well AD is told from CN by regional features of an image.

One classifier for every input, so the figures compare the inputs and not the analyses:
cross-validated logistic regression (scikit-learn: standardised features, L2 penalty,
class-balanced weights) on one feature vector per subject, scored by the balanced accuracy
of the out-of-fold predictions, with a percentile bootstrap interval over subjects. The
feature extractors are pure functions of arrays:

- ``pet_features``: mean uptake per region over the whole brain's mean (SUVR; a global
  dose cancels), used alike for the true PET and every synthetic PET;
- ``label_volume_features``: each region's volume from the phantom's own label map as a
  fraction of the brain (an oracle: no tool measures anatomy exactly);
- ``t1_features``: what a T1 alone says, with a fixed atlas (the population template's
  regions, the same for every subject) and a three-class intensity segmentation of the T1:
  grey-matter and CSF fractions per atlas region, the ventricle zone's CSF fraction and the
  region's mean intensity over the white-matter level. The realistic ceiling for any
  MRI-to-PET model, which sees the T1 alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synth_core.errors import UserError

N_FOLDS = 5
N_BOOTSTRAP = 2000


def _check_shapes(image: np.ndarray, *masks: np.ndarray) -> None:
    for mask in masks:
        if np.shape(mask) != np.shape(image):
            raise UserError(f"a mask has shape {np.shape(mask)}, the image {np.shape(image)}: "
                            "resample the mask onto the image's grid (order=0)")


def region_means(image: np.ndarray, labels: np.ndarray, ids: list[int]) -> np.ndarray:
    """Mean of ``image`` over each label id in ``ids`` (NaN for an absent region)."""
    _check_shapes(image, labels)
    flat = np.asarray(labels).ravel().astype(np.int64)
    size = max(int(flat.max()), max(ids)) + 1
    sums = np.bincount(flat, weights=np.asarray(image, np.float64).ravel(), minlength=size)
    counts = np.bincount(flat, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.array([sums[i] / counts[i] if counts[i] else np.nan for i in ids])


def pet_features(pet: np.ndarray, labels: np.ndarray, brain: np.ndarray,
                 ids: list[int]) -> np.ndarray:
    """Regional SUVR: each region's mean uptake over the brain's mean uptake.

    Args:
        pet: (X, Y, Z) PET (SUV or any positive scale: it cancels).
        labels: (X, Y, Z) region labels (the subject's parcellation).
        brain: (X, Y, Z) bool brain mask.
        ids: the label ids to use, in order.
    """
    p = np.asarray(pet, np.float64)
    inside = np.asarray(brain).astype(bool)
    _check_shapes(p, labels, inside)
    reference = float(p[inside].mean()) if inside.any() else 0.0
    if not reference > 0:
        raise UserError("the PET's mean in the brain is not positive: regional SUVR needs a "
                        "positive uptake image")
    return region_means(p, labels, ids) / reference


def label_volume_features(labels: np.ndarray, ids: list[int], brain_ids: list[int]) -> np.ndarray:
    """Each region's voxel count over the count of all ``brain_ids`` voxels (a fraction)."""
    lab = np.asarray(labels).astype(np.int64)
    counts = np.bincount(lab.ravel(), minlength=max(max(ids), max(brain_ids)) + 1)
    total = counts[brain_ids].sum()
    if total == 0:
        raise UserError("the label map has no brain voxel: give the subject's label volume")
    return counts[ids] / total


def three_class_levels(values: np.ndarray, iterations: int = 50) -> np.ndarray:
    """CSF, grey and white-matter intensity levels of a T1 (1-D k-means with three classes).

    Started from the 5th, 50th and 95th percentiles; the sorted class centres are returned.
    Hand-written rather than scikit-learn's KMeans: three scalar centres converge in a few
    dozen vectorised steps, deterministically, without KMeans's random restarts.
    """
    v = np.asarray(values, np.float64).ravel()
    centres = np.percentile(v, [5.0, 50.0, 95.0])
    for _ in range(iterations):
        nearest = np.argmin(np.abs(v[:, None] - centres[None, :]), axis=1)
        updated = np.array([v[nearest == k].mean() if np.any(nearest == k) else centres[k]
                            for k in range(3)])
        if np.allclose(updated, centres):
            break
        centres = updated
    return np.sort(centres)


def t1_features(t1: np.ndarray, brain: np.ndarray, atlas: np.ndarray, atlas_ids: list[int],
                ventricle_zone: np.ndarray) -> np.ndarray:
    """T1-only features: per atlas region, grey-matter and CSF fractions and mean intensity.

    Tissue fractions come from a linear partial-volume model between the T1's own CSF, grey
    and white-matter levels (``three_class_levels``): a voxel between the CSF and grey levels
    is that mix of CSF and grey matter, one between grey and white that mix of grey and
    white. The atlas is the same for every subject (no subject's truth enters).

    Args:
        t1: (X, Y, Z) T1-weighted image (any gain: the levels are the subject's own).
        brain: (X, Y, Z) bool brain mask (CSF inside the skull included).
        atlas: (X, Y, Z) region ids of a fixed atlas on the same grid.
        atlas_ids: the atlas ids to use, in order.
        ventricle_zone: (X, Y, Z) bool, where the lateral ventricles lie in the atlas.

    Returns:
        ``3 * len(atlas_ids) + 1`` features: grey fractions, CSF fractions, mean intensity
        over the white-matter level (per region), then the ventricle zone's CSF fraction.
    """
    x = np.asarray(t1, np.float64)
    inside = np.asarray(brain).astype(bool)
    zone = np.asarray(ventricle_zone).astype(bool)
    _check_shapes(x, inside, atlas, zone)
    if inside.sum() < 30:
        raise UserError("the brain mask holds under 30 voxels: give the subject's brain mask")
    csf_level, grey_level, white_level = three_class_levels(x[inside])
    if not csf_level < grey_level < white_level:
        raise UserError("the T1 does not show three tissue levels in the brain: is it a T1?")
    csf = np.clip((grey_level - x) / (grey_level - csf_level), 0.0, 1.0)
    grey = np.where(x <= grey_level, 1.0 - csf,
                    np.clip((white_level - x) / (white_level - grey_level), 0.0, 1.0))
    regions = np.where(inside, np.asarray(atlas).astype(np.int64), 0)
    return np.concatenate([
        region_means(grey, regions, atlas_ids),
        region_means(csf, regions, atlas_ids),
        region_means(x / white_level, regions, atlas_ids),
        [float(csf[zone & inside].mean()) if (zone & inside).any() else 0.0],
    ])


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over the two classes of the fraction of that class predicted right."""
    t = np.asarray(truth).astype(bool)
    p = np.asarray(predicted).astype(bool)
    if t.all() or not t.any():
        return float("nan")
    return float(0.5 * ((p[t]).mean() + (~p[~t]).mean()))


def out_of_fold_predictions(features: np.ndarray, truth: np.ndarray, seed: int = 0,
                            folds: int = N_FOLDS) -> np.ndarray:
    """Each subject's class from a model fitted on the folds that leave it out.

    Stratified ``folds``-fold split (shuffled with ``seed``); per fold a scikit-learn
    pipeline of standardisation and L2 logistic regression with class-balanced weights.
    Features that are NaN (a region absent in a subject) are set to the training folds'
    mean.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, np.float64)
    y = np.asarray(truth).astype(int)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise UserError(f"features must be (subjects, features) with one row per label; got "
                        f"{x.shape} for {y.shape[0]} labels")
    smallest = int(min(np.bincount(y, minlength=2)))
    if smallest < folds:
        raise UserError(f"only {smallest} subjects in the smaller class: {folds}-fold "
                        "cross-validation needs at least one per fold; use more subjects")
    model = make_pipeline(SimpleImputer(), StandardScaler(),
                          LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, x, y, cv=split).astype(bool)


def bootstrap_interval(truth: np.ndarray, predictions: dict[str, np.ndarray], seed: int = 0,
                       n: int = N_BOOTSTRAP, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap interval of each input's balanced accuracy, resampling subjects.

    All inputs share each resample (the same subjects), so differences between inputs can
    be judged with ``paired_difference``.
    """
    t = np.asarray(truth).astype(bool)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, t.size, size=(n, t.size))
    tails = [50.0 * (1 - level), 100.0 - 50.0 * (1 - level)]
    out = {}
    for name, pred in predictions.items():
        p = np.asarray(pred).astype(bool)
        values = np.array([balanced_accuracy(t[d], p[d]) for d in draws])
        out[name] = [float(v) for v in np.nanpercentile(values, tails)]
    return out


def paired_difference(truth: np.ndarray, a: np.ndarray, b: np.ndarray, seed: int = 0,
                      n: int = N_BOOTSTRAP, level: float = 0.95) -> dict[str, float]:
    """Balanced accuracy of ``a`` minus that of ``b``, with a paired bootstrap interval."""
    t = np.asarray(truth).astype(bool)
    pa, pb = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, t.size, size=(n, t.size))
    values = np.array([balanced_accuracy(t[d], pa[d]) - balanced_accuracy(t[d], pb[d])
                       for d in draws])
    lo, hi = np.nanpercentile(values, [50.0 * (1 - level), 100.0 - 50.0 * (1 - level)])
    return {"difference": balanced_accuracy(t, pa) - balanced_accuracy(t, pb),
            "interval": [float(lo), float(hi)]}


def disease_signal(features: dict[str, np.ndarray], truth: np.ndarray, seed: int = 0,
                   folds: int = N_FOLDS, n_bootstrap: int = N_BOOTSTRAP) -> dict[str, Any]:
    """Balanced accuracy (AD = True against CN = False) with a 95 % interval per input.

    Args:
        features: input name -> (subjects, features) array, rows in the order of ``truth``.
        truth: (subjects,) bool, True for AD.
        seed: fold split and bootstrap seed.

    Returns:
        ``{name: {"balanced_accuracy", "interval", "features"}}`` plus ``"_subjects"``:
        ``{"ad", "cn"}`` counts.
    """
    t = np.asarray(truth).astype(bool)
    predictions = {name: out_of_fold_predictions(x, t, seed, folds)
                   for name, x in features.items()}
    intervals = bootstrap_interval(t, predictions, seed, n_bootstrap)
    result: dict[str, Any] = {
        name: {"balanced_accuracy": balanced_accuracy(t, p), "interval": intervals[name],
               "features": int(np.shape(features[name])[1])}
        for name, p in predictions.items()}
    result["_subjects"] = {"ad": int(t.sum()), "cn": int((~t).sum())}
    result["_predictions"] = predictions
    return result
