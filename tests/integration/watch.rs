//! `--watch` (docs/reference.md §7): re-running discovery under `--init`, what counts as a change,
//! and what a change does to the command. The command is a small recorder that writes its pid and
//! the value it got to `runs`, the signals it receives to `signals`, and touches `ready-VALUE` once
//! it is waiting; the tests wait on those files.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;

/// The command: records each start and each signal, exits 0 on SIGTERM.
///
/// Its one sleep starts before the traps are set: a sleep forked after them holds the shell's
/// handlers until it execs, and a SIGTERM in that window would be caught and lost.
const RECORDER: &str = r#"#!/bin/sh
sleep 1000 & sleeper=$!
trap 'echo "HUP ${A-unset}" >> signals' HUP
trap 'echo USR1 >> signals' USR1
trap 'echo "TERM $$" >> signals; kill $sleeper 2>/dev/null; exit 0' TERM
echo "$$ ${A-unset}" >> runs
touch "ready-${A-unset}"
while kill -0 $sleeper 2>/dev/null; do wait $sleeper; done
"#;

/// A harness under `--init --watch`, over env/A = 1, running the recorder; a teardown that
/// counts its runs.
fn watched(t: &mut Test, extra: &[&str]) {
    t.file("env/A", "1\n")
        .script("export/teardown", "#!/bin/sh\necho teardown >> torn-down\n")
        .script("cmd", RECORDER);
    let cmd = t.p("cmd");
    t.args(&["--init", "-x", "export", "-e", "env"])
        .args(extra)
        .args(&["--", cmd.as_str()]);
}

/// The pids and values the recorder wrote, one pair per start.
fn runs(t: &Test) -> Vec<(i32, String)> {
    t.lines("runs")
        .iter()
        .map(|line| {
            let (pid, value) = line.split_once(' ').expect("pid value");
            (pid.parse().expect("a pid"), value.to_owned())
        })
        .collect()
}

#[test]
fn a_changed_literal_restarts_the_command_with_the_new_value() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0"]);
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    t.file("env/A", "2\n");
    send(&child, Signal::SIGHUP);
    t.wait_for("ready-2");
    let runs = runs(&t);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_ne!(runs[0].0, runs[1].0, "a restart is a new process");
    assert_eq!((runs[0].1.as_str(), runs[1].1.as_str()), ("1", "2"));
    // The old command was stopped as on SIGTERM.
    assert_eq!(t.lines("signals"), [format!("TERM {}", runs[0].0)]);
    let run = t.terminate(child, started);
    run.success()
        .error_line(&["A changed; restarting the command"])
        .stderr_lacks("warning: A changed");
    assert_eq!(
        t.lines("torn-down"),
        ["teardown"],
        "teardown runs once, at the end"
    );
}

#[test]
fn the_timer_re_runs_discovery_without_a_signal() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0.05"]);
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    t.replace("env/A", "2\n");
    t.wait_for("ready-2");
    t.terminate(child, started).success();
}

#[test]
fn a_name_added_or_gone_is_a_change_and_order_is_not() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0"]);
    t.file("env/B.env", "X=1\nY=2\n")
        .script("env/C", "#!/bin/sh\necho run >> c-runs\n");
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    // Same names and values in another order: no change.
    t.replace("env/B.env", "Y=2\nX=1\n");
    send(&child, Signal::SIGHUP);
    t.wait_until("a re-run", || t.lines("c-runs").len() == 2);
    // A new name and a name gone.
    t.replace("env/B.env", "Y=2\nZ=3\n");
    send(&child, Signal::SIGHUP);
    t.wait_for_stderr("X, Z changed; restarting the command");
    t.wait_until("the second start", || runs(&t).len() == 2);
    let run = t.terminate(child, started);
    run.success();
    assert_eq!(run.stderr_lines_with("changed").len(), 1, "{}", run.stderr);
}

#[test]
fn sighup_is_a_re_run_trigger_and_never_reaches_the_command() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0"]);
    t.script("env/C", "#!/bin/sh\necho run >> c-runs\n");
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    send(&child, Signal::SIGHUP);
    t.wait_until("the re-run SIGHUP asked for", || {
        t.lines("c-runs").len() == 2
    });
    send(&child, Signal::SIGUSR1);
    t.wait_for_line("signals", "USR1");
    let run = t.terminate(child, started);
    run.success();
    let signals = t.lines("signals");
    assert!(!signals.iter().any(|s| s.starts_with("HUP")), "{signals:?}");
    assert_eq!(runs(&t).len(), 1, "no change, no restart");
}

