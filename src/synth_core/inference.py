"""``translate()``: a Volume in, a synthetic Volume out on the input's own grid.

The one place that maps a Volume onto a model's grid and back: reorient to RAS+,
resample to the model's spacing, normalise, pad to the network's multiple, run the
model (whole, in sliding windows, or slice by slice for 2D methods), then undo
every step in reverse order.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from synth_core import zoo
from synth_core._version import __version__
from synth_core.errors import ModalityMismatch, UserError
from synth_core.input_check import check_input
from synth_core.methods import (
    WINDOW_OVERLAP,
    Method,
    SynthesisRequest,
    get_method_class,
    patch_window,
    synthesize_slices,
)
from synth_core.nn.sliding_window import sliding_window, window_origins
from synth_core.preprocess import (
    NormParams,
    bounding_box,
    card_ct_window,
    denormalise,
    fit_normalisation,
    foreground_masks,
    normalise,
    pad_to_multiple,
    reorient_to_ras,
    resample,
    resample_to_grid,
    restore_orientation,
    unpad,
)
from synth_core.volume import ALL_MODALITIES, Volume

DEFAULT_MEMORY_BUDGET_MB = 2048
MAX_SAMPLES = 64
MIN_WINDOW = 32
#: The fewest voxels along each axis (each in-plane axis for 2D methods) on the model's
#: grid: every bundled model was trained on whole heads (48 x 64 x 48 at 4 mm); below
#: 16 voxels (64 mm at 4 mm) an input holds less than a third of a head, and a U-Net of
#: depth 4 would see a single voxel at its bottleneck.
MIN_MODEL_VOXELS = 16


@dataclass
class TranslationResult:
    """What ``translate`` returns.

    Attributes:
        volume: the synthetic volume (mean of the samples), on the input's grid.
        std: voxel-wise standard deviation over samples (None for one sample).
        provenance: the BIDS-style sidecar content (``Synthetic``: true, method, checkpoint...).
        warnings: e.g. an input far outside the training distribution.
    """

    volume: Volume
    std: Volume | None
    provenance: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """What was chosen for the user, one line each: the checkpoint, the source modality
        and how it was known, every defaulted setting, and the checkpoint's intended use."""
        p = self.provenance
        ckpt = p.get("CheckpointInfo", {})
        steps = ckpt.get("TrainedSteps")
        trained = f", trained {steps} steps" if steps is not None else ""
        lines = [f"checkpoint: {p['Checkpoint']} ({ckpt.get('Origin', '?')}{trained}; sha256 "
                 f"{str(p['CheckpointSHA256'])[:12]})",
                 f"source: {p['SourceModality']} ({p.get('SourceModalityFrom', 'given')})"]
        for name, entry in (p.get("DefaultedParameters") or {}).items():
            lines.append(f"{name}: {entry['value']} (not given; {entry['why']})")
        prediction = p.get("Prediction")
        if prediction is not None and "age" in prediction:
            lines.append(f"predicted age: {prediction['age']:.1f} years (the checkpoint's own "
                         "predictor on the synthesized volume; an estimate)")
        elif prediction is not None and "diagnosis" in prediction:
            lines.append(f"predicted diagnosis: {prediction['diagnosis']} (the checkpoint's own "
                         "predictor on the synthesized volume; an estimate)")
        lines.append(f"intended use: {p.get('IntendedUse', '')}")
        return lines


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


@functools.lru_cache(maxsize=4)
def _cached_method(directory: str, sha256: str, device: str) -> Method:
    """Loaded models, keyed by sha256 so a checkpoint re-exported in place is reloaded."""
    return zoo.load_method(zoo.locate(directory), device)


def step_range(info: zoo.CheckpointInfo) -> tuple[int, int] | None:
    """The ODE step counts a checkpoint may run: its card's range (Bi-DPM: exactly the time
    points it was trained on), else its method's; None when the method integrates no ODE."""
    card = (info.card.get("capabilities") or {}).get("steps")
    if card:
        return int(card[0]), int(card[1])
    steps = get_method_class(info.method).capabilities.steps
    return None if steps is None else (int(steps[0]), int(steps[1]))


