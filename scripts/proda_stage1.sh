#!/usr/bin/env bash
# ProDA stage 1 (reference README, "Stage1"): from the warm-up model,
#   1. soft pseudo labels of the target training images   (generate_pseudo_label --soft)
#   2. initial target prototypes beside the warm-up model  (calc_prototype)
#   3. stage-1 training: prototype-rectified pseudo labels + prototype consistency (train --stage stage1)
# Each step is skipped when its output exists and records the same inputs (a pseudo-label
# folder with .complete, the prototype file); outputs of other inputs (a changed warm-up
# model) stop the script with the `rm` command to run; training resumes from its current
# checkpoint, so a rerun continues a chain that stopped. Variables: see scripts/proda_lib.sh. Examples:
#   bash scripts/proda_stage1.sh                                   # GTA5, the README's paths
#   SRC=synthia SRC_ROOT=/data/SYNTHIA-RAND-CITYSCAPES TGT_ROOT=/data/cityscapes bash scripts/proda_stage1.sh
#   CUDA_VISIBLE_DEVICES=0,1,2,3 bash scripts/proda_stage1.sh      # training on 4 GPUs (torchrun + DDP)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/proda_lib.sh"
need_cfg stage1 stage1_pseudo stage1_prototypes
capture COMMON common_args

if [[ -n "${WARMUP_CKPT:-}" ]]; then
  WARMUP="$(abspath "$WARMUP_CKPT")"
else
  WARMUP="$(opt_path o.resume_path --config "$(cfg stage1)" "${COMMON[@]}")"
fi
require_file "$WARMUP" "the warm-up checkpoint: download the released one (see README) or train it with: python -m proda.train --config $(cfg warmup)"
echo "ProDA stage 1 ($SRC, configs in $CFG_DIR) from the warm-up model $WARMUP"

pseudo_labels "$WARMUP" "[stage 1, step 1/3] soft pseudo labels of the warm-up model" \
  --config "$(cfg stage1_pseudo)" "${COMMON[@]}"
SOFT="$PSEUDO_OUT"

PROTO_ARGS=(--config "$(cfg stage1_prototypes)" "${COMMON[@]}" --resume_path "$WARMUP")
PROTO="$(opt_path "$PROTOTYPE_FILE" "${PROTO_ARGS[@]}")"
step "[stage 1, step 2/3] target prototypes of the warm-up model -> $PROTO"
PROTO_DONE="$(opt_eval "prototypes_done(o, $PROTOTYPE_FILE)" "${PROTO_ARGS[@]}")"
if [[ "$PROTO_DONE" == True ]]; then
  echo "    skipped: $PROTO is made from $WARMUP"
else
  run "$PYTHON" -m proda.calc_prototype "${PROTO_ARGS[@]}"
fi

TRAIN_ARGS=(--config "$(cfg stage1)" "${COMMON[@]}")
capture LOGDIR logdir_args "${TRAIN_ARGS[@]}"
TRAIN_ARGS+=("${LOGDIR[@]}" --resume_path "$WARMUP" --path_soft "$SOFT")
BEST="$(opt_path "$BEST_CKPT" "${TRAIN_ARGS[@]}")"
step "[stage 1, step 3/3] train stage 1 -> $BEST"
run_train "${TRAIN_ARGS[@]}"
echo "stage 1 done:"
report_models "$BEST"
