#!/usr/bin/env bash
# One GPU window in one call (`make gpu-check` runs it): every step under a timeout and one global
# deadline, each step's log kept, and a summary with one status line per step. Steps, in order:
#
#   environment   nvidia-smi, the driver and CUDA versions, compute-sanitizer's version
#   binaries      the prebuilt binaries carried in gpu-bin/ (make gpu-bin) start; built here only
#                 if they do not (and only where there is a GPU to run them)
#   op_table      every `cuda*` test case, the CUDA-vs-CPU op table among them
#   bench_gpu     bench/bench_gpu.cpp's rows
#   train_*       GPT-2 small (12 layers, width 768, 12 heads, 1024 tokens) for a few steps: with
#                 clipping and TF32 (the defaults), without clipping, without TF32; tok/s and peak
#                 GPU memory
#   memcheck      the `cuda*` cases under compute-sanitizer memcheck, allocations exact
#                 (EMBER_CUDA_EXACT_ALLOC=1: no rounding slack, no recycled blocks)
#   racecheck     the op table under racecheck (shared-memory races in the block reductions)
#   initcheck     the `cuda*` cases under initcheck, allocations exact
#   synccheck     the op table under synccheck
#   racecheck_attention, synccheck_attention   the fused attention cases under both (its tiles)
#
# Without a GPU every GPU step is marked skipped with the reason, and the script ends in its
# summary within seconds. The exit status is 0 only when every step passed.
#
# Files under $OUT (default build/gpu-window), few enough to come back from a device call:
#   summary.txt, op_table.log, bench_gpu.log, train.log, memcheck.log, racecheck.log, logs.tar.gz
#   (every step's full log).
#
# Environment: OUT; GPU_BIN (default gpu-bin, the carried folder); DEADLINE_S (default 540: the
# whole script, inside a 600 s device call); CUDA_HOME (where compute-sanitizer is looked for
# first); TRAIN_STEPS (default 8).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/build/gpu-window}
bin=${GPU_BIN:-$root/gpu-bin}
[ -d "$bin" ] && bin=$(cd "$bin" && pwd)
deadline_s=${DEADLINE_S:-540}
train_steps=${TRAIN_STEPS:-8}
start=$(date +%s)
mkdir -p "$out"
logs=$(mktemp -d "${TMPDIR:-/tmp}/gpu-window.XXXXXX")
summary=$out/summary.txt
: >"$summary"
failures=0

elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( deadline_s - $(elapsed) )); }
status() {
    printf '%-16s %s\n' "$1" "$2" | tee -a "$summary"
    case $2 in ok*) ;; *) failures=$((failures + 1)) ;; esac
}

# step NAME LIMIT_S PATTERN COMMAND...: runs COMMAND under a timeout of LIMIT_S seconds (cut to what
# the global deadline leaves), its output in $logs/NAME.log. The status line gets the time taken
# and the last line of the log matching PATTERN (an empty PATTERN adds nothing).
step() {
    local name=$1 limit=$2 pattern=$3
    shift 3
    local remaining
    remaining=$(left)
    if [ "$remaining" -lt 15 ]; then
        status "$name" "skipped: the global deadline (${deadline_s} s) is reached"
        return 1
    fi
    [ "$limit" -gt $((remaining - 10)) ] && limit=$((remaining - 10))
    local t0 rc detail=""
    t0=$(date +%s)
    timeout -k 5 "$limit" "$@" >"$logs/$name.log" 2>&1
    rc=$?
    local took=$(( $(date +%s) - t0 ))
    [ -n "$pattern" ] && detail=$(grep -E "$pattern" "$logs/$name.log" | tail -n 1 | tr -s ' ')
    if [ $rc -eq 0 ]; then
        status "$name" "ok (${took} s)${detail:+: $detail}"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        status "$name" "failed: timed out after ${limit} s${detail:+; last: $detail}"
    else
        local last
        last=$(grep -v '^\s*$' "$logs/$name.log" | tail -n 1 | cut -c1-160)
        status "$name" "failed: exit $rc (${took} s)${detail:+: $detail}; last line: $last"
    fi
    return $rc
}

skip() { status "$1" "skipped: $2"; }

echo "gpu window: $(date -u '+%F %T') UTC, deadline ${deadline_s} s, binaries from $bin, logs to $out"

# ---- environment ----
have_gpu=0
if ! command -v nvidia-smi >/dev/null 2>&1; then
    skip environment "no GPU: nvidia-smi is not installed"
elif step environment 20 'Driver Version|NVIDIA' sh -c \
        'nvidia-smi && nvidia-smi -L && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv'; then
    nvidia-smi -L 2>/dev/null | grep -q GPU && have_gpu=1
fi
cuda_home=${CUDA_HOME:-}
sanitizer=""
for c in ${cuda_home:+"$cuda_home/bin/compute-sanitizer" "$cuda_home/compute-sanitizer/compute-sanitizer"} \
         "$(command -v compute-sanitizer 2>/dev/null)" /usr/local/cuda/bin/compute-sanitizer; do
    [ -n "$c" ] && [ -x "$c" ] && { sanitizer=$c; break; }
