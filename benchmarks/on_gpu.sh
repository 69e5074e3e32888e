#!/usr/bin/env bash
# The accelerator measurements of benchmarks/README.md in one run, on one GPU.
#
#   bash benchmarks/on_gpu.sh [OUT_DIR]        (default: gpu_results/)
#
# Each step writes OUT_DIR/<step>.txt and is limited in time, so a slow or
# failing step does not cost the others; the order puts the open questions
# first. The step limits add up to 13.3 minutes. Needs `pip install -e ".[test]"` and a
# CUDA build of jax.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_results}"
mkdir -p "$out"
export XLA_PYTHON_CLIENT_PREALLOCATE=false

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  local status=$?
  echo "   exit $status after $((SECONDS - start)) s; tail:"
  tail -n 4 "$out/$name.txt" | sed 's/^/   /'
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
python -c "import jax; print(jax.__version__, jax.devices())" >> "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

# Categorical KL and JS against optax and the HBM floor, with the kernel sweep.
step divergences_bf16 150 python benchmarks/divergences.py --batch 8192 --vocab 128256 \
  --dtype bfloat16 --forward_variants --kernel_configs 2048x8 4096x8 8192x16
step divergences_f32 90 python benchmarks/divergences.py --batch 8192 --vocab 128256 \
  --dtype float32 --forward_variants
# Fused-linear distillation against the materialised logits (time, compiled
# memory, runtime peak in fresh processes).
step fused_kl 150 python benchmarks/fused_linear.py
step fused_js 90 python benchmarks/fused_linear.py --divergence js --no_peak --repeats 5
# The shared training loop against a hand-written one.
step train_step_mlp 60 python benchmarks/train_step.py --model mlp
step train_step_cnn 60 python benchmarks/train_step.py --model cnn1d
# The test slice that touches the kernels and the training layer.
step tests 200 python -m pytest -n 8 -p no:cacheprovider -q tests/divergences tests/losses \
  tests/train tests/diffusion