#[test]
fn without_watch_sighup_is_still_forwarded() {
    let mut t = Test::new();
    watched(&mut t, &[]);
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    send(&child, Signal::SIGHUP);
    t.wait_for_line("signals", "HUP 1");
    t.terminate(child, started).success();
}

#[test]
fn on_change_signal_sends_it_once_and_keeps_the_process_and_its_environment() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0", "--on-change", "HUP"]);
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    t.file("env/A", "2\n");
    send(&child, Signal::SIGHUP);
    t.wait_until("HUP at the command", || !t.lines("signals").is_empty());
    // No change since: another trigger sends nothing.
    send(&child, Signal::SIGHUP);
    send(&child, Signal::SIGUSR1);
    t.wait_for_line("signals", "USR1");
    let run = t.terminate(child, started);
    run.success().error_line(&["A changed; sending SIGHUP"]);
    assert_eq!(runs(&t).len(), 1, "the command was not restarted");
    let signals = t.lines("signals");
    assert_eq!(signals[..2], ["HUP 1", "USR1"], "{signals:?}");
}

#[test]
fn on_change_signal_reaches_the_whole_group_with_group() {
    let mut t = Test::new();
    t.file("env/A", "1\n").dir("export").script(
        "cmd",
        "#!/bin/sh\n\
         sh -c 'trap \"echo child >> got; exit 0\" USR2; touch child-ready; while :; do sleep 1; done' &\n\
         trap 'echo parent >> got' USR2\n\
         trap 'kill $!; exit 0' TERM\n\
         while :; do sleep 30 & wait $!; done\n",
    );
    let cmd = t.p("cmd");
    t.args(&[
        "--init",
        "--group",
        "--watch",
        "0",
        "--on-change",
        "SIGUSR2",
    ])
    .args(&["-x", "export", "-e", "env", "--", cmd.as_str()]);
    let (child, started) = t.spawn();
    t.wait_for("child-ready");
    t.file("env/A", "2\n");
    send(&child, Signal::SIGHUP);
    t.wait_until("USR2 at both", || t.lines("got").len() == 2);
    t.terminate(child, started).success();
    let mut got = t.lines("got");
    got.sort();
    assert_eq!(got, ["child", "parent"]);
}

#[test]
fn stop_timeout_applies_to_a_restart() {
    let mut t = Test::new();
    t.file("env/A", "1\n").dir("export").script(
        "cmd",
        "#!/bin/sh\ntrap '' TERM\necho \"$$ $A\" >> runs\ntouch ready-$A\nwhile :; do sleep 1; done\n",
    );
    let cmd = t.p("cmd");
    t.args(&["--init", "--watch", "0", "--stop-timeout", "0.5"])
        .args(&["-x", "export", "-e", "env", "--", cmd.as_str()]);
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    t.file("env/A", "2\n");
    let changed = Instant::now();
    send(&child, Signal::SIGHUP);
    t.wait_for("ready-2");
    let took = changed.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "restarted after {took:?}"
    );
    let first = runs(&t)[0].0;
    assert!(
        gone_within(first, Duration::from_secs(2)),
        "the old command was killed"
    );
    send(&child, Signal::SIGKILL);
    let _ = t.finish(child, started);
    assert!(t
        .stderr_so_far()
        .contains("did not exit 0.5s after being told to stop: SIGKILL"));
}

#[test]
fn a_failing_re_run_changes_nothing_and_warns() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0"]);
    t.script(
        "env/B",
        "#!/bin/sh\nif [ -f broken ]; then exit 4; fi\necho b\n",
    );
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    t.file("env/A", "2\n").file("broken", "");
    send(&child, Signal::SIGHUP);
    t.wait_for_stderr("re-run failed, nothing changed:");
    assert_eq!(runs(&t).len(), 1, "the command keeps running");
    // The next trigger tries again, and now it works.
    std::fs::remove_file(t.path("broken")).expect("removing broken");
    send(&child, Signal::SIGHUP);
    t.wait_for("ready-2");
    let run = t.terminate(child, started);
    run.success().error_line(&[
        "warning: re-run failed, nothing changed:",
        "env/B: exited with status 4",
    ]);
}

