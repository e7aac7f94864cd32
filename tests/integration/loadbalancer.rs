//! A load balancer that follows its backends, end to end with real parts (docs/reference.md
//! §14 with §7, §11.3–11.4 and §13.3): nginx under `envharness --init --watch 0 -t
//! upstream.conf.j2:… --on-change HUP --rewrite TERM:QUIT`, as examples/loadbalancer runs it,
//! in front of backends (examples/loadbalancer/backend) that each publish `web/INSTANCE` from
//! an `envharness --init` of their own, with `health`, a lease and `--drain`. A steady load goes
//! through nginx while the backends are rolled one at a time, five times: not one request may
//! fail, a replacement serves within 1 s of being published, a backend told to stop gets no
//! request once its drain is over, and every upstream.conf the test sees parses (`nginx -t`).
//! Then a backend dies with its harness (SIGKILL, nothing withdrawn): it leaves nginx's
//! upstream within its TTL + 1 s, and the requests that failed meanwhile are counted and
//! reported (nginx's `proxy_next_upstream` retries most).
//!
//! Every process runs in a test directory of its own, so a failed assertion leaves nothing
//! running (support's `Test` drop). nginx comes from Debian's nginx-light or nginx, which
//! `make test` installs; without it the test says so and passes, unless
//! `ENVHARNESS_TEST_SYSTEM=required` (set by `make test`).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::kv_stores::*;
use crate::support::*;

every_store!(nginx_follows_its_backends_through_a_roll_without_a_failed_request);

/// The README's commands run nginx and the backends with the flags this test gives them.
#[test]
fn the_readme_runs_the_example_as_this_test_does() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("reading README.md");
    let block = readme
        .split_once("<!-- loadbalancer commands -->")
        .and_then(|(_, rest)| rest.split("```").nth(1))
        .expect("README.md has the load balancer's commands");
    let words = block
        .split_whitespace()
        .filter(|word| *word != "\\")
        .collect::<Vec<_>>()
        .join(" ");
    for flags in [BALANCER_FLAGS.join(" "), backend_flags().join(" ")] {
        assert!(
            words.contains(&format!("envharness {flags} ")),
            "README.md's commands do not run `envharness {flags}`:\n{block}"
        );
    }
    assert!(words.contains("-c nginx.conf -g 'daemon off;'"), "{block}");
}

/// The example's template renders one `server` line per published instance and leaves out a
/// value that could not be one address, so no value in the registry writes nginx directives;
/// what it renders parses.
#[test]
fn the_example_template_leaves_out_values_that_are_not_one_address() {
    let store = FileStore::new();
    let client = Client::new(&store);
    client.put("web/a", "127.0.0.1:8081");
    let bad = [
        "10.0.0.9:80; } server { listen 81",
        "10.0.0.9:80\n",
        "a b",
        "a\tb",
        "a\rb",
        "a{",
        "a}",
        "a#",
        "'a'",
        "\"a\"",
        "a\\b",
    ];
    for (n, value) in bad.iter().enumerate() {
        client.put(&format!("web/b{n:02}"), value);
    }
    client.put("web/c", "127.0.0.1:8082");
    let mut t = harness_on(&store, "lb");
    t.dir("env").dir("export").dir("nginx");
    let template = format!("{EXAMPLE}/nginx/upstream.conf.j2:nginx/upstream.conf");
    t.args(&["-x", "export", "-e", "env", "-t", &template, "--print"]);
    t.run().success();
    let conf = t.read("nginx/upstream.conf");
    let servers: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("server"))
        .collect();
    assert_eq!(
        servers,
        [
            "server 127.0.0.1:8081 max_fails=1 fail_timeout=5s;",
            "server 127.0.0.1:8082 max_fails=1 fail_timeout=5s;"
        ],
        "{conf}"
    );
    let Some(nginx) = nginx_binary() else {
        unavailable(
            "ENVHARNESS_TEST_SYSTEM",
            "nginx is not installed (Debian: apt-get install nginx-light)",
        );
        return;
    };
    let example = fs::read_to_string(format!("{EXAMPLE}/nginx/nginx.conf")).expect("nginx.conf");
    t.file("nginx/nginx.conf", example);
    let mut check = t.external(&nginx);
    check.args([
        "-t",
        "-q",
        "-p",
        &format!("{}/", t.p("nginx")),
        "-c",
        "nginx.conf",
    ]);
    t.run_command(check).success();
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/loadbalancer");
/// The backends' lease (`--ttl`), drain (`--drain`) and health interval.
const TTL: u64 = 3;
const DRAIN: f64 = 2.0;
const HEALTH_INTERVAL: &str = "2";
/// The load offered through nginx, and the least the test accepts as served.
const RATE: u64 = 250;
const LEAST_RATE: f64 = 200.0;
const ROLLS: usize = 5;
/// How the balancer's harness runs nginx, as the README shows it.
const BALANCER_FLAGS: [&str; 7] = [
    "--init",
    "--watch",
    "0",
    "--on-change",
    "HUP",
    "--rewrite",
    "TERM:QUIT",
];

