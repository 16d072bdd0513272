#!/usr/bin/env bash
# Issue 8's step-time tables (docs/PERFORMANCE.md), one `reclra bench` per model; every table
# times its rules side by side, interleaved, in one process. Run on a quiet machine:
#   experiments/speed/bench_all.sh [THREADS] [OUT]      (defaults: 2, runs/bench)
set -euo pipefail
THREADS="${1:-2}"
OUT="${2:-runs/bench}"
mkdir -p "$OUT"
RECLRA="${RECLRA:-reclra}"
bench() {  # name, then reclra bench arguments
    local name="$1"; shift
    "$RECLRA" bench --threads "$THREADS" --steps 30 --rounds 7 --json "$OUT/$name.json" "$@" \
        2>&1 | grep -v '^USDT' | tee "$OUT/$name.txt"
}
# the reference is the plain torch backprop step (no per-layer error norms), the fastest;
# rec-lra runs its compiled step, native=false the same kernel in Python, fused=false the walk
RULES=backprop:error_norms=false,backprop,rec-lra,rec-lra:native=false,rec-lra:fused=false
bench mlp5x256 --rules "$RULES" --batch-size 32,50,500 --set "model.hidden=[256,256,256,256,256]"
bench mlp8x256 --rules "$RULES" --batch-size 32,50,500 \
    --set "model.hidden=[256,256,256,256,256,256,256,256]"
bench mlp3x1024 --rules "$RULES" --batch-size 32,50,500 --set "model.hidden=[1024,1024,1024]"
# executors: the layer-by-layer walk of the skip level (5 independent layers) and of ResNet-18's
# blocks pathway, in turn or on a thread pool
bench executors-mlp --rules rec-lra:fused=false,executor=serial,rec-lra:fused=false,executor=threads \
    --batch-size 50,500 --set "model.hidden=[256,256,256,256,256]"
bench resnet18-w8 --model resnet18 --set model.width=8 --batch-size 50 --steps 5 \
    --rules backprop:error_norms=false,backprop,rec-lra,rec-lra:executor=threads
# optimizers: the same rules under torch's fused Adam, foreach Adam and fused SGD
for opt in adam adam-foreach sgd; do
    bench "optim-$opt" --optimizer "$opt" --rules backprop:error_norms=false,rec-lra --batch-size 50 \
        --set "model.hidden=[256,256,256,256,256]"
done
