"""Checkpoints: bundled ones inside the package, user ones under ``$MODALITY_SYNTH_HOME``.

A checkpoint is a folder with ``model.safetensors`` (the inference weights) and
``model.json`` (the model card: method, configuration, modalities, spacing,
normalisation, training data, validation metrics, package version, sha256). Only
safetensors are ever loaded: a pickle (``.pt``, ``.ckpt``...) is refused before a
byte of it is unpickled, because unpickling can run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from synth_core._version import __version__
from synth_core.errors import ModalityMismatch, UserError

if TYPE_CHECKING:
    import torch

    from synth_core.methods import Method

# torch, safetensors, the methods and the file writers (nibabel, SimpleITK) are imported
# inside the functions that load or write checkpoints: listing and choosing them
# (``modality-synth models``) reads JSON cards only, and those imports cost seconds.

FORMAT = "napari-modality-synth-model/1"
WEIGHTS = "model.safetensors"
CARD = "model.json"
DEFAULTS = "defaults.json"
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar"}


@dataclass
class CheckpointInfo:
    """A checkpoint found on disk. ``origin`` is "user", "bundled" or "path".

    ``default``: chosen when ``translate`` is given no checkpoint (see ``list_checkpoints``).
    """

    name: str
    directory: Path
    card: dict[str, Any]
    origin: str
    default: bool = False

    @property
    def method(self) -> str:
        return str(self.card.get("method"))

    @property
    def source(self) -> str:
        return str(self.card.get("source"))

    @property
    def target(self) -> str:
        return str(self.card.get("target"))

    @property
    def any_to_any(self) -> bool:
        """One model for every direction among ``modalities`` (the card says so)."""
        return bool(self.card.get("any_to_any"))

    @property
    def modalities(self) -> list[str]:
        """An any-to-any checkpoint's modalities (in the order of its code), else []."""
        return [str(m) for m in self.card.get("modalities", [])] if self.any_to_any else []

    @property
    def task(self) -> str:
        """What it translates, in words: ``t1 -> t2``, or ``any of t1, t2, flair``."""
        if self.any_to_any:
            return f"any of {', '.join(self.modalities)}"
        return f"{','.join(model_sources(self))} -> {self.target}"

    @property
    def sha256(self) -> str:
        return str(self.card.get("sha256", ""))

    @property
    def weights(self) -> Path:
        return self.directory / WEIGHTS

    def summary(self) -> dict[str, Any]:
        """The row ``modality-synth models`` prints."""
        return {
            "name": self.name, "method": self.method, "source": ",".join(model_sources(self)),
            "target": self.target,
            "any_to_any": self.any_to_any, "modalities": self.modalities, "task": self.task,
            "preset": self.card.get("preset"), "spacing": self.card.get("spacing"),
            "patch_size": self.card.get("patch_size"), "origin": self.origin, "default": self.default,
            "steps": self.card.get("steps"), "intended_use": intended_use(self),
            "validation": self.card.get("validation", {}), "sha256": self.sha256,
            "heldout": self.card.get("heldout"),
            "created": self.card.get("created"), "path": str(self.directory),
        }


#: What a card without ``intended_use`` is taken to say. Every checkpoint bundled with the
#: package was trained on the phantom only; of other checkpoints nothing is known.
PHANTOM_INTENDED_USE = ("trained on synthetic phantom data only: not validated on real scans; "
                        "for research and method development, not for diagnosis")
UNKNOWN_INTENDED_USE = ("intended use not stated in its card: treat it as unvalidated, "
                        "for research only")


def intended_use(info: CheckpointInfo) -> str:
    """The card's ``intended_use`` (its training data and what it may be used for)."""
    stated = info.card.get("intended_use")
    if stated:
        return str(stated)
    return PHANTOM_INTENDED_USE if info.origin == "bundled" else UNKNOWN_INTENDED_USE


def home() -> Path:
    """``$MODALITY_SYNTH_HOME``, else the platform's user cache folder."""
    env = os.environ.get("MODALITY_SYNTH_HOME")
    return Path(env) if env else Path(platformdirs.user_cache_dir("napari-modality-synth"))


def user_models_dir() -> Path:
    return home() / "models"


