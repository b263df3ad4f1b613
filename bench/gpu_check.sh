#!/usr/bin/env bash
# One-GPU readiness check: tiny and ViT-L (16x224^2, bf16) steps, MFU against the datasheet peak,
# the freezing sweep against the analytic saving, compiled memory per stage, attention paths.
#
#   pip install -e . "jax[cuda12]"      # or jax[cuda13]: setup.py only sets lower bounds
#   bash bench/gpu_check.sh [--vit_l_batch=8] [--out=gpu_check.json]
#   bash bench/gpu_check.sh --platform=cpu    # dry run of the same code on shrunk models (no GPU)
#
# Arguments go to bench/gpu_check.py (python bench/gpu_check.py --help). Takes a few minutes on an
# H100-class GPU, most of it compiling ~8 programs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

if [[ " $* " != *" --platform=cpu "* ]]; then
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "error: nvidia-smi not found: this check needs an NVIDIA GPU (or pass --platform=cpu)" >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PYTHON" - <<'PY'
import sys
import jax
gpus = [d for d in jax.devices() if d.platform == "gpu"]
if not gpus:
    sys.exit("error: JAX sees no GPU (jax %s, devices %s): install jax[cuda12] (or jax[cuda13])"
             % (jax.__version__, jax.devices()))
print("jax", jax.__version__, "sees", len(gpus), "GPU(s):", gpus[0].device_kind)
PY
  export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
else
  export JAX_PLATFORMS=cpu
fi
exec "$PYTHON" bench/gpu_check.py "$@"
