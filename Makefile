# Quickstart: `make demo` and `make test`. Both set up .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# Keep an existing torch (e.g. a CUDA build); otherwise install the pinned CPU wheel
	@# first so the dependency resolver never pulls a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

$(VENV): $(VENV)/.installed

demo: $(VENV)
	$(VENV)/bin/elth demo

test: $(VENV)
	$(PY) -m pytest

bench: $(VENV)
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
