# Two commands do all the set-up on a fresh machine:
#   make demo   # install, then run the whole suite (4 members + ensemble) on demo data
#   make test   # install, then run every test (real SLURM ones included)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
# A local CPU wheel that pip's find-links serves on machines like ours.
TORCH_CPU_WHEEL := $(or $(PIP_FIND_LINKS),/opt/wheels)/torch-$(TORCH_VERSION)+cpu*.whl

.PHONY: install demo test lint test-fast bench gpu-check docs docs-serve clean

install: $(STAMP)

# A CPU machine must never pull the multi-GB CUDA build of torch: take the
# local CPU wheel when there is one, a GPU machine takes PyPI's default build,
# and any other CPU machine takes PyTorch's CPU-only index. torch is installed
# first so that the package's looser "torch>=2.4" then installs nothing more.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	if ls $(TORCH_CPU_WHEEL) >/dev/null 2>&1 || command -v nvidia-smi >/dev/null 2>&1; then \
		$(PIP) install "torch==$(TORCH_VERSION)"; \
	else \
		$(PIP) install "torch==$(TORCH_VERSION)" --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PIP) install -e '.[dev,docs,tabular,tensorboard]'
	touch $@

# The local site profile sizes tasks for a laptop or for slurm/local's
# single node; a site of your own in VIDENS_SITE takes precedence.
demo: $(STAMP)
	VIDENS_SITE=$${VIDENS_SITE:-local} $(PY) -m jobs.launch --array 4 --config configs/demo.yaml

# Lint and format are checked before the tests: a diff ruff would change fails here, in seconds.
test: lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slurm and not slow"

bench: $(STAMP)
	$(PY) -m jobs.bench --quick --out results/bench.json

# Every CUDA path in one command (skipped parts say why on a machine without CUDA).
# On a lent GPU machine, whose python3 already has torch:  make gpu-check PY=python3 OUT=$$OUT
OUT ?= results/gpu-check
GPU_CHECK_ARGS ?=
gpu-check: $(if $(filter $(VENV)/%,$(PY)),$(STAMP))
	$(PY) -m jobs.gpu_check --out $(OUT) $(GPU_CHECK_ARGS)

# The documentation site (docs/, mkdocs.yml) into site/; the CLI reference is generated from the parsers.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)
	$(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) *.egg-info
