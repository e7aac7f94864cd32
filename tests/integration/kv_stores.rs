//! The stores the registry tests run against, and a client that runs `envharness kv` on one.
//!
//! The tests of docs/reference.md §11.1–11.2 that hold for every store are written once, against
//! [`KvStore`]; `every_store!` in kv.rs runs each of them on every fixture here. A fixture
//! starts its store itself (the file store is a temporary directory) and yields the `--kv`
//! URL; dropping it removes the store.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::support::*;

/// A store the `kv` tests can run against.
pub trait KvStore: Sync {
    /// What `--kv` / `ENVHARNESS_KV` is set to.
    fn kv_url(&self) -> String;

    /// The variables a client needs besides the URL (TLS's certificate files).
    fn kv_env(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The embedded store: `file:///DIR` on a fresh temporary directory.
pub struct FileStore {
    dir: tempfile::TempDir,
}

impl FileStore {
    pub fn new() -> FileStore {
        FileStore {
            dir: tempfile::Builder::new()
                .prefix("envharness-kv.")
                .tempdir()
                .expect("creating a temporary directory"),
        }
    }

    /// The store directory (created by the first `kv` call).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A file of the store, by its path inside the store directory.
    pub fn file(&self, relative: &str) -> PathBuf {
        self.path().join(relative)
    }
}

impl KvStore for FileStore {
    fn kv_url(&self) -> String {
        format!("file://{}", self.path().display())
    }
}

/// etcd: a server of its own ([`crate::etcd_server`]), the keys under the prefix `kv`.
pub struct EtcdStore {
    etcd: crate::etcd_server::Etcd,
}

impl EtcdStore {
    /// None only where etcd is not installed (the fixture says so).
    pub fn start() -> Option<EtcdStore> {
        crate::etcd_server::Etcd::start().map(|etcd| EtcdStore { etcd })
    }
}

impl KvStore for EtcdStore {
    fn kv_url(&self) -> String {
        self.etcd.url("kv")
    }
}

/// etcd over TLS, requiring a client certificate (`--client-cert-auth`): `etcds://`, with the
/// CA, the certificate and its key in the client's variables.
pub struct TlsEtcdStore {
    pub etcd: crate::etcd_server::Etcd,
    pub pki: crate::pki::Pki,
    client: crate::pki::Issued,
}

impl TlsEtcdStore {
    /// None only where etcd is not installed (the fixture says so).
    pub fn start() -> Option<TlsEtcdStore> {
        let pki = crate::pki::Pki::new("store");
        let tls = crate::etcd_server::ServerTls::from(&pki, true);
        let etcd = crate::etcd_server::Etcd::with_tls(tls)?;
        let client = pki.client(Some("envharness-test"));
        Some(TlsEtcdStore { etcd, pki, client })
    }
}

impl KvStore for TlsEtcdStore {
    fn kv_url(&self) -> String {
        self.etcd.url("kv")
    }

    fn kv_env(&self) -> Vec<(String, String)> {
        tls_env(&self.pki.ca(), Some(&self.client))
    }
}

/// The TLS variables: the CA file, and the client certificate and key when given.
pub fn tls_env(ca: &Path, client: Option<&crate::pki::Issued>) -> Vec<(String, String)> {
    let text = |path: &Path| path.to_string_lossy().into_owned();
    let mut env = vec![("ENVHARNESS_KV_CACERT".to_owned(), text(ca))];
    if let Some(client) = client {
        env.push(("ENVHARNESS_KV_CERT".to_owned(), text(&client.cert)));
        env.push(("ENVHARNESS_KV_KEY".to_owned(), text(&client.key)));
    }
    env
}

/// A test whose scripts and command find `envharness` on PATH (for `envharness kv`), with
/// the store (and its TLS variables) and the instance set as the harness's variables.
pub fn harness_on(store: &dyn KvStore, instance: &str) -> Test {
    let mut t = Test::new();
    t.symlink("bin/envharness", BIN);
    let path = format!("{}:{PATH}", t.p("bin"));
    t.env("PATH", path)
        .env("ENVHARNESS_KV", store.kv_url())
        .env("ENVHARNESS_INSTANCE", instance);
    for (name, value) in store.kv_env() {
        t.env(&name, value);
    }
    t
}

/// `envharness --init --ttl 2` publishing `db/i1` to `store` (an export script that prints a
/// URL) while it runs `command`, a script that touches `ready`; returns once the key is there.
pub fn publishing_under_init(
    store: &dyn KvStore,
    command: &str,
) -> (Test, std::process::Child, Instant) {
    let mut t = harness_on(store, "i1");
    t.dir("env")
        .script("export/db", "#!/bin/sh\necho postgres://db-1:5432/app\n")
        .script("cmd", command);
    let cmd = t.p("cmd");
    t.args(&[
        "--init",
        "--ttl",
        "2",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        cmd.as_str(),
    ]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    let client = Client::new(store);
    t.wait_until("db/i1 published", || client.has("db/i1"));
    (t, child, started)
}

/// A store given by its URL alone, for a client of a store that runs already.
pub struct UrlStore(pub String);

impl KvStore for UrlStore {
    fn kv_url(&self) -> String {
        self.0.clone()
    }
}

/// A store given by its URL and the variables its clients need (an `etcds://` one).
pub struct UrlWithEnv(pub String, pub Vec<(String, String)>);

impl KvStore for UrlWithEnv {
    fn kv_url(&self) -> String {
        self.0.clone()
    }

    fn kv_env(&self) -> Vec<(String, String)> {
        self.1.clone()
    }
}

/// Runs `envharness kv ...` against one store, as a script would: a cleared environment with
/// only ENVHARNESS_KV (and what a test adds). One client runs one call at a time (its output
/// goes to its test directory's capture files); concurrent calls use one client each.
pub struct Client {
    pub t: Test,
    url: String,
    env: Vec<(String, String)>,
}

impl Client {
    pub fn new(store: &dyn KvStore) -> Client {
        Client {
            t: Test::new(),
            url: store.kv_url(),
            env: store.kv_env(),
        }
    }

    /// Also sets `name` in every call's environment.
    pub fn env(mut self, name: &str, value: &str) -> Client {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The command for `envharness kv ARGS`.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut command = self.t.external(BIN);
        command.env("ENVHARNESS_KV", &self.url).arg("kv").args(args);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        self.t.run_command(self.command(args))
    }

    /// Runs the call with `input` on its stdin.
    pub fn run_with_stdin<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> Run {
        self.finish_with_stdin(self.command(args), input)
    }

    /// Runs `command` (one of [`Client::command`]'s, adjusted) with `input` on its stdin.
    pub fn finish_with_stdin(&self, mut command: Command, input: &[u8]) -> Run {
        command.stdin(Stdio::piped());
        let started = Instant::now();
        let mut child = spawn(&mut command).expect("spawning envharness");
        let mut stdin = child.stdin.take().expect("a piped stdin");
        // A call that fails early closes its stdin: a broken pipe here is its business.
        let _ = stdin.write_all(input);
        drop(stdin);
        self.t.finish(child, started)
    }

    /// `put KEY VALUE`, which must succeed.
    pub fn put(&self, key: &str, value: impl AsRef<[u8]>) {
        self.run_with_stdin(&["put", key, "-"], value.as_ref())
            .success();
    }

    /// `get KEY`'s stdout, which must succeed.
    pub fn get(&self, key: &str) -> Vec<u8> {
        let run = self.run(&["get", key]);
        run.success();
        run.stdout
    }

    /// Whether `get KEY` finds it (exit 0) or not (exit 1; anything else fails the test).
    pub fn has(&self, key: &str) -> bool {
        let run = self.run(&["get", key]);
        match run.code() {
            Some(0) => true,
            Some(1) => false,
            _ => {
                run.success();
                unreachable!()
            }
        }
    }
}

/// The paths of the regular files under `dir` (recursively), for checks of the file store.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Runs each body (a `fn(&dyn KvStore)` of the calling module) on each store, as the tests
/// `MODULE::file_store::NAME`, `MODULE::etcd_store::NAME` (a real etcd of its own) and
/// `MODULE::tls_etcd_store::NAME` (one over TLS that requires a client certificate). A
/// further store adds its module here.
macro_rules! every_store {
    ($($body:ident),* $(,)?) => {
        mod file_store {
            $(
                #[test]
                fn $body() {
                    super::$body(&crate::kv_stores::FileStore::new());
                }
            )*
        }
        mod etcd_store {
            $(
                #[test]
                fn $body() {
                    let Some(store) = crate::kv_stores::EtcdStore::start() else { return };
                    super::$body(&store);
                }
            )*
        }
        mod tls_etcd_store {
            $(
                #[test]
                fn $body() {
                    let Some(store) = crate::kv_stores::TlsEtcdStore::start() else { return };
                    super::$body(&store);
                }
            )*
        }
    };
}

pub(crate) use every_store;
