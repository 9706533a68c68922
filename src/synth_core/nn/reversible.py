"""Reversible (additive-coupling) blocks and a backward pass that recomputes activations.

An additive coupling block (NICE, Dinh et al. 2015; RevNet, Gomez et al. 2017; RevGAN
the RevGAN thesis, eq. 8) splits its input along the channels into halves ``(x1, x2)`` and maps

    y1 = x1 + NN1(x2)            x2 = y2 - NN2(y1)
    y2 = x2 + NN2(y1)            x1 = y1 - NN1(x2)

(forward left, exact inverse right). A stack of them, :class:`ReversibleCore`, is
invertible whatever NN1 and NN2 are, so during backward each block's input can be
recomputed from its output instead of being stored: the activation memory of a training
step does not grow with the number of blocks (the paper's Table 1: O(1) in depth).

Why this module is ours rather than a library's: memcnn, the library the RevGAN authors
used, is unmaintained (open reports of a breakage with torch 2, a twofold slowdown,
batch-norm statistics updated twice because the forward pass runs again, and an
in-place ReLU that fails under DistributedDataParallel), and revlib exposes no inverse,
which RevGAN's second direction (``C^-1``) needs. The recomputing backward is one small
``torch.autograd.Function`` (:class:`_RecomputingCore`): the forward runs without
building a graph and saves only the core's output; the backward walks the blocks from
the last to the first, rebuilding each block's input with its inverse and taking that
block's gradients with a local autograd graph that is freed at once.

Constraints that make the recomputation exact, and DDP-safe:

* NN1 and NN2 must compute the same function when run again: no dropout, no batch
  statistics (use instance norm, which has no running buffers), no randomness.
* No in-place operation on a tensor that is saved (ReLU here is not in place).
* Parameters reach the Function as explicit inputs, so their gradients are returned by
  the Function and accumulated by autograd's own ``AccumulateGrad`` nodes, the hooks
  DistributedDataParallel listens to; nothing else is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from synth_core.nn.blocks import conv_nd, norm_nd


class CouplingNet(nn.Module):
    """NN1 / NN2 of the 3D reversible block (the RevGAN thesis, Figure 7).

    ``conv 3^3 -> instance norm -> ReLU -> conv 3^3``, reflection padding 1, shape kept:
    ``(B, C, *S) -> (B, C, *S)``. The last convolution starts at zero, so a new block is
    the identity (Glow's trick, the RevGAN thesis, section 4.1). The ReLU is not in place (its
    input is saved for the backward pass).

    Args:
        spatial_dims: 2 or 3.
        channels: C, half the core's channels.
        hidden: channels between the two convolutions (default C).
        norm: a norm without running statistics ("instance", "group" or "none"): the
            recomputing backward runs this network a second time.
    """

    def __init__(self, spatial_dims: int, channels: int, hidden: int | None = None,
                 norm: str = "instance") -> None:
        super().__init__()
        if norm == "batch":
            raise ValueError("batch norm changes its statistics when a reversible block is "
                             "recomputed; use instance norm")
        hidden = hidden or channels
        conv = conv_nd(spatial_dims)
        bias = norm in ("group", "none")
        self.body = nn.Sequential(
            conv(channels, hidden, 3, padding=1, padding_mode="reflect", bias=bias),
            norm_nd(norm, spatial_dims, hidden),
            nn.ReLU(inplace=False),
            conv(hidden, channels, 3, padding=1, padding_mode="reflect"),
        )
        self.zero_last()

    def zero_last(self) -> None:
        """Zero the last convolution (call again after a global weight initialisation)."""
        last = self.body[-1]
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class AdditiveCoupling(nn.Module):
    """One reversible block (the RevGAN thesis, eq. 8): ``(B, 2C, *S) -> (B, 2C, *S)``, invertible."""

    def __init__(self, nn1: nn.Module, nn2: nn.Module) -> None:
        super().__init__()
        self.nn1 = nn1
        self.nn2 = nn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.chunk(x, 2, dim=1)
        y1 = x1 + self.nn1(x2)
        y2 = x2 + self.nn2(y1)
        return torch.cat([y1, y2], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = torch.chunk(y, 2, dim=1)
        x2 = y2 - self.nn2(y1)
        x1 = y1 - self.nn1(x2)
        return torch.cat([x1, x2], dim=1)


def _step(block: AdditiveCoupling, x: torch.Tensor, inverse: bool) -> torch.Tensor:
    return block.inverse(x) if inverse else block(x)


class _RecomputingCore(torch.autograd.Function):
    """A stack of coupling blocks run forward (``inverse=False``) or backward, storing
    only its output; see the module docstring."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, blocks: Sequence[AdditiveCoupling], inverse: bool,
                *params: torch.Tensor) -> torch.Tensor:
        order = list(reversed(blocks)) if inverse else list(blocks)
        with torch.no_grad():
            y = x
            for block in order:
                y = _step(block, y, inverse)
        ctx.order = order
        ctx.inverse = inverse
        ctx.params = params
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[Any, ...]:
        (y,) = ctx.saved_tensors
        params: tuple[torch.Tensor, ...] = ctx.params
        grads: dict[int, torch.Tensor] = {}
        for block in reversed(ctx.order):
            with torch.no_grad():  # this block's input, from its output
                x = _step(block, y, not ctx.inverse)
            x = x.detach().requires_grad_(True)
            own = [p for p in block.parameters() if p.requires_grad]
            with torch.enable_grad():
                out = _step(block, x, ctx.inverse)
                found = torch.autograd.grad(out, [x, *own], grad_y, allow_unused=True)
            grad_y = found[0]
            for p, g in zip(own, found[1:], strict=True):
                if g is not None:
                    grads[id(p)] = g if id(p) not in grads else grads[id(p)] + g
            y = x.detach()
        return (grad_y, None, None, *(grads.get(id(p)) for p in params))


