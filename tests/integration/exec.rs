//! Exec (docs/reference.md §4): PATH of the final environment, arguments exactly as given, 126/127,
//! no leaked descriptors, and the signal state the harness was started with.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

use crate::support::*;

fn with_empty_dirs(t: &mut Test) -> &mut Test {
    t.dir("env").dir("export");
    t.args(&["-x", "export", "-e", "env", "--"])
}

#[test]
fn arguments_reach_the_command_exactly_as_given() {
    let mut t = Test::new();
    with_empty_dirs(&mut t).args(&[
        "/bin/sh",
        "-c",
        "for a; do printf '[%s]' \"$a\"; done",
        "argv0",
        "two words",
        "",
        "*",
        "$HOME",
        "--",
        "-e",
    ]);
    t.run()
        .success()
        .stdout_is("[two words][][*][$HOME][--][-e]");
}

#[test]
fn the_command_gets_the_final_environment() {
    let mut t = Test::new();
    t.file("env/DB_URL", "postgres://db/app");
    t.dir("export");
    t.env("KEPT", "from-harness").args(&[
        "-x",
        "export",
        "-e",
        "env",
        "--",
        "/bin/sh",
        "-c",
        "echo \"$DB_URL $KEPT\"",
    ]);
    t.run()
        .success()
        .stdout_is("postgres://db/app from-harness\n");
}

#[test]
fn command_is_looked_up_in_the_path_of_the_final_environment() {
    let mut t = Test::new();
    t.script("tools/mytool", "#!/bin/sh\necho \"mytool ran with $1\"\n");
    let path = format!("{}:{PATH}", t.p("tools"));
    t.file("env/PATH", path);
    with_empty_dirs(&mut t).args(&["mytool", "x"]);
    t.run().success().stdout_is("mytool ran with x\n");
}

/// Exec mode and `--init` mode must both hand the command the harness's own start state.
const MODES: [&[&str]; 2] = [&[], &["--init"]];

fn fd_list() -> [&'static str; 2] {
    ["/bin/ls", "/proc/self/fd"]
}

#[test]
fn the_command_gets_the_descriptors_the_harness_was_given_and_no_others() {
    // The harness opens a signalfd, pipes and directories; none may survive the exec.
    for flags in MODES {
        let (direct, through) = direct_and_through_harness(flags, &fd_list(), None);
        let listed = String::from_utf8_lossy(&through);
        assert_eq!(listed, String::from_utf8_lossy(&direct), "{flags:?}");
    }

    fn give_fd_7() -> std::io::Result<()> {
        // SAFETY: dup2 is async-signal-safe and fd 2 is open.
        match unsafe { nix::libc::dup2(2, 7) } {
            7 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }
    for flags in MODES {
        let (direct, through) = direct_and_through_harness(flags, &fd_list(), Some(give_fd_7));
        let listed = String::from_utf8_lossy(&through);
        assert!(listed.lines().any(|fd| fd == "7"), "{flags:?}: {listed}");
        assert_eq!(listed, String::from_utf8_lossy(&direct), "{flags:?}");
    }
}

fn signal_state() -> [&'static str; 3] {
    ["/bin/grep", "-E", "^Sig(Blk|Ign)"]
}

#[test]
fn a_closed_stdin_or_stdout_is_dev_null_for_the_harness_and_the_command() {
    // envharness does what the Rust runtime's start would (its main is its own): otherwise the
    // first descriptor the harness opens takes the closed number, and the command, once that
    // one is closed at its exec, starts without a stdin or a stdout.
    fn close_stdin_and_stdout() -> std::io::Result<()> {
        // SAFETY: close is async-signal-safe.
        unsafe {
            nix::libc::close(0);
            nix::libc::close(1);
        }
        Ok(())
    }
    for flags in MODES {
        let mut t = Test::new();
        t.script("env/A", "#!/bin/sh\necho a\n").dir("export");
        // Builtins only, no redirection: the shell's own 0 and 1, as the harness left them.
        let checks = "test /proc/$$/fd/0 -ef /dev/null && test /proc/$$/fd/1 -ef /dev/null";
        t.args(flags)
            .args(&["-x", "export", "-e", "env", "--", "/bin/sh", "-c", checks]);
        let mut command = t.command();
        // SAFETY: the setup only makes async-signal-safe calls.
        unsafe { command.pre_exec(close_stdin_and_stdout) };
        let run = t.run_command(command);
        assert_eq!(
            run.status.code(),
            Some(0),
            "{flags:?}: the command's stdin and stdout are not both /dev/null\n{}",
            run.stderr
        );
    }
}

#[test]
fn the_command_starts_with_the_signal_state_the_harness_started_with() {
    // The Rust runtime ignores SIGPIPE and the harness blocks signals while it works; neither
    // may reach the command. (A glibc posix_spawn child may start with glibc's internal
    // signals 32/33 ignored; whatever it is, the command must see the same.)
    let mut grep = signal_state().to_vec();
    grep.push("/proc/self/status");
    for flags in MODES {
        let (direct, through) = direct_and_through_harness(flags, &grep, None);
        let seen = String::from_utf8_lossy(&through);
        assert_eq!(seen, String::from_utf8_lossy(&direct), "{flags:?}");
        assert_eq!(mask(&seen, "SigBlk"), 0, "{flags:?}");
        assert_eq!(
            mask(&seen, "SigIgn") & bit(Signal::SIGPIPE),
            0,
            "{flags:?}: SIGPIPE ignored"
        );
    }
}

#[test]
fn the_command_inherits_ignored_and_blocked_signals() {
    fn ignore_pipe_and_hup_block_usr1() -> std::io::Result<()> {
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: installing SIG_IGN runs no code in a signal context.
        unsafe {
            sigaction(Signal::SIGPIPE, &ignore)?;
            sigaction(Signal::SIGHUP, &ignore)?;
        }
        let mut blocked = SigSet::empty();
        blocked.add(Signal::SIGUSR1);
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&blocked), None)?;
        Ok(())
    }
    let mut grep = signal_state().to_vec();
    grep.push("/proc/self/status");
    for flags in MODES {
        let setup = Some(ignore_pipe_and_hup_block_usr1 as fn() -> std::io::Result<()>);
        let (direct, through) = direct_and_through_harness(flags, &grep, setup);
        let seen = String::from_utf8_lossy(&through);
        assert_eq!(seen, String::from_utf8_lossy(&direct), "{flags:?}");
        assert_eq!(
            mask(&seen, "SigBlk"),
            bit(Signal::SIGUSR1),
            "{flags:?}: SIGUSR1 blocked"
        );
        let hup_and_pipe = bit(Signal::SIGHUP) | bit(Signal::SIGPIPE);
        assert_eq!(
            mask(&seen, "SigIgn") & hup_and_pipe,
            hup_and_pipe,
            "{flags:?}: SIGHUP and SIGPIPE ignored"
        );
    }
}

