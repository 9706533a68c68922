"""The Method contract: what every synthesis method gives the engine, the CLI and the plugin.

A method is one ``torch.nn.Module`` subclass registered under one key. It declares
its :class:`Capabilities` (read by the CLI and the widgets, which never know the
method itself), a typed configuration dataclass with named presets (``cpu`` and
``paper``), and two behaviours:

* training: ``losses(batch)`` for methods with a single optimiser (Lightning's
  automatic optimisation), or ``adversarial_step(batch, ctx)`` for methods that
  alternate several optimisers (manual optimisation; ``ctx`` performs each
  optimiser step with the NaN guard and gradient clipping of the engine);
* inference: ``synthesize(x, request)`` maps a normalised source tensor to a
  normalised target tensor (or several samples).

Tensors are (B, C, X, Y, Z) for 3D methods and (B, C, X, Y) for 2D ones, with
intensities normalised by :mod:`synth_core.preprocess` (about [-1, 1]).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from synth_core.errors import UserError
from synth_core.nn.sliding_window import sliding_window
from synth_core.volume import ALL_MODALITIES


@dataclass(frozen=True)
class Capabilities:
    """What a method can do, as the user interface needs to know it.

    Attributes:
        spatial: spatial modes it trains and runs in, among ``"2d"`` (axial slices)
            and ``"3d"``; the first is the default.
        data: kinds of training data, among ``"paired"``, ``"unpaired"``,
            ``"partial"`` (partially paired) and ``"labelled"``.
        conditions: side information it takes, e.g. ``("age",)`` or ``("target",)``
            for a target-modality code.
        steps: ``(min, max)`` number of ODE steps when the method integrates one, else None.
        default_steps: the step count used when the user gives none.
        bidirectional: one model runs both ways (``--reverse``).
        any_to_any: one model maps any of its modalities to any other.
        stochastic: sampling with ``samples`` and ``temperature`` is meaningful.
        adversarial: trains several optimisers in turn (manual optimisation).
        sliding_window: inference may tile a large volume into overlapping windows.
    """

    spatial: tuple[str, ...] = ("3d",)
    data: tuple[str, ...] = ("paired",)
    conditions: tuple[str, ...] = ()
    steps: tuple[int, int] | None = None
    default_steps: int | None = None
    bidirectional: bool = False
    any_to_any: bool = False
    stochastic: bool = False
    adversarial: bool = False
    sliding_window: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainSettings:
    """Optimisation settings every method config carries (the engine reads them).

    Attributes:
        max_steps: optimiser steps (one step = one batch for every optimiser).
        batch_size: volumes, patches or slices per step.
        lr: learning rate.
        patch_size: training patch in voxels at the model's spacing, one per spatial
            axis (3 in 3D; 2 in 2D, a crop of the axial slice), or None for whole
            volumes (slices). Patch centres are drawn from the brain mask. A 3D model
            trained on patches validates and translates in sliding windows of this
            size (``synthesize_windows``), so its normalisation layers see at inference
            the field of view they were trained on. ``--set patch_size=64`` gives a cube.
        spatial: "3d" or "2d".
        val_every: validate on held-out subjects every N steps.
        checkpoint_every: write the resumable ``last.ckpt`` every N steps.
        grad_clip: gradient-norm clipping (0 = off).
        ema_decay: exponential moving average of weights (0 = off), where a paper uses it.
        ema_warmup: ramp the EMA's decay up from 0.1 (see ``synth_core.nn.EMA``).
        warmup_steps: linear learning-rate warm-up.
        multiple: input sizes are padded to a multiple of this (2**depth of the net).
        seed: global seed.
    """

    max_steps: int = 2000
    batch_size: int = 1
    lr: float = 2e-4
    patch_size: tuple[int, ...] | None = None
    spatial: str = "3d"
    val_every: int = 200
    checkpoint_every: int = 100
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    ema_warmup: bool = False
    warmup_steps: int = 0
    multiple: int = 16
    seed: int = 0


@dataclass
class SynthesisRequest:
    """What the user asked for at inference time (already validated by the engine)."""

    reverse: bool = False
    age: float | None = None
    steps: int | None = None
    samples: int = 1
    temperature: float | None = None
    target_code: int | None = None
    generator: torch.Generator | None = None
    #: The input's modality, for a model with several sources (None: its first).
    source: str | None = None


class StepContext(Protocol):
    """Handed to ``adversarial_step``: performs one guarded optimiser step."""

    def optimize(self, index: int, loss: torch.Tensor) -> bool:
        """Zero grads, backward, clip, step optimiser ``index``; False if loss was not finite."""
        ...

    @property
    def global_step(self) -> int: ...


class Method(nn.Module):
    """Base class of every synthesis method. Subclass, set the class attributes, register."""

    key: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities]
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, Callable[[], Any]]]
    #: Name prefixes of state the weight average (``train.ema_decay``) copies instead of
    #: averaging: statistics of the training data kept with the weights.
    ema_copied: ClassVar[tuple[str, ...]] = ()
    #: Which weights a run exports: "best" (highest validation PSNR) or "last" (its end).
    export_weights: ClassVar[str] = "best"
    #: Settings of the method's config that a resumed run may change (besides the engine's
    #: own, such as the learning rate): loss weights and the like, which change what the
    #: next steps optimise but not the model's shape, so a trained run can be fine-tuned.
    resumable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, source: str, target: str) -> None:
        super().__init__()
        self.config = config
        self.source = source
        self.target = target

    # -- training ---------------------------------------------------------------
    @classmethod
    def optimizer_steps_per_batch(cls, config: Any) -> int:
        """Optimiser steps one batch takes under manual optimisation, where Lightning counts
        each as a global step: the engine scales ``max_steps`` and checkpoint intervals by it.
        A method whose count depends on its settings (an optimiser skipped when its loss
        weight is zero, a third network) overrides this."""
        return 2 if cls.capabilities.adversarial else 1

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """One optimiser per network group, in the order ``adversarial_step`` uses them."""
        raise NotImplementedError

    def lr_lambda(self, step: int) -> float:
        """Multiplier of the base learning rate at a step (warm-up, linear decay...)."""
        warm = self.config.train.warmup_steps
        return min(1.0, (step + 1) / warm) if warm > 0 else 1.0

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Single-optimiser methods: the losses of one batch, with the total under ``"loss"``."""
        raise NotImplementedError

    def adversarial_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Multi-optimiser methods: run every optimiser once through ``ctx``; return losses."""
        raise NotImplementedError

    @classmethod
    def fit_labels(cls, config: Any, summary: dict[str, Any], sources: list[str]) -> None:
        """Labelled training: take the labels' scaling or vocabulary (``summary``, from the
        data set) and the source modalities into ``config`` before the model is built."""
        raise UserError(f"method {cls.key!r} does not train on labelled data")

    def card_capabilities(self) -> dict[str, Any]:
        """Capabilities that depend on this model's config (e.g. Bi-DPM's default step
        count is the number of time points it was trained on); merged into the card."""
        return {}

    def inference_modules(self) -> Iterable[str]:
        """Names of the sub-modules whose weights are exported (the rest is training-only)."""
        return [name for name, _ in self.named_children()]

    # -- inference --------------------------------------------------------------
    def synthesize(self, x: torch.Tensor, request: SynthesisRequest) -> torch.Tensor:
        """Normalised source (B, C, *S) -> normalised target samples (K, B, C, *S)."""
        raise NotImplementedError

    def defaulted_conditions(self, request: SynthesisRequest) -> dict[str, tuple[Any, str]]:
        """The values ``synthesize`` will use for conditions the request leaves unset, as
        {name: (value, why)}, e.g. ``{"age": (74.9, "the middle of the training ages")}``,
        so that what a synthesis used is said and recorded, never left as None."""
        return {}

    def predict_volume(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, Any] | None:
        """Optional: a trained predictor's estimate for a normalised volume in the target
        modality (1, 1, X, Y, Z), e.g. ``{"age": 71.2}``; None for methods without one."""
        return None

    def out_of_distribution(self, x: torch.Tensor) -> dict[str, float] | None:
        """Optional: a score of how unlike the training data an input is (e.g. bits per voxel)."""
        return None

    def diverged(self, losses: dict[str, torch.Tensor]) -> str | None:
        """Optional: what about a batch's finite losses shows that training has diverged
        (e.g. "losses above 64 bits per voxel"), or None. Such a step is skipped like a
        non-finite one, and the run stops after as many in a row. Consulted for
        single-optimiser methods (``losses``) only."""
        return None


def synthesize_slices(method: Method, x: torch.Tensor, request: SynthesisRequest, batch: int = 8,
                      progress: Callable[[float], None] | None = None) -> torch.Tensor:
    """A 2D method on a volume: its axial slices (last axis) in batches, reassembled.

    ``x`` (1, C, X, Y, Z) -> samples (K, 1, C, X, Y, Z); used by validation and ``translate``.
    """
    depth = x.shape[-1]
    outs = []
    with torch.no_grad():
        for start in range(0, depth, batch):
            chunk = x[0, :, :, :, start:start + batch].permute(3, 0, 1, 2)  # (b, C, X, Y)
            y = method.synthesize(chunk, request)  # (K, b, C, X, Y)
            outs.append(y.permute(0, 2, 3, 4, 1))  # (K, C, X, Y, b)
            if progress is not None:
                progress(min(1.0, (start + batch) / depth))
    return torch.cat(outs, dim=-1).unsqueeze(1)


WINDOW_OVERLAP = 0.25  # share of a sliding window overlapping its neighbour (validation, translate)


def patch_window(settings: TrainSettings) -> tuple[int, int, int] | None:
    """The sliding window a 3D model trained on patches runs in (its patch), else None."""
    size = check_patch_size(settings)
    return size if settings.spatial == "3d" and size is not None else None  # type: ignore[return-value]


def check_patch_size(settings: TrainSettings) -> tuple[int, ...] | None:
    """``settings.patch_size`` as a tuple of ints (one per spatial axis), or None.

    UserError when it is not positive whole numbers, has the wrong number of axes, or is
    not a multiple of the network's size multiple (the U-Nets halve it ``depth`` times).
    """
    value = settings.patch_size
    if value is None:
        return None
    ndim = 3 if settings.spatial == "3d" else 2
    items = [value] * ndim if isinstance(value, (int, float, str)) else list(value)
    fix = (f"give one size or {ndim} sizes, each a positive multiple of {settings.multiple} "
           f"voxels (e.g. --set patch_size={4 * settings.multiple}), or leave it unset for whole "
           f"{'volumes' if ndim == 3 else 'slices'}")
    if len(items) != ndim or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise UserError(f"patch_size {value!r} is not {ndim} whole numbers; {fix}")
    size = tuple(int(v) for v in items)
    if min(size) < 1 or any(v % settings.multiple for v in size):
        raise UserError(f"patch_size {size} is not a multiple of {settings.multiple}; {fix}")
    return size


def synthesize_windows(method: Method, x: torch.Tensor, request: SynthesisRequest,
                       window: tuple[int, ...], overlap: float = WINDOW_OVERLAP,
                       progress: Callable[[float], None] | None = None) -> torch.Tensor:
    """A 3D method on a volume in overlapping windows, blended; used by validation and
    ``translate`` alike, so a model is scored the way it is run.

    ``x`` (B, C, X, Y, Z) -> samples (K, B, C, X, Y, Z); ``window`` in voxels.
    """
    with torch.no_grad():
        return sliding_window(lambda w: method.synthesize(w, request), x, window, overlap, progress)


def constant_then_linear_decay(step: int, total: int, decay_start: float) -> float:
    """Learning-rate multiplier of pix2pix and CycleGAN: 1 until ``decay_start * total``
    steps, then linear to 0 at ``total`` (the papers' 100 constant + 100 decaying epochs)."""
    start = decay_start * total
    if step < start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / max(1.0, total - start))


