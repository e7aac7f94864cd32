//! Starting the command under `--init`: a child in a process group of its own, in the
//! terminal's foreground when there is one, with the signal state the harness started with.

use std::borrow::Cow;
use std::ffi::OsString;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use nix::errno::Errno;
use nix::libc;
use nix::sched::{clone, CloneCb, CloneFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{setpgid, Pid};

use crate::error::Error;
use crate::exec::{ExecArgs, Found, Prepared};
use crate::os::signals::{Signals, StartupState};
use crate::os::user::{Failed, Switch};

/// The command to start, and who it runs as.
pub struct Start<'a> {
    pub command: &'a [OsString],
    /// Its environment (with `--user`, HOME is USER's unless `home_from_directory`).
    pub env: &'a [(OsString, OsString)],
    pub home_from_directory: bool,
    /// Where it was found before the start, used when `env` searches the same PATH.
    pub found: Option<&'a Found>,
    pub user: Option<&'a Switch>,
}

/// Starts the command; 126/127 when it cannot be executed, 126 when it cannot become USER (the
/// child is reaped then).
pub fn spawn(start: &Start, signals: &Signals) -> Result<Pid, Error> {
    let env = match start.user {
        Some(user) => Cow::Owned(user.environment(start.env.to_vec(), start.home_from_directory)),
        None => Cow::Borrowed(start.env),
    };
    let prepared = Prepared::new(start.command, &env, start.found)?;
    let startup = signals.startup_state();
    let failure = ChildFailure::default();
    // Not posix_spawn: glibc and musl leave their internal real-time signals ignored in a
    // posix_spawn child (and refuse to reset them), and the command must start with the
    // dispositions the harness started with. Not fork or std's Command either: like
    // posix_spawn's, a CLONE_VM|CLONE_VFORK child copies no page tables and causes no
    // copy-on-write faults (the README's Performance section has the figures).
    let mut stack = [0u8; CHILD_STACK];
    let become_the_command: CloneCb =
        Box::new(|| become_the_command(&prepared.args, startup, start.user, &failure));
    // SAFETY: CLONE_VFORK suspends this thread until the child has exec'd or exited, and
    // everything the closure borrows outlives the child's use of it. The child runs on `stack`
    // and makes a few plain system calls; it only reads `prepared`, `startup` and the user to
    // become, and writes `failure`, atomics. Other threads of the harness (the registry's
    // worker, an etcd watch reader) go on running meanwhile in the memory the child shares, but
    // none of them touches those, and the child takes no lock, allocates nothing and changes
    // its ids with raw system calls that concern it alone (see os::user), so it cannot wait on
    // a lock a running thread holds, see the allocator's state change under it, or act on the
    // harness's threads.
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
    match failure.read() {
        None => Ok(child),
        Some(failed) => {
            let _ = waitpid(child, None);
            Err(match (failed, start.user) {
                (ChildFailed::Switch(failed), Some(user)) => user.failed(failed),
                (ChildFailed::Switch(Failed { errno, .. }), None)
                | (ChildFailed::Exec(errno), _) => prepared.not_executed(errno),
            })
        }
    }
}

/// The stack of the child between clone and exec, on the harness's own: the child needs well
/// under a page of it, and a heap block this size was a fresh mapping (mmap, munmap) for each
/// start.
const CHILD_STACK: usize = 16 * 1024;

/// What the child leaves for the harness when it could not become the command: atomics, since
/// it shares the harness's memory and must not allocate.
#[derive(Default)]
struct ChildFailure {
    errno: AtomicI32,
    /// 0: the exec (or restoring the signal state) failed; else 1 + the index of the step of
    /// the user switch that did, in SWITCH_STEPS.
    step: AtomicU8,
}

const SWITCH_STEPS: [&str; 3] = ["setgroups", "setresgid", "setresuid"];

enum ChildFailed {
    Exec(Errno),
    Switch(Failed),
}

impl ChildFailure {
    fn exec(&self, errno: Errno) {
        self.errno.store(errno as i32, Ordering::SeqCst);
    }

    fn switch(&self, failed: Failed) {
        let step = SWITCH_STEPS.iter().position(|step| *step == failed.step);
        self.step
            .store(step.map_or(0, |at| at as u8 + 1), Ordering::SeqCst);
        self.errno.store(failed.errno as i32, Ordering::SeqCst);
    }

    fn read(&self) -> Option<ChildFailed> {
        let errno = Errno::from_raw(self.errno.load(Ordering::SeqCst));
        if errno as i32 == 0 {
            return None;
        }
        Some(match self.step.load(Ordering::SeqCst) {
            0 => ChildFailed::Exec(errno),
            step => ChildFailed::Switch(Failed {
                step: SWITCH_STEPS[usize::from(step - 1)],
                errno,
            }),
        })
    }
}

/// In the child: execs the command in a process group of its own, in the terminal's
/// foreground, as `user`. It shares the harness's memory, so it does nothing that allocates,
/// locks or writes: if something fails it leaves the errno (and the step) in `failure` and
/// exits, and the harness, resumed, reports the failure as in exec mode.
fn become_the_command(
    exec: &ExecArgs,
    startup: StartupState,
    user: Option<&Switch>,
    failure: &ChildFailure,
) -> ! {
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    take_the_terminal();
    match startup.restore() {
        Err(err) => failure.exec(Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))),
        Ok(()) => match user.map(Switch::switch) {
            Some(Err(failed)) => failure.switch(failed),
            _ => failure.exec(exec.execve()),
        },
    }
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
