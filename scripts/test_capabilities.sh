#!/usr/bin/env bash
# Run the default test suite on this CPU's own kernels, then as a CPU with only AVX2 and as one
# without SIMD (torch's ATEN_CPU_CAPABILITY), one after the other, and print one summary line:
#   native (AVX512): 570 passed in 3m12s | avx2: 570 passed in 3m40s | default: 570 passed in 4m05s
# Rounding differs between these kernels as it does between CPUs (Intel, AMD, ARM) and GPUs: a
# test that compares a stored number without a tolerance fails here before it fails for a user.
#
#   bash scripts/test_capabilities.sh                  # the default suite (pytest.ini: not slow)
#   bash scripts/test_capabilities.sh tests/proda/test_proda_step_golden.py   # arguments go to pytest
# Variables: PYTHON (default python), CAPABILITIES (default "native avx2 default"),
# OUT (log folder, default a new temporary one). Exit status: 0 when every run passed.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

summary=()
status=0
for cap in ${CAPABILITIES:-native avx2 default}; do
  log="$OUT/pytest_$cap.log"
  start=$(date +%s)
  if [[ "$cap" == native ]]; then
    env -u ATEN_CPU_CAPABILITY "$PYTHON" -m pytest -q -p no:cacheprovider "$@" >"$log" 2>&1
  else
    ATEN_CPU_CAPABILITY="$cap" "$PYTHON" -m pytest -q -p no:cacheprovider "$@" >"$log" 2>&1
  fi
  rc=$?
  seconds=$(( $(date +%s) - start ))
  (( rc == 0 )) || status=1
  # pytest's last line, e.g. "570 passed, 12 deselected in 190.1s", without its own timing
  result="$(tail -n 1 "$log" | sed -E 's/=+//g; s/ in [0-9.]+s.*//; s/^ +| +$//g')"
  label="$cap"
  [[ "$cap" == native ]] && label="native ($(env -u ATEN_CPU_CAPABILITY "$PYTHON" -c 'import torch; print(torch.backends.cpu.get_cpu_capability())' 2>/dev/null))"
  summary+=("$label: ${result:-no result (exit $rc)} in $((seconds / 60))m$((seconds % 60))s")
  echo "$cap done (exit $rc), log: $log" >&2
done
(IFS='|'; echo "${summary[*]}" | sed 's/|/ | /g')
exit $status
