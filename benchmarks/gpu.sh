#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md ("GPU"), re-measured in one go on a CUDA machine:
#   pip install -e '.[test,cuda13]'   (or '.[test,cuda12]'; see the README)
#   bash benchmarks/gpu.sh OUT_DIR
# Writes OUT_DIR/{versions.txt, train_step_f32.{txt,jsonl}, train_step_bf16.{txt,jsonl},
# quickstart.txt, quickstart/} (about 5 minutes on one H100, most of it compilation).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash benchmarks/gpu.sh OUT_DIR}"
mkdir -p "$out"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cuda}"
py="${PYTHON:-python}"
{ "$py" -c "import sys, jax, flax, optax; print('python', sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true; } > "$out/versions.txt" 2>&1
"$py" benchmarks/train_step.py --methods erm,dro:exact,dro:forward_over_reverse,var_dro,augmix,dro_augmix \
  --width 64 --batch 128 --iters 20 --rounds 3 --json "$out/train_step_f32.jsonl" > "$out/train_step_f32.txt" 2>&1
"$py" benchmarks/train_step.py --methods erm,dro:forward_over_reverse,dro:exact --dtype bfloat16 \
  --width 64 --batch 128 --iters 20 --rounds 3 --json "$out/train_step_bf16.jsonl" > "$out/train_step_bf16.txt" 2>&1
# The README's first command, cold (no compilation cache).
rm -rf "$out/quickstart"
TIMEFORMAT="quickstart: wall %R s, user %U s, sys %S s"
{ time "$py" -m experiments.cifar_c --method=dro_augmix --preset=quick --dataset=digits \
    --workdir="$out/quickstart" --compilation_cache_dir=none --config.progress=false; } > "$out/quickstart.txt" 2>&1
tail -n 4 "$out/train_step_f32.txt" "$out/train_step_bf16.txt"
grep -E "^== |^quickstart: " "$out/quickstart.txt"
