"""The ``modality-synth`` command.

Every user mistake ends with exit status 2 and one line on stderr naming the problem
and the fix; a traceback only with ``--debug``. Nothing is written on failure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from synth_core._version import __version__
from synth_core.cli_augment import add_parser as add_augment_parser
from synth_core.cli_augment import augment_command
from synth_core.cli_cohort import (
    evaluate_cohort_command,
    multi_output,
    register_command,
    translate_cohort_command,
)
from synth_core.errors import ModalityMismatch, UserError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every user mistake
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="modality-synth",
                description="Synthesize a missing imaging modality from one you have.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ph = sub.add_parser("phantom", help="write a phantom cohort with known ground truth")
    ph.add_argument("out_dir", type=Path)
    ph.add_argument("--subjects", type=int, default=12)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--preset", choices=["small", "full", "fine"], default="small",
                    help="grid: small 4 mm, full 2 mm, fine 1 mm (192 x 224 x 192)")
    ph.add_argument("--clean", action="store_true", help="also write the noise-free twin of each modality")
    ph.add_argument("--lesion-fraction", type=float, default=0.0, help="fraction of subjects with a tumour")
    ph.add_argument("--wmh-fraction", type=float, default=0.0,
                    help="fraction of subjects with white-matter hyperintensities")
    ph.add_argument("--ages", default=None, metavar="A,B,...",
                    help="also write each subject's PET at these ages (years, 55-95) under "
                         "sub-XXX/age-A/: same scan, only the age-driven uptake moved")
    ph.add_argument("--overwrite", action="store_true")

    tr = sub.add_parser("translate", help="synthesize a modality from a scan")
    tr.add_argument("input", type=Path)
    tr.add_argument("-o", "--output", type=Path, required=True)
    tr.add_argument("--method", required=True)
    tr.add_argument("--to", required=True, dest="to")
    tr.add_argument("--from", dest="source", default=None)
    tr.add_argument("--checkpoint", default=None, help="name (see `models`), folder or model.safetensors")
    tr.add_argument("--age", type=float, default=None, help="years, for age-conditioned methods")
    tr.add_argument("--steps", type=int, default=None, help="ODE steps, for flow methods")
    tr.add_argument("--samples", type=int, default=1)
    tr.add_argument("--temperature", type=float, default=None)
    tr.add_argument("--reverse", action="store_true", help="run a bidirectional model backwards")
    tr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--memory-budget-mb", type=float, default=2048)
    tr.add_argument("--overwrite", action="store_true")
    tr.add_argument("--resume", action="store_true",
                    help="cohort: skip outputs whose sidecar matches this checkpoint and options")
    tr.add_argument("--devices", type=int, default=1,
                    help="cohort: processes (CPU) or GPUs to translate on (Lightning DDP)")
    tr.add_argument("--num-workers", type=int, default=0,
                    help="cohort: processes reading the next subjects ahead")
    tr.add_argument("--no-input-check", action="store_true",
                    help="skip the check that the input looks like the source modality "
                         "(recorded in the sidecar)")

    add_augment_parser(sub)

    ev = sub.add_parser("evaluate", help="MAE, PSNR, SSIM and correlation of a prediction "
                        "(two files, or a translated cohort folder and its targets)")
    ev.add_argument("pred", type=Path)
    ev.add_argument("target", type=Path)
    ev.add_argument("--mask", type=Path, default=None)
    ev.add_argument("--data-range", type=float, default=None,
                    help="PSNR/SSIM data range without --normalise (default: the target's range "
                         "inside the mask)")
    ev.add_argument("--normalise", action="store_true",
                    help="score in the project's scoring normalisation, by the target's modality: "
                         "MR 1st-99th percentile -> [0, 1], PET / its 95th percentile (range 1), "
                         "CT in HU over [-1024, 3000]; mask default: the target's foreground")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--mask-name", default=None,
                    help="folders: each target subject's mask file key (default: brainmask for "
                         "MR and PET, labels for CT, when present)")
    ev.add_argument("--tsv", type=Path, default=None,
                    help="folders: per-subject scores (default: PRED/evaluation.tsv)")
    ev.add_argument("--overwrite", action="store_true", help="folders: replace an existing --tsv")

    t = sub.add_parser("train", help="train a method on paired or unpaired data")
    t.add_argument("--method", required=True)
    t.add_argument("--data", type=Path, required=True, help="phantom-style folder or manifest TSV")
    t.add_argument("--from", dest="source", default=None,
                   help="source modality (several, comma-separated, for labelled training)")
    t.add_argument("--to", dest="target", default=None)
    t.add_argument("--modalities", default=None, metavar="M1,M2,...",
                   help="any-to-any methods (unified): every modality the one model maps "
                        "among, e.g. t1,t1ce,t2,flair (instead of --from/--to)")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--preset", default="cpu")
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--val-every", type=int, default=None)
    t.add_argument("--checkpoint-every", type=int, default=None)
    t.add_argument("--mode", choices=["paired", "unpaired", "partial", "labelled"], default=None)
    t.add_argument("--paired-fraction", type=float, default=1.0)
    t.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="any setting of the method's config, e.g. distance=lpips, "
                        "lpips_weights=vgg16.safetensors, net.features=32 (repeatable)")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--devices", type=int, default=1)
    t.add_argument("--num-nodes", type=int, default=1)
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--name", default=None, help="name of the registered checkpoint")
    t.add_argument("--init-from", default=None, metavar="NAME|PATH",
                   help="fine-tune: start from this checkpoint's weights and architecture")
    t.add_argument("--split-seed", type=int, default=0,
                   help="seed of the train / validation / test split by subject (default 0)")
    t.add_argument("--no-register", action="store_true", help="do not add the model to the user zoo")
    t.add_argument("--record-shards", action="store_true", help=argparse.SUPPRESS)

    rg = sub.add_parser("register", help="co-register MOVING onto FIXED's grid (rigid or affine)")
    rg.add_argument("moving", type=Path)
    rg.add_argument("fixed", type=Path)
    rg.add_argument("-o", "--output", type=Path, required=True)
    rg.add_argument("--transform", choices=["rigid", "affine"], default="rigid")
    rg.add_argument("--seed", type=int, default=0)
    rg.add_argument("--overwrite", action="store_true")

    m = sub.add_parser("models", help="list bundled and user checkpoints")
    m.add_argument("--json", action="store_true")
    m.add_argument("--default", metavar="NAME", default=None,
                   help="make checkpoint NAME the one translate uses for its method and "
                        "direction when --checkpoint is not given (a bundled NAME restores it)")

    b = sub.add_parser("benchmark", help="measure speed and memory, or validity; write a report")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--suite", choices=["speed", "validity"], default="speed",
                   help="speed and memory (default), or the validity measures on phantom subjects")
    b.add_argument("--seed", type=int, default=None,
                   help="validity: phantom cohort seed (default 11, held out from every bundled model)")
    b.add_argument("--cohort", type=Path, default=None,
                   help="validity: a phantom folder (made by `phantom`) whose subjects to use")
    b.add_argument("--checkpoint", action="append", default=None, metavar="NAME_OR_DIR",
                   help="validity: also judge this checkpoint (repeatable; bundled ones always)")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--only", default=None,
                   help="one benchmark by name: revgan-memory, or native (1 mm translation, sgemm ceiling, start-up)")

    sub.add_parser("methods", help="list the methods and their capabilities")
    return p


def _phantom(args: argparse.Namespace) -> int:
    from synth_core.io import check_writable_folder
    from synth_core.phantom import write_cohort

    if args.subjects < 1:
        raise UserError(f"--subjects must be at least 1, got {args.subjects}")
    for name in ("lesion_fraction", "wmh_fraction"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise UserError(f"--{name.replace('_', '-')} must be between 0 and 1, got {value}")
    ages: tuple[float, ...] = ()
    if args.ages is not None:
        try:
            ages = tuple(float(a) for a in args.ages.split(","))
        except ValueError:
            raise UserError(f"--ages {args.ages!r} is not a comma-separated list of years; "
                            "write e.g. --ages 60,90") from None
    check_writable_folder(args.out_dir, what="OUT_DIR", may_create=True)
    bar = _bar(args.subjects, "subjects")
    out = write_cohort(args.out_dir, args.subjects, seed=args.seed, preset=args.preset,
                       clean=args.clean, lesion_fraction=args.lesion_fraction,
                       wmh_fraction=args.wmh_fraction, overwrite=args.overwrite, pet_ages=ages,
                       progress=lambda i, n: bar(i + 1))
    bar(None)
    print(f"wrote {args.subjects} {args.preset} phantom subjects to {out}")
    return 0


def _translate(args: argparse.Namespace) -> int:
    from synth_core.inference import translate
    from synth_core.io import guess_modality, load_volume, save_volume, sidecar_path

    if multi_output(args):
        return translate_cohort_command(args)
    _check_output(args.input, args.output, args.overwrite)
    std_path = _std_path(args.output) if args.samples > 1 else None
    if std_path is not None:
        _check_output(args.input, std_path, args.overwrite)
    volume = load_volume(args.input, modality=args.source)
    # Without --from, a modality the file name states (BIDS-style "sub-01_t2.nii.gz") is the
    # source: a T2 must not run through a T1 model just because that model fits --to.
    guessed = guess_modality(args.input) if args.source is None else None
    bar = _bar(100, "translate")
    try:
        result = translate(volume, args.method, args.to, source=args.source or guessed,
                           checkpoint=args.checkpoint, age=args.age, steps=args.steps,
                           samples=args.samples, temperature=args.temperature, reverse=args.reverse,
                           device=args.device, memory_budget_mb=args.memory_budget_mb, seed=args.seed,
                           progress=lambda f, msg: bar(int(f * 100)),
                           source_from="from the file name" if guessed else None,
                           check_modality=not args.no_input_check)
    except ModalityMismatch as exc:
        # Only where the guessed modality could be the cause is it worth a word.
        if guessed is None:
            raise
        raise ModalityMismatch(f"{exc} (the input was taken as {guessed} from its file name; pass "
                               "--from to say otherwise)") from None
    bar(None)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    save_volume(result.volume, args.output, overwrite=args.overwrite, provenance=result.provenance)
    print(f"wrote {args.output} (sidecar {sidecar_path(args.output)})")
    for line in result.summary():
        print(f"  {line}")
    print(f"  {_resolution_line(result.provenance)}")
    if result.std is not None and std_path is not None:
        save_volume(result.std, std_path, overwrite=args.overwrite,
                    provenance=result.std.metadata["provenance"])
        print(f"wrote {std_path} (voxel-wise standard deviation over {args.samples} samples)")
    return 0


def _resolution_line(provenance: dict[str, Any]) -> str:
    """Which grid the network ran on and the input's (the warning itself goes to stderr)."""
    grids = provenance.get("Resolution") or {}
    model, given = grids.get("ModelGrid") or {}, grids.get("InputGrid") or {}

    def shown(grid: dict[str, Any]) -> str:
        mm = " x ".join(f"{v:g}" for v in grid.get("spacing_mm", []))
        return f"{mm} mm ({' x '.join(str(n) for n in grid.get('shape', []))} voxels)"

    note = ", coarser than the input" if grids.get("ModelCoarserThanInput") else ""
    return f"resolution: the network ran on {shown(model)}{note}; input {shown(given)}"


