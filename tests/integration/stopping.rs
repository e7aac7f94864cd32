//! Stopping well (docs/reference.md §13.3): `--drain` with the export directory's `prestop`,
//! `--rewrite` and `--remap-exit`, with real signals; `--rewrite` compared with Debian's
//! `dumb-init -r`, `--remap-exit` with `tini -e`. Every command here records what it receives
//! in an append-only log the test reads.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::kv_stores::*;
use crate::support::*;

/// The command: logs each signal it gets (TERM ends it), touches `ready` once it waits.
const LOGGER: &str = r#"#!/bin/sh
trap 'echo TERM >> log; exit 0' TERM
trap 'echo QUIT >> log' QUIT
trap 'echo USR1 >> log' USR1
trap 'echo USR2 >> log' USR2
trap 'echo INT >> log; exit 3' INT
touch ready
while :; do sleep 0.02; done
"#;

/// A harness on a file store publishing `web/i1`, with `prestop` logging whether the key is
/// still there, running the logger.
fn draining(store: &dyn KvStore, extra: &[&str]) -> Test {
    let mut t = harness_on(store, "i1");
    t.dir("env")
        .script("export/web", "#!/bin/sh\necho http://web-1:80\n")
        .script(
            "export/prestop",
            "#!/bin/sh\nif envharness kv get web/i1 >/dev/null 2>&1; then echo 'prestop: published' >> log; \
             else echo 'prestop: withdrawn' >> log; fi\n",
        )
        .script("cmd", LOGGER);
    let cmd = t.p("cmd");
    t.args(&["--init", "--ttl", "2", "-x", "export", "-e", "env"])
        .args(extra)
        .args(&["--", cmd.as_str()]);
    t
}

#[test]
fn a_drain_withdraws_runs_prestop_and_keeps_the_command_serving_then_forwards() {
    let store = FileStore::new();
    let t = draining(&store, &["--drain", "1"]);
    let client = Client::new(&store);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    t.wait_until("published", || client.has("web/i1"));
    send(&child, Signal::SIGTERM);
    let signalled = Instant::now();
    t.wait_until("withdrawn at once", || !client.has("web/i1"));
    assert!(
        signalled.elapsed() < Duration::from_millis(900),
        "{:?}",
        signalled.elapsed()
    );
    // Serving still, and told nothing yet.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(t.lines("log"), ["prestop: withdrawn"]);
    let run = t.finish(child, started);
    run.success();
    assert_eq!(t.lines("log"), ["prestop: withdrawn", "TERM"]);
    assert!(
        signalled.elapsed() >= Duration::from_secs(1),
        "forwarded before the drain was over: {:?}",
        signalled.elapsed()
    );
}

#[test]
fn a_failing_prestop_is_logged_and_the_stop_goes_on() {
    let store = FileStore::new();
    let t = draining(&store, &[]);
    t.script("export/prestop", "#!/bin/sh\necho prestop >> log\nexit 4\n");
    let (child, started) = t.spawn();
    t.wait_for("ready");
    let run = t.terminate(child, started);
    run.success().error_line(&[
        "export/prestop: exited with status 4",
        "stopping the command all the same",
    ]);
    assert_eq!(t.lines("log"), ["prestop", "TERM"]);
}

#[test]
fn a_second_stop_signal_cuts_the_drain_short() {
    let store = FileStore::new();
    let t = draining(&store, &["--drain", "30"]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    send(&child, Signal::SIGTERM);
    t.wait_for_line("log", "prestop: withdrawn");
    let second = Instant::now();
    send(&child, Signal::SIGTERM);
    t.finish(child, started).success();
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
    assert_eq!(t.lines("log"), ["prestop: withdrawn", "TERM"]);
}

#[test]
fn a_second_stop_signal_during_prestop_ends_it() {
    let store = FileStore::new();
    let t = draining(&store, &["--drain", "30"]);
    t.script(
        "export/prestop",
        "#!/bin/sh\necho prestop >> log\nexec sleep 30\n",
    );
    let (child, started) = t.spawn();
    t.wait_for("ready");
    send(&child, Signal::SIGTERM);
    t.wait_for_line("log", "prestop");
    let second = Instant::now();
    send(&child, Signal::SIGINT);
    t.finish(child, started).status(3);
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "{:?}",
        second.elapsed()
    );
    assert_eq!(t.lines("log"), ["prestop", "INT"]);
}

