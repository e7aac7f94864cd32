#!/usr/bin/env python3
"""Faults across hosts (issue 16): envharness and a real etcd cluster on hosts that are
network namespaces made here. `make chaos` runs this (after `make static`); alone:
`python3 bench/chaos.py [partition|latency|soak ...]` as root. Writes a Markdown report to
stdout and to bench/results-chaos.md (only when every part ran).

The lab: a namespace per host (`ehc<pid>-h0`…), each with one veth into a switch namespace
(`ehc<pid>-sw`, a bridge), addresses 198.18.0.1… (the benchmarking range) on the hosts' veths
only: the machine's own namespace gets no address and no route, so nothing leaves the lab.
Each host runs one etcd member (Debian's etcd-server) and harnesses (`ip netns exec`). A host
is partitioned by setting its port on the switch down, and healed by setting it up. Every
process started here gets PR_SET_PDEATHSIG, and at the end (even on failure, SIGINT or
SIGTERM) every process in the lab's namespaces is killed by pid and the namespaces deleted.

- partition: on each host a publisher (`--ttl TTL`) and a consumer (`--watch 0`) reading the
  next host's publisher's key. One host is cut off (a follower's, then the leader's, in
  turn): its key disappears on the majority's side within TTL, its command keeps running, the
  consumer on it keeps its environment; healed, the key is back within one renewal (TTL/3).
  CHAOS_REPS repetitions (rounded to an even number).
- latency: how long a `kv put` on host 0 takes to reach a `--watch 0` harness on host 1 (its
  command started again with the new value), with nothing wrong, with a member frozen
  (SIGSTOP: the watching harness's own member, then another one), the leader SIGKILLed, and
  the watching harness's member wiped and rejoined (removed, data deleted, added back empty);
  CHAOS_REPS repetitions each (default 10), median and max. A change not seen within
  CHAOS_LATENCY_LIMIT seconds (default 10) counts as missed.
- soak: CHAOS_SOAK_HARNESSES harnesses (default 50) over the hosts, each publishing svc/NAME
  and watching another's key, for CHAOS_SOAK_SECS seconds (default 600), with SIGKILLs, stops
  (SIGTERM) and restarts of harnesses and partitions of hosts injected at random
  (CHAOS_SEED), and invariants checked every second (see `soak`).

Other knobs: CHAOS_TTL (default 6), CHAOS_HEARTBEAT / CHAOS_ELECTION (etcd's, in ms; default
25 and 250: the 10/100 of the loopback tests elect spuriously on two shared cores under 50
harnesses), ENVHARNESS_BIN (default the static release binary).
"""

import ctypes
import datetime
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get(
    "ENVHARNESS_BIN",
    os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/envharness"),
)
TTL = int(os.environ.get("CHAOS_TTL", "6"))
REPS = int(os.environ.get("CHAOS_REPS", "10"))
LATENCY_LIMIT = float(os.environ.get("CHAOS_LATENCY_LIMIT", "10"))
SOAK_SECS = float(os.environ.get("CHAOS_SOAK_SECS", "600"))
SOAK_HARNESSES = int(os.environ.get("CHAOS_SOAK_HARNESSES", "50"))
SEED = int(os.environ.get("CHAOS_SEED", "16"))
HEARTBEAT = int(os.environ.get("CHAOS_HEARTBEAT", "25"))
ELECTION = int(os.environ.get("CHAOS_ELECTION", "250"))
HOSTS = 3
PATH = "/usr/local/bin:/usr/bin:/bin"
SEARCH = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin:" + PATH
IP = shutil.which("ip", path=SEARCH) or "ip"
ETCD = shutil.which("etcd", path=SEARCH) or "etcd"
ETCDCTL = shutil.which("etcdctl", path=SEARCH) or "etcdctl"

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000


def log(text):
    print(f"chaos: {text}", file=sys.stderr, flush=True)


