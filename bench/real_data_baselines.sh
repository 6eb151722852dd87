#!/usr/bin/env bash
# mmfw's default config vs its unimodal runs vs the linear baseline, 3 seeds on one fixed split, on the real data
# sets fetched from package registries (conf/experiment/{drug_reviews,emoji}.yaml) and on AV-digits read back through
# its manifest export (conf/experiment/manifest_digits.yaml; written first when $MMFW_AVDIGITS_MANIFEST is missing).
# Summarise with
#   python bench/summarize_baselines.py logs/train/runs
# DATASETS="drug_reviews" SEEDS="0 1" bash bench/real_data_baselines.sh  runs a part of it; EXTRA="trainer.max_epochs=1"
# adds overrides to every run.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
COMMON=(logger=csv callbacks.rich_progress_bar=null ++trainer.enable_progress_bar=false ${EXTRA:-})
run() {  # run <tag> <overrides...>: train and test, then the linear baseline on the run's splits (baseline=true)
  local tag=$1; shift
  mmfw-train "$@" "${COMMON[@]}" "tags=[$tag]" baseline=true >/dev/null 2>&1 || { echo "FAILED: $*"; return; }
  echo "$tag $(ls -dt "${MMFW_ROOT:-.}"/logs/train/runs/* | head -1)"
}
export MMFW_AVDIGITS_MANIFEST=${MMFW_AVDIGITS_MANIFEST:-${MMFW_ROOT:-.}/data/avdigits_manifest/manifest.csv}
for dataset in ${DATASETS:-drug_reviews emoji manifest_digits}; do
  case $dataset in
    drug_reviews) unimodal=(text meta) ;;
    emoji) unimodal=(image text) ;;
    manifest_digits)
      unimodal=(image audio)
      [ -f "$MMFW_AVDIGITS_MANIFEST" ] || python -m mmfw.tools.export_avdigits \
        --out "$(dirname "$MMFW_AVDIGITS_MANIFEST")" --train 3000 --val 600 --test 1000 >/dev/null ;;
  esac
  for seed in ${SEEDS:-0 1 2}; do
    run "$dataset:default" experiment="$dataset" seed=$seed
    for m in "${unimodal[@]}"; do
      run "$dataset:$m" experiment="$dataset" "modalities=[$m]" seed=$seed
    done
  done
done