_REGISTRY: dict[str, type[Method]] = {}
#: Where each bundled method lives (module under ``synth_core.methods``). A method's module
#: is imported the first time its key is asked for, so translating with pix2pix does not
#: import (and pay for) every other method. A new method adds its key here.
METHOD_MODULES: dict[str, str] = {
    "bi-dpm": "bi_dpm",
    "cfm": "flow_matching",
    "cyclegan": "cyclegan",
    "dual-glow": "dual_glow",
    "duiit": "duiit",
    "pix2pix": "pix2pix",
    "rectified-flow": "flow_matching",
    "revgan": "revgan",
    "unified": "unified",
}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under ``cls.key``."""
    if cls.key in _REGISTRY and _REGISTRY[cls.key] is not cls:
        raise ValueError(f"method key {cls.key!r} registered twice")
    _REGISTRY[cls.key] = cls
    return cls


def get_method_class(key: str) -> type[Method]:
    """The method registered under ``key``, importing its module on first use."""
    if key not in _REGISTRY and key in METHOD_MODULES:
        import importlib

        importlib.import_module(f"synth_core.methods.{METHOD_MODULES[key]}")
    try:
        return _REGISTRY[key]
    except KeyError:
        known = ", ".join(method_keys())
        raise UserError(f"unknown method {key!r}; choose one of: {known}") from None


def method_keys() -> list[str]:
    """Every method key: the bundled ones (without importing them) and any registered."""
    return sorted(set(METHOD_MODULES) | set(_REGISTRY))


def build_config(key: str, preset: str = "cpu", overrides: dict[str, Any] | None = None) -> Any:
    """The method's config from a named preset, with overrides of its fields: a
    ``TrainSettings`` field by its name (``lr``), a method field by its name
    (``distance``), a nested one with dots (``net.features``). Values must have the
    field's type (an int is accepted for a float; a list for a tuple)."""
    cls = get_method_class(key)
    if preset not in cls.presets:
        raise UserError(
            f"method {key!r} has no preset {preset!r}; choose one of: {', '.join(cls.presets)}"
        )
    return apply_overrides(key, cls.presets[preset](), overrides)


