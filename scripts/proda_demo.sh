#!/usr/bin/env bash
# Offline ProDA demo: every stage on synthetic street scenes, on a CPU, in about 8 minutes a seed.
#
#   bash scripts/proda_demo.sh                     # one run, the configs' seed, under demo/
#   DEMO_SEEDS="0 1 2" bash scripts/proda_demo.sh  # three seeds, under demo/seed_<s>/, mean +- std
#
# 1. synthetic data (once, shared by every seed): a GTA5-style source set and a Cityscapes-style
#    target set, 128x64, under demo/data (python -m proda.demo.synthetic)
# 2. source-only training from random weights            (configs/demo/src_only.py)
# 3. adversarial warm-up from the source-only model      (configs/demo/gta2city_warmup.py)
# 4. the stand-in for the SimCLR backbone: the source-only backbone (scripts/proda_demo_backbone.py)
# 5. the REAL scripts/proda_stage1.sh, proda_stage2.sh, proda_stage3.sh with CFG_DIR=configs/demo
# 6. test.py on the target val set for each stage's best and last model, with and without
#    test-time adaptation (norm, tent), all of a seed's tests in one process
#    (python -m proda.demo.test_rows: the same numbers as one process each, torch loaded once),
#    and a Markdown table ("best" is selected on that same
#    val set, as the reference selects it: an optimistic pick; the demo validates once, at the
#    end, so its best and last checkpoints are the same file and are tested once)
# Everything is written under demo/ (in the repository); a rerun skips what is done and
# resumes what was interrupted; `rm -rf demo` starts over. Variables:
#   DEMO_SEEDS      training seeds (--seed); each seed's runs live in demo/seed_<s>/ (the data
#                   stay the same); with several, a last table gives mean +- std (sample std)
#   DEMO_ORACLE=1   also train the oracle (target labels) and add it to the table
#   EXTRA_ARGS      extra flags for every entry point (e.g. "--device cpu")
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export SRC=gta5 CFG_DIR="$(dirname "$HERE")/configs/demo"
source "$HERE/proda_lib.sh"
cd "$REPO"  # the demo configs' paths are under demo/ in the repository
pipeline configs warmup stage1 stage2 stage3 base > /dev/null  # stops when one is missing
START=$SECONDS

# Path of a demo stage's config file, e.g. `cfg stage1` -> configs/demo/gta2city_stage1.py.
cfg() { echo "$CFG_DIR/gta2city_$1.py"; }

# The best checkpoint a training config writes. Usage: best_model --config FILE [flags...]
best_model() { pipeline paths best_model "$@"; }

# The last checkpoint beside the best one (train.py writes both).
last_of() { echo "${1%_best_model.pkl}_last_model.pkl"; }

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

# Print a step heading.
step() { echo; echo "==> $*"; }

# Run a command, echoing it first.
run() { echo "+ $*"; "$@"; }

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

step "[demo 1/6] synthetic source (GTA5 layout) and target (Cityscapes layout) data -> demo/data"
run "$PYTHON" -m proda.demo.synthetic --out demo/data --size 128,64 \
  --n_source 200 --n_target_train 100 --n_target_val 50 --seed 0

# Train one demo config (resumes / returns at once when finished); prints its best checkpoint.
demo_train() {
  local config="$1" heading="$2"
  local best
  best="$(best_model --config "$config" "${COMMON[@]}")"
  step "$heading -> $best"
  pipeline train --config "$config" "${COMMON[@]}"  # prints the command it runs
  BEST_OUT="$best"
}

# Queue the tests of one row's best and last models (once when they are the same file) in TESTS;
# appends the label and the two results files to RESULTS. Usage: test_row LABEL CKPT FLAGS
test_row() {
  local label="$1" ckpt="$2" flags="$3" kind model json best_json
  local flag_args
  read -r -a flag_args <<< "$flags"
  RESULTS+=("$label")
  for kind in best last; do
    model="$ckpt"; [[ "$kind" == last ]] && model="$(last_of "$ckpt")"
    if [[ "$kind" == last ]] && cmp -s "$ckpt" "$model"; then
      RESULTS+=("$best_json")  # the same checkpoint: the same numbers
      continue
    fi
    json="$RUN_DIR/results/$(tr -cs 'A-Za-z0-9-' '_' <<< "$label" | sed 's/_$//')_$kind.json"
    if ! up_to_date "$json" "$model" "$json"; then
      TESTS+=(::: --config "$(cfg base)" "${COMMON[@]}" --name demo_test \
        --resume_path "$model" "${flag_args[@]}" --results_json "$json")
    fi
    best_json="$json"
    RESULTS+=("$json")
  done
}

