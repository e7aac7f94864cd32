//! Real etcd servers for the tests: each [`Etcd`] is one etcd process of its own, on free
//! loopback ports (client and peer) with a temporary data directory, started and stopped by
//! pid. Dropping it kills the process (and the kernel kills it if this test binary dies first:
//! PR_SET_PDEATHSIG), so nothing is left running, even when a test fails.
//!
//! An etcd may serve its clients over TLS ([`ServerTls`], with certificates from
//! [`crate::pki`]): then its client port speaks only TLS, and a second, plain port on loopback
//! serves the tests' own setup (users, auth, metrics).
//!
//! etcd comes from Debian's `etcd-server`, which `make test` installs. Where it is missing the
//! tests that need it print why and pass, unless `ENVHARNESS_TEST_ETCD=required` (set by
//! `make test`) makes that a failure.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wait_timeout::ChildExt;

use crate::support;

/// How long a fresh etcd may take to answer (it takes well under a second with the short
/// election timeout below).
const READY_LIMIT: Duration = Duration::from_secs(15);

pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    pub client_port: u16,
    peer_port: u16,
    /// With TLS: the plain port for the tests' own requests.
    setup_port: u16,
    tls: Option<ServerTls>,
    extra: Vec<String>,
    /// The member's name and `--initial-cluster`: itself alone, or the members of a cluster.
    name: String,
    cluster: Option<String>,
}

/// How an etcd serves its clients over TLS: its certificate and key, the CA it trusts for
/// client certificates, and whether it requires one (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub client_cert_auth: bool,
}

impl ServerTls {
    /// Served with a certificate of `pki` for loopback, trusting `pki` for clients.
    pub fn from(pki: &crate::pki::Pki, client_cert_auth: bool) -> ServerTls {
        let server = pki.server();
        ServerTls {
            cert: server.cert,
            key: server.key,
            ca: pki.ca(),
            client_cert_auth,
        }
    }
}

/// The etcd binary, or None (after saying why) where it is not installed and not required.
pub fn binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("etcd"))
        .find(|path| path.is_file());
    if found.is_none() {
        if std::env::var("ENVHARNESS_TEST_ETCD").as_deref() == Ok("required") {
            panic!("etcd is not installed (Debian: apt-get install etcd-server), and ENVHARNESS_TEST_ETCD=required");
        }
        eprintln!("skipping: etcd is not installed (Debian: apt-get install etcd-server)");
    }
    found
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// N different free ports: each is held until all are found, since a port let go can be the
/// kernel's next answer (an etcd given one port for its plain and its TLS listener then
/// serves both on it and may answer a plain request with a TLS handshake).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("a bound port").port())
        .collect()
}

impl Etcd {
    /// A fresh etcd, ready; None only where etcd is not installed (see the module's doc).
    pub fn start() -> Option<Etcd> {
        Etcd::with_args(&[])
    }

    /// A fresh etcd started with `extra` arguments too (`--auth-token-ttl=1`).
    pub fn with_args(extra: &[&str]) -> Option<Etcd> {
        Etcd::launched(extra, None)
    }

    /// A fresh etcd serving its clients over TLS.
    pub fn with_tls(tls: ServerTls) -> Option<Etcd> {
        Etcd::launched(&[], Some(tls))
    }

    fn launched(extra: &[&str], tls: Option<ServerTls>) -> Option<Etcd> {
        let binary = binary()?;
        let mut etcd = Etcd {
            child: None,
            dir: tempfile::Builder::new()
                .prefix("envharness-etcd.")
                .tempdir()
                .expect("creating etcd's directory"),
            binary,
            client_port: 0,
            peer_port: 0,
            setup_port: 0,
            tls,
            extra: extra.iter().map(|arg| arg.to_string()).collect(),
            name: "test".into(),
            cluster: None,
        };
        // Another test may take a port between our probe and etcd's bind: try new ones.
        for _ in 0..3 {
            let ports = free_ports(3);
            (etcd.client_port, etcd.peer_port, etcd.setup_port) = (ports[0], ports[1], ports[2]);
            if etcd.launch() {
                return Some(etcd);
            }
        }
        panic!("etcd did not start\n{}", etcd.log());
    }

