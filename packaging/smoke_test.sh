#!/usr/bin/env bash
# Run the built bundle headless, the way a user's machine would: no display, no PYTHONPATH, from an
# empty folder. Checks `nibble --version` and `nibble selftest` (quantize to Q8_0, load, generate).
#
#   bash packaging/smoke_test.sh [dist/nibble/nibble]
#
# The self-test uses the demo model inside the bundle; a bundle built without it gets a tiny random
# model made here with tests/tinymodels.py (needs the source checkout's Python packages).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NIBBLE=$(readlink -f "${1:-dist/nibble/nibble}")
[ -x "$NIBBLE" ] || { echo "smoke_test.sh: no program at $NIBBLE; run packaging/build_linux.sh" >&2; exit 1; }
WORK=$(mktemp -d /tmp/nibble-smoke.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
run() { env -u PYTHONPATH -u PYTHONHOME -u DISPLAY -u WAYLAND_DISPLAY QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 "$NIBBLE" "$@"; }

echo "== nibble --version"
t0=$(date +%s.%N)
run --version | tee version.txt
t1=$(date +%s.%N)
grep -q "^Nibble " version.txt || { echo "FAIL: --version does not name Nibble"; exit 1; }
grep -q "^llama.cpp: llama-cpp-python [0-9]" version.txt || { echo "FAIL: --version has no llama.cpp version"; exit 1; }

MODEL_ARGS=()
if [ ! -f "$(dirname "$NIBBLE")/_internal/resources/demo/config.json" ]; then
    echo "== the bundle has no demo model; making a tiny one"
    PYTHONPATH="$ROOT/tests" python3 -c "from tinymodels import make_model; make_model('$WORK/tiny')" >/dev/null 2>&1
    MODEL_ARGS=(--model "$WORK/tiny")
fi
echo "== nibble selftest ${MODEL_ARGS[*]}"
t2=$(date +%s.%N)
run selftest "${MODEL_ARGS[@]}" | tee selftest.txt
t3=$(date +%s.%N)
grep -q "^PASS" selftest.txt || { echo "FAIL: selftest did not pass"; exit 1; }
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v size="$(du -sh "$(dirname "$NIBBLE")" | cut -f1)" \
    'BEGIN { printf "smoke test passed: --version %.1f s, selftest %.1f s, bundle %s\n", b - a, d - c, size }' 
