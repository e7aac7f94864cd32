//! Signals and children: the harness's signalfd ([`signals`]), the process table
//! ([`procfs`]), the loop that drives scripts before the command runs ([`PhaseHost`]), and
//! `--init`'s supervisor ([`supervise`]), whose one poll loop also drives `--watch`'s re-runs.

mod children;
mod health;
mod phases;
pub mod procfs;
pub mod signals;
mod start;
mod supervisor;

use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};

pub use phases::PhaseHost;
pub use supervisor::{supervise, Extras, Supervision};

use crate::error::Error;
use signals::poll_timeout_until;

/// Sleeps until one of `fds` is readable or `deadline` passes; returns the indexes of the
/// readable ones (a hang-up or error counts as readable: the read then says what it is).
fn wait_readable(fds: &[BorrowedFd<'_>], deadline: Option<Instant>) -> Result<Vec<usize>, Error> {
    let mut polled: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    match poll(&mut polled, poll_timeout_until(deadline)) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(err) => return Err(Error::io("poll", "waiting for events", err.into())),
    }
    Ok(polled
        .iter()
        .enumerate()
        .filter(|(_, fd)| fd.revents().is_some_and(|events| !events.is_empty()))
        .map(|(at, _)| at)
        .collect())
}
