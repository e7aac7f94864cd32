#!/usr/bin/env python3
"""Benchmarks of reacting to change (issue 8) and of the registry's harness side (issue 10): `make bench` runs this after bench/run.sh, or
run it alone: `python3 bench/watch.py` (after `make static`). Writes a Markdown report to
stdout and to bench/results-watch.md.

- restart: time from SIGHUP (after a literal changed) to the new command's first instruction,
  median of 20, against a plain `--init` start-up's time to the command's first instruction,
  measured the same way. The command is a small static C program (`stamp`, compiled here) whose
  main() appends CLOCK_MONOTONIC to a file; the clock is shared by every process.
- idle: `--init --watch 1` over 10 literals: the harness's CPU time and RSS over
  BENCH_IDLE_SECS (default 30) seconds after a warm-up of 20 re-runs.
- require: `--require` on start-up, paired against the same run without it: rounds of
  back-to-back runs, the median of the per-round ratios.
- put → HUP: `envharness kv put` of a key a watching harness's script read, to the SIGHUP
  (`--on-change HUP`) reaching its command, on the file store, median of 20.
- lease: an `--init` harness publishing one key under a lease, its CPU and RSS over
  BENCH_LEASE_SECS (default 60) seconds.
- etcd (issue 11; a real etcd started here on free loopback ports, installed with etcdctl from
  Debian when missing): put → HUP through an etcd watch, 100 harnesses each publishing one key
  with `--ttl 5` (RSS of each, the keep-alive load), and `envharness kv get|put` paired against
  `etcdctl get|put` on the same etcd.
- etcd over TLS (issue 17; certificates made here with openssl, etcd with --cert-file --key-file
  --trusted-ca-file --client-cert-auth): `kv get|put` over etcds:// with a client certificate
  paired against `etcdctl --cacert --cert --key`, put → HUP at a watching harness, and a
  supervising harness holding a lease for BENCH_LEASE_SECS: handshakes made (each is logged at
  -vv), renewals, CPU and RSS.
"""

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get(
    "ENVHARNESS_BIN",
    os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/envharness"),
)
IDLE_SECS = float(os.environ.get("BENCH_IDLE_SECS", "30"))
LEASE_SECS = float(os.environ.get("BENCH_LEASE_SECS", "60"))
WARMUP_RERUNS = 20
ROUNDS = int(os.environ.get("BENCH_PAIRED_ROUNDS", "30"))
RUNS = int(os.environ.get("BENCH_PAIRED_RUNS", "100"))

