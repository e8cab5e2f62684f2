#!/usr/bin/env bash
# Check a CUDA machine in under 5 minutes and print one summary block:
#   1. the tent benchmark on CUDA: default path, and the fast path (AMP, channels_last, torch.compile)
#   2. the ProDA step benchmark at the reference sizes (ResNet-101, 896x512 crops, bs 4):
#      float32, 2 micro-batches, AMP, AMP with 4 micro-batches, for warm-up, stage 1 and stage 2
#   3. with two GPUs visible: one 2-process DDP training run (torchrun, 2 iterations, AMP and
#      accumulation) on a few synthetic images
#
#   bash scripts/gpu_check.sh            # logs go to a temporary folder (printed)
# Variables: PYTHON (default python), OUT (log folder, default a new temporary one).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

NGPU="$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')"
if (( NGPU < 1 )); then
  echo "error: no CUDA device visible to torch" >&2
  exit 1
fi
# bf16 where the GPU has it (Ampere and later), fp16 with gradient scaling otherwise (V100)
AMP="$("$PYTHON" -c 'import torch; print("bf16" if torch.cuda.is_bf16_supported() else "fp16")')"
STATUS=()

check() {  # check NAME LOGFILE COMMAND...: run a check, keep its output, record pass / fail
  local name="$1" log="$2"; shift 2
  echo "==> $name (log: $log)"
  if "$@" > "$log" 2>&1; then STATUS+=("$name: ok"); else STATUS+=("$name: FAILED (see $log)"); fi
}

check "tent benchmark" "$OUT/tent.txt" \
  "$PYTHON" benchmarks/tent_bench.py --wrn-batch 16 --cnn-batch 100 --iters 3
check "ProDA step benchmark" "$OUT/proda_step.txt" \
  "$PYTHON" benchmarks/proda_step_bench.py --device cuda --configs fp32,k2,amp,amp_k4 --steps 1 \
  --amp_dtype "$AMP" --timeout 120

if (( NGPU >= 2 )); then
  check "synthetic data for DDP" "$OUT/data.txt" \
    "$PYTHON" -m proda.demo.synthetic --out "$OUT/data" --size 128,64 --n_source 8 --n_target_train 8 \
    --n_target_val 2 --seed 0
  check "DDP step (2 GPUs)" "$OUT/ddp.txt" \
    env CUDA_VISIBLE_DEVICES=0,1 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 \
    -m proda.train --stage warm_up \
    --freeze_bn --student_init random --no_resume --n_class 19 --src_dataset gta5 \
    --src_rootpath "$OUT/data/GTA5" --tgt_rootpath "$OUT/data/cityscapes" --src_img_size 128,64 \
    --tgt_img_size 128,64 --resize 128 --rcrop 96,48 --bs 4 --accum_steps 2 --amp "$AMP" \
    --max_iters 2 --val_interval 2 --num_workers 0 --logdir "$OUT/ddp"
else
  STATUS+=("DDP step: skipped (one GPU visible)")
fi

echo
echo "===== GPU check summary ($(date -u +%Y-%m-%dT%H:%MZ)) ====="
"$PYTHON" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))'
echo "AMP dtype: $AMP"
printf '%s\n' "${STATUS[@]}"
echo "--- tent (CUDA) ---"
grep -E '^(wrn|mnist|device)' "$OUT/tent.txt" || true
echo "--- ProDA step, reference sizes ---"
grep -vE '^(Traceback|  )' "$OUT/proda_step.txt" || true
if [[ -f "$OUT/ddp.txt" ]]; then
  echo "--- DDP ---"
  grep -E 'finished|mIoU|Error' "$OUT/ddp.txt" | tail -n 3 || true
fi
echo "logs: $OUT"
