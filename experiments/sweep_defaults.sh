#!/usr/bin/env bash
# How rec-LRA's defaults were chosen: Fashion-MNIST, MLP 5×256 tanh, batch 50, Adam 2e-4,
# 10 epochs, seeds 0–2, each variant of the rec-LRA rule against backprop. Two runs at a time,
# one CPU thread each (PARALLEL=2); SEEDS="0 1 2" and ONLY="variant …" narrow it. Data:
# RECLRA_DATA as usual. Results: runs/sweep/<variant>-s<seed>/summary.json; table:
#   python experiments/summarize.py runs/sweep
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/sweep}
RECLRA=${RECLRA:-.venv/bin/reclra}
declare -A VARIANTS=(
  [skip-transpose]="--rule rec-lra --set rule.pathway=skip --set rule.error_rule=transpose"
  [skip-fixed]="--rule rec-lra --set rule.pathway=skip --set rule.error_rule=fixed"
  [skip-paper]="--rule rec-lra --set rule.pathway=skip --set rule.error_rule=paper"
  [skip-paper-slr0.1]="--rule rec-lra --set rule.pathway=skip --set rule.error_rule=paper --set optim.synapse_lr_scale=0.1"
  [chain-transpose]="--rule rec-lra --set rule.pathway=chain --set rule.error_rule=transpose"
  [skip-fixed-beta1]="--rule rec-lra --set rule.pathway=skip --set rule.error_rule=fixed --set rule.beta=1.0"
  [skip-fixed-estd1]="--rule rec-lra --set rule.pathway=skip --set rule.error_rule=fixed --set rule.e_init_std=1.0"
  [backprop]="--rule backprop"
)
run() {  # variant seed
  "$RECLRA" train ${VARIANTS[$1]} --config experiments/fmnist_mlp.yaml --seed "$2" \
    --set train.threads=1 --out "$OUT/$1-s$2" --overwrite --no-progress > /dev/null
  echo "done $1 seed $2"
}
jobs_running() { jobs -rp | wc -l; }
for seed in ${SEEDS:-0 1 2}; do
  for v in ${ONLY:-${!VARIANTS[@]}}; do
    while [ "$(jobs_running)" -ge "${PARALLEL:-2}" ]; do sleep 2; done
    run "$v" "$seed" &
  done
done
wait
