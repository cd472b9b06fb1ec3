# Two commands do all set-up on a fresh machine:  `make intervene`  and  `make test`.
# Each target creates the project virtualenv when missing and installs what it needs.
#
# GPU users: pick the torch build that matches the node, e.g.
#   make intervene TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
# (the default is the CPU wheel that these machines carry on disk).

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
ARGS   ?=
RUNS   ?=

PY   := $(VENV)/bin/python
PIP  := $(PY) -m pip
# DeepSpeed installs as pure Python; its ops JIT-compile on first use where a compiler is present.
export DS_BUILD_OPS ?= 0
export PYTHONPATH := $(CURDIR)

.PHONY: setup setup-test intervene sweep compare evaluate test test-all bench gpu-wheels clean help

help:
	@echo "make intervene [ARGS='intervention=swap intervention.ratio=0.21']  run the pipeline (demo by default)"
	@echo "make sweep [ARGS=...]                 Hydra multirun over ratios x directions, then compare"
	@echo "make compare RUNS='dirA dirB ...'     one comparison table of any runs or a multirun folder"
	@echo "make evaluate ARGS=\"'models={base:DIR_OR_HUB@REV,treated:...}'\"  evaluate named models, paired tests against the first"
	@echo "make evaluate ARGS='audit=released plan=true'   what the audit of the released intervention models evaluates"
	@echo "make test                             the test suite (fast + slow)"
	@echo "make bench                            benchmarks; figures in benchmarks/results/"
	@echo "make gpu-wheels                       wheels for benchmarks/gpu_check.sh --wheels on an offline GPU machine"

$(VENV)/.torch:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

intervene: setup
	$(PY) pipelines/intervene.py $(ARGS)

# Multirun over conf/sweep/demo.yaml (ratios x directions, joblib launcher); ends with the comparison.
sweep: setup
	$(PY) pipelines/intervene.py --multirun +sweep=demo $(ARGS)

compare: setup
	$(PY) pipelines/compare.py $(RUNS)

# Named models (local Hugging Face folders or OWNER/NAME@REVISION) or the audit preset; the report
# lands in outputs/runs/<time>_models. Quote a models={...} value inside ARGS: shells expand braces.
evaluate: setup
	$(PY) pipelines/evaluate.py $(ARGS)

test: setup-test
	$(PY) -m pytest -q $(ARGS)

bench: setup-test
	@set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b; done

# Wheels for `benchmarks/gpu_check.sh --wheels gpu-wheels` on a GPU machine without network: what
# the check needs besides torch, built for this machine's Python (use the GPU machine's version).
# DeepSpeed publishes only a source archive: it is built here into a pure-Python wheel
# (DS_BUILD_OPS=0) without its torch requirement, which the GPU machine meets with its own torch.
GPU_WHEELS ?= gpu-wheels
gpu-wheels: setup
	$(PIP) wheel --quiet --wheel-dir $(GPU_WHEELS) numpy omegaconf huggingface_hub tokenizers safetensors tqdm \
		scipy filelock transformers hjson ninja packaging psutil py-cpuinfo pydantic msgpack einops nvidia-ml-py
	$(PIP) wheel --quiet --no-deps --wheel-dir $(GPU_WHEELS) "deepspeed>=0.14"
	@echo "wrote $(GPU_WHEELS)/; copy it to the GPU machine and run benchmarks/gpu_check.sh --wheels $(GPU_WHEELS)"

clean:
	rm -rf outputs multirun .cache
