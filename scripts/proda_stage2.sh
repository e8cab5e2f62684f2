#!/usr/bin/env bash
# ProDA stage 2 (reference README, "Stage2"): from the stage-1 model (the teacher),
#   1. hard pseudo labels, averaged with the flipped image  (generate_pseudo_label --flip)
#   2. self-distillation into a SimCLR-initialised student    (train --stage stage2)
# The teacher is stage 1's best checkpoint (or STAGE1_CKPT, e.g. the released stage-1 model);
# the student needs the SimCLR checkpoint (SIMCLR_CKPT or the config's --simclr_path).
# Finished steps are skipped, training resumes. Variables: see scripts/proda_lib.sh;
# the steps: proda/pipeline.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/proda_lib.sh"
exec "$PYTHON" -m proda.pipeline stage2
