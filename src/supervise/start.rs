//! Starting the command under `--init`: a child in a process group of its own, in the
//! terminal's foreground when there is one, with the signal state the harness started with.

use std::ffi::OsString;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::libc;
use nix::sched::{clone, CloneCb, CloneFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{setpgid, Pid};

use crate::error::Error;
use crate::exec::{ExecArgs, Found, Prepared};
use crate::os::signals::{Signals, StartupState};

/// Starts the command (where it was `found` before the start, when `env` searches the same
/// PATH); 126/127 when it cannot be executed (the child is reaped then).
pub fn spawn(
    command: &[OsString],
    env: &[(OsString, OsString)],
    found: Option<&Found>,
    signals: &Signals,
) -> Result<Pid, Error> {
    let prepared = Prepared::new(command, env, found)?;
    let startup = signals.startup_state();
    let exec_errno = AtomicI32::new(0);
    // Not posix_spawn: glibc and musl leave their internal real-time signals ignored in a
    // posix_spawn child (and refuse to reset them), and the command must start with the
    // dispositions the harness started with. Not fork or std's Command either: like
    // posix_spawn's, a CLONE_VM|CLONE_VFORK child copies no page tables and causes no
    // copy-on-write faults (the README's Performance section has the figures).
    let mut stack = vec![0u8; CHILD_STACK];
    let become_the_command: CloneCb =
        Box::new(|| become_the_command(&prepared.args, startup, &exec_errno));
    // SAFETY: CLONE_VFORK suspends this thread until the child has exec'd or exited, and
    // everything the closure borrows outlives the child's use of it. The child runs on `stack`
    // and makes a few plain system calls; it only reads `prepared` and `startup` and writes
    // `exec_errno`, an atomic. Other threads of the harness (the registry's worker, an etcd
    // watch reader) go on running meanwhile in the memory the child shares, but none of them
    // touches those three, and the child takes no lock and allocates nothing, so it cannot
    // wait on a lock a running thread holds or see the allocator's state change under it.
    let spawned = unsafe {
        clone(
            become_the_command,
            &mut stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    };
    let child =
        spawned.map_err(|err| Error::io(&prepared.path, "starting the command", err.into()))?;
    match exec_errno.load(Ordering::SeqCst) {
        0 => Ok(child),
        errno => {
            let _ = waitpid(child, None);
            Err(prepared.not_executed(Errno::from_raw(errno)))
        }
    }
}

/// The stack of the child between clone and exec. The child needs well under a page of it;
/// calloc'd, only the pages it touches are ever mapped in.
const CHILD_STACK: usize = 128 * 1024;

/// In the child: execs the command in a process group of its own, in the terminal's
/// foreground. It shares the harness's memory, so it does nothing that allocates, locks or
/// writes: if exec fails it leaves the errno in `exec_errno` and exits, and the harness,
/// resumed, reports the failure as in exec mode.
fn become_the_command(exec: &ExecArgs, startup: StartupState, exec_errno: &AtomicI32) -> ! {
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    take_the_terminal();
    let errno = match startup.restore() {
        Ok(()) => exec.execve(),
        Err(err) => Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO)),
    };
    exec_errno.store(errno as i32, Ordering::SeqCst);
    // SAFETY: _exit ends the child without running exit handlers or flushing buffers, which
    // belong to the harness.
    unsafe { libc::_exit(127) }
}

pub fn stdin_is_a_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// In the child: when stdin is a terminal, make the child's new process group its
/// foreground. SIGTTOU is blocked for the call: a background group that calls tcsetpgrp
/// would otherwise be stopped by it (tcsetpgrp(3)). SIGTSTP too: a Ctrl-Z before the exec
/// would stop the child while the harness waits for that exec. The mask is restored before it.
fn take_the_terminal() {
    if !stdin_is_a_terminal() {
        return;
    }
    let mut tty_signals = SigSet::empty();
    tty_signals.add(Signal::SIGTTOU);
    tty_signals.add(Signal::SIGTTIN);
    tty_signals.add(Signal::SIGTSTP);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&tty_signals), None);
    // SAFETY: tcsetpgrp on our own stdin with our own process group.
    unsafe {
        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
    }
}
