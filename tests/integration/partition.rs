//! Faults across hosts (issue 16): the one short case of `make chaos` (bench/chaos.py) that
//! `make test` keeps. Three hosts, each a network namespace made here with one etcd member,
//! joined by a bridge in a namespace of their own; the addresses (198.18.0.0/15, the
//! benchmarking range) are on the hosts' links only, so nothing leaves them. A host is cut off
//! by setting its port on the bridge down, as a pulled cable: packets are dropped, open
//! connections hang.
//!
//! The lab is torn down by [`Lab`]'s Drop, also when an assertion fails: every process in
//! its namespaces is killed by pid, then the namespaces are deleted; etcd gets
//! PR_SET_PDEATHSIG, and a later run deletes the namespaces of a test process that is gone.
//! Namespaces need root (CAP_SYS_ADMIN): where `ip netns add` is refused the test fails under
//! `ENVHARNESS_TEST_SYSTEM=required` (as `make test` sets) and is skipped elsewhere.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::etcd_server;
use crate::support::*;

/// The harnesses' `--ttl`: renewals every second.
const TTL: Duration = Duration::from_secs(3);
const RENEWAL: Duration = Duration::from_secs(1);
const HOSTS: usize = 3;
/// The prefix of this suite's namespaces: `ehi<pid>n<count>-sw`, `…-h0`.
const PREFIX: &str = "ehi";

static LABS: AtomicUsize = AtomicUsize::new(0);

/// `ip`, which Debian keeps in /usr/sbin (not on the tests' PATH).
fn ip_binary() -> Option<&'static str> {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|path| Path::new(path).exists())
}