def check_request(info: zoo.CheckpointInfo, *, to: str, age: float | None, steps: int | None,
                  samples: int, temperature: float | None, reverse: bool,
                  source: str | None = None) -> bool:
    """Validate the options against the method's capabilities and the model card.

    ``source``: the input's modality when known (given or read from the file name); an
    any-to-any checkpoint needs it, and a target other than it.

    Returns whether the model runs in reverse (target -> source).
    """
    caps = get_method_class(info.method).capabilities
    if to not in ALL_MODALITIES:
        raise UserError(f"unknown target modality {to!r}; choose one of: {', '.join(ALL_MODALITIES)}")
    if info.any_to_any:
        _check_any_to_any(info, source, to)
    if reverse and not caps.bidirectional:
        raise UserError(f"method {info.method!r} runs one way only; drop --reverse")
    sources = zoo.model_sources(info)
    runs_reverse = reverse or (caps.bidirectional and to in sources and to != info.target)
    if runs_reverse and to not in sources:
        raise UserError(
            f"--reverse maps {info.target} back to {'/'.join(sources)}, not to {to!r}; "
            f"use --to {sources[0]}"
        )
    if age is not None:
        if "age" not in caps.conditions:
            raise UserError(f"method {info.method!r} takes no age; drop --age")
        lo, hi = info.card.get("age_range") or (0.0, 120.0)
        if not (lo <= age <= hi) or not math.isfinite(age):
            raise UserError(
                f"age {age:g} is outside the range the model was trained on ({lo:g} to {hi:g} years); "
                "pick an age inside it"
            )
    if steps is not None:
        if caps.steps is None:
            raise UserError(f"method {info.method!r} integrates no ODE; drop --steps")
        lo_s, hi_s = step_range(info) or caps.steps
        if not lo_s <= steps <= hi_s:
            if (lo_s, hi_s) != tuple(caps.steps) and lo_s == hi_s:
                raise UserError(
                    f"--steps {steps}: this {info.method} checkpoint was trained for {lo_s} "
                    f"step{'s' if lo_s != 1 else ''} and its network is matched only there; "
                    f"use --steps {lo_s} (or drop --steps), or train a model for that many steps"
                )
            raise UserError(f"--steps {steps} is outside {lo_s} to {hi_s} for {info.method!r}")
    if not 1 <= samples <= MAX_SAMPLES:
        raise UserError(f"--samples must be between 1 and {MAX_SAMPLES}, got {samples}")
    if samples > 1 and not caps.stochastic:
        raise UserError(f"method {info.method!r} is deterministic; drop --samples (or use 1)")
    if temperature is not None:
        if not caps.stochastic:
            raise UserError(f"method {info.method!r} is deterministic; drop --temperature")
        if not 0.0 <= temperature <= 2.0:
            raise UserError(f"--temperature must be between 0 and 2, got {temperature:g}")
    return runs_reverse


def _check_any_to_any(info: zoo.CheckpointInfo, source: str | None, to: str) -> None:
    """An any-to-any checkpoint maps one of its modalities to another: it must be told which
    the input is, and the target must be another of them."""
    mods = info.modalities
    if to not in mods:
        raise UserError(f"checkpoint {info.name!r} translates among {', '.join(mods)}, not to "
                        f"{to!r}; pick --to among them or another checkpoint")
    if source is None:
        raise UserError(f"checkpoint {info.name!r} translates any of {', '.join(mods)} into any "
                        "other and cannot tell which the input is: pass --from (one of them) or "
                        "name the file after its modality (e.g. sub-001_t1.nii.gz)")
    if source not in mods:
        raise ModalityMismatch(f"checkpoint {info.name!r} takes {', '.join(mods)} input, not "
                               f"{source!r}; pick a checkpoint for {source!r} input")
    if source == to:
        others = ", ".join(m for m in mods if m != source)
        raise UserError(f"--to {to} names the input's own modality; pick targets among the "
                        f"others ({others})")