def bundled_dir() -> Path:
    return Path(__file__).parent / "checkpoints"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_card(directory: Path) -> dict[str, Any] | None:
    try:
        card = json.loads((directory / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("format") == FORMAT else None


def _scan(root: Path, origin: str) -> list[CheckpointInfo]:
    if not root.is_dir():
        return []
    found = []
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        card = _read_card(directory)
        if card is not None and (directory / WEIGHTS).is_file():
            found.append(CheckpointInfo(directory.name, directory, card, origin))
    return found


def list_checkpoints(method: str | None = None, source: str | None = None,
                     target: str | None = None) -> list[CheckpointInfo]:
    """Checkpoints, filtered by what is given: the defaults first, then the other bundled
    ones, then the user's other ones (newest first).

    The default for a method and direction is the user checkpoint made default with
    ``set_default`` (``modality-synth models --default NAME``), else the bundled one: a
    user checkpoint is never the default merely because it is newer.
    """
    chosen = set(user_defaults())
    user = _scan(user_models_dir(), "user")
    bundled = _scan(bundled_dir(), "bundled")
    mine = [c for c in user if c.name in chosen]
    for info in mine:
        info.default = True
    for info in bundled:
        info.default = not any(_same_task(info, own) for own in mine)
    others = sorted((c for c in user if c.name not in chosen),
                    key=lambda c: str(c.card.get("created", "")), reverse=True)
    rows = sorted(mine + bundled, key=lambda c: not c.default) + others
    return [c for c in rows if (method is None or c.method == method) and _fits(c, source, target)]


def _directions(info: CheckpointInfo) -> set[tuple[str, str]]:
    if info.card.get("any_to_any"):
        mods = list(info.card.get("modalities", []))
        return {(a, b) for a in mods for b in mods if a != b}
    sources = model_sources(info)
    pairs = {(s, info.target) for s in sources}
    if info.card.get("capabilities", {}).get("bidirectional"):
        pairs |= {(info.target, s) for s in sources}
    return pairs


def model_sources(info: CheckpointInfo) -> list[str]:
    """The source modalities a checkpoint takes: several for a labelled model trained on
    more than one (its card's ``capabilities.sources``), else its ``source``."""
    return list((info.card.get("capabilities") or {}).get("sources") or [info.source])


def _same_task(a: CheckpointInfo, b: CheckpointInfo) -> bool:
    """Same method and some direction in common: only one of them can be the default."""
    return a.method == b.method and bool(_directions(a) & _directions(b))


def _defaults_file() -> Path:
    return home() / DEFAULTS


def user_defaults() -> list[str]:
    """Names of the user checkpoints the user made default (stored in the user home)."""
    try:
        record = json.loads(_defaults_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = record.get("defaults", []) if isinstance(record, dict) else []
    return [str(n) for n in names if isinstance(n, str)]


def set_default(name: str) -> CheckpointInfo:
    """Make checkpoint ``name`` the default for its method and directions.

    A user checkpoint replaces any earlier default of the same task; naming a bundled one
    goes back to it (the user's default for that task is dropped). Returns the checkpoint.
    """
    everything = list_checkpoints()
    info = next((c for c in everything if c.name == name), None)
    if info is None:
        raise UserError(f"no checkpoint named {name!r}; list them with `modality-synth models`")
    by_name = {c.name: c for c in everything}
    kept = [n for n in user_defaults()
            if n != name and n in by_name and not _same_task(by_name[n], info)]
    if info.origin == "user":
        kept.append(name)
    from synth_core.io import atomic_write_json

    home().mkdir(parents=True, exist_ok=True)
    atomic_write_json(_defaults_file(), {"defaults": kept}, overwrite=True)
    info.default = True
    return info


def _fits(info: CheckpointInfo, source: str | None, target: str | None) -> bool:
    """Does the checkpoint map ``source`` to ``target`` (None: any), in either direction it runs?"""
    if info.card.get("any_to_any"):
        mods = info.card.get("modalities", [])
        return (source is None or source in mods) and (target is None or target in mods)
    directions = _directions(info)
    return any((source is None or source == s) and (target is None or target == t)
               for s, t in directions)


def refuse_pickle(path: Path) -> None:
    """Raise before reading a file that would be unpickled (by its suffix or its first bytes)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if path.suffix.lower() in PICKLE_SUFFIXES or head[:2] == b"PK" or head[:1] == b"\x80":
        raise UserError(
            f"{path} is a pickled PyTorch file, which can run code when loaded; only "
            "model.safetensors with its model.json card is accepted: export weights with "
            "`modality-synth train` (it writes model.safetensors)"
        )


def _check_safetensors(path: Path) -> None:
    """A cheap structural check of a safetensors file before loading it."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise UserError(f"{path} is truncated (not a safetensors file); re-export or re-download it")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len <= 1 or 8 + header_len > size:
            raise UserError(f"{path} is corrupt (bad safetensors header); re-export or re-download it")
        try:
            json.loads(handle.read(header_len))
        except ValueError:
            raise UserError(f"{path} is corrupt (bad safetensors header); re-export or re-download it") from None


def spacing_distance(card: dict[str, Any], spacing: tuple[float, ...] | None) -> float:
    """How far a model's voxel size is from an input's: sum over axes of |log ratio|.

    Both are sorted first, so an input's axis order (any orientation) does not matter;
    a card without a spacing, or no input spacing, is infinitely far (ranked last).
    """
    import math

    theirs = card.get("spacing")
    if not theirs or not spacing:
        return math.inf
    return sum(abs(math.log(float(a) / float(b)))
               for a, b in zip(sorted(theirs), sorted(spacing), strict=False))


def resolve(name_or_path: str | os.PathLike | None, *, method: str, source: str | None = None,
            target: str | None = None,
            spacing: tuple[float, ...] | None = None) -> CheckpointInfo:
    """The checkpoint to use: a given folder, weights file or name, else the best fit.

    Without a name, among the checkpoints that fit the method and modalities, the one whose
    voxel size is nearest the input's ``spacing`` (mm; ``spacing_distance``) wins, so a
    1 mm scan runs on a 1 mm model when there is one; ties keep ``list_checkpoints``'
    order. Raises UserError when nothing fits or the given one does not fit the method or
    modalities.
    """
    if name_or_path is None:
        fits = list_checkpoints(method, source, target)
        want = f"{source or '?'} -> {target or '?'}"
        among = [c for c in list_checkpoints(method) if c.any_to_any]
        if not fits and among:
            mods = sorted({m for c in among for m in c.modalities})
            wrong = [m for m in (source, target) if m is not None and m not in mods]
            raise (ModalityMismatch if source in wrong else UserError)(
                f"the {method} checkpoints translate among {', '.join(mods)}, not "
                f"{' or '.join(repr(m) for m in wrong) or want}; pick modalities among them, "
                f"or train one with `modality-synth train --method {method} --modalities ...`")
        if not fits:
            error = ModalityMismatch if source is not None else UserError
            raise error(
                f"no checkpoint for method {method!r} ({want}); train one with `modality-synth "
                f"train --method {method} ...` or pass --checkpoint PATH (see `modality-synth models`)"
            )
        if not fits[0].default:
            own = fits[0].name
            raise UserError(
                f"no default checkpoint for method {method!r} ({want}), only your own {own!r}; "
                f"pass --checkpoint {own}, or make it the default with "
                f"`modality-synth models --default {own}`"
            )
        # Several defaults fit (bundled checkpoints at several voxel sizes): the one nearest
        # the input's spacing. A user's own default has already displaced the bundled ones.
        defaults = [c for c in fits if c.default]
        info = (min(defaults, key=lambda c: spacing_distance(c.card, spacing)) if spacing
                else defaults[0])
    else:
        info = locate(name_or_path)
    validate(info, method=method, source=source, target=target)
    return info


def locate(name_or_path: str | os.PathLike) -> CheckpointInfo:
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix != ".safetensors":
                refuse_pickle(path)
                raise UserError(f"{path} is not a safetensors checkpoint; pass its folder or model.safetensors")
            directory = path.parent
        else:
            directory = path
        card = _read_card(directory)
        if card is None:
            raise UserError(
                f"{directory} has no valid {CARD} model card; pass a folder written by "
                "`modality-synth train` (model.safetensors + model.json)"
            )
        if not (directory / WEIGHTS).is_file():
            raise UserError(f"{directory} has no {WEIGHTS}; pass a folder written by `modality-synth train`")
        return CheckpointInfo(directory.name, directory, card, "path")
    for info in list_checkpoints():
        if info.name == str(name_or_path):
            return info
    raise UserError(
        f"no checkpoint named or found at {str(name_or_path)!r}; list them with `modality-synth models`"
    )


def validate(info: CheckpointInfo, *, method: str, source: str | None = None,
             target: str | None = None) -> None:
    """Check the card against the method, the modalities and the package version."""
    if info.method != method:
        raise UserError(
            f"checkpoint {info.name!r} was trained for method {info.method!r}, not {method!r}; "
            f"use --method {info.method} or another --checkpoint"
        )
    if info.any_to_any:
        mods = ", ".join(info.modalities)
        if not _fits(info, None, target):
            raise UserError(f"checkpoint {info.name!r} translates among {mods}, not to "
                            f"{target!r}; pick a target among them or another checkpoint")
        if not _fits(info, source, None):
            raise ModalityMismatch(f"checkpoint {info.name!r} takes {mods} input, not "
                                   f"{source!r}; pick a checkpoint for {source!r} input "
                                   "(see `modality-synth models`)")
    elif not _fits(info, None, target):
        raise UserError(
            f"checkpoint {info.name!r} translates {info.source} -> {info.target}, not to {target!r}; "
            f"pick a checkpoint for {target!r} (see `modality-synth models`)"
        )
    elif not _fits(info, source, target):
        raise ModalityMismatch(
            f"checkpoint {info.name!r} expects {info.source} input, not {source!r}; "
            f"pick a checkpoint for {source!r} input (see `modality-synth models`)"
        )
    made_by = str(info.card.get("package_version", "0"))
    if int(made_by.split(".")[0]) > int(__version__.split(".")[0]):
        raise UserError(
            f"checkpoint {info.name!r} was made by napari-modality-synth {made_by}, newer than this "
            f"{__version__}; upgrade the package"
        )


def load_method(info: CheckpointInfo, device: torch.device | str = "cpu") -> Method:
    """Build the method from its card and load the weights (sha256 verified)."""
    from safetensors.torch import load_file

    from synth_core.methods import config_from_dict, get_method_class

    weights = info.weights
    _check_safetensors(weights)
    digest = sha256_file(weights)
    if info.sha256 and digest != info.sha256:
        raise UserError(
            f"{weights} does not match the sha256 in its card (file changed or corrupt); "
            "re-export or re-download the checkpoint"
        )
    cls = get_method_class(info.method)
    config = config_from_dict(info.method, info.card.get("config", {}))
    method = cls(config, info.source, info.target)
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise UserError(f"{weights} could not be read ({exc}); re-export or re-download it") from None
    missing, unexpected = method.load_state_dict(state, strict=False)
    needed = tuple(f"{name}." for name in method.inference_modules())
    missing = [k for k in missing if k.startswith(needed)]
    if missing or unexpected:
        raise UserError(
            f"{weights} does not fit method {info.method!r} with its card's configuration "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors); re-export it"
        )
    return method.to(device).eval()


def save_model(method: Method, directory: Path, card: dict[str, Any]) -> CheckpointInfo:
    """Write the inference weights and the card (atomically, weights first)."""
    from safetensors.torch import save_file

    from synth_core.io import atomic_write, atomic_write_json

    directory.mkdir(parents=True, exist_ok=True)
    prefixes = tuple(f"{name}." for name in method.inference_modules())
    state = {k: v.detach().cpu().contiguous() for k, v in method.state_dict().items()
             if k.startswith(prefixes)}
    with atomic_write(directory / WEIGHTS, overwrite=True) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "method": method.key})
    card = dict(card, format=FORMAT, sha256=sha256_file(directory / WEIGHTS),
                package_version=__version__, weights=WEIGHTS)
    atomic_write_json(directory / CARD, card, overwrite=True)
    return CheckpointInfo(directory.name, directory, card, "path")