def apply_overrides(key: str, config: Any, overrides: dict[str, Any] | None) -> Any:
    """Set ``overrides`` (named as for :func:`build_config`; None values skipped) on a
    method's ``config`` in place and return it; UserError for an unknown setting or a
    value of the wrong type."""
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        *path, leaf = name.split(".")
        target = config
        for part in path:  # a nested setting such as "net.features"
            target = getattr(target, part, None)
            if not dataclasses.is_dataclass(target):
                raise UserError(f"method {key!r} has no group of settings {part!r} (in {name!r})")
        if not path and hasattr(config.train, leaf):
            target = config.train
        if not hasattr(target, leaf) or dataclasses.is_dataclass(getattr(target, leaf)):
            raise UserError(f"method {key!r} has no setting {name!r}")
        current = getattr(target, leaf)
        if current is None:  # an optional setting left unset: its declared type decides
            declared = typing.get_args(typing.get_type_hints(type(target)).get(leaf))
            examples = [kind() for kind in declared if kind in (bool, int, float, str)]
            current = examples[0] if examples else current
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(current, bool) != isinstance(value, bool) or (
                isinstance(current, (int, float)) and not isinstance(value, (int, float))):
            raise UserError(f"setting {name!r} of {key!r} takes a value like {current!r}, not {value!r}")
        elif isinstance(current, float) and isinstance(value, int):
            value = float(value)
        setattr(target, leaf, value)
    return config


