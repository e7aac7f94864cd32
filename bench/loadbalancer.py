#!/usr/bin/env python3
"""Benchmarks of the load balancer that follows its backends (examples/loadbalancer, issue 19):
`make bench` runs this after bench/templates.sh, or run it alone: `python3 bench/loadbalancer.py`
(after `make static`; nginx, wrk and python3 come from `make deps`). Writes a Markdown report to
stdout and to bench/results-loadbalancer.md.

nginx runs under the static envharness exactly as in the example (`--init --watch 0 -t
upstream.conf.j2:… --on-change HUP --rewrite TERM:QUIT`), with the example's nginx.conf on a
loopback port; the backends are the example's server.py, which logs each request it serves
with CLOCK_MONOTONIC, the clock this script reads too.

- put → first request: a server already listening, then `envharness kv put web/NAME ADDRESS`
  (the whole process), then requests through nginx back to back (about 1 ms each) until one
  reaches the new server: the time from starting the put to the server's log line of its first
  request, median of 20, on the file store and on a real etcd started here. Also: the put →
  the new upstream.conf on disk (read between the requests).
- drain and roll: three backends, each under `envharness --init --ttl 3 --drain 2` with
  health, and wrk's closed-loop load through nginx (`Connection: close`, as many requests as
  the machine gives) while five backends are rolled one at a time (SIGTERM the oldest, start a
  replacement). For each stopped backend: SIGTERM → the last request it served, SIGTERM → the
  server's own SIGTERM (the drain), and requests after that (none expected); for the roll: the
  requests wrk saw fail (non-2xx and socket errors) and its rate.
- template: 100 instances of web/ rendered by the example's upstream.conf.j2: the time it adds
  to a re-run. Three harnesses run side by side, `--init --watch 0 --on-change HUP` over one
  literal: one without a template, one with the example's template plus a line showing the
  literal (so upstream.conf changes and is written in every re-run), one with the template as
  it is (rendered, compared, not written), one with 100 such lines from `range(100)` (no
  registry; written). Each round changes the literal of each and sends
  SIGHUP to each in turn (the order rotating): SIGHUP → the command's HUP (the static `stamp`
  of bench/watch.py) is a whole re-run: discovery, the registry's reads, rendering, writing.
  The figure is the median of the per-round differences, on the file store and on etcd.
"""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import watch  # noqa: E402  (the shared helpers: the stamp program, etcd, waiting for lines)

ROOT = watch.ROOT
BIN = watch.BIN
EXAMPLE = os.path.join(ROOT, "examples/loadbalancer")
SERVER = os.path.join(EXAMPLE, "backend/server.py")
TRIALS = int(os.environ.get("BENCH_LB_TRIALS", "20"))
ROUNDS = int(os.environ.get("BENCH_LB_ROUNDS", "60"))
ROLLS = 5
TTL, DRAIN = "3", "2"
log = watch.log
# Every process started here leads a process group of its own (with what it starts: the
# server under a harness, nginx's workers), killed at the end whatever happened.
spawned = []


def popen(args, **kwargs):
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    spawned.append(proc)
    return proc


def kill_everything():
    for proc in spawned:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def monotonic():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


_next_port = [20000 + os.getpid() % 6000]


def listen_port():
    """A loopback port below the ephemeral range, which the load's connections use."""
    for _ in range(6000):
        port = 20000 + _next_port[0] % 12000
        _next_port[0] += 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise SystemExit("bench: no free port in 20000-31999")


