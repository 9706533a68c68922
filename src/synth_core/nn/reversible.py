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
the last to the first. For each block it runs NN1 and NN2 once each, on a small local
graph: that one evaluation both rebuilds the block's input (``x2 = y2 - NN2(y1)``, then
``x1 = y1 - NN1(x2)``) and gives the vector-Jacobian products the gradients need
(:meth:`AdditiveCoupling.backward_pass`), so a training step costs one extra forward
pass of the core over plain autograd, not two (rebuilding the input with the inverse and
then running the block forward again on a graph would evaluate each network twice).

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

    def backward_pass(self, out: torch.Tensor, grad_out: torch.Tensor, inverse: bool
                      ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """Rebuild this block's input from its output and back-propagate through it.

        The block ran forward (``inverse=False``: ``out`` = (y1, y2)) or as its inverse
        (``out`` = (x1, x2)). Each of NN1 and NN2 is evaluated once, on a graph of its own
        that is freed after its vector-Jacobian product, and that evaluation serves both
        the reconstruction and the gradients. With ``a = NN2(y1)``, ``b = NN1(x2)``:

        * forward, ``y1 = x1 + b``, ``y2 = x2 + a``: ``g_y1 += J_a^T g_y2``, then
          ``g_x1 = g_y1``, ``g_x2 = g_y2 + J_b^T g_y1``;
        * inverse, ``x2 = y2 - a``, ``x1 = y1 - b``: ``g_x2 -= J_b^T g_x1``, then
          ``g_y2 = g_x2``, ``g_y1 = g_x1 - J_a^T g_x2``.

        Args:
            out: the block's output, ``(B, 2C, *S)``, without a graph.
            grad_out: the loss gradient with respect to ``out``.
            inverse: whether the block ran as its inverse.

        Returns:
            (its input, the gradient with respect to the input, one gradient or None per
            parameter of ``self.parameters()`` in that order).
        """
        o1, o2 = torch.chunk(out, 2, dim=1)
        g1, g2 = torch.chunk(grad_out, 2, dim=1)
        # Forward: the first net to evaluate is NN2 on y1 (o1); its product takes g_y2.
        # Inverse: NN1 on x2 (o2), taking -g_x1 (the nets are subtracted there).
        first, second = (self.nn2, self.nn1) if not inverse else (self.nn1, self.nn2)
        feed, other = (o1, o2) if not inverse else (o2, o1)
        g_feed, g_other = (g1, g2) if not inverse else (g2, g1)
        sign = 1.0 if not inverse else -1.0
        grads: dict[int, torch.Tensor | None] = {}

        def vjp(net: nn.Module, inp: torch.Tensor, grad: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
            """(net(inp) without a graph, J^T grad w.r.t. inp), parameter grads into ``grads``."""
            inp = inp.detach().requires_grad_(True)
            own = [p for p in net.parameters() if p.requires_grad]
            with torch.enable_grad():
                value = net(inp)
                found = torch.autograd.grad(value, [inp, *own], grad, allow_unused=True)
            for p, g in zip(own, found[1:], strict=True):
                grads[id(p)] = g
            return value.detach(), found[0]

        # Forward: a = NN2(y1), x2 = y2 - a; inverse: b = NN1(x2), y1 = x1 + b.
        value, j = vjp(first, feed, sign * g_other)
        rebuilt_other = other - sign * value  # x2 (forward) or y1 (inverse)
        g_feed = g_feed + j  # g_y1 (forward) or g_x2 (inverse), complete now
        # Forward: b = NN1(x2), x1 = y1 - b; inverse: a = NN2(y1), y2 = x2 + a.
        value, j = vjp(second, rebuilt_other, sign * g_feed)
        rebuilt_feed = feed - sign * value  # x1 (forward) or y2 (inverse)
        g_rebuilt_other = g_other + j  # g_x2 (forward) or g_y1 (inverse)
        if not inverse:  # input (x1, x2), gradients (g_y1, g_x2)
            inp = torch.cat([rebuilt_feed, rebuilt_other], dim=1)
            grad_in = torch.cat([g_feed, g_rebuilt_other], dim=1)
        else:  # input (y1, y2), gradients (g_y1, g_y2 = g_x2)
            inp = torch.cat([rebuilt_other, rebuilt_feed], dim=1)
            grad_in = torch.cat([g_rebuilt_other, g_feed], dim=1)
        return inp, grad_in, [grads.get(id(p)) for p in self.parameters()]


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
            y, grad_y, found = block.backward_pass(y, grad_y, ctx.inverse)
            for p, g in zip(block.parameters(), found, strict=True):
                if g is not None:
                    grads[id(p)] = g if id(p) not in grads else grads[id(p)] + g
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
