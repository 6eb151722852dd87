#!/usr/bin/env bash
# mmfw's default config vs its unimodal runs vs the linear baseline, 3 seeds on one fixed split, on the real data
# sets fetched from package registries (conf/experiment/{drug_reviews,emoji}.yaml). Summarise with
#   python bench/summarize_baselines.py logs/train/runs
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
COMMON=(logger=csv callbacks.rich_progress_bar=null ++trainer.enable_progress_bar=false)
run() {  # run <tag> <overrides...>: train and test, then the linear baseline on the run's splits (baseline=true)
  local tag=$1; shift
  mmfw-train "$@" "${COMMON[@]}" "tags=[$tag]" baseline=true >/dev/null 2>&1 || { echo "FAILED: $*"; return; }
  echo "$tag $(ls -dt "${MMFW_ROOT:-.}"/logs/train/runs/* | head -1)"
}
for dataset in ${DATASETS:-drug_reviews emoji}; do
  case $dataset in
    drug_reviews) unimodal=(text meta) ;;
    emoji) unimodal=(image text) ;;
  esac
  for seed in 0 1 2; do
    run "$dataset:default" experiment="$dataset" seed=$seed
    for m in "${unimodal[@]}"; do
      run "$dataset:$m" experiment="$dataset" "modalities=[$m]" seed=$seed
    done
  done
done
