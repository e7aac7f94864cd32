//! The file store's [`Watch`]: a thread that waits on an inotify watch of `keys/` and on the
//! earliest expiry of a watched key's lease (a lease running out is announced by no write),
//! and makes an eventfd readable when a key under the prefix may have changed.
//!
//! Everything that touches the store's files (reading inotify's events, rescanning the value
//! files' headers for their leases, which on a slow or stalled volume can take long) happens
//! on that thread, never on the caller's: a supervisor polls the eventfd with its signals and
//! children. When `keys/` itself goes (removed, or moved away), the watch says so once and
//! watches the new `keys/` as soon as there is one again.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::format::{may_start_with, parse_name};
use super::layout::{key_and_lease, Layout};
use crate::duration::poll_timeout_until;
use crate::error::Error;
use crate::registry::Watch;

/// How often a watch whose `keys/` went looks for a new one.
const LOOK_FOR_KEYS: Duration = Duration::from_secs(1);

/// What a put (a rename into keys/), a del and an expired key's removal do, and an edit by
/// hand; temporary files are written elsewhere and leases renewed elsewhere. The `_SELF`
/// events say that keys/ itself went.
fn watched_events() -> AddWatchFlags {
    AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

pub struct FileWatch {
    /// Readable when a key under the prefix may have changed.
    changes: Arc<EventFd>,
    /// Written when the watch is dropped: the thread ends.
    stop: Arc<EventFd>,
}

impl FileWatch {
    /// Watches the keys of `layout` that start with `prefix`. The inotify watch is added here,
    /// so a store that cannot be watched is this call's error; the rest runs on a thread.
    pub(super) fn start(layout: Layout, prefix: &str) -> Result<FileWatch, Error> {
        let inotify = watch_keys(&layout)
            .map_err(|err| Error::io(&layout.keys, "watching the registry directory", err))?;
        let eventfd = || {
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map(Arc::new)
                .map_err(|err| Error::io("eventfd", "watching the registry", err.into()))
        };
        let (changes, stop) = (eventfd()?, eventfd()?);
        let watcher = Watcher {
            layout,
            prefix: prefix.to_owned(),
            inotify: Some(inotify),
            changes: changes.clone(),
            stop: stop.clone(),
            expiry: None,
        };
        std::thread::Builder::new()
            .name("registry-watch".into())
            .spawn(move || watcher.run())
            .map_err(|err| Error::io("thread", "watching the registry", err))?;
        Ok(FileWatch { changes, stop })
    }
}

impl Watch for FileWatch {
    fn fd(&self) -> BorrowedFd<'_> {
        self.changes.as_fd()
    }

    fn drain(&mut self) -> bool {
        // EAGAIN: nothing since the last drain.
        self.changes.read().is_ok_and(|count| count > 0)
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        // The thread is not joined: one stuck on a stalled volume must not hold up the caller.
        let _ = self.stop.write(1);
    }
}

fn watch_keys(layout: &Layout) -> Result<Inotify, std::io::Error> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(&layout.keys, watched_events())?;
    Ok(inotify)
}

/// The thread's state.
struct Watcher {
    layout: Layout,
    prefix: String,
    /// None while `keys/` is gone.
    inotify: Option<Inotify>,
    changes: Arc<EventFd>,
    stop: Arc<EventFd>,
    /// The earliest expiry of a watched key's lease.
    expiry: Option<Instant>,
}

/// What one wake-up of the thread found.
struct Found {
    changed: bool,
    keys_gone: bool,
}

