"""Gradient reversal layer (Ganin & Lempitsky 2015; DUAL-GLOW sec. 3, "side information").

Identity on the way forward; on the way back the gradient is multiplied by ``-scale``.
A regression head placed behind it learns to predict (say) age from a latent, while
the network that produced the latent receives the opposite gradient and so learns to
remove that information.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad_output, None


def reverse_gradient(x: Tensor, scale: float = 1.0) -> Tensor:
    """``x`` unchanged; its gradient multiplied by ``-scale`` in backward."""
    return _ReverseGradient.apply(x, scale)


class GradientReversal(nn.Module):
    """Module form of :func:`reverse_gradient`.

    Args:
        scale: non-negative factor of the reversed gradient (1.0 in DUAL-GLOW).
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        if scale < 0:
            raise ValueError(f"GradientReversal scale must be >= 0, got {scale}")
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        return reverse_gradient(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
