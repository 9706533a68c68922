"""Tests of the reversible core: inverse, gradients equal to plain autograd, memory, DDP."""

from __future__ import annotations

import copy
import socket

import pytest
import torch
from torch import nn

from synth_core.nn.reversible import AdditiveCoupling, CouplingNet, ReversibleCore


def _core(depth: int, channels: int = 4, memory_saving: bool = True, seed: int = 0,
          randomise: bool = True) -> ReversibleCore:
    torch.manual_seed(seed)
    core = ReversibleCore(3, channels, depth, memory_saving=memory_saving)
    if randomise:  # zero-initialised blocks are the identity: give them real weights
        for p in core.parameters():
            nn.init.normal_(p, 0.0, 0.3)
    return core


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("depth", [1, 4])
def test_inverse_reproduces_input(seed: int, depth: int) -> None:
    core = _core(depth, seed=seed)
    x = torch.randn(2, 4, 6, 5, 7, generator=torch.Generator().manual_seed(seed + 10))
    with torch.no_grad():
        y = core(x)
        back = core.inverse(y)
        again = core(core.inverse(x))
    assert (y - x).abs().max() > 0.1  # the blocks do something
    assert ((back - x).norm() / x.norm()).item() < 1e-5
    assert ((again - x).norm() / x.norm()).item() < 1e-5


def test_new_core_is_the_identity() -> None:
    core = ReversibleCore(3, 4, 3)
    x = torch.randn(1, 4, 5, 5, 5)
    assert torch.equal(core(x), x)


def test_odd_channels_and_batch_norm_are_refused() -> None:
    with pytest.raises(ValueError, match="odd"):
        ReversibleCore(3, 5, 1)
    with pytest.raises(ValueError, match="batch norm"):
        CouplingNet(3, 2, norm="batch")


def _train(core: ReversibleCore, inverse: bool, steps: int = 3) -> list[torch.Tensor]:
    """Three Adam steps of a loss through a convolution before and after the core (so the
    core's input needs a gradient too); returns the first step's gradients."""
    torch.manual_seed(1)
    pre, post = nn.Conv3d(1, 4, 3, padding=1), nn.Conv3d(4, 1, 1)
    opt = torch.optim.Adam([*core.parameters(), *pre.parameters(), *post.parameters()], lr=1e-2)
    first: list[torch.Tensor] = []
    for step in range(steps):
        x = torch.randn(1, 1, 6, 6, 6, generator=torch.Generator().manual_seed(step))
        h = pre(x)
        h = core.inverse(h) if inverse else core(h)
        loss = (post(h) ** 2).mean() + h.abs().mean()
        opt.zero_grad()
        loss.backward()
        if step == 0:
            first = [p.grad.clone() for p in [*core.parameters(), *pre.parameters()]]
        opt.step()
    return first