def die_with_parent():
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run(args, timeout=30, check=True):
    """Runs a short command (bounded); returns its stdout."""
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=die_with_parent)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".new~", "w") as f:
        f.write(text)
    os.chmod(path + ".new~", mode)
    os.rename(path + ".new~", path)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_state(pid):
    """(state letter, ppid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return rest[0], int(rest[1])
    except (OSError, IndexError, ValueError):
        return None


def in_namespace(ns, function):
    """Runs `function` on a thread of its own that has entered network namespace `ns`
    (setns applies to the calling thread only: the driver's own threads stay outside)."""
    result = {}

    def body():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            result["value"] = function()
        except Exception as err:  # handed to the caller
            result["error"] = err

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(30)
    if "error" in result:
        raise result["error"]
    return result.get("value")


def http_get(address, path, timeout=3):
    """GET http://ADDRESS:2379/PATH (from the namespace of the thread that calls it)."""
    with socket.create_connection((address, 2379), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
                     .encode())
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class Stop(Exception):
    """SIGTERM or SIGINT: the lab is torn down on the way out."""


def stop_on_signal(signum, _frame):
    raise Stop(f"signal {signum}")


class Lab:
    """The hosts, their etcd members, and every process started in them."""

    def __init__(self, hosts=HOSTS):
        self.tag = f"ehc{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.hosts = [f"{self.tag}-h{i}" for i in range(hosts)]
        self.addresses = [f"198.18.0.{i + 1}" for i in range(hosts)]
        self.dir = tempfile.mkdtemp(prefix="envharness-chaos.", dir="/dev/shm")
        self.members = [None] * hosts
        self.member_names = [f"m{i}" for i in range(hosts)]
        self.generation = [0] * hosts
        self.processes = []
        self.cut = set()
        self.made = []
        os.mkdir(os.path.join(self.dir, "bin"))
        os.symlink(BIN, os.path.join(self.dir, "bin/envharness"))

    # --- the network -------------------------------------------------------------------

    def build(self):
        sweep_stale()
        run([IP, "netns", "add", self.switch])
        self.made.append(self.switch)
        run([IP, "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        run([IP, "-n", self.switch, "link", "set", "br0", "up"])
        for i, host in enumerate(self.hosts):
            run([IP, "netns", "add", host])
            self.made.append(host)
            run([IP, "-n", self.switch, "link", "add", f"p{i}", "type", "veth",
                 "peer", "name", "eth0", "netns", host])
            run([IP, "-n", self.switch, "link", "set", f"p{i}", "master", "br0"])
            run([IP, "-n", self.switch, "link", "set", f"p{i}", "up"])
            run([IP, "-n", host, "addr", "add", f"{self.addresses[i]}/24", "dev", "eth0"])
            run([IP, "-n", host, "link", "set", "eth0", "up"])
            run([IP, "-n", host, "link", "set", "lo", "up"])

    def partition(self, i):
        """Host i loses the others: its switch port goes down (packets are dropped, open
        connections hang, as when a cable is pulled). A link rather than an nft rule: nothing
        to install, and the host's own member and harnesses still reach each other."""
        run([IP, "-n", self.switch, "link", "set", f"p{i}", "down"])
        self.cut.add(i)

    def heal(self, i):
        run([IP, "-n", self.switch, "link", "set", f"p{i}", "up"])
        self.cut.discard(i)

    # --- processes ---------------------------------------------------------------------

    def spawn(self, i, args, log_path, cwd=None, env=None):
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [IP, "netns", "exec", self.hosts[i], *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=cwd or self.dir,
                env=env or {"PATH": PATH}, preexec_fn=die_with_parent)
        self.processes.append(proc)
        return proc

    def reap(self):
        """Waits for the children that ended (so none stays a zombie of this driver)."""
        for proc in self.processes:
            proc.poll()
        self.processes = [p for p in self.processes if p.returncode is None]

    def exec_in(self, i, args, timeout=15):
        """A short command on host i: (exit status, stdout)."""
        try:
            done = subprocess.run([IP, "netns", "exec", self.hosts[i], *args],
                                  stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout, env={"PATH": PATH},
                                  preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            return None, b""
        self.last_stderr = done.stderr.decode(errors="replace")
        return done.returncode, done.stdout

    def url(self, i, prefix="chaos"):
        """The store as seen from host i: its own member first, then the others."""
        order = [i] + [j for j in range(len(self.hosts)) if j != i]
        return "etcd://" + ",".join(f"{self.addresses[j]}:2379" for j in order) + f"/{prefix}"

    def kv(self, i, *args, timeout=15):
        return self.exec_in(i, [BIN, "--kv", self.url(i), "kv", *args], timeout)

    # --- etcd --------------------------------------------------------------------------

    def peer(self, j):
        return f"http://{self.addresses[j]}:2380"

    def start_member(self, i, state="new", cluster=None):
        address = self.addresses[i]
        cluster = cluster or ",".join(
            f"{self.member_names[j]}={self.peer(j)}" for j in range(len(self.hosts)))
        data = os.path.join(self.dir, f"etcd{i}")
        args = [
            ETCD, f"--name={self.member_names[i]}", f"--data-dir={data}",
            f"--listen-client-urls=http://{address}:2379",
            f"--advertise-client-urls=http://{address}:2379",
            f"--listen-peer-urls=http://{address}:2380",
            f"--initial-advertise-peer-urls=http://{address}:2380",
            f"--initial-cluster={cluster}", f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self.tag}",
            f"--heartbeat-interval={HEARTBEAT}", f"--election-timeout={ELECTION}",
            # A member coming back from a partition does not depose the leader (the default
            # from etcd 3.5 on): fewer elections, each of which gives every lease its whole
            # TTL again (etcd 3.4 keeps no remaining TTL across a leader change).
            "--pre-vote",
            "--logger=zap", "--log-outputs=stderr",
        ]
        self.members[i] = self.spawn(i, args, os.path.join(self.dir, f"etcd{i}.log"))

    def start_cluster(self):
        for i in range(len(self.hosts)):
            self.start_member(i)
        for i in range(len(self.hosts)):
            self.wait_member(i)

    def wait_member(self, i, limit=30):
        until = time.monotonic() + limit
        while time.monotonic() < until:
            code, _ = self.ctl(i, ["endpoint", "health"], endpoints=[i], timeout=5)
            if code == 0:
                return
            if self.members[i].poll() is not None:
                raise RuntimeError(f"etcd on host {i} exited:\n{self.member_log(i)}")
            time.sleep(0.1)
        raise RuntimeError(f"etcd on host {i} is not healthy after {limit}s:\n{self.member_log(i)}")

    def member_log(self, i):
        with open(os.path.join(self.dir, f"etcd{i}.log"), errors="replace") as f:
            return "".join(f.readlines()[-20:])

    def ctl(self, i, args, endpoints=None, timeout=10):
        endpoints = endpoints if endpoints is not None else range(len(self.hosts))
        return self.exec_in(i, [
            ETCDCTL, "--dial-timeout=2s", "--command-timeout=5s",
            "--endpoints=" + ",".join(f"http://{self.addresses[j]}:2379" for j in endpoints),
            *args], timeout)

    def leader(self):
        """The host whose member leads, as its members see it, or None."""
        for i in range(len(self.hosts)):
            if i in self.cut or self.members[i] is None:
                continue
            code, out = self.ctl(i, ["endpoint", "status", "-w", "json"], endpoints=[i],
                                 timeout=5)
            if code != 0:
                continue
            status = json.loads(out)[0]["Status"]
            leader = status["leader"]
            for j in range(len(self.hosts)):
                if j in self.cut:
                    continue
                code, out = self.ctl(j, ["endpoint", "status", "-w", "json"], endpoints=[j],
                                     timeout=5)
                if code == 0 and json.loads(out)[0]["Status"]["header"]["member_id"] == leader:
                    return j
        return None

    def watchers(self, i):
        """How many watches member i serves (etcd's own metric), None when it does not
        answer."""
        try:
            text = in_namespace(self.hosts[i], lambda: http_get(self.addresses[i], "/metrics"))
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("etcd_debugging_mvcc_watcher_total "):
                try:
                    return int(float(line.split()[1]))
                except (IndexError, ValueError):  # an answer cut short
                    return None
        return None

    def watch_holder(self):
        """The member serving the (only) watch, or None."""
        for i in range(len(self.hosts)):
            if self.members[i] is not None and self.members[i].poll() is None \
                    and (self.watchers(i) or 0) > 0:
                return i
        return None

    def signal_member(self, i, signum):
        os.kill(self.members[i].pid, signum)

    def freeze(self, i):
        self.signal_member(i, signal.SIGSTOP)
        until = time.monotonic() + 5
        while time.monotonic() < until:
            state = proc_state(self.members[i].pid)
            if state is None or state[0] in "Tt":
                return
            time.sleep(0.001)

    def thaw(self, i):
        self.signal_member(i, signal.SIGCONT)

    def kill_member(self, i):
        self.members[i].kill()
        self.members[i].wait(timeout=10)

    def restart_member(self, i):
        self.start_member(i, state="existing")
        self.wait_member(i)

    # --- the end -----------------------------------------------------------------------

    def close(self):
        """Kills every process in the lab's namespaces (by pid), deletes the namespaces and
        the lab's directory. Bounded; safe to call twice."""
        for ns in self.made:
            kill_namespace(ns)
        for proc in self.processes:
            try:
                proc.kill()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for ns in reversed(self.made):
            subprocess.run([IP, "netns", "del", ns], capture_output=True, timeout=30)
        self.made = []
        shutil.rmtree(self.dir, ignore_errors=True)


def kill_namespace(ns):
    """SIGKILLs the processes in namespace `ns` (all of them started by this driver)."""
    for _ in range(5):
        done = subprocess.run([IP, "netns", "pids", ns], capture_output=True, text=True,
                              timeout=30)
        pids = [int(p) for p in done.stdout.split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def sweep_stale():
    """Namespaces an earlier run of this driver left (it was SIGKILLed): its pid is gone."""
    done = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, timeout=30)
    for line in done.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith("ehc") or "-" not in name:
            continue
        owner = name[3:].split("-", 1)[0]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            kill_namespace(name)
            subprocess.run([IP, "netns", "del", name], capture_output=True, timeout=30)


COMMAND = """#!/bin/sh
# Records each start (the time and what discovery found), then runs until stopped or until
# its harness is gone (a SIGKILLed harness leaves it an orphan), leaving an orphan of its own
# every second for the harness to reap.
trap 'exit 0' TERM
echo "$(date +%s.%N) ${PEER:-}" >> seen
h=$PPID
while kill -0 "$h" 2>/dev/null; do
    (sleep 0.2 &)
    sleep 1 & wait $!
done
"""

# Discovery: the value of KEY, "none" when there is none; a store that cannot be reached
# fails the run, so the harness keeps its last good environment.
READS = """#!/bin/sh
envharness kv get {key} && exit 0
[ $? = 1 ] && echo none && exit 0
exit 1
"""


class Harness:
    """`envharness --init` on a host: publishing svc/NAME (the value `publish`), and, with
    `read`, discovering PEER (the value of that key) under `--watch 0`."""

    def __init__(self, lab, host, name, publish=None, read=None, ttl=TTL):
        self.lab, self.host, self.name, self.ttl = lab, host, name, ttl
        self.dir = os.path.join(lab.dir, "h", name)
        self.proc = None
        self.starts = 0
        os.makedirs(os.path.join(self.dir, "export"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "env"), exist_ok=True)
        if publish is not None:
            write(os.path.join(self.dir, "export/svc"), f"#!/bin/sh\necho {publish}\n", 0o755)
        self.read = read
        if read is not None:
            write(os.path.join(self.dir, "env/PEER"), READS.format(key=read), 0o755)
        write(os.path.join(self.dir, "cmd"), COMMAND, 0o755)

    @property
    def key(self):
        return f"svc/{self.name}"

    def publish(self, value):
        write(os.path.join(self.dir, "export/svc"), f"#!/bin/sh\necho {value}\n", 0o755)

    def start(self):
        args = [BIN, "--init", "--kv", self.lab.url(self.host), "--ttl", str(self.ttl),
                "--instance", self.name, "-x", "export", "-e", "env"]
        if self.read is not None:
            args += ["--watch", "0"]
        args += ["--", "./cmd"]
        env = {"PATH": f"{self.lab.dir}/bin:{PATH}", "RUST_LOG": "info"}
        self.proc = self.lab.spawn(self.host, args, os.path.join(self.dir, "log"),
                                   cwd=self.dir, env=env)
        self.starts += 1
        return self.proc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def seen(self):
        """[(time, PEER)] of each start of the command."""
        try:
            with open(os.path.join(self.dir, "seen")) as f:
                rows = [line.rstrip("\n").split(" ", 1) for line in f]
        except FileNotFoundError:
            return []
        return [(float(t), v) for t, v in rows if v is not None]

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self, timeout=10):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_until(what, condition, limit, step=0.05):
    """Polls `condition` until it holds; returns the seconds it took, None after `limit`."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if condition():
            return time.monotonic() - start
        time.sleep(step)
    return None


def has(lab, host, key):
    code, _ = lab.kv(host, "get", key, timeout=10)
    return code == 0


def settle(lab, keys, limit=30):
    """Waits until every host is joined, every member healthy and every key in `keys` is
    seen from host 0."""
    for i in range(len(lab.hosts)):
        lab.wait_member(i, limit)
    ok = wait_until("settled", lambda: all(has(lab, 0, k) for k in keys), limit, step=0.2)
    if ok is None:
        raise RuntimeError(f"the keys {keys} are not all there after {limit}s")


def seen_after(harness, since, value=None):
    """The first start of `harness`'s command after `since` (with PEER = value if given)."""
    for t, v in harness.seen():
        if t > since and (value is None or v == value):
            return t
    return None


def partition(lab, reps):
    """A host partitioned from the others and healed, `reps` times; the host is the
    leader's on odd repetitions and a follower's on even ones."""
    n = len(lab.hosts)
    pubs = [Harness(lab, i, f"p{i}", publish=f"addr-{i}") for i in range(n)]
    cons = [Harness(lab, i, f"c{i}", read=f"svc/p{(i + 1) % n}") for i in range(n)]
    for h in pubs + cons:
        h.start()
    settle(lab, [p.key for p in pubs])
    for c in cons:
        if wait_until("consumer", lambda c=c: bool(c.seen()), 15) is None:
            raise RuntimeError(f"{c.name} never started its command:\n{c.log_text()}")
    rows = []
    for rep in range(reps):
        leader = lab.leader()
        if rep % 2 == 1:
            cut = leader
        else:
            cut = next(i for i in range(n) if i != leader)
        majority = next(i for i in range(n) if i != cut)
        watcher = cons[(cut - 1) % n]  # on a majority host, reads svc/p<cut>
        inside = cons[cut]  # on the cut host, reads a majority host's key
        inside_seen = len(inside.seen())
        pub = pubs[cut]
        pub_starts = len(pub.seen())
        t_cut = lab_time()
        lab.partition(cut)
        gone = wait_until("gone", lambda: not has(lab, majority, pub.key), TTL + 10, step=0.05)
        noticed = seen_after_wait(watcher, t_cut, "none", TTL + 10)
        # Stay cut a while longer: the consumer inside keeps its environment, the publisher's
        # command keeps running.
        time.sleep(3)
        kept = len(inside.seen()) == inside_seen and inside.alive()
        running = pub.alive() and len(pub.seen()) == pub_starts
        t_heal = lab_time()
        lab.heal(cut)
        back = wait_until("back", lambda: has(lab, majority, pub.key), 30, step=0.02)
        again = seen_after_wait(watcher, t_heal, f"addr-{cut}", 30)
        rows.append({
            "cut": cut, "leader": cut == leader, "gone": gone,
            "noticed": None if noticed is None else noticed - t_cut,
            "kept": kept, "running": running, "back": back,
            "again": None if again is None else again - t_heal,
        })
        log(f"partition {rep + 1}/{reps}: {rows[-1]}")
        settle(lab, [p.key for p in pubs])
        time.sleep(1)
    for h in pubs + cons:
        h.stop()
    return rows


def lab_time():
    """The wall clock, as the commands' `date +%s.%N` writes it (one clock for all the
    namespaces)."""
    return time.time()


def seen_after_wait(harness, since, value, limit):
    until = time.monotonic() + limit
    while time.monotonic() < until:
        t = seen_after(harness, since, value)
        if t is not None:
            return t
        time.sleep(0.02)
    return None


def latency(lab, reps):
    """How long a change takes to reach a watching harness on another host, under faults.
    The harness runs on host 1 (its own member first in its URL); the puts go through a live
    host that is not the one under fault. Each figure is from the put's start to the
    watcher's command started again with the new value; the put's own time is kept too."""
    n = len(lab.hosts)
    watcher = Harness(lab, 1, "w1", read="cfg/x")
    watcher.start()
    counter = [0]
    if wait_until("watcher", lambda: bool(watcher.seen()), 15) is None:
        raise RuntimeError(f"the watcher never started:\n{watcher.log_text()}")
    results = {}

    def measure(name, via, note=""):
        counter[0] += 1
        value = f"v{counter[0]}"
        t0 = lab_time()
        code, _ = lab.kv(via, "put", "cfg/x", value, timeout=15)
        t1 = lab_time()
        if code != 0:
            log(f"kv put through host {via} failed ({code}): {lab.last_stderr.strip()}")
        t = seen_after_wait(watcher, t0, value, LATENCY_LIMIT)
        took = None if t is None else t - t0
        results.setdefault(name, []).append({"took": took, "put": t1 - t0, "note": note})
        log(f"latency {name}: {'missed' if took is None else f'{took:.3f} s'} "
            f"(put {t1 - t0:.3f} s) {note}")
        return value

    def caught_up(value):
        """After a fault is over: the watcher ends up with `value` (bounded)."""
        if seen_after_wait(watcher, 0, value, 30) is None:
            raise RuntimeError(f"the watcher never saw {value}:\n{watcher.log_text()[-3000:]}")

    def holder():
        """A watcher started afresh, so that its watch is on its own member (host 1, first
        in its URL); etcd's watcher count says so, when it answers."""
        watcher.stop()
        started = lab_time()
        watcher.start()
        if seen_after_wait(watcher, started, None, 15) is None:
            raise RuntimeError(f"the watcher did not start again:\n{watcher.log_text()[-3000:]}")
        if wait_until("the watch", lambda: lab.watch_holder() == 1, 5, step=0.1) is None:
            log(f"etcd does not say the watch is on host 1 (it says {lab.watch_holder()})")
        return 1

    def other_than(*hosts):
        return next(j for j in range(n) if j not in hosts)

    for _ in range(reps):
        caught_up(measure("none", 0))
    for _ in range(reps):
        held = holder()
        lab.freeze(held)
        value = measure("frozen: the watch's member", other_than(held), f"(host {held})")
        lab.thaw(held)
        caught_up(value)
    for _ in range(reps):
        held = 1  # the watch stays where the last fresh start put it: nothing broke it
        frozen = random.choice([j for j in range(n) if j != held])
        lab.freeze(frozen)
        value = measure("frozen: another member", other_than(frozen), f"(host {frozen})")
        lab.thaw(frozen)
        caught_up(value)
    for _ in range(reps):
        held = holder()
        leader = lab.leader()
        lab.kill_member(leader)
        value = measure("leader killed", other_than(leader),
                        f"(host {leader}{', the watch' if leader == held else ''})")
        lab.restart_member(leader)
        caught_up(value)
    for _ in range(reps):
        # The watch's member is lost with its data: a change while it is gone, then one
        # right after it has come back empty (still catching up).
        held = holder()
        lab.kill_member(held)
        value = measure("wiped: the watch's member lost", other_than(held), f"(host {held})")
        caught_up(value)
        rejoin_dead(lab, held)
        value = measure("wiped: rejoined empty", other_than(held), f"(host {held})")
        caught_up(value)
        lab.wait_member(held)
    watcher.stop()
    return results


def rejoin_dead(lab, i):
    """Member i, already dead, is removed, wiped and added back empty; returns as soon as
    it has started (not waiting for it to catch up). etcd refuses a membership change until
    the leader has been connected to the others for 5 s ("unhealthy cluster"), so each is
    tried for up to 20 s."""
    others = [j for j in range(len(lab.hosts)) if j != i]

    def retried(args):
        until = time.monotonic() + 20
        while True:
            code, out = lab.ctl(others[0], args, endpoints=others)
            if code == 0:
                return out
            if time.monotonic() > until:
                raise RuntimeError(f"etcdctl {' '.join(args)} failed: {lab.last_stderr}")
            time.sleep(0.5)

    for member in json.loads(retried(["member", "list", "-w", "json"]))["members"]:
        if lab.peer(i) in member.get("peerURLs", []):
            retried(["member", "remove", format(member["ID"], "x")])
    shutil.rmtree(os.path.join(lab.dir, f"etcd{i}"), ignore_errors=True)
    lab.generation[i] += 1
    lab.member_names[i] = f"m{i}g{lab.generation[i]}"
    out = retried(["member", "add", lab.member_names[i], f"--peer-urls={lab.peer(i)}"])
    cluster = next(line.split("=", 1)[1].strip('"')
                   for line in out.decode().splitlines()
                   if line.startswith("ETCD_INITIAL_CLUSTER="))
    lab.start_member(i, state="existing", cluster=cluster)


def lease_of(lab, i, key):
    """What etcd says, from host i, of the lease that holds KEY: granted and remaining TTL."""
    code, out = lab.ctl(i, ["get", f"chaos/{key}", "-w", "json"], timeout=5)
    try:
        lease = json.loads(out)["kvs"][0].get("lease")
    except (ValueError, KeyError, IndexError, TypeError):
        return "the key is gone"
    if not lease:
        return "the key has no lease"
    code, out = lab.ctl(i, ["lease", "timetolive", format(int(lease), "x")], timeout=5)
    return out.decode(errors="replace").strip() if code == 0 else "no answer about its lease"


def elections(lab, offsets):
    """The times (wall clock) of the leader elections the members logged since the last
    call; `offsets` keeps how far each log was read."""
    found = []
    for i in range(len(lab.hosts)):
        path = os.path.join(lab.dir, f"etcd{i}.log")
        try:
            with open(path, errors="replace") as f:
                f.seek(offsets.get(path, 0))
                text = f.read()
                offsets[path] = f.tell()
        except OSError:
            continue
        for line in text.splitlines():
            if "became leader at term" not in line:
                continue
            try:
                ts = json.loads(line)["ts"]
                found.append(datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
                             .replace(tzinfo=datetime.timezone.utc).timestamp())
            except (ValueError, KeyError):
                pass
    return found


STARTUP_GRACE = 5
RSS_SLACK_KIB = 1024
RSS_MIN_LIFE = 180


class Life:
    """One harness of the soak: its generation (each start publishes NAME-GEN), and what
    the checks learned about it."""

    def __init__(self, harness):
        self.h = harness
        self.gen = 0
        self.started = None
        self.dead_since = None
        self.restart_at = None
        self.stopping = False
        self.absent_since = None
        self.absence_counted = False
        self.rss = []  # (time, KiB) of the current generation

    @property
    def value(self):
        return f"{self.h.name}-{self.gen}"

    def start(self):
        self.gen += 1
        self.h.publish(self.value)
        self.h.start()
        self.started = lab_time()
        self.dead_since = self.restart_at = self.absent_since = None
        self.stopping = self.absence_counted = False
        self.rss = []

    def rss_growth(self):
        """(value, growth, first, last) in KiB for a generation that lived RSS_MIN_LIFE s or
        more: the largest sample of its first minute against its last one."""
        if not self.rss or self.rss[-1][0] - self.started < RSS_MIN_LIFE:
            return None
        first = max(kib for t, kib in self.rss if t - self.started <= 60)
        last = self.rss[-1][1]
        return (self.value, last - first, first, last)


def soak(lab, secs, count):
    """`count` harnesses over the hosts, each publishing svc/NAME and watching the next one's
    key, for `secs` seconds with faults injected at random; the invariants are checked every
    second from a host in the majority:

    A. no key of a dead harness outlives TTL + 1 s (from its death, or, when the cluster
       elected a new leader meanwhile, from that election plus an election timeout: etcd 3.4
       gives every lease its whole TTL again at a new leader; such keys are counted apart);
    B. no live harness's key (its current value) missing for more than one renewal (TTL/3)
       while its host is in the majority: absent at two checks further apart than that, the
       host not cut in between, counted from its start plus STARTUP_GRACE or from its host's
       healing;
    C. no zombie: a zombie child of a harness seen at two checks in a row;
    D. RSS flat: every harness generation that lived RSS_MIN_LIFE s or more grew by at most
       RSS_SLACK_KIB from its first minute to its end;
    E. no harness exits unless told to, and one stopped with SIGTERM exits 0.
    """
    n = len(lab.hosts)
    rng = random.Random(SEED)
    renewal = TTL / 3
    election = ELECTION / 1000
    lives = [Life(Harness(lab, k % n, f"h{k:02d}", read=f"svc/h{(k + 1) % count:02d}"))
             for k in range(count)]
    events = {"SIGKILL": 0, "SIGTERM": 0, "restart": 0, "partition": 0}
    checks = {"rounds": 0, "skipped: the majority's store did not answer": 0,
              "dead keys": 0, "live keys": 0, "processes (zombie scan)": 0, "RSS samples": 0}
    violations = {"A": [], "B": [], "C": [], "D": [], "E": []}
    excused = {}  # dead keys kept past TTL + 1 s after a leader election: value -> seconds
    dead = {}  # name -> (value, death time, how)
    withdrawn = []  # for SIGTERM: was the key gone at the first check after it
    heal_time = {}
    cut = cut_until = None
    next_cut = lab_time() + 20
    leader_changes = []
    offsets = {}
    zombie_seen = set()
    growth = []
    for life in lives:
        life.start()
    t_begin = lab_time()
    until = time.monotonic() + secs
    elections(lab, offsets)  # the cluster's first election is not a fault
    next_report = 60
    while time.monotonic() < until:
        tick = time.monotonic()
        lab.reap()
        now = lab_time()
        leader_changes += elections(lab, offsets)
        # --- E: exits ---------------------------------------------------------------
        for life in lives:
            code = life.h.proc.poll()
            if code is None:
                continue
            if life.dead_since is None:
                violations["E"].append(f"{life.value} exited ({code}) unasked:\n"
                                       + life.h.log_text()[-1500:])
                dead[life.h.name] = (life.value, now, "exit")
                life.dead_since, life.restart_at = now, now + 2
            elif life.stopping:
                life.stopping = False
                if code != 0:
                    violations["E"].append(f"{life.value} exited {code} on SIGTERM:\n"
                                           + life.h.log_text()[-1500:])
        # --- A and B: the keys -------------------------------------------------------
        majority = next(i for i in range(n) if i != cut)
        t_check = lab_time()
        code, out = lab.kv(majority, "list", "svc/", "--json", timeout=10)
        if code != 0:
            checks["skipped: the majority's store did not answer"] += 1
        else:
            checks["rounds"] += 1
            live = json.loads(out or b"{}")
            for name, (value, died, how) in list(dead.items()):
                if live.get(f"svc/{name}") != value:
                    if how.startswith("SIGTERM "):
                        withdrawn.append((True, how))
                    del dead[name]
                    continue
                if how.startswith("SIGTERM "):
                    withdrawn.append((False, how))
                    dead[name] = (value, died, "SIGTERM")
                checks["dead keys"] += 1
                if t_check <= died + TTL + 1:
                    continue
                later = [e for e in leader_changes if died < e < t_check]
                base = max([died] + [e + election for e in later])
                if t_check <= base + TTL + 1:
                    excused[value] = t_check - died
                    continue
                violations["A"].append(f"{value}: present {t_check - died:.1f} s after its "
                                       f"harness died ({how}; elections since: {len(later)}; "
                                       f"etcd: {lease_of(lab, majority, f'svc/{name}')})")
                del dead[name]
            for life in lives:
                if life.dead_since is not None or life.h.host == cut:
                    life.absent_since = None
                    continue
                eligible = max(life.started + STARTUP_GRACE, heal_time.get(life.h.host, 0))
                if t_check < eligible:
                    continue
                checks["live keys"] += 1
                if live.get(f"svc/{life.h.name}") == life.value:
                    life.absent_since = None
                    life.absence_counted = False
                    continue
                if life.absent_since is None:
                    life.absent_since = t_check
                elif t_check - life.absent_since > renewal and not life.absence_counted:
                    life.absence_counted = True
                    healed = heal_time.get(life.h.host)
                    since = "" if healed is None else \
                        f", its host healed {t_check - healed:.1f} s before"
                    violations["B"].append(
                        f"{life.value} (host {life.h.host}): missing from "
                        f"{life.absent_since - t_begin:.1f} s to {t_check - t_begin:.1f} s "
                        f"of the soak{since}\n" + life.h.log_text()[-1500:])
                    log(f"violation B: {violations['B'][-1]}")
        # --- C and D: the processes -------------------------------------------------
        pids = {life.h.proc.pid: life for life in lives if life.dead_since is None}
        zombies, scanned = zombies_of(set(pids))
        checks["processes (zombie scan)"] += scanned
        for z in zombies & zombie_seen:
            violations["C"].append(f"zombie {z[0]} of {pids[z[1]].value}")
        zombie_seen = zombies
        for pid, life in pids.items():
            kib = rss_kib(pid)
            if kib is not None:
                life.rss.append((now, kib))
                checks["RSS samples"] += 1
        # --- faults -----------------------------------------------------------------
        if cut is not None and now >= cut_until:
            lab.heal(cut)
            heal_time[cut] = lab_time()
            cut = None
            next_cut = lab_time() + rng.uniform(15, 40)
        elif cut is None and now >= next_cut:
            cut = rng.randrange(n)
            lab.partition(cut)
            cut_until = lab_time() + rng.uniform(8, 20)
            events["partition"] += 1
        for life in lives:
            # A harness starts only where discovery can answer: not on a cut host.
            if life.dead_since is not None and not life.stopping \
                    and now >= life.restart_at and life.h.host != cut:
                kept = life.rss_growth()
                if kept:
                    growth.append(kept)
                life.start()
                events["restart"] += 1
        alive = [life for life in lives if life.dead_since is None]
        if len(alive) > count * 0.7 and rng.random() < 0.35:
            victim = rng.choice(alive)
            how = "SIGKILL" if rng.random() < 0.7 else "SIGTERM"
            died = lab_time()
            if how == "SIGKILL":
                victim.h.proc.kill()
            else:
                victim.h.proc.send_signal(signal.SIGTERM)
                victim.stopping = True
            events[how] += 1
            # SIGTERM: withdrawn at once where the store can be reached; on a cut host the
            # lease runs out instead.
            how += " (cut host)" if victim.h.host == cut else " (majority)"
            healed = heal_time.get(victim.h.host)
            if healed is not None and died - healed < 2 * TTL:
                how += f" {died - healed:.1f} s after its host was healed"
            dead[victim.h.name] = (victim.value, died, how)
            victim.dead_since = died
            victim.restart_at = died + rng.uniform(2, 12)
        if now - t_begin >= next_report:
            next_report += 60
            log(f"soak {now - t_begin:.0f}/{secs:.0f} s: {events}, {checks['rounds']} checks, "
                f"violations { {k: len(v) for k, v in violations.items()} }")
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    if cut is not None:
        lab.heal(cut)
    for life in lives:
        if life.dead_since is None:
            kept = life.rss_growth()
            if kept:
                growth.append(kept)
    stopped = 0
    for life in lives:
        if life.h.alive():
            life.h.stop()
            stopped += 1
            if life.h.proc.returncode != 0:
                violations["E"].append(f"{life.value} exited {life.h.proc.returncode} at the end")
    for value, grew, first, last in growth:
        if grew > RSS_SLACK_KIB:
            violations["D"].append(f"{value}: {first} KiB -> {last} KiB")
    for key, found in violations.items():
        for text in found:
            if key != "B":  # logged as it was found
                log(f"violation {key}: {text}")
    return {
        "secs": secs, "count": count, "events": events, "checks": checks,
        "violations": violations, "excused": excused, "elections": len(leader_changes),
        "rss": growth, "withdrawn": withdrawn, "stopped at the end": stopped,
    }


def zombies_of(parents):
    """The (pid, ppid) of the zombies whose parent is one of `parents`, and how many
    processes were looked at."""
    found = set()
    scanned = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        state = proc_state(int(entry))
        if state is None:
            continue
        scanned += 1
        if state[0] == "Z" and state[1] in parents:
            found.add((int(entry), state[1]))
    return found, scanned


def seconds(values):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{statistics.median(values):.2f} s [{max(values):.2f}]"


def report_partition(rows):
    out = ["## A host partitioned from the others", "",
           f"{len(rows)} repetitions: a publisher and a consumer on each host (`--ttl {TTL}`, "
           f"renewals every {TTL / 3:.3g} s), the cut host's port on the switch set down for "
           "TTL + 3 s and up again; the cut host was the leader's on every other repetition. "
           "Times from the cut (gone) and from the healing (back), polled with `envharness kv "
           "get` on a host of the majority every 50 ms (20 ms for back).", "",
           "| # | host cut | key gone for the majority | its consumer restarted with `none` | "
           "command kept running | consumer on the cut host kept its environment | "
           "key back after healing | its consumer restarted with it |",
           "|---|---|---|---|---|---|---|---|"]
    for k, r in enumerate(rows, 1):
        def f(v):
            return "not seen" if v is None else f"{v:.2f} s"
        out.append(f"| {k} | {r['cut']}{' (leader)' if r['leader'] else ''} | {f(r['gone'])} | "
                   f"{f(r['noticed'])} | {'yes' if r['running'] else '**no**'} | "
                   f"{'yes' if r['kept'] else '**no**'} | {f(r['back'])} | {f(r['again'])} |")
    follower = [r["gone"] for r in rows if not r["leader"]]
    leader = [r["gone"] for r in rows if r["leader"]]
    out += ["", f"- gone, a follower's host cut: median [max] {seconds(follower)} "
            f"(TTL {TTL} s; etcd looks for expired leases every 0.5 s)",
            f"- gone, the leader's host cut: {seconds(leader)} (etcd 3.4 gives every lease "
            "its whole TTL again at a new leader, after an election timeout)",
            f"- back after healing: {seconds([r['back'] for r in rows])} "
            f"(one renewal: {TTL / 3:.3g} s)",
            f"- commands kept running: {sum(r['running'] for r in rows)}/{len(rows)}; "
            f"consumers on the cut host kept their environment: "
            f"{sum(r['kept'] for r in rows)}/{len(rows)}", ""]
    return out


LATENCY_NOTES = {
    "none": "nothing wrong",
    "frozen: the watch's member": "SIGSTOP to the member serving the watching harness's watch",
    "frozen: another member": "SIGSTOP to a member the watch is not on (sometimes the leader)",
    "leader killed": "SIGKILL to the leader (sometimes the watch's member), restarted after",
    "wiped: the watch's member lost": "SIGKILL to the watch's member, then removed from the "
                                      "cluster",
    "wiped: rejoined empty": "the same member, its data deleted, added back and started: a "
                             "change right after it started",
}


def report_latency(results):
    out = ["## How long a change takes to reach a watching harness", "",
           "A harness on host 1 (`--watch 0`, its environment script runs `envharness kv get "
           "cfg/x`, its own member first in its URL) and an `envharness kv put cfg/x` on another "
           "live host; from the put's start to the harness's command started again with the "
           f"new value. {REPS} repetitions each; a change not seen within {LATENCY_LIMIT:g} s "
           "is missed. Goal: ≤ 3 s while a quorum exists (it does in every case here).", "",
           "| fault | repetitions | median [max] | missed | the `kv put` itself, median [max] |",
           "|---|---|---|---|---|"]
    for name, rows in results.items():
        took = [r["took"] for r in rows]
        missed = sum(t is None for t in took)
        out.append(f"| {name}: {LATENCY_NOTES.get(name, '')} | {len(rows)} | {seconds(took)} | "
                   f"{missed} | {seconds([r['put'] for r in rows])} |")
    out.append("")
    return out


def report_soak(r):
    v = r["violations"]
    growth = r["rss"]
    out = ["## Soak", "",
           f"{r['count']} harnesses (`--init --watch 0 --ttl {TTL}`), spread over the {HOSTS} "
           f"hosts, each publishing svc/NAME and watching the next one's key, for "
           f"{r['secs']:.0f} s (seed {SEED}). Every second: one fault drawn with probability "
           "0.35 (SIGKILL 70 %, SIGTERM 30 %, while more than 70 % of them run), each restarted "
           "2–12 s later; a host cut for 8–20 s every 15–40 s; then the invariants checked from "
           "a host of the majority (`envharness kv list svc/ --json`, /proc).", "",
           "| | count |", "|---|---|"]
    for name, count in r["events"].items():
        out.append(f"| events injected: {name} | {count} |")
    out.append(f"| events injected, in all | {sum(r['events'].values())} |")
    out.append(f"| leader elections (etcd's logs) | {r['elections']} |")
    for name, count in r["checks"].items():
        out.append(f"| checks: {name} | {count} |")
    names = {"A": "a dead harness's key past TTL + 1 s",
             "B": "a live harness's key missing for more than one renewal (host in the majority)",
             "C": "a zombie (seen at two checks in a row)",
             "D": f"RSS grown more than {RSS_SLACK_KIB} KiB",
             "E": "a harness exiting unasked, or not 0 on SIGTERM"}
    for key, name in names.items():
        out.append(f"| violations: {name} | {len(v[key])} |")
    out.append(f"| violations, in all | {sum(len(x) for x in v.values())} |")
    withdrawn = r["withdrawn"]
    out += ["",
            f"- dead keys kept past TTL + 1 s only because a leader was elected meanwhile "
            f"(etcd 3.4 restarts every lease's TTL at a new leader; not counted under A): "
            f"{len(r['excused'])}"
            + (f", at most {max(r['excused'].values()):.1f} s after the death"
               if r["excused"] else ""),
            f"- SIGTERMed harnesses whose key was already gone at the next check (≤ 1 s): "
            f"{sum(gone for gone, how in withdrawn if 'majority' in how)}/"
            f"{sum('majority' in how for _, how in withdrawn)} on a host in the majority, "
            f"{sum(gone for gone, how in withdrawn if 'cut' in how)}/"
            f"{sum('cut' in how for _, how in withdrawn)} on a cut host (their leases ran out)"]
    if growth:
        firsts = [g[2] for g in growth]
        lasts = [g[3] for g in growth]
        out.append(f"- RSS of the {len(growth)} harness generations that lived "
                   f"{RSS_MIN_LIFE} s or more: median {statistics.median(firsts)} KiB in their "
                   f"first minute, {statistics.median(lasts)} KiB at their end; growth median "
                   f"{statistics.median([g[1] for g in growth])} KiB, max "
                   f"{max(g[1] for g in growth)} KiB")
    for key in names:
        for text in v[key][:5]:
            out.append(f"- {key}: {text.splitlines()[0]}")
    out.append("")
    return out


def etcd_version():
    try:
        return run([ETCD, "--version"]).splitlines()[0].split(":", 1)[1].strip()
    except (RuntimeError, OSError, IndexError):
        return "?"


def main():
    parts = sys.argv[1:] or ["partition", "latency", "soak"]
    unknown = set(parts) - {"partition", "latency", "soak"}
    if unknown:
        raise SystemExit(f"usage: chaos.py [partition] [latency] [soak] (not {unknown})")
    if os.geteuid() != 0:
        raise SystemExit("chaos: network namespaces need root")
    if not os.path.exists(BIN):
        raise SystemExit(f"chaos: {BIN} is missing: make static")
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)
    random.seed(SEED)
    lines = ["# Faults across hosts: `make chaos` (bench/chaos.py)", "",
             f"{HOSTS} hosts, each a network namespace with one etcd member (etcd "
             f"{etcd_version()}, `--heartbeat-interval={HEARTBEAT} --election-timeout="
             f"{ELECTION} --pre-vote`, data in /dev/shm) and harnesses (the static release "
             f"binary); 2 shared cores. Written {time.strftime('%Y-%m-%d')}.", ""]
    started = time.monotonic()
    for part in parts:
        lab = Lab()
        try:
            lab.build()
            lab.start_cluster()
            log(f"{part}: cluster up")
            if part == "partition":
                lines += report_partition(partition(lab, max(2, REPS // 2 * 2)))
            elif part == "latency":
                lines += report_latency(latency(lab, REPS))
            else:
                lines += report_soak(soak(lab, SOAK_SECS, SOAK_HARNESSES))
        finally:
            lab.close()
    lines.append(f"Whole run: {time.monotonic() - started:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if set(parts) == {"partition", "latency", "soak"}:
        with open(os.path.join(ROOT, "bench/results-chaos.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
