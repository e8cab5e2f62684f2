# Shared by scripts/proda_stage{1,2,3}.sh, proda_all.sh and proda_demo.sh (sourced, not run).
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
# Every error stops the script with its message: the scripts run under `set -euo pipefail`,
# and nothing that can fail runs where bash would ignore its status (inside an argument's
# $(...) or a `< <(...)`): configs are checked with need_cfg, and outputs are read with capture.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # `python -m proda.*` without installing
SRC="${SRC:-gta5}"
CFG_DIR="${CFG_DIR:-$REPO/configs}"
PYTHON="${PYTHON:-python}"
case "$SRC" in
  gta5) PREFIX=gta2city ;;
  synthia) PREFIX=syn2city ;;
  *) echo "error: SRC must be gta5 or synthia, got '$SRC'" >&2; exit 2 ;;
esac
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

# Path of a stage's config file, e.g. `cfg stage1` -> configs/gta2city_stage1.py (checked by need_cfg).
cfg() { echo "$CFG_DIR/${PREFIX}_$1.py"; }

# Stop the script, in its own shell, when a stage's config file is missing. Usage: need_cfg STAGE...
need_cfg() {
  local stage file
  for stage in "$@"; do
    file="$(cfg "$stage")"
    if [[ ! -f "$file" ]]; then
      echo "error: config $file not found (CFG_DIR=$CFG_DIR, SRC=$SRC)" >&2
      exit 2
    fi
  done
}

# Read the output lines of a command into the array VAR; a failing command stops the script
# (`mapfile < <(cmd)` would ignore its status). Usage: capture VAR cmd [args...]
capture() {
  local __name="$1" __out
  shift
  __out="$("$@")" || exit $?
  if [[ -n "$__out" ]]; then
    mapfile -t "$__name" <<< "$__out"
  else
    eval "$__name=()"
  fi
}

# Absolute form of a path (the file need not exist).
abspath() { realpath -m -- "$1"; }