/// How each backend's harness runs, as the README shows it.
fn backend_flags() -> Vec<String> {
    format!("--init --ttl {TTL} --drain {DRAIN} --health-interval {HEALTH_INTERVAL}")
        .split(' ')
        .map(str::to_owned)
        .collect()
}

fn nginx_follows_its_backends_through_a_roll_without_a_failed_request(store: &dyn KvStore) {
    let Some(nginx) = nginx_binary() else {
        unavailable(
            "ENVHARNESS_TEST_SYSTEM",
            "nginx is not installed (Debian: apt-get install nginx-light)",
        );
        return;
    };
    let url = store.kv_url();
    let client = Client::new(store);
    let lb = Balancer::start(store, &nginx);
    let versions = Versions::watch(lb.t.path("nginx/upstream.conf"));

    let mut backends: Vec<Backend> = Vec::new();
    let mut next = 1;
    for _ in 0..3 {
        backends.push(Backend::start(store, &client, next));
        next += 1;
    }
    lb.wait_for_upstream(&backends.iter().collect::<Vec<_>>(), &[]);
    // After a reload nginx's old workers accept new connections for 100 ms more, with their
    // old configuration: the placeholder's answers 502. Once its worker is gone, every
    // configuration nginx holds has a backend, and a failure from here on is the roll's.
    lb.wait_settled();
    let load = Load::start(lb.address);
    let load_started = Instant::now();
    for backend in &backends {
        lb.t.wait_until(&format!("{} serving through nginx", backend.name), || {
            load.first_served_by(&backend.name).is_some()
        });
    }

    // The roll: one backend at a time, SIGTERM the oldest and start a replacement on a new
    // port, then wait for the old one's drain and stop before the next.
    let roll_started = Instant::now();
    let mut first_traffic = Vec::new();
    let mut last_request = Vec::new();
    for _ in 0..ROLLS {
        let old = backends.remove(0);
        let term_sent = monotonic();
        send(&old.harness, Signal::SIGTERM);
        let new = Backend::start(store, &client, next);
        next += 1;
        let published = new.published;
        lb.wait_for_upstream(&[&new], &[&old]);
        let first = wait_for_first_served(&lb, &load, &new.name);
        first_traffic.push(first.saturating_duration_since(published));
        assert!(
            first <= published + Duration::from_secs(1),
            "{} was published at {published:?} but first served at {first:?}: more than 1 s",
            new.name
        );
        let old_name = old.name.clone();
        let (requests, terminated) = old.stop_after_signal();
        assert!(
            terminated >= term_sent + DRAIN - 0.05,
            "{}: the server got SIGTERM {:.3} s after the harness did, before the {DRAIN} s drain ended",
            old_name,
            terminated - term_sent
        );
        let before = requests.iter().filter(|&&at| at < term_sent).count();
        assert!(before > 0, "{} served nothing before its roll", old_name);
        let late: Vec<f64> = requests
            .iter()
            .filter(|&&at| at > terminated)
            .map(|at| at - terminated)
            .collect();
        assert!(
            late.is_empty(),
            "{} got {} request(s) after its drain ended (s after the end: {late:?})",
            old_name,
            late.len()
        );
        let last = requests.iter().cloned().fold(term_sent, f64::max);
        last_request.push(last - term_sent);
        backends.push(new);
    }
    let roll = load.since(roll_started);
    let roll_time = roll_started.elapsed();
    let all = load.since(load_started);
    let failed: Vec<&Record> = all.iter().filter(|r| !r.served()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed before or during the roll; the first: {:?}\n--- nginx\n{}",
        failed.len(),
        all.len(),
        &failed[..failed.len().min(10)],
        lb.t.stderr_so_far()
    );
    let rate = roll.len() as f64 / roll_time.as_secs_f64();
    assert!(
        rate >= LEAST_RATE,
        "the load was {rate:.0} requests/s during the roll, under {LEAST_RATE}"
    );

    // A backend dies with its harness: nothing withdraws its key, its lease runs out.
    let mut victim = backends.remove(0);
    let hups = lb.hups();
    let killed = victim.kill();
    let gone_from = |conf: &str| !listed(conf, &victim);
    lb.t.wait_until(&format!("{} gone from upstream.conf", victim.name), || {
        versions.first_after(killed, gone_from).is_some()
    });
    let gone = versions.first_after(killed, gone_from).expect("just seen");
    let took = gone.saturating_duration_since(killed);
    assert!(
        took <= Duration::from_secs(TTL + 1),
        "{} left upstream.conf {took:?} after SIGKILL, more than TTL + 1 s",
        victim.name
    );
    lb.t.wait_until("nginx sent SIGHUP for the expired key", || lb.hups() > hups);
    thread::sleep(Duration::from_millis(500));
    let window = load.between(killed, Instant::now());
    let records = load.stop();
    let failed_in_window = window.iter().filter(|r| !r.served()).count();

    // Everything stops: the backends drain, nginx gets SIGQUIT (its graceful stop).
    for backend in &backends {
        send(&backend.harness, Signal::SIGTERM);
    }
    for backend in backends {
        backend.finish();
    }
    let conf = fs::read_to_string(lb.t.path("nginx/nginx.conf")).expect("reading nginx.conf");
    let nginx_log = lb.stop();
    let seen = versions.stop();
    assert!(
        !nginx_log.contains("[emerg]"),
        "nginx refused a configuration\n{nginx_log}"
    );
    // At least: the placeholder, the first three, one after each roll, one after the SIGKILL.
    assert!(
        seen.len() >= ROLLS + 3,
        "only {} versions of upstream.conf seen",
        seen.len()
    );
    let checks = Test::new();
    for (n, (_, upstream)) in seen.iter().enumerate() {
        let dir = format!("v{n}");
        checks
            .file(&format!("{dir}/nginx.conf"), &conf)
            .file(&format!("{dir}/upstream.conf"), upstream);
        let mut test = checks.external(&nginx);
        test.args(["-t", "-q", "-p", &format!("{}/", checks.p(&dir))])
            .args(["-c", "nginx.conf"]);
        checks.run_command(test).success();
    }

    println!(
        "loadbalancer on {}: {} requests at {rate:.0}/s through {ROLLS} rolls, 0 failed; \
         a replacement first served {} after it was published; a stopped backend's last \
         request {} after its SIGTERM (drain {DRAIN} s); {} versions of upstream.conf, each \
         parsed by nginx -t; a SIGKILLed backend left the upstream after {:.2} s (TTL {TTL} s), \
         {failed_in_window} of {} requests failed meanwhile; {} requests in all",
        url.split(':').next().unwrap_or("?"),
        roll.len(),
        span_ms(first_traffic.iter().map(Duration::as_secs_f64)),
        span_ms(last_request.iter().cloned()),
        seen.len(),
        took.as_secs_f64(),
        window.len(),
        records.len(),
    );
}