#[test]
fn a_non_executable_file_found_in_path_is_126_and_a_dangling_link_is_127() {
    let mut t = Test::new();
    t.file("bin/tool", "#!/bin/sh\necho no\n");
    t.symlink("bin/dangling", "../nowhere");
    let path = format!("{}:{PATH}", t.p("bin"));
    t.env("PATH", path);
    with_empty_dirs(&mut t).args(&["tool"]);
    t.run()
        .status(126)
        .error_line(&["tool", "permission denied"]);

    let mut t = Test::new();
    t.symlink("bin/dangling", "../nowhere");
    with_empty_dirs(&mut t).args(&["./bin/dangling"]);
    t.run()
        .status(127)
        .error_line(&["./bin/dangling", "command not found"]);
}

#[test]
fn started_with_sigchld_ignored_it_still_waits_for_scripts_and_the_command_gets_sig_ign() {
    // With SIGCHLD ignored the kernel reaps children on its own; the harness must not hang
    // waiting for a status it will never get.
    fn ignore_sigchld() -> std::io::Result<()> {
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: installing SIG_IGN runs no code in a signal context.
        unsafe { sigaction(Signal::SIGCHLD, &ignore)? };
        Ok(())
    }
    for flags in MODES {
        let mut t = Test::new();
        t.script("env/A", "#!/bin/sh\ntouch a-ran\necho from-script\n");
        t.dir("export");
        t.args(flags).args(&[
            "-x",
            "export",
            "-e",
            "env",
            "--",
            "/bin/grep",
            "^SigIgn",
            "/proc/self/status",
        ]);
        let mut command = t.command();
        // SAFETY: sigaction is async-signal-safe.
        unsafe { command.pre_exec(ignore_sigchld) };
        let run = t.run_command(command);
        run.success().faster_than(Duration::from_secs(5));
        assert!(t.exists("a-ran"), "{flags:?}: the script did not run");
        assert_ne!(
            mask(&run.stdout(), "SigIgn") & bit(Signal::SIGCHLD),
            0,
            "{flags:?}: SIGCHLD not ignored in the command"
        );
    }
}

#[test]
fn a_directory_is_126_and_an_empty_command_127() {
    for flags in MODES {
        let mut t = Test::new();
        t.dir("tools");
        t.args(flags);
        with_empty_dirs(&mut t).args(&["./tools"]);
        t.run()
            .status(126)
            .error_line(&["./tools", "is a directory"]);

        let mut t = Test::new();
        t.args(flags);
        with_empty_dirs(&mut t).args(&[""]);
        t.run().status(127).error_line(&["''", "command not found"]);
    }
}