def translate(volume: Volume, method: str, to: str, *, source: str | None = None,
              checkpoint: str | None = None, age: float | None = None, steps: int | None = None,
              samples: int = 1, temperature: float | None = None, reverse: bool = False,
              device: str = "auto", memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
              window: tuple[int, int, int] | None = None, seed: int = 0,
              progress: Callable[[float, str], None] | None = None,
              source_from: str | None = None, check_modality: bool = True,
              whole: bool | None = None, flip: bool | None = None) -> TranslationResult:
    """Synthesize modality ``to`` from ``volume`` with a trained ``method``.

    Args:
        volume: the input scan (any orientation and spacing).
        method: registry key (see ``list_methods``).
        to: target modality key.
        source: the input's modality; defaults to the checkpoint's source.
        checkpoint: name, folder or model.safetensors; default: the best fitting one.
        age: years, for methods conditioned on age.
        steps: ODE steps, for methods that integrate one.
        samples, temperature: for stochastic methods; the result is the mean, ``std`` the spread.
        reverse: run a bidirectional model from its target back to its source.
        device: "auto", "cpu" or "cuda".
        memory_budget_mb: above this estimate, run in overlapping windows.
        window: force sliding windows of this size (voxels at the model's spacing).
        whole: run a patch-trained 3D model on the whole volume in one pass (when it fits
            the memory budget) instead of windows of its patch; None: the card's
            ``inference.window`` ("whole" or a size) decides, else windows of the patch.
        flip: also run the left-right mirrored input and average the two (test-time
            augmentation; twice the network time); None: the card's ``inference.flip``.
        seed: for stochastic sampling.
        progress: called with (fraction, message).
        source_from: how ``source`` was known, for the record (default "given"; the CLI
            says "from the file name" when it guessed it).
        check_modality: run the shared input check (``input_check``) before the model;
            False skips it, and the provenance says so.
    """
    report = progress or (lambda fraction, message: None)
    get_method_class(method)
    for label, mod in (("target", to), ("source", source)):
        if mod is not None and mod not in ALL_MODALITIES:
            raise UserError(f"unknown {label} modality {mod!r}; choose one of: {', '.join(ALL_MODALITIES)}")
    info = zoo.resolve(checkpoint, method=method, source=source, target=to,
                       spacing=tuple(float(v) for v in volume.spacing))
    if (source is None and info.any_to_any and volume.modality in info.modalities
            and not volume.metadata.get("modality_guessed", False)):
        # An any-to-any model has no source of its own: a Volume made or loaded with a stated
        # modality says which it is (a guessed one does not: the CLI reads the file name).
        source, source_from = volume.modality, source_from or "the volume's stated modality"
    runs_reverse = check_request(info, to=to, age=age, steps=steps, samples=samples,
                                 temperature=temperature, reverse=reverse, source=source)
    defaulted: dict[str, dict[str, Any]] = {}
    if steps is None and get_method_class(method).capabilities.steps is not None:
        steps = (info.card.get("capabilities") or {}).get("default_steps")  # recorded in provenance
        if steps is not None:
            defaulted["steps"] = {"value": steps, "why": "the checkpoint's default"}
    sources = zoo.model_sources(info)
    in_modality = (source if info.any_to_any else  # type: ignore[assignment]
                   info.target if runs_reverse else (source if source in sources else info.source))
    if source is not None and source != in_modality and not info.card.get("any_to_any"):
        raise ModalityMismatch(
            f"checkpoint {info.name!r} expects {in_modality} input here, not {source!r}; "
            "pick a checkpoint for your input (see `modality-synth models`)"
        )
    source_from = source_from or ("given" if source is not None else "the checkpoint's source")
    card = info.card

    report(0.05, "preparing volume")
    _check_size(volume, card)
    padded, (ras, orientation, work, params, pad_info, mask, head) = model_input(volume, card, in_modality)
    if check_modality:
        input_check = check_input(work.data, in_modality,
                                  (card.get("input_reference") or {}).get(in_modality),
                                  name=f"the input (taken as {in_modality}, {source_from})",
                                  mask=head, upsampled=upsampled_input(ras, work))
    else:
        input_check = {"modality": in_modality, "skipped": "at the user's request"}

    dev = resolve_device(device)
    report(0.1, "loading model")
    model = _cached_method(str(info.directory), info.sha256, str(dev))
    target_code = info.modalities.index(to) if info.any_to_any else None
    request = SynthesisRequest(reverse=runs_reverse, age=age, steps=steps, samples=samples,
                               temperature=temperature, target_code=target_code,
                               generator=torch.Generator(device=dev).manual_seed(seed),
                               source=to if runs_reverse else in_modality)
    # Conditions left unset are made explicit, so the sidecar records the value used.
    for name, (value, why) in model.defaulted_conditions(request).items():
        setattr(request, name, value)
        defaulted[name] = {"value": value, "why": why}
    age, temperature = request.age, request.temperature
    tensor = torch.from_numpy(np.ascontiguousarray(padded))[None, None].to(dev)
    warnings: list[str] = []
    grids = resolution_report(ras, work)
    if grids["Warning"]:
        warnings.append(grids["Warning"])
    ood = model.out_of_distribution(tensor)
    if ood is not None and ood.get("warning"):
        warnings.append(str(ood["warning"]))

    report(0.2, "synthesizing")
    window, whole, flip = inference_settings(card, window, whole, flip)
    foreground, _ = pad_to_multiple(head.astype(np.uint8), int(card.get("multiple", 16)), value=0)
    out, ran_on, region = _run(model, tensor, request, memory_budget_mb, window,
                               lambda f: report(0.2 + 0.7 * f, "synthesizing"), whole=whole,
                               flip=flip, foreground=foreground.astype(bool))
    out = out[:, 0, 0].float().cpu().numpy()  # (K, X, Y, Z)
    finite = np.isfinite(out)
    if not finite.all():
        # A synthetic scan with holes must never be written: say so, and what usually helps.
        hint = ("lower --temperature (0 gives the deterministic mode)" if temperature
                else "check that the input is the modality the model expects")
        raise (UserError if temperature else ModalityMismatch)(
            f"{info.method} produced non-finite values (NaN or infinity) in {1 - finite.mean():.1%} "
            f"of the voxels of this input, so no volume was made; {hint}"
        )
    # A synthesis has no intensities of its own: it takes the typical map of the training
    # subjects of the modality it is in (older cards lack the source's: then the input's own map).
    reference = card["normalisation"].get("source_reference" if runs_reverse else "target_reference")
    if info.any_to_any:
        reference = (card["normalisation"].get("references") or {}).get(to)
    elif runs_reverse and to in (card["normalisation"].get("source_references") or {}):
        reference = card["normalisation"]["source_references"][to]  # a model of several sources
    target_params = NormParams.from_dict(reference) if reference else params
    out_modality = to
    mean_n = out[0] if out.shape[0] == 1 else out.mean(0)
    mean = denormalise(unpad(mean_n, pad_info), target_params)
    std = None
    if out.shape[0] > 1:
        # The denormalisation is linear: a spread of s in normalised units is s * slope.
        slope = float(denormalise(np.ones(1, np.float32), target_params)[0]
                      - denormalise(np.zeros(1, np.float32), target_params)[0])
        std = unpad(out.std(0), pad_info) * abs(slope)

    report(0.92, "restoring the input's grid")
    provenance = _provenance(volume, info, to=to, source=in_modality, age=age, steps=steps,
                             samples=samples, temperature=temperature, reverse=runs_reverse,
                             device=str(dev), seed=seed, ood=ood, source_from=source_from,
                             defaulted=defaulted, input_check=input_check,
                             window=ran_on, flip=flip,
                             **({"window_region": region} if region is not None else {}),
                             **({"target_code": target_code} if target_code is not None else {}))
    provenance["Resolution"] = grids
    prediction = None if runs_reverse else _prediction(model, mean_n, mask, card, dev)
    if prediction is not None:
        provenance["Prediction"] = prediction
    result = _back_to_input(mean, work, ras, orientation, out_modality, provenance)
    std_volume = None
    if std is not None:
        std_volume = _back_to_input(std, work, ras, orientation, out_modality,
                                    provenance | {"Description": "voxel-wise standard deviation over samples"})
    report(1.0, "done")
    return TranslationResult(result, std_volume, provenance, warnings)