def _std_path(output: Path) -> Path:
    name = output.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return output.with_name(name[: -len(suffix)] + "_std" + suffix)
    return output.with_name(output.stem + "_std" + output.suffix)


def _check_output(input_path: Path, output: Path, overwrite: bool) -> None:
    """Refuse before any work: an output that is the input, exists without --overwrite, or
    lies in a folder that is missing, is a file, or cannot be written."""
    from synth_core.io import check_writable_folder

    if output.exists() and input_path.exists() and output.resolve() == input_path.resolve():
        raise UserError(f"output {output} is the input file; choose another -o")
    if output.exists() and not overwrite:
        raise UserError(f"output {output} exists; pass --overwrite or choose another -o")
    if not output.name.endswith((".nii", ".nii.gz")):
        raise UserError(f"output {output} must end in .nii.gz or .nii")
    # A read-only folder, or a "folder" that is a file, must fail here, not after the model ran.
    check_writable_folder(output.parent, what="-o")


def _evaluate(args: argparse.Namespace) -> int:
    from synth_core.io import load_volume
    from synth_core.metrics import evaluate

    if args.pred.is_dir() and (args.target.is_dir() or args.target.suffix.lower() == ".tsv"):
        return evaluate_cohort_command(args)
    pred = load_volume(args.pred)
    target = load_volume(args.target)
    mask = None
    if args.mask is not None:
        mask = load_volume(args.mask).data > 0
    scores = evaluate(pred, target, mask=mask, data_range=args.data_range,
                      normalise=args.normalise)
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        where = "inside the mask" if mask is not None else (
            "inside the target's foreground" if args.normalise else "over all voxels")
        print(f"scores {where}; units: {scores['units']}")
        suffix = {"psnr": " dB", "mae": " HU" if scores["normalisation"] == "ct-hu" else ""}
        for key in ("mae", "psnr", "ssim", "corrcoef"):
            print(f"{key:>9}  {scores[key]:.4f}{suffix.get(key, '')}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from synth_core.training import ProgressEvent, TrainRequest, train

    overrides: dict[str, Any] = {
        "max_steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr,
        "seed": args.seed, "val_every": args.val_every, "checkpoint_every": args.checkpoint_every,
    }
    overrides |= parse_settings(args.settings)
    modalities = tuple(m.strip() for m in (args.modalities or "").split(",") if m.strip())
    if args.modalities is not None and (args.source or args.target):
        raise UserError("give either --modalities (an any-to-any method) or --from and --to, "
                        "not both")
    if args.modalities is None and not (args.source and args.target):
        raise UserError("say what to learn: --from MOD --to MOD, or --modalities M1,M2,... for "
                        "an any-to-any method such as unified")
    request = TrainRequest(
        method=args.method, data=args.data, source=args.source or "", target=args.target or "",
        out=args.out, modalities=modalities,
        preset=args.preset, overrides=overrides, resume=args.resume, devices=args.devices,
        num_nodes=args.num_nodes, accelerator=args.device, mode=args.mode,
        paired_fraction=args.paired_fraction, register=not args.no_register, name=args.name,
        record_shards=args.record_shards, init_from=args.init_from, split_seed=args.split_seed,
    )
    if not args.data.exists():
        raise UserError(f"data {args.data} does not exist; pass a phantom-style folder or a manifest TSV")
    state: dict[str, Any] = {"bar": None}

    def sink(event: ProgressEvent) -> None:
        if event.kind == "start":
            state["bar"] = _bar(event.max_steps, "train", initial=event.step)
        elif event.kind == "step" and state["bar"] is not None:
            state["bar"](event.step, {k: round(v, 4) for k, v in list(event.losses.items())[:3]})
        elif event.kind == "validation":
            shown = ", ".join(f"{k}={v:.4f}" for k, v in event.metrics.items())
            print(f"step {event.step}: {shown}", file=sys.stderr)
        elif event.kind in ("done", "stopped"):
            if state["bar"] is not None:
                state["bar"](None)

    result = train(request, sink=sink)
    print(f"run folder: {result.run_dir} ({result.steps} steps)")
    if result.registered is not None:
        name = result.registered.name
        print(f"registered checkpoint {name!r}: translate uses it with --checkpoint {name}, or by "
              f"default after `modality-synth models --default {name}`")
    return 0


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that reads as JSON (numbers, true, lists) is taken as such."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r} is not KEY=VALUE; e.g. --set distance=lpips")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        out[key.strip()] = value
    return out


