//! `--init` (docs/reference.md §6), checked the way tini's and dumb-init's suites check themselves:
//! real children that record what they receive, orphans, zombies, PID 1 in a namespace.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

fn init(t: &mut Test, extra: &[&str], command: &str) {
    t.dir("env").dir("export");
    t.args(&["--init", "-x", "export", "-e", "env"])
        .args(extra)
        .args(&["--", "/bin/sh", "-c", command]);
}

/// A child that records every forwarded signal, one line each, and exits on TERM. Its sleep
/// starts before the traps, so no SIGTERM is lost in a sleep that has not exec'd yet.
const RECORDER: &str = r#"
sleep 1000 & sleeper=$!
for s in HUP INT QUIT USR1 USR2 WINCH CONT; do trap "echo $s >> record" $s; done
trap 'echo TERM >> record; kill $sleeper; exit 0' TERM
touch ready
while kill -0 $sleeper 2>/dev/null; do wait $sleeper; done
"#;

#[test]
fn every_forwarded_signal_reaches_the_command() {
    let mut t = Test::new();
    init(&mut t, &[], RECORDER);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    for (sig, name) in [
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGINT, "INT"),
        (Signal::SIGQUIT, "QUIT"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
        (Signal::SIGWINCH, "WINCH"),
        (Signal::SIGCONT, "CONT"),
        (Signal::SIGTERM, "TERM"),
    ] {
        send(&child, sig);
        t.wait_for_line("record", name);
    }
    t.finish(child, started).success();
}

#[test]
fn exit_status_and_death_by_signal_are_propagated() {
    let mut t = Test::new();
    init(&mut t, &[], "exit 3");
    t.run().status(3);
    let mut t = Test::new();
    init(&mut t, &[], "kill -USR1 $$");
    t.run().status(128 + 10);
}

#[test]
fn sigterm_without_a_handler_ends_the_command_and_gives_143() {
    let mut t = Test::new();
    init(&mut t, &[], "touch ready; exec sleep 30");
    let (child, started) = t.spawn();
    t.wait_for("ready");
    t.terminate(child, started)
        .status(143)
        .faster_than(Duration::from_secs(5));
}

