#!/usr/bin/env bash
# GPU check: bf16 throughput on one GPU, then DDP on every GPU (default callbacks) and its scaling ratio.
#   bench/gpu_check.sh                      # default experiment, default budget
#   bench/gpu_check.sh datamodule.batch_size=256
# Extra arguments are config overrides for every run. Prints pairs/s (training + validation, epochs after the first)
# and the ratio DDP / one GPU (ideal: the number of GPUs). Exits with status 2 when torch sees no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
# The repository's venv (make install) unless PYTHON names another interpreter.
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -lt 1 ]; then
  echo "bench/gpu_check.sh: torch sees no GPU (torch.cuda.device_count() == 0, CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}): nothing measured. Run it on a machine with CUDA GPUs; on CPUs use bench/step_overhead.py." >&2
  exit 2
fi
OUT=$(mktemp -d "${TMPDIR:-/tmp}/mmfw-gpu-check-XXXXXX")
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import torch; print('GPUs:', [torch.cuda.get_device_name(i) for i in range($GPUS)], 'torch', torch.__version__)"
one=$("$PYTHON" bench/throughput.py --out "$OUT/one" trainer=gpu_bf16 "$@" | tail -n 1)
echo "bf16, 1 GPU:           $one"
if [ "$GPUS" -lt 2 ]; then
  echo "DDP: one GPU only, no scaling to measure"
  exit 0
fi
all=$("$PYTHON" bench/throughput.py --out "$OUT/ddp" trainer=ddp trainer.devices="$GPUS" trainer.precision=bf16-mixed "$@" | tail -n 1)
echo "bf16, DDP on $GPUS GPUs:   $all"
"$PYTHON" -c "
import json, sys
one, all_ = json.loads(sys.argv[1])['pairs_per_s'], json.loads(sys.argv[2])['pairs_per_s']
print(f'DDP scaling: {all_ / one:.2f}x on {sys.argv[3]} GPUs (efficiency {all_ / one / int(sys.argv[3]):.0%})')
" "$one" "$all" "$GPUS"
echo "runs in $OUT"
