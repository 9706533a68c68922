"""``train()``: one run folder from data to exported weights, on Lightning.

A run folder holds ``config.json`` (everything resolved), ``metrics.csv``
(Lightning's CSV logger), ``last.ckpt`` (Lightning's checkpoint, for resume only)
and the best weights exported as ``model.safetensors`` plus the ``model.json`` card.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

from synth_core import preprocess, zoo
from synth_core.data import (
    LabelledDataset,
    MultiContrastDataset,
    MultiContrastValidation,
    TranslationDataset,
    ValidationVolumes,
    VolumeStore,
    discover_subjects,
    split_subjects,
    target_norm_reference,
)
from synth_core.data.multicontrast import check_modality_set
from synth_core.errors import UserError
from synth_core.input_check import make_reference
from synth_core.io import atomic_write_json, check_writable_folder, load_volume
from synth_core.methods import (
    apply_overrides,
    build_config,
    check_modalities,
    check_patch_size,
    config_from_dict,
    get_method_class,
)
from synth_core.preprocess import reorient_to_ras, resample
from synth_core.training.callbacks import ExportBestCallback, ProgressCallback, StopCallback
from synth_core.training.card import training_data_summary
from synth_core.training.checkpoint_io import SafeCheckpointIO
from synth_core.training.events import EventSink, ProgressEvent, StopRequest
from synth_core.training.finetune import (
    flatten_config,
    load_parent_weights,
    parent_checkpoint,
    parent_config,
    parent_record,
    parent_spacing,
)
from synth_core.training.module import SynthesisModule
from synth_core.volume import ALL_MODALITIES

LAST = "last.ckpt"
CONFIG = "config.json"
# Lightning's notices that are expected here and only add noise: our run folder holds
# config.json before the logger starts; ModelCheckpoint's advice for manual optimisation;
# a mid-epoch resume restarts the epoch's draws, which is harmless because every draw is
# a function of (seed, epoch, index) and training sees the same distribution.
_EXPECTED_WARNINGS = (
    ".*Experiment logs directory.*", ".*Checkpoint directory.*exists and is not empty.*",
    ".*ModelCheckpoint with manual optimization.*", ".*treespec.*", ".*does not have many workers.*",
    ".*number of training batches.*", ".*limit_val_batches.*", ".*dataloader is not resumable.*",
    ".*`training_step` returned `None`.*",  # the divergence guard skipping a step
)


@dataclass
class TrainRequest:
    """Everything ``modality-synth train`` and the Train widget can ask for."""

    method: str
    data: Path
    source: str
    target: str
    out: Path
    preset: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    mode: str | None = None
    paired_fraction: float = 1.0
    spacing: float | None = None
    split_seed: int = 0
    register: bool = True
    name: str | None = None
    precision: str | None = None
    record_shards: bool = False
    init_from: str | None = None  # fine-tune: a checkpoint name, folder or model.safetensors
    #: An any-to-any method's modalities (``--modalities t1,t1ce,t2,flair``), in the order of
    #: its code; ``source`` and ``target`` are then the first two (the card says any_to_any).
    modalities: tuple[str, ...] = ()


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    stopped: bool
    model: zoo.CheckpointInfo | None
    registered: zoo.CheckpointInfo | None


def _accelerator(name: str) -> str:
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
        return "gpu"
    return name


def _is_primary_process() -> bool:
    """False in the DDP processes Lightning or torchrun start besides rank zero.

    Those re-run the same command; only rank zero checks and writes the run folder.
    """
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _check_out(request: TrainRequest) -> dict[str, Any] | None:
    out = request.out
    if not _is_primary_process():
        return json.loads((out / CONFIG).read_text(encoding="utf-8")) if request.resume else None
    # Before any data is read: a run that cannot write its folder would fail at its first checkpoint.
    check_writable_folder(out, what="--out", may_create=True)
    if request.resume:
        if not (out / CONFIG).is_file() or not (out / LAST).is_file():
            raise UserError(
                f"cannot resume: {out} has no {CONFIG} and {LAST}; start it without --resume"
            )
        return json.loads((out / CONFIG).read_text(encoding="utf-8"))
    if out.exists() and any(out.iterdir()):
        raise UserError(
            f"run folder {out} exists and is not empty; pass --resume to continue it or choose a new --out"
        )
    return None


#: The settings a resumed run may change: how long it runs, how often it validates and
#: saves, and the step size (to get past a divergence); a method adds its own
#: (``Method.resumable``, e.g. loss weights). Everything else shapes the model, so changing
#: it would make a different model under the old run's name.
RESUMABLE = ("max_steps", "lr", "grad_clip", "val_every", "checkpoint_every")


def _resumed_config(request: TrainRequest, saved: dict[str, Any],
                    own: tuple[str, ...]) -> tuple[Any, dict[str, list]]:
    """The run's own config with the resumable settings the request gives; the changes
    as {setting: [before, after]}. UserError for any other setting given a new value
    (settings repeated with the run's own values are accepted, so the same form or
    command line can resume what it started). ``own``: the method's ``resumable``."""
    config = config_from_dict(request.method, saved["config"])
    before = flatten_config(dataclasses.asdict(config))
    apply_overrides(request.method, config, request.overrides)
    after = flatten_config(dataclasses.asdict(config))
    changed = {k: [before[k], after[k]] for k in after if after[k] != before.get(k)}
    refused = [k for k in changed if k not in {f"train.{name}" for name in RESUMABLE} | set(own)]
    if refused:
        shown = ", ".join(f"{k} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in refused)
        raise UserError(
            f"cannot change {shown} when resuming {request.out}: the run was built with the "
            f"old value; resume without it, or start a new run (a new --out) to change it. "
            f"A resumed {request.method} run can change only {', '.join(RESUMABLE + own)}"
        )
    return config, changed


def train(request: TrainRequest, sink: EventSink | None = None,
          stop: StopRequest | None = None) -> RunResult:
    """Train (or resume) a run. Events go to ``sink``; ``stop`` ends it at the next step."""
    sink = sink or (lambda event: None)
    stop = stop or StopRequest()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    saved = _check_out(request)
    cls = get_method_class(request.method)
    any_to_any = _check_any_to_any(cls, request)
    check_modalities(cls, request.source, request.target)
    # A resumed run restores its weights from last.ckpt; its parent is in its config.json.
    parent = None
    if request.init_from is not None and saved is None:
        parent = parent_checkpoint(request.init_from, request.method, request.source, request.target)
    lineage = parent_record(parent) if parent is not None else (saved or {}).get("init_from")
    if saved is not None:
        for key, given in (("method", request.method), ("source", request.source),
                           ("target", request.target)):
            if saved.get(key) != given:
                raise UserError(
                    f"cannot resume {request.out}: it trains {saved.get('method')} "
                    f"{saved.get('source')} -> {saved.get('target')}, not {request.method} "
                    f"{request.source} -> {request.target}; repeat the run's own options"
                )
        config, changed = _resumed_config(request, saved, cls.resumable)
    elif parent is not None:
        config, changed = parent_config(parent, request.overrides, cls.resumable), {}
    else:
        config, changed = build_config(request.method, request.preset, request.overrides), {}
    if any_to_any and tuple(config.modalities) != request.modalities:
        if saved is not None or parent is not None:
            raise UserError(
                f"the model was built for modalities {','.join(config.modalities)}, not "
                f"{','.join(request.modalities)}; repeat its own --modalities or start a new run")
        config.modalities = request.modalities
    spacing_mm = request.spacing
    if parent is not None and spacing_mm is None:
        spacing_mm = parent_spacing(parent)  # the parent's filters were learnt at its voxel size
    elif saved is not None and spacing_mm is None:
        spacing_mm = saved.get("spacing")
    patch = check_patch_size(config.train)  # before any data is read
    if patch is not None and not cls.capabilities.sliding_window:
        raise UserError(f"method {request.method!r} runs on whole volumes only (it cannot run in "
                        "sliding windows, so it cannot train on patches); drop patch_size")
    mode = request.mode or cls.capabilities.data[0]
    if mode not in cls.capabilities.data:
        raise UserError(
            f"method {request.method!r} trains on {', '.join(cls.capabilities.data)} data, not {mode!r}"
        )
    seed = config.train.seed
    pl.seed_everything(seed, workers=True, verbose=False)

    records = discover_subjects(request.data)
    sources = request.source.split(",")  # several for labelled training (DUIIT's MIX)
    needed = request.modalities if any_to_any else (sources[0], request.target)
    usable = [r for r in records if all(m in r.paths for m in needed)]
    if mode == "paired" and len(usable) < 3:
        raise UserError(
            f"{request.data} has {len(usable)} subjects with all of {', '.join(needed)}; "
            f"paired training needs at least 3 (train, validation, test)"
        )
    split = split_subjects(usable if mode == "paired" else records, seed=request.split_seed)
    # CT's intensity window: a resumed run keeps its own (runs that recorded none used the
    # legacy one), a fine-tuned one its parent's, a new one today's.
    if saved is not None:
        ct_window = tuple(saved.get("ct_window") or preprocess.LEGACY_CT_WINDOW)
    elif parent is not None:
        ct_window = preprocess.card_ct_window(parent.card)
    else:
        ct_window = preprocess.CT_WINDOW
    store = VolumeStore(records, spacing=spacing_mm, multiple=config.train.multiple,
                        ct_window=ct_window)
    train_set: Any
    if any_to_any:
        train_set = MultiContrastDataset(
            store, split.train, request.modalities, spatial=config.train.spatial,
            patch_size=patch, seed=seed, include_self=getattr(config, "include_self", True))
        val_set: Any = MultiContrastValidation(store, [r for r in split.val if r in usable],
                                               request.modalities)
    elif mode == "labelled":
        # Source and target subjects are different people, each with its label; the label
        # scaling (age) or vocabulary (diagnosis) becomes part of the model's config.
        train_set = LabelledDataset(store, split.train, sources, request.target,
                                    task=getattr(config, "task", "age"),
                                    spatial=config.train.spatial, patch_size=patch, seed=seed)
        if saved is None and parent is None:
            cls.fit_labels(config, train_set.label_summary(), sources)
        val_set = ValidationVolumes(store, [r for r in split.val if r in usable],
                                    sources[0], request.target)
    else:
        train_set = TranslationDataset(
            store, split.train, request.source, request.target, mode=mode,
            paired_fraction=request.paired_fraction, spatial=config.train.spatial,
            paired_share=getattr(config, "paired_share", None),
            patch_size=patch, seed=seed,
        )
        val_set = ValidationVolumes(store, [r for r in split.val if r in usable],
                                    sources[0], request.target)
    train_loader = DataLoader(train_set, batch_size=config.train.batch_size, shuffle=False,
                              num_workers=0, drop_last=True)
    val_loader = DataLoader(val_set, batch_size=1, shuffle=False, num_workers=0)

    method = cls(config, request.source, request.target)
    if parent is not None:
        load_parent_weights(method, parent)  # before the module: its EMA copies these weights
    module = SynthesisModule(method)
    if "train.lr" in changed:  # applied once Lightning has restored the optimisers' state
        old, new = changed["train.lr"]
        module.lr_scale = new / old
    norm_ref = {"target_reference": target_norm_reference(
        store, [r.subject_id for r in split.train if request.target in r.paths], request.target)}
    if cls.capabilities.bidirectional:
        # --reverse brings a synthesis back to the source modality's units.
        norm_ref["source_reference"] = target_norm_reference(
            store, [r.subject_id for r in split.train if sources[0] in r.paths], sources[0])
        if len(sources) > 1:
            norm_ref["source_references"] = {s: target_norm_reference(
                store, [r.subject_id for r in split.train if s in r.paths], s) for s in sources}
    if any_to_any:
        # A synthesis takes the typical intensity map of its target modality's training scans.
        norm_ref["references"] = {m: target_norm_reference(
            store, [r.subject_id for r in split.train if m in r.paths], m)
            for m in request.modalities}
    run = request.out
    run.mkdir(parents=True, exist_ok=True)
    spacing = _model_spacing(spacing_mm, sources[0], split.train)
    card_base = {
        "method": request.method,
        "title": cls.title,
        "paper": cls.paper,
        "preset": saved["preset"] if saved else (parent.card.get("preset") if parent else request.preset),
        "source": sources[0],  # the first; a labelled model may take several (capabilities.sources)
        "target": request.target,
        "config": dataclasses.asdict(config),
        "capabilities": cls.capabilities.to_dict() | method.card_capabilities(),
        "spacing": list(spacing) if spacing else None,
        # Patch (voxels at ``spacing``) the model trained on; a 3D one validates and
        # translates in windows of it. None: whole volumes (or whole slices in 2D).
        "patch_size": list(patch) if patch else None,
        "multiple": config.train.multiple,
        "normalisation": {"source": "per-volume, synth_core.preprocess.fit_normalisation",
                          "ct_window": list(ct_window)} | norm_ref,
        "training_data": training_data_summary(request.data, records, split, mode=mode,
                                               split_seed=request.split_seed)
        | {"description": _data_description(request.data)},
        "intended_use": _intended_use(request.data),
        "input_reference": _input_references(
            list(split.train), list(request.modalities) if any_to_any else
            [*sources, request.target] if cls.capabilities.bidirectional else sources, spacing),
        "age_range": _age_range(split.train),
        "seed": seed,
    }
    if any_to_any:
        # The zoo, translate and `models` read these: one checkpoint, every direction.
        card_base |= {"any_to_any": True, "modalities": list(request.modalities)}
    if lineage is not None:
        card_base["parent"] = lineage
    for stale in run.glob(f".{LAST}.*.tmp"):
        stale.unlink(missing_ok=True)  # left by a run killed mid-write; last.ckpt is intact
    if saved is None and _is_primary_process():
        atomic_write_json(run / CONFIG, {
            "method": request.method, "preset": request.preset, "source": request.source,
            "target": request.target, "data": str(request.data), "mode": mode,
            "modalities": list(request.modalities),
            "paired_fraction": request.paired_fraction, "spacing": spacing_mm,
            "init_from": lineage, "ct_window": list(ct_window),
            "split_seed": request.split_seed, "config": dataclasses.asdict(config),
            "created": _now(),
        })
    elif changed and _is_primary_process():
        # The run's record: its config as it now trains, and what each resume changed.
        atomic_write_json(run / CONFIG, saved | {
            "config": dataclasses.asdict(config),
            "resumed_with": saved.get("resumed_with", []) + [{"at": _now(), "changed": changed}],
        }, overwrite=True)

    def export(mod: SynthesisModule, metrics: dict[str, float]) -> None:
        zoo.save_model(mod.inference_copy(), run, card_base | {
            "validation": metrics, "created": _now(), "steps": mod.batches_done})

    n_opt = cls.optimizer_steps_per_batch(config)  # manual optimisation counts every step
    stopped = {"flag": False}
    progress = ProgressCallback(sink, config.train.max_steps)
    callbacks: list[pl.Callback] = [
        progress,
        StopCallback(stop, run / LAST, on_stopped=lambda: stopped.update(flag=True)),
        ExportBestCallback(export, keep=cls.export_weights),
        ModelCheckpoint(dirpath=run, filename="last", save_top_k=1, monitor=None,
                        every_n_train_steps=config.train.checkpoint_every * n_opt,
                        enable_version_counter=False, save_on_train_epoch_end=False),
    ]
    accelerator = _accelerator(request.accelerator)
    distributed = request.devices > 1 or request.num_nodes > 1
    trainer = pl.Trainer(
        default_root_dir=run,
        accelerator=accelerator,
        devices=request.devices,
        num_nodes=request.num_nodes,
        # Alternating optimisers leave some parameters out of each backward pass.
        strategy=DDPStrategy(find_unused_parameters=cls.capabilities.adversarial)
        if distributed else "auto",
        max_steps=config.train.max_steps * n_opt,
        max_epochs=-1,
        val_check_interval=config.train.val_every if len(val_set) else None,
        check_val_every_n_epoch=None if len(val_set) else 1,
        limit_val_batches=1.0 if len(val_set) else 0,
        num_sanity_val_steps=0,
        logger=CSVLogger(save_dir=str(run), name="", version=""),
        callbacks=callbacks,
        plugins=[SafeCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic=accelerator == "cpu",
        gradient_clip_val=(config.train.grad_clip or None) if not cls.capabilities.adversarial else None,
        precision=request.precision or ("16-mixed" if accelerator == "gpu" else "32-true"),
    )
    ckpt = str(run / LAST) if request.resume else None
    with warnings.catch_warnings():
        for text in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=text)
        trainer.fit(module, train_loader, val_loader if len(val_set) else None, ckpt_path=ckpt,
                    weights_only=True)
    finished = not stopped["flag"] and not trainer.interrupted
    if finished:
        # The periodic checkpoint may be up to checkpoint_every steps old: save the end
        # state, so that extending a finished run with --resume --max-steps repeats nothing.
        trainer.save_checkpoint(run / LAST)
    if request.record_shards:
        _record_shards(run, trainer, module)
    model_info = None
    registered = None
    if trainer.is_global_zero:
        if not (run / zoo.WEIGHTS).is_file() or (cls.export_weights == "last" and finished):
            export(module, dict(progress.metrics))
        model_info = zoo.CheckpointInfo(run.name, run, json.loads((run / zoo.CARD).read_text(encoding="utf-8")), "path")
        if request.register and not stopped["flag"]:
            # Several sources (labelled training) join with "+": duiit-t1+pet-ct-run.
            pair = ("any" if any_to_any
                    else f"{request.source.replace(',', '+')}-{request.target}")
            name = request.name or f"{request.method}-{pair}-{run.name}"
            registered = zoo.register_user_checkpoint(run, name)
        sink(ProgressEvent(kind="stopped" if stopped["flag"] else "done", step=module.batches_done,
                           max_steps=config.train.max_steps, metrics=dict(progress.metrics),
                           message=str(run)))
    return RunResult(run, module.batches_done, stopped["flag"], model_info, registered)


def export_last(run: Path, out: Path) -> zoo.CheckpointInfo:
    """Export a run's latest training state (``last.ckpt``) as a checkpoint folder ``out``.

    A run exports the weights with the best validation score, but a study may need the
    weights of a given step (e.g. DUAL-GLOW's age response, which validation does not
    score). The card is the run's, with the step count of ``last.ckpt`` and without the
    best step's validation scores; EMA weights are exported where the method keeps them,
    as training does. ``last.ckpt`` is read with ``weights_only=True``.
    """
    if out.exists():
        raise UserError(f"{out} exists; choose a new folder for the export")
    card = json.loads((run / zoo.CARD).read_text(encoding="utf-8")) if (run / zoo.CARD).is_file() else None
    if card is None or not (run / LAST).is_file():
        raise UserError(f"{run} has no {zoo.CARD} and {LAST}; pass a run folder written by "
                        "`modality-synth train` after its first validation")
    ckpt = torch.load(run / LAST, map_location="cpu", weights_only=True)
    method = get_method_class(card["method"])(
        config_from_dict(card["method"], card["config"]), card["source"], card["target"])
    module = SynthesisModule(method)
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    card.pop("validation", None)
    return zoo.save_model(module.inference_copy(), out, card | {"steps": module.batches_done})


def _check_any_to_any(cls: type, request: TrainRequest) -> bool:
    """Whether the run trains an any-to-any model; UserError when the method and the
    modalities asked for do not go together. Sets ``source``/``target`` to the first two."""
    if cls.capabilities.any_to_any:
        if not request.modalities:
            raise UserError(f"method {request.method!r} learns every direction among several "
                            "modalities with one model: give --modalities, e.g. "
                            "--modalities t1,t1ce,t2,flair (instead of --from/--to)")
        mods = check_modality_set([m.strip() for m in request.modalities])
        for mod in mods:
            if mod not in ALL_MODALITIES:
                raise UserError(f"unknown modality {mod!r} in --modalities; choose from: "
                                f"{', '.join(ALL_MODALITIES)}")
        request.modalities = mods
        request.source, request.target = mods[0], mods[1]
        return True
    if request.modalities:
        raise UserError(f"method {request.method!r} learns one direction: give --from and --to, "
                        "not --modalities (only any-to-any methods such as unified take it)")
    return False


def _model_spacing(spacing: float | None, source: str, records: list[Any]) -> tuple[float, ...] | None:
    """The voxel size the model is trained at, which translate resamples inputs to (mm)."""
    if spacing:
        return (float(spacing),) * 3
    for record in records:
        if source in record.paths:
            return tuple(round(s, 4) for s in load_volume(record.paths[source]).spacing)
    return None


#: Training subjects an input reference is made from (enough for a stable spread).
INPUT_REFERENCE_SUBJECTS = 32


def _input_references(records: list[Any], modalities: list[str],
                      spacing: tuple[float, ...] | None) -> dict[str, Any]:
    """The shared input check's reference (``input_check.make_reference``) for each
    modality a model takes as input, from up to 32 training subjects read as ``translate``
    reads an input (RAS, the model's voxel size); {} when too few subjects have it."""
    out: dict[str, Any] = {}
    for modality in modalities:
        paths = [r.paths[modality] for r in records if modality in r.paths][:INPUT_REFERENCE_SUBJECTS]
        if len(paths) < 2:
            continue
        volumes = []
        for path in paths:
            ras = reorient_to_ras(load_volume(path, modality=modality))[0]
            if spacing and not np.allclose(ras.spacing, spacing, rtol=1e-3):
                ras = resample(ras, tuple(spacing), order=1)
            volumes.append(ras.data)
        out[modality] = make_reference(volumes, modality)
    return out


def _data_description(data: Path) -> str:
    """What the training data was, for the card: the phantom says so in its cohort.json."""
    record = data / "cohort.json" if data.is_dir() else None
    try:
        cohort = json.loads(record.read_text(encoding="utf-8")) if record is not None else {}
    except (OSError, ValueError):
        cohort = {}
    if isinstance(cohort, dict) and cohort.get("Synthetic") is True:
        return (f"synthetic phantom cohort (napari-modality-synth phantom, preset "
                f"{cohort.get('preset')}, seed {cohort.get('seed')}): not acquired data")
    return "user data (not described further by the package)"


def _intended_use(data: Path) -> str:
    if _data_description(data).startswith("synthetic phantom"):
        return zoo.PHANTOM_INTENDED_USE
    return ("trained on the user's own data: research use only, not for diagnosis; "
            "validate it on held-out scans before relying on it")


def _age_range(records: list[Any]) -> list[float] | None:
    ages = [r.age for r in records if r.age is not None]
    return [float(min(ages)), float(max(ages))] if ages else None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _record_shards(run: Path, trainer: pl.Trainer, module: SynthesisModule) -> None:
    """For the DDP test: which samples this rank saw and a hash of its final weights."""
    digest = hashlib.sha256()
    for key, value in sorted(module.method.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    atomic_write_json(run / "shards" / f"rank{trainer.global_rank}.json",
                      {"rank": trainer.global_rank, "world_size": trainer.world_size,
                       "sampler": type(trainer.train_dataloader.sampler).__name__ if trainer.train_dataloader else None,
                       "indices": module.seen_indices,
                       "weights_sha256": digest.hexdigest(), "pid": os.getpid()}, overwrite=True)
