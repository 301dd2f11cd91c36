#!/usr/bin/env bash
# One prepared run of the speed benchmarks on a machine with a GPU, lvae-jax and the official code
# side by side, writing JSON (and the printed tables) to $OUT. Two parts, each a 600-second command
# of a short loan (the step timeouts of each add up to 530 s): part 1 (default) the latencies, the
# compile time and training; part 2 the end-to-end command line and the evaluation throughput.
#
#   OUT=/tmp/lvae-device LVAE_OFFICIAL_SRC=.official/lossy-vae bash benchmarks/device.sh [1|2]
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
#      each framework's default precision (--precision default, TF32 on): the rule's cost;
#   2. compile time of the codec passes (compile_time.py);
#   3. the training step, batch 4 at 256² (train_step.py --only step), float32 and bf16 mixed
#      precision, official on CUDA beside it;
#   4. the real training loop on a JPEG folder beside the official train-fix-rate.py loop
#      (train_step.py --only loop, qres34m);
#   5. the data-parallel step on the machine's devices (train_step.py --only scaling).
# Part 2:
#   6. one fresh process per compress / decompress and the model load (cli_e2e.py, qarv_base);
#   7. `eval rd` throughput against the official evaluation loop (eval_rd.py, 12 images).
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

if [ "${1:-1}" = 2 ]; then
    step cli_e2e 280 "$PY" benchmarks/cli_e2e.py --models qarv_base --repeats 2 "${OFF[@]}" \
        --json "$OUT/cli_e2e.json"
    step eval_rd 250 "$PY" benchmarks/eval_rd.py --models qarv_base --num-images 12 --repeats 1 \
        "${OFF[@]}" --json "$OUT/eval_rd.json"
    echo "done: $OUT" | tee -a "$OUT/log.txt"
    exit 0
fi
step codec_fp32 130 env LVAE_BENCH_TF32=0 \
    "$PY" benchmarks/codec.py --repeats 5 --skip-4k "${OFF[@]}" --json "$OUT/codec_fp32.json"
step codec_default 70 env LVAE_BENCH_TF32=1 \
    "$PY" benchmarks/codec.py --models qarv_base --repeats 5 --skip-4k --precision default "${OFF[@]}" --json "$OUT/codec_default.json"
step compile 80 "$PY" benchmarks/compile_time.py --models qarv_base --json "$OUT/compile.json"
step train_step 140 "$PY" benchmarks/train_step.py --only step --repeats 5 --precision fp32 bf16 "${OFF[@]}"
step loop 60 "$PY" benchmarks/train_step.py --only loop --models qres34m --loop-steps 12 "${OFF[@]}"
step scaling 50 "$PY" benchmarks/train_step.py --only scaling --models qarv_base
echo "done: $OUT" | tee -a "$OUT/log.txt"
