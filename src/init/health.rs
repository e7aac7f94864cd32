//! `health` (SPEC.md 11.4): the export directory's check, run under `--init` right after the
//! command starts and then every `--health-interval`, with the command's environment and the
//! scripts' `--timeout` and `--retries`. Its run is a [`Pool`] the supervisor's loop drives
//! with everything else, so a slow check never holds up signals or reaping. The supervisor
//! publishes once it first passes, withdraws when it fails and publishes again when it
//! passes again; the command is never stopped for being unhealthy.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::runner::{Job, Limits, Pool, Stdout};
use crate::variables::Environment;

/// A finished check.
pub enum Verdict {
    Passed,
    Failed(Error),
}

pub struct Health {
    path: PathBuf,
    interval: Duration,
    /// When the next run starts (none while one runs).
    next_at: Option<Instant>,
    running: Option<Pool>,
}

impl Health {
    /// The first run is due at once.
    pub fn new(path: PathBuf, interval: Duration) -> Health {
        Health {
            path,
            interval,
            next_at: Some(Instant::now()),
            running: None,
        }
    }

    /// The run under way, for the loop to poll and hand exits to.
    pub fn running(&mut self) -> Option<&mut Pool> {
        self.running.as_mut()
    }

    pub fn running_ref(&self) -> Option<&Pool> {
        self.running.as_ref()
    }

    pub fn deadline(&self) -> Option<Instant> {
        match &self.running {
            Some(pool) => pool.deadline(),
            None => self.next_at,
        }
    }

    /// Starts a run when one is due, moves the running one on, and returns its verdict once
    /// it is over (the next run is then `--health-interval` away).
    pub fn tick(&mut self, env: &Environment, limits: Limits) -> Option<Verdict> {
        if self.running.is_none() && self.next_at.is_some_and(|at| at <= Instant::now()) {
            self.next_at = None;
            let job = Job {
                path: self.path.clone(),
                env: env.clone(),
                stdout: Stdout::ToStderr,
            };
            self.running = Some(Pool::new(vec![job], 1, limits));
        }
        let pool = self.running.as_mut()?;
        pool.tick();
        if !pool.is_finished() {
            return None;
        }
        let pool = self.running.take().expect("checked above");
        self.next_at = Some(Instant::now() + self.interval);
        let verdict = match pool.into_outcomes() {
            Ok(mut outcomes) => match outcomes.pop().flatten() {
                Some(Ok(_)) => Verdict::Passed,
                Some(Err(err)) => Verdict::Failed(err),
                None => return None,
            },
            Err(err) => Verdict::Failed(err),
        };
        Some(verdict)
    }
}
