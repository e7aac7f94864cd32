//! A supervising harness publishing to a real etcd while etcd misbehaves (issue 11): restarted
//! with its data, wiped, frozen (SIGSTOP: it accepts connections and never answers), and one
//! endpoint of two down. The command is never stopped because the store failed, signals are
//! forwarded and the keys come back once etcd does.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::etcd_server::{free_port, Etcd};
use crate::kv_stores::*;
use crate::support::*;

/// A store given by its URL alone, for a client of a running etcd.
struct Url(String);

impl KvStore for Url {
    fn kv_url(&self) -> String {
        self.0.clone()
    }
}

/// `envharness --init` publishing `db/i1` to `url` with `--ttl 2`, running a command that
/// records the signals it gets; returns once the key is there.
fn publishing(url: &str) -> (Test, std::process::Child, Instant) {
    let mut t = Test::new();
    t.symlink("bin/envharness", BIN).dir("env");
    let path = format!("{}:{PATH}", t.p("bin"));
    t.env("PATH", path)
        .env("ENVHARNESS_KV", url)
        .env("ENVHARNESS_INSTANCE", "i1")
        .script("export/db", "#!/bin/sh\necho postgres://db-1:5432/app\n")
        .script(
            "cmd",
            "#!/bin/sh\ntrap 'exit 0' TERM\ntrap 'echo USR1 >> got' USR1\ntouch ready\nwhile :; do sleep 0.05; done\n",
        );
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
    let client = Client::new(&Url(url.to_owned()));
    t.wait_until("db/i1 published", || client.has("db/i1"));
    (t, child, started)
}

#[test]
fn keys_come_back_after_etcd_restarts_and_after_it_is_wiped() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let url = etcd.url("faults");
    let (t, child, started) = publishing(&url);
    let client = Client::new(&Url(url.clone()));

    etcd.stop();
    t.wait_for_stderr("cannot publish");
    // The command keeps running and is still supervised.
    send(&child, Signal::SIGUSR1);
    t.wait_until("USR1 at the command", || t.lines("got").len() == 1);
    etcd.restart();
    t.wait_until("db/i1 back after the restart", || client.has("db/i1"));

    etcd.wipe();
    t.wait_until("db/i1 back after the wipe", || client.has("db/i1"));

    send(&child, Signal::SIGTERM);
    t.finish(child, started)
        .success()
        .error_line(&["the store is back; the keys are published"]);
    assert!(!client.has("db/i1"), "withdrawn at the end");
}

#[test]
fn a_frozen_etcd_holds_up_neither_signals_nor_the_stop() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    let url = etcd.url("frozen");
    let (t, child, started) = publishing(&url);
    etcd.freeze();
    // Renewals now hang in the registry's thread; the loop goes on.
    let sent = Instant::now();
    send(&child, Signal::SIGUSR1);
    t.wait_until("USR1 at the command", || t.lines("got").len() == 1);
    assert!(
        sent.elapsed() < Duration::from_millis(500),
        "{:?}",
        sent.elapsed()
    );
    // The withdrawal before a forwarded SIGTERM waits at most 2 s, even behind a renewal.
    let stopping = Instant::now();
    send(&child, Signal::SIGTERM);
    let run = t.finish(child, started);
    let took = stopping.elapsed();
    etcd.thaw();
    run.success();
    assert!(took < Duration::from_millis(4500), "stopped in {took:?}");
}

#[test]
fn a_thawed_etcd_is_used_again() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    let url = etcd.url("thaw");
    let (t, child, started) = publishing(&url);
    let client = Client::new(&Url(url.clone()));
    etcd.freeze();
    t.wait_for_stderr("cannot publish");
    etcd.thaw();
    t.wait_for_stderr("the store is back");
    assert!(client.has("db/i1"));
    send(&child, Signal::SIGTERM);
    t.finish(child, started).success();
}

#[test]
fn with_one_endpoint_down_the_next_one_is_used() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    let url = format!("etcd://127.0.0.1:{},{}/two", free_port(), etcd.endpoint());
    let (t, child, started) = publishing(&url);
    let client = Client::new(&Url(url.clone()));
    assert_eq!(client.get("db/i1"), b"postgres://db-1:5432/app");
    send(&child, Signal::SIGTERM);
    t.finish(child, started).success();
    assert!(!client.has("db/i1"));
}