def _models(args: argparse.Namespace) -> int:
    from synth_core.cli_models import models_command

    return models_command(args)


def _methods(args: argparse.Namespace) -> int:
    from synth_core import list_methods

    print(json.dumps(list_methods(), indent=2))
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    if args.suite == "validity":
        from synth_core.validity_suite import run_validity

        if args.only is not None:
            raise UserError("--only picks a speed benchmark; drop it with --suite validity")
        report = run_validity(args.out, seed=args.seed, quick=args.quick, cohort=args.cohort,
                              checkpoints=args.checkpoint,
                              progress=lambda line: print(line, file=sys.stderr))
        print(f"wrote {args.out / 'validity.json'} and validity.md ({report['seconds']:.0f} s)")
        return 0
    for option in ("seed", "cohort", "checkpoint"):
        if getattr(args, option) is not None:
            raise UserError(f"--{option} applies to --suite validity only; drop it or add "
                            "--suite validity")
    from synth_core.benchmark import run_benchmarks

    only = {"revgan-memory": "synth_core.benchmark_revgan:run_revgan_memory",
            "native": "synth_core.benchmark_native:run_native_report"}
    if args.only is not None:
        if args.only not in only:
            raise UserError(f"unknown benchmark {args.only!r} for --only; choose one of: {', '.join(only)}")
        module, name = only[args.only].split(":")
        getattr(importlib.import_module(module), name)(args.out, quick=args.quick)
        return 0
    run_benchmarks(args.out, quick=args.quick)
    return 0


def _bar(total: int, desc: str, initial: int = 0) -> Any:
    """A tqdm bar on a terminal; silent in logs and pipes."""
    if not sys.stderr.isatty():
        return lambda value, postfix=None: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, initial=initial, file=sys.stderr, leave=False)

    def update(value: int | None, postfix: dict[str, Any] | None = None) -> None:
        if value is None:
            bar.close()
            return
        bar.n = value
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    return update


COMMANDS = {"phantom": _phantom, "translate": _translate, "evaluate": _evaluate, "train": _train,
            "register": register_command, "augment": augment_command, "models": _models, "methods": _methods, "benchmark": _benchmark}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"modality-synth {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"modality-synth {args.command}: interrupted after {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
