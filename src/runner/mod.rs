//! Running scripts: spawn, capture, time out, kill the process group, retry — for one script
//! or for up to N at once (`--jobs`).
//!
//! Each script is executed directly (never through `sh -c`) with stdin from /dev/null, in a
//! process group of its own so that a timeout or a stop reaches whatever it started. A
//! [`Pool`] holds the running scripts and owns no loop: whoever owns the signalfd (a
//! [`Host`]) polls the pool's pipes with its own descriptors, reaps children and hands their
//! exits to the pool, and wakes at the pool's deadline. Before the command runs that is the
//! phases' simple loop ([`host::PhaseHost`]); under `--watch` it is the supervisor's, so a re-run's
//! scripts run while the command stays supervised.
//!
//! The pool gives, without threads:
//! - timeouts: the group gets SIGTERM, then SIGKILL [`KILL_GRACE`] later;
//! - stuck pipes: once a script has exited, its stdout is read for at most [`PIPE_GRACE`]
//!   more, because a background process may hold it open forever;
//! - bounded memory: output past the caller's limit stops the script;
//! - stops: a stop signal goes to every running group and nothing more starts.
//!
//! Results come back in the order of the jobs, whatever order they finished in. After a
//! failure (retries used up) the other running scripts get SIGTERM and the failure of the
//! lexically first job that failed by itself is reported.

pub mod host;
mod pool;
mod spawn;
pub mod task;

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

pub use pool::{Pipe, Pool};

use crate::error::Error;
use crate::variables::EnvBlock;

/// Between SIGTERM and SIGKILL for a script that timed out or is being stopped
/// (docs/reference.md §3.4).
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long a script's pipes are still read after it exited.
pub const PIPE_GRACE: Duration = Duration::from_millis(100);

/// How scripts are run: a limit per run, and how failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_interval: Duration,
}

/// Where a script's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Captured, up to `limit` bytes; more stops the script.
    Capture { limit: usize },
    /// Passed to the harness's stderr (export scripts: stdout belongs to `--print`).
    ToStderr,
}

/// One script to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub path: PathBuf,
    /// The script's whole environment, shared: the environment phase hands each script the
    /// block it keeps up to date, and changes it in place once the script is done.
    pub env: Rc<EnvBlock>,
    pub stdout: Stdout,
}

/// What a successful run produced.
#[derive(Debug)]
pub struct Ran {
    pub output: Vec<u8>,
    pub elapsed: Duration,
}

/// Each job's outcome, in the jobs' order: None for a job that was stopped because another
/// failed, or never started.
pub type Outcomes = Vec<Option<Result<Ran, Error>>>;

/// The loop that drives pools: it owns the signalfd, reaps children, and decides what a
/// signal means while scripts run.
pub trait Host {
    /// How scripts are run.
    fn limits(&self) -> Limits;

    /// Runs `pool` until it is finished. An error (a stop signal, a cancelled re-run) ends
    /// the run; the pool has then been told to stop its scripts and was driven until they
    /// were gone.
    fn drive(&mut self, pool: &mut Pool) -> Result<(), Error>;

    /// Serves the loop's events until `fd` (a [`task::Task`]'s) is readable. An error (a stop
    /// signal, a cancelled re-run) ends the wait.
    fn wait_for(&mut self, fd: BorrowedFd<'_>) -> Result<(), Error>;
}

/// Runs the jobs, at most `parallel` at once (0: all at once), and returns each one's
/// outcome in the jobs' order. After a job fails for good nothing more starts and the other
/// running jobs are stopped (their outcome is None). With more than one job at once, stderr
/// lines get the script's name. A stop signal is the only error for the whole run.
pub fn run_all(host: &mut dyn Host, jobs: Vec<Job>, parallel: usize) -> Result<Outcomes, Error> {
    let mut pool = Pool::new(jobs, parallel, host.limits());
    host.drive(&mut pool)?;
    pool.into_outcomes()
}

/// Runs one script.
pub fn run_one(host: &mut dyn Host, job: Job) -> Result<Ran, Error> {
    run_all(host, vec![job], 1)?
        .remove(0)
        .expect("a lone job is never abandoned")
}
