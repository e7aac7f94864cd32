//! A supervising harness publishing to a real etcd while etcd misbehaves (issue 11): restarted
//! with its data, wiped, frozen (SIGSTOP: it accepts connections and never answers), and one
//! endpoint of two down. The command is never stopped because the store failed, signals are
//! forwarded and the keys come back once etcd does.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::etcd_server::{free_port, Etcd};
use crate::kv_stores::*;
use crate::support::*;

/// The command: records the signals it gets, exits 0 on SIGTERM.
const RECORDS_SIGNALS: &str = "#!/bin/sh\ntrap 'exit 0' TERM\ntrap 'echo USR1 >> got' USR1\ntouch ready\nwhile :; do sleep 0.05; done\n";

fn publishing(url: &str) -> (Test, std::process::Child, Instant) {
    publishing_under_init(&UrlStore(url.to_owned()), RECORDS_SIGNALS)
}

#[test]
fn keys_come_back_after_etcd_restarts_and_after_it_is_wiped() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let url = etcd.url("faults");
    let (t, child, started) = publishing(&url);
    let client = Client::new(&UrlStore(url.clone()));

    etcd.stop();
    t.wait_for_stderr("cannot publish");
    // The command keeps running and is still supervised.
    send(&child, Signal::SIGUSR1);
    t.wait_until("USR1 at the command", || t.lines("got").len() == 1);
    etcd.restart();
    t.wait_until("db/i1 back after the restart", || client.has("db/i1"));

    etcd.wipe();
    t.wait_until("db/i1 back after the wipe", || client.has("db/i1"));

    t.terminate(child, started)
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
    let run = t.terminate(child, started);
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
    let client = Client::new(&UrlStore(url.clone()));
    etcd.freeze();
    t.wait_for_stderr("cannot publish");
    etcd.thaw();
    t.wait_for_stderr("the store is back");
    assert!(client.has("db/i1"));
    t.terminate(child, started).success();
}

#[test]
fn with_one_endpoint_down_the_next_one_is_used() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    let url = format!("etcd://127.0.0.1:{},{}/two", free_port(), etcd.endpoint());
    let (t, child, started) = publishing(&url);
    let client = Client::new(&UrlStore(url.clone()));
    assert_eq!(client.get("db/i1"), b"postgres://db-1:5432/app");
    t.terminate(child, started).success();
    assert!(!client.has("db/i1"));
}

#[test]
fn a_watch_on_a_frozen_member_moves_to_another_within_seconds() {
    let Some(members) = Etcd::cluster(3) else {
        return;
    };
    let endpoints: Vec<_> = members.iter().map(|m| m.endpoint()).collect();
    let url = format!("etcd://{}/frozen", endpoints.join(","));
    // The script reads through the members in another order, so that its own reads do not
    // wait for the frozen member first; what it read is watched through the harness's URL.
    let script_url = format!(
        "etcd://{},{},{}/frozen",
        endpoints[1], endpoints[2], endpoints[0]
    );
    let client = Client::new(&UrlStore(url.clone()));
    client.put("db", "v1");
    let mut t = harness_on(&UrlStore(url.clone()), "i1");
    t.script(
        "env/DB",
        &format!("#!/bin/sh\nexec envharness --kv {script_url} kv get db\n"),
    )
    .dir("export")
    .script(
        "cmd",
        "#!/bin/sh\ntrap 'exit 0' TERM\necho \"$DB\" >> seen\ntouch ready\nwhile :; do sleep 0.05; done\n",
    );
    let cmd = t.p("cmd");
    t.args(&[
        "--init",
        "--watch",
        "0",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        cmd.as_str(),
    ]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    t.wait_until("the harness's watch", || {
        members.iter().map(|m| m.watchers()).sum::<u64>() == 1
    });
    let holder = members
        .iter()
        .position(|m| m.watchers() == 1)
        .expect("a member holds the watch");
    members[holder].freeze();
    let others: Vec<_> = (0..3)
        .filter(|&i| i != holder)
        .map(|i| endpoints[i].clone())
        .collect();
    let writer = Client::new(&UrlStore(format!("etcd://{}/frozen", others.join(","))));
    let put = Instant::now();
    writer.put("db", "v2");
    t.wait_until("the re-run with v2", || {
        t.lines("seen").last().map(String::as_str) == Some("v2")
    });
    let took = put.elapsed();
    eprintln!("a put reached the harness {took:?} after the member holding its watch froze");
    members[holder].thaw();
    // Silent for 1 s, no status within 0.5 s, a new stream elsewhere: about 1.6 s at worst.
    assert!(took < Duration::from_secs(3), "{took:?}");
    t.terminate(child, started).success().error_line(&[
        &url,
        "the watch was lost",
        "stopped answering",
    ]);
}
