"""ODE flows between two modalities: Euler integration, Bi-DPM's discrete process
matching, the probability paths of rectified flow and conditional flow matching, and
the maximum mean discrepancy used for unpaired data.

Everything here works on tensors of any shape ``(B, ...)`` (2D points, slices or volumes),
so the toy problems of the paper's Figure 2 and the image methods share one code path.
A velocity is any callable ``u(x, t)`` with ``x`` (B, ...) and ``t`` a float.

Conventions (the Bi-DPM paper, eq. 3 and 5): time runs from the source (t = 0) to the target
(t = 1). A forward Euler step from t_{n-1} to t_n is ``x + u(x, t_{n-1}) (t_n - t_{n-1})``;
a backward step from t_n to t_{n-1} is ``z + u(z, t_n) (t_{n-1} - t_n)``, so each
direction evaluates the velocity at the time it starts from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def uniform_times(steps: int) -> list[float]:
    """``steps + 1`` uniform time points 0 = t_0 < ... < t_steps = 1."""
    if steps < 1:
        raise ValueError(f"the number of ODE steps must be at least 1, got {steps}")
    return [i / steps for i in range(steps + 1)]


def euler(u: Velocity, x: torch.Tensor, times: Sequence[float], reverse: bool = False,
          progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Integrate ``dx/dt = u(x, t)`` with Euler steps on ``times`` (increasing).

    Forward (``reverse=False``) maps a state at ``times[0]`` to ``times[-1]``; reverse maps
    a state at ``times[-1]`` back to ``times[0]``, with the velocity at each step's start.
    """
    n = len(times) - 1
    order = range(n, 0, -1) if reverse else range(1, n + 1)
    for done, k in enumerate(order, 1):
        if reverse:
            x = x + u(x, times[k]) * (times[k - 1] - times[k])
        else:
            x = x + u(x, times[k - 1]) * (times[k] - times[k - 1])
        if progress is not None:
            progress(done, n)
    return x


