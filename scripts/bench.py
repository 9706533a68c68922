"""`make bench`: print every speed and memory figure (see synth_core.benchmark)."""

from __future__ import annotations

import sys
from pathlib import Path

from synth_core.benchmark import run_benchmarks

if __name__ == "__main__":
    run_benchmarks(Path("bench_out"), quick="--quick" in sys.argv)
    sys.exit(0)
