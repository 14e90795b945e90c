#!/usr/bin/env bash
# `make gpu-check`: the CUDA test cases on a real GPU, then the same cases under
# compute-sanitizer's memcheck, and a one-screen summary. Fails loudly when there is no GPU (the
# plain test run skips the CUDA cases there; this check exists to run them).
#
# usage: scripts/gpu_check.sh TEST_BINARY [CUDA_HOME]
set -u
bin=${1:?usage: gpu_check.sh TEST_BINARY [CUDA_HOME]}
cuda_home=${2:-/usr/local/cuda}
filter='-tc=cuda*'
logs=$(dirname "$bin")/gpu-check
mkdir -p "$logs"

fail() { echo "gpu-check: FAILED: $*" >&2; exit 1; }

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    fail "no NVIDIA GPU on this machine (nvidia-smi is missing or lists no device). Run it where" \
         "a GPU is present; 'make test' alone skips the CUDA cases."
fi
gpu=$(nvidia-smi -L | head -n 1)

sanitizer=$(command -v compute-sanitizer || true)
for candidate in "$cuda_home/bin/compute-sanitizer" "$cuda_home/compute-sanitizer/compute-sanitizer"; do
    [ -z "$sanitizer" ] && [ -x "$candidate" ] && sanitizer=$candidate
done

# --no-skip: a case that would skip itself (no GPU after all) runs and fails instead.
"$bin" "$filter" --no-skip >"$logs/tests.log" 2>&1
tests_rc=$?
tests_line=$(grep 'test cases:' "$logs/tests.log" | tail -n 1)
asserts_line=$(grep 'assertions:' "$logs/tests.log" | tail -n 1)

if [ -n "$sanitizer" ]; then
    # The 1 PiB allocation case is left out here: its cudaMalloc fails on purpose, and memcheck
    # counts a failed API call as an error.
    "$sanitizer" --tool memcheck --error-exitcode 86 --print-limit 20 "$bin" "$filter" --no-skip \
        '-tce=*impossible request*' >"$logs/memcheck.log" 2>&1
    memcheck_rc=$?
    errors=$(grep -Eo 'ERROR SUMMARY: [0-9]+' "$logs/memcheck.log" | tail -n 1 | grep -Eo '[0-9]+$')
    memcheck_tests=$(grep 'test cases:' "$logs/memcheck.log" | tail -n 1)
else
    memcheck_rc=1
    errors="(compute-sanitizer not found)"
    memcheck_tests=""
fi

echo "================================ gpu-check ================================"
echo "device:            $gpu"
echo "CUDA cases:        ${tests_line:-no summary (crashed? see $logs/tests.log)}"
echo "                   ${asserts_line}"
echo "under memcheck:    ${memcheck_tests:-no summary (see $logs/memcheck.log)}"
echo "sanitizer errors:  ${errors:-unknown}"
echo "logs:              $logs/tests.log, $logs/memcheck.log"
echo "==========================================================================="
if [ $tests_rc -ne 0 ]; then
    grep -B2 -A8 'ERROR' "$logs/tests.log" | head -n 40
    fail "CUDA test cases failed (exit $tests_rc)"
fi
[ $memcheck_rc -eq 0 ] || fail "memcheck run failed (exit $memcheck_rc, errors: ${errors:-?})"
echo "gpu-check: OK"