def get(port):
    """One GET through nginx on a connection of its own: (status, body), or (None, error)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
    except OSError as err:
        return None, str(err)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b" ")[1:2]
    return (int(status[0]) if status else None), body.decode(errors="replace").strip()


def wait_until(what, condition, limit=15.0):
    until = time.monotonic() + limit
    while not condition():
        if time.monotonic() > until:
            raise SystemExit(f"bench: {what}: never happened")
        time.sleep(0.001)


def children(pid):
    """The process ids whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def alive(pid):
    """Whether the process is there (and not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def listed(conf, port):
    return f"server 127.0.0.1:{port} " in conf


def requests_of(path):
    """The server's log: its request times and its SIGTERM's (or None)."""
    served, term = [], None
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    for line in text.splitlines():
        word, at = line.split()
        if word == "REQ":
            served.append(float(at))
        else:
            term = float(at)
    return served, term


class Balancer:
    """nginx under envharness as in the example, on a loopback port, with store `store`."""

    def __init__(self, w, store, name, empty):
        self.dir = os.path.join(w, name)
        conf_dir = os.path.join(self.dir, "nginx")
        os.makedirs(conf_dir)
        self.port = listen_port()
        with open(os.path.join(EXAMPLE, "nginx/nginx.conf")) as f:
            conf = f.read().replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        with open(os.path.join(conf_dir, "nginx.conf"), "w") as f:
            f.write(conf)
        self.upstream_path = os.path.join(conf_dir, "upstream.conf")
        self.log_path = os.path.join(self.dir, "nginx.log")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        with open(self.log_path, "w") as logfile:
            self.proc = popen(
                [BIN, "--init", "--watch", "0", "--on-change", "HUP", "--rewrite", "TERM:QUIT",
                 "--kv", store, "-x", empty, "-e", empty,
                 "-t", f"{EXAMPLE}/nginx/upstream.conf.j2:{self.upstream_path}",
                 "--", nginx, "-p", conf_dir + "/", "-c", "nginx.conf", "-g", "daemon off;"],
                env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
                stdout=logfile, stderr=logfile)
        wait_until("nginx answering", lambda: get(self.port)[0] is not None)
        [master] = children(self.proc.pid)
        [self.first_worker] = children(master)

    def upstream(self):
        try:
            with open(self.upstream_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def settled(self):
        """The worker nginx started with (the placeholder's) is gone: after a reload an old
        worker accepts connections for 100 ms more, with its old configuration."""
        with open(self.log_path) as f:
            hups = f.read().count("changed; sending SIGHUP")
        return hups >= 1 and not alive(self.first_worker)

    def stop(self):
        watch.stop(self.proc)


def start_server(w, name, port):
    """The example's server alone (no harness), logging to w/NAME.requests."""
    path = os.path.join(w, f"{name}.requests")
    env = {"PATH": "/usr/bin:/bin", "PORT": str(port), "ENVHARNESS_INSTANCE": name,
           "REQUEST_LOG": path, "STOP_GRACE": "0"}
    proc = popen([SERVER], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(f"{name} listening", listening)
    return proc, path


def start_backend(w, store, name, empty):
    """The example's backend: server.py under envharness --init, publishing web/NAME."""
    port = listen_port()
    path = os.path.join(w, f"{name}.requests")
    env = {"PATH": "/usr/bin:/bin", "PORT": str(port), "WEB_HOST": "127.0.0.1",
           "REQUEST_LOG": path, "ENVHARNESS_KV": store, "ENVHARNESS_INSTANCE": name}
    proc = popen(
        [BIN, "--init", "--ttl", TTL, "--drain", DRAIN, "--health-interval", "2",
         "-x", os.path.join(EXAMPLE, "backend/export"), "-e", empty, "--", SERVER],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    return {"name": name, "port": port, "proc": proc, "log": path}


def put_to_first_request(w, store, label, empty):
    lb = Balancer(w, store, f"{label}-first", empty)
    steady_port = listen_port()
    steady, _ = start_server(w, f"{label}-s0", steady_port)
    subprocess.run([BIN, "--kv", store, "kv", "put", f"web/{label}-s0",
                    f"127.0.0.1:{steady_port}"], check=True)
    wait_until("the steady server behind nginx", lb.settled)
    first, to_file = [], []
    for i in range(TRIALS):
        name = f"{label}-n{i}"
        port = listen_port()
        server, path = start_server(w, name, port)
        args = [BIN, "--kv", store, "kv", "put", f"web/{name}", f"127.0.0.1:{port}"]
        t0 = monotonic()
        pid = os.posix_spawn(BIN, args, {"PATH": "/usr/bin:/bin"})
        on_disk = None
        until = t0 + 10
        while True:
            if on_disk is None and listed(lb.upstream(), port):
                on_disk = monotonic()
            if get(lb.port)[1] == name:
                break
            if monotonic() > until:
                raise SystemExit(f"bench: {name} never served through nginx")
        os.waitpid(pid, 0)
        served, _ = requests_of(path)
        first.append((min(served) - t0) * 1e3)
        to_file.append(((on_disk or monotonic()) - t0) * 1e3)
        subprocess.run([BIN, "--kv", store, "kv", "del", f"web/{name}"], check=True)
        wait_until(f"{name} gone from upstream.conf", lambda: not listed(lb.upstream(), port))
        time.sleep(0.1)  # nginx's reload, before the server goes
        server.terminate()
        server.wait(timeout=10)
    lb.stop()
    steady.terminate()
    steady.wait(timeout=10)
    return first, to_file


def parse_wrk(text):
    def number(pattern):
        found = re.search(pattern, text)
        return int(found.group(1)) if found else 0

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       text)
    return {
        "requests": number(r"(\d+) requests in"),
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "non2xx": number(r"Non-2xx or 3xx responses: (\d+)"),
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
        "errors_line": errors.group(0) if errors else "no socket errors",
    }


def roll_at_full_load(w, store, label, empty):
    lb = Balancer(w, store, f"{label}-roll", empty)
    backends = [start_backend(w, store, f"{label}-b{n}", empty) for n in (1, 2, 3)]
    wait_until("three backends in upstream.conf",
               lambda: all(listed(lb.upstream(), b["port"]) for b in backends))
    wait_until("nginx reloaded with them", lb.settled)
    wrk = popen(
        ["wrk", "-t2", "-c16", "-d300s", "--timeout", "5s", "-H", "Connection: close",
         f"http://127.0.0.1:{lb.port}/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)
    stops = []
    started = monotonic()
    for n in range(4, 4 + ROLLS):
        old = backends.pop(0)
        sent = monotonic()
        old["proc"].send_signal(signal.SIGTERM)
        backends.append(start_backend(w, store, f"{label}-b{n}", empty))
        old["proc"].wait(timeout=30)
        served, term = requests_of(old["log"])
        stops.append({
            "last": (max(served) - sent) * 1e3 if served else float("nan"),
            "drain": (term - sent) if term else float("nan"),
            "late": sum(1 for at in served if term and at > term),
            "served": len(served),
        })
    wait_until("the last replacement in upstream.conf",
               lambda: listed(lb.upstream(), backends[-1]["port"]))
    roll_secs = monotonic() - started
    time.sleep(1)
    wrk.send_signal(signal.SIGINT)
    out, _ = wrk.communicate(timeout=30)
    for backend in backends:
        backend["proc"].send_signal(signal.SIGTERM)
    for backend in backends:
        backend["proc"].wait(timeout=30)
    lb.stop()
    result = parse_wrk(out)
    result["stops"] = stops
    result["roll_secs"] = roll_secs
    return result


def template_cost(w, stamp, store, label, empty):
    """Three harnesses side by side: without a template, with the example's template written
    each re-run (a line of it shows the literal), with it unchanged (not written)."""
    for n in range(100):
        subprocess.run([BIN, "--kv", store, "kv", "put", f"web/i{n:03}",
                        f"10.0.{n // 250}.{n % 250 + 1}:8080"], check=True)
    with open(os.path.join(EXAMPLE, "nginx/upstream.conf.j2")) as f:
        example = f.read()
    # The same 100 lines without the registry: what reading it costs, against "written".
    static = ("{% for n in range(100) %}server 10.0.0.{{ n }}:8080 max_fails=1 fail_timeout=5s;\n"
              "{% endfor %}# generation {{ A }}\n")
    harnesses = []
    for kind, template in (("without", None), ("written", example + "# generation {{ A }}\n"),
                           ("unchanged", example), ("static", static)):
        env = os.path.join(w, f"{label}-{kind}-env")
        os.mkdir(env)
        watch.replace(os.path.join(env, "A"), "0\n")
        out = os.path.join(w, f"{label}-{kind}.out")
        args = [BIN, "--init", "--watch", "0", "--on-change", "HUP", "--kv", store,
                "-x", empty, "-e", env]
        if template is not None:
            src = os.path.join(w, f"{label}-{kind}.conf.j2")
            with open(src, "w") as f:
                f.write(template)
            args += ["-t", f"{src}:{os.path.join(w, f'{label}-{kind}.conf')}"]
        proc = popen(args + ["--", stamp, out], env={"PATH": "/usr/bin:/bin"},
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
        watch.wait_lines(out, 1)
        harnesses.append({"kind": kind, "proc": proc, "env": env, "out": out, "times": []})
    time.sleep(0.5)
    for i in range(1, ROUNDS + 1):
        # The literal changes in each, so each re-run ends with a HUP; the order rotates.
        for h in harnesses[i % 4:] + harnesses[:i % 4]:
            watch.replace(os.path.join(h["env"], "A"), f"{i}\n")
            t0 = time.monotonic_ns()
            os.kill(h["proc"].pid, signal.SIGHUP)
            got = watch.wait_lines(h["out"], i + 1)
            h["times"].append((int(got[i]) - t0) / 1e6)
    with open(os.path.join(w, f"{label}-written.conf")) as f:
        rendered = f.read().count("server 10.0.")
    for h in harnesses:
        watch.stop(h["proc"])
    times = {h["kind"]: h["times"] for h in harnesses}
    return {
        "times": times,
        "written": [a - b for a, b in zip(times["written"], times["without"])],
        "unchanged": [a - b for a, b in zip(times["unchanged"], times["without"])],
        "static": [a - b for a, b in zip(times["static"], times["without"])],
        "servers": rendered,
    }


def main():
    if not os.access(BIN, os.X_OK):
        raise SystemExit(f"bench: {BIN} is missing: run `make static` first")
    for tool in ("wrk",):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is missing: run `make deps`")
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        raise SystemExit("bench: nginx is missing: run `make deps`")
    results = {}
    with tempfile.TemporaryDirectory(prefix="envharness-bench-lb.") as w:
        stamp = os.path.join(w, "stamp")
        with open(stamp + ".c", "w") as f:
            f.write(watch.STAMP_C)
        subprocess.run(["cc", "-O2", "-static", "-o", stamp, stamp + ".c"], check=True)
        empty = os.path.join(w, "empty")
        os.mkdir(empty)
        # Each measurement has a store (a directory, or a prefix on the etcd) of its own.
        stores = [("file", lambda kind: "file://" + os.path.join(w, f"store-{kind}"))]
        etcd, endpoint = watch.start_etcd(w)
        if etcd is not None:
            stores.append(("etcd", lambda kind: f"etcd://{endpoint}/bench-lb-{kind}"))
        try:
            for label, store in stores:
                log(f"{label}: kv put -> the first request through nginx ({TRIALS} instances)")
                first = put_to_first_request(w, store("first"), label, empty)
                log(f"{label}: a roll of {ROLLS} backends under wrk's load")
                roll = roll_at_full_load(w, store("roll"), label, empty)
                log(f"{label}: 100 instances in a template, {ROUNDS} paired re-runs")
                cost = template_cost(w, stamp, store("template"), label, empty)
                results[label] = (first, roll, cost)
        finally:
            kill_everything()
            if etcd is not None:
                etcd.kill()
                etcd.wait()

    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "unknown"
    nginx = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-v"],
                           capture_output=True, text=True).stderr.strip().split("/")[-1]
    out = [
        "# A load balancer that follows its backends: benchmark results",
        "",
        f"`python3 bench/loadbalancer.py` at {rev}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, binary "
        f"`{os.path.relpath(BIN, ROOT)}`, nginx {nginx}, {os.cpu_count()} CPUs.",
        "",
        "| what | measured | goal | |",
        "|---|---:|---:|---|",
    ]
    for label, (first, roll, cost) in results.items():
        (served, on_disk) = first
        med = statistics.median(served)
        stops = roll["stops"]
        failed = roll["non2xx"] + roll["socket_errors"]
        late = sum(s["late"] for s in stops)
        last = max(s["last"] for s in stops)
        added = statistics.median(cost["written"])
        out += [
            f"| {label}: `kv put` of a new instance → its first request through nginx, median "
            f"of {len(served)} [max] (of which put → upstream.conf on disk: "
            f"{statistics.median(on_disk):.1f} ms) | {med:.1f} ms [{max(served):.1f}] | "
            f"≤ 100 ms | {'pass' if med <= 100 else 'miss'} |",
            f"| {label}: a backend's SIGTERM → the last request it served, {len(stops)} backends, "
            f"median [max] (SIGTERM → the server's own SIGTERM: "
            f"{min(s['drain'] for s in stops):.2f}–{max(s['drain'] for s in stops):.2f} s, "
            f"`--drain {DRAIN}`; requests after it: {late}) | "
            f"{statistics.median(s['last'] for s in stops):.0f} ms "
            f"[{last:.0f}] | < the drain | "
            f"{'pass' if late == 0 and last < 1e3 * float(DRAIN) else 'miss'} |",
            f"| {label}: requests failed during a roll of {ROLLS} backends "
            f"({roll['roll_secs']:.1f} s) under wrk's full load, {roll['requests']} requests at "
            f"{roll['rate']:.0f}/s ({roll['non2xx']} non-2xx; {roll['errors_line']}) | "
            f"{failed} | 0 | {'pass' if failed == 0 else 'miss'} |",
            f"| {label}: a template of {cost['servers']} instances from `instances()` (the "
            f"example's), written: time added to a re-run, paired, median of {ROUNDS} rounds "
            f"[10th–90th] (a re-run without it: {statistics.median(cost['times']['without']):.2f}"
            f" ms; its output unchanged, not written: "
            f"{statistics.median(cost['unchanged']):+.2f} ms; 100 such lines without the "
            f"registry, written: {statistics.median(cost['static']):+.2f} ms) | {added:+.2f} ms "
            f"[{watch.percentile(cost['written'], 0.1):+.2f} – "
            f"{watch.percentile(cost['written'], 0.9):+.2f}] | ≤ 2 ms | "
            f"{'pass' if added <= 2 else 'miss'} |",
        ]
    out.append("")
    for label, (first, roll, cost) in results.items():
        lasts = ", ".join(f"{s['last']:.0f}" for s in roll["stops"])
        out += [
            f"{label}: put → first request (ms): {', '.join(f'{d:.1f}' for d in first[0])}",
            "",
            f"{label}: SIGTERM → last request (ms): {lasts}",
            "",
        ]
    report = "\n".join(out)
    print(report)
    with open(os.path.join(ROOT, "bench/results-loadbalancer.md"), "w") as f:
        f.write(report)


if __name__ == "__main__":
    main()
