#!/usr/bin/env bash
# envharness benchmark for templates and --environment-root (issue 9). `make bench` runs it
# after bench/run.sh; `make bench-templates` (or `bash bench/templates.sh`) runs it alone. It
# measures the static build (`make static` first; ENVHARNESS_BIN=PATH measures another) with
# hyperfine, prints a Markdown report and writes it to bench/results-templates.md.
#
# Paired rounds, as in bench/run.sh: each round runs every command BENCH_PAIRED_RUNS times back
# to back, and the report takes the median over BENCH_PAIRED_ROUNDS rounds of the per-round
# differences and ratios, so the machine's drift between commands cancels out.
#   - a 1,000-line template over 100 variables, DEST removed before each run (rendered and
#     written), against the same run without -t: goal <= 2 ms added;
#   - the same with DEST already holding the output: goal nothing written (mtime and inode
#     checked after every round);
#   - --environment-root over 100 host patterns against -e naming the chosen directory:
#     goal <= 1.05x.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
OUT_MD="$ROOT/bench/results-templates.md"
ROUNDS=${BENCH_PAIRED_ROUNDS:-30}
RUNS=${BENCH_PAIRED_RUNS:-100}

for v in "${!ENVHARNESS_@}"; do [ "$v" = ENVHARNESS_BIN ] || unset "$v"; done
unset RUST_LOG
export LC_ALL=C

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

BIN=${ENVHARNESS_BIN:-$ROOT/target/x86_64-unknown-linux-musl/release/envharness}
[ -x "$BIN" ] || die "no binary at $BIN: run \`make static\` first"
for tool in hyperfine python3; do
    command -v "$tool" >/dev/null 2>&1 && continue
    command -v apt-get >/dev/null 2>&1 || die "$tool is missing"
    log "installing $tool"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$tool" >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$tool" >&2; }
done

W=$(mktemp -d "${TMPDIR:-/tmp}/envharness-bench-templates.XXXXXX")
trap 'rm -rf -- "$W"' EXIT
mkdir -p "$W/empty" "$W/vars" "$W/fresh" "$W/kept" "$W/hosts/default" "$W/results"

# 100 literals V001..V100.
for ((i = 1; i <= 100; i++)); do
    printf -v name 'V%03d' "$i"
    printf 'value-%03d.example.com\n' "$i" >"$W/vars/$name"
done
# 1,000 lines, each using one of the variables, every tenth through two filters.
for ((i = 1; i <= 1000; i++)); do
    printf -v name 'V%03d' $(( (i - 1) % 100 + 1 ))
    if (( i % 10 == 0 )); then
        printf 'line_%d = {{ %s | upper | replace(".", "_") }}\n' "$i" "$name"
    else
        printf 'line_%d = {{ %s }}\n' "$i" "$name"
    fi
done >"$W/app.conf.j2"
# 100 host patterns (97 web-NNN-*, web-*, *-eu, *) and default; web-042-eu picks web-042-*,
# which holds the same 100 literals.
for ((i = 0; i < 97; i++)); do mkdir -p "$(printf '%s/hosts/web-%03d-*' "$W" "$i")"; done
mkdir -p "$W/hosts/web-*" "$W/hosts/*-eu" "$W/hosts/*"
cp "$W"/vars/* "$W/hosts/web-042-*/"
HOSTNAME_=web-042-eu

q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
E=$(q "$W/empty"); V=$(q "$W/vars"); T=$(q "$W/app.conf.j2"); B=$(q "$BIN")
FRESH="$W/fresh/app.conf"; KEPT="$W/kept/app.conf"

# Sanity, and DEST for the unchanged case, with an old mtime to check against.
"$BIN" -e "$W/vars" -x "$W/empty" -t "$W/app.conf.j2:$KEPT" -- true || die "rendering failed"
[ "$(wc -l <"$KEPT")" -eq 1000 ] || die "expected 1000 rendered lines"
grep -qx 'line_1000 = VALUE-100_EXAMPLE_COM' "$KEPT" || die "unexpected render: $(tail -n 1 "$KEPT")"
touch -d @1000000000 "$KEPT"
KEPT_INODE=$(stat -c %i "$KEPT")
got=$("$BIN" --environment-root "$W/hosts" --hostname "$HOSTNAME_" -x "$W/empty" --plan -- true | grep '^environment-root')
[ "$got" = "environment-root $W/hosts: $HOSTNAME_ -> web-042-*" ] || die "unexpected choice: $got"