/// Runs `ip ARGS`; Err with what it said.
fn ip(args: &[&str]) -> Result<String, String> {
    let binary = ip_binary().ok_or("iproute2's ip is not installed")?;
    let out =
        output(Command::new(binary).args(args)).map_err(|err| format!("ip cannot run: {err}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// SIGKILLs every process in namespace `ns` (bounded), all of them started by this suite.
fn kill_namespace(ns: &str) {
    for _ in 0..5 {
        let pids: Vec<i32> = ip(&["netns", "pids", ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes the namespaces a test process that is gone left behind (it was SIGKILLed).
fn sweep_stale() {
    for line in ip(&["netns", "list"]).unwrap_or_default().lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(owner) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('n').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{owner}")).exists() {
            kill_namespace(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
}

struct Lab {
    switch: String,
    hosts: Vec<String>,
    /// The namespaces made so far, deleted by Drop.
    made: Vec<String>,
    members: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// Three hosts and a bridge, each host running an etcd member, the cluster ready; None
    /// (after saying why) where etcd is missing or namespaces are not permitted, and not
    /// required.
    fn start() -> Option<Lab> {
        let etcd = etcd_server::binary()?;
        sweep_stale();
        let tag = format!(
            "{PREFIX}{}n{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::SeqCst)
        );
        let mut lab = Lab {
            switch: format!("{tag}-sw"),
            hosts: (0..HOSTS).map(|i| format!("{tag}-h{i}")).collect(),
            made: Vec::new(),
            members: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("envharness-hosts.")
                .tempdir()
                .expect("creating the lab's directory"),
        };
        if let Err(err) = ip(&["netns", "add", &lab.switch]) {
            unavailable(
                "ENVHARNESS_TEST_SYSTEM",
                &format!("network namespaces are not permitted ({err})"),
            );
            return None;
        }
        lab.made.push(lab.switch.clone());
        lab.network()
            .unwrap_or_else(|err| panic!("building the lab: {err}"));
        for i in 0..HOSTS {
            let child = lab.spawn_member(&etcd, i);
            lab.members.push(child);
        }
        for i in 0..HOSTS {
            lab.wait_member(i);
        }
        Some(lab)
    }

    fn network(&mut self) -> Result<(), String> {
        let sw = self.switch.clone();
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for (i, host) in self.hosts.clone().iter().enumerate() {
            ip(&["netns", "add", host])?;
            self.made.push(host.clone());
            let port = format!("p{i}");
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                host,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                host,
                "addr",
                "add",
                &format!("{}/24", address(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", host, "link", "set", "eth0", "up"])?;
            ip(&["-n", host, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// `ip netns exec HOST PROGRAM`, run as the tests run the binary (cleared environment).
    fn exec(&self, host: usize, program: &str) -> Command {
        let mut command = Command::new(ip_binary().expect("ip was found before"));
        command
            .args(["netns", "exec", &self.hosts[host], program])
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null());
        command
    }

    fn spawn_member(&self, etcd: &Path, i: usize) -> Child {
        let me = address(i);
        let cluster = (0..HOSTS)
            .map(|j| format!("m{j}=http://{}:2380", address(j)))
            .collect::<Vec<_>>()
            .join(",");
        let log = fs::File::create(self.dir.path().join(format!("etcd{i}.log")))
            .expect("creating etcd's log");
        let mut command = self.exec(i, &etcd.to_string_lossy());
        command
            .arg(format!("--name=m{i}"))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(format!("data{i}")).display()
            ))
            .arg(format!("--listen-client-urls=http://{me}:2379"))
            .arg(format!("--advertise-client-urls=http://{me}:2379"))
            .arg(format!("--listen-peer-urls=http://{me}:2380"))
            .arg(format!("--initial-advertise-peer-urls=http://{me}:2380"))
            .arg(format!("--initial-cluster={cluster}"))
            .arg(format!("--initial-cluster-token={}", self.switch))
            // Fast elections, but not the loopback tests' 10/100: the whole suite shares two
            // cores with these three members.
            .args([
                "--heartbeat-interval=25",
                "--election-timeout=250",
                "--pre-vote",
            ])
            .args(["--logger=zap", "--log-outputs=stderr"])
            .stdout(Stdio::null())
            .stderr(log);
        etcd_server::killed_with_its_thread(&mut command);
        spawn(&mut command).expect("starting etcd")
    }

    fn member_log(&self, i: usize) -> String {
        fs::read_to_string(self.dir.path().join(format!("etcd{i}.log"))).unwrap_or_default()
    }

    /// Waits until member `i` answers a read (the cluster has a leader).
    fn wait_member(&mut self, i: usize) {
        let limit = Instant::now() + Duration::from_secs(30);
        while Instant::now() < limit {
            if self.members[i]
                .try_wait()
                .expect("checking on etcd")
                .is_some()
            {
                panic!("etcd on host {i} exited\n{}", self.member_log(i));
            }
            if self.status(i).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd on host {i} is not ready\n{}", self.member_log(i));
    }

    /// Member `i`'s own id and its leader's, from `/v3/maintenance/status`; None when it
    /// does not answer or knows no leader.
    fn status(&self, i: usize) -> Option<(String, String)> {
        let ns = format!("/run/netns/{}", self.hosts[i]);
        // setns changes the calling thread's namespace only: a thread of its own enters the
        // host's and makes the connection there.
        let answer = std::thread::spawn(move || -> Option<String> {
            let file = fs::File::open(&ns).ok()?;
            setns(&file, CloneFlags::CLONE_NEWNET).ok()?;
            post(&address(i), "/v3/maintenance/status", "{}")
        })
        .join()
        .ok()??;
        let status: serde_json::Value = serde_json::from_str(&answer).ok()?;
        let me = status["header"]["member_id"].as_str()?.to_owned();
        let leader = status["leader"].as_str()?.to_owned();
        (leader != "0").then_some((me, leader))
    }

    /// The host whose member leads.
    fn leader(&self) -> usize {
        let limit = Instant::now() + Duration::from_secs(10);
        while Instant::now() < limit {
            let statuses: Vec<_> = (0..HOSTS).map(|i| self.status(i)).collect();
            if let Some(Some((_, leader))) = statuses.first() {
                if let Some(host) = statuses
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|(me, _)| me == leader))
                {
                    return host;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no leader after 10 s");
    }

    /// Host `i` loses the others: its port on the bridge goes down.
    fn cut(&self, i: usize) {
        ip(&["-n", &self.switch, "link", "set", &format!("p{i}"), "down"]).expect("cutting");
    }

    fn heal(&self, i: usize) {
        ip(&["-n", &self.switch, "link", "set", &format!("p{i}"), "up"]).expect("healing");
    }

    /// The store as seen from host `i`: its own member first, then the others.
    fn url(&self, i: usize) -> String {
        let order = std::iter::once(i).chain((0..HOSTS).filter(|&j| j != i));
        let endpoints: Vec<String> = order.map(|j| format!("{}:2379", address(j))).collect();
        format!("etcd://{}/hosts", endpoints.join(","))
    }

    /// Whether `kv get KEY` on host `i` finds it; None when the store did not answer.
    fn has(&self, i: usize, key: &str) -> Option<bool> {
        let out = output(
            self.exec(i, BIN)
                .args(["--kv", &self.url(i), "kv", "get", key]),
        )
        .expect("running kv get");
        match out.status.code() {
            Some(0) => Some(true),
            Some(1) => Some(false),
            _ => None,
        }
    }

    /// Waits (bounded) until `kv get KEY` on host `i` says `present`; the time it took.
    fn wait_for_key(&self, i: usize, key: &str, present: bool, limit: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.has(i, key) == Some(present) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{key} {} on host {i} after {limit:?}",
            if present { "never came" } else { "never went" }
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.made {
            kill_namespace(ns);
        }
        for member in &mut self.members {
            let _ = member.kill();
            let _ = member.wait();
        }
        for ns in self.made.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn address(i: usize) -> String {
    format!("198.18.0.{}", i + 1)
}

/// A POST to `ADDRESS:2379` from the calling thread's namespace: the body of the answer.
fn post(address: &str, path: &str, body: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(
        &format!("{address}:2379").parse().ok()?,
        Duration::from_secs(2),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.contains(" 200 ").then_some(())?;
    Some(answer.split_once("\r\n\r\n")?.1.to_owned())
}

/// The command: writes what discovery found (PEER) to `seen` at each start, then runs until
/// SIGTERM.
const COMMAND: &str =
    "#!/bin/sh\ntrap 'exit 0' TERM\necho \"${PEER:-}\" >> seen\nwhile :; do sleep 0.1; done\n";

/// Discovery: KEY's value, `none` when there is none; a store that does not answer fails the
/// run, so the harness keeps what it has.
fn reads(key: &str) -> String {
    format!(
        "#!/bin/sh\nenvharness kv get {key} && exit 0\n[ $? = 1 ] && echo none && exit 0\nexit 1\n"
    )
}

/// `envharness --init --ttl 3` on host `host`, publishing `svc/NAME` (the value `publish`)
/// or, with `read`, discovering PEER under `--watch 0`.
fn harness(
    lab: &Lab,
    host: usize,
    name: &str,
    publish: Option<&str>,
    read: Option<&str>,
) -> (Test, Child) {
    let t = Test::new();
    t.symlink("bin/envharness", BIN).dir("export").dir("env");
    t.script("cmd", COMMAND);
    if let Some(value) = publish {
        t.script("export/svc", &format!("#!/bin/sh\necho {value}\n"));
    }
    if let Some(key) = read {
        t.script("env/PEER", &reads(key));
    }
    let mut command = lab.exec(host, BIN);
    command
        .env("PATH", format!("{}:{PATH}", t.p("bin")))
        .current_dir(t.root())
        .stdout(fs::File::create(t.path(".stdout")).expect("a capture file"))
        .stderr(fs::File::create(t.path(".stderr")).expect("a capture file"))
        .args([
            "--init",
            "--kv",
            &lab.url(host),
            "--ttl",
            &TTL.as_secs().to_string(),
        ])
        .args(["--instance", name, "-x", "export", "-e", "env"]);
    if read.is_some() {
        command.args(["--watch", "0"]);
    }
    command.args(["--", "./cmd"]);
    let child = spawn(&mut command).expect("starting envharness");
    (t, child)
}

fn running(child: &mut Child) -> bool {
    child.try_wait().expect("checking on envharness").is_none()
}

#[test]
fn a_host_cut_off_loses_its_keys_keeps_running_and_publishes_again_when_healed() {
    let Some(lab) = Lab::start() else {
        return;
    };
    // A follower's host is cut: a new leader would give every lease its whole TTL again
    // (etcd 3.4), which `make chaos` measures apart.
    let leader = lab.leader();
    let cut = (leader + 1) % HOSTS;
    let stay = (leader + 2) % HOSTS;
    let (publisher, mut publishing) = harness(&lab, cut, "cut", Some("addr-cut"), None);
    let (_other, mut other) = harness(&lab, stay, "stay", Some("addr-stay"), None);
    // A consumer on the majority's side reads the key of the host that will be cut; one on
    // that host reads the majority's key.
    let (outside, mut consumer_outside) = harness(&lab, stay, "c-out", None, Some("svc/cut"));
    let (inside, mut consumer_inside) = harness(&lab, cut, "c-in", None, Some("svc/stay"));
    let limit = Duration::from_secs(10);
    lab.wait_for_key(stay, "svc/cut", true, limit);
    lab.wait_for_key(stay, "svc/stay", true, limit);
    inside.wait_for_line("seen", "addr-stay");
    outside.wait_for_line("seen", "addr-cut");

    // What the consumer on the cut host started with (it may have started before svc/stay
    // was there, and found `none` first).
    let inside_before = inside.lines("seen");
    assert_eq!(inside_before.last().map(String::as_str), Some("addr-stay"));
    let cut_at = Instant::now();
    lab.cut(cut);
    let gone = lab.wait_for_key(stay, "svc/cut", false, TTL + Duration::from_secs(5));
    let gone = cut_at.elapsed().min(gone + Duration::from_millis(50));
    outside.wait_for_line("seen", "none");
    // The lease was last renewed before the cut; etcd looks for expired leases every 0.5 s.
    assert!(
        gone < TTL + Duration::from_millis(1500),
        "svc/cut gone {gone:?} after the cut (TTL {TTL:?})\n{}",
        publisher.stderr_so_far()
    );
    eprintln!(
        "partition: svc/cut gone on the majority's side {gone:?} after the cut (TTL {TTL:?})"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(running(&mut publishing), "{}", publisher.stderr_so_far());
    assert_eq!(
        publisher.lines("seen"),
        [""],
        "the command was never restarted"
    );
    assert!(running(&mut consumer_inside), "{}", inside.stderr_so_far());
    assert_eq!(
        inside.lines("seen"),
        inside_before,
        "the consumer on the cut host keeps its environment\n{}",
        inside.stderr_so_far()
    );

    let healed_at = Instant::now();
    lab.heal(cut);
    let back = lab.wait_for_key(stay, "svc/cut", true, Duration::from_secs(10));
    // Within a renewal, or the rest of the try that was waiting on an endpoint when the
    // link came back (its share of 5 s among 3 endpoints: the next try follows at once), and
    // the polling.
    assert!(
        back < RENEWAL + Duration::from_secs(2),
        "svc/cut back {back:?} after healing\n{}",
        publisher.stderr_so_far()
    );
    eprintln!("partition: svc/cut back {back:?} after healing (renewal {RENEWAL:?})");
    outside.wait_until("the consumer outside sees it again", || {
        outside.lines("seen").last().map(String::as_str) == Some("addr-cut")
    });
    assert!(healed_at.elapsed() < Duration::from_secs(10));
    assert_eq!(inside.lines("seen"), inside_before);

    // The consumers first: the publisher's withdrawal would restart the outside consumer's
    // command, and a SIGTERM that came before the new command set its trap would end it
    // with 143, as it should.
    for (t, child) in [
        (&outside, &mut consumer_outside),
        (&inside, &mut consumer_inside),
        (&publisher, &mut publishing),
    ] {
        send(child, Signal::SIGTERM);
        let pid = child.id() as i32;
        t.wait_until("envharness stopped", || !alive(pid));
        assert_eq!(
            child.wait().expect("waiting").code(),
            Some(0),
            "{}",
            t.stderr_so_far()
        );
    }
    send(&other, Signal::SIGTERM);
    let _ = other.wait();
    assert_eq!(
        lab.has(stay, "svc/cut"),
        Some(false),
        "withdrawn at the stop"
    );
}
