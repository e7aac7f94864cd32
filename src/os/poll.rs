//! One `poll(2)` over descriptors that each carry a tag of the caller's choosing, so a loop
//! that waits on a signalfd, scripts' pipes and the registry's descriptors at once gets back
//! which of *its* sources are ready, not positions in an array it has to count again.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};

use crate::duration::poll_timeout_until;
use crate::error::Error;

/// The descriptors of one wait, each with its tag.
pub(crate) struct Poll<'fd, T> {
    fds: Vec<PollFd<'fd>>,
    tags: Vec<T>,
}

impl<'fd, T> Default for Poll<'fd, T> {
    fn default() -> Self {
        Poll {
            fds: Vec::new(),
            tags: Vec::new(),
        }
    }
}

impl<'fd, T> Poll<'fd, T> {
    /// Waits for `fd` to become readable; `tag` comes back when it is.
    pub(crate) fn add(&mut self, fd: BorrowedFd<'fd>, tag: T) -> &mut Self {
        self.fds.push(PollFd::new(fd, PollFlags::POLLIN));
        self.tags.push(tag);
        self
    }

    /// Sleeps until a descriptor is readable or `deadline` passes (None: no deadline, just
    /// the descriptors); returns the tags of the readable ones, in the order they were added.
    /// A hang-up or an error counts as readable: the read then says what it is. A signal
    /// that interrupts the sleep returns nothing ready.
    pub(crate) fn wait(mut self, deadline: Option<Instant>) -> Result<Vec<T>, Error> {
        match nix::poll::poll(&mut self.fds, poll_timeout_until(deadline)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => return Err(Error::io("poll", "waiting for events", err.into())),
        }
        let ready: Vec<bool> = self
            .fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|events| !events.is_empty()))
            .collect();
        Ok(self
            .tags
            .into_iter()
            .zip(ready)
            .filter_map(|(tag, ready)| ready.then_some(tag))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn the_ready_descriptors_come_back_as_their_tags() {
        let (quiet_read, _quiet_write) = nix::unistd::pipe().unwrap();
        let (loud_read, loud_write) = nix::unistd::pipe().unwrap();
        std::fs::File::from(loud_write).write_all(b"x").unwrap();
        let mut poll = Poll::default();
        poll.add(quiet_read.as_fd(), "quiet")
            .add(loud_read.as_fd(), "loud");
        assert_eq!(poll.wait(None).unwrap(), ["loud"]);
    }

    #[test]
    fn a_deadline_ends_the_wait_with_nothing_ready() {
        let (read, _write) = nix::unistd::pipe().unwrap();
        let mut poll = Poll::default();
        poll.add(read.as_fd(), ());
        let started = Instant::now();
        let ready = poll
            .wait(Some(Instant::now() + Duration::from_millis(20)))
            .unwrap();
        assert!(ready.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}
