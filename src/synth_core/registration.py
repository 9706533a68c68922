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
    gradient descent runs over a pyramid (shrink 4, 2, 1 where the image is large enough)
    on a random 25 % voxel sample drawn with ``seed``.

    Args:
        moving: the volume to move, any grid.
        fixed: the reference volume; its grid is the output grid.
        transform: ``"rigid"`` (6 parameters) or ``"affine"`` (12).
        seed: seed of the metric's voxel sampling; the same seed gives the same result.

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
    initial = sitk.CenteredTransformInitializer(
        fixed_img,
        moving_img,
        sitk.Euler3DTransform() if transform == "rigid" else sitk.AffineTransform(3),
        # Geometry, not intensity moments: moments mislead when the contrasts differ.
        sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # SimpleITK reads seed 0 as "seed from the wall clock", so shift ours by one.
    method.SetMetricSamplingPercentage(0.25, int(seed) + 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=200, gradientMagnitudeTolerance=1e-8
    )
    method.SetOptimizerScalesFromPhysicalShift()
    shrink = [f for f in (4, 2) if min(fixed.shape) // f >= 16] + [1]
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel([f / 2 if f > 1 else 0 for f in shrink])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed_img, moving_img)

    resampled = sitk.Resample(
        moving_img, fixed_img, result, sitk.sitkLinear, float(moving.data.min()), sitk.sitkFloat32
    )
    out = moving.with_data(sitk_to_array(resampled), affine=fixed.affine.copy())
    return out, _moving_to_fixed_ras(result)


def _moving_to_fixed_ras(result: sitk.Transform) -> np.ndarray:
    """ITK maps fixed LPS points to moving LPS points; return moving -> fixed in RAS."""
    # Read the (affine) map off by transforming the origin and the unit vectors, which
    # works for whatever composite SimpleITK hands back.
    origin = np.asarray(result.TransformPoint((0.0, 0.0, 0.0)))
    fixed_to_moving_lps = np.eye(4)
    fixed_to_moving_lps[:3, 3] = origin
    for axis in range(3):
        unit = np.zeros(3)
        unit[axis] = 1.0
        fixed_to_moving_lps[:3, axis] = np.asarray(result.TransformPoint(tuple(unit))) - origin
    fixed_to_moving_ras = _RAS_LPS @ fixed_to_moving_lps @ _RAS_LPS
    return np.linalg.inv(fixed_to_moving_ras)