/// "12–85 ms": the least and the most of `seconds`, in milliseconds.
fn span_ms(seconds: impl Iterator<Item = f64>) -> String {
    let all: Vec<f64> = seconds.collect();
    let least = all.iter().cloned().fold(f64::INFINITY, f64::min);
    let most = all.iter().cloned().fold(0.0, f64::max);
    format!("{:.0}–{:.0} ms", least * 1e3, most * 1e3)
}

/// nginx (Debian puts it in /usr/sbin, outside the tests' PATH), or None.
fn nginx_binary() -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
    ]
    .iter()
    .map(|dir| PathBuf::from(dir).join("nginx"))
    .find(|path| path.is_file())
}

/// CLOCK_MONOTONIC in seconds, the clock the backends log with (Python's
/// `time.clock_gettime(time.CLOCK_MONOTONIC)`).
fn monotonic() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// A loopback port to listen on, below the ephemeral range (32768–60999), so no outgoing
/// connection of this busy test (nginx's, the load's) can take it between choosing and
/// binding; each call of this process gets another one.
fn listen_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % 6000) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..6000 {
        let port = 20000 + NEXT.fetch_add(1, Ordering::SeqCst) % 12000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000–31999");
}

/// The process ids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let parent = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if parent == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// nginx under envharness, as examples/loadbalancer runs it, listening on a loopback port.
struct Balancer {
    t: Test,
    harness: Child,
    started: Instant,
    address: SocketAddr,
    /// The worker nginx started with, which serves the placeholder.
    first_worker: i32,
}