#[test]
fn an_unmet_requirement_fails_the_re_run_at_once() {
    let mut t = Test::new();
    watched(
        &mut t,
        &["--watch", "0", "--require", "A=\\d", "--wait", "30"],
    );
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    t.file("env/A", "two\n");
    let sent = Instant::now();
    send(&child, Signal::SIGHUP);
    t.wait_for_stderr("A: required to match '\\d', and does not");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "--wait applies only before the start"
    );
    t.terminate(child, started).success().stderr_lacks("two");
    assert_eq!(runs(&t).len(), 1);
}

#[test]
fn re_runs_never_overlap_even_with_a_slow_script() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0.01"]);
    t.script(
        "env/SLOW",
        "#!/bin/sh\necho start >> log\nsleep 0.2\necho end >> log\necho x\n",
    );
    let (child, started) = t.spawn();
    t.wait_until("three re-runs", || {
        t.lines("log").iter().filter(|l| *l == "end").count() >= 4
    });
    t.terminate(child, started).success();
    let log = t.lines("log");
    for pair in log.chunks(2) {
        if pair.len() == 2 {
            assert_eq!(pair, ["start", "end"], "{log:?}");
        }
    }
}

#[test]
fn re_runs_start_from_the_harness_environment_not_the_last_result() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0.01"]);
    // Would grow by one x per run if a re-run saw the previous result.
    t.script("env/B", "#!/bin/sh\necho run >> b-runs\necho \"${B}x\"\n");
    let (child, started) = t.spawn();
    t.wait_until("a few re-runs", || t.lines("b-runs").len() >= 4);
    t.terminate(child, started)
        .success()
        .stderr_lacks("changed");
    assert_eq!(runs(&t).len(), 1);
}

/// A re-run script that waits, so the test can act while a re-run is under way; the first
/// (phase) run is quick.
const SLOW_RE_RUN: &str = "#!/bin/sh\n\
    trap 'echo term >> script-got; exit 1' TERM\n\
    if [ -f started ]; then touch rerun-ready; sleep 30 & wait $!; fi\n\
    touch started\necho s\n";

#[test]
fn a_stop_signal_during_a_re_run_reaches_the_scripts_and_the_command() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0"]);
    t.script("env/S", SLOW_RE_RUN);
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    send(&child, Signal::SIGHUP);
    t.wait_for("rerun-ready");
    let stopped = Instant::now();
    let run = t.terminate(child, started);
    run.success();
    assert!(stopped.elapsed() < Duration::from_secs(3));
    assert_eq!(t.lines("script-got"), ["term"]);
    assert_eq!(t.lines("signals").len(), 1, "the command got SIGTERM");
    assert_eq!(t.lines("torn-down"), ["teardown"]);
}

#[test]
fn forwarded_signals_reach_the_command_during_a_re_run() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0"]);
    t.script("env/S", SLOW_RE_RUN);
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    send(&child, Signal::SIGHUP);
    t.wait_for("rerun-ready");
    send(&child, Signal::SIGUSR1);
    t.wait_for_line("signals", "USR1");
    t.terminate(child, started).success();
}

#[test]
fn the_command_exiting_during_a_re_run_ends_the_harness_with_its_status() {
    let mut t = Test::new();
    t.file("env/A", "1\n")
        .script("env/S", SLOW_RE_RUN)
        .dir("export")
        .script(
            "cmd",
            "#!/bin/sh\ntouch ready\nwhile [ ! -f stop ]; do sleep 0.02; done\nexit 7\n",
        );
    let cmd = t.p("cmd");
    t.args(&["--init", "--watch", "0", "-x", "export", "-e", "env", "--"])
        .args(&[cmd.as_str()]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    send(&child, Signal::SIGHUP);
    t.wait_for("rerun-ready");
    t.file("stop", "");
    let run = t.finish(child, started);
    run.status(7);
    assert_eq!(
        t.lines("script-got"),
        ["term"],
        "the re-run's script was stopped"
    );
}

#[test]
fn a_command_that_exits_by_itself_is_not_started_again() {
    let mut t = Test::new();
    t.file("env/A", "1\n")
        .dir("export")
        .script("cmd", "#!/bin/sh\necho run >> runs\nexit 3\n");
    let cmd = t.p("cmd");
    t.args(&[
        "--init", "--watch", "0.01", "-x", "export", "-e", "env", "--",
    ])
    .args(&[cmd.as_str()]);
    t.run().status(3);
    assert_eq!(t.lines("runs"), ["run"]);
}

#[test]
fn a_sighup_during_the_first_phases_triggers_a_re_run_once_the_command_runs() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0"]);
    t.script(
        "env/S",
        "#!/bin/sh\nif [ ! -f started ]; then touch started; while [ ! -f go ]; do sleep 0.01; done; fi\necho s\n",
    );
    let (child, started) = t.spawn();
    t.wait_for("started");
    // A was read before S; the re-run the SIGHUP asks for finds the new value.
    t.file("env/A", "2\n");
    send(&child, Signal::SIGHUP);
    t.file("go", "");
    t.wait_for("ready-2");
    t.terminate(child, started).success();
    // The first command may be restarted before it even wrote its line.
    let runs = runs(&t);
    assert_eq!(runs.last().map(|run| run.1.as_str()), Some("2"), "{runs:?}");
}

