"""DUIIT's phantom tables: age from CT, trained on CT alone or with translated T1 / PET.

Usage (from a clean clone; figures in docs/methods/duiit.md):

    modality-synth phantom pool --subjects 130 --seed 4711 --preset small
    modality-synth phantom tuning --subjects 48 --seed 4712 --preset small
    python scripts/duiit_benchmark.py pool results --tune tuning [--splits 5]
        [--translator-steps 150] [--predictor-steps 150]

Per split (seeded by its number): 8 CT training subjects, 40 T1 and 40 PET subjects who are
other people, 40 CT test subjects. Prints each row as it finishes and, at the end, the mean
and standard deviation over splits of the squared error (years^2) and absolute error (years)
of the test subjects' predicted ages; ``results/results.json`` holds everything. ``--tune``
first chooses the predictor's settings on CT alone on another pool (no benchmark subject). A killed
run resumes from the splits already in ``results/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from synth_core.benchmark_duiit import Settings, run, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pool", type=Path, help="a phantom folder (modality-synth phantom)")
    parser.add_argument("out", type=Path, help="where split-K.json and results.json go")
    parser.add_argument("--tune", type=Path, default=None, metavar="POOL",
                        help="choose the predictor's settings first on this other phantom pool")
    for field in fields(Settings):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default),
                            default=field.default)
    args = parser.parse_args(argv)
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    report = run(args.pool, args.out, settings, log=lambda line: print(line, flush=True),
                 tune_pool=args.tune)
    print(table(report))
    print("CT age signal:", json.dumps(report["age_signal"]))
    print(f"CPU time: {report['cpu_seconds'] / 60:.1f} minutes on one thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
