//! The script runner (SPEC.md 3.4): timeouts, retries, the message for the last failure.

use std::time::Duration;

use crate::support::*;

fn env_run(t: &mut Test, extra: &[&str]) -> Run {
    t.dir("export");
    t.args(&["-x", "export", "-e", "env"])
        .args(extra)
        .args(&["--print"]);
    t.run()
}

#[test]
fn failing_script_reports_its_status() {
    let mut t = Test::new();
    t.script("env/DATABASE_URL", "#!/bin/sh\nexit 7\n");
    env_run(&mut t, &[])
        .status(125)
        .error_line(&["env/DATABASE_URL", "exited with status 7"])
        .stderr_lacks("tries");
}

#[test]
fn retries_run_a_failing_script_again_and_report_the_tries() {
    let mut t = Test::new();
    t.script(
        "env/DATABASE_URL",
        "#!/bin/sh\necho try >> \"$LOG\"\nexit 7\n",
    );
    let log = t.p("log");
    t.env("LOG", log);
    env_run(&mut t, &["--retries", "2", "--retry-interval", "0.05"])
        .status(125)
        .error_line(&["env/DATABASE_URL", "exited with status 7 (after 3 tries)"]);
    assert_eq!(t.read("log"), "try\ntry\ntry\n");
}

#[test]
fn a_script_that_succeeds_on_a_later_try_sets_its_value() {
    let mut t = Test::new();
    t.script(
        "env/FLAKY",
        "#!/bin/sh\necho x >> \"$LOG\"\n[ $(wc -l < \"$LOG\") -ge 3 ] || exit 1\necho finally\n",
    );
    let log = t.p("log");
    t.env("LOG", log).env("ENVHARNESS_RETRIES", "5");
    let run = env_run(&mut t, &["--retry-interval", "0.05"]);
    run.success().printed_is(&[("FLAKY", "finally")]);
    run.error_line(&["env/FLAKY", "exited with status 1", "trying again"]);
}

#[test]
fn retry_interval_separates_the_tries() {
    let mut t = Test::new();
    t.script("env/F", "#!/bin/sh\nexit 1\n");
    let run = env_run(&mut t, &["--retries", "2", "--retry-interval", "0.4"]);
    run.status(125).error_line(&["env/F", "(after 3 tries)"]);
    assert!(
        run.elapsed >= Duration::from_millis(800),
        "{:?}",
        run.elapsed
    );
}

#[test]
fn a_script_killed_by_a_signal_is_reported_with_the_signal() {
    let mut t = Test::new();
    t.script("env/K", "#!/bin/sh\nkill -KILL $$\n");
    env_run(&mut t, &[])
        .status(125)
        .error_line(&["env/K", "killed by SIGKILL"]);
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let mut t = Test::new();
    t.script(
        "env/SLOW",
        "#!/bin/sh\nsleep 30 &\necho $! > \"$PIDS\"\necho $$ >> \"$PIDS\"\nwait\n",
    );
    let pids = t.p("pids");
    t.env("PIDS", pids);
    let run = env_run(&mut t, &["--timeout", "0.3"]);
    run.status(125)
        .error_line(&["env/SLOW", "timed out after 0.3s"])
        .faster_than(Duration::from_secs(5));
    for pid in t.read("pids").lines() {
        let pid: i32 = pid.parse().unwrap();
        assert!(
            gone_within(pid, Duration::from_secs(3)),
            "process {pid} survived"
        );
    }
}

#[test]
fn a_script_that_ignores_sigterm_is_killed_two_seconds_later() {
    let mut t = Test::new();
    t.script("env/STUBBORN", "#!/bin/sh\ntrap '' TERM\nsleep 30\n");
    t.env("ENVHARNESS_TIMEOUT", "0.2");
    let run = env_run(&mut t, &[]);
    run.status(125)
        .error_line(&["env/STUBBORN", "timed out after 0.2s"])
        .faster_than(Duration::from_secs(6));
    assert!(run.elapsed >= Duration::from_secs(2), "{:?}", run.elapsed);
}

#[test]
fn timeouts_are_retried_too() {
    let mut t = Test::new();
    t.script("env/SLOW", "#!/bin/sh\necho x >> \"$LOG\"\nsleep 30\n");
    let log = t.p("log");
    t.env("LOG", log);
    env_run(
        &mut t,
        &[
            "--timeout",
            "0.1",
            "--retries",
            "1",
            "--retry-interval",
            "0",
        ],
    )
    .status(125)
    .error_line(&["env/SLOW", "timed out after 0.1s (after 2 tries)"]);
    assert_eq!(t.read("log"), "x\nx\n");
}

#[test]
fn scripts_start_with_no_blocked_signals_and_default_sigpipe() {
    // The harness blocks the stop signals and SIGCHLD for itself; a script that inherited that
    // mask could not be stopped by a timeout's SIGTERM.
    // The scripts read their own status with builtins only: dash blocks every signal around
    // the vfork of a child command, so a child reading the shell's status can see that mask.
    let mut t = Test::new();
    t.script(
        "env/MASK",
        "#!/bin/sh\nwhile read -r key value; do\n  case $key in SigBlk:) echo \"$value\" ;; esac\ndone < /proc/self/status\n",
    );
    t.script(
        "env/PIPE_IGNORED",
        "#!/bin/sh\nwhile read -r key value; do\n  case $key in SigIgn:) ign=$value ;; esac\ndone < /proc/self/status\n[ $(( 0x$ign & 0x1000 )) -eq 0 ] && echo no || echo yes\n",
    );
    env_run(&mut t, &[])
        .success()
        .printed_is(&[("MASK", "0000000000000000"), ("PIPE_IGNORED", "no")]);
}

#[test]
fn a_timed_out_binary_dies_from_sigterm_without_waiting_for_sigkill() {
    let mut t = Test::new();
    t.script("env/SLEEPER", "#!/bin/sh\nexec sleep 30\n");
    env_run(&mut t, &["--timeout", "0.2"])
        .status(125)
        .error_line(&["env/SLEEPER", "timed out after 0.2s"])
        .faster_than(Duration::from_millis(1500));
}

#[test]
fn after_a_timeout_the_rest_of_the_group_gets_its_two_seconds_before_sigkill() {
    // The script dies at the timeout's SIGTERM; a member of its group that ignores SIGTERM
    // may finish within the grace period...
    let mut t = Test::new();
    t.script(
        "env/SLOW",
        "#!/bin/sh\nsh -c 'trap \"\" TERM; sleep 1; touch survived' &\nsleep 30\n",
    );
    let run = env_run(&mut t, &["--timeout", "0.3"]);
    run.status(125)
        .error_line(&["env/SLOW", "timed out after 0.3s"])
        .faster_than(Duration::from_millis(2200));
    assert!(
        t.exists("survived"),
        "the group member was killed before its grace ran out"
    );

    // ...and one that does not finish is killed when it is over.
    let mut t = Test::new();
    t.script(
        "env/SLOW",
        "#!/bin/sh\nsh -c 'trap \"\" TERM; echo $$ > member; while :; do sleep 0.05; done' &\nsleep 30\n",
    );
    let run = env_run(&mut t, &["--timeout", "0.3"]);
    run.status(125).faster_than(Duration::from_secs(4));
    assert!(run.elapsed >= Duration::from_secs(2), "{:?}", run.elapsed);
    let member: i32 = t.read("member").trim().parse().unwrap();
    assert!(
        gone_within(member, Duration::from_secs(2)),
        "group member {member} survived"
    );
}
