//! Starting the command under `--init`: a child in a process group of its own, in the
//! terminal's foreground when there is one, with the signal state the harness started with.

use std::borrow::Cow;
use std::ffi::OsString;

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{setpgid, Pid};

use crate::error::Error;
use crate::exec::{ExecArgs, Found, Prepared};
use crate::os::signals::{Signals, StartupState};
use crate::os::user::{Failed, Switch};
use crate::os::vfork;

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
    // SAFETY: the child makes a few plain system calls that concern itself alone (the user
    // switch's are raw, see os::user) and only reads `prepared`, `startup` and the user to
    // become: vfork::spawn's terms.
    let spawned =
        unsafe { vfork::spawn(|| become_the_command(&prepared.args, startup, start.user)) };
    let (child, code) =
        spawned.map_err(|err| Error::io(&prepared.path, "starting the command", err.into()))?;
    match ChildFailed::from_code(code) {
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

const SWITCH_STEPS: [&str; 3] = ["setgroups", "setresgid", "setresuid"];

/// Why the child could not become the command, as it tells the harness: one number, since it
/// shares the harness's memory and must not allocate.
enum ChildFailed {
    Exec(Errno),
    Switch(Failed),
}

impl ChildFailed {
    /// The errno, and above it 0 when the exec (or restoring the signal state) failed, else
    /// 1 + the index of the step of the user switch that did, in SWITCH_STEPS.
    fn code(&self) -> u64 {
        let (step, errno) = match self {
            ChildFailed::Exec(errno) => (0, *errno),
            ChildFailed::Switch(failed) => {
                let step = SWITCH_STEPS.iter().position(|step| *step == failed.step);
                (step.map_or(0, |at| at as u64 + 1), failed.errno)
            }
        };
        step << 32 | errno as u64
    }

    fn from_code(code: u64) -> Option<ChildFailed> {
        if code == 0 {
            return None;
        }
        let errno = Errno::from_raw(code as u32 as i32);
        Some(match code >> 32 {
            0 => ChildFailed::Exec(errno),
            step => ChildFailed::Switch(Failed {
                step: SWITCH_STEPS[step as usize - 1],
                errno,
            }),
        })
    }
}

/// In the child: execs the command in a process group of its own, in the terminal's
/// foreground, as `user`. It shares the harness's memory, so it does nothing that allocates,
/// locks or writes: if something fails it returns the failure's code, and the harness,
/// resumed, reports the failure as in exec mode.
fn become_the_command(exec: &ExecArgs, startup: StartupState, user: Option<&Switch>) -> u64 {
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    take_the_terminal();
    let failed = match startup.restore() {
        Err(err) => ChildFailed::Exec(Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))),
        Ok(()) => match user.map(Switch::switch) {
            Some(Err(failed)) => ChildFailed::Switch(failed),
            _ => ChildFailed::Exec(exec.execve()),
        },
    };
    failed.code()
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
