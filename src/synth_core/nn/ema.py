"""Exponential moving average of a model's weights (used by Bi-DPM and its
flow-matching baselines)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def _tracked(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


class EMA:
    """A shadow copy of ``model``'s parameters and buffers, averaged over training steps.

    After each optimiser step, ``update()`` sets for every floating-point tensor
    ``shadow <- decay * shadow + (1 - decay) * value``, so after n updates from a start
    value ``p_0``: ``shadow_n = decay**n p_0 + (1 - decay) sum_{k=1..n} decay**(n-k) p_k``.
    Floating-point buffers (batch-norm running statistics) are averaged the same way, so
    they stay consistent with the averaged weights; integer buffers (step counters) are
    copied. By default the decay is constant (the papers that average name no warm-up).

    Args:
        model: the network being trained; the shadow starts as a copy of its state.
        decay: weight of the past, in [0, 1] (0.999 to 0.9999 are usual).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` at update n (counted from 0), the
            schedule of TensorFlow's ``ExponentialMovingAverage(num_updates=...)``, so the
            shadow forgets its starting state within a few dozen updates. Needed where the
            state before the first step is not a model, e.g. a Glow whose actnorm layers
            initialise from the first batch (their parameters are placeholders until then).
        copied: name prefixes of tensors that are copied, never averaged (running
            statistics of the data that are not weights, such as a ring buffer).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = False,
                 copied: tuple[str, ...] = ()) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.model = model
        self.decay = float(decay)
        self.warmup = warmup
        self.copied = tuple(copied)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: value.detach().clone() for name, value in _tracked(model)
        }

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current parameters and buffers into the shadow."""
        decay = self.decay
        if self.warmup:
            decay = min(decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        for name, value in _tracked(self.model):
            shadow = self.shadow[name]
            if shadow.device != value.device:  # the model was moved after the EMA was made
                shadow = self.shadow[name] = shadow.to(value.device)
            if shadow.is_floating_point() and not name.startswith(self.copied):
                shadow.lerp_(value.detach(), 1.0 - decay)
            else:
                shadow.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module | None = None) -> None:
        """Write the averaged parameters and buffers into ``model`` (default: the tracked one).

        ``model`` must have the same parameter and buffer names as the tracked model.
        """
        target = self.model if model is None else model
        named = dict(_tracked(target))
        if named.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() ^ named.keys())
            raise ValueError(f"model does not match the EMA's tensors; differing names: {missing}")
        for name, value in named.items():
            value.copy_(self.shadow[name])

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "num_updates", "shadow": {name: tensor}}``, for a checkpoint."""
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {name: value.clone() for name, value in self.shadow.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict()`` returned; the tensor names must match the model's."""
        shadow = dict(state["shadow"])
        for name in self.shadow.keys() - shadow.keys():
            if name.startswith(self.copied):  # copied state added since: the model's own
                shadow[name] = self.shadow[name]
        if shadow.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() ^ shadow.keys())
            raise ValueError(f"EMA state does not match the model; differing names: {missing}")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for name, value in shadow.items():
            current = self.shadow[name]
            self.shadow[name] = value.detach().to(device=current.device, dtype=current.dtype).clone()
