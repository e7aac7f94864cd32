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

/// A test whose scripts and command find `envharness` on PATH (for `envharness kv`), with
/// the store and the instance set as the harness's variables.
pub fn harness_on(url: &str, instance: &str) -> Test {
    let mut t = Test::new();
    t.symlink("bin/envharness", BIN);
    let path = format!("{}:{PATH}", t.p("bin"));
    t.env("PATH", path)
        .env("ENVHARNESS_KV", url)
        .env("ENVHARNESS_INSTANCE", instance);
    t
}

/// `envharness --init --ttl 2` publishing `db/i1` to `url` (an export script that prints a
/// URL) while it runs `command`, a script that touches `ready`; returns once the key is there.
pub fn publishing_under_init(url: &str, command: &str) -> (Test, std::process::Child, Instant) {
    let mut t = harness_on(url, "i1");
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
    let client = Client::new(&UrlStore(url.to_owned()));
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
            env: Vec::new(),
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
/// `MODULE::file_store::NAME` and `MODULE::etcd_store::NAME` (a real etcd of its own). A
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
    };
}

pub(crate) use every_store;
