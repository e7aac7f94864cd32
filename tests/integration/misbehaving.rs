//! Scripts and commands that misbehave (docs/reference.md §2, §3.4 and §4): stop signals during the
//! phases, background processes holding stdout open, files that cannot be executed, floods of
//! output, timeouts and retries. Every test bounds its time; a test that has to act while a script
//! runs waits for the script's ready file instead of sleeping.

use std::io::Read;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

/// A script that starts a grandchild in its process group, writes both pids, touches `ready`
/// and waits; it would touch `finished` if it ever got that far.
const SLOW: &str = "#!/bin/sh
echo $$ > script.pid
sleep 30 &
echo $! > grandchild.pid
touch ready
wait
touch finished
echo late
";

/// The script and its grandchild are gone (not even left running as orphans).
#[track_caller]
fn both_gone(t: &Test) {
    for file in ["script.pid", "grandchild.pid"] {
        let pid = t.pid(file);
        assert!(
            gone_within(pid, Duration::from_secs(3)),
            "{file} ({pid}) is still running"
        );
    }
}

// --- stop signals during the phases

fn stopped_during_the_environment_phase(signal: Signal) {
    let mut t = Test::new();
    t.script("env/SLOW", SLOW);
    t.script("env/ZZ_AFTER", "#!/bin/sh\ntouch after-ran\necho x\n");
    t.args(&["-e", "env", "--", "touch", "command-ran"]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    let signalled = Instant::now();
    send(&child, signal);
    let run = t.finish(child, started);
    run.status(128 + signal as i32)
        .error_line(&["stopped by", signal.as_str()]);
    // A group member that ignores the signal (a shell's background job ignores SIGINT and
    // SIGQUIT) gets SIGKILL after the 2-second grace; nothing may take longer.
    assert!(
        signalled.elapsed() < Duration::from_millis(3500),
        "took {:?} to stop after {signal}",
        signalled.elapsed()
    );
    both_gone(&t);
    assert!(
        !t.exists("finished"),
        "the script carried on after {signal}"
    );
    assert!(!t.exists("after-ran"), "a later script ran after {signal}");
    assert!(!t.exists("command-ran"), "the command ran after {signal}");
}

#[test]
fn sigterm_during_a_script_stops_its_group_and_exits_143() {
    stopped_during_the_environment_phase(Signal::SIGTERM);
}

// A shell's background jobs ignore SIGINT and SIGQUIT, so the grandchild survives the signal
// itself: the harness finishes off the group with SIGKILL after the grace period.
#[test]
fn sigint_during_a_script_exits_130_and_leaves_no_grandchild() {
    stopped_during_the_environment_phase(Signal::SIGINT);
}

#[test]
fn sighup_during_a_script_exits_129() {
    stopped_during_the_environment_phase(Signal::SIGHUP);
}

#[test]
fn sigquit_during_a_script_exits_131_and_leaves_no_grandchild() {
    stopped_during_the_environment_phase(Signal::SIGQUIT);
}

#[test]
fn sigterm_during_the_export_phase_runs_no_environment_script() {
    let mut t = Test::new();
    t.script("export/bootstrap", SLOW);
    t.script("env/NAME", "#!/bin/sh\ntouch env-ran\necho x\n");
    t.args(&["-x", "export", "-e", "env", "--", "touch", "command-ran"]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    t.terminate(child, started)
        .status(143)
        .error_line(&["stopped by SIGTERM"])
        .faster_than(Duration::from_secs(5));
    both_gone(&t);
    assert!(
        !t.exists("env-ran"),
        "an environment script ran after SIGTERM"
    );
    assert!(!t.exists("command-ran"), "the command ran after SIGTERM");
}

#[test]
fn a_script_that_ignores_the_stop_signal_is_killed_two_seconds_later() {
    let mut t = Test::new();
    t.script(
        "env/STUBBORN",
        "#!/bin/sh\ntrap '' TERM\necho $$ > script.pid\nsleep 30 &\necho $! > grandchild.pid\ntouch ready\nwait\n",
    );
    t.args(&["-e", "env", "--", "touch", "command-ran"]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    let signalled = Instant::now();
    t.terminate(child, started)
        .status(143)
        .error_line(&["stopped by SIGTERM"]);
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "SIGKILL should follow SIGTERM after 2s; the harness took {took:?}"
    );
    both_gone(&t);
    assert!(!t.exists("command-ran"));
}

#[test]
fn a_stop_signal_during_the_retry_interval_ends_the_run_at_once() {
    let mut t = Test::new();
    t.script(
        "env/FLAKY",
        "#!/bin/sh\necho try >> tries\ntouch ready\nexit 7\n",
    );
    t.args(&[
        "-e",
        "env",
        "--retries",
        "3",
        "--retry-interval",
        "30",
        "--",
        "touch",
        "command-ran",
    ]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    t.terminate(child, started)
        .status(143)
        .error_line(&["stopped by SIGTERM"])
        .faster_than(Duration::from_secs(5));
    assert_eq!(t.read("tries"), "try\n", "the script was tried again");
    assert!(!t.exists("command-ran"));
}

/// Waits (bounded) until the process is blocked in write(2) on its stderr.
fn blocked_writing_stderr(pid: u32) {
    let limit = Instant::now() + Duration::from_secs(10);
    loop {
        let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        let mut fields = syscall.split_whitespace();
        let number = fields.next().and_then(|n| n.parse::<i64>().ok());
        if number == Some(nix::libc::SYS_write) && fields.next() == Some("0x2") {
            return;
        }
        assert!(
            Instant::now() < limit,
            "envharness never blocked writing to stderr: {syscall}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_stop_signal_between_two_scripts_starts_nothing_more() {
    let mut t = Test::new();
    // The harness's stderr is a one-page pipe that A fills exactly, so the harness blocks on
    // its next log line (-v), after A and before B, until the test drains the pipe: the signal
    // comes while no script runs. B cannot be started at all: trying would fail it with 125.
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    fcntl(&write_end, FcntlArg::F_SETPIPE_SZ(4096)).expect("F_SETPIPE_SZ");
    let capacity = fcntl(&write_end, FcntlArg::F_GETPIPE_SZ).expect("F_GETPIPE_SZ");
    t.script(
        "env/A",
        "#!/bin/sh\nhead -c \"$CAPACITY\" /dev/zero >&2\ntouch ready\necho a\n",
    );
    t.script("env/B", NO_INTERPRETER);
    t.script("env/C", "#!/bin/sh\ntouch c-ran\necho c\n");
    t.env("CAPACITY", capacity.to_string()).args(&[
        "-v",
        "-e",
        "env",
        "--",
        "touch",
        "command-ran",
    ]);
    let mut command = t.command_with_ignored(&[]);
    command.stderr(write_end);
    let started = Instant::now();
    let child = spawn(&mut command).expect("spawning envharness");
    // Our copy of the write end goes, so reading the pipe ends when the harness is gone.
    drop(command);
    t.wait_for("ready");
    blocked_writing_stderr(child.id());
    send(&child, Signal::SIGTERM);
    let drain = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::fs::File::from(read_end)
            .read_to_end(&mut text)
            .expect("reading stderr");
        String::from_utf8_lossy(&text).into_owned()
    });
    let run = t.finish(child, started);
    let stderr = drain.join().expect("the drain thread");
    let stderr = stderr.trim_start_matches('\0');
    assert_eq!(
        run.code(),
        Some(143),
        "expected 143 (stopped by SIGTERM); stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("envharness: stopped by SIGTERM"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("env/B"),
        "B was started after SIGTERM:\n{stderr}"
    );
    assert!(!t.exists("c-ran"), "C ran after SIGTERM");
    assert!(!t.exists("command-ran"), "the command ran after SIGTERM");
}

#[test]
fn a_stop_signal_the_harness_was_started_ignoring_stays_ignored() {
    let mut t = Test::new();
    t.script("env/SLOW", SLOW);
    t.args(&["-e", "env", "--", "touch", "command-ran"]);
    let (child, started) = t.spawn_with_ignored(&[Signal::SIGINT]);
    t.wait_for("ready");
    // Both are pending before the harness reads either; a watched SIGINT (2) would be read
    // before SIGTERM (15) and give 130.
    send(&child, Signal::SIGINT);
    t.terminate(child, started)
        .status(143)
        .error_line(&["stopped by SIGTERM"])
        .stderr_lacks("SIGINT");
    both_gone(&t);
}

// --- the signal state scripts start with

/// The harness blocks these to read them from a signalfd; a script must not inherit that,
/// or a timeout's SIGTERM would never reach a program that does not unblock it itself.
#[track_caller]
fn starts_with_a_clean_signal_state(t: &Test, status_file: &str) {
    let status = t.read(status_file);
    let ours = std::fs::read_to_string("/proc/thread-self/status").expect("our own status");
    let watched = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
    ]
    .into_iter()
    .map(bit)
    .fold(0, |all, one| all | one);
    assert_eq!(
        mask(&status, "SigBlk") & watched,
        mask(&ours, "SigBlk") & watched,
        "the script started with the harness's blocked signals:\n{status}"
    );
    assert_eq!(
        mask(&status, "SigIgn") & bit(Signal::SIGPIPE),
        0,
        "the script started with SIGPIPE ignored:\n{status}"
    );
}

const SIGNAL_STATE: &str =
    "#!/bin/sh\nexec grep -E '^Sig(Blk|Ign):' /proc/self/status > \"$STATUS\"\n";

#[test]
fn environment_scripts_start_with_no_stop_signal_blocked() {
    let mut t = Test::new();
    t.script("env/STATE", SIGNAL_STATE);
    t.env("STATUS", t.p("status"))
        .args(&["-e", "env", "--print"]);
    t.run().success().printed_is(&[("STATE", "")]);
    starts_with_a_clean_signal_state(&t, "status");

    let mut t = Test::new();
    t.script("env/STATE", SIGNAL_STATE);
    t.script("env/OTHER", "#!/bin/sh\necho other\n");
    t.env("STATUS", t.p("status"))
        .args(&["-j", "2", "-e", "env", "--print"]);
    t.run().success();
    starts_with_a_clean_signal_state(&t, "status");
}

#[test]
fn export_scripts_start_with_no_stop_signal_blocked() {
    let mut t = Test::new();
    t.script("export/bootstrap", SIGNAL_STATE);
    t.dir("env");
    t.env("STATUS", t.p("status"))
        .args(&["-x", "export", "-e", "env", "--", "true"]);
    t.run().success();
    starts_with_a_clean_signal_state(&t, "status");
}

#[test]
fn a_program_a_script_execs_gets_the_timeout_sigterm() {
    let mut t = Test::new();
    t.script(
        "env/SLOW",
        "#!/bin/sh\necho $$ > script.pid\nexec sleep 30\n",
    );
    t.args(&["-e", "env", "--timeout", "0.3", "--print"]);
    t.run()
        .status(125)
        .error_line(&["env/SLOW", "timed out after 0.3s"])
        // SIGKILL would only come 2 s after SIGTERM.
        .faster_than(Duration::from_millis(1500));
    assert!(gone_within(t.pid("script.pid"), Duration::from_secs(1)));
}

#[test]
fn a_timed_out_script_gets_sigterm_first_and_can_clean_up() {
    let mut t = Test::new();
    t.script(
        "env/SLOW",
        "#!/bin/sh\ntrap 'echo cleaned > cleanup; exit 1' TERM\nsleep 30 &\nwait\n",
    );
    t.args(&["-e", "env", "--timeout", "0.3", "--print"]);
    t.run()
        .status(125)
        .error_line(&["env/SLOW", "timed out after 0.3s"])
        .faster_than(Duration::from_millis(1500));
    assert_eq!(t.read("cleanup"), "cleaned\n");
}

// --- a background process holding stdout open

#[test]
fn a_background_process_holding_stdout_does_not_hang_the_harness() {
    let mut t = Test::new();
    t.script(
        "env/STUCK",
        "#!/bin/sh\nsleep 30 &\necho $! > background.pid\necho value\n",
    );
    t.file("env/ZZ_LATER", "later");
    t.args(&["-e", "env", "--print"]);
    let run = t.run();
    let background = t.pid("background.pid");
    let left_alone = alive(background);
    let _ = kill(Pid::from_raw(background), Signal::SIGKILL);
    run.success()
        .printed_is(&[("STUCK", "value"), ("ZZ_LATER", "later")])
        .faster_than(Duration::from_secs(1));
    let warnings = run.stderr_lines_with("kept stdout open");
    assert_eq!(warnings.len(), 1, "one warning expected:\n{}", run.stderr);
    assert!(
        warnings[0].starts_with("envharness: ") && warnings[0].contains("env/STUCK"),
        "the warning names the script: {}",
        warnings[0]
    );
    assert!(left_alone, "the background process was killed");
}

#[test]
fn output_written_before_the_script_exits_is_kept_when_a_background_process_holds_stdout() {
    let mut t = Test::new();
    t.script(
        "env/STUCK",
        "#!/bin/sh\nprintf 'first\\n'\n(sleep 30; echo too-late) &\necho $! > background.pid\nprintf 'second\\n'\n",
    );
    t.args(&["-e", "env", "--print"]);
    let run = t.run();
    let _ = kill(Pid::from_raw(t.pid("background.pid")), Signal::SIGKILL);
    run.success()
        .stdout_is("STUCK='first\nsecond'\n")
        .stderr_has("kept stdout open")
        .faster_than(Duration::from_secs(1));
}

// --- files that cannot be executed: scripts (125), the command (126, 127)

#[test]
fn a_script_without_a_shebang_line_is_not_run_through_sh() {
    let mut t = Test::new();
    t.script("env/PLAIN", NO_SHEBANG);
    t.args(&["-e", "env", "--", "touch", "command-ran"]);
    t.run()
        .status(125)
        .error_line(&["env/PLAIN", "not a script (no #! line)"]);
    assert!(!t.exists("ran"), "the script was run through a shell");
    assert!(!t.exists("command-ran"));
}

#[test]
fn a_script_with_windows_line_endings_says_so() {
    let mut t = Test::new();
    t.script("env/CRLF", CRLF);
    t.args(&["-e", "env", "--print"]);
    t.run()
        .status(125)
        .error_line(&["env/CRLF", "Windows line endings"])
        .stdout_is("");
}

#[test]
fn a_script_whose_interpreter_is_missing_names_the_interpreter() {
    let mut t = Test::new();
    t.script("env/ORPHAN", NO_INTERPRETER);
    t.args(&["-e", "env", "--print"]);
    t.run()
        .status(125)
        .error_line(&["env/ORPHAN", "/nonexistent/sh"]);
}

#[test]
fn an_export_script_without_a_shebang_line_fails_the_same_way() {
    let mut t = Test::new();
    t.script("export/register", NO_SHEBANG);
    t.dir("env");
    t.args(&["-x", "export", "-e", "env", "--", "touch", "command-ran"]);
    t.run()
        .status(125)
        .error_line(&["export/register", "not a script (no #! line)"]);
    assert!(!t.exists("ran"));
    assert!(!t.exists("command-ran"));
}

#[test]
fn exec_format_errors_are_not_retried() {
    let mut t = Test::new();
    t.script("env/PLAIN", NO_SHEBANG);
    t.args(&[
        "-e",
        "env",
        "--retries",
        "3",
        "--retry-interval",
        "5",
        "--print",
    ]);
    t.run()
        .status(125)
        .error_line(&["env/PLAIN", "not a script (no #! line)"])
        .stderr_lacks("tries")
        .stderr_lacks("trying again")
        .faster_than(Duration::from_secs(4));
}

#[test]
fn a_command_without_a_shebang_line_exits_126_and_is_not_run_through_sh() {
    let mut t = Test::new();
    t.script("plain-command", NO_SHEBANG);
    t.args(&["--", "./plain-command"]);
    t.run()
        .status(126)
        .error_line(&["./plain-command", "not a script (no #! line)"]);
    assert!(!t.exists("ran"), "the command was run through a shell");
}

#[test]
fn a_command_found_in_path_without_a_shebang_line_exits_126() {
    let mut t = Test::new();
    t.script("bin/plain-command", NO_SHEBANG);
    let path = format!("{}:{PATH}", t.p("bin"));
    t.env("PATH", path).args(&["--", "plain-command"]);
    t.run()
        .status(126)
        .error_line(&["plain-command", "not a script (no #! line)"]);
    assert!(!t.exists("ran"));
}

#[test]
fn a_command_with_windows_line_endings_exits_126_and_says_so() {
    let mut t = Test::new();
    t.script("crlf-command", CRLF);
    t.args(&["--", "./crlf-command"]);
    t.run()
        .status(126)
        .error_line(&["./crlf-command", "Windows line endings"]);
}

#[test]
fn a_command_whose_interpreter_is_missing_exits_126_not_127() {
    let mut t = Test::new();
    t.script("orphan-command", NO_INTERPRETER);
    t.args(&["--", "./orphan-command"]);
    t.run()
        .status(126)
        .error_line(&["./orphan-command", "/nonexistent/sh"]);
}

#[test]
fn a_command_that_is_not_executable_exits_126_permission_denied() {
    let mut t = Test::new();
    t.file("not-executable", "#!/bin/sh\ntouch ran\n");
    t.args(&["--", "./not-executable"]);
    t.run()
        .status(126)
        .error_line(&["./not-executable", "permission denied"]);
    assert!(!t.exists("ran"));
}

#[test]
fn a_command_that_is_not_found_exits_127() {
    let mut t = Test::new();
    t.args(&["--", "no-such-command-anywhere", "arg"]);
    t.run()
        .status(127)
        .error_line(&["no-such-command-anywhere", "command not found"]);

    let mut t = Test::new();
    t.args(&["--", "./no-such-file"]);
    t.run()
        .status(127)
        .error_line(&["./no-such-file", "command not found"]);
}

// --- floods of output

#[test]
fn a_script_that_never_stops_printing_is_stopped_at_the_value_limit() {
    let mut t = Test::new();
    t.script("env/FLOOD", "#!/bin/sh\necho $$ > script.pid\nexec yes\n");
    t.args(&["-e", "env", "--", "touch", "command-ran"]);
    // A harness that kept reading would pass this limit within a second or two and fail
    // some other way than with 125.
    let run = t.run_command(t.command_with_memory_limit(512 << 20));
    run.status(125)
        .error_line(&["env/FLOOD", "131072"])
        .faster_than(Duration::from_secs(3));
    assert!(gone_within(t.pid("script.pid"), Duration::from_secs(2)));
    assert!(!t.exists("command-ran"));
}

#[test]
fn a_dotenv_script_that_never_stops_printing_is_stopped_too() {
    let mut t = Test::new();
    t.script("env/flood.env", "#!/bin/sh\nexec yes A=b\n");
    t.args(&["-e", "env", "--print"]);
    let run = t.run_command(t.command_with_memory_limit(512 << 20));
    run.status(125)
        .error_line(&["env/flood.env", "2097152"])
        .faster_than(Duration::from_secs(3))
        .stdout_is("");
}

// --- timeouts, signals and retries

#[test]
fn a_script_past_its_timeout_is_stopped_with_its_group() {
    let mut t = Test::new();
    t.script("env/SLOW", SLOW);
    t.args(&[
        "-e",
        "env",
        "--timeout",
        "0.3",
        "--",
        "touch",
        "command-ran",
    ]);
    t.run()
        .status(125)
        .error_line(&["env/SLOW", "timed out after 0.3s"])
        .slower_than(Duration::from_millis(300))
        .faster_than(Duration::from_secs(2));
    both_gone(&t);
    assert!(!t.exists("finished"));
    assert!(!t.exists("command-ran"));
}

#[test]
fn the_timeout_comes_from_envharness_timeout_too() {
    let mut t = Test::new();
    t.script("env/SLOW", SLOW);
    t.env("ENVHARNESS_TIMEOUT", "0.25")
        .args(&["-e", "env", "--print"]);
    t.run()
        .status(125)
        .error_line(&["env/SLOW", "timed out after 0.25s"])
        .faster_than(Duration::from_secs(2));
    both_gone(&t);
}

#[test]
fn the_timeout_is_for_one_run_of_one_script() {
    let mut t = Test::new();
    for name in ["A", "B", "C"] {
        t.script(
            &format!("env/{name}"),
            &format!("#!/bin/sh\nsleep 0.2\necho {name}\n"),
        );
    }
    t.args(&["-e", "env", "--timeout", "0.5", "--print"]);
    t.run()
        .success()
        .printed_is(&[("A", "A"), ("B", "B"), ("C", "C")]);
}

#[test]
fn a_script_ignoring_sigterm_after_its_timeout_is_killed_two_seconds_later() {
    let mut t = Test::new();
    t.script(
        "env/STUBBORN",
        "#!/bin/sh\ntrap '' TERM\necho $$ > script.pid\nsleep 30 &\necho $! > grandchild.pid\nwait\n",
    );
    t.args(&["-e", "env", "--timeout", "0.2", "--print"]);
    t.run()
        .status(125)
        .error_line(&["env/STUBBORN", "timed out after 0.2s"])
        .slower_than(Duration::from_millis(2150))
        .faster_than(Duration::from_secs(4));
    both_gone(&t);
}

#[test]
fn a_script_killed_by_a_signal_has_failed() {
    let mut t = Test::new();
    t.script("env/KILLED", "#!/bin/sh\nkill -KILL $$\necho never\n");
    t.args(&["-e", "env", "--print"]);
    t.run()
        .status(125)
        .error_line(&["env/KILLED", "killed by SIGKILL"])
        .stderr_lacks("tries");
}

/// Fails with status 7 until it has been tried `succeed_on` times (never, for 0).
fn counting_script(succeed_on: u32) -> String {
    format!(
        "#!/bin/sh
n=$(cat count 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > count
if [ {succeed_on} -eq 0 ] || [ $n -lt {succeed_on} ]; then
  echo \"try $n failed\" >&2
  exit 7
fi
echo \"ok on try $n\"
"
    )
}

#[test]
fn a_failing_script_is_retried_until_it_succeeds() {
    let mut t = Test::new();
    t.script("env/FLAKY", &counting_script(3));
    t.args(&[
        "-e",
        "env",
        "--retries",
        "2",
        "--retry-interval",
        "0.2",
        "--print",
    ]);
    let run = t.run();
    run.success()
        .printed_is(&[("FLAKY", "ok on try 3")])
        .error_line(&["env/FLAKY", "exited with status 7", "try 2 of 3"])
        .error_line(&["env/FLAKY", "exited with status 7", "try 3 of 3"])
        .slower_than(Duration::from_millis(400))
        .faster_than(Duration::from_secs(3));
    assert_eq!(t.read("count"), "3\n");
}

#[test]
fn the_last_failure_is_reported_with_the_number_of_tries() {
    let mut t = Test::new();
    t.script("env/BROKEN", &counting_script(0));
    t.args(&[
        "-e",
        "env",
        "--retries",
        "2",
        "--retry-interval",
        "0.05",
        "--",
        "touch",
        "command-ran",
    ]);
    t.run()
        .status(125)
        .error_line(&["env/BROKEN", "exited with status 7 (after 3 tries)"])
        .faster_than(Duration::from_secs(3));
    assert_eq!(t.read("count"), "3\n");
    assert!(!t.exists("command-ran"));
}

#[test]
fn retries_and_their_interval_come_from_the_environment_too() {
    let mut t = Test::new();
    t.script("env/BROKEN", &counting_script(0));
    t.env("ENVHARNESS_RETRIES", "1")
        .env("ENVHARNESS_RETRY_INTERVAL", "0.05")
        .args(&["-e", "env", "--print"]);
    t.run()
        .status(125)
        .error_line(&["env/BROKEN", "exited with status 7 (after 2 tries)"])
        .faster_than(Duration::from_secs(3));
    assert_eq!(t.read("count"), "2\n");
}

#[test]
fn a_flag_beats_its_variable_for_retries() {
    let mut t = Test::new();
    t.script("env/BROKEN", &counting_script(0));
    t.env("ENVHARNESS_RETRIES", "5")
        .env("ENVHARNESS_RETRY_INTERVAL", "5")
        .args(&[
            "-e",
            "env",
            "--retries",
            "1",
            "--retry-interval",
            "0.05",
            "--print",
        ]);
    t.run()
        .status(125)
        .error_line(&["env/BROKEN", "exited with status 7 (after 2 tries)"])
        .faster_than(Duration::from_secs(3));
}

#[test]
fn a_timed_out_script_is_retried_and_reported_with_its_tries() {
    let mut t = Test::new();
    t.script("env/SLOW", "#!/bin/sh\necho try >> tries\nexec sleep 30\n");
    t.args(&[
        "-e",
        "env",
        "--timeout",
        "0.2",
        "--retries",
        "1",
        "--retry-interval",
        "0.05",
        "--print",
    ]);
    t.run()
        .status(125)
        .error_line(&["env/SLOW", "timed out after 0.2s (after 2 tries)"])
        .faster_than(Duration::from_secs(3));
    assert_eq!(t.read("tries"), "try\ntry\n");
}

#[test]
fn a_failing_export_script_is_retried_too() {
    let mut t = Test::new();
    t.script("export/register", &counting_script(2));
    t.dir("env");
    t.args(&[
        "-x",
        "export",
        "-e",
        "env",
        "--retries",
        "1",
        "--retry-interval",
        "0.05",
        "--",
        "touch",
        "command-ran",
    ]);
    t.run()
        .success()
        .error_line(&["export/register", "exited with status 7", "try 2 of 2"]);
    assert_eq!(t.read("count"), "2\n");
    assert!(t.exists("command-ran"));
}