done
{
    echo "sanitizer: ${sanitizer:-none found}"
    [ -n "$sanitizer" ] && "$sanitizer" --version 2>&1 | tail -n 1
    command -v nvcc >/dev/null && nvcc --version | tail -n 1
    cat "$bin/BUILD_INFO" 2>/dev/null
} >"$logs/versions.log" 2>&1

# ---- binaries: carried, or built here when they will not start ----
tests=$bin/ember_tests bench=$bin/bench_gpu gpt=$bin/gpt
starts() { [ -x "$tests" ] && [ -x "$bench" ] && [ -x "$gpt" ] && "$tests" -ltc >/dev/null 2>&1; }
if starts; then
    status binaries "ok: $bin ($(head -n 1 "$bin/BUILD_INFO" 2>/dev/null))"
elif [ $have_gpu -eq 0 ]; then
    skip binaries "no GPU, so no build here either ($bin's binaries do not start or are missing)"
else
    # Headers the build needs travel in gpu-bin/include (the device image has no -dev packages).
    step build 300 '' make -C "$root" -j"$(nproc)" CUDA=1 BUILD=build-gpu BUILD_DEPS= \
        EXTRA_FLAGS="-I$bin/include" ZLIB="-l:libz.so.1" \
        build-gpu/ember_tests build-gpu/bench_gpu build-gpu/gpt
    tests=$root/build-gpu/ember_tests bench=$root/build-gpu/bench_gpu gpt=$root/build-gpu/gpt
    if starts; then status binaries "ok: built here in build-gpu/"; else skip binaries "the build here failed too (see build.log)"; fi
fi
starts && [ $have_gpu -eq 1 ] && ready=1 || ready=0
why_not="no GPU (nvidia-smi is missing or lists none)"
[ $have_gpu -eq 1 ] && why_not="no binaries that start"

# ---- the CUDA cases and the benchmark ----
if [ $ready -eq 1 ]; then
    # --no-skip: a case that would skip itself (no GPU after all) runs and fails instead.
    step op_table 120 '^op table:|test cases:' "$tests" '-tc=cuda*' --no-skip
    step bench_gpu 90 '' "$bench"
else
    skip op_table "$why_not"
    skip bench_gpu "$why_not"
fi

# ---- GPT-2 small for a few steps ----
text=$logs/text.txt
cat "$root"/*/*.cpp "$root"/*/*.h "$root"/*/*/*.cpp "$root"/*.md 2>/dev/null >"$text"
train() {
    local name=$1
    shift
    if [ $ready -eq 0 ]; then skip "$name" "$why_not"; return; fi
    step "$name" 70 '^throughput:' "$gpt" train --device cuda --data "$text" --out "$logs/$name" \
        --layers 12 --dim 768 --heads 12 --context 1024 --batch 8 --steps "$train_steps" --warmup 2 \
        --eval-every 100000 --eval-batches 1 --save-every 100000 "$@"
}
train train_default
train train_no_clip --clip 0
train train_no_tf32 --tf32=false

# ---- compute-sanitizer ----
sanitize() {
    local name=$1 limit=$2 tool=$3
    shift 3
    if [ $ready -eq 0 ]; then skip "$name" "$why_not"; return; fi
    if [ -z "$sanitizer" ]; then skip "$name" "compute-sanitizer not found (CUDA_HOME=${cuda_home:-unset})"; return; fi
    step "$name" "$limit" 'ERROR SUMMARY|test cases:' "$sanitizer" --tool "$tool" --error-exitcode 86 \
        --print-limit 50 "$@"
}
# The allocator cases are left out: they test the caching mode (exact mode is on here), and the
# 1 PiB request fails on purpose, which memcheck counts as an API error.
EMBER_CUDA_EXACT_ALLOC=1 sanitize memcheck 150 memcheck --leak-check no "$tests" '-tc=cuda*' \
    '-tce=cuda allocator*' --no-skip
sanitize racecheck 100 racecheck "$tests" '-tc=cuda: every op*' --no-skip
EMBER_CUDA_EXACT_ALLOC=1 sanitize initcheck 80 initcheck "$tests" '-tc=cuda*' '-tce=cuda allocator*' \
    --no-skip
sanitize synccheck 60 synccheck "$tests" '-tc=cuda: every op*' --no-skip
# The fused attention kernel's shared-memory tiles and block votes (tests/test_cuda_attention.cpp).
sanitize racecheck_attention 60 racecheck "$tests" '-tc=cuda: the fused attention*' --no-skip
sanitize synccheck_attention 40 synccheck "$tests" '-tc=cuda: the fused attention*' --no-skip

# ---- what comes back ----
echo "total            $(elapsed) s of ${deadline_s} s; $failures step(s) not ok" | tee -a "$summary"
cp "$summary" "$logs/summary.txt"
for f in op_table bench_gpu memcheck racecheck; do
    [ -f "$logs/$f.log" ] && head -c 4000000 "$logs/$f.log" >"$out/$f.log"
done
cat "$logs"/train_*.log >"$out/train.log" 2>/dev/null
tar -C "$logs" -czf "$out/logs.tar.gz" --exclude=text.txt --exclude='train_*/*' . 2>/dev/null
rm -rf "$logs"
[ $failures -eq 0 ]
