#!/usr/bin/env bash
# One prepared run of the speed benchmarks on a machine with a GPU, lvae-jax and the official code
# side by side, writing JSON (and the printed tables) to $OUT. The step timeouts add up to 530 s,
# inside one 600-second command of a short loan.
#
#   OUT=/tmp/lvae-device LVAE_OFFICIAL_SRC=.official/lossy-vae bash benchmarks/device.sh
#
# Needs: python3 with jax (CUDA), flax, optax, orbax, torch, timm, scikit-image, pillow, scipy;
# packages it lacks (compressai, grain, the official code's tqdm) as wheels in .whl/, installed
# here with --no-index (no network is assumed); the official lossy-vae checkout in
# $LVAE_OFFICIAL_SRC (default .official/lossy-vae). docs/benchmarks.md, "Accelerators", says how
# to prepare both.
#
# What runs, each step under its own timeout so that one failure still leaves the others:
#   1. codec latency at 512×768 (codec.py), qarv_base and qres34m, both sides in full float32
#      (lvae_jax.numerics.CODEC_PRECISION; the official side with TF32 off), then qarv_base with
#      each framework's default precision (LVAE_CODEC_PRECISION=default, TF32 on): the rule's cost;
#   2. compile time of the codec passes (compile_time.py);
#   3. the training step, batch 4 at 256² (train_step.py --only step), official on CUDA beside it;
#   4. the data-parallel step on the machine's devices (train_step.py --only scaling).
set -u
OUT=${OUT:-/tmp/lvae-device}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/lvae-site .whl/*.whl && export PYTHONPATH=/tmp/lvae-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
SRC=${LVAE_OFFICIAL_SRC:-.official/lossy-vae}
OFF=(--official-python "$PY" --official-src "$SRC")

step() {  # step NAME TIMEOUT CMD...: run, keep its output, never stop the script
    local name=$1 limit=$2; shift 2
    echo "== $name" | tee -a "$OUT/log.txt"
    timeout "$limit" "$@" 2>&1 | grep -v Warning | tee "$OUT/$name.txt" | tee -a "$OUT/log.txt" >/dev/null
    echo "   exit ${PIPESTATUS[0]}" | tee -a "$OUT/log.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.cuda.is_available())"
} > "$OUT/machine.txt" 2>&1

step codec_fp32 150 env LVAE_BENCH_TF32=0 \
    "$PY" benchmarks/codec.py --repeats 5 --skip-4k "${OFF[@]}" --json "$OUT/codec_fp32.json"
step codec_default 80 env LVAE_CODEC_PRECISION=default LVAE_BENCH_TF32=1 \
    "$PY" benchmarks/codec.py --models qarv_base --repeats 5 --skip-4k "${OFF[@]}" --json "$OUT/codec_default.json"
step compile 90 "$PY" benchmarks/compile_time.py --models qarv_base --json "$OUT/compile.json"
step train_step 150 "$PY" benchmarks/train_step.py --only step --repeats 5 "${OFF[@]}"
step scaling 60 "$PY" benchmarks/train_step.py --only scaling --models qarv_base
echo "done: $OUT" | tee -a "$OUT/log.txt"
