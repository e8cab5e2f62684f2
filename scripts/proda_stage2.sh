#!/usr/bin/env bash
# ProDA stage 2 (reference README, "Stage2"): from the stage-1 model (the teacher),
#   1. hard pseudo labels, averaged with the flipped image  (generate_pseudo_label --flip)
#   2. self-distillation into a SimCLR-initialised student    (train --stage stage2)
# The teacher is stage 1's best checkpoint (or STAGE1_CKPT, e.g. the released stage-1 model);
# the student needs the SimCLR checkpoint (SIMCLR_CKPT or the config's --simclr_path).
# Finished steps are skipped, training resumes. Variables: see scripts/proda_lib.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/proda_lib.sh"
mapfile -t COMMON < <(common_args)

if [[ -n "${STAGE1_CKPT:-}" ]]; then
  TEACHER="$(abspath "$STAGE1_CKPT")"
else
  PREV=(--config "$(cfg stage1)" "${COMMON[@]}")
  mapfile -t LOGDIR < <(logdir_args "${PREV[@]}")
  TEACHER="$(opt_path "$BEST_CKPT" "${PREV[@]}" "${LOGDIR[@]}")"
fi
require_file "$TEACHER" "the stage-1 model: run scripts/proda_stage1.sh, or set STAGE1_CKPT to the released one"
echo "ProDA stage 2 ($SRC, configs in $CFG_DIR) from the stage-1 model $TEACHER"

pseudo_labels "$TEACHER" "[stage 2, step 1/2] hard pseudo labels (flip) of the stage-1 model" \
  --config "$(cfg stage2_pseudo)" "${COMMON[@]}"

TRAIN_ARGS=(--config "$(cfg stage2)" "${COMMON[@]}")
mapfile -t LOGDIR < <(logdir_args "${TRAIN_ARGS[@]}")
TRAIN_ARGS+=("${LOGDIR[@]}" --resume_path "$TEACHER" --path_LP "$PSEUDO_OUT")
[[ -n "${SIMCLR_CKPT:-}" ]] && TRAIN_ARGS+=(--simclr_path "$(abspath "$SIMCLR_CKPT")")
BEST="$(opt_path "$BEST_CKPT" "${TRAIN_ARGS[@]}")"
step "[stage 2, step 2/2] train stage 2 (distillation) -> $BEST"
run_train "${TRAIN_ARGS[@]}"
echo "stage 2 done: $BEST"