impl Balancer {
    fn start(store: &dyn KvStore, nginx: &std::path::Path) -> Balancer {
        let port = listen_port();
        let conf = fs::read_to_string(format!("{EXAMPLE}/nginx/nginx.conf"))
            .expect("reading the example's nginx.conf");
        assert!(conf.contains("listen 8080;"), "{conf}");
        let conf = conf.replace("listen 8080;", &format!("listen 127.0.0.1:{port};"));
        let mut t = harness_on(store, "lb");
        t.dir("env").dir("export").file("nginx/nginx.conf", conf);
        let template = format!(
            "{EXAMPLE}/nginx/upstream.conf.j2:{}",
            t.p("nginx/upstream.conf")
        );
        let prefix = format!("{}/", t.p("nginx"));
        let nginx = nginx.to_string_lossy().into_owned();
        t.args(&BALANCER_FLAGS).args(&[
            "-x",
            "export",
            "-e",
            "env",
            "-t",
            &template,
            "--",
            &nginx,
            "-p",
            &prefix,
            "-c",
            "nginx.conf",
            "-g",
            "daemon off;",
        ]);
        let (harness, started) = t.spawn();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        // nginx answers (502: no backend yet) once its workers run, after its signal handlers
        // are in place: a SIGHUP from then on reloads it.
        t.wait_until(
            "nginx answering",
            || matches!(request(address), Outcome::Failed(ref why) if why.starts_with("HTTP 502")),
        );
        let master = children_of(harness.id());
        assert_eq!(master.len(), 1, "nginx is not the harness's only child");
        let workers = children_of(master[0] as u32);
        assert_eq!(workers.len(), 1, "nginx does not have one worker");
        Balancer {
            t,
            harness,
            started,
            address,
            first_worker: workers[0],
        }
    }

    fn upstream(&self) -> String {
        fs::read_to_string(self.t.path("nginx/upstream.conf")).unwrap_or_default()
    }

    /// How many times the harness has signalled nginx.
    fn hups(&self) -> usize {
        self.t
            .stderr_so_far()
            .matches("changed; sending SIGHUP")
            .count()
    }

    /// Waits until the worker that nginx started with is gone: it held the placeholder, and
    /// after a reload an old worker accepts new connections for 100 ms more (nginx's master
    /// lets the new workers start before it tells the old ones to stop). Every worker after it
    /// was started by a reload for an upstream.conf with a backend.
    fn wait_settled(&self) {
        self.t.wait_until("nginx's first worker gone", || {
            self.hups() >= 1 && !alive(self.first_worker)
        });
    }

