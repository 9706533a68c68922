"""Smooth random fields: low-frequency cosine (DCT-II) series on a grid.

Deformations, MR bias fields and tumour outlines all need a field that varies over
centimetres. A separable cosine series costs three small matrix products, far less than
upsampling noise with spline interpolation.
"""

from __future__ import annotations

import numpy as np


def cosine_basis(n: int, orders: int) -> np.ndarray:
    """DCT-II basis on n samples, shape (n, orders): column a is cos(pi a (i + 0.5) / n)."""
    i = np.arange(n, dtype=np.float64)[:, None] + 0.5
    return np.cos(np.pi * np.arange(orders)[None, :] * i / n).astype(np.float32)


def cosine_series(coefficients: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Sum_abc c[a, b, c] B_a(i) B_b(j) B_c(k) on a grid -> float32 array of ``shape``.

    Args:
        coefficients: (A, B, C) weights of the cosine products of orders a, b, c.
        shape: (X, Y, Z) grid.
    """
    coefficients = np.asarray(coefficients, dtype=np.float32)
    bx, by, bz = (cosine_basis(n, k) for n, k in zip(shape, coefficients.shape, strict=True))
    field = np.einsum("abc,xa->xbc", coefficients, bx)
    field = np.einsum("xbc,yb->xyc", field, by)
    return (field.reshape(-1, field.shape[-1]) @ bz.T).reshape(shape)


def random_smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], orders: int,
                        sd: float, *, constant: bool = False) -> np.ndarray:
    """A random smooth field with standard deviation ``sd`` over the grid.

    Coefficients are Gaussian with amplitude 1 / (1 + a + b + c), so the field is
    dominated by its lowest orders. The mean term (order 0, 0, 0) is dropped unless
    ``constant``. Returns float32 of ``shape``.
    """
    a, b, c = np.meshgrid(*(np.arange(orders),) * 3, indexing="ij")
    coefficients = rng.standard_normal((orders,) * 3) / (1.0 + a + b + c)
    if not constant:
        coefficients[0, 0, 0] = 0.0
    field = cosine_series(coefficients, shape)
    spread = float(field.std())
    return field * np.float32(sd / spread) if spread > 0 else field
