//! `health` (docs/reference.md §11.4): the export directory's check, run under `--init` right
//! after the command starts and then every `--health-interval`, with the command's environment
//! and the scripts' `--timeout` (or, without one, `--health-interval`) and `--retries`. Its run
//! is a [`Pool`] the supervisor's loop drives with everything else, so a slow check never holds
//! up signals or reaping.
//!
//! The check says something only when the service's health changes ([`Turn`]): the first pass
//! (publish), a failure after passes or at first (withdraw, one warning per failing stretch), a
//! pass after failures (publish again). The command is never stopped for being unhealthy.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::runner::{Job, Limits, Pool, Stdout};
use crate::variables::Environment;

/// A change of the service's health.
pub enum Turn {
    /// It passes: the first time, or `again` after failures.
    Healthy { again: bool },
    /// It fails, after passes or from the start; the error says how.
    Unhealthy(Error),
}

pub struct Health {
    path: PathBuf,
    interval: Duration,
    run: Run,
    stretch: Stretch,
}

/// Where the check is between runs.
enum Run {
    /// The next run starts then.
    Due(Instant),
    Running(Pool),
}

/// The verdict of the last runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stretch {
    NotYetRun,
    Passing,
    Failing,
}

impl Health {
    /// The first run is due at once.
    pub fn new(path: PathBuf, interval: Duration) -> Health {
        Health {
            path,
            interval,
            run: Run::Due(Instant::now()),
            stretch: Stretch::NotYetRun,
        }
    }

    /// The run under way, for the loop to poll and hand exits to.
    pub fn running(&mut self) -> Option<&mut Pool> {
        match &mut self.run {
            Run::Running(pool) => Some(pool),
            Run::Due(_) => None,
        }
    }

    pub fn running_ref(&self) -> Option<&Pool> {
        match &self.run {
            Run::Running(pool) => Some(pool),
            Run::Due(_) => None,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match &self.run {
            Run::Running(pool) => pool.deadline(),
            Run::Due(at) => Some(*at),
        }
    }

    /// Starts a run when one is due and moves the running one on; once a run is over (the
    /// next one is then `--health-interval` away), returns how the health changed, if it did.
    pub fn tick(&mut self, env: &Environment, limits: Limits) -> Option<Turn> {
        if let Run::Due(at) = self.run {
            if at > Instant::now() {
                return None;
            }
            let job = Job {
                path: self.path.clone(),
                env: Rc::new(env.as_slice().into()),
                stdout: Stdout::ToStderr,
            };
            // A check that hangs must not keep the keys published (or withdrawn) for good:
            // without --timeout, a run may take one interval.
            let limits = Limits {
                timeout: limits.timeout.or(Some(self.interval)),
                ..limits
            };
            self.run = Run::Running(Pool::new(vec![job], 1, limits));
        }
        let pool = self.running()?;
        pool.tick();
        if !pool.is_finished() {
            return None;
        }
        let Run::Running(pool) =
            std::mem::replace(&mut self.run, Run::Due(Instant::now() + self.interval))
        else {
            unreachable!("a run was under way")
        };
        let failure = match pool.into_outcomes() {
            Ok(mut outcomes) => match outcomes.pop().flatten() {
                Some(Ok(_)) => None,
                Some(Err(err)) => Some(err),
                None => return None,
            },
            Err(err) => Some(err),
        };
        self.judge(failure)
    }

    /// The turn a run's verdict makes, if any.
    fn judge(&mut self, failure: Option<Error>) -> Option<Turn> {
        let before = self.stretch;
        match failure {
            None => {
                self.stretch = Stretch::Passing;
                (before != Stretch::Passing).then_some(Turn::Healthy {
                    again: before == Stretch::Failing,
                })
            }
            Some(err) => {
                self.stretch = Stretch::Failing;
                (before != Stretch::Failing).then_some(Turn::Unhealthy(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> Option<Error> {
        Some(Error::Usage("x".into()))
    }

    #[test]
    fn only_changes_of_health_are_turns() {
        let mut health = Health::new("/health".into(), Duration::from_secs(1));
        assert!(matches!(
            health.judge(None),
            Some(Turn::Healthy { again: false })
        ));
        assert!(health.judge(None).is_none());
        assert!(matches!(health.judge(failure()), Some(Turn::Unhealthy(_))));
        assert!(health.judge(failure()).is_none());
        assert!(matches!(
            health.judge(None),
            Some(Turn::Healthy { again: true })
        ));
    }

    #[test]
    fn failing_from_the_start_is_one_turn() {
        let mut health = Health::new("/health".into(), Duration::from_secs(1));
        assert!(matches!(health.judge(failure()), Some(Turn::Unhealthy(_))));
        assert!(health.judge(failure()).is_none());
    }
}