#[test]
fn orphans_are_adopted_and_reaped_while_the_command_runs() {
    // The command double-forks short-lived orphans; as a subreaper the harness adopts and reaps
    // them (a zombie would keep its /proc entry).
    let mut t = Test::new();
    init(
        &mut t,
        &[],
        "for i in 1 2 3; do (sleep 1 & echo $! >> orphans); done; touch ready; sleep 3",
    );
    let (child, started) = t.spawn();
    t.wait_for("ready");
    let harness = child.id().to_string();
    let orphans: Vec<i32> = t
        .read("orphans")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(orphans.len(), 3);
    for pid in &orphans {
        // They sleep for a second: still there, as orphans of the command.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_else(|_| panic!("orphan {pid} is already gone"));
        let ppid = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap();
        assert_eq!(ppid, harness, "orphan {pid} was not adopted by the harness");
    }
    for pid in &orphans {
        let limit = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                Instant::now() < limit,
                "orphan {pid} was never reaped (zombie?)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    t.terminate(child, started).status(143);
}

#[test]
fn a_command_that_ignores_sigterm_is_killed_after_the_stop_timeout() {
    let mut t = Test::new();
    init(
        &mut t,
        &["--stop-timeout", "0.5"],
        "trap '' TERM; touch ready; while :; do sleep 0.05; done",
    );
    let (child, started) = t.spawn();
    t.wait_for("ready");
    let signalled = Instant::now();
    let run = t.terminate(child, started);
    run.status(128 + 9).error_line(&["SIGKILL"]);
    let took = signalled.elapsed();
    assert!(took >= Duration::from_millis(500), "killed after {took:?}");
    assert!(took < Duration::from_secs(5), "killed after {took:?}");
}

#[test]
fn stop_timeout_variable_is_honoured() {
    let mut t = Test::new();
    init(
        &mut t,
        &[],
        "trap '' INT; touch ready; while :; do sleep 0.05; done",
    );
    t.env("ENVHARNESS_STOP_TIMEOUT", "0.3");
    let (child, started) = t.spawn();
    t.wait_for("ready");
    send(&child, Signal::SIGINT);
    t.finish(child, started)
        .status(137)
        .faster_than(Duration::from_secs(5));
}

/// A command whose background child records SIGUSR1.
const WITH_GRANDCHILD: &str = r#"
sh -c 'trap "echo grandchild >> record" USR1; touch gc-ready; while :; do sleep 0.05; done' &
echo $! > grandchild
trap 'echo child >> record' USR1
trap 'kill $(cat grandchild); exit 0' TERM
while [ ! -e gc-ready ]; do sleep 0.01; done
touch ready
while :; do sleep 0.05; done
"#;

#[test]
fn group_sends_signals_to_the_whole_process_group() {
    let mut t = Test::new();
    init(&mut t, &["--group"], WITH_GRANDCHILD);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    send(&child, Signal::SIGUSR1);
    t.wait_for_line("record", "grandchild");
    t.wait_for_line("record", "child");
    t.terminate(child, started).success();
}

#[test]
fn without_group_only_the_command_gets_the_signal() {
    let mut t = Test::new();
    t.env("ENVHARNESS_GROUP", "0");
    init(&mut t, &[], WITH_GRANDCHILD);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    send(&child, Signal::SIGUSR1);
    t.wait_for_line("record", "child");
    t.terminate(child, started).success();
    assert_eq!(t.read("record"), "child\n");
}

#[test]
fn orphans_get_sigterm_and_time_for_their_cleanup_then_teardown_runs() {
    let mut t = Test::new();
    t.script(
        "export/teardown",
        "#!/bin/sh\necho \"teardown $DB_URL\" >> log\n",
    );
    t.file("env/DB_URL", "postgres://db/app");
    t.args(&["--init", "-x", "export", "-e", "env", "--", "/bin/sh", "-c"])
        .args(&[r#"
sh -c 'trap "sleep 0.3; echo orphan-cleanup >> log; exit 0" TERM; touch orphan-ready; while :; do sleep 0.05; done' &
while [ ! -e orphan-ready ]; do sleep 0.01; done
echo command-exits >> log
exit 4
"#]);
    t.run().status(4).faster_than(Duration::from_secs(5));
    assert_eq!(
        t.read("log"),
        "command-exits\norphan-cleanup\nteardown postgres://db/app\n"
    );
}

#[test]
fn an_orphan_that_ignores_sigterm_is_killed_after_the_stop_timeout() {
    let mut t = Test::new();
    init(
        &mut t,
        &["--stop-timeout", "0.5"],
        "sh -c 'trap \"\" TERM; echo $$ > orphan; while :; do sleep 0.05; done' & while [ ! -e orphan ]; do sleep 0.01; done",
    );
    let run = t.run();
    run.success();
    assert!(
        run.elapsed >= Duration::from_millis(500),
        "{:?}",
        run.elapsed
    );
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
    let orphan: i32 = t.read("orphan").trim().parse().unwrap();
    assert!(
        gone_within(orphan, Duration::from_secs(2)),
        "orphan {orphan} survived"
    );
}

#[test]
fn a_failing_teardown_is_logged_and_the_status_stays_the_commands() {
    let mut t = Test::new();
    t.script("export/teardown", "#!/bin/sh\nexit 5\n");
    init(&mut t, &[], "exit 0");
    t.run()
        .success()
        .error_line(&["teardown", "export/teardown", "exited with status 5"]);
}

#[test]
fn command_not_found_and_not_executable_under_init() {
    let mut t = Test::new();
    t.dir("env").dir("export");
    t.args(&[
        "--init",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        "no-such-command",
    ]);
    t.run()
        .status(127)
        .error_line(&["no-such-command", "command not found"]);
    let mut t = Test::new();
    t.script("noshebang", "touch ran\n")
        .dir("env")
        .dir("export");
    t.args(&["--init", "-x", "export", "-e", "env", "--", "./noshebang"]);
    t.run()
        .status(126)
        .error_line(&["./noshebang", "no #! line"]);
    assert!(!t.exists("ran"));
}

#[test]
fn a_command_that_cannot_be_executed_under_init_is_reported_once_and_teardown_runs() {
    // The child reports its own failed exec; the service was announced, so it is withdrawn.
    let mut t = Test::new();
    t.script("tool", "#!/no/such/interpreter\n")
        .dir("env")
        .script("export/teardown", "#!/bin/sh\ntouch torn-down\n");
    t.args(&["--init", "-x", "export", "-e", "env", "--", "./tool"]);
    let run = t.run();
    run.status(126)
        .error_line(&["./tool", "/no/such/interpreter"]);
    assert_eq!(run.stderr_lines_with("./tool").len(), 1, "{}", run.stderr);
    assert!(t.exists("torn-down"), "teardown did not run");
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat; here, after "pid (comm)", 12 and 13.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_supervisor_uses_no_cpu() {
    let mut t = Test::new();
    init(&mut t, &[], "touch ready; exec sleep 30");
    let (child, started) = t.spawn();
    t.wait_for("ready");
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_millis(1000));
    let after = cpu_ticks(child.id());
    t.terminate(child, started).status(143);
    assert!(
        after - before <= 1,
        "{} clock ticks in one idle second",
        after - before
    );
}

#[test]
fn as_pid_1_in_a_pid_namespace() {
    if !namespaces_permitted() {
        return;
    }
    let t = Test::new();
    t.dir("env").dir("export");
    let mut command = t.external("unshare");
    command
        .args(["--fork", "--pid", "--mount-proc", BIN, "--init"])
        .args(["-x", "export", "-e", "env", "--", "/bin/sh", "-c"])
        .arg(
            "echo \"pid1=$(cat /proc/1/comm)\"; \
             for i in 1 2 3; do (sleep 0.1 &); done; sleep 0.5; \
             echo \"zombies=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)\"; exit 6",
        );
    t.run_command(command)
        .status(6)
        .stdout_is("pid1=envharness\nzombies=0\n");
}

#[test]
fn the_command_gets_the_terminal_foreground() {
    // `script` gives the harness a pseudo-terminal as its controlling terminal.
    if output(std::process::Command::new("script").arg("--version")).is_err() {
        unavailable("ENVHARNESS_TEST_SYSTEM", "script(1) is not installed");
        return;
    }
    let t = Test::new();
    t.dir("env").dir("export");
    // Fields 5 and 8 of stat: the process group and the terminal's foreground group.
    t.script(
        "probe",
        "#!/bin/sh\nset -- $(cut -d' ' -f5,8 /proc/$$/stat)\n[ \"$1\" = \"$2\" ] && echo FOREGROUND || echo \"pgrp=$1 tpgid=$2\"\n",
    );
    let inner = format!(
        "{BIN} --init -x export -e env -- ./probe > {}",
        t.p("result")
    );
    let mut command = t.external("script");
    command.args(["-qec", &inner, "/dev/null"]);
    t.run_command(command).success();
    assert_eq!(t.read("result"), "FOREGROUND\n");
}

#[test]
fn a_signal_that_arrives_before_the_command_starts_is_delivered_to_it() {
    // SIGUSR1 reaches the harness while an environment script still runs; under --init it is
    // kept pending and forwarded as soon as the command runs. The command has no handler for
    // it (it could not install one before the signal arrives), so it dies of it: 128+10.
    let mut t = Test::new();
    t.script(
        "env/SLOW",
        "#!/bin/sh\ntouch slow-ready\nwhile [ ! -e go ]; do sleep 0.01; done\necho done\n",
    );
    t.dir("export");
    t.args(&[
        "--init", "-x", "export", "-e", "env", "--", "/bin/sh", "-c", "sleep 10",
    ]);
    let (child, started) = t.spawn();
    t.wait_for("slow-ready");
    send(&child, Signal::SIGUSR1);
    std::fs::write(t.path("go"), "").unwrap();
    t.finish(child, started)
        .status(128 + 10)
        .faster_than(Duration::from_secs(5));
}

#[test]
fn envharness_init_variable_turns_supervision_on() {
    // Under --init the command is the harness's child; without it, the harness has become it.
    for (value, supervised) in [("1", true), ("no", false)] {
        let mut t = Test::new();
        t.dir("env").dir("export");
        t.env("ENVHARNESS_INIT", value).args(&[
            "-x",
            "export",
            "-e",
            "env",
            "--",
            "/bin/sh",
            "-c",
            "echo \"pid $$ parent $PPID\"",
        ]);
        let (child, started) = t.spawn();
        let harness = child.id();
        let run = t.finish(child, started);
        run.success();
        let seen = run.stdout();
        if supervised {
            assert!(seen.ends_with(&format!("parent {harness}\n")), "{seen}");
        } else {
            assert!(seen.starts_with(&format!("pid {harness} parent")), "{seen}");
        }
    }
}

fn process_state(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

fn wait_for_state(pid: i32, wanted: impl Fn(&str) -> bool, what: &str) {
    let limit = Instant::now() + Duration::from_secs(10);
    loop {
        let state = process_state(pid).unwrap_or_default();
        if wanted(&state) {
            return;
        }
        assert!(
            Instant::now() < limit,
            "process {pid} never became {what} (state {state})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn with_a_terminal_ctrl_z_stops_envharness_too_and_continuing_it_continues_the_command() {
    // Ctrl-Z stops the command's process group; the shell that started envharness only gets
    // its prompt back if envharness stops as well. `script` provides the terminal.
    let t = Test::new();
    t.dir("env").dir("export");
    let inner = format!(
        "{BIN} --init -x export -e env -- /bin/sh -c 'echo $$ $PPID > pids; touch ready; while :; do sleep 0.05; done'"
    );
    let mut command = t.external("script");
    command.args(["-qec", &inner, "/dev/null"]);
    let started = Instant::now();
    let script = spawn(&mut command).expect("running script(1)");
    t.wait_for("ready");
    let pids: Vec<i32> = t
        .read("pids")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (command_pid, harness) = (pids[0], pids[1]);

    kill(Pid::from_raw(command_pid), Signal::SIGTSTP).expect("Ctrl-Z");
    wait_for_state(command_pid, |s| s == "T", "stopped");
    wait_for_state(harness, |s| s == "T", "stopped like its command");

    kill(Pid::from_raw(harness), Signal::SIGCONT).expect("fg");
    wait_for_state(harness, |s| s != "T", "running again");
    wait_for_state(command_pid, |s| s != "T", "continued by envharness");

    kill(Pid::from_raw(harness), Signal::SIGTERM).expect("stopping envharness");
    t.finish(script, started)
        .status(143)
        .faster_than(Duration::from_secs(10));
}

#[test]
fn a_stop_signal_during_the_phases_under_init_starts_no_command() {
    let mut t = Test::new();
    t.script(
        "env/SLOW",
        "#!/bin/sh\necho $$ > slow.pid\ntouch slow.ready\nexec sleep 30\n",
    );
    t.dir("export");
    t.args(&[
        "--init",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        "touch",
        "command-ran",
    ]);
    let (child, started) = t.spawn();
    t.wait_for("slow.ready");
    t.terminate(child, started)
        .status(143)
        .error_line(&["stopped by SIGTERM"])
        .faster_than(Duration::from_secs(3));
    assert!(gone_within(t.pid("slow.pid"), Duration::from_secs(2)));
    assert!(!t.exists("command-ran"));
}

#[test]
fn a_broken_teardown_under_init_is_logged_and_the_status_stays_the_commands() {
    let mut t = Test::new();
    t.file("export/teardown", "#!/bin/sh\ntouch torn-down\n");
    t.dir("env");
    init(&mut t, &[], "exit 4");
    t.run().status(4).error_line(&[
        "teardown failed",
        "export/teardown",
        "without exec permission",
    ]);
    assert!(!t.exists("torn-down"));
}