/// A supervised `app` found in bin1 and, once PATH changed to bin2 and SIGHUP asked for a
/// re-run, looked for again there: the harness's end, with `t` to check what happened.
fn restart_with_app_moved(mut t: Test) -> (Test, Run) {
    t.dir("bin1")
        .dir("bin2")
        .script(
            "bin1/app",
            "#!/bin/sh\ntouch ready\nwhile :; do sleep 1; done\n",
        )
        .script("export/teardown", "#!/bin/sh\necho teardown >> torn-down\n");
    let bin1 = t.p("bin1");
    let bin2 = t.p("bin2");
    t.file("env/PATH", format!("{bin1}:/usr/bin:/bin\n"));
    t.args(&[
        "--init", "--watch", "0", "-x", "export", "-e", "env", "--", "app",
    ]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    t.file("env/PATH", format!("{bin2}:/usr/bin:/bin\n"));
    send(&child, Signal::SIGHUP);
    let run = t.finish(child, started);
    (t, run)
}

#[test]
fn a_restart_that_cannot_find_the_command_ends_with_127_and_teardown() {
    let (t, run) = restart_with_app_moved(Test::new());
    run.status(127).error_line(&["app: command not found"]);
    assert_eq!(t.lines("torn-down"), ["teardown"]);
}

#[test]
fn a_restart_onto_a_looping_script_is_refused_with_125_and_teardown() {
    let t = Test::new();
    // Run by the kernel, its #! line would start envharness on it again, forever.
    t.script("bin2/app", &format!("#!{BIN} -e env\necho ran >> ran\n"));
    let (t, run) = restart_with_app_moved(t);
    run.status(125).error_line(&[
        "app",
        "its #! line runs envharness without a command: add -- INTERPRETER",
    ]);
    assert!(!t.exists("ran"), "the looping script ran");
    assert_eq!(t.lines("torn-down"), ["teardown"]);
}

#[test]
fn quiet_hides_the_change_line() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0", "-q"]);
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    t.file("env/A", "2\n");
    send(&child, Signal::SIGHUP);
    t.wait_for("ready-2");
    t.terminate(child, started)
        .success()
        .stderr_lacks("changed");
}

#[test]
fn the_change_line_names_variables_never_values() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0", "-v"]);
    t.file("env/SECRET", "hunter2\n");
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    t.file("env/SECRET", "swordfish\n");
    send(&child, Signal::SIGHUP);
    t.wait_until("the restart", || runs(&t).len() == 2);
    t.terminate(child, started)
        .success()
        .error_line(&["SECRET changed; restarting the command"])
        .stderr_lacks("hunter2")
        .stderr_lacks("swordfish");
}

#[test]
fn watch_needs_init() {
    let mut t = Test::new();
    t.dir("env").dir("export");
    t.args(&["--watch", "1", "-x", "export", "-e", "env", "--", "true"]);
    t.run().status(125).error_line(&["--watch needs --init"]);
}

