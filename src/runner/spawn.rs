//! Starting one script: a child with the pipes, process group and signal state a script gets
//! (docs/reference.md §3.3 and §3.4).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use nix::sys::wait::waitpid;
use nix::unistd::{setpgid, Pid};

use super::{Job, Stdout};
use crate::os::{c_string, vfork};

/// A started script: its pid (also its process group) and our ends of its pipes.
pub struct Spawned {
    pub pid: Pid,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

/// Starts the script: directly (no shell, and unlike execvp no /bin/sh fallback for a file
/// without `#!`), stdin from /dev/null, in a process group of its own, with an empty signal
/// mask and default SIGPIPE. std's `Command` would hand the child the harness's mask, in which
/// the stop signals and SIGCHLD are blocked, so a timeout's SIGTERM would not reach it.
pub fn spawn(job: &Job, pipe_stderr: bool) -> io::Result<Spawned> {
    let (stdout, child_stdout) = match job.stdout {
        Stdout::Capture { .. } => {
            let (ours, theirs) = pipe()?;
            (Some(ours), Some(theirs))
        }
        Stdout::ToStderr => (None, None),
    };
    let (stderr, child_stderr) = if pipe_stderr {
        let (ours, theirs) = pipe()?;
        (Some(ours), Some(theirs))
    } else {
        (None, None)
    };
    // stdout goes to stderr when it is not captured; stderr stays when it is not piped.
    let descriptors = [
        Some(empty_stdin()?.as_raw_fd()),
        Some(child_stdout.as_ref().map_or(2, AsRawFd::as_raw_fd)),
        child_stderr.as_ref().map(AsRawFd::as_raw_fd),
    ];
    let path = c_string(job.path.as_os_str().as_bytes());
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = job.env.pointers();
    // SAFETY: the child only makes system calls that concern itself (setpgid, dup2, fcntl,
    // sigaction to SIG_DFL, sigprocmask, execve) and reads `descriptors`, `argv` and `envp`,
    // which outlive it: vfork::spawn's terms.
    let (pid, errno) =
        unsafe { vfork::spawn(|| become_the_script(&path, &argv, &envp, descriptors) as u64) }?;
    // Our copies of the child's ends must close, or its stdout never reaches EOF.
    drop((child_stdout, child_stderr));
    if errno != 0 {
        let _ = waitpid(pid, None);
        return Err(io::Error::from_raw_os_error(errno as i32));
    }
    Ok(Spawned {
        pid,
        stdout: stdout.map(File::from),
        stderr: stderr.map(File::from),
    })
}

/// In the child: stdin, stdout and stderr from `descriptors`, then execve. Returns only on
/// failure, with the errno.
fn become_the_script(
    path: &CString,
    argv: &[*const libc::c_char; 2],
    envp: &[*const libc::c_char],
    descriptors: [Option<libc::c_int>; 3],
) -> i32 {
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    for (to, from) in (0..).zip(descriptors) {
        if let Err(errno) = from.map_or(Ok(()), |from| vfork::dup_onto(from, to)) {
            return errno as i32;
        }
    }
    // SAFETY: SIG_DFL runs no code of ours in a signal context.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    if let Err(errno) = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None) {
        return errno as i32;
    }
    // SAFETY: `argv` and `envp` end with a null pointer and point to C strings that outlive
    // the call, as execve(2) requires.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Errno::last() as i32
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// /dev/null, or an empty pipe where there is none (a bare chroot): either reads as EOF.
/// Opened once and kept (close-on-exec) for every script after.
fn empty_stdin() -> io::Result<&'static OwnedFd> {
    static EMPTY: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(empty) = EMPTY.get() {
        return Ok(empty);
    }
    let empty = match File::open("/dev/null") {
        Ok(null) => null.into(),
        Err(_) => pipe()?.0,
    };
    Ok(EMPTY.get_or_init(|| empty))
}
