//! `--init` (docs/reference.md §6): the command becomes a child and the harness stays as its
//! parent, doing what tini and dumb-init do as PID 1, plus giving orphans time for their cleanup.
//!
//! - The command is started ([`start`]) in a process group of its own (as tini does), and when
//!   the harness's stdin is a terminal that group is made the terminal's foreground, so Ctrl-C
//!   and job control reach the command as they would without envharness.
//! - SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH and SIGCONT are forwarded to
//!   the command (`--group`: to its process group). They are blocked from the harness's start
//!   and read from the signalfd, so one that arrives while the command is being started is
//!   delivered once it runs. After SIGTERM or SIGINT the command has `--stop-timeout` to exit
//!   before SIGKILL.
//! - Every child is reaped (SIGCHLDs coalesce). When the harness is not PID 1 it becomes a
//!   child subreaper, so orphans of the command come to it. When the command has exited, the
//!   processes left under the harness get SIGTERM and up to `--stop-timeout` to exit, then
//!   SIGKILL; the harness returns only when none is left.
//! - Under `--watch` (docs/reference.md §7) the same loop re-runs discovery ([`rerun`]): its
//!   scripts are a pool the supervisor's loop drives between its other events, so the command stays
//!   supervised while they run. SIGHUP then asks for a re-run and is not forwarded; a change
//!   restarts or signals the command.
//! - With a registry (docs/reference.md §11), the same loop publishes what the export phase
//!   announced once the command runs (and [`health`] passed), renews the lease, withdraws the keys
//!   before a SIGTERM or SIGINT is forwarded and when the command exits, and re-runs discovery when
//!   what the scripts read changed. The store is reached through a thread (the registration): its
//!   answers are one more descriptor of the poll.
//! - It sleeps in `poll`, with a timeout only while a deadline is pending: an idle supervisor
//!   uses no CPU.
//!
//! The export directory's `teardown` runs after [`supervise`] returns (see `lib.rs`).

mod drain;
mod health;
pub mod rerun;
mod start;
mod supervisor;

use std::ffi::OsString;
use std::time::Duration;

use nix::sys::signal::Signal;

pub use supervisor::supervise;

use crate::exec::Found;
use crate::os::user::Switch;
use crate::phase::Directory;
use crate::runner::Limits;
use crate::variables::Environment;
use rerun::RerunSettings;

/// `--init`'s settings (docs/reference.md §6), and `--watch`'s inside them: only a supervising
/// harness can re-run discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervision {
    /// `--group`: signals go to the command's whole process group.
    pub group: bool,
    pub stop_timeout: Duration,
    /// How often the export directory's `health` runs (docs/reference.md §11.4).
    pub health_interval: Duration,
    /// `--watch` and `--on-change`.
    pub rerun: Option<RerunSettings>,
    /// `--drain`: how long after a stop signal the command keeps serving before it gets it.
    pub drain: Duration,
    /// `--rewrite`: forwarded signals sent as others, or dropped.
    pub rewrites: Rewrites,
    /// `--remap-exit`: the command's statuses the harness exits with as others.
    pub exit_map: ExitMap,
}

/// `--rewrite FROM:TO` (docs/reference.md §13.3): a forwarded FROM is sent as TO, or dropped
/// (None). What the harness itself does on FROM does not change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrites(pub Vec<(Signal, Option<Signal>)>);

impl Rewrites {
    /// What to send the command for a forwarded `signal`; None to send nothing.
    pub fn apply(&self, signal: Signal) -> Option<Signal> {
        match self.0.iter().rev().find(|(from, _)| *from == signal) {
            Some((_, to)) => *to,
            None => Some(signal),
        }
    }
}

/// `--remap-exit N:M` (docs/reference.md §13.3): the harness exits M where the command's status
/// would be N. Only the command's statuses: never the harness's own failures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitMap(pub Vec<(i32, i32)>);

impl ExitMap {
    pub fn apply(&self, status: i32) -> i32 {
        match self.0.iter().rev().find(|(from, _)| *from == status) {
            Some((_, to)) => *to,
            None => status,
        }
    }
}
/// What runs under supervision.
pub struct Service<'a> {
    pub command: &'a [OsString],
    /// Where the command was found before the start.
    pub found: Option<Found>,
    /// The command's environment; once supervision is over, the environment of the command
    /// that ran last (teardown gets it).
    pub env: Environment,
    /// An environment directory set HOME (`--user` then leaves it as it is).
    pub home_from_directory: bool,
    /// `--user`: who the command runs as.
    pub user: Option<&'a Switch>,
    /// The export directory, whose `health` runs while the command does.
    pub export: &'a Directory,
    /// How `health` and a re-run's scripts run.
    pub limits: Limits,
}