# Flags shared by every step: data roots and EXTRA_ARGS.
common_args() {
  local args=()
  [[ -n "${SRC_ROOT:-}" ]] && args+=(--src_rootpath "$(abspath "$SRC_ROOT")")
  [[ -n "${TGT_ROOT:-}" ]] && args+=(--tgt_rootpath "$(abspath "$TGT_ROOT")")
  args+=("${EXTRA[@]}")
  (( ${#args[@]} )) && printf '%s\n' "${args[@]}"
  return 0
}

# Print a Python expression over the options that `args...` resolve to (defaults < config
# < flags, --root applied), as the entry points resolve them.
# Usage: opt_eval EXPR --config FILE [flags...]; `o` is the options namespace.
# The helpers of proda.manifest (pseudo_labels_done, prototypes_done) may be called too; their
# refusals (outputs of other inputs) are printed as one line and stop the script.
opt_eval() {
  local expr="$1"; shift
  "$PYTHON" - "$expr" "$@" <<'PY'
import os, sys
from proda.options import parse_opt  # light: neither this nor proda.manifest imports torch
o = parse_opt(sys.argv[2:])

def manifest(name):
    def check(*args):
        import proda.manifest
        return getattr(proda.manifest, name)(*args)
    return check

try:
    print(eval(sys.argv[1], {"o": o, "os": os, "pseudo_labels_done": manifest("pseudo_labels_done"),
                             "prototypes_done": manifest("prototypes_done")}))
except (ValueError, RuntimeError, OSError) as err:  # OptionError, CheckpointError, file errors
    sys.exit(f"error: {err}")
PY
}

# opt_eval for a path, printed as an absolute path. Usage: opt_path EXPR --config FILE [flags...]
opt_path() { opt_eval "os.path.abspath($1)" "${@:2}"; }

# File-name patterns of the entry points (the reference's names).
BEST_CKPT='os.path.join(o.logdir, f"from_{o.src_dataset}_to_{o.tgt_dataset}_on_{o.model_name}_best_model.pkl")'
# the last checkpoint beside the best one (train.py writes both; "best" is selected on the evaluation set)
last_of() { echo "${1%_best_model.pkl}_last_model.pkl"; }
PSEUDO_FOLDER='os.path.join(o.save_path, o.name)'
PROTOTYPE_FILE='os.path.join(os.path.dirname(o.resume_path), f"prototypes_on_{o.tgt_dataset}_from_{o.model_name}")'

# --logdir LOG_DIR/<name> for a training config when LOG_DIR is set.
logdir_args() {
  [[ -z "${LOG_DIR:-}" ]] && return 0
  local name
  name="$(opt_eval o.name "$@")" || return
  printf '%s\n' --logdir "$(abspath "$LOG_DIR")/$name"
}

# Number of GPUs to train on.
gpu_count() {
  if [[ -n "${NGPU:-}" ]]; then
    echo "$NGPU"
  elif [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
    local ids="${CUDA_VISIBLE_DEVICES// /}"
    if [[ -z "$ids" || "$ids" == -1* ]]; then echo 0; else awk -F, '{print NF}' <<< "$ids"; fi
  elif command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true
  else
    echo 0
  fi
}

# Print a trained stage's two models: the best (selected on the target val set, the set the
# reference reports, as the reference selects it) and the last (the final iteration).
report_models() {
  echo "  best model (selected on the target val set): $1"
  echo "  last model (final iteration):                $(last_of "$1")"
}

# Print a step heading.
step() { echo; echo "==> $*"; }

# Run a command, echoing it first.
run() { echo "+ $*"; "$@"; }

# Train: torchrun + DDP (SyncBatchNorm) with more than one GPU, else one process. proda.launch
# takes torchrun's arguments and ends in the failing process's one line, not torchrun's report.
run_train() {
  local n
  n="$(gpu_count)"
  if (( n > 1 )); then
    run "$PYTHON" -m proda.launch --standalone --nproc_per_node="$n" -m proda.train "$@"
  else
    run "$PYTHON" -m proda.train "$@"
  fi
}

# For the demo's derived files without a manifest (a backbone, a results file): true when
# `output` exists and is newer than the checkpoint it was computed from; stops with a clear
# message when it is older (delete `stale` to recompute). Usage: up_to_date OUTPUT SOURCE STALE
up_to_date() {
  local output="$1" source="$2" stale="$3"
  [[ -e "$output" ]] || return 1
  if [[ -e "$source" && "$source" -nt "$output" ]]; then
    echo "error: $stale was computed before $source was last written;" \
         "delete it (rm -r '$stale') and rerun" >&2
    exit 1
  fi
  return 0
}

# Stop with one line when a checkpoint a step needs is missing.
require_file() {
  local path="$1" hint="$2"
  if [[ ! -f "$path" ]]; then
    echo "error: $path not found ($hint)" >&2
    exit 1
  fi
}

# Generate pseudo labels unless the folder is complete; sets PSEUDO_OUT to the folder.
# Usage: pseudo_labels CKPT HEADING --config FILE [flags...]
pseudo_labels() {
  local ckpt="$1" heading="$2"; shift 2
  local args=("$@")
  [[ -n "${PSEUDO_DIR:-}" ]] && args+=(--save_path "$(abspath "$PSEUDO_DIR")")
  args+=(--resume_path "$ckpt")
  local done
  PSEUDO_OUT="$(opt_path "$PSEUDO_FOLDER" "${args[@]}")"
  step "$heading -> $PSEUDO_OUT"
  # complete and made from this checkpoint and these options (else: refused, or not done)
  done="$(opt_eval "pseudo_labels_done(o, $PSEUDO_FOLDER, '.complete')" "${args[@]}")"
  if [[ "$done" == True ]]; then
    echo "    skipped: $PSEUDO_OUT is complete and made from $ckpt"
    return 0
  fi
  run "$PYTHON" -m proda.generate_pseudo_label "${args[@]}"
}

# Stage 2 or 3 (reference README, "Stage2" / "Stage3"): hard pseudo labels (flip) of the previous
# stage's model (the teacher), then self-distillation training (train --stage stage<N>).
# Usage: distill_stage N PREVIOUS_STAGE TEACHER_OVERRIDE (empty: the previous stage's best model)
distill_stage() {
  local n="$1" prev="$2" override="$3" teacher best
  local common prev_args train_args logdir
  need_cfg "stage${n}_pseudo" "stage$n"
  capture common common_args
  if [[ -n "$override" ]]; then
    teacher="$(abspath "$override")"
  else
    need_cfg "$prev"
    prev_args=(--config "$(cfg "$prev")" "${common[@]}")
    capture logdir logdir_args "${prev_args[@]}"
    teacher="$(opt_path "$BEST_CKPT" "${prev_args[@]}" "${logdir[@]}")"
  fi
  require_file "$teacher" "the $prev model: run scripts/proda_$prev.sh, or set ${prev^^}_CKPT to the released one"
  echo "ProDA stage $n ($SRC, configs in $CFG_DIR) from the $prev model $teacher"

  pseudo_labels "$teacher" "[stage $n, step 1/2] hard pseudo labels (flip) of the $prev model" \
    --config "$(cfg "stage${n}_pseudo")" "${common[@]}"

  train_args=(--config "$(cfg "stage$n")" "${common[@]}")
  capture logdir logdir_args "${train_args[@]}"
  train_args+=("${logdir[@]}" --resume_path "$teacher" --path_LP "$PSEUDO_OUT")
  [[ -n "${SIMCLR_CKPT:-}" ]] && train_args+=(--simclr_path "$(abspath "$SIMCLR_CKPT")")
  best="$(opt_path "$BEST_CKPT" "${train_args[@]}")"
  step "[stage $n, step 2/2] train stage $n (distillation) -> $best"
  run_train "${train_args[@]}"
  echo "stage $n done:"
  report_models "$best"
}