#[test]
fn the_command_exiting_during_the_drain_ends_it() {
    let store = FileStore::new();
    let t = draining(&store, &["--drain", "30"]);
    t.script(
        "cmd",
        "#!/bin/sh\ntrap 'echo TERM >> log' TERM\ntouch ready\nwhile [ ! -f stop ]; do sleep 0.02; done\nexit 5\n",
    );
    let (child, started) = t.spawn();
    t.wait_for("ready");
    send(&child, Signal::SIGTERM);
    t.wait_for_line("log", "prestop: withdrawn");
    t.file("stop", "");
    let exited = Instant::now();
    t.finish(child, started).status(5);
    assert!(
        exited.elapsed() < Duration::from_secs(3),
        "{:?}",
        exited.elapsed()
    );
    assert_eq!(
        t.lines("log"),
        ["prestop: withdrawn"],
        "the command got no signal"
    );
}

#[test]
fn other_signals_are_forwarded_at_once_during_the_drain() {
    let store = FileStore::new();
    let t = draining(&store, &["--drain", "30"]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    send(&child, Signal::SIGTERM);
    t.wait_for_line("log", "prestop: withdrawn");
    send(&child, Signal::SIGUSR1);
    t.wait_for_line("log", "USR1");
    send(&child, Signal::SIGTERM);
    t.finish(child, started).success();
}

#[test]
fn without_init_prestop_draws_one_warning_and_does_not_run() {
    let mut t = Test::new();
    t.dir("env")
        .script("export/prestop", "#!/bin/sh\ntouch ran\n");
    t.args(&["-x", "export", "-e", "env", "--", "true"]);
    t.run()
        .success()
        .error_line(&["export/prestop: prestop runs only under --init; ignored"]);
    assert!(!t.exists("ran"));
}

/// The logger under `prefix` (`envharness --init --rewrite ...` or `dumb-init -r ...`), sent
/// `signals` one after the other (each one is waited for in the log when it should arrive, or
/// given a moment when it should not), then SIGTERM; returns the log.
fn signals_received(prefix: &[&str], signals: &[Signal]) -> Vec<String> {
    let t = Test::new();
    t.script("cmd", LOGGER).dir("env").dir("export");
    let mut command = t.external(prefix[0]);
    command.args(&prefix[1..]).arg(t.path("cmd"));
    let child = spawn(&mut command).expect("spawning");
    let started = Instant::now();
    t.wait_for("ready");
    for signal in signals {
        let before = t.lines("log").len();
        send(&child, *signal);
        // A signal rewritten to nothing leaves no line: wait a little, not for ever.
        let limit = Instant::now() + Duration::from_millis(500);
        while t.lines("log").len() == before && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    send(&child, Signal::SIGINT);
    let _ = t.finish_command(child, started, &command);
    t.lines("log")
}

#[test]
fn rewrite_sends_signals_as_others_or_drops_them_as_dumb_init_does() {
    let sequence = [Signal::SIGUSR1, Signal::SIGUSR2];
    let ours = signals_received(
        &[
            BIN,
            "--init",
            "-x",
            "export",
            "-e",
            "env",
            "--rewrite",
            "USR1:0",
            "--rewrite",
            "USR2:QUIT",
            "--",
        ],
        &sequence,
    );
    let theirs = signals_received(&["dumb-init", "-r", "10:0", "-r", "12:3", "--"], &sequence);
    assert_eq!(ours, ["QUIT", "INT"]);
    assert_eq!(ours, theirs);
}

#[test]
fn a_rewritten_stop_signal_still_starts_the_stop_timer() {
    let mut t = Test::new();
    // The command ignores SIGQUIT: the stop timer must end it.
    t.script(
        "cmd",
        "#!/bin/sh\ntrap 'echo QUIT >> log' QUIT\ntouch ready\nwhile :; do sleep 0.02; done\n",
    )
    .dir("env")
    .dir("export");
    let cmd = t.p("cmd");
    t.args(&[
        "--init",
        "--rewrite",
        "TERM:QUIT",
        "--stop-timeout",
        "0.5",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        &cmd,
    ]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    send(&child, Signal::SIGTERM);
    t.finish(child, started)
        .status(137)
        .error_line(&["did not exit 0.5s after being told to stop: SIGKILL"]);
    assert_eq!(t.lines("log"), ["QUIT"]);
}

#[test]
fn remap_exit_turns_the_commands_status_as_tini_dash_e_does() {
    for (prefix, expected) in [
        (
            vec![
                BIN,
                "--init",
                "--remap-exit",
                "143:0",
                "-x",
                "export",
                "-e",
                "env",
                "--",
            ],
            0,
        ),
        (vec!["tini", "-e", "143", "--"], 0),
        (
            vec![
                BIN,
                "--init",
                "--remap-exit",
                "3:9",
                "-x",
                "export",
                "-e",
                "env",
                "--",
            ],
            143,
        ),
    ] {
        let t = Test::new();
        t.script("cmd", "#!/bin/sh\ntouch ready\nexec sleep 30\n")
            .dir("env")
            .dir("export");
        let mut command = t.external(prefix[0]);
        command.args(&prefix[1..]).arg(t.path("cmd"));
        let child = spawn(&mut command).expect("spawning");
        let started = Instant::now();
        t.wait_for("ready");
        send(&child, Signal::SIGTERM);
        t.finish_command(child, started, &command).status(expected);
    }
}

#[test]
fn the_harness_s_own_failures_are_never_remapped() {
    let mut t = Test::new();
    t.dir("env").dir("export");
    t.args(&[
        "--init",
        "--remap-exit",
        "127:0",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        "no-such-command",
    ]);
    t.run()
        .status(127)
        .error_line(&["no-such-command: command not found"]);
    // 126 (a command that cannot be executed) and 125 (a failed discovery) neither.
    let mut t = Test::new();
    t.dir("env").dir("export").file("notexec", "x");
    t.args(&[
        "--init",
        "--remap-exit",
        "126:0",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        "./notexec",
    ]);
    t.run()
        .status(126)
        .error_line(&["./notexec: permission denied"]);
    let mut t = Test::new();
    t.dir("export").script("env/BAD", "#!/bin/sh\nexit 3\n");
    t.args(&[
        "--init",
        "--remap-exit",
        "125:0",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        "true",
    ]);
    t.run()
        .status(125)
        .error_line(&["env/BAD: exited with status 3"]);
}

#[test]
fn a_command_that_cannot_be_started_again_at_a_watch_restart_is_not_remapped() {
    let mut t = Test::new();
    t.dir("export").file("env/X", "1\n").script(
        "app",
        "#!/bin/sh\ntrap 'exit 0' TERM\ntouch ready\nwhile :; do sleep 0.05; done\n",
    );
    t.args(&[
        "--init",
        "--watch",
        "0.1",
        "--remap-exit",
        "127:0",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        "./app",
    ]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    std::fs::remove_file(t.path("app")).expect("removing app");
    t.file("env/X", "2\n");
    t.finish(child, started)
        .status(127)
        .error_line(&["./app: command not found"]);
}

#[test]
fn options_that_need_init_and_bad_values_are_usage_errors() {
    for (args, words) in [
        (vec!["--drain", "1"], vec!["--drain needs --init"]),
        (
            vec!["--rewrite", "TERM:QUIT"],
            vec!["--rewrite needs --init"],
        ),
        (
            vec!["--remap-exit", "143:0"],
            vec!["--remap-exit needs --init"],
        ),
        (
            vec!["--init", "--rewrite", "KILL:TERM"],
            vec!["--rewrite KILL:TERM", "not a signal envharness forwards"],
        ),
        (
            vec!["--init", "--rewrite", "TERM:NOPE"],
            vec!["--rewrite TERM:NOPE", "NOPE is not a signal"],
        ),
        (
            vec!["--init", "--rewrite", "TERM"],
            vec!["--rewrite TERM", "FROM:TO"],
        ),
        (
            vec!["--init", "--remap-exit", "143:256"],
            vec!["--remap-exit 143:256", "256 is not an exit status"],
        ),
        (
            vec!["--init", "--remap-exit", "-1:0"],
            vec!["--remap-exit -1:0", "not an exit status"],
        ),
        (vec!["--init", "--drain", "-1"], vec!["--drain", "negative"]),
    ] {
        let mut t = Test::new();
        t.script("export/announce", "#!/bin/sh\ntouch announced\n")
            .dir("env");
        t.args(&args)
            .args(&["-x", "export", "-e", "env", "--", "true"]);
        t.run().status(125).error_line(&words);
        assert!(!t.exists("announced"), "{args:?}");
    }
}

#[test]
fn their_variables_are_ignored_without_init() {
    let mut t = Test::new();
    t.dir("env").dir("export");
    t.env("ENVHARNESS_DRAIN", "5")
        .env("ENVHARNESS_REWRITE", "TERM:QUIT")
        .env("ENVHARNESS_REMAP_EXIT", "3:0");
    t.args(&["-x", "export", "-e", "env", "--", "sh", "-c", "exit 3"]);
    t.run().status(3);
}

#[test]
fn their_variables_apply_under_init() {
    let mut t = Test::new();
    t.dir("env").dir("export");
    t.env("ENVHARNESS_REMAP_EXIT", "3:0 4:1");
    t.args(&[
        "--init", "-x", "export", "-e", "env", "--", "sh", "-c", "exit 3",
    ]);
    t.run().success();
    t.env("ENVHARNESS_REWRITE", "TERM");
    t.run()
        .status(125)
        .error_line(&["ENVHARNESS_REWRITE=TERM: FROM:TO"]);
}

#[test]
fn the_default_stop_timeout_is_5_s() {
    let mut t = Test::new();
    t.script(
        "cmd",
        "#!/bin/sh\ntrap '' TERM\ntouch ready\nwhile :; do sleep 0.02; done\n",
    )
    .dir("env")
    .dir("export");
    let cmd = t.p("cmd");
    t.args(&["--init", "-x", "export", "-e", "env", "--", &cmd]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    send(&child, Signal::SIGTERM);
    let signalled = Instant::now();
    t.finish(child, started)
        .status(137)
        .error_line(&["did not exit 5s after"]);
    let waited = signalled.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

#[test]
fn plan_shows_how_a_stop_goes() {
    let mut t = Test::new();
    t.dir("env")
        .dir("export")
        .script("export/prestop", "#!/bin/sh\n");
    t.args(&[
        "--init",
        "--drain",
        "2.5",
        "--rewrite",
        "TERM:QUIT",
        "--rewrite",
        "USR1:0",
        "--remap-exit",
        "143:0",
        "-x",
        "export",
        "-e",
        "env",
        "--plan",
        "--",
        "true",
    ]);
    t.run()
        .success()
        .stdout_has("prestop  run on a stop signal, before it is forwarded (--init)\n")
        .stdout_has("drain 2.5s after a stop signal before forwarding it\n")
        .stdout_has("rewrite SIGTERM to SIGQUIT\n")
        .stdout_has("rewrite SIGUSR1 to nothing (dropped)\n")
        .stdout_has("remap exit status 143 to 0\n");
}
