#!/usr/bin/env bash
# ProDA stage 1 (reference README, "Stage1"): from the warm-up model,
#   1. soft pseudo labels of the target training images   (generate_pseudo_label --soft)
#   2. initial target prototypes beside the warm-up model  (calc_prototype)
#   3. stage-1 training: prototype-rectified pseudo labels + prototype consistency (train --stage stage1)
# Each step is skipped when its output exists and records the same inputs (a pseudo-label
# folder with .complete, the prototype file); outputs of other inputs (a changed warm-up
# model) stop the script with the `rm` command to run; training resumes from its current
# checkpoint, so a rerun continues a chain that stopped. Variables: see scripts/proda_lib.sh;
# the steps: proda/pipeline.py (python -m proda.pipeline stage1 --dry_run prints them). Examples:
#   bash scripts/proda_stage1.sh                                   # GTA5, the README's paths
#   SRC=synthia SRC_ROOT=/data/SYNTHIA-RAND-CITYSCAPES TGT_ROOT=/data/cityscapes bash scripts/proda_stage1.sh
#   CUDA_VISIBLE_DEVICES=0,1,2,3 bash scripts/proda_stage1.sh      # training on 4 GPUs (torchrun + DDP)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/proda_lib.sh"
exec "$PYTHON" -m proda.pipeline stage1