args=(
    -n "plain" -p true "$B -e $V -x $E -- true"
    -n "template written" -p "rm -f $(q "$FRESH")" "$B -e $V -x $E -t $T:$(q "$FRESH") -- true"
    -n "template unchanged" -p true "$B -e $V -x $E -t $T:$(q "$KEPT") -- true"
    -n "environment-root" -p true "$B --environment-root $(q "$W/hosts") --hostname $HOSTNAME_ -x $E -- true"
    -n "e chosen" -p true "$B -e $(q "$W/hosts/web-042-*") -x $E -- true"
)
log "$ROUNDS paired rounds of $RUNS runs per command"
for ((r = 1; r <= ROUNDS; r++)); do
    hyperfine -N --style none --warmup 5 --runs "$RUNS" --export-json "$W/results/round_$r.json" \
        "${args[@]}" >/dev/null 2>"$W/hyperfine.err" || die "round $r failed: $(tail -n 3 "$W/hyperfine.err")"
    [ "$(stat -c %Y:%i "$KEPT")" = "1000000000:$KEPT_INODE" ] || die "the unchanged DEST was written (round $r)"
done
cmp -s "$FRESH" "$KEPT" || die "the written and the kept output differ"

python3 - "$W/results" "$ROUNDS" "$RUNS" "$(stat -c %s "$BIN")" "${BIN#"$ROOT"/}" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" >"$W/report.md" <<'PY'
import json, os, sys

res, rounds, runs, size, binpath, rev = sys.argv[1:]
data = []
for r in range(1, int(rounds) + 1):
    with open(os.path.join(res, f"round_{r}.json")) as f:
        data.append({x["command"]: x["median"] for x in json.load(f)["results"]})


def spread(xs):
    xs = sorted(xs)
    n = len(xs)
    mid = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    return mid, xs[n // 10], xs[n - 1 - n // 10]


def diff_ms(a, b):
    return spread([(d[a] - d[b]) * 1e3 for d in data])


def ratio(a, b):
    return spread([d[a] / d[b] for d in data])


def median_ms(a):
    return spread([d[a] * 1e3 for d in data])[0]


out = []
p = out.append
p("# envharness benchmark: templates and --environment-root")
p("")
p(f"Produced by `bash bench/templates.sh` (envharness {rev}, `{binpath}`): {rounds} rounds, each "
  f"running every command {runs} times back to back (`hyperfine -N --warmup 5 --runs {runs}`); "
  "shown is the median over the rounds of the per-round medians, differences and ratios, with "
  "the 10th-90th percentile.")
p("")
p("| command | median (ms) |")
p("|---|---:|")
for name, cmd in [("plain", "envharness -e VARS100 -x EMPTY -- true"),
                  ("template written", "... -t T1000:FRESH -- true (FRESH removed before each run)"),
                  ("template unchanged", "... -t T1000:KEPT -- true (KEPT holds the output)"),
                  ("environment-root", "envharness --environment-root HOSTS100 --hostname web-042-eu -x EMPTY -- true"),
                  ("e chosen", "envharness -e 'HOSTS100/web-042-*' -x EMPTY -- true")]:
    p(f"| {name}: `{cmd}` | {median_ms(name):.3f} |")
p("")
p("VARS100: 100 literals; T1000: 1,000 lines each using one of them (every tenth through "
  "`upper` and `replace`); HOSTS100: 100 pattern subdirectories (`web-000-*` ... `web-096-*`, "
  "`web-*`, `*-eu`, `*`) and `default`, the chosen `web-042-*` holding VARS100's literals.")
p("")
w, wl, wh = diff_ms("template written", "plain")
u, ul, uh = diff_ms("template unchanged", "plain")
h, hl, hh = ratio("environment-root", "e chosen")
mib = int(size) / 1024 / 1024
p("| goal | measured | p10-p90 | result |")
p("|---|---:|---:|---|")
p(f"| a 1,000-line template over 100 variables, written: time added ≤ 2 ms | {w:.3f} ms | {wl:.3f}-{wh:.3f} | {'pass' if w <= 2 else 'miss'} |")
p(f"| the same, DEST unchanged: nothing written (mtime and inode checked every round) | {u:.3f} ms added | {ul:.3f}-{uh:.3f} | pass |")
p(f"| `--environment-root` over 100 patterns ÷ `-e` the chosen directory ≤ 1.05× | {h:.3f}× | {hl:.3f}-{hh:.3f}× | {'pass' if h <= 1.05 else 'miss'} |")
p(f"| static binary ≤ 3 MiB with TLS | {mib:.2f} MiB ({size} bytes) | | {'pass' if mib <= 3 else 'miss'} |")
print("\n".join(out))
PY
mv -f "$W/report.md" "$OUT_MD"
cat "$OUT_MD"
log "report written to ${OUT_MD#"$ROOT"/}"
