#!/usr/bin/env bash
# The GPU check of the trainer, in one command: at most 8 minutes on one H100/H200, no network,
# only the project and its data. It measures the trainer at the pythia-160m, 410m and 1.4b shapes
# (steady-state median of its metrics.jsonl), the same step in transformers, the DeepSpeed engine on
# one GPU, and evaluation (CrowS-Pairs + WinoBias + LAMBADA) at 1.4b, and writes
# benchmarks/results/gpu.json with the device name (see benchmarks/bench_train.py).
#
#   benchmarks/gpu_check.sh [--wheels DIR] [--out FILE] [--budget SECONDS] [--dry-run]
#
# --budget (default 460) bounds the whole script, installation included: each measurement gets what
# is left, and what the budget leaves no time for is recorded as skipped, so it ends within 8 minutes.
#
# Needs: Python with torch (a CUDA build) and the project's dependencies below. GPU machines often
# have torch and transformers but not the rest, and no network: make the wheels on a machine with
# network (`make gpu-wheels`, same Python version), copy the folder over, pass --wheels DIR; what is
# missing is installed from it with `pip install --no-index`.
#   required: numpy omegaconf huggingface_hub tokenizers safetensors tqdm scipy filelock
#   optional: transformers (the reference step), deepspeed (the DeepSpeed engine); skipped without
# Data: the GPT-NeoX tokenizer, CrowS-Pairs, WinoBias and LAMBADA in ../shared/data (or $DEBIAS_SHARED_DATA).
# Without CUDA it prints one line and exits 0; --dry-run runs every item with tiny shapes on CPU.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

WHEELS="" DRY_RUN="" OUT="benchmarks/results/gpu.json" BUDGET=460
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift 2 ;;
    --out) OUT="${2:?--out needs a file}"; shift 2 ;;
    --budget) BUDGET="${2:?--budget needs seconds}"; shift 2
              [[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "error: gpu_check.sh: --budget $BUDGET: give whole seconds, e.g. --budget 460" >&2; exit 2; } ;;
    --dry-run) DRY_RUN="--dry-run"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "error: gpu_check.sh: unknown argument '$1'; see --help" >&2; exit 2 ;;
  esac
done

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "error: gpu_check.sh: $PYTHON cannot import torch; install the CUDA build of torch for this machine (or set PYTHON)" >&2
  exit 2
fi
if [[ -z "$DRY_RUN" ]] && ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: skipped: no CUDA device visible to torch (--dry-run runs tiny shapes on CPU)"
  exit 0
fi

# distribution names of what does not import
missing() {
  "$PYTHON" - "$@" <<'EOF'
import importlib.util, sys
modules = {"numpy": "numpy", "omegaconf": "omegaconf", "huggingface_hub": "huggingface_hub",
           "tokenizers": "tokenizers", "safetensors": "safetensors", "tqdm": "tqdm", "scipy": "scipy",
           "filelock": "filelock", "transformers": "transformers", "deepspeed": "deepspeed"}
print(" ".join(dist for dist in sys.argv[1:] if importlib.util.find_spec(modules[dist]) is None))
EOF
}
REQUIRED="numpy omegaconf huggingface_hub tokenizers safetensors tqdm scipy filelock"
OPTIONAL="transformers deepspeed"
need="$(missing $REQUIRED $OPTIONAL)"
if [[ -n "$need" && -n "$WHEELS" ]]; then
  [[ -d "$WHEELS" ]] || { echo "error: gpu_check.sh: --wheels $WHEELS: no such folder; make it with 'make gpu-wheels'" >&2; exit 2; }
  echo "gpu_check: installing from $WHEELS: $need"
  for dist in $need; do  # one at a time: an optional one missing from the folder must not stop the rest
    DS_BUILD_OPS=0 "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" "$dist" \
      || echo "gpu_check: $dist is not installable from $WHEELS"
  done
fi
still="$(missing $REQUIRED)"
if [[ -n "$still" ]]; then
  echo "error: gpu_check.sh: missing $still; run 'make gpu-wheels' on a machine with network and pass --wheels DIR" >&2
  exit 2
fi

# the measurements get what the checks and installation above left of the budget ($SECONDS: bash's clock)
exec "$PYTHON" benchmarks/bench_train.py $DRY_RUN --out "$OUT" --budget "$((BUDGET - SECONDS))"
