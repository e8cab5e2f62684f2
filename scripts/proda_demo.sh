#!/usr/bin/env bash
# Offline ProDA demo: every stage on synthetic street scenes, on a CPU, in about 15 minutes.
#
#   bash scripts/proda_demo.sh
#
# 1. synthetic data (once): a GTA5-style source set and a Cityscapes-style target set,
#    128x64, under demo/data (python -m proda.demo.synthetic)
# 2. source-only training from random weights            (configs/demo/src_only.py)
# 3. adversarial warm-up from the source-only model      (configs/demo/gta2city_warmup.py)
# 4. the stand-in for the SimCLR backbone: the source-only backbone (scripts/proda_demo_backbone.py)
# 5. the REAL scripts/proda_stage1.sh, proda_stage2.sh, proda_stage3.sh with CFG_DIR=configs/demo
# 6. test.py on the target val set for each stage's best and last model, and a Markdown table
#    ("best" is selected on that same val set, as the reference selects it: an optimistic pick)
# Everything is written under demo/ (in the repository); a rerun skips what is done and
# resumes what was interrupted; `rm -rf demo` starts over. Variables:
#   DEMO_ORACLE=1   also train the oracle (target labels) and add it to the table
#   EXTRA_ARGS      extra flags for every entry point (e.g. "--device cpu")
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export SRC=gta5 CFG_DIR="$(dirname "$HERE")/configs/demo"
source "$HERE/proda_lib.sh"
cd "$REPO"  # the demo configs' paths are under demo/ in the repository
need_cfg warmup stage1 stage2 stage3 base
capture COMMON common_args
START=$SECONDS

step "[demo 1/6] synthetic source (GTA5 layout) and target (Cityscapes layout) data -> demo/data"
run "$PYTHON" -m proda.demo.synthetic --out demo/data --size 128,64 \
  --n_source 200 --n_target_train 100 --n_target_val 50 --seed 0

# Train one demo config (resumes / returns at once when finished); prints its best checkpoint.
demo_train() {
  local config="$1" heading="$2"
  local best
  best="$(opt_path "$BEST_CKPT" --config "$config" "${COMMON[@]}")"
  step "$heading -> $best"
  run_train --config "$config" "${COMMON[@]}"
  BEST_OUT="$best"
}

# a model trained on an earlier version of the data must not be resumed
SRC_ONLY="$(opt_path "$BEST_CKPT" --config "$CFG_DIR/src_only.py" "${COMMON[@]}")"
up_to_date "$SRC_ONLY" "$REPO/demo/data/.complete" "$REPO/demo" || true

demo_train "$CFG_DIR/src_only.py" "[demo 2/6] source-only training"
SRC_ONLY="$BEST_OUT"
demo_train "$(cfg warmup)" "[demo 3/6] adversarial warm-up from the source-only model"
WARMUP="$BEST_OUT"
if [[ "${DEMO_ORACLE:-0}" == 1 ]]; then
  demo_train "$CFG_DIR/oracle.py" "[demo, optional] oracle: training on the target labels"
  ORACLE="$BEST_OUT"
fi

BACKBONE="$(opt_path o.simclr_path --config "$(cfg stage2)" "${COMMON[@]}")"
step "[demo 4/6] stand-in for the SimCLR backbone: the source-only backbone -> $BACKBONE"
if up_to_date "$BACKBONE" "$SRC_ONLY" "$BACKBONE"; then
  echo "    skipped: $BACKBONE exists"
else
  run "$PYTHON" "$HERE/proda_demo_backbone.py" "$SRC_ONLY" "$BACKBONE"
fi

step "[demo 5/6] the ProDA stage scripts with CFG_DIR=configs/demo"
bash "$HERE/proda_stage1.sh"
bash "$HERE/proda_stage2.sh"
bash "$HERE/proda_stage3.sh"
STAGE1="$(opt_path "$BEST_CKPT" --config "$(cfg stage1)" "${COMMON[@]}")"
STAGE2="$(opt_path "$BEST_CKPT" --config "$(cfg stage2)" "${COMMON[@]}")"
STAGE3="$(opt_path "$BEST_CKPT" --config "$(cfg stage3)" "${COMMON[@]}")"

step "[demo 6/6] target val mIoU of each stage's best and last model (test.py)"
# stage-2/3 models carry the extra batch norm: load them as the README's test command does
CLR="--bn_clr --student_init simclr"
# test-time adaptation rows (docs/tta.md): tent's outputs come from the forward before its
# update, so episodic tent takes several steps per image (with one it would equal norm)
ROWS=("source-only|$SRC_ONLY|" "source-only + norm|$SRC_ONLY|--tta norm"
      "source-only + tent (online)|$SRC_ONLY|--tta tent"
      "source-only + tent (episodic)|$SRC_ONLY|--tta tent --tta_episodic --tta_steps 3 --bs 1"
      "warm-up|$WARMUP|" "warm-up + tent (online)|$WARMUP|--tta tent"
      "stage1|$STAGE1|" "stage2|$STAGE2|$CLR" "stage3|$STAGE3|$CLR")
[[ -n "${ORACLE:-}" ]] && ROWS+=("oracle (target labels)|$ORACLE|")
RESULTS=()
for row in "${ROWS[@]}"; do
  IFS='|' read -r label ckpt flags <<< "$row"
  read -r -a flag_args <<< "$flags"
  RESULTS+=("$label")
  for kind in best last; do
    model="$ckpt"; [[ "$kind" == last ]] && model="$(last_of "$ckpt")"
    json="$REPO/demo/results/$(tr -cs 'A-Za-z0-9-' '_' <<< "$label" | sed 's/_$//')_$kind.json"
    if ! up_to_date "$json" "$model" "$json"; then
      run "$PYTHON" -m proda.test --config "$(cfg base)" "${COMMON[@]}" --name demo_test \
        --resume_path "$model" "${flag_args[@]}" --results_json "$json"
    fi
    RESULTS+=("$json")
  done
done

echo
echo "| stage | target mIoU (%), best model | last model | s / image (test, best) |"
echo "| --- | ---: | ---: | ---: |"
"$PYTHON" - "${RESULTS[@]}" <<'PY'
import json, sys
rows = sys.argv[1:]
for label, best, last in zip(rows[::3], rows[1::3], rows[2::3]):
    runs = [json.load(open(path)) for path in (best, last)]
    print(f"| {label} | {runs[0]['mIoU']:.1f} | {runs[1]['mIoU']:.1f} | {runs[0]['seconds_per_image']:.3f} |")
PY
echo "(best: the checkpoint with the highest mIoU on this same val set, as the reference picks it; last: the final iteration)"
echo
echo "demo finished in $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s (this run; skipped steps cost nothing)"
