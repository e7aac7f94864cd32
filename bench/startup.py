#!/usr/bin/env python3
"""The floor figures: start-up, the cost of one script, --init, the supervisor's memory and the
binary's size, each against its anchor (env, a C program doing only fork+pipe+read+wait, a dash
loop, tini) and against the static binary of the commit before the change, measured in one run
with bench/rounds.c: every round runs each command once, and each ratio is taken within a
round, so the machine's drift between rounds does not land in it. Prints a Markdown report and
writes it to bench/results-startup.md.

    python3 bench/startup.py            (make bench runs it)

Environment: BENCH_BASELINE (a git revision; default: the one in bench/baseline), BENCH_ROUNDS
(default 300 for the start-ups, a tenth of that for 100 scripts).
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATIC = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/envharness")
RUSTFLAGS = "-C relocation-model=static -C target-feature=+crt-static"


def log(text):
    print(f"bench: {text}", file=sys.stderr, flush=True)


def run(*args, **kwargs):
    return subprocess.run(args, check=True, **kwargs)


def ensure_tools():
    packages = {"tini": "tini", "dash": "dash", "gcc": "gcc", "musl-gcc": "musl-tools"}
    missing = [package for tool, package in packages.items() if not shutil.which(tool)]
    if missing:
        log(f"installing: {' '.join(missing)}")
        run("apt-get", "install", "-y", "-q", "--no-install-recommends", *missing,
            stdout=subprocess.DEVNULL)


def build_c(work, name, static=False):
    """bench/NAME.c built with gcc, or static with musl-gcc as envharness is."""
    out = os.path.join(work, name)
    compiler = ["musl-gcc", "-static"] if static else ["gcc"]
    run(*compiler, "-O2", "-o", out, os.path.join(ROOT, "bench", f"{name}.c"))
    return out


def baseline_binary():
    """The static binary of BENCH_BASELINE, built once in a worktree under target/."""
    revision = os.environ.get("BENCH_BASELINE")
    if not revision:
        with open(os.path.join(ROOT, "bench", "baseline")) as f:
            revision = f.read().split()[0]
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", revision], check=True,
                            capture_output=True, text=True).stdout.strip()
    home = os.path.join(ROOT, "target", "bench-baseline", commit[:12])
    binary = os.path.join(home, "target", "x86_64-unknown-linux-musl", "release", "envharness")
    if os.path.exists(binary):
        return commit, binary
    log(f"building the baseline {commit[:12]} (once)")
    tree = os.path.join(home, "tree")
    if not os.path.exists(tree):
        run("git", "-C", ROOT, "worktree", "add", "-q", "--detach", tree, commit)
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(home, "target"),
               CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS=RUSTFLAGS)
    run("cargo", "build", "-q", "--release", "--target", "x86_64-unknown-linux-musl",
        cwd=tree, env=env)
    return commit, binary


def scripts(directory, count):
    os.makedirs(directory)
    for i in range(1, count + 1):
        path = os.path.join(directory, f"V{i:04d}")
        with open(path, "w") as f:
            f.write("#!/bin/sh\necho value\n")
        os.chmod(path, 0o755)
    return directory


def rounds(timer, count, commands):
    """Each command's times, one list per command, from `count` rounds."""
    argv = [timer, str(count)]
    for command in commands:
        argv += [":::", *command]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rows = [[float(x) for x in line.split("\t")] for line in out.splitlines()]
    return list(zip(*rows))


def quartiles(values):
    q = statistics.quantiles(values, n=4)
    return q[1], q[0], q[2]


def ratio(a, b):
    """Median and quartiles of the per-round ratios a/b."""
    return quartiles([x / y for x, y in zip(a, b)])


def fmt(figure):
    median, low, high = figure
    return f"{median:.3f}× [{low:.3f}–{high:.3f}]"