class ReversibleCore(nn.Module):
    """RevGAN's invertible core C (the RevGAN thesis, section 3.2): ``depth`` coupling blocks.

    ``forward`` is C, ``inverse`` is C^-1; both ``(B, 2C, *S) -> (B, 2C, *S)`` with one set
    of weights. With ``memory_saving=True`` (the default) a training pass stores only the
    core's output and recomputes every block's input during backward (the same gradients
    as plain autograd, about one more forward pass of compute); with False, autograd
    stores every block's activations as usual (the comparison of the memory benchmark).

    Args:
        spatial_dims: 2 or 3.
        channels: 2C, the core's channels (even).
        depth: number of reversible blocks (0 is the identity).
        hidden: channels inside NN1 / NN2 (default C).
        norm: "instance" (the paper's), "group" or "none".
        memory_saving: recompute activations in backward instead of storing them.
    """

    def __init__(self, spatial_dims: int, channels: int, depth: int, hidden: int | None = None,
                 norm: str = "instance", memory_saving: bool = True) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"a coupling block splits channels in two; got an odd {channels}")
        if depth < 0:
            raise ValueError(f"depth must not be negative, got {depth}")
        half = channels // 2
        self.blocks = nn.ModuleList(
            AdditiveCoupling(CouplingNet(spatial_dims, half, hidden, norm),
                             CouplingNet(spatial_dims, half, hidden, norm))
            for _ in range(depth)
        )
        self.memory_saving = memory_saving

    def zero_last(self) -> None:
        """Make every block the identity again (after a global weight initialisation)."""
        for block in self.blocks:
            block.nn1.zero_last()
            block.nn2.zero_last()

    def _run(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        if not self.blocks:
            return x
        params = [p for p in self.parameters() if p.requires_grad]
        needs_graph = torch.is_grad_enabled() and (x.requires_grad or bool(params))
        if self.memory_saving and needs_graph:
            return _RecomputingCore.apply(x, tuple(self.blocks), inverse, *params)
        order = reversed(self.blocks) if inverse else self.blocks
        for block in order:
            x = _step(block, x, inverse)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """C(x): ``(B, 2C, *S) -> (B, 2C, *S)``."""
        return self._run(x, inverse=False)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """C^-1(y): ``(B, 2C, *S) -> (B, 2C, *S)``."""
        return self._run(y, inverse=True)
