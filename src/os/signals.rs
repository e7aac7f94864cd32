//! The harness's own signal handling, and giving the command back the signal state the harness
//! was started with.
//!
//! During the phases the harness blocks SIGCHLD and the stop signals (SIGTERM, SIGINT, SIGHUP,
//! SIGQUIT) and reads them from a signalfd, so the loop that drives the scripts can wait on "a
//! child exited", "a pipe has data" and "we were told to stop" in one `poll`, and a signal that
//! arrives between two scripts stays pending instead of being lost. Under `--watch`, SIGHUP is
//! read the same way but means "re-run discovery", never "stop". A stop signal that was ignored when the
//! harness started (`nohup`, a shell's `&`) stays ignored: it is not watched.
//!
//! Before the final execve the original mask is restored, and SIGPIPE gets back the disposition
//! it had before [`ignore_sigpipe`] set it to SIG_IGN, as every Rust program's runtime does (a
//! command exec'd with SIGPIPE ignored keeps writing into a closed pipe: `envharness -- yes |
//! head` would never end). A SIGCHLD ignored at start is set back to the
//! default for the harness's own use (with it ignored, waitpid never reports a child) and
//! ignored again for the command.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::error::Error;

/// The signals that stop the phases (docs/reference.md §3.4).
pub const STOP_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The signals `--init` forwards to the command besides the stop signals (docs/reference.md §6).
pub const FORWARDED_ONLY: [Signal; 4] = [
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

static SIGPIPE_IGNORED_AT_START: AtomicBool = AtomicBool::new(false);

/// Ignores SIGPIPE, so that a write to a closed pipe is an error the harness reports instead of
/// its death, after recording the disposition the command gets back. Called once, first thing
/// (see [`super::start`]).
pub fn ignore_sigpipe() {
    SIGPIPE_IGNORED_AT_START.store(is_ignored(Signal::SIGPIPE), Ordering::Relaxed);
    // SAFETY: installing SIG_IGN runs no code of ours in a signal context.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

fn is_ignored(signal: Signal) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`, a
    // zero-initialised plain C struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal as libc::c_int, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The signal state the harness started with, to give back to the command.
#[derive(Clone, Copy)]
pub struct StartupState {
    mask: SigSet,
    sigpipe_ignored: bool,
    sigchld_ignored: bool,
}

impl StartupState {
    /// Puts the mask, SIGPIPE and SIGCHLD back. Async-signal-safe, so a spawned child may
    /// call it between clone and exec.
    pub fn restore(&self) -> io::Result<()> {
        let sigpipe = if self.sigpipe_ignored {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        // SAFETY: installing SIG_DFL or SIG_IGN runs no code of ours in a signal context.
        if unsafe { libc::signal(libc::SIGPIPE, sigpipe) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
        if self.sigchld_ignored {
            // SAFETY: as above.
            if unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) } == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
        }
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.mask), None)?;
        Ok(())
    }
}

/// Signals blocked and readable from a signalfd while the harness runs its phases (and, under
/// `--init`, while it supervises).
pub struct Signals {
    fd: SignalFd,
    /// What the signalfd reads: SIGCHLD and the stop signals the harness did not start with
    /// ignored.
    watched: SigSet,
    /// Under `--init`, the other forwarded signals (not ignored at start): blocked from the
    /// start, so none is lost, but read only once the supervisor can forward them.
    forwarded: SigSet,
    /// `--watch`: SIGHUP asks for a re-run and stops nothing (docs/reference.md §7).
    hup_reruns: bool,
    startup: StartupState,
}

impl Signals {
    /// Blocks SIGCHLD and the stop signals that are not ignored (with `supervising`, the other
    /// forwarded signals too, so that none is lost before the command starts), and opens the
    /// signalfd for SIGCHLD and the stop signals.
    pub fn install(supervising: bool, hup_reruns: bool) -> io::Result<Signals> {
        let mut watched = SigSet::empty();
        watched.add(Signal::SIGCHLD);
        for signal in STOP_SIGNALS {
            if !is_ignored(signal) {
                watched.add(signal);
            }
        }
        let mut forwarded = SigSet::empty();
        if supervising {
            for signal in FORWARDED_ONLY {
                if !is_ignored(signal) {
                    forwarded.add(signal);
                }
            }
        }
        // With SIGCHLD ignored the kernel reaps children itself and waitpid never reports
        // them; the harness needs their status, so it takes the default back (and gives the
        // command SIG_IGN again).
        let sigchld_ignored = is_ignored(Signal::SIGCHLD);
        if sigchld_ignored {
            // SAFETY: installing SIG_DFL runs no code of ours in a signal context.
            unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
        }
        let mut original_mask = SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            SigmaskHow::SIG_BLOCK,
            Some(&(watched | forwarded)),
            Some(&mut original_mask),
        )?;
        let fd = SignalFd::with_flags(&watched, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals {
            fd,
            hup_reruns,
            watched,
            forwarded,
            startup: StartupState {
                mask: original_mask,
                sigpipe_ignored: SIGPIPE_IGNORED_AT_START.load(Ordering::Relaxed),
                sigchld_ignored,
            },
        })
    }

    /// Every pending signal, in the order the signalfd gives them (never blocks).
    pub fn pending(&self) -> Result<Vec<Signal>, Error> {
        let mut pending = Vec::new();
        loop {
            let read = self
                .fd
                .read_signal()
                .map_err(|err| Error::io("signalfd", "reading signals", err.into()))?;
            let Some(info) = read else {
                return Ok(pending);
            };
            pending.extend(Signal::try_from(info.ssi_signo as libc::c_int).ok());
        }
    }

    /// Whether `signal` stops the phases and a re-run's scripts: a stop signal, except
    /// SIGHUP under `--watch`.
    pub fn is_stop(&self, signal: Signal) -> bool {
        STOP_SIGNALS.contains(&signal) && !self.is_rerun_request(signal)
    }

    /// Whether `signal` is `--watch`'s "re-run now".
    pub fn is_rerun_request(&self, signal: Signal) -> bool {
        self.hup_reruns && signal == Signal::SIGHUP
    }

    /// From now on the signalfd also reads the forwarded signals, those already pending too
    /// (signalfd(2) reads the pending set): the supervisor is there to forward them.
    pub fn read_forwarded(&self) -> io::Result<()> {
        self.fd.set_mask(&(self.watched | self.forwarded))?;
        Ok(())
    }

    /// The signal state the harness started with; restore it right before any execve of
    /// the command, so the command inherits what the harness inherited.
    pub fn startup_state(&self) -> StartupState {
        self.startup
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