#[test]
fn bad_option_values_are_usage_errors_naming_the_flag_or_variable() {
    for (args, env, words) in [
        (vec!["--init", "--watch", "-1"], None, vec!["--watch"]),
        (
            vec!["--init", "--watch", "soon"],
            None,
            vec!["--watch", "not a number"],
        ),
        (
            vec!["--init"],
            Some(("ENVHARNESS_WATCH", "soon")),
            vec!["ENVHARNESS_WATCH", "not a number"],
        ),
        (
            vec!["--init", "--watch", "1", "--on-change", "KILL"],
            None,
            vec!["--on-change \"KILL\"", "SIGKILL cannot be caught"],
        ),
        (
            vec!["--on-change", "STOP"],
            None,
            vec!["--on-change \"STOP\"", "SIGSTOP"],
        ),
        (
            vec!["--plan", "--on-change", "SIGFOO"],
            None,
            vec!["--on-change \"SIGFOO\"", "not `restart` nor a signal"],
        ),
        (vec!["--on-change", "99"], None, vec!["--on-change \"99\""]),
        (
            vec![],
            Some(("ENVHARNESS_ON_CHANGE", "reload")),
            vec![
                "ENVHARNESS_ON_CHANGE=\"reload\"",
                "not `restart` nor a signal",
            ],
        ),
        (vec!["--on-change", ""], None, vec!["--on-change \"\""]),
        (
            vec!["--init", "--watch", "-0"],
            None,
            vec!["--watch", "negative"],
        ),
        (vec!["--ttl", "-0"], None, vec!["--ttl", "whole number"]),
        (vec!["--timeout", "-1"], None, vec!["--timeout", "negative"]),
        (
            vec!["--init", "--kv", "bogus://x"],
            None,
            vec!["bogus://x", "unknown registry scheme"],
        ),
        (
            vec!["--kv", "file://relative"],
            None,
            vec!["file://relative", "absolute path"],
        ),
    ] {
        let mut t = Test::new();
        t.dir("env").dir("export");
        if let Some((name, value)) = env {
            t.env(name, value);
        }
        t.args(&args)
            .args(&["-x", "export", "-e", "env", "--", "true"]);
        t.run().status(125).error_line(&words);
    }
}

#[test]
fn an_empty_watch_variable_means_off_and_on_change_accepts_signal_spellings() {
    let mut t = Test::new();
    t.dir("env").dir("export");
    t.env("ENVHARNESS_WATCH", "");
    t.args(&["-x", "export", "-e", "env", "--", "true"]);
    t.run().success();
    for action in ["HUP", "SIGUSR1", "usr2", "15", "restart"] {
        let mut t = Test::new();
        t.dir("env").dir("export");
        t.args(&[
            "--on-change",
            action,
            "-x",
            "export",
            "-e",
            "env",
            "--",
            "true",
        ]);
        t.run().success();
    }
}

#[test]
fn sighups_during_a_re_run_give_exactly_one_more() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0"]);
    t.script(
        "env/S",
        "#!/bin/sh\necho run >> s-runs\nn=$(wc -l < s-runs)\n\
         if [ \"$n\" -eq 2 ]; then touch rerun-ready; while [ ! -f go ]; do sleep 0.01; done; fi\necho s\n",
    );
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    send(&child, Signal::SIGHUP);
    t.wait_for("rerun-ready");
    // kill(2) returns once the signal is pending: all four are, before the re-run ends.
    for _ in 0..4 {
        send(&child, Signal::SIGHUP);
    }
    t.file("go", "");
    t.wait_until("the one re-run after", || t.lines("s-runs").len() == 3);
    // And no other: a re-run that would follow comes at once, well within this.
    std::thread::sleep(Duration::from_millis(300));
    t.terminate(child, started).success();
    assert_eq!(t.lines("s-runs").len(), 3, "{:?}", t.lines("s-runs"));
}

#[test]
fn sigterm_while_a_restart_stops_the_command_cancels_the_restart() {
    let mut t = Test::new();
    t.file("env/A", "1\n").dir("export").script(
        "cmd",
        "#!/bin/sh\necho \"$$ $A\" >> runs\n\
         trap 'echo term >> got; touch stopping; while [ ! -f go ]; do sleep 0.01; done; exit 7' TERM\n\
         touch ready-$A\nwhile :; do sleep 0.05; done\n",
    );
    let cmd = t.p("cmd");
    t.args(&[
        "--init", "--watch", "0", "-vv", "-x", "export", "-e", "env", "--",
    ])
    .args(&[cmd.as_str()]);
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    t.replace("env/A", "2\n");
    send(&child, Signal::SIGHUP);
    t.wait_for("stopping");
    send(&child, Signal::SIGTERM);
    // The harness has taken it in once it forwards it.
    t.wait_for_stderr("forwarding SIGTERM");
    t.file("go", "");
    t.finish(child, started).status(7);
    assert_eq!(t.lines("runs").len(), 1, "the restart was cancelled");
}

