#!/usr/bin/env bash
# The whole ProDA chain: [warm-up ->] stage 1 -> stage 2 -> stage 3, each step skipped when done.
#   WARMUP=pretrained (default): start from WARMUP_CKPT or the config's path (the released model)
#   WARMUP=train: train the warm-up first (maintainers' recipe, configs/<src>2city_warmup.py)
# Other variables: see scripts/proda_lib.sh. Example:
#   SRC=gta5 SRC_ROOT=/data/GTA5 TGT_ROOT=/data/cityscapes CUDA_VISIBLE_DEVICES=0,1,2,3 bash scripts/proda_all.sh
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/proda_lib.sh"

case "${WARMUP:-pretrained}" in
  pretrained) ;;
  train)
    need_cfg warmup
    capture COMMON common_args
    ARGS=(--config "$(cfg warmup)" "${COMMON[@]}")
    capture LOGDIR logdir_args "${ARGS[@]}"
    ARGS+=("${LOGDIR[@]}")
    WARMUP_CKPT="$(opt_path "$BEST_CKPT" "${ARGS[@]}")"
    step "[warm-up] adversarial warm-up -> $WARMUP_CKPT"
    run_train "${ARGS[@]}"
    export WARMUP_CKPT ;;
  *) echo "error: WARMUP must be pretrained or train, got '$WARMUP'" >&2; exit 2 ;;
esac

bash "$HERE/proda_stage1.sh"
bash "$HERE/proda_stage2.sh"
bash "$HERE/proda_stage3.sh"