def bidpm_states(u: Velocity, x: torch.Tensor, z: torch.Tensor, times: Sequence[float]
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Algorithm 1's two discrete processes: forward from ``x`` at t_0 and backward from
    ``z`` at t_N, both evaluated at every time point (lists of N + 1 tensors, index n is
    t_n; ``forward[0]`` is ``x`` and ``backward[N]`` is ``z``)."""
    n = len(times) - 1
    forward = [x]
    backward: list[torch.Tensor] = [z]
    for k in range(1, n + 1):
        forward.append(forward[-1] + u(forward[-1], times[k - 1]) * (times[k] - times[k - 1]))
    for k in range(n, 0, -1):
        backward.append(backward[-1] + u(backward[-1], times[k]) * (times[k - 1] - times[k]))
    return forward, backward[::-1]


def bidpm_weights(steps: int, ends: float = 1.0, middle: float = 0.5) -> list[float]:
    """w_n of eq. 6: the paper's 1 at t = 0 and t = 1 and 0.5 at the intermediate points."""
    return [ends if n in (0, steps) else middle for n in range(steps + 1)]


# ------------------------------------------------------------------ probability paths


class ProbabilityPath:
    """A path between paired samples ``x0`` (source) and ``x1`` (target) for flow matching:
    ``x_t = mean(x0, x1, t) + sigma * eps`` and the regression target ``u_t(x0, x1, t)``
    (Tong et al. 2023, Table 1). Subclasses only say their mean, derivative and sigma.
    ``t`` has shape (B,); it is broadcast over the other axes."""

    name = ""
    sigma = 0.0

    def mean(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def target(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def couple(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pairs to train on; the given pairs except for OT-CFM."""
        return x0, x1

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        xt = self.mean(x0, x1, t)
        if self.sigma > 0:
            eps = torch.randn_like(x0) if noise is None else noise
            xt = xt + self.sigma * eps
        return xt


def _bt(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(like)


class RectifiedPath(ProbabilityPath):
    """Rectified flow (Liu et al. 2022): ``x_t = (1 - t) x0 + t x1``, target ``x1 - x0``."""

    name = "rectified"

    def mean(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _bt(t, x0)
        return (1 - t) * x0 + t * x1

    def target(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x1 - x0


class IndependentCFMPath(RectifiedPath):
    """I-CFM (Tong et al. 2023, eq. 14): the straight path blurred by a constant ``sigma``."""

    name = "i"

    def __init__(self, sigma: float = 0.01) -> None:
        self.sigma = float(sigma)


class OptimalTransportCFMPath(IndependentCFMPath):
    """OT-CFM (Tong et al. 2023, sec. 3.2.2): I-CFM on minibatch pairs re-drawn from the
    exact optimal-transport plan of the batch under the squared Euclidean cost.

    With equal weights on B sources and B targets the exact plan is a permutation, the
    solution of the assignment problem, which scipy solves exactly (Hungarian algorithm);
    POT's ``emd`` would return the same matrix. Note that it discards the given pairs,
    which is what the Bi-DPM paper blames for OT-CFM's weakness on paired data.
    """

    name = "ot"

    def couple(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cost = torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()) ** 2
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        order = torch.as_tensor(cols[np.argsort(rows)], device=x1.device)
        return x0, x1[order]


class VariancePreservingCFMPath(IndependentCFMPath):
    """VP-CFM (Tong et al. 2023, eq. 19, the stochastic-interpolant cosine path):
    ``x_t = cos(pi t / 2) x0 + sin(pi t / 2) x1``, target
    ``pi / 2 (cos(pi t / 2) x1 - sin(pi t / 2) x0)``."""

    name = "vp"

    def mean(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = _bt(t, x0) * (math.pi / 2)
        return torch.cos(a) * x0 + torch.sin(a) * x1

    def target(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = _bt(t, x0) * (math.pi / 2)
        return (math.pi / 2) * (torch.cos(a) * x1 - torch.sin(a) * x0)


CFM_VARIANTS: dict[str, type[ProbabilityPath]] = {
    "i": IndependentCFMPath, "ot": OptimalTransportCFMPath, "vp": VariancePreservingCFMPath,
}


def make_path(variant: str, sigma: float = 0.01) -> ProbabilityPath:
    """``"rectified"`` or a CFM variant ``"i"``, ``"ot"``, ``"vp"``."""
    if variant == "rectified":
        return RectifiedPath()
    if variant not in CFM_VARIANTS:
        raise ValueError(f"unknown flow-matching variant {variant!r}; choose one of "
                         f"rectified, {', '.join(CFM_VARIANTS)}")
    return CFM_VARIANTS[variant](sigma)  # type: ignore[call-arg]


# ------------------------------------------------------------------ MMD


def mmd(a: torch.Tensor, b: torch.Tensor, bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        relative: bool = True) -> torch.Tensor:
    """Squared maximum mean discrepancy between the sets ``a`` (m, ...) and ``b`` (n, ...)
    with a sum of Gaussian kernels ``exp(-|x - y|^2 / (2 s^2))`` (the Bi-DPM paper, eq. 8: the
    biased V-statistic, exactly zero for identical sets).

    With ``relative`` each bandwidth s^2 is a multiple of the median pairwise squared
    distance of the pooled sets (detached), so one setting serves 2D points, slices and
    volumes; the multi-bandwidth sum follows Li et al. (2017).
    """
    x = torch.cat([a.flatten(1), b.flatten(1)]).float()
    d2 = torch.cdist(x, x).pow(2)
    m = a.shape[0]
    scale = 1.0
    if relative:
        off = d2.detach()[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
        scale = float(off.median().clamp_min(1e-8)) if off.numel() else 1.0
    k = sum(torch.exp(-d2 / (2.0 * bw * scale)) for bw in bandwidths)
    assert isinstance(k, torch.Tensor)
    kaa, kbb, kab = k[:m, :m], k[m:, m:], k[:m, m:]
    return kaa.mean() + kbb.mean() - 2 * kab.mean()
