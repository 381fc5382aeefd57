#!/usr/bin/env bash
# Build the cargo-fuzz targets and run each for a short bounded time,
# starting from the committed seeds (fuzz/seeds/<target>) plus the local,
# ignored corpus (fuzz/corpus/<target>). Exits non-zero on the first crash,
# timeout (-timeout=1: any input over 1 s) or out-of-memory; the input that
# caused it is left in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS]           # SECONDS per target, default 20
#   FUZZ_TARGETS="mqtt_v4" fuzz/run.sh 60
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The stable
# toolchain is enough: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's -Z flags.
# Built without a sanitizer (the code under test is safe Rust, and ASan
# halves the executions per second) but with debug assertions and overflow
# checks (-a). One target runs at a time, under nice.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
export RUSTC_BOOTSTRAP=1
read -r -a targets <<<"${FUZZ_TARGETS:-amqp_frame mqtt_v4 mqtt_v5 store_record store_recover cluster_frame}"
flags=(--sanitizer none --debug-assertions)

nice -n 10 cargo fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== fuzz $t for ${secs}s"
    nice -n 10 cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=1 -rss_limit_mb=2048 -print_final_stats=1
done
# store_recover's scratch directories (warren-fuzz-recover-PID) left by
# runs that died; never those of a fuzzer still running.
for d in /dev/shm/warren-fuzz-recover-*; do
    if [ -d "$d" ] && ! kill -0 "${d##*-}" 2>/dev/null; then
        rm -rf "$d"
    fi
done
echo "fuzz: all targets ran ${secs}s without a crash"
