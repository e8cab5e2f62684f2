#!/usr/bin/env bash
# ProDA stage 3 (reference README, "Stage3"): from the stage-2 model (the teacher),
#   1. hard pseudo labels (flip) with the stage-2 architecture (--bn_clr --student_init simclr)
#   2. a second self-distillation, teacher with the extra batch norm (train --stage stage3 --ema_bn)
# The teacher is stage 2's best checkpoint (or STAGE2_CKPT). Finished steps are skipped,
# training resumes. Variables: see scripts/proda_lib.sh; the steps: proda/pipeline.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/proda_lib.sh"
exec "$PYTHON" -m proda.pipeline stage3