STAMP_C = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static const char *out;
static void stamp(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    char line[64];
    int len = snprintf(line, sizeof line, "%lld\n",
                       (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
    int fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
    write(fd, line, len);
    close(fd);
}
static void on_hup(int signal) { (void)signal; stamp(); }
int main(int argc, char **argv) {
    out = argv[1];
    stamp();
    if (argc > 2) return 0;
    signal(SIGHUP, on_hup);
    for (;;) pause();
}
"""


def log(text):
    print(f"bench: {text}", file=sys.stderr, flush=True)


def lines(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def wait_lines(path, count, limit=10.0):
    until = time.monotonic() + limit
    while True:
        got = lines(path)
        if len(got) >= count:
            return got
        if time.monotonic() > until:
            raise SystemExit(f"bench: {path} never got {count} lines")
        time.sleep(0.0002)


def replace(path, text):
    with open(path + ".new~", "w") as f:
        f.write(text)
    os.rename(path + ".new~", path)


def spawn(args, stderr=subprocess.DEVNULL, extra_env=None):
    env = {"PATH": "/usr/bin:/bin", **(extra_env or {})}
    return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=stderr)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)


def restart_latency(w, stamp, empty):
    env = os.path.join(w, "restart-env")
    os.mkdir(env)
    replace(os.path.join(env, "A"), "0\n")
    out = os.path.join(w, "restart.out")
    proc = spawn([BIN, "--init", "--watch", "0", "-x", empty, "-e", env, "--", stamp, out])
    wait_lines(out, 1)
    deltas = []
    for i in range(1, 21):
        replace(os.path.join(env, "A"), f"{i}\n")
        t0 = time.monotonic_ns()
        proc.send_signal(signal.SIGHUP)
        got = wait_lines(out, i + 1)
        deltas.append((int(got[i]) - t0) / 1e6)
    stop(proc)
    return deltas


def plain_startup(w, stamp, empty):
    env = os.path.join(w, "plain-env")
    os.mkdir(env)
    replace(os.path.join(env, "A"), "0\n")
    out = os.path.join(w, "plain.out")
    deltas = []
    for i in range(20):
        args = [BIN, "--init", "-x", empty, "-e", env, "--", stamp, out]
        t0 = time.monotonic_ns()
        pid = os.posix_spawn(BIN, args, {"PATH": "/usr/bin:/bin"})
        got = wait_lines(out, i + 1)
        deltas.append((int(got[i]) - t0) / 1e6)
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    return deltas


def proc_cpu_seconds(pid):
    """CPU time of every thread of `pid`, in ns precision (schedstat: clock ticks would round
    a mostly idle process's time to zero)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("bench: no VmRSS")


def idle_cost(w, stamp, empty):
    env = os.path.join(w, "idle-env")
    os.mkdir(env)
    for i in range(10):
        replace(os.path.join(env, f"V{i}"), f"value {i}\n")
    out = os.path.join(w, "idle.out")
    err_path = os.path.join(w, "idle.err")
    with open(err_path, "w") as err:
        proc = spawn([BIN, "--init", "--watch", "1", "-vv", "-x", empty, "-e", env, "--", stamp, out],
                     stderr=err)
    wait_lines(out, 1)

    def reruns():
        with open(err_path) as f:
            return f.read().count("re-running discovery")

    log(f"idle: warming up ({WARMUP_RERUNS} re-runs, about {WARMUP_RERUNS} s)")
    until = time.monotonic() + WARMUP_RERUNS + 10
    while reruns() < WARMUP_RERUNS:
        if time.monotonic() > until:
            raise SystemExit("bench: the warm-up re-runs did not happen")
        time.sleep(0.1)
    cpu0, rss0, t0, n0 = proc_cpu_seconds(proc.pid), proc_rss_kib(proc.pid), time.monotonic(), reruns()
    log(f"idle: measuring for {IDLE_SECS:.0f} s")
    time.sleep(IDLE_SECS)
    cpu1, rss1, t1, n1 = proc_cpu_seconds(proc.pid), proc_rss_kib(proc.pid), time.monotonic(), reruns()
    stop(proc)
    return {
        "cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
        "rss_start": rss0,
        "rss_end": rss1,
        "reruns": n1 - n0,
        "secs": t1 - t0,
    }


def put_to_hup(w, stamp, empty, store, name, extra_env=None):
    """kv put -> --on-change HUP at a watching harness's command, on `store` (a --kv URL);
    `name` keeps this run's files apart; `extra_env` goes to the harness and the puts (the TLS
    variables)."""
    extra_env = extra_env or {}
    env = os.path.join(w, f"{name}-env")
    os.mkdir(env)
    with open(os.path.join(env, "DATABASE_URL"), "w") as f:
        f.write(f"#!/bin/sh\nexec {BIN} kv get db\n")
    os.chmod(os.path.join(env, "DATABASE_URL"), 0o755)
    run_env = {"PATH": "/usr/bin:/bin", **extra_env}
    subprocess.run([BIN, "--kv", store, "kv", "put", "db/x", "v0"], check=True, env=run_env)
    out = os.path.join(w, f"{name}.out")
    proc = spawn([BIN, "--init", "--watch", "0", "--on-change", "HUP", "--kv", store,
                  "-x", empty, "-e", env, "--", stamp, out], extra_env=extra_env)
    wait_lines(out, 1)
    time.sleep(0.5)  # the harness's watch is set up once the command runs
    deltas = []
    for i in range(1, 21):
        args = [BIN, "--kv", store, "kv", "put", "db/x", f"v{i}"]
        t0 = time.monotonic_ns()
        pid = os.posix_spawn(BIN, args, run_env)
        got = wait_lines(out, i + 1)
        os.waitpid(pid, 0)
        deltas.append((int(got[i]) - t0) / 1e6)
    stop(proc)
    return deltas


def lease_holding(w, stamp, empty):
    """--init publishing one key (default --ttl 10: a renewal every 3.3 s) for LEASE_SECS."""
    store = "file://" + os.path.join(w, "store-lease")
    export = os.path.join(w, "lease-export")
    os.mkdir(export)
    with open(os.path.join(export, "db"), "w") as f:
        f.write("#!/bin/sh\necho postgres://db:5432/app\n")
    os.chmod(os.path.join(export, "db"), 0o755)
    out = os.path.join(w, "lease.out")
    proc = spawn([BIN, "--init", "--kv", store, "--instance", "bench", "-x", export, "-e", empty,
                  "--", stamp, out])
    wait_lines(out, 1)
    time.sleep(1)
    cpu0, rss0, t0 = proc_cpu_seconds(proc.pid), proc_rss_kib(proc.pid), time.monotonic()
    peak = rss0
    log(f"lease: holding for {LEASE_SECS:.0f} s")
    while time.monotonic() - t0 < LEASE_SECS:
        time.sleep(1)
        peak = max(peak, proc_rss_kib(proc.pid))
    cpu1, rss1, t1 = proc_cpu_seconds(proc.pid), proc_rss_kib(proc.pid), time.monotonic()
    stop(proc)
    return {"cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0), "rss_start": rss0, "rss_end": rss1,
            "rss_peak": peak, "secs": t1 - t0}


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def install_etcd():
    """Debian's etcd-server and etcd-client (etcdctl), when missing and we are root."""
    import shutil
    missing = [pkg for pkg, tool in (("etcd-server", "etcd"), ("etcd-client", "etcdctl"))
               if shutil.which(tool) is None and not os.path.exists(f"/usr/bin/{tool}")]
    if missing and os.geteuid() == 0:
        log(f"installing {' '.join(missing)}")
        subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                       check=False, stdout=subprocess.DEVNULL,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def start_etcd(w, tls=None):
    """A fresh etcd on free loopback ports, ready; None where etcd is not installed. With
    `tls` (the files of make_certificates) its client port speaks only TLS and requires a
    client certificate; a second, plain port on loopback serves the readiness check."""
    import shutil
    import urllib.request
    install_etcd()
    binary = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    if binary is None:
        log("etcd is not installed (apt-get install etcd-server): the etcd figures are skipped")
        return None, None
    client, peer, plain = free_port(), free_port(), free_port()
    data = os.path.join(w, "etcd-data-tls" if tls else "etcd-data")
    scheme = "https" if tls else "http"
    listen = f"{scheme}://127.0.0.1:{client}"
    extra = []
    if tls:
        listen += f",http://127.0.0.1:{plain}"
        extra = [f"--cert-file={tls['server.pem']}", f"--key-file={tls['server.key']}",
                 f"--trusted-ca-file={tls['ca.pem']}", "--client-cert-auth"]
    else:
        plain = client
    proc = subprocess.Popen(
        [binary, "--name", "bench", "--data-dir", data,
         "--listen-client-urls", listen,
         "--advertise-client-urls", f"{scheme}://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
         "--heartbeat-interval=10", "--election-timeout=100", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    until = time.monotonic() + 15
    while time.monotonic() < until:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{plain}/v3/kv/range",
                                             data=b'{"key":"AA=="}', method="POST")
            urllib.request.urlopen(request, timeout=1).read()
            return proc, f"127.0.0.1:{client}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("bench: etcd did not start")


def many_harnesses(w, stamp, empty, endpoint, etcd_pid, count=100, secs=20):
    """`count` harnesses each publishing one key with --ttl 5 to one etcd: their RSS, and
    the keep-alive load (their CPU and etcd's) over `secs` seconds."""
    store = f"etcd://{endpoint}/bench-many"
    export = os.path.join(w, "many-export")
    os.mkdir(export)
    with open(os.path.join(export, "svc"), "w") as f:
        f.write("#!/bin/sh\necho http://svc:80\n")
    os.chmod(os.path.join(export, "svc"), 0o755)
    procs = []
    for i in range(count):
        out = os.path.join(w, f"many-{i}.out")
        procs.append(spawn([BIN, "--init", "--ttl", "5", "--kv", store, "--instance", f"h{i}",
                            "-x", export, "-e", empty, "--", stamp, out]))
    for i in range(count):
        wait_lines(os.path.join(w, f"many-{i}.out"), 1, limit=60)
    until = time.monotonic() + 30
    while True:
        listed = subprocess.run([BIN, "--kv", store, "kv", "list", "svc/", "--keys"],
                                capture_output=True, text=True).stdout.split()
        if len(listed) >= count or time.monotonic() > until:
            break
        time.sleep(0.2)
    cpu0 = sum(proc_cpu_seconds(p.pid) for p in procs)
    etcd0 = proc_cpu_seconds(etcd_pid)
    t0 = time.monotonic()
    time.sleep(secs)
    t1 = time.monotonic()
    cpu1 = sum(proc_cpu_seconds(p.pid) for p in procs)
    etcd1 = proc_cpu_seconds(etcd_pid)
    rss = sorted(proc_rss_kib(p.pid) for p in procs)
    still = len(subprocess.run([BIN, "--kv", store, "kv", "list", "svc/", "--keys"],
                               capture_output=True, text=True).stdout.split())
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=30)
    return {
        "count": count,
        "published": len(listed),
        "still": still,
        "rss_median": statistics.median(rss),
        "rss_max": rss[-1],
        "harness_cpu": 100 * (cpu1 - cpu0) / (t1 - t0),
        "etcd_cpu": 100 * (etcd1 - etcd0) / (t1 - t0),
        "secs": t1 - t0,
    }


def against_etcdctl(endpoint, tls=None):
    """`envharness kv get|put` whole-process ÷ `etcdctl get|put` on the same etcd, paired:
    rounds of back-to-back batches, the median of the per-round ratios. With `tls`, over
    etcds:// with a client certificate, and etcdctl with --cacert --cert --key."""
    import shutil
    etcdctl = shutil.which("etcdctl") or "/usr/bin/etcdctl"
    if not os.path.exists(etcdctl):
        log("etcdctl is not installed: the comparison is skipped")
        return None
    url = f"etcds://{endpoint}" if tls else f"etcd://{endpoint}"
    value = "postgres://db-1.internal:5432/app"
    env = {"PATH": "/usr/bin:/bin", "ETCDCTL_API": "3", **(tls_env(tls) if tls else {})}
    subprocess.run([BIN, "--kv", url, "kv", "put", "bench/key", value], check=True, env=env)
    if tls:
        ctl = [etcdctl, f"--endpoints=https://{endpoint}", f"--cacert={tls['ca.pem']}",
               f"--cert={tls['client.pem']}", f"--key={tls['client.key']}"]
    else:
        ctl = [etcdctl, f"--endpoints=http://{endpoint}"]
    pairs = {
        "get": ([BIN, "--kv", url, "kv", "get", "bench/key"], ctl + ["get", "bench/key"]),
        "put": ([BIN, "--kv", url, "kv", "put", "bench/key", value], ctl + ["put", "bench/key", value]),
    }
    result = {}
    for name, (ours, theirs) in pairs.items():
        ratios, ours_ms, theirs_ms = [], [], []
        for _ in range(10):
            a = timed_batch(ours, 20, env, quiet=True)
            b = timed_batch(theirs, 20, env, quiet=True)
            ratios.append(a / b)
            ours_ms.append(a / 1e6)
            theirs_ms.append(b / 1e6)
        result[name] = (statistics.median(ratios), statistics.median(ours_ms), statistics.median(theirs_ms))
    return result


def make_certificates(w):
    """A CA, a server certificate for 127.0.0.1 and a client certificate (no common name, as
    etcd's gateway wants once auth is on), made with openssl; None where it is missing."""
    import shutil
    if shutil.which("openssl") is None:
        log("openssl is not installed: the TLS figures are skipped")
        return None
    d = os.path.join(w, "pki")
    os.mkdir(d)
    f = {name: os.path.join(d, name) for name in
         ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    run("req", "-x509", *ec, "-keyout", f["ca.key"], "-out", f["ca.pem"], "-days", "2",
        "-subj", "/CN=bench CA")
    for name, subject, ext in (
            ("server", "/CN=etcd", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                   "extendedKeyUsage=serverAuth,clientAuth\n"),
            ("client", "/O=bench", "extendedKeyUsage=clientAuth\n")):
        csr, extfile = os.path.join(d, f"{name}.csr"), os.path.join(d, f"{name}.ext")
        with open(extfile, "w") as out:
            out.write(ext)
        run("req", *ec, "-keyout", f[f"{name}.key"], "-out", csr, "-subj", subject)
        run("x509", "-req", "-in", csr, "-CA", f["ca.pem"], "-CAkey", f["ca.key"],
            "-CAcreateserial", "-out", f[f"{name}.pem"], "-days", "2", "-extfile", extfile)
    return f


def tls_env(tls):
    """The variables that give envharness the CA, the client certificate and its key."""
    return {"ENVHARNESS_KV_CACERT": tls["ca.pem"], "ENVHARNESS_KV_CERT": tls["client.pem"],
            "ENVHARNESS_KV_KEY": tls["client.key"]}


def tls_lease_holding(w, stamp, empty, endpoint, tls):
    """Two supervising harnesses holding a lease each (`--ttl 10`: a renewal every 3.3 s) over
    TLS for LEASE_SECS, side by side: one as it runs in production, its CPU and RSS; one at -vv,
    the handshakes it made and its renewals (logged), and its RSS (logging's code included)."""
    store = f"etcds://{endpoint}/bench-lease"
    export = os.path.join(w, "tls-lease-export")
    os.mkdir(export)
    with open(os.path.join(export, "db"), "w") as f:
        f.write("#!/bin/sh\necho postgres://db:5432/app\n")
    os.chmod(os.path.join(export, "db"), 0o755)
    err_path = os.path.join(w, "tls-lease.err")
    procs = {}
    for name, verbosity in (("quiet", []), ("verbose", ["-vv"])):
        out = os.path.join(w, f"tls-lease-{name}.out")
        with open(err_path if verbosity else os.devnull, "w") as err:
            procs[name] = spawn([BIN, "--init", *verbosity, "--kv", store, "--instance", name,
                                 "-x", export, "-e", empty, "--", stamp, out],
                                stderr=err, extra_env=tls_env(tls))
        wait_lines(out, 1)
    time.sleep(1)
    quiet, verbose = procs["quiet"].pid, procs["verbose"].pid
    cpu0, rss0, t0 = proc_cpu_seconds(quiet), proc_rss_kib(quiet), time.monotonic()
    peak = rss0
    verbose_peak = proc_rss_kib(verbose)
    log(f"TLS lease: holding for {LEASE_SECS:.0f} s")
    while time.monotonic() - t0 < LEASE_SECS:
        time.sleep(1)
        peak = max(peak, proc_rss_kib(quiet))
        verbose_peak = max(verbose_peak, proc_rss_kib(verbose))
    cpu1, rss1, t1 = proc_cpu_seconds(quiet), proc_rss_kib(quiet), time.monotonic()
    for proc in procs.values():
        stop(proc)
    with open(err_path) as f:
        logged = f.read()
    return {"cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0), "rss_start": rss0, "rss_end": rss1,
            "rss_peak": peak, "secs": t1 - t0, "verbose_rss_peak": verbose_peak,
            "handshakes": logged.count("TLS handshake done"),
            "renewals": logged.count("lease renewed")}


def timed_batch(args, runs, env=None, quiet=False):
    env = env or {"PATH": "/usr/bin:/bin"}
    file_actions = []
    if quiet:
        null = os.open(os.devnull, os.O_WRONLY)
        file_actions = [(os.POSIX_SPAWN_DUP2, null, 1)]
    start = time.monotonic_ns()
    for _ in range(runs):
        pid = os.posix_spawn(args[0], args, env, file_actions=file_actions)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise SystemExit(f"bench: {' '.join(args)} failed ({status})")
    return (time.monotonic_ns() - start) / runs


def require_ratio(w, empty):
    env = os.path.join(w, "require-env")
    os.mkdir(env)
    for i in range(10):
        replace(os.path.join(env, f"V{i}"), f"value {i}\n")
    replace(os.path.join(env, "DB_URL"), "postgres://db:5432/app\n")
    plain = [BIN, "-x", empty, "-e", env, "--", "/bin/true"]
    required = [BIN, "-x", empty, "-e", env, "--require", "DB_URL=postgres://.*",
                "--require", "V1", "--", "/bin/true"]
    ratios = []
    for _ in range(ROUNDS):
        timed_batch(plain, 5)
        a = timed_batch(required, RUNS)
        b = timed_batch(plain, RUNS)
        ratios.append(a / b)
    return ratios


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main():
    if not os.access(BIN, os.X_OK):
        raise SystemExit(f"bench: {BIN} is missing: run `make static` first")
    with tempfile.TemporaryDirectory(prefix="envharness-bench.") as w:
        stamp = os.path.join(w, "stamp")
        with open(stamp + ".c", "w") as f:
            f.write(STAMP_C)
        subprocess.run(["cc", "-O2", "-static", "-o", stamp, stamp + ".c"], check=True)
        empty = os.path.join(w, "empty")
        os.mkdir(empty)
        log("restart latency (20 changes) and plain --init start-up (20 starts)")
        restart = restart_latency(w, stamp, empty)
        plain = plain_startup(w, stamp, empty)
        log(f"--require paired: {ROUNDS} rounds of {RUNS} runs")
        ratios = require_ratio(w, empty)
        idle = idle_cost(w, stamp, empty)
        log("kv put -> HUP at a watching harness's command (20 puts)")
        hup = put_to_hup(w, stamp, empty, "file://" + os.path.join(w, "store-hup"), "hup")
        lease = lease_holding(w, stamp, empty)
        etcd, endpoint = start_etcd(w)
        etcd_hup = many = ctl = None
        if etcd is not None:
            try:
                log("etcd: kv put -> HUP (20 puts)")
                etcd_hup = put_to_hup(w, stamp, empty, f"etcd://{endpoint}/bench-hup", "etcd-hup")
                log("etcd: 100 harnesses publishing with --ttl 5")
                many = many_harnesses(w, stamp, empty, endpoint, etcd.pid)
                log("etcd: kv get/put against etcdctl")
                ctl = against_etcdctl(endpoint)
            finally:
                etcd.kill()
                etcd.wait()
        tls = make_certificates(w)
        tls_hup = tls_ctl = tls_lease = None
        tls_etcd, tls_endpoint = start_etcd(w, tls) if tls else (None, None)
        if tls_etcd is not None:
            try:
                log("etcd over TLS: kv get/put against etcdctl --cacert --cert --key")
                tls_ctl = against_etcdctl(tls_endpoint, tls)
                log("etcd over TLS: kv put -> HUP (20 puts)")
                tls_hup = put_to_hup(w, stamp, empty, f"etcds://{tls_endpoint}/bench-hup",
                                     "tls-hup", tls_env(tls))
                tls_lease = tls_lease_holding(w, stamp, empty, tls_endpoint, tls)
            finally:
                tls_etcd.kill()
                tls_etcd.wait()

    r_med, p_med = statistics.median(restart), statistics.median(plain)
    over = r_med - p_med
    req = statistics.median(ratios)
    growth = idle["rss_end"] - idle["rss_start"]
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "unknown"
    out = [
        "# Reacting to change: benchmark results",
        "",
        f"`python3 bench/watch.py` at {rev}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"binary `{os.path.relpath(BIN, ROOT)}`.",
        "",
        "| what | measured | goal | |",
        "|---|---:|---:|---|",
        f"| SIGHUP after a literal changed → the new command's first instruction, median of 20 "
        f"| {r_med:.2f} ms | | |",
        f"| plain `--init` start-up → the command's first instruction, median of 20 | {p_med:.2f} ms | | |",
        f"| restart over plain start-up | {over:+.2f} ms | ≤ 5 ms | {'pass' if over <= 5 else 'miss'} |",
        f"| idle `--init --watch 1`, 10 literals, {idle['secs']:.0f} s after {WARMUP_RERUNS} re-runs "
        f"({idle['reruns']} re-runs): CPU | {idle['cpu_percent']:.2f}% of one core | < 0.5% | "
        f"{'pass' if idle['cpu_percent'] < 0.5 else 'miss'} |",
        f"| the same: RSS growth ({idle['rss_start']} → {idle['rss_end']} KiB) | {growth} KiB | 0 | "
        f"{'pass' if growth <= 0 else 'miss'} |",
        f"| `--require` ×2 on start-up ÷ the same without, paired, median of {ROUNDS} rounds "
        f"[10th–90th] | {req:.3f}× [{percentile(ratios, 0.1):.3f}–{percentile(ratios, 0.9):.3f}] "
        f"| ≤ 1.02× | {'pass' if req <= 1.02 else 'miss'} |",
        f"| `kv put` (whole process) → `--on-change HUP` at a watching harness's command, "
        f"file store, median of 20 [max] | {statistics.median(hup):.2f} ms [{max(hup):.2f}] | "
        f"≤ 100 ms | {'pass' if statistics.median(hup) <= 100 else 'miss'} |",
        f"| `--init` holding a lease (`--ttl 10`), {lease['secs']:.0f} s: CPU | "
        f"{lease['cpu_percent']:.4f}% of one core | | |",
        f"| the same: RSS (start → end, peak) | {lease['rss_start']} → {lease['rss_end']} KiB, "
        f"peak {lease['rss_peak'] / 1024:.2f} MiB | ≤ 1.5 MiB, no growth | "
        f"{'pass' if lease['rss_peak'] <= 1536 and lease['rss_end'] <= lease['rss_start'] else 'miss'} |",
    ]
    if etcd_hup is not None:
        out += [
            f"| `kv put` → `--on-change HUP` at a watching harness's command, etcd, median of 20 "
            f"[max] | {statistics.median(etcd_hup):.2f} ms [{max(etcd_hup):.2f}] | ≤ 50 ms | "
            f"{'pass' if statistics.median(etcd_hup) <= 50 else 'miss'} |",
            f"| {many['count']} harnesses publishing one key each with `--ttl 5` to one etcd "
            f"({many['published']} keys listed, {many['still']} after {many['secs']:.0f} s): "
            f"RSS of one, median [max] | {many['rss_median'] / 1024:.2f} MiB "
            f"[{many['rss_max'] / 1024:.2f}] | ≤ 2 MiB each | "
            f"{'pass' if many['rss_max'] <= 2048 else 'miss'} |",
            f"| the same: keep-alive load over {many['secs']:.0f} s, CPU of the {many['count']} "
            f"harnesses together / of etcd | {many['harness_cpu']:.3f}% / {many['etcd_cpu']:.2f}% "
            f"of one core | | |",
        ]
    if ctl is not None:
        for name in ("get", "put"):
            ratio, ours, theirs = ctl[name]
            out.append(
                f"| `envharness kv {name}` ÷ `etcdctl {name}`, whole process, same etcd, paired, "
                f"median of 10 rounds of 20 ({ours:.2f} ms against {theirs:.2f} ms) | {ratio:.3f}× | "
                f"≤ 0.3× | {'pass' if ratio <= 0.3 else 'miss'} |")
    if tls_ctl is not None:
        for name in ("get", "put"):
            ratio, ours, theirs = tls_ctl[name]
            out.append(
                f"| TLS: `envharness kv {name}` over `etcds://` with a client certificate ÷ "
                f"`etcdctl --cacert --cert --key {name}`, whole process, same etcd, paired, "
                f"median of 10 rounds of 20 ({ours:.2f} ms against {theirs:.2f} ms) | "
                f"{ratio:.3f}× | ≤ 0.3× | {'pass' if ratio <= 0.3 else 'miss'} |")
    if tls_hup is not None:
        out.append(
            f"| TLS: `kv put` → `--on-change HUP` at a watching harness's command, `etcds://`, "
            f"median of 20 [max] | {statistics.median(tls_hup):.2f} ms [{max(tls_hup):.2f}] | "
            f"≤ 50 ms | {'pass' if statistics.median(tls_hup) <= 50 else 'miss'} |")
    if tls_lease is not None:
        out += [
            f"| TLS: `--init -vv` holding a lease (`--ttl 10`) over `etcds://`, {tls_lease['secs']:.0f} s: "
            f"TLS handshakes (logged) for {tls_lease['renewals']} renewals | {tls_lease['handshakes']} | "
            f"1 per connection | {'pass' if tls_lease['handshakes'] == 1 else 'miss'} |",
            f"| the same without `-vv`, beside it: CPU | {tls_lease['cpu_percent']:.4f}% of one core | | |",
            f"| the same: RSS (start → end, peak) | {tls_lease['rss_start']} → {tls_lease['rss_end']} KiB, "
            f"peak {tls_lease['rss_peak'] / 1024:.2f} MiB (at `-vv`: peak "
            f"{tls_lease['verbose_rss_peak'] / 1024:.2f} MiB) | ≤ 2 MiB | "
            f"{'pass' if tls_lease['rss_peak'] <= 2048 else 'miss'} |",
        ]
    out += [
        "",
        f"Restart latencies (ms): {', '.join(f'{d:.2f}' for d in restart)}",
        "",
        f"Plain start-ups (ms): {', '.join(f'{d:.2f}' for d in plain)}",
        "",
    ]
    report = "\n".join(out)
    print(report)
    with open(os.path.join(ROOT, "bench/results-watch.md"), "w") as f:
        f.write(report)


if __name__ == "__main__":
    main()
