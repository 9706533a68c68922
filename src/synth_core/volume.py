"""The Volume: one 3D scan in voxel space with its place in the world.

Convention: ``data`` is indexed (i, j, k) = (x, y, z) voxel axes, as nibabel
returns it; ``affine`` maps voxel indices (i, j, k, 1) to RAS+ world millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair", "pet", "ct")
DERIVED_MODALITIES: tuple[str, ...] = ("t1-lowres", "ct-sharp", "ct-smooth")
ALL_MODALITIES: tuple[str, ...] = MODALITIES + DERIVED_MODALITIES


def base_modality(modality: str | None) -> str | None:
    """``t1-lowres`` -> ``t1``, ``ct-sharp`` -> ``ct``: the physics a derived task shares."""
    if modality is None:
        return None
    return modality.split("-", 1)[0]


@dataclass
class Volume:
    """A 3D image.

    Attributes:
        data: float32 array, shape (X, Y, Z).
        affine: 4x4 float64 voxel-to-world matrix, RAS+ millimetres.
        modality: one of ``ALL_MODALITIES`` when known, else None.
        metadata: free-form; ``source_path``, ``header`` (the source header as a dict),
            ``provenance`` for synthetic volumes.
    """

    data: np.ndarray
    affine: np.ndarray
    modality: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.data.ndim != 3:
            raise ValueError(f"Volume data must be 3D, got shape {self.data.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each voxel axis (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def is_synthetic(self) -> bool:
        return bool(self.metadata.get("provenance", {}).get("Synthetic", False))

    def with_data(self, data: np.ndarray, **changes: Any) -> Volume:
        """A copy on the same grid with new voxels (and any other field changed)."""
        return replace(self, data=data, metadata=dict(self.metadata), **changes)

    def world_coordinates(self, index: np.ndarray) -> np.ndarray:
        """World mm of voxel indices, shape (N, 3) -> (N, 3)."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]
