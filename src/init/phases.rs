//! The loop that drives scripts while no command runs: the export and environment phases,
//! `--wait`'s pauses, and teardown. A stop signal stops the running scripts and nothing more
//! starts (SPEC.md 3.4); under `--watch` a SIGHUP is remembered for the supervisor, which
//! re-runs discovery once the command has started (SPEC.md 7). Children that are not the
//! pool's scripts (orphans a PID 1 inherits) are reaped and forgotten.

use std::os::fd::AsFd;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use super::signals::Signals;
use super::wait_readable;
use crate::error::Error;
use crate::runner::{Host, Limits, Pool};

pub struct PhaseHost<'s> {
    signals: &'s Signals,
    limits: Limits,
    /// A SIGHUP came under `--watch`: the supervisor owes a re-run.
    rerun_requested: bool,
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
            wait_readable(&[self.signals.as_fd()], Some(until))?;
            self.check_stop()?;
        }
        Ok(())
    }

    /// Drains the signalfd: exits go to `pool` (or are forgotten), a SIGHUP under `--watch`
    /// is remembered, and the first stop signal stops `pool` and is returned. Signals that
    /// `--init` forwards are not read here (teardown reads them, with no command to take them).
    fn read_signals(&mut self, mut pool: Option<&mut Pool>) -> Result<Option<Signal>, Error> {
        let mut stop = None;
        while let Some(signal) = self
            .signals
            .next()
            .map_err(|err| Error::io("signalfd", "reading signals", err))?
        {
            if signal == Signal::SIGCHLD {
                reap(pool.as_deref_mut());
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
}

impl Host for PhaseHost<'_> {
    fn limits(&self) -> Limits {
        self.limits
    }

    fn drive(&mut self, pool: &mut Pool) -> Result<(), Error> {
        // A stop signal that came while no script ran (between two scripts, or between the
        // phases) waits in the signalfd: read it before starting anything, or the next script
        // would be started and only then stopped (SPEC.md 3.4: "runs nothing more").
        self.read_signals(Some(pool))?;
        loop {
            pool.tick();
            if pool.is_finished() {
                return Ok(());
            }
            let (ready, signals_ready) = {
                let pipes = pool.pipes();
                let mut fds = vec![self.signals.as_fd()];
                fds.extend(pipes.iter().map(|(fd, _)| *fd));
                let ready = wait_readable(&fds, pool.deadline())?;
                let signals_ready = ready.contains(&0);
                let pipes: Vec<_> = ready
                    .into_iter()
                    .filter(|at| *at > 0)
                    .map(|at| pipes[at - 1].1)
                    .collect();
                (pipes, signals_ready)
            };
            for pipe in ready {
                pool.read(pipe);
            }
            if signals_ready {
                self.read_signals(Some(pool))?;
            }
        }
    }
}

/// Reaps every child that has exited (SIGCHLDs coalesce) and hands the pool its own; as
/// PID 1 (or a subreaper) the harness also inherits orphans of scripts, which are forgotten.
fn reap(mut pool: Option<&mut Pool>) {
    loop {
        let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(status @ WaitStatus::Exited(pid, _)) => (pid, status),
            Ok(status @ WaitStatus::Signaled(pid, ..)) => (pid, status),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        if let Some(pool) = pool.as_deref_mut() {
            pool.exited(pid, status);
        }
    }
}
