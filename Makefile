# A fresh clone needs two commands: `make demo` and `make test`. Each sets up .venv when missing.
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test bench results lint clean

$(VENV)/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(VENV)/.setup-done

demo: $(VENV)/.setup-done
	$(PY) scripts/demo.py

lint: $(VENV)/.setup-done
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/lint-imports

test: $(VENV)/.setup-done lint
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

bench: $(VENV)/.setup-done
	$(PY) scripts/bench.py
	$(PY) scripts/bench_plugin.py

# docs/results.md: the validity report of every bundled checkpoint on a held-out phantom cohort
# (`modality-synth benchmark --suite validity`, about five CPU minutes), with its figures.
results: $(VENV)/.setup-done
	rm -rf results-report
	OMP_NUM_THREADS=1 $(VENV)/bin/modality-synth benchmark --suite validity --out results-report
	cp results-report/validity.md docs/results.md
	rm -rf docs/validity-figures
	cp -r results-report/validity-figures docs/validity-figures

clean:
	rm -rf $(VENV) build dist demo_out bench_out results-report