def register_user_checkpoint(directory: Path, name: str) -> CheckpointInfo:
    """Copy a run's exported model into the user zoo so Translate lists it at once."""
    target = user_models_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    shutil.copy2(directory / WEIGHTS, staging / WEIGHTS)
    shutil.copy2(directory / CARD, staging / CARD)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    card = _read_card(target) or {}
    return CheckpointInfo(name, target, card, "user")


def export_copy(source: Path, destination: Path, *, dtype: str = "float16",
                note: str = "") -> CheckpointInfo:
    """Copy a checkpoint with its floating-point weights stored as ``dtype``.

    Used to bundle checkpoints inside the package at half the size; loading casts the
    weights back to the model's float32. The card records the storage type and the
    sha256 of the original weights, and gets the new file's sha256.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from synth_core.io import atomic_write, atomic_write_json

    card = _read_card(source)
    if card is None:
        raise UserError(f"{source} has no valid {CARD}; pass a run folder written by `modality-synth train`")
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    state = load_file(str(source / WEIGHTS))
    state = {k: (v.to(torch_dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    destination.mkdir(parents=True, exist_ok=True)
    with atomic_write(destination / WEIGHTS, overwrite=True) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "method": str(card.get("method"))})
    card = dict(card, storage_dtype=dtype, original_sha256=card.get("sha256"),
                sha256=sha256_file(destination / WEIGHTS), bundle_note=note)
    atomic_write_json(destination / CARD, card, overwrite=True)
    return CheckpointInfo(destination.name, destination, card, "path")
