//! The script runner (docs/reference.md §3.4): timeouts, retries, the message for the last failure.

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