@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_and_weights_equal_plain_autograd(inverse: bool) -> None:
    saving = _core(3, memory_saving=True)
    plain = copy.deepcopy(saving)
    plain.memory_saving = False
    g_saving = _train(saving, inverse)
    g_plain = _train(plain, inverse)
    for a, b in zip(g_saving, g_plain, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (a - b).abs().max()
    for a, b in zip(saving.parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (a - b).abs().max()
    moved = sum((a - b).abs().sum() for a, b in zip(saving.parameters(),
                                                     _core(3).parameters(), strict=True))
    assert moved > 1e-3  # the optimiser steps changed the weights


@pytest.mark.parametrize("inverse", [False, True])
def test_backward_runs_each_coupling_net_once_per_block(inverse: bool) -> None:
    """The recomputing backward rebuilds a block's input and takes its gradients from one
    evaluation of NN1 and NN2 (not an inverse pass and then a forward pass on a graph)."""
    depth = 3
    core = _core(depth)
    calls = {"n": 0}
    for module in core.modules():
        if isinstance(module, CouplingNet):
            module.register_forward_hook(lambda *args: calls.update(n=calls["n"] + 1))
    x = torch.randn(1, 4, 6, 6, 6, requires_grad=True)
    y = core.inverse(x) if inverse else core(x)
    assert calls["n"] == 2 * depth  # the forward pass
    y.square().sum().backward()
    assert calls["n"] == 4 * depth  # the backward: once more each
    assert x.grad is not None and all(p.grad is not None for p in core.parameters())


def _saved_by_core(depth: int, memory_saving: bool) -> tuple[int, int]:
    """(number, bytes) of tensors autograd saves during the core's forward pass."""
    core = _core(depth, channels=8, memory_saving=memory_saving)
    x = torch.randn(1, 8, 8, 8, 8, requires_grad=True)
    count, size = 0, 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count, size
        count += 1
        size += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = core(x)
    y.sum().backward()
    return count, size


def test_recomputing_backward_stores_no_activation_per_block() -> None:
    one_volume = 8 * 8**3 * 4  # the core's output, (1, 8, 8, 8, 8) float32
    for depth in (1, 4, 16):
        assert _saved_by_core(depth, True) == (1, one_volume)
    plain_2, plain_8 = _saved_by_core(2, False)[1], _saved_by_core(8, False)[1]
    assert plain_8 > 3.5 * plain_2  # stored plainly, activations grow with depth


def test_core_has_no_buffers_and_recomputation_changes_no_state() -> None:
    core = _core(2)
    assert list(core.buffers()) == []
    before = {k: v.clone() for k, v in core.state_dict().items()}
    x = torch.randn(1, 4, 6, 6, 6, requires_grad=True)
    core(x).sum().backward()
    for k, v in core.state_dict().items():
        assert torch.equal(v, before[k])


def test_coupling_block_matches_equation_8() -> None:
    torch.manual_seed(0)
    nn1, nn2 = nn.Conv3d(2, 2, 1), nn.Conv3d(2, 2, 1)
    block = AdditiveCoupling(nn1, nn2)
    x = torch.randn(1, 4, 3, 3, 3)
    with torch.no_grad():
        y = block(x)
        y1 = x[:, :2] + nn1(x[:, 2:])
        assert torch.allclose(y[:, :2], y1)
        assert torch.allclose(y[:, 2:], x[:, 2:] + nn2(y1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_works_under_ddp() -> None:
    """DDP's gradient hooks fire through the recomputing backward (gloo, one process)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}",
                            rank=0, world_size=1)
    try:
        core = _core(2)
        reference = copy.deepcopy(core)
        reference.memory_saving = False
        wrapped = nn.parallel.DistributedDataParallel(core)
        x = torch.randn(1, 4, 6, 6, 6)
        (wrapped(x) ** 2).mean().backward()
        (reference(x) ** 2).mean().backward()
        for a, b in zip(core.parameters(), reference.parameters(), strict=True):
            assert a.grad is not None
            assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-5)
    finally:
        dist.destroy_process_group()


def test_memory_benchmark_records_constant_core_memory_when_reversible() -> None:
    from synth_core.benchmark_revgan import child_step

    rev = [child_step(d, "reversible", shape=(8, 8, 8), timed_steps=0) for d in (1, 3)]
    plain = [child_step(d, "plain", shape=(8, 8, 8), timed_steps=0) for d in (1, 3)]
    core_output = 64 * 4**3 * 4  # (1, 64, 4, 4, 4) float32 at the paper width
    assert [r["core_saved_bytes"] for r in rev] == [core_output, core_output]
    assert rev[0]["saved_bytes"] == rev[1]["saved_bytes"]
    assert plain[1]["core_saved_bytes"] > 2.5 * plain[0]["core_saved_bytes"]
    assert plain[1]["saved_bytes"] - plain[0]["saved_bytes"] == (
        plain[1]["core_saved_bytes"] - plain[0]["core_saved_bytes"])
    assert {"depth", "mode", "saved_bytes", "core_saved_bytes", "peak_rss_mb",
            "seconds_per_step"} <= set(rev[0])


def test_memory_benchmark_children_fix_the_mmap_threshold() -> None:
    """RSS follows live memory only when glibc's mmap threshold cannot drift upwards."""
    from synth_core.benchmark_revgan import CHILD_ENV, _in_child

    record = _in_child(depth=1, mode="reversible", shape=(8, 8, 8), timed_steps=0)
    assert record["malloc_mmap_threshold"] == CHILD_ENV["MALLOC_MMAP_THRESHOLD_"]
    assert record["peak_rss_mb"] > 0
