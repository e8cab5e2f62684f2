# Shared by scripts/proda_stage{1,2,3}.sh, proda_all.sh and proda_demo.sh (sourced, not run).
# The stage chain itself is proda/pipeline.py (`python -m proda.pipeline STAGE`, see its --help):
# it reads the settings below, computes every file name from the options the entry points
# resolve, skips finished steps and prints each command before running it.
#
# Settings, all environment variables (empty = the value in the config file):
#   SRC          gta5 | synthia                      (default gta5; picks configs <CFG_DIR>/gta2city_* or syn2city_*)
#   CFG_DIR      folder of the stage configs         (default <repo>/configs; the demo uses configs/demo)
#   SRC_ROOT     source dataset root                 (--src_rootpath)
#   TGT_ROOT     Cityscapes root                     (--tgt_rootpath)
#   WARMUP_CKPT  warm-up checkpoint stage 1 starts from
#   STAGE1_CKPT  stage-1 model stage 2 distils       (default: stage 1's best checkpoint)
#   STAGE2_CKPT  stage-2 model stage 3 distils       (default: stage 2's best checkpoint)
#   LOG_DIR      parent of the training log folders  (--logdir LOG_DIR/<name>)
#   PSEUDO_DIR   parent of the pseudo-label folders  (--save_path)
#   SIMCLR_CKPT  SimCLR ResNet-101 for the stage-2/3 student (--simclr_path)
#   EXTRA_ARGS   extra flags for every entry point, e.g. "--bs 2 --num_workers 4"
#   NGPU         GPUs to train on (default: the entries of CUDA_VISIBLE_DEVICES, else nvidia-smi's count)
#   PYTHON       interpreter (default python)
# Relative paths are taken from the current directory, as the configs' own paths are (the ones
# given here are made absolute, so a config's --root does not apply to them).
# Every error stops the script with one line and a non-zero status (the scripts run under
# `set -euo pipefail`; a failing step's status is the script's).

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # `python -m proda.*` without installing
PYTHON="${PYTHON:-python}"

# Run a subcommand of the stage chain: stage1 | stage2 | stage3 | all | train | paths | flags | configs.
pipeline() { "$PYTHON" -m proda.pipeline "$@"; }