# Run the queued tests, one after another in one process (proda/demo/test_rows.py), and empty TESTS.
run_tests() {
  if (( ${#TESTS[@]} )); then
    run "$PYTHON" -m proda.demo.test_rows "${TESTS[@]:1}"  # the first ':::' separates nothing
  fi
  TESTS=()
}

# Steps 2-6 for one seed (empty: the configs' seed) in RUN_DIR; appends to RESULTS.
demo_seed() {
  local seed="$1"
  if [[ -n "$seed" ]]; then
    RUN_DIR="$REPO/demo/seed_$seed"
    # the configs' relative paths (data, logs, pseudo labels, backbone) are under the seed's
    # folder; its data/ is the shared data
    mkdir -p "$RUN_DIR"
    ln -sfn ../data "$RUN_DIR/data"
    export EXTRA_ARGS="${BASE_EXTRA_ARGS:+$BASE_EXTRA_ARGS }--root $RUN_DIR --seed $seed"
  else
    RUN_DIR="$REPO/demo"
  fi
  capture COMMON pipeline flags  # data roots and EXTRA_ARGS
  step "seed ${seed:-of the configs}: outputs under $RUN_DIR"

  # a model trained on an earlier version of the data must not be resumed
  local src_only warmup oracle="" backbone stage1 stage2 stage3
  src_only="$(best_model --config "$CFG_DIR/src_only.py" "${COMMON[@]}")"
  up_to_date "$src_only" "$REPO/demo/data/.complete" "$RUN_DIR" || true

  demo_train "$CFG_DIR/src_only.py" "[demo 2/6] source-only training"
  src_only="$BEST_OUT"
  demo_train "$(cfg warmup)" "[demo 3/6] adversarial warm-up from the source-only model"
  warmup="$BEST_OUT"
  if [[ "${DEMO_ORACLE:-0}" == 1 ]]; then
    demo_train "$CFG_DIR/oracle.py" "[demo, optional] oracle: training on the target labels"
    oracle="$BEST_OUT"
  fi

  backbone="$(pipeline paths simclr_path --config "$(cfg stage2)" "${COMMON[@]}")"
  step "[demo 4/6] stand-in for the SimCLR backbone: the source-only backbone -> $backbone"
  if up_to_date "$backbone" "$src_only" "$backbone"; then
    echo "    skipped: $backbone exists"
  else
    run "$PYTHON" "$HERE/proda_demo_backbone.py" "$src_only" "$backbone"
  fi

  step "[demo 5/6] the ProDA stage scripts with CFG_DIR=configs/demo"
  bash "$HERE/proda_stage1.sh"
  bash "$HERE/proda_stage2.sh"
  bash "$HERE/proda_stage3.sh"
  stage1="$(best_model --config "$(cfg stage1)" "${COMMON[@]}")"
  stage2="$(best_model --config "$(cfg stage2)" "${COMMON[@]}")"
  stage3="$(best_model --config "$(cfg stage3)" "${COMMON[@]}")"

  step "[demo 6/6] target val mIoU of each stage's best and last model (test.py)"
  # stage-2/3 models carry the extra batch norm: load them as the README's test command does
  local clr="--bn_clr --student_init simclr"
  # test-time adaptation rows (docs/proda.md): tent's outputs come from the forward before its
  # update, so episodic tent takes several steps per image (with one it would equal norm)
  TESTS=()
  test_row "source-only" "$src_only" ""
  test_row "source-only + norm" "$src_only" "--tta norm"
  test_row "source-only + tent (online)" "$src_only" "--tta tent"
  test_row "source-only + tent (episodic)" "$src_only" "--tta tent --tta_episodic --tta_steps 2 --bs 1"
  test_row "warm-up" "$warmup" ""
  test_row "warm-up + tent (online)" "$warmup" "--tta tent"
  test_row "stage1" "$stage1" ""
  test_row "stage2" "$stage2" "$clr"
  test_row "stage3" "$stage3" "$clr"
  [[ -n "$oracle" ]] && test_row "oracle (target labels)" "$oracle" ""
  run_tests
  SEED_LABELS+=("${seed:-config}")
  return 0
}

BASE_EXTRA_ARGS="${EXTRA_ARGS:-}"
read -r -a SEEDS <<< "${DEMO_SEEDS:-}"
(( ${#SEEDS[@]} )) || SEEDS=("")
RESULTS=()
SEED_LABELS=()
for seed in "${SEEDS[@]}"; do
  demo_seed "$seed"
  RESULTS+=("--")  # end of this seed's rows
done

echo
"$PYTHON" "$HERE/proda_demo_table.py" "${SEED_LABELS[@]/#/--seed=}" "${RESULTS[@]}"
echo "(best: the checkpoint with the highest mIoU on this same val set, as the reference picks it; last: the final iteration)"
echo
echo "demo finished in $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s (this run; skipped steps cost nothing)"
