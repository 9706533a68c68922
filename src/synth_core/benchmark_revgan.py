"""RevGAN's memory against depth (``modality-synth benchmark --only revgan-memory``).

The thesis' Table 7 (the RevGAN thesis) measured GPU memory of whole models. Here, for core
depths 2 to 32 at the ``paper`` width (features 32, a 64-channel core at half
resolution), reversible against the same core stored plainly, one generator training
step on a 64^3 patch (F = Dec_B(C(Enc_A(a))), its L1 loss against b, backward, an Adam
step) is measured as:

* ``saved_bytes``: bytes autograd keeps for backward during the whole step, counted with
  ``torch.autograd.graph.saved_tensors_hooks`` (each storage once: a tensor saved by
  two operations occupies memory once);
* ``core_saved_bytes``: the same for the core alone, applied to the encoder's output;
* ``peak_rss_mb``: peak resident memory (VmHWM) of a fresh process that ran only this;
* ``seconds_per_step``: the mean of the timed steps after one warm-up step.

Each record runs in a fresh process with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at
128 KiB. By default glibc raises that threshold each time a large block is freed, after
which tensors of up to 32 MiB come from the heap, whose freed space is kept by the
process: the recomputing backward frees a block's tensors and allocates the next
block's, so peak RSS then grew with depth although the live memory did not. With the
threshold fixed, every tensor larger than 128 KiB is its own mapping, returned to the
system when freed, and RSS follows live memory.

The depth limit: on a whole `full` phantom volume (96x112x96 at 2 mm), the deepest core
(up to 64 blocks) whose training step stays within 8 GiB of peak RSS, per mode. Peak RSS
is linear in depth (each plainly stored block adds the same activations), so it is
measured in fresh processes at two depths and extrapolated; the prediction is then
measured itself for the modes in ``verify`` (one step of a 64-block core on a whole
volume takes minutes on one thread), and the record says which it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from synth_core.io import atomic_write_json

DEPTHS = (2, 4, 8, 16, 32)
MODES = ("reversible", "plain")
PATCH = 64
LIMIT_MB = 8 * 1024
MAX_DEPTH = 64
FULL_SHAPE = (96, 112, 96)
#: The child's allocator: mmap every allocation above 128 KiB (see the module docstring).
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _model(depth: int, mode: str) -> Any:
    from synth_core.methods import build_config, get_method_class

    config = build_config("revgan", "paper", {"depth": depth, "memory_saving": mode == "reversible"})
    return get_method_class("revgan")(config, "t1", "t2")


def child_step(depth: int, mode: str, shape: tuple[int, int, int] = (PATCH,) * 3,
               timed_steps: int = 2) -> dict[str, Any]:
    """One record, measured in this (fresh) process; see the module docstring."""
    import torch

    from synth_core.benchmark import _peak_rss_mb

    torch.manual_seed(0)
    model = _model(depth, mode)
    generator = [*model.encoder_a.parameters(), *model.core.parameters(),
                 *model.decoder_b.parameters()]
    opt = torch.optim.Adam(generator, lr=2e-4, betas=(0.5, 0.999))
    a = torch.rand(1, 1, *shape) * 2 - 1
    b = torch.rand(1, 1, *shape) * 2 - 1
    # Storage address -> bytes, each storage once (a tensor saved by two operations
    # occupies memory once). Saved tensors stay alive until backward, so no two of them
    # share an address; only the numbers are kept, not the tensors (which would hold
    # their memory past the backward pass and raise the peak).
    saved: dict[int, int] = {}
    in_core: dict[int, int] = {}
    where = {"core": False}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        if where["core"]:
            in_core[storage.data_ptr()] = storage.nbytes()
        return t

    def core(h: torch.Tensor) -> torch.Tensor:
        where["core"] = True
        try:
            return model.core(h)
        finally:
            where["core"] = False

    def step(record: bool) -> None:
        opt.zero_grad(set_to_none=True)
        if record:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                fake = model.decoder_b(core(model.encoder_a(a)))
        else:
            fake = model.decoder_b(model.core(model.encoder_a(a)))
        torch.nn.functional.l1_loss(fake, b).backward()
        opt.step()

    step(record=True)  # warm-up, and the saved-tensor count
    times = []
    for _ in range(timed_steps):
        start = time.perf_counter()
        step(record=False)
        times.append(time.perf_counter() - start)
    return {"depth": depth, "mode": mode, "shape": list(shape), "saved_bytes": sum(saved.values()),
            "core_saved_bytes": sum(in_core.values()), "peak_rss_mb": _peak_rss_mb(),
            "seconds_per_step": sum(times) / len(times) if times else None,
            "threads": torch.get_num_threads(),
            "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_")}


def _in_child(**kwargs: Any) -> dict[str, Any]:
    code = ("import json, synth_core.benchmark_revgan as b; "
            f"print(json.dumps(b.child_step(**{kwargs!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **CHILD_ENV})
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return {**kwargs, "error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def depth_limit(mode: str, probes: tuple[int, int] = (2, 8), verify: bool = True) -> dict[str, Any]:
    """The deepest core (<= 64) whose training step on a whole `full` volume stays within
    8 GiB peak RSS: extrapolated from two depths, then (``verify``) measured at the
    prediction; ``"measured"`` in the result says whether it was."""
    runs = [_in_child(depth=d, mode=mode, shape=FULL_SHAPE, timed_steps=0) for d in probes]
    if any("error" in r for r in runs):
        return {"mode": mode, "error": next(r["error"] for r in runs if "error" in r)}
    (d0, m0), (d1, m1) = ((r["depth"], r["peak_rss_mb"]) for r in runs)
    slope = (m1 - m0) / (d1 - d0)
    predicted = MAX_DEPTH if slope <= 0 else int(min(MAX_DEPTH, d0 + (LIMIT_MB - m0) // slope))
    result: dict[str, Any] = {"mode": mode, "shape": list(FULL_SHAPE), "probes": runs,
                              "mb_per_block": slope, "predicted_depth": predicted,
                              "predicted_peak_rss_mb": m0 + slope * (predicted - d0),
                              "measured": verify}
    if verify:
        check = _in_child(depth=predicted, mode=mode, shape=FULL_SHAPE, timed_steps=0)
        result["measured_at_prediction"] = check
        result["fits"] = "error" not in check and check["peak_rss_mb"] <= LIMIT_MB
    return result


def run_revgan_memory(out: Path, quick: bool = False, limit: bool = True,
                      verify: tuple[str, ...] = (), timed_steps: int = 1) -> list[dict[str, Any]]:
    """Write ``out/revgan-memory.json`` (the records) and ``out/revgan-depth-limit.json``;
    print both as tables. ``quick``: a 32^3 patch (8 times cheaper), no depth limit.
    ``verify``: the modes whose predicted depth limit is also measured (one step of a deep
    core on a whole volume takes minutes on one thread; by default the limit is the
    extrapolation, and the record says so). ``timed_steps``: steps timed per record after
    the warm-up (a depth-32 step at 64^3 takes about half a minute on one thread)."""
    out.mkdir(parents=True, exist_ok=True)
    shape = (PATCH // 2 if quick else PATCH,) * 3
    records = []
    print(f"one generator training step on a {shape[0]}^3 patch, paper width, "
          f"{_threads()} thread(s)")
    print("depth  mode        saved MB  core saved MB  peak RSS MB  s/step")
    for depth in DEPTHS:
        for mode in MODES:
            r = _in_child(depth=depth, mode=mode, shape=shape, timed_steps=timed_steps)
            records.append(r)
            # Written after every record, so an interrupted run keeps what it measured.
            atomic_write_json(out / "revgan-memory.json", records, overwrite=True)
            if "error" in r:
                print(f"{depth:5d}  {mode:10s}  error: {r['error']}")
                continue
            print(f"{depth:5d}  {mode:10s}  {r['saved_bytes'] / 2**20:8.1f}  "
                  f"{r['core_saved_bytes'] / 2**20:13.1f}  {r['peak_rss_mb']:11.0f}  "
                  f"{r['seconds_per_step']:6.2f}")
    print(f"wrote {out / 'revgan-memory.json'}")
    _print_goals(records)
    if limit and not quick:
        limits = []
        for mode in MODES:
            limits.append(depth_limit(mode, verify=mode in verify))
            atomic_write_json(out / "revgan-depth-limit.json", limits, overwrite=True)
        for lim in limits:
            if "error" in lim:
                print(f"depth limit {lim['mode']}: error {lim['error']}")
                continue
            head = (f"depth limit {lim['mode']} on {FULL_SHAPE}: {lim['mb_per_block']:.1f} MB per "
                    f"block; depth {lim['predicted_depth']}")
            if lim["measured"]:
                check = lim["measured_at_prediction"]
                print(f"{head} measured {check.get('peak_rss_mb', float('nan')):.0f} MB "
                      f"({'within' if lim['fits'] else 'above'} 8 GiB)")
            else:
                print(f"{head} estimated {lim['predicted_peak_rss_mb']:.0f} MB (not measured)")
        print(f"wrote {out / 'revgan-depth-limit.json'}")
    return records


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _print_goals(records: list[dict[str, Any]]) -> None:
    by = {(r["depth"], r["mode"]): r for r in records if "error" not in r}

    def ratio(key: str, num: tuple[int, str], den: tuple[int, str]) -> float | None:
        if num in by and den in by and by[den][key]:
            return by[num][key] / by[den][key]
        return None

    deepest = max(d for d, _ in by) if by else 0
    goals = [
        (f"saved bytes, reversible depth {deepest} / depth 2", ratio("saved_bytes", (deepest, "reversible"), (2, "reversible")), "<=", 1.05),
        ("saved bytes, plain / reversible at depth 16", ratio("saved_bytes", (16, "plain"), (16, "reversible")), ">=", 2.5),
        (f"seconds per step, reversible / plain at depth {deepest}", ratio("seconds_per_step", (deepest, "reversible"), (deepest, "plain")), "<=", 1.5),
    ]
    for name, value, op, goal in goals:
        if value is None:
            print(f"goal {name}: not measured")
            continue
        met = value <= goal if op == "<=" else value >= goal
        print(f"goal {name}: {value:.3f} ({op} {goal}: {'met' if met else 'NOT met'})")