def model_input(volume: Volume, card: dict[str, Any], modality: str) -> tuple[np.ndarray, tuple]:
    """A scan as the model sees it: RAS, the card's voxel size, normalised in its own
    foreground, padded to the card's multiple. Returns the (X, Y, Z) float32 array and what
    undoing it needs: (ras, orientation, resampled volume, normalisation, padding), then the
    foreground mask of the resampled volume the normalisation used and the whole head's
    (``preprocess.foreground_masks``: the input check and the windows read the head)."""
    ras, orientation = reorient_to_ras(volume)
    spacing = tuple(card.get("spacing") or ras.spacing)
    work = ras if np.allclose(ras.spacing, spacing, rtol=1e-3) else resample(ras, spacing, order=1)
    mask, head = foreground_masks(work.data, modality)
    params = fit_normalisation(work.data, modality, mask=mask, ct_window=card_ct_window(card))
    x = normalise(work.data, params).astype(np.float32)
    background = float(normalise(np.zeros(1, dtype=np.float32), params)[0])
    padded, pad_info = pad_to_multiple(x, int(card.get("multiple", 16)), value=background)
    return padded, (ras, orientation, work, params, pad_info, mask, head)


def _prediction(model: Method, synthesis: np.ndarray, foreground: np.ndarray,
                card: dict[str, Any], dev: torch.device) -> dict[str, Any] | None:
    """The estimate of a model's own predictor (DUIIT's age regressor) for its synthesis
    (normalised, padded), over the input's foreground (its mask on the model's grid); None
    for models without one (their card names no predictor)."""
    about = (card.get("capabilities") or {}).get("predictor")
    if not about:
        return None
    mask, _ = pad_to_multiple(foreground.astype(np.uint8),
                              int(card.get("multiple", 16)), value=0)
    with torch.no_grad():
        estimate = model.predict_volume(torch.from_numpy(np.ascontiguousarray(synthesis))[None, None].to(dev),
                                        torch.from_numpy(mask.astype(bool))[None, None].to(dev))
    if estimate is None:
        return None
    if "age" in estimate:
        estimate = {"age": round(float(estimate["age"]), 2), "units": "years"}
    return estimate | {"Task": about.get("task"),
                       "Description": "the checkpoint's own predictor on the synthesized volume; "
                                      "an estimate, not a measurement"}