    /// Waits until upstream.conf lists every one of `present` and none of `absent`.
    fn wait_for_upstream(&self, present: &[&Backend], absent: &[&Backend]) {
        self.t
            .wait_until("upstream.conf following the backends", || {
                let conf = self.upstream();
                present.iter().all(|b| listed(&conf, b)) && absent.iter().all(|b| !listed(&conf, b))
            });
    }

    /// SIGTERM (nginx gets SIGQUIT, its graceful stop); returns nginx's log.
    fn stop(self) -> String {
        let run = self.t.terminate(self.harness, self.started);
        run.success();
        run.stderr
    }
}

/// Whether upstream.conf has a `server` line for `backend`.
fn listed(conf: &str, backend: &Backend) -> bool {
    conf.contains(&format!("server {} ", backend.address()))
}

/// A backend under its own `envharness --init`, publishing `web/bN` = its address.
struct Backend {
    name: String,
    port: u16,
    t: Test,
    harness: Child,
    started: Instant,
    /// When `kv get --wait` saw its key appear.
    published: Instant,
}

impl Backend {
    /// Starts backend `number`; returns once its key is published.
    fn start(store: &dyn KvStore, client: &Client, number: usize) -> Backend {
        let name = format!("b{number}");
        let publication = watch_publication(client, &format!("web/{name}"));
        let port = listen_port();
        let mut t = harness_on(store, &name);
        let export = format!("{EXAMPLE}/backend/export");
        let server = format!("{EXAMPLE}/backend/server.py");
        t.dir("env");
        let log = t.p("requests");
        t.env("PORT", port.to_string())
            .env("WEB_HOST", "127.0.0.1")
            .env("REQUEST_LOG", log)
            .args(&backend_flags())
            .args(&["-x", &export, "-e", "env", "--", &server]);
        let (harness, started) = t.spawn();
        let published = publication.wait(&t);
        Backend {
            name,
            port,
            t,
            harness,
            started,
            published,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// After its SIGTERM: waits for the harness to exit (0, after the drain and the server's
    /// stop); returns the times of the requests the server served and of its SIGTERM.
    fn stop_after_signal(self) -> (Vec<f64>, f64) {
        let Backend {
            name,
            t,
            harness,
            started,
            ..
        } = self;
        t.finish(harness, started).success();
        let mut requests = Vec::new();
        let mut terminated = None;
        for line in t.lines("requests") {
            let (word, at) = line.split_once(' ').expect("a log line: WORD TIME");
            let at: f64 = at.parse().expect("a time in seconds");
            match word {
                "REQ" => requests.push(at),
                "TERM" => terminated = Some(at),
                _ => panic!("{name}: unexpected log line {line:?}"),
            }
        }
        let terminated = terminated.unwrap_or_else(|| panic!("{name}: the server got no SIGTERM"));
        (requests, terminated)
    }

    /// SIGKILL to the harness, then to its server: nothing withdraws the key. Returns when.
    fn kill(&mut self) -> Instant {
        let servers = children_of(self.harness.id());
        assert!(
            !servers.is_empty(),
            "{}: no server under the harness",
            self.name
        );
        let at = Instant::now();
        send(&self.harness, Signal::SIGKILL);
        for server in servers {
            let _ = kill(Pid::from_raw(server), Signal::SIGKILL);
        }
        let _ = self.harness.wait();
        at
    }

    /// Waits for the harness to exit after a SIGTERM sent to it.
    fn finish(self) {
        self.t.finish(self.harness, self.started).success();
    }
}

/// A `kv get --wait` started before a backend: it returns within milliseconds of the key's
/// appearance (inotify on the file store, a watch on etcd), which is when it was published.
struct Publication {
    thread: JoinHandle<(bool, Instant)>,
}

fn watch_publication(client: &Client, key: &str) -> Publication {
    let mut command = client.command(&["get", "--wait", "20", key]);
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = spawn(&mut command).expect("spawning kv get --wait");
    Publication {
        thread: thread::spawn(move || {
            let found = child.wait().is_ok_and(|status| status.success());
            (found, Instant::now())
        }),
    }
}

impl Publication {
    /// When the key appeared; `t` is the backend's test, for its log when it never did.
    fn wait(self, t: &Test) -> Instant {
        let (found, at) = self.thread.join().expect("the publication's thread");
        assert!(
            found,
            "the backend was not published within 20 s\n--- its stderr\n{}",
            t.stderr_so_far()
        );
        at
    }
}

/// Waits until the load got an answer from `name`; returns when the first one came.
fn wait_for_first_served(lb: &Balancer, load: &Load, name: &str) -> Instant {
    lb.t.wait_until(&format!("{name} serving through nginx"), || {
        load.first_served_by(name).is_some()
    });
    load.first_served_by(name).expect("just seen")
}

#[derive(Clone, Debug)]
enum Outcome {
    /// 200, with the name of the backend that answered.
    Served(String),
    /// Another status, or a connection that failed: what happened.
    Failed(String),
}

#[derive(Clone, Debug)]
struct Record {
    sent: Instant,
    done: Instant,
    outcome: Outcome,
}

impl Record {
    fn served(&self) -> bool {
        matches!(self.outcome, Outcome::Served(_))
    }
}

/// One GET through nginx on a connection of its own (`Connection: close`: no idle
/// keep-alive connection that a reload closes under a client), bounded in time.
fn request(address: SocketAddr) -> Outcome {
    let attempt = || -> std::io::Result<Outcome> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let answer = String::from_utf8_lossy(&answer);
        let status = answer.split(' ').nth(1).unwrap_or("none");
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body.trim());
        Ok(if status == "200" {
            Outcome::Served(body.to_owned())
        } else {
            let first = body.lines().next().unwrap_or("");
            Outcome::Failed(format!("HTTP {status}: {first}"))
        })
    };
    attempt().unwrap_or_else(|err| Outcome::Failed(err.to_string()))
}