def config_from_dict(key: str, data: dict[str, Any]) -> Any:
    """Rebuild a method's config dataclass (with nested dataclasses) from its JSON form."""
    cls = get_method_class(key)
    return _from_dict(cls.config_class, data)


def _from_dict(kind: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(kind)
    names = {f.name for f in dataclasses.fields(kind)}
    kwargs = {}
    for name, value in data.items():
        if name not in names:
            continue  # a setting removed in a later version: ignore it rather than fail
        hint = hints.get(name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)  # JSON has no tuples; configs use them for sizes
        kwargs[name] = value
    return kind(**kwargs)


def check_modalities(cls: type[Method], source: str, target: str) -> None:
    """Known modalities, source unlike target. ``source`` may list several modalities
    separated by commas for a method that trains on labelled data (translating each)."""
    sources = source.split(",") if isinstance(source, str) else [source]
    if len(sources) > 1 and "labelled" not in cls.capabilities.data:
        raise UserError(f"method {cls.key!r} takes one source modality, not {source!r}; "
                        "give one --from")
    if len(set(sources)) != len(sources):
        raise UserError(f"--from {source} names a modality twice; give each once")
    for mod in (*sources, target):
        if mod not in ALL_MODALITIES:
            raise UserError(
                f"unknown modality {mod!r}; choose one of: {', '.join(ALL_MODALITIES)}"
            )
    if target in sources:
        raise UserError(f"source and target are both {target!r}; pick a different --to")
