//! The harness sleeps while it waits: cases where a deadline that had passed once kept waking
//! its poll loop at once. Each test lets the harness wait about a second in such a case and
//! checks the CPU time it used meanwhile (a spinning harness uses the whole second).

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

/// CPU time of `pid`, all threads, from /proc (schedstat is in nanoseconds).
fn cpu(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the harness's tasks");
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

const SPUN: Duration = Duration::from_millis(300);

#[test]
fn a_stopping_command_with_a_health_check_is_waited_for_without_spinning() {
    let mut t = Test::new();
    t.dir("env")
        .script("export/health", "#!/bin/sh\necho run >> health-runs\n")
        .script(
            "cmd",
            "#!/bin/sh\ntrap 'touch stopping; sleep 1.5; exit 0' TERM\ntouch ready\nwhile :; do sleep 0.05; done\n",
        );
    let cmd = t.p("cmd");
    t.args(&[
        "--init",
        "--health-interval",
        "0.1",
        "-x",
        "export",
        "-e",
        "env",
        "--",
    ])
    .args(&[cmd.as_str()]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    t.wait_until("two health runs", || t.lines("health-runs").len() >= 2);
    send(&child, Signal::SIGTERM);
    t.wait_for("stopping");
    let before = cpu(child.id());
    std::thread::sleep(Duration::from_millis(1000));
    let used = cpu(child.id()) - before;
    t.finish(child, started).success();
    assert!(
        used < SPUN,
        "the stopping harness used {used:?} of CPU in 1 s"
    );
}

#[test]
fn a_retry_that_waits_for_a_free_slot_does_not_spin() {
    let mut t = Test::new();
    t.dir("export")
        .script("env/A", "#!/bin/sh\nexit 1\n")
        .script("env/B", "#!/bin/sh\ntouch b-ready\nsleep 1.5\necho b\n")
        .script("env/C", "#!/bin/sh\nsleep 1.5\necho c\n");
    t.args(&["-j", "2", "--retries", "3", "--retry-interval", "0.05"])
        .args(&["-x", "export", "-e", "env", "--print"]);
    let (child, started) = t.spawn();
    t.wait_for("b-ready");
    // A failed and waits to be tried again while B and C hold both slots.
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu(child.id());
    std::thread::sleep(Duration::from_millis(800));
    let used = cpu(child.id()) - before;
    t.finish(child, started).status(125);
    assert!(
        used < SPUN,
        "the waiting harness used {used:?} of CPU in 0.8 s"
    );
}

#[test]
fn a_tiny_watch_interval_does_not_keep_the_supervisor_busy() {
    let mut t = Test::new();
    t.file("env/A", "1\n").dir("export").script(
        "cmd",
        "#!/bin/sh\ntrap 'exit 0' TERM\ntouch ready\nwhile :; do sleep 0.05; done\n",
    );
    let cmd = t.p("cmd");
    t.args(&[
        "--init", "--watch", "0.000001", "-x", "export", "-e", "env", "--", &cmd,
    ]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    let before = cpu(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu(child.id()) - before;
    t.terminate(child, started).success();
    assert!(used < SPUN, "{used:?} of CPU in a second of re-runs");
}