    /// `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The endpoint of the tests' own requests: the plain port of a TLS etcd.
    fn setup_endpoint(&self) -> String {
        match self.tls {
            None => self.endpoint(),
            Some(_) => format!("127.0.0.1:{}", self.setup_port),
        }
    }

    /// `etcd://127.0.0.1:PORT/PREFIX` (`etcds://` with TLS; no prefix when it is empty).
    pub fn url(&self, prefix: &str) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        if prefix.is_empty() {
            format!("{scheme}://{}", self.endpoint())
        } else {
            format!("{scheme}://{}/{prefix}", self.endpoint())
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What etcd logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// A cluster of `size` members on free ports, each ready (a leader elected); None only
    /// where etcd is not installed.
    pub fn cluster(size: usize) -> Option<Vec<Etcd>> {
        Etcd::cluster_with(size, None)
    }

    /// A cluster whose members serve their clients over TLS (their peers talk in plain text).
    pub fn tls_cluster(size: usize, tls: ServerTls) -> Option<Vec<Etcd>> {
        Etcd::cluster_with(size, Some(tls))
    }

    fn cluster_with(size: usize, tls: Option<ServerTls>) -> Option<Vec<Etcd>> {
        let binary = binary()?;
        let ports = free_ports(3 * size);
        let mut members: Vec<Etcd> = (0..size)
            .map(|n| Etcd {
                child: None,
                dir: tempfile::Builder::new()
                    .prefix("envharness-etcd.")
                    .tempdir()
                    .expect("creating etcd's directory"),
                binary: binary.clone(),
                client_port: ports[3 * n],
                peer_port: ports[3 * n + 1],
                setup_port: ports[3 * n + 2],
                tls: tls.clone(),
                extra: Vec::new(),
                name: format!("m{n}"),
                cluster: None,
            })
            .collect();
        let cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        // A token of its own, so members of another test's cluster never join this one.
        let token = format!("test-{}-{}", std::process::id(), members[0].peer_port);
        for member in &mut members {
            member.cluster = Some(cluster.clone());
            member.extra = vec![format!("--initial-cluster-token={token}")];
            member.spawn_process();
        }
        // No member answers before a quorum has started.
        for member in &mut members {
            assert!(
                member.wait_ready(),
                "a member did not start\n{}",
                member.log()
            );
        }
        Some(members)
    }

    /// Starts etcd on the ports chosen and waits until it answers; false if it exited.
    fn launch(&mut self) -> bool {
        self.spawn_process();
        self.wait_ready()
    }

    fn spawn_process(&mut self) {
        let (listen, client) = match &self.tls {
            None => {
                let client = format!("http://127.0.0.1:{}", self.client_port);
                (client.clone(), client)
            }
            Some(_) => {
                let client = format!("https://127.0.0.1:{}", self.client_port);
                let setup = format!("http://127.0.0.1:{}", self.setup_port);
                (format!("{client},{setup}"), client)
            }
        };
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("creating etcd's log");
        let mut command = Command::new(&self.binary);
        command
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data().display()))
            .arg(format!("--listen-client-urls={listen}"))
            .arg(format!("--advertise-client-urls={client}"))
            // Without it etcd takes port 2380, which a parallel test's etcd may hold.
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!(
                "--initial-cluster={}",
                self.cluster
                    .clone()
                    .unwrap_or_else(|| format!("{}={peer}", self.name))
            ))
            .args(["--heartbeat-interval=10", "--election-timeout=100"])
            .args(["--logger=zap", "--log-outputs=stderr"])
            .args(self.tls_args())
            .args(&self.extra)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // The forking thread is the test's own, which outlives this Etcd (Drop kills it first).
        killed_with_its_thread(&mut command);
        let child = support::spawn(&mut command).expect("starting etcd");
        self.child = Some(child);
    }

    /// etcd's flags for TLS to its clients.
    fn tls_args(&self) -> Vec<String> {
        let Some(tls) = &self.tls else {
            return Vec::new();
        };
        let mut args = vec![
            format!("--cert-file={}", tls.cert.display()),
            format!("--key-file={}", tls.key.display()),
            format!("--trusted-ca-file={}", tls.ca.display()),
        ];
        if tls.client_cert_auth {
            args.push("--client-cert-auth".into());
        }
        args
    }

    /// Waits until the etcd just spawned answers; false if it exited.
    fn wait_ready(&mut self) -> bool {
        let limit = Instant::now() + READY_LIMIT;
        while Instant::now() < limit {
            let child = self.child.as_mut().expect("just started");
            if child.try_wait().expect("checking on etcd").is_some() {
                self.child = None;
                return false;
            }
            // Any answer but "unavailable" means it serves (with auth on, a refusal).
            if let Some((status, _)) = self.post_once("/v3/kv/range", r#"{"key":"AA=="}"#, None) {
                if status < 500 {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("etcd did not answer within {READY_LIMIT:?}\n{}", self.log());
    }

    /// Stops etcd (SIGTERM; SIGKILL after 10 s), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGTERM);
            if child
                .wait_timeout(Duration::from_secs(10))
                .expect("waiting for etcd")
                .is_none()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Stops etcd and starts it again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.launch(), "etcd did not restart\n{}", self.log());
    }

    /// Stops etcd, deletes its data, and starts a new, empty one on the same ports.
    pub fn wipe(&mut self) {
        self.stop();
        std::fs::remove_dir_all(self.data()).expect("deleting etcd's data");
        assert!(self.launch(), "etcd did not start again\n{}", self.log());
    }

    fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("etcd is running");
        kill(Pid::from_raw(child.id() as i32), signal).expect("signalling etcd");
    }

    /// SIGSTOP: etcd's sockets still accept connections (the kernel does that), nothing
    /// answers. Returns once etcd is stopped: kill(2) only queues the signal, and on a busy
    /// machine etcd could otherwise still answer a request sent right after.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
        let Some(child) = &self.child else { return };
        let stat = format!("/proc/{}/stat", child.id());
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            let state = state
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            if matches!(state, Some("T") | Some("t")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// A request to the gateway for the tests' own setup (users, roles, auth): the status and
    /// the body; panics when etcd does not answer.
    pub fn post(&self, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
        self.post_once(path, body, token)
            .unwrap_or_else(|| panic!("etcd did not answer {path}\n{}", self.log()))
    }

    fn post_once(&self, path: &str, body: &str, token: Option<&str>) -> Option<(u16, String)> {
        self.request("POST", path, body, token)
    }

    /// How many watchers etcd has (its `etcd_debugging_mvcc_watcher_total` metric).
    pub fn watchers(&self) -> u64 {
        let (_, metrics) = self
            .request("GET", "/metrics", "", None)
            .unwrap_or_else(|| panic!("etcd did not answer /metrics\n{}", self.log()));
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("etcd_debugging_mvcc_watcher_total "))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or_else(|| panic!("no watcher count in /metrics"))
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(self.setup_endpoint()).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let auth = token
            .map(|token| format!("Authorization: {token}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n{auth}\r\n{body}",
            self.setup_endpoint(),
            body.len()
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let status = answer.split(' ').nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    }

    /// Turns on etcd's authentication with user `root` (role `root`) and `password`; returns a
    /// token of root's.
    pub fn enable_auth(&self, password: &str) -> String {
        for (path, body) in [
            (
                "/v3/auth/user/add",
                format!(r#"{{"name":"root","password":"{password}"}}"#),
            ),
            ("/v3/auth/role/add", r#"{"name":"root"}"#.to_owned()),
            (
                "/v3/auth/user/grant",
                r#"{"user":"root","role":"root"}"#.to_owned(),
            ),
            ("/v3/auth/enable", "{}".to_owned()),
        ] {
            let (status, answer) = self.post(path, &body, None);
            assert_eq!(status, 200, "{path}: {answer}");
        }
        self.token("root", password)
    }

    /// A token from logging in as `user`.
    pub fn token(&self, user: &str, password: &str) -> String {
        let (status, answer) = self.post(
            "/v3/auth/authenticate",
            &format!(r#"{{"name":"{user}","password":"{password}"}}"#),
            None,
        );
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value =
            serde_json::from_str(&answer).unwrap_or_else(|_| panic!("not JSON: {answer}"));
        answer["token"].as_str().expect("a token").to_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends a stopped process too; no need to wait for a graceful stop here.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Has the kernel SIGKILL the process `command` starts when the thread that started it ends,
/// so that a test that panics or is killed leaves no etcd behind.
pub fn killed_with_its_thread(command: &mut Command) {
    // SAFETY: runs between fork and exec and only calls prctl, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
