# Quickstart: `make demo` and `make test`. Both set up .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0

.PHONY: demo test test-kernels bench clean

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

# The tests that compare arithmetic across code paths (fused vs lone, 2 ranks vs 1) once per x86
# kernel family: PyTorch picks AVX-512 or AVX2 kernels by CPU, and they round differently. On a CPU
# without AVX-512, the avx512 pass runs AVX2 kernels again.
KERNEL_TESTS := tests/test_training_fused.py tests/test_training_fused_stacked.py tests/test_distributed.py
test-kernels: $(VENV)
	ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest $(KERNEL_TESTS)
	ATEN_CPU_CAPABILITY=avx512 $(PY) -m pytest $(KERNEL_TESTS)

bench: $(VENV)
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
