"""Co-registration of two scans of one subject (e.g. a PET onto its T1), via SimpleITK.

SimpleITK images live in LPS+ world coordinates while ``Volume.affine`` is RAS+, so the
conversion flips the sign of the first two world axes: ``A_lps = diag(-1, -1, 1, 1) @ A_ras``.
SimpleITK arrays are indexed (z, y, x); ``Volume.data`` is (x, y, z).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import SimpleITK as sitk

from synth_core.errors import UserError
from synth_core.volume import Volume

_RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


def volume_to_sitk(vol: Volume) -> sitk.Image:
    """A SimpleITK image with the Volume's voxels and LPS geometry (spacing mm, origin, direction)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(vol.data.transpose(2, 1, 0)))
    lps = _RAS_LPS @ vol.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in lps[:3, 3]])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    return image


def sitk_to_array(image: sitk.Image) -> np.ndarray:
    """Voxels of a SimpleITK image as float32 (x, y, z)."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0), dtype=np.float32)


def coregister(
    moving: Volume,
    fixed: Volume,
    transform: Literal["rigid", "affine"] = "rigid",
    *,
    seed: int = 0,
) -> tuple[Volume, np.ndarray]:
    """Align ``moving`` to ``fixed`` by maximising Mattes mutual information.

    Mutual information lets the two scans have different contrasts (T1 and PET, T1 and
    T2). The transform starts from the two grids' centres aligned, then a regular-step
    gradient descent (steps in mm of voxel shift) runs over a pyramid (shrink 4, 2, 1 where
    the image is large enough) on a random voxel sample (25 %, at most ~200k voxels) drawn
    with ``seed``. ``"affine"`` runs the rigid stage first and starts from its result.

    Args:
        moving: the volume to move, any grid.
        fixed: the reference volume; its grid is the output grid.
        transform: ``"rigid"`` (6 parameters) or ``"affine"`` (12).
        seed: seed of the metric's voxel sampling; the same seed gives the same result
            (up to float rounding in multi-threaded sums, ~1e-6).

    Returns:
        ``moving`` resampled (trilinear) onto ``fixed``'s grid, shape and affine of
        ``fixed`` (voxels outside ``moving``'s field of view get its minimum); and the
        4x4 world transform W (RAS mm) taking a point of ``moving`` to the matching
        point of ``fixed``, so ``W @ moving.affine`` places ``moving`` over ``fixed``
        without resampling.
    """
    if transform not in ("rigid", "affine"):
        raise UserError(f"unknown registration transform {transform!r}: use 'rigid' or 'affine'")
    for name, vol in (("moving", moving), ("fixed", fixed)):
        if float(vol.data.max()) == float(vol.data.min()):
            raise UserError(f"{name} volume is constant: nothing to register; check the file")
    fixed_img = volume_to_sitk(fixed)
    moving_img = volume_to_sitk(moving)
    rigid = sitk.CenteredTransformInitializer(
        fixed_img,
        moving_img,
        sitk.Euler3DTransform(),
        # Geometry, not intensity moments: moments mislead when the contrasts differ.
        sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )
    result = _optimise(fixed_img, moving_img, rigid, fixed.data.size, seed)
    if transform == "affine":
        # Affine from scratch drifts along its 6 extra, weakly constrained directions;
        # starting it from the rigid answer leaves it only the residual to find.
        start = sitk.AffineTransform(3)
        centre = np.asarray(rigid.GetCenter())
        matrix = _fixed_to_moving_lps(result)
        start.SetCenter(tuple(centre))
        start.SetMatrix(tuple(matrix[:3, :3].ravel()))
        start.SetTranslation(tuple(matrix[:3, :3] @ centre + matrix[:3, 3] - centre))
        result = _optimise(fixed_img, moving_img, start, fixed.data.size, seed)

    resampled = sitk.Resample(
        moving_img, fixed_img, result, sitk.sitkLinear, float(moving.data.min()), sitk.sitkFloat32
    )
    out = moving.with_data(sitk_to_array(resampled), affine=fixed.affine.copy())
    return out, np.linalg.inv(_RAS_LPS @ _fixed_to_moving_lps(result) @ _RAS_LPS)


def _optimise(
    fixed_img: sitk.Image, moving_img: sitk.Image, initial: sitk.Transform, n_voxels: int, seed: int
) -> sitk.Transform:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # A quarter of the voxels, but no more than ~200k at full resolution: the metric's
    # cost is per sample, and MI is well estimated long before that on a 256^3 head.
    fraction = min(0.25, max(0.01, 200_000 / n_voxels))
    # SimpleITK reads seed 0 as "seed from the wall clock", so shift ours by one.
    method.SetMetricSamplingPercentage(fraction, int(seed) + 1)
    method.SetInterpolator(sitk.sitkLinear)
    # A slow step decay (0.8, ITK's default is 0.5): sampled MI gradients flip direction
    # often, and a fast decay freezes weakly constrained rotations before they converge.
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-4,
        numberOfIterations=200,
        gradientMagnitudeTolerance=1e-8,
        relaxationFactor=0.8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    shrink = [f for f in (4, 2) if min(fixed_img.GetSize()) // f >= 16] + [1]
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel([f / 2 if f > 1 else 0 for f in shrink])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed_img, moving_img)


def _fixed_to_moving_lps(result: sitk.Transform) -> np.ndarray:
    """The 4x4 LPS map ITK resamples with (fixed points to moving points)."""
    # Read off by transforming the origin and the unit vectors, which works for whatever
    # composite SimpleITK hands back.
    origin = np.asarray(result.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.eye(4)
    matrix[:3, 3] = origin
    for axis in range(3):
        unit = np.zeros(3)
        unit[axis] = 1.0
        matrix[:3, axis] = np.asarray(result.TransformPoint(tuple(unit))) - origin
    return matrix
