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

# docs/results.md: every bundled checkpoint on a held-out phantom cohort (a few CPU minutes).
results: $(VENV)/.setup-done
	OMP_NUM_THREADS=1 $(PY) scripts/make_results.py --write docs/results.md

clean:
	rm -rf $(VENV) build dist demo_out bench_out results-cohort
