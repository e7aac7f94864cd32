//! The loop that drives scripts while no command runs: the export and environment phases,
//! `--wait`'s pauses, and teardown. A stop signal stops the running scripts and nothing more starts
//! (docs/reference.md §3.4); under `--watch` a SIGHUP is remembered for the supervisor, which
//! re-runs discovery once the command has started (docs/reference.md §7). Children that are not the
//! pool's scripts (orphans a PID 1 inherits) are reaped and forgotten.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use nix::sys::signal::Signal;

use super::{Host, Limits, Pipe, Pool};
use crate::error::Error;
use crate::os::children::reap;
use crate::os::poll::Poll;
use crate::os::signals::Signals;

pub struct PhaseHost<'s> {
    signals: &'s Signals,
    limits: Limits,
    /// A SIGHUP came under `--watch`: the supervisor owes a re-run.
    rerun_requested: bool,
}

/// What woke the loop.
#[derive(Clone, Copy)]
enum Source {
    Script(Pipe),
    Signals,
    /// A task's result is there.
    Task,
}

impl<'s> PhaseHost<'s> {
    pub fn new(signals: &'s Signals, limits: Limits) -> PhaseHost<'s> {
        PhaseHost {
            signals,
            limits,
            rerun_requested: false,
        }
    }

    /// Whether a SIGHUP asked for a re-run while the phases ran (under `--watch`).
    pub fn rerun_requested(&self) -> bool {
        self.rerun_requested
    }

    /// Reads the pending signals; a stop signal among them is an error. A stop signal that
    /// came after the last script still means "stop": nothing is started.
    pub fn check_stop(&mut self) -> Result<(), Error> {
        match self.read_signals(None)? {
            Some(signal) => Err(Error::Interrupted { signal }),
            None => Ok(()),
        }
    }

    /// Sleeps until `until` (`--wait`'s pause between tries); a stop signal ends it with an
    /// error.
    pub fn sleep_until(&mut self, until: Instant) -> Result<(), Error> {
        while Instant::now() < until {
            let mut poll = Poll::default();
            poll.add(self.signals.as_fd(), ());
            poll.wait(Some(until))?;
            self.check_stop()?;
        }
        Ok(())
    }

    /// Drains the signalfd: exits go to `pool` (or are forgotten), a SIGHUP under `--watch`
    /// is remembered, and the first stop signal stops `pool` and is returned. Signals that
    /// `--init` forwards are not read here (teardown reads them, with no command to take them).
    fn read_signals(&mut self, mut pool: Option<&mut Pool>) -> Result<Option<Signal>, Error> {
        let mut stop = None;
        for signal in self.signals.pending()? {
            if signal == Signal::SIGCHLD {
                for status in reap().statuses {
                    if let (Some(pool), Some(pid)) = (pool.as_deref_mut(), status.pid()) {
                        pool.exited(pid, status);
                    }
                }
            } else if self.signals.is_rerun_request(signal) {
                self.rerun_requested = true;
            } else if self.signals.is_stop(signal) && stop.is_none() {
                stop = Some(signal);
                if let Some(pool) = pool.as_deref_mut() {
                    pool.stop(signal);
                }
            }
        }
        Ok(stop)
    }

    /// Sleeps until a script's pipe or the signalfd is readable, or the pool's deadline.
    fn wait(&self, pool: &Pool) -> Result<Vec<Source>, Error> {
        let mut poll = Poll::default();
        for (fd, pipe) in pool.pipes() {
            poll.add(fd, Source::Script(pipe));
        }
        poll.add(self.signals.as_fd(), Source::Signals);
        poll.wait(pool.deadline())
    }
}

impl Host for PhaseHost<'_> {
    fn limits(&self) -> Limits {
        self.limits
    }

    fn drive(&mut self, pool: &mut Pool) -> Result<(), Error> {
        // A stop signal that came while no script ran (between two scripts, or between the
        // phases) waits in the signalfd: read it before starting anything, or the next script
        // would be started and only then stopped (docs/reference.md §3.4: "runs nothing more").
        self.read_signals(Some(pool))?;
        loop {
            pool.tick();
            if pool.is_finished() {
                return Ok(());
            }
            for source in self.wait(pool)? {
                match source {
                    Source::Script(pipe) => pool.read(pipe),
                    Source::Signals => {
                        self.read_signals(Some(pool))?;
                    }
                    Source::Task => {}
                }
            }
        }
    }

    fn wait_for(&mut self, fd: BorrowedFd<'_>) -> Result<(), Error> {
        // A stop signal that is already there stops the harness before the task's end too.
        self.check_stop()?;
        let mut poll = Poll::default();
        poll.add(fd, Source::Task);
        poll.add(self.signals.as_fd(), Source::Signals);
        // Woken by the task's fd, or by a signal: the caller looks whether the result is there.
        poll.wait(None)?;
        self.check_stop()
    }
}
