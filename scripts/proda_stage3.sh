#!/usr/bin/env bash
# ProDA stage 3 (reference README, "Stage3"): from the stage-2 model (the teacher),
#   1. hard pseudo labels (flip) with the stage-2 architecture (--bn_clr --student_init simclr)
#   2. a second self-distillation, teacher with the extra batch norm (train --stage stage3 --ema_bn)
# The teacher is stage 2's best checkpoint (or STAGE2_CKPT). Finished steps are skipped,
# training resumes. Variables: see scripts/proda_lib.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/proda_lib.sh"
mapfile -t COMMON < <(common_args)

if [[ -n "${STAGE2_CKPT:-}" ]]; then
  TEACHER="$(abspath "$STAGE2_CKPT")"
else
  PREV=(--config "$(cfg stage2)" "${COMMON[@]}")
  mapfile -t LOGDIR < <(logdir_args "${PREV[@]}")
  TEACHER="$(opt_path "$BEST_CKPT" "${PREV[@]}" "${LOGDIR[@]}")"
fi
require_file "$TEACHER" "the stage-2 model: run scripts/proda_stage2.sh, or set STAGE2_CKPT to the released one"
echo "ProDA stage 3 ($SRC, configs in $CFG_DIR) from the stage-2 model $TEACHER"

pseudo_labels "$TEACHER" "[stage 3, step 1/2] hard pseudo labels (flip) of the stage-2 model" \
  --config "$(cfg stage3_pseudo)" "${COMMON[@]}"

TRAIN_ARGS=(--config "$(cfg stage3)" "${COMMON[@]}")
mapfile -t LOGDIR < <(logdir_args "${TRAIN_ARGS[@]}")
TRAIN_ARGS+=("${LOGDIR[@]}" --resume_path "$TEACHER" --path_LP "$PSEUDO_OUT")
[[ -n "${SIMCLR_CKPT:-}" ]] && TRAIN_ARGS+=(--simclr_path "$(abspath "$SIMCLR_CKPT")")
BEST="$(opt_path "$BEST_CKPT" "${TRAIN_ARGS[@]}")"
step "[stage 3, step 2/2] train stage 3 (distillation) -> $BEST"
run_train "${TRAIN_ARGS[@]}"
echo "stage 3 done: $BEST"
