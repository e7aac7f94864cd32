#!/usr/bin/env bash
# make fuzz: builds the fuzz targets of tests/fuzz (cargo-fuzz, libFuzzer with AddressSanitizer,
# debug assertions on, so an overflow is a finding too), runs each for FUZZ_SECONDS (default
# 60), prints a summary line per target and writes the table to FUZZ_REPORT (default
# bench/results-fuzz.md). Exit status 1 when a target found something: its input is under
# target/fuzz/artifacts/TARGET/, to replay with the target's binary and that file.
#
#   FUZZ_SECONDS=10 make fuzz                      a quick look
#   FUZZ_TARGETS="dotenv http" make fuzz           some targets only
#
# The toolchain is stable: cargo-fuzz needs nightly flags (-Zsanitizer), which
# RUSTC_BOOTSTRAP=1 allows on stable. cargo-fuzz is installed from crates.io when missing.
# Each target starts from its committed seeds (tests/fuzz/seeds/TARGET, read only) and the
# corpus earlier runs grew (target/fuzz/corpus/TARGET, not committed).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
fuzz_dir=tests/fuzz
build_dir=target/fuzz
seconds=${FUZZ_SECONDS:-60}
report=${FUZZ_REPORT:-bench/results-fuzz.md}
targets=${FUZZ_TARGETS:-$(sed -n 's/^name = "\(.*\)"$/\1/p' "$fuzz_dir/Cargo.toml" | grep -v '^envharness-fuzz$')}
export RUSTC_BOOTSTRAP=1

# libfuzzer-sys builds libFuzzer, which is C++.
if ! command -v c++ >/dev/null 2>&1; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version '^0.13'
fi

# Release with debug assertions (-a): integer overflow panics. All targets, or each one given.
build() { cargo fuzz build --fuzz-dir "$fuzz_dir" --target-dir "$build_dir" -a "$@"; }
if [ -z "${FUZZ_TARGETS:-}" ]; then
    build
else
    for target in $targets; do build "$target"; done
fi
bin_dir=$build_dir/x86_64-unknown-linux-gnu/release

rows=()
found=0
for target in $targets; do
    corpus=$build_dir/corpus/$target
    artifacts=$build_dir/artifacts/$target
    log=$build_dir/logs/$target.log
    rm -rf "$artifacts"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    options=(
        -max_total_time="$seconds"
        -print_final_stats=1
        -artifact_prefix="$artifacts/"
        # Bounded memory and time: one allocation over 64 MiB, 1 GiB in all or an input that
        # takes over 10 s is a finding.
        -malloc_limit_mb=64
        -rss_limit_mb=1024
        -timeout=10
        -max_len=8192
    )
    if [ -f "$fuzz_dir/dicts/$target.dict" ]; then
        options+=(-dict="$fuzz_dir/dicts/$target.dict")
    fi
    echo "fuzzing $target for ${seconds}s"
    status=0
    ASAN_OPTIONS=detect_odr_violation=0 "$bin_dir/$target" "${options[@]}" \
        "$corpus" "$fuzz_dir/seeds/$target" >"$log" 2>&1 || status=$?
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    runs=$(stat number_of_executed_units)
    per_second=$(stat average_exec_per_sec)
    rss=$(stat peak_rss_mb)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    features=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
    units=$(sed -n 's/.*corp: \([0-9]*\).*/\1/p' <<<"$last")
    findings=$(find "$artifacts" -type f | wc -l)
    if [ "$findings" -gt 0 ] || [ "$status" -ne 0 ]; then
        found=1
        [ "$findings" -gt 0 ] || findings="exit $status"
        echo "  $target found something (log: $log):"
        grep -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|Test unit written' "$log" | head -5 | sed 's/^/    /'
    fi
    row="| $target | $seconds | ${runs:-?} | ${per_second:-?} | ${cov:-?} | ${features:-?} | ${units:-?} | ${rss:-?} | $findings |"
    echo "  $row"
    rows+=("$row")
done

{
    echo "# make fuzz"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores shared with other work; $(cargo fuzz --version 2>/dev/null), $(rustc --version | cut -d' ' -f1-2) with RUSTC_BOOTSTRAP=1, AddressSanitizer and debug assertions."
    echo "Each target ran FUZZ_SECONDS=$seconds from its seeds (tests/fuzz/seeds) and the corpus of earlier runs on this machine."
    echo "Coverage is libFuzzer's: edges (cov) and features (ft) reached; corpus: the inputs kept."
    echo
    echo "| target | seconds | executions | exec/s | coverage (edges) | features | corpus | peak RSS (MB) | findings |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} >"$report"
echo "summary written to $report"
exit "$found"
