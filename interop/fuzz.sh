#!/bin/bash
# interop/fuzz.sh: fuzz every wire decoder (issue 11 item 10; not CI, needs nightly and cargo-fuzz).
# Builds the cargo-fuzz crate tests/fuzz with `cargo +nightly fuzz build -O -a` (release, debug
# assertions and overflow checks on, AddressSanitizer), then runs each target for --minutes,
# --jobs targets at a time, starting from the checked-in seeds (tests/fuzz/seeds/<target>, valid
# encodings of every procedure; rewritten by `cargo test -p hanfs-tests -- --ignored
# write_fuzz_seeds`) and the corpus of earlier runs (tests/fuzz/corpus/<target>, not checked in).
# Every crash, timeout or out-of-memory input is copied into tests/fuzz/regressions/<target>/,
# which the CI test tests/fuzz_replay.rs replays on stable: commit it with the fix.
# Prints a table (target, executions, corpus size, crashes); exit 0 with no crash, 1 with any,
# 2 on a harness error. Logs: tests/fuzz/logs/<target>.log.
set -euo pipefail

INTEROP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$INTEROP")
FUZZ=$REPO/tests/fuzz
ALL_TARGETS=(rpc_record rpc_call nfs3 mount portmap nlm nsm raft_frame)
# Per-input bounds: a slower input is a timeout, a larger RSS an out-of-memory crash.
INPUT_TIMEOUT_SECONDS=10
RSS_LIMIT_MB=2048

usage() {
    cat <<USAGE
usage: interop/fuzz.sh [--minutes N] [--jobs J] [--targets a,b,...] [--no-build]
  --minutes N    how long each target runs, default 10 (1..1440)
  --jobs J       targets run at the same time, default 1
  --targets L    only these targets (default: ${ALL_TARGETS[*]})
  --no-build     use the binaries already built
Runs niced (FUZZ_NICE, default 10).
USAGE
}

MINUTES=10 JOBS=1 TARGETS=("${ALL_TARGETS[@]}") BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES=${2:?}; shift 2 ;;
        --jobs) JOBS=${2:?}; shift 2 ;;
        --targets) IFS=, read -r -a TARGETS <<<"${2:?}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
case "$MINUTES" in ''|*[!0-9]*) echo "--minutes wants a number" >&2; exit 2 ;; esac
case "$JOBS" in ''|*[!0-9]*|0) echo "--jobs wants a number >= 1" >&2; exit 2 ;; esac
if [ "$MINUTES" -lt 1 ] || [ "$MINUTES" -gt 1440 ]; then echo "--minutes: 1..1440" >&2; exit 2; fi
for t in "${TARGETS[@]}"; do
    case " ${ALL_TARGETS[*]} " in *" $t "*) ;; *) echo "unknown target $t" >&2; exit 2 ;; esac
done
NICE=${FUZZ_NICE:-10}

if [ "$BUILD" = 1 ]; then
    if ! cargo +nightly --version >/dev/null 2>&1; then
        echo "fuzz.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
        exit 2
    fi
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "fuzz.sh: needs cargo-fuzz (cargo install cargo-fuzz)" >&2
        exit 2
    fi
    echo "building the fuzz targets (cargo +nightly fuzz build -O -a)..."
    (cd "$REPO" && nice -n "$NICE" cargo +nightly fuzz build --fuzz-dir tests/fuzz -O -a) || exit 2
fi
BIN=$FUZZ/target/x86_64-unknown-linux-gnu/release
for t in "${TARGETS[@]}"; do
    [ -x "$BIN/$t" ] || { echo "fuzz.sh: $BIN/$t not built" >&2; exit 2; }
    [ -d "$FUZZ/seeds/$t" ] || { echo "fuzz.sh: no seeds in $FUZZ/seeds/$t" >&2; exit 2; }
done
mkdir -p "$FUZZ/logs"

# One target: libFuzzer for MINUTES, new inputs into corpus/<t>, crashers into artifacts/<t>.
run_one() {
    local t=$1
    local corpus=$FUZZ/corpus/$t artifacts=$FUZZ/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    rm -f "$artifacts"/*
    # libFuzzer exits non-zero on a crash; the artifacts say what happened.
    nice -n "$NICE" "$BIN/$t" "$corpus" "$FUZZ/seeds/$t" \
        -max_total_time=$((MINUTES * 60)) -timeout=$INPUT_TIMEOUT_SECONDS -rss_limit_mb=$RSS_LIMIT_MB \
        -detect_leaks=0 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        >"$FUZZ/logs/$t.log" 2>&1 || true
}

declare -a PIDS=()
for t in "${TARGETS[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    echo "fuzzing $t for $MINUTES min..."
    run_one "$t" &
    PIDS+=($!)
done
for pid in "${PIDS[@]}"; do wait "$pid" || true; done

CRASHED=0
printf '\n%-12s %14s %12s %8s\n' target executions corpus crashes
for t in "${TARGETS[@]}"; do
    log=$FUZZ/logs/$t.log
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ -z "$execs" ]; then
        # No final stats (killed): the last status line's count.
        execs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')
    fi
    corpus=$(find "$FUZZ/corpus/$t" -type f | wc -l)
    crashes=$(find "$FUZZ/artifacts/$t" -type f | wc -l)
    if [ "$crashes" -gt 0 ]; then
        CRASHED=1
        mkdir -p "$FUZZ/regressions/$t"
        cp "$FUZZ/artifacts/$t"/* "$FUZZ/regressions/$t/"
    fi
    printf '%-12s %14s %12s %8s\n' "$t" "${execs:-?}" "$corpus" "$crashes"
done
if [ "$CRASHED" = 1 ]; then
    echo "crashers copied into tests/fuzz/regressions/<target>/; see tests/fuzz/logs/<target>.log" >&2
    exit 1
fi
