#!/usr/bin/env bash
# The whole ProDA chain: [warm-up ->] stage 1 -> stage 2 -> stage 3, each step skipped when done.
#   WARMUP=pretrained (default): start from WARMUP_CKPT or the config's path (the released model)
#   WARMUP=train: train the warm-up first (maintainers' recipe, configs/<src>2city_warmup.py)
# Other variables: see scripts/proda_lib.sh; the steps: proda/pipeline.py. Example:
#   SRC=gta5 SRC_ROOT=/data/GTA5 TGT_ROOT=/data/cityscapes CUDA_VISIBLE_DEVICES=0,1,2,3 bash scripts/proda_all.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/proda_lib.sh"
exec "$PYTHON" -m proda.pipeline all