impl Watcher {
    fn run(mut self) {
        self.expiry = self.scan_leases().0;
        loop {
            let deadline = match self.inotify {
                Some(_) => self.expiry,
                None => Some(Instant::now() + LOOK_FOR_KEYS),
            };
            let (stopped, events) = self.wait(deadline);
            if stopped {
                return;
            }
            let mut found = match (&self.inotify, events) {
                (Some(inotify), true) => self.read_events(inotify),
                _ => Found {
                    changed: false,
                    keys_gone: false,
                },
            };
            if found.keys_gone {
                log::warn!(
                    "{}: the directory went; watching for a new one",
                    self.layout.keys.display()
                );
                self.inotify = None;
            }
            if self.inotify.is_none() {
                self.inotify = watch_keys(&self.layout).ok();
                if self.inotify.is_some() {
                    log::warn!("{}: watching it again", self.layout.keys.display());
                    found.changed = true;
                }
            }
            let expired = self.expiry.is_some_and(|at| at <= Instant::now());
            if found.changed || expired {
                let (expiry, dead) = self.scan_leases();
                self.expiry = expiry;
                // A lease renewed in time changed nothing; one that ran out took its keys.
                found.changed |= dead;
            }
            if found.changed {
                let _ = self.changes.write(1);
            }
        }
    }

    /// Sleeps until inotify has events, the watch is dropped, or `deadline`; returns whether
    /// it was dropped and whether there are events.
    fn wait(&self, deadline: Option<Instant>) -> (bool, bool) {
        let mut fds = vec![PollFd::new(self.stop.as_fd(), PollFlags::POLLIN)];
        if let Some(inotify) = &self.inotify {
            fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
        }
        if let Err(err) = nix::poll::poll(&mut fds, poll_timeout_until(deadline)) {
            if err != Errno::EINTR {
                log::debug!("waiting for the registry: {err}");
                // Rather than spin on a poll that fails at once.
                std::thread::sleep(LOOK_FOR_KEYS);
            }
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|events| !events.is_empty());
        (ready(&fds[0]), fds.get(1).is_some_and(ready))
    }

    /// Reads every pending event: whether one may concern a key under the prefix, and whether
    /// `keys/` itself went.
    fn read_events(&self, inotify: &Inotify) -> Found {
        let mut found = Found {
            changed: false,
            keys_gone: false,
        };
        loop {
            match inotify.read_events() {
                Ok(events) => {
                    for event in events {
                        let went = AddWatchFlags::IN_DELETE_SELF
                            | AddWatchFlags::IN_MOVE_SELF
                            | AddWatchFlags::IN_IGNORED;
                        found.keys_gone |= event.mask.intersects(went);
                        // No name: the queue overflowed or keys/ itself went; assume a change.
                        found.changed |= match &event.name {
                            None => true,
                            Some(name) => parse_name(name)
                                .is_some_and(|shown| may_start_with(&shown, &self.prefix)),
                        };
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return found,
                Err(err) => {
                    log::debug!("reading the registry watch: {err}");
                    found.changed = true;
                    return found;
                }
            }
        }
    }

    /// The earliest expiry of the lease of a key under the prefix, read from the value files'
    /// headers (not the values), and whether such a key's lease has run out. When the store
    /// cannot be read, look again soon rather than never: the next look may succeed.
    fn scan_leases(&self) -> (Option<Instant>, bool) {
        match self.leases_of_watched_keys() {
            Ok(found) => found,
            Err(err) => {
                log::debug!("no lease deadline: {err}");
                (Some(Instant::now() + LOOK_FOR_KEYS), false)
            }
        }
    }

    fn leases_of_watched_keys(&self) -> Result<(Option<Instant>, bool), Error> {
        let mut leases = HashMap::new();
        let mut earliest: Option<SystemTime> = None;
        let mut dead = false;
        for path in self.layout.key_files(&self.prefix)? {
            let Some(lease) = key_and_lease(&path)
                .filter(|(key, _)| key.starts_with(&self.prefix))
                .and_then(|(_, lease)| lease)
            else {
                continue;
            };
            match self.layout.lease_expiry(lease, &mut leases)? {
                Some(expires) => earliest = Some(earliest.map_or(expires, |at| at.min(expires))),
                None => dead = true,
            }
        }
        let now_wall = SystemTime::now();
        let now = Instant::now();
        let earliest = earliest
            .and_then(|at| now.checked_add(at.duration_since(now_wall).unwrap_or_default()));
        Ok((earliest, dead))
    }
}