/// A steady load: RATE requests a second on a fixed schedule (open loop: a slow answer does
/// not slow the schedule down, a late request is sent at once), each recorded.
struct Load {
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Requests in flight at once, at most: enough for answers 60 ms slow at RATE.
    const THREADS: usize = 16;

    fn start(address: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicU64::new(0));
        let origin = Instant::now();
        let period = Duration::from_secs(1) / RATE as u32;
        let threads = (0..Load::THREADS)
            .map(|_| {
                let (stop, records, next) = (stop.clone(), records.clone(), next.clone());
                thread::spawn(move || loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let due = origin + period * n as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let sent = Instant::now();
                    let outcome = request(address);
                    let record = Record {
                        sent,
                        done: Instant::now(),
                        outcome,
                    };
                    records
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(record);
                })
            })
            .collect();
        Load {
            stop,
            records,
            threads,
        }
    }

    fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// When the first answer from backend `name` came.
    fn first_served_by(&self, name: &str) -> Option<Instant> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|r| matches!(&r.outcome, Outcome::Served(by) if by == name))
            .map(|r| r.done)
            .min()
    }

    /// The requests sent from `from` on.
    fn since(&self, from: Instant) -> Vec<Record> {
        self.between(from, Instant::now() + Duration::from_secs(3600))
    }

    /// The requests sent in [from, to).
    fn between(&self, from: Instant, to: Instant) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.sent >= from && r.sent < to)
            .collect()
    }

    /// Stops the load (each request in flight finishes, bounded); returns every record.
    fn stop(mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            thread.join().expect("a load thread");
        }
        self.records()
    }
}

impl Drop for Load {
    /// A failed assertion leaves no load running against a port that is gone.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Every content upstream.conf takes, as the test sees it (read every millisecond), with when.
struct Versions {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Versions {
    fn watch(path: PathBuf) -> Versions {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(content) = fs::read_to_string(&path) {
                        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                        if seen.last().is_none_or(|(_, last)| *last != content) {
                            seen.push((Instant::now(), content));
                        }
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Versions {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// When the first version seen from `from` on that satisfies `condition` was seen.
    fn first_after(&self, from: Instant, condition: impl Fn(&str) -> bool) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(at, content)| *at >= from && condition(content))
            .map(|(at, _)| *at)
    }

    fn stop(mut self) -> Vec<(Instant, String)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the versions' thread");
        }
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Versions {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