class Listener:
    """A loopback port that accepts connections, for --wait-for."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(128)
        self.port = self.socket.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            connection, _ = self.socket.accept()
            connection.close()


def peak_rss(command):
    """The peak RSS (VmHWM) of a supervisor itself while it supervises `sleep 1`, and its
    RssFile and RssAnon at that time, in KiB: sampled every 20 ms from /proc."""
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    last = None
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            last = {key: int(fields[key].split()[0]) for key in ("VmHWM", "RssFile", "RssAnon")}
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.02)
    return last


def median_rss(command, times=5):
    samples = [peak_rss(command) for _ in range(times)]
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def main():
    ensure_tools()
    if not os.path.exists(STATIC):
        sys.exit("bench: no static binary: run `make static` first (make bench does)")
    commit, baseline = baseline_binary()
    work = tempfile.mkdtemp(prefix="envharness-startup.")
    try:
        report(work, commit, baseline)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(work, commit, baseline):
    timer = build_c(work, "rounds")
    floor = build_c(work, "floor")
    floor_init = build_c(work, "floor_init", static=True)
    empty = os.path.join(work, "empty")
    os.makedirs(empty)
    d10, d100 = scripts(os.path.join(work, "d10"), 10), scripts(os.path.join(work, "d100"), 100)
    loop = os.path.join(work, "loop.sh")
    with open(loop, "w") as f:
        f.write('dir=$1; shift\nfor f in "$dir"/*; do export "${f##*/}=$("$f")"; done\nexec "$@"\n')
    n = int(os.environ.get("BENCH_ROUNDS", "300"))
    ours, old = STATIC, baseline

    def harness(binary, *args, env=empty):
        return [binary, "-e", env, "-x", empty, *args]

    log(f"start-up: {n} rounds")
    t = rounds(timer, n, [harness(ours, "--", "true"), ["env", "true"],
                          harness(old, "--", "true"), [floor_init, "exec", "true"]])
    startup_env, startup_old = ratio(t[0], t[1]), ratio(t[0], t[2])
    startup_floor = ratio(t[3], t[1])
    startup_us = statistics.median(t[0])

    log(f"--init: {n} rounds")
    t = rounds(timer, n, [harness(ours, "--init", "--", "true"), ["tini", "--", "true"],
                          harness(old, "--init", "--", "true"), [floor_init, "spawn", "true"]])
    init_tini, init_old = ratio(t[0], t[1]), ratio(t[0], t[2])
    init_floor = ratio(t[3], t[1])

    log(f"--user and --wait-for: {n} rounds")
    listener = Listener()
    address = f"127.0.0.1:{listener.port}"
    t = rounds(timer, n, [harness(ours, "--", "true"),
                          harness(ours, "--user", "nobody", "--", "true"),
                          harness(ours, "--wait-for", address, "--", "true")])
    user = ratio(t[1], t[0])
    wait_for_us = quartiles([b - a for a, b in zip(t[0], t[2])])

    m = max(n // 10, 20)
    log(f"10 and 100 scripts: {m} rounds")
    t = rounds(timer, m, [harness(ours, "--", "true", env=d100), harness(ours, "--", "true", env=d10),
                          [floor, d100, "true"], [floor, d10, "true"],
                          ["dash", loop, d100, "true"], harness(old, "--", "true", env=d100),
                          harness(old, "--", "true", env=d10)])
    ours100, ours10, floor100, floor10, dash100, old100, old10 = t
    per_script = [(a - b) / 90 for a, b in zip(ours100, ours10)]
    per_floor = [(a - b) / 90 for a, b in zip(floor100, floor10)]
    per_old = [(a - b) / 90 for a, b in zip(old100, old10)]
    script_floor = ratio(per_script, per_floor)
    script_old = ratio(per_script, per_old)
    loop_dash = ratio(ours100, dash100)
    floor_dash = ratio(floor100, dash100)

    log("peak RSS supervising sleep 1")
    rss_ours = median_rss(harness(ours, "--init", "--", "sleep", "1"))
    rss_old = median_rss(harness(old, "--init", "--", "sleep", "1"))
    rss_tini = median_rss(["tini", "--", "sleep", "1"])
    size, size_old = os.path.getsize(ours), os.path.getsize(old)

    mib = 1024 * 1024
    lines = [
        "# Floor figures (bench/startup.py)",
        "",
        f"Static binary `{os.path.relpath(ours, ROOT)}` against its anchor and against the static "
        f"binary of {commit[:12]} (`bench/baseline`), in the same run. Each ratio is the median "
        f"of per-round ratios [quartiles] (bench/rounds.c: each round runs every command once).",
        "",
        "| figure | this build | vs the baseline | goal |",
        "|---|---:|---:|---:|",
        f"| `-e EMPTY -- true` ÷ `env true` | {fmt(startup_env)} | {fmt(startup_old)} | ≤ 0.80× |",
        f"| (floor: a static C program that only execs `true`, ÷ `env true`) | {fmt(startup_floor)} | | |",
        f"| per script (N=100 minus N=10, ÷ 90) ÷ fork+pipe+read+wait floor "
        f"({statistics.median(per_floor):.0f} µs) | {fmt(script_floor)} "
        f"({statistics.median(per_script):.0f} µs) | {fmt(script_old)} | ≤ 1.03× |",
        f"| N=100 scripts ÷ dash loop | {fmt(loop_dash)} | | ≤ 0.85× |",
        f"| (floor: the fork+pipe+read+wait program over 100 scripts ÷ dash loop) | {fmt(floor_dash)} | | |",
        f"| `--init -- true` ÷ tini | {fmt(init_tini)} | {fmt(init_old)} | ≤ 0.72× |",
        f"| (floor: a static C program that only spawns `true` and waits, ÷ tini) | {fmt(init_floor)} | | |",
        f"| supervisor's own peak RSS ÷ tini's | {rss_ours['VmHWM'] / rss_tini['VmHWM']:.2f}× "
        f"({rss_ours['VmHWM'] / 1024:.2f} MiB: file {rss_ours['RssFile'] / 1024:.2f}, anon "
        f"{rss_ours['RssAnon'] / 1024:.2f}) | {rss_ours['VmHWM'] / rss_old['VmHWM']:.2f}× "
        f"({rss_old['VmHWM'] / 1024:.2f} MiB) | ≤ 0.65× |",
        f"| static size | {size / mib:.2f} MiB | {size / size_old:.2f}× ({size_old / mib:.2f} MiB) "
        f"| ≤ 3 MiB |",
        f"| `--user nobody` start-up ÷ without | {fmt(user)} | | ≤ 1.02× |",
        f"| `--wait-for` a listening port, added | {wait_for_us[0]:.0f} µs "
        f"[{wait_for_us[1]:.0f}–{wait_for_us[2]:.0f}] | | ≤ 200 µs |",
        "",
        f"Start-up of this build: {startup_us:.0f} µs (median). tini's peak RSS: "
        f"{rss_tini['VmHWM'] / 1024:.2f} MiB.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(ROOT, "bench", "results-startup.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