#[test]
fn the_timer_counts_from_the_end_of_the_previous_re_run() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0.3"]);
    t.script(
        "env/SLOW",
        "#!/bin/sh\necho \"start $(date +%s%N)\" >> log\nsleep 0.4\necho \"end $(date +%s%N)\" >> log\n",
    );
    let (child, started) = t.spawn();
    t.wait_until("three runs", || {
        t.lines("log")
            .iter()
            .filter(|l| l.starts_with("end"))
            .count()
            >= 3
    });
    t.terminate(child, started).success();
    let stamps: Vec<(String, u128)> = t
        .lines("log")
        .iter()
        .map(|line| {
            let (what, ns) = line.split_once(' ').expect("what time");
            (what.to_owned(), ns.parse().expect("nanoseconds"))
        })
        .collect();
    for pair in stamps.windows(2) {
        if pair[0].0 == "end" && pair[1].0 == "start" {
            let gap = Duration::from_nanos((pair[1].1 - pair[0].1) as u64);
            assert!(
                gap >= Duration::from_millis(290),
                "a re-run {gap:?} after the last ended"
            );
        }
    }
}

#[test]
fn no_re_run_starts_after_sigterm() {
    let mut t = Test::new();
    t.file("env/A", "1\n")
        .script("env/C", "#!/bin/sh\necho run >> c-runs\n")
        .dir("export")
        .script(
            "cmd",
            "#!/bin/sh\ntrap 'touch stopping; sleep 0.5; exit 0' TERM\ntouch ready\nwhile :; do sleep 0.02; done\n",
        );
    let cmd = t.p("cmd");
    t.args(&[
        "--init",
        "--watch",
        "0.02",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        cmd.as_str(),
    ]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    t.wait_until("a few re-runs", || t.lines("c-runs").len() >= 3);
    send(&child, Signal::SIGTERM);
    t.wait_for("stopping");
    let at_term = t.lines("c-runs").len();
    t.finish(child, started).success();
    // One re-run may have been under way when SIGTERM came; none starts after it.
    assert!(
        t.lines("c-runs").len() <= at_term + 1,
        "{at_term} then {:?}",
        t.lines("c-runs")
    );
}

#[test]
fn signals_reach_the_command_while_a_re_run_renders_and_a_stop_gives_the_render_up() {
    let mut t = Test::new();
    // Light at the start; 200 templates that each keep the engine busy once HEAVY is 1:
    // several seconds of rendering even in a release build.
    t.file("env/HEAVY", "0\n");
    let body = "{% if HEAVY == '1' %}{% for i in range(500) %}{% for j in range(500) %}\
                {% endfor %}{% endfor %}{% endif %}\n";
    for i in 0..200 {
        t.file(&format!("heavy/t{i:03}.j2"), body);
    }
    t.script(
        "env/RENDERING",
        "#!/bin/sh\n[ -f started ] && touch rendering\ntouch started\n",
    );
    let template = format!("{}:{}", t.p("heavy"), t.p("out"));
    watched(&mut t, &["--watch", "0", "-t", &template]);
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    t.replace("env/HEAVY", "1\n");
    send(&child, Signal::SIGHUP);
    t.wait_for("rendering");
    let signalled = Instant::now();
    send(&child, Signal::SIGUSR1);
    t.wait_for_line("signals", "USR1");
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "SIGUSR1 reached the command {:?} after it was sent",
        signalled.elapsed()
    );
    let stopping = Instant::now();
    let run = t.terminate(child, started);
    run.success();
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stopped {:?} after SIGTERM",
        stopping.elapsed()
    );
    assert_eq!(runs(&t).len(), 1, "the re-run was applied");
}

#[test]
fn a_tiny_watch_interval_never_starves_signals() {
    let mut t = Test::new();
    watched(&mut t, &["--watch", "0.000001"]);
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    let stopping = Instant::now();
    let run = t.terminate(child, started);
    run.success();
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stopped {:?} after SIGTERM",
        stopping.elapsed()
    );
}
