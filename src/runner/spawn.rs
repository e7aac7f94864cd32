//! Starting one script: posix_spawn with the pipes, process group and signal state a script
//! gets (docs/reference.md §3.3 and §3.4).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::OFlag;
use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

use super::{Job, Stdout};
use crate::os::c_string;

/// A started script: its pid (also its process group) and our ends of its pipes.
pub struct Spawned {
    pub pid: Pid,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

/// Starts the script with posix_spawn: directly (no shell, and unlike execvp no /bin/sh
/// fallback for a file without `#!`), stdin from /dev/null, in a process group of its own,
/// with an empty signal mask and default SIGPIPE. std's `Command` would hand the child the
/// harness's mask, in which the stop signals and SIGCHLD are blocked, so a timeout's SIGTERM
/// would not reach it.
pub fn spawn(job: &Job, pipe_stderr: bool) -> io::Result<Spawned> {
    let mut actions = PosixSpawnFileActions::init()?;
    let stdin = empty_stdin()?;
    actions.add_dup2(stdin.as_raw_fd(), 0)?;
    let (stdout, child_stdout) = match job.stdout {
        Stdout::Capture { .. } => {
            let (ours, theirs) = pipe()?;
            actions.add_dup2(theirs.as_raw_fd(), 1)?;
            (Some(ours), Some(theirs))
        }
        Stdout::ToStderr => {
            actions.add_dup2(2, 1)?;
            (None, None)
        }
    };
    let (stderr, child_stderr) = if pipe_stderr {
        let (ours, theirs) = pipe()?;
        actions.add_dup2(theirs.as_raw_fd(), 2)?;
        (Some(ours), Some(theirs))
    } else {
        (None, None)
    };
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    attr.set_pgroup(Pid::from_raw(0))?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut default = SigSet::empty();
    default.add(Signal::SIGPIPE);
    attr.set_sigdefault(&default)?;
    let path = c_string(job.path.as_os_str().as_bytes());
    let pid = posix_spawn(
        path.as_c_str(),
        &actions,
        &attr,
        &[&path],
        &job.env.strings(),
    )?;
    // Our copies of the child's ends must close, or its stdout never reaches EOF.
    drop((stdin, child_stdout, child_stderr));
    Ok(Spawned {
        pid,
        stdout: stdout.map(File::from),
        stderr: stderr.map(File::from),
    })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// /dev/null, or an empty pipe where there is none (a bare chroot): either reads as EOF.
fn empty_stdin() -> io::Result<OwnedFd> {
    match File::open("/dev/null") {
        Ok(null) => Ok(null.into()),
        Err(_) => Ok(pipe()?.0),
    }
}
