//! Stopping well (docs/reference.md §13.3): on a stop signal the keys are withdrawn first (the
//! supervisor does that), then the export directory's `prestop` runs, and the command keeps
//! serving until `--drain` has passed since the signal came; only then does it get the signal.
//! So a load balancer that follows the registry stops sending requests before the service
//! stops taking them.
//!
//! `prestop` runs with the command's environment and `--timeout` (`--stop-timeout` when there
//! is none), ended as a timed-out script is; a failure is logged and the stop goes on. Its run
//! is a [`Pool`] the supervisor's loop drives with everything else. A second stop signal, or
//! the command exiting, cuts the drain short.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::runner::{Job, Limits, Pool, Stdout};
use crate::variables::Environment;

pub struct Drain {
    /// The stop signal that came, to be forwarded at the end.
    signal: Signal,
    /// When the command gets it: `--drain` after the signal came.
    until: Instant,
    prestop: Option<Pool>,
}

impl Drain {
    /// Starts the drain for `signal`, which came at `came` (the drain counts from there, not
    /// from after the withdrawal), with `prestop` (if the export directory has one) running at
    /// once.
    pub fn start(
        signal: Signal,
        came: Instant,
        drain: Duration,
        prestop: Option<PathBuf>,
        env: &Environment,
        limits: Limits,
        stop_timeout: Duration,
    ) -> Drain {
        let prestop = prestop.map(|path| {
            let job = Job {
                path,
                env: Rc::new(env.as_slice().into()),
                stdout: Stdout::ToStderr,
            };
            // Once, bounded: a stop must not wait for a prestop that hangs.
            let limits = Limits {
                timeout: limits.timeout.or(Some(stop_timeout)),
                retries: 0,
                ..limits
            };
            Pool::new(vec![job], 1, limits)
        });
        Drain {
            signal,
            until: came + drain,
            prestop,
        }
    }

    /// The `prestop` run under way, for the loop to poll and hand exits to.
    pub fn running(&mut self) -> Option<&mut Pool> {
        self.prestop.as_mut()
    }

    pub fn running_ref(&self) -> Option<&Pool> {
        self.prestop.as_ref()
    }

    /// When [`Drain::tick`] has something to do: the drain's end, or prestop's next deadline.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.prestop {
            Some(pool) => pool.deadline(),
            None => Some(self.until),
        }
    }

    /// Moves `prestop` on; once it is over and the drain has run out, the signal to forward.
    pub fn tick(&mut self) -> Option<Signal> {
        if let Some(pool) = self.prestop.as_mut() {
            pool.tick();
            if !pool.is_finished() {
                return None;
            }
            let pool = self.prestop.take().expect("checked above");
            report(pool);
        }
        (Instant::now() >= self.until).then_some(self.signal)
    }

    /// A second stop signal, or the command exited: `prestop` gets SIGTERM and the drain is
    /// over (what is left of prestop is reaped with the other processes left behind).
    pub fn cut_short(mut self) {
        if let Some(pool) = self.prestop.as_mut() {
            pool.cancel();
        }
    }
}

/// A `prestop` that failed is logged; the stop goes on.
fn report(pool: Pool) {
    let failure = match pool.into_outcomes() {
        Ok(mut outcomes) => match outcomes.pop().flatten() {
            Some(Err(err)) => Some(err),
            _ => None,
        },
        Err(err) => Some(err),
    };
    if let Some(err) = failure {
        log::warn!("{err}; stopping the command all the same");
    }
}