def resolution_report(ras: Volume, work: Volume) -> dict[str, Any]:
    """The grid the network ran on beside the input's, for the sidecar and the CLI.

    ``ModelGrid`` and ``InputGrid`` give the voxel size (mm) and shape, both in RAS axis
    order; ``Warning`` is set when the model's voxels are coarser than the input's along
    any axis (by more than 1 %): the output is then written on the input's grid but holds
    only the model's detail.
    """
    model_mm = [round(float(v), 4) for v in work.spacing]
    input_mm = [round(float(v), 4) for v in ras.spacing]
    coarser = [m > i * 1.01 for m, i in zip(model_mm, input_mm, strict=True)]
    warning = None
    if any(coarser):
        warning = (f"the model runs on a {_mm(model_mm)} mm grid, coarser than the input's "
                   f"{_mm(input_mm)} mm: the output is written on the input's grid but carries "
                   "only the model's detail; use a checkpoint trained at the input's spacing "
                   "for finer detail (see `modality-synth models`)")
    return {"ModelGrid": {"spacing_mm": model_mm, "shape": list(work.shape)},
            "InputGrid": {"spacing_mm": input_mm, "shape": list(ras.shape)},
            "ModelCoarserThanInput": bool(any(coarser)), "Warning": warning}


def upsampled_input(ras: Volume, work: Volume) -> bool:
    """Whether the model's grid (``work``) is finer than the input's (``ras``) along any axis
    by more than 1 %: the input was interpolated onto it."""
    return any(m * 1.01 < i for m, i in zip(work.spacing, ras.spacing, strict=True))


