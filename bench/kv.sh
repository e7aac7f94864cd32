#!/usr/bin/env bash
# envharness kv against cat (issue 10): `kv get` and `kv put` of a value, whole process, paired
# against `cat` of a file of the same size. bench/run.sh runs it as its last section; alone:
#
#   bash bench/kv.sh [LABEL=BINARY ...]      default: the static build, else the release build
#
# It prints a Markdown section on stdout, progress on stderr, and with BENCH_KV_GOALS=FILE
# also appends its goals to FILE as `goal<TAB>measured<TAB>verdict` lines (run.sh's summary).
# The store is a file store in a temporary directory (on the file system of ${TMPDIR:-/tmp}).
# Tunables: BENCH_KV_ROUNDS (default 20) rounds of BENCH_KV_RUNS (default 100) runs each.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
ROUNDS=${BENCH_KV_ROUNDS:-20}
RUNS=${BENCH_KV_RUNS:-100}
for v in "${!ENVHARNESS_@}"; do unset "$v"; done
unset RUST_LOG
export LC_ALL=C

log() { printf 'bench kv: %s\n' "$*" >&2; }
die() { printf 'bench kv: error: %s\n' "$*" >&2; exit 1; }
command -v hyperfine >/dev/null 2>&1 || die "hyperfine is needed (make bench installs it)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed"

labels=(); paths=()
if [ "$#" -eq 0 ]; then
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    for candidate in "$TARGET_DIR/x86_64-unknown-linux-musl/release/envharness" "$TARGET_DIR/release/envharness"; do
        if [ -x "$candidate" ]; then
            case $candidate in *musl*) labels+=(envharness-static) ;; *) labels+=(envharness) ;; esac
            paths+=("$candidate")
            break
        fi
    done
    [ "${#paths[@]}" -gt 0 ] || die "no release build: run make static (or cargo build --release) first"
else
    for arg in "$@"; do labels+=("${arg%%=*}"); paths+=("${arg#*=}"); done
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/envharness-bench-kv.XXXXXX")
trap 'rm -rf -- "$W"' EXIT
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
URL="file://$W/store"
SIZES=(100 65536)

# Values of each size: printable bytes (an argument cannot hold NUL), the same for every build.
for size in "${SIZES[@]}"; do
    head -c "$size" /dev/zero | tr '\0' 'v' >"$W/value$size"
done

args=()
for i in "${!paths[@]}"; do
    b=${paths[$i]}; l=${labels[$i]}
    for size in "${SIZES[@]}"; do
        value=$(cat "$W/value$size")
        "$b" --kv "$URL" kv put "bench/get$size" "$value" || die "$l kv put failed"
        got=$("$b" --kv "$URL" kv get "bench/get$size") || die "$l kv get failed"
        [ "$got" = "$value" ] || die "$l kv get gave another value"
        args+=(-n "$l get $size" "$(q "$b") --kv $(q "$URL") kv get bench/get$size")
        args+=(-n "$l put $size" "$(q "$b") --kv $(q "$URL") kv put bench/put$size $(q "$value")")
    done
done
# `cat` is the goal's reference; busybox's static cat (when installed) shows what is left
# once dynamic linking is out of the comparison.
BUSYBOX=''
[ -x /bin/busybox ] && /bin/busybox cat /dev/null 2>/dev/null && BUSYBOX=/bin/busybox
for size in "${SIZES[@]}"; do
    args+=(-n "cat $size" "cat $(q "$W/value$size")")
    [ -z "$BUSYBOX" ] || args+=(-n "busybox cat $size" "$BUSYBOX cat $(q "$W/value$size")")
    args+=(-n "cp $size" "cp $(q "$W/value$size") $(q "$W/copy$size")")
done

log "$ROUNDS rounds of $RUNS runs of: ${labels[*]} kv get/put, cat and cp, at ${SIZES[*]} bytes"
for ((r = 1; r <= ROUNDS; r++)); do
    hyperfine -N --style none --warmup 5 --runs "$RUNS" --export-json "$W/round_$r.json" "${args[@]}" \
        >/dev/null 2>&1 || die "round $r failed"
done

python3 - "$W" "$ROUNDS" "$RUNS" "${SIZES[*]}" "${labels[*]}" "$(df -T "$W" | awk 'NR == 2 {print $2}')" \
    "${BENCH_KV_GOALS:-}" <<'PY'
import json, os, sys

w, rounds_n, runs, sizes, labels, fstype, goals_file = sys.argv[1:8]
sizes = sizes.split()
labels = labels.split()
rounds = []
for r in range(1, int(rounds_n) + 1):
    with open(os.path.join(w, f"round_{r}.json")) as f:
        rounds.append({x["command"]: x for x in json.load(f)["results"]})


def spread(xs):
    xs = sorted(xs)
    n = len(xs)
    mid = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    return mid, xs[n // 10], xs[n - 1 - n // 10]


def paired(a, b):
    return spread([x[a]["median"] / x[b]["median"] for x in rounds])


def ms(a):
    return spread([x[a]["median"] * 1e3 for x in rounds])[0]


out = []
p = out.append
goals = []
p("## envharness kv against cat (issue 10)")
p("")
p(f"Whole processes: `envharness --kv file:///DIR kv get KEY` and `kv put KEY VALUE` (the value as "
  f"an argument), paired against `cat FILE` of a file of the same size (and `cp FILE COPY` for "
  f"the write). The store is on {fstype}. {rounds_n} rounds; in each, hyperfine runs every command "
  f"{runs} times, one after the other; shown is the median over the rounds of each round's ratio "
  "of medians, with the 10th–90th percentile. `bash bench/kv.sh` runs this section alone.")
p("")
busybox = f"busybox cat {sizes[0]}" in rounds[0]
p("| command | size (bytes) | median (ms) | ÷ `cat` | p10–p90 | ÷ `cp` |"
  + (" ÷ `busybox cat` |" if busybox else ""))
p("|---|---:|---:|---:|---:|---:|" + ("---:|" if busybox else ""))
for size in sizes:
    extra = " |" if busybox else ""
    p(f"| `cat FILE` | {size} | {ms(f'cat {size}'):.3f} | | | |" + extra)
    if busybox:
        p(f"| `busybox cat FILE` (static) | {size} | {ms(f'busybox cat {size}'):.3f} | | | | |")
    p(f"| `cp FILE COPY` | {size} | {ms(f'cp {size}'):.3f} | | | |" + extra)
    for l in labels:
        for op in ("get", "put"):
            name = f"{l} {op} {size}"
            mid, lo, hi = paired(name, f"cat {size}")
            cp = paired(name, f"cp {size}")[0]
            bb = f" {paired(name, f'busybox cat {size}')[0]:.2f}× |" if busybox else ""
            p(f"| `{l} kv {op}` | {size} | {ms(name):.3f} | {mid:.2f}× | {lo:.2f}–{hi:.2f}× | {cp:.2f}× |" + bb)
            goals.append((f"`{l} kv {op}` of {size} bytes ≤ 3 × `cat` of the same size", f"{mid:.2f}×",
                          "**PASS**" if mid <= 3 else "**MISS**"))
p("")
for text, measured, verdict in goals:
    p(f"- Goal: {text} — measured {measured} → {verdict}")
print("\n".join(out))
if goals_file:
    with open(goals_file, "a") as f:
        for g in goals:
            f.write("\t".join(g) + "\n")
PY