def _mm(spacing: list[float]) -> str:
    return " x ".join(f"{v:g}" for v in spacing)


def inference_settings(card: dict[str, Any], window: tuple[int, int, int] | None,
                       whole: bool | None, flip: bool | None
                       ) -> tuple[tuple[int, int, int] | None, bool, bool]:
    """(window, whole, flip) for one translation: the caller's choices, else the card's.

    A card's optional ``inference`` block records how its model was scored and should run:
    ``window`` is "whole" (one pass over the volume, for a patch-trained model whose scores
    held with it) or a size in voxels, ``flip`` true averages the left-right mirrored pass
    in. An explicit ``window`` wins over both whole-volume settings."""
    settings = card.get("inference") or {}
    if window is None and whole is None:
        chosen = settings.get("window")
        if chosen == "whole":
            whole = True
        elif chosen is not None:
            window = tuple(int(v) for v in chosen)  # type: ignore[assignment]
    if flip is None:
        flip = bool(settings.get("flip", False))
    return window, bool(whole) and window is None, flip


def _run(model: Method, x: torch.Tensor, request: SynthesisRequest, budget_mb: float,
         window: tuple[int, int, int] | None, progress: Callable[[float], None],
         whole: bool = False, flip: bool = False, foreground: np.ndarray | None = None
         ) -> tuple[torch.Tensor, str | list[int], dict[str, Any] | None]:
    """The network's output on ``x``, how it ran ("slices" (2D), "whole", or the window),
    and where the windows ran when not over the whole volume.

    With ``foreground`` (the input's head mask on ``x``'s grid), windows cover only the
    head's bounding box and a margin of air (``windowed_on_foreground``)."""
    caps = model.capabilities
    spatial_mode = model.config.train.spatial
    if spatial_mode == "2d":
        slices = _flip_averaged(lambda v, **kw: synthesize_slices(model, v, request, **kw), flip)
        return slices(x, progress=progress), "slices", None
    voxels = int(np.prod(x.shape[2:]))
    needed_mb = voxels * model_bytes_per_voxel(model) / 2**20  # samples are drawn one at a time
    if window is None and not (whole and needed_mb <= budget_mb):
        # A model trained on patches runs in windows of its patch: its normalisation
        # layers then see the field of view they were trained on (validation does the same).
        window = patch_window(model.config.train)

    synthesize = _flip_averaged(lambda w: model.synthesize(w, request), flip)
    if window is None and needed_mb > budget_mb:
        if not caps.sliding_window:
            raise UserError(
                f"the volume needs about {needed_mb:.0f} MB for {model.key} without patches, over the "
                f"{budget_mb:.0f} MB budget; crop it, raise the budget, or use a method with sliding windows"
            )
        side = int((budget_mb * 2**20 / model_bytes_per_voxel(model)) ** (1 / 3))
        multiple = int(getattr(model.config.train, "multiple", 16))
        # Below about 32 voxels a window holds too little context for normalisation layers.
        side = max(multiple, MIN_WINDOW // multiple * multiple, side // multiple * multiple)
        window = (side, side, side)
    if window is None:
        with torch.no_grad():
            out = synthesize(x)
        progress(1.0)
        return out, "whole", None
    with torch.no_grad():
        box = None if foreground is None else foreground_box(foreground, window)
        if box is None:
            return sliding_window(synthesize, x, window, WINDOW_OVERLAP, progress), list(window), None
        out = windowed_on_foreground(synthesize, x, foreground, box, window, progress)
        region = {"box_voxels": [[b.start, b.stop] for b in box],
                  "Description": "windows ran over the head's bounding box and "
                                 f"{FOREGROUND_MARGIN} voxels of air around it, on the model's "
                                 "padded grid; beyond it, the median of the model's output "
                                 "on the air inside the box"}
        return out, list(window), region


#: Voxels of air kept around the head's bounding box when windows skip the rest.
FOREGROUND_MARGIN = 8


def foreground_box(foreground: np.ndarray, window: tuple[int, ...],
                   margin: int = FOREGROUND_MARGIN) -> tuple[slice, ...] | None:
    """The head's bounding box in ``foreground`` (X, Y, Z), widened by ``margin`` voxels and
    to at least one window per axis, or None when it would not spare a single window (or
    the mask is empty)."""
    spatial = foreground.shape
    head = bounding_box(foreground, margin)
    if head is None:
        return None
    box = []
    for part, size, side in zip(head, spatial, window, strict=True):
        lo, hi = part.start, part.stop
        short = min(side, size) - (hi - lo)
        if short > 0:  # a window's field of view, as the model was trained on
            lo = max(0, lo - (short + 1) // 2)
            hi = min(size, lo + min(side, size))
            lo = hi - min(side, size)
        box.append(slice(lo, hi))

    def count(shape: tuple[int, ...]) -> int:
        return len(window_origins(shape, window, WINDOW_OVERLAP))

    cropped = tuple(b.stop - b.start for b in box)
    if count(cropped) >= count(spatial) or not (~foreground[tuple(box)]).any():
        return None  # no window spared, or no air inside the box to take the background from
    return tuple(box)


def windowed_on_foreground(synthesize: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                           foreground: np.ndarray, box: tuple[slice, ...],
                           window: tuple[int, int, int],
                           progress: Callable[[float], None]) -> torch.Tensor:
    """``sliding_window`` over ``box`` alone (``foreground_box`` of ``foreground``).

    The windows keep the size the model was trained on, so each sees the field of view it
    expects; beyond the box (air only, at least ``FOREGROUND_MARGIN`` voxels from the head)
    the output takes the median of what the network made of the air inside the box, per
    sample. On the 1 mm MNI152 T1 (a brain with little around it) in 96^3 windows this runs 12
    windows instead of 27."""
    air = ~foreground[box]
    inner = sliding_window(synthesize, x[(slice(None), slice(None), *box)], window,
                           WINDOW_OVERLAP, progress)
    background = inner[..., torch.from_numpy(air).to(inner.device)].median(dim=-1).values
    out = background[..., None, None, None].expand(*inner.shape[:3], *x.shape[2:]).clone()
    out[(slice(None), slice(None), slice(None), *box)] = inner
    return out


def _flip_averaged(run: Callable[..., torch.Tensor], flip: bool) -> Callable[..., torch.Tensor]:
    """``run`` itself, or (with ``flip``) the mean of ``run`` on the input and, mirrored back,
    on the left-right mirrored input: input (B, C, X, ...), output (K, B, C, X, ...). Extra
    keywords (a progress callback) go to the first pass only."""
    if not flip:
        return run

    def averaged(x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return (run(x, **kwargs) + run(x.flip(2)).flip(3)) / 2

    return averaged


def model_bytes_per_voxel(model: Method) -> float:
    """A rough activation-memory estimate for whole-volume inference (bytes per voxel).

    About 4 bytes times the widest layer times the number of full-resolution feature
    maps alive at once; methods may override ``bytes_per_voxel`` with a measured figure.
    """
    measured = getattr(model, "bytes_per_voxel", None)
    if measured:
        return float(measured)
    width = getattr(model.config, "features", None) or getattr(model.config, "hidden_channels", 64)
    return 4.0 * float(width) * 8.0


def _back_to_input(data: np.ndarray, work: Volume, ras: Volume, orientation: Any, modality: str,
                   provenance: dict[str, Any]) -> Volume:
    out = Volume(data.astype(np.float32, copy=False), work.affine, modality, {"provenance": provenance})
    if out.shape != ras.shape or not np.allclose(out.affine, ras.affine):
        out = resample_to_grid(out, ras.shape, ras.affine, order=1)
    out = restore_orientation(out, orientation)
    out.modality = modality
    out.metadata = {"provenance": provenance, "synthetic": True}
    return out


def _check_size(volume: Volume, card: dict[str, Any]) -> None:
    """Refuse a volume too small for the models (see ``MIN_MODEL_VOXELS``), before any work."""
    ras = reorient_to_ras(volume)[0]
    grid = np.asarray(card.get("spacing") or ras.spacing, dtype=np.float64)
    shape = np.round(np.asarray(ras.shape) * np.asarray(ras.spacing) / grid)
    two_d = ((card.get("config") or {}).get("train") or {}).get("spatial") == "2d"
    axes = (0, 1) if two_d else (0, 1, 2)  # a 2D method sees axial slices
    if min(shape[a] for a in axes) >= MIN_MODEL_VOXELS:
        return
    spacing = float(grid.min())
    size = " x ".join(str(n) for n in volume.shape)
    extent = " x ".join(f"{n * s:.0f}" for n, s in zip(volume.shape, volume.spacing, strict=True))
    name = volume.metadata.get("source_path") or "the input"
    raise UserError(
        f"{name} is too small: {size} voxels ({extent} mm); the models need at least "
        f"{MIN_MODEL_VOXELS} voxels along each {'in-plane ' if len(axes) == 2 else ''}axis at "
        f"their {spacing:g} mm grid ({MIN_MODEL_VOXELS * spacing:g} mm); give the whole scan"
    )


def _provenance(volume: Volume, info: zoo.CheckpointInfo, **params: Any) -> dict[str, Any]:
    ood = params.pop("ood", None)
    source_from = params.pop("source_from")
    defaulted = params.pop("defaulted")
    input_check = params.pop("input_check")
    prov: dict[str, Any] = {
        "Synthetic": True,
        "Description": f"SYNTHETIC {params['to']} generated from {params['source']} by "
                       f"{info.method}; not an acquired scan",
        "GeneratedBy": [{"Name": "napari-modality-synth", "Version": __version__,
                         "Method": info.method, "Checkpoint": info.name,
                         "CheckpointSHA256": info.sha256}],
        "Method": info.method,
        "Checkpoint": info.name,
        "CheckpointSHA256": info.sha256,
        "CheckpointInfo": {"Origin": info.origin, "TrainedSteps": info.card.get("steps"),
                           "TrainingData": _training_data(info.card)},
        "IntendedUse": zoo.intended_use(info),
        "SourceModality": params["source"],
        "SourceModalityFrom": source_from,
        "TargetModality": params["to"],
        "DefaultedParameters": defaulted,
        "InputCheck": input_check,
        "Parameters": {k: v for k, v in params.items() if k not in ("to", "source")},
        "Sources": [str(volume.metadata.get("source_path", "<in memory>"))],
        "Created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if ood:
        prov["InputLikelihood"] = {k: v for k, v in ood.items() if k != "warning"}
    return prov


def _training_data(card: dict[str, Any]) -> dict[str, Any]:
    """The card's training data in brief: what it was, how many subjects, which ages."""
    data = card.get("training_data") or {}
    return {k: data[k] for k in ("description", "n_subjects", "age_range", "mode") if k in data}
