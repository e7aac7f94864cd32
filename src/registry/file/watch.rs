//! The file store's [`Watch`]: a thread that waits on an inotify watch of `keys/` and on the
//! earliest expiry of a watched key's lease (a lease running out is announced by no write),
//! and makes an eventfd readable when a key under the prefix may have changed.
//!
//! Everything that touches the store's files (reading inotify's events, reading the value
//! files' headers for their leases, which on a slow or stalled volume can take long) happens
//! on that thread, never on the caller's: a supervisor polls the eventfd with its signals and
//! children. When `keys/` itself goes (removed, or moved away), the watch says so once and
//! watches the new `keys/` as soon as there is one again.
//!
//! The thread knows the lease of every watched key that has one, so an event costs the header
//! of the files it names, not a rescan of every key (20,000 keys took 12 ms a put): the whole
//! of `keys/` is read again only at the start, after inotify's queue overflowed, and when
//! `keys/` is watched anew. Leases are read again when their expiry comes; a lease renewed
//! meanwhile only moves that deadline. Value files are opened as every reader opens them
//! (never through a link, never a FIFO: the thread must not block in `open`).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::format::{may_start_with, parse_name};
use super::layout::{key_and_lease, key_files, Layout, LeaseState};
use crate::duration::poll_timeout_until;
use crate::error::Error;
use crate::registry::{LeaseId, Watch};

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
            .map_err(|err| Error::io(layout.keys_path(), "watching the registry directory", err))?;
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
            leased: HashMap::new(),
            leases: HashMap::new(),
            rescan_due: true,
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

/// An inotify watch of `keys/`, never through a link (`IN_DONT_FOLLOW`), and only of a
/// directory (`IN_ONLYDIR`): a `keys` swapped for a link to elsewhere is not watched.
fn watch_keys(layout: &Layout) -> Result<Inotify, std::io::Error> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(
        &layout.keys_path(),
        watched_events() | AddWatchFlags::IN_DONT_FOLLOW | AddWatchFlags::IN_ONLYDIR,
    )?;
    Ok(inotify)
}

/// What is known of one lease of watched keys.
struct Lease {
    /// When it runs out (read from its file; a renewal since only makes it later), or None
    /// once it has: its keys were announced as changed then, once.
    expires: Option<SystemTime>,
    /// How many watched keys hold it.
    keys: usize,
}

/// The thread's state.
struct Watcher {
    layout: Layout,
    prefix: String,
    /// None while `keys/` is gone.
    inotify: Option<Inotify>,
    changes: Arc<EventFd>,
    stop: Arc<EventFd>,
    /// The files of the watched keys that hold a lease, and which.
    leased: HashMap<OsString, LeaseId>,
    leases: HashMap<LeaseId, Lease>,
    /// The whole of `keys/` must be read again: at the start, after an overflow of inotify's
    /// queue, when `keys/` is watched anew, and after a rescan that failed.
    rescan_due: bool,
}

/// What one wake-up of the thread found.
#[derive(Default)]
struct Found {
    changed: bool,
    keys_gone: bool,
    /// inotify lost events: every file must be looked at again.
    overflowed: bool,
    /// The files under the prefix that events named.
    names: HashSet<OsString>,
}

impl Watcher {
    fn run(mut self) {
        self.rescan();
        loop {
            let deadline = match self.inotify {
                Some(_) if !self.rescan_due => self.earliest_expiry(),
                _ => Some(Instant::now() + LOOK_FOR_KEYS),
            };
            let (stopped, events) = self.wait(deadline);
            if stopped {
                return;
            }
            let mut found = match (&self.inotify, events) {
                (Some(inotify), true) => self.read_events(inotify),
                _ => Found::default(),
            };
            if found.keys_gone {
                log::warn!(
                    "{}: the directory went; watching for a new one",
                    self.layout.keys_path().display()
                );
                self.inotify = None;
            }
            if self.inotify.is_none() {
                self.inotify = watch_keys(&self.layout).ok();
                if self.inotify.is_some() {
                    log::warn!("{}: watching it again", self.layout.keys_path().display());
                    found.changed = true;
                    self.rescan_due = true;
                }
            }
            if found.overflowed || self.rescan_due {
                self.rescan();
            } else if !found.names.is_empty() {
                self.reread(&found.names);
            }
            // A lease renewed in time changed nothing; one that ran out took its keys.
            found.changed |= self.leases_ran_out();
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

    /// Reads every pending event: which files under the prefix they name, and whether `keys/`
    /// itself went or events were lost.
    fn read_events(&self, inotify: &Inotify) -> Found {
        let mut found = Found::default();
        loop {
            match inotify.read_events() {
                Ok(events) => {
                    for event in events {
                        let went = AddWatchFlags::IN_DELETE_SELF
                            | AddWatchFlags::IN_MOVE_SELF
                            | AddWatchFlags::IN_IGNORED;
                        found.keys_gone |= event.mask.intersects(went);
                        match event.name {
                            // No name: the queue overflowed or keys/ itself went.
                            None => {
                                found.changed = true;
                                found.overflowed = true;
                            }
                            Some(name) if self.is_watched(&name) => {
                                found.changed = true;
                                found.names.insert(name);
                            }
                            Some(_) => {}
                        }
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return found,
                Err(err) => {
                    log::debug!("reading the registry watch: {err}");
                    found.changed = true;
                    found.overflowed = true;
                    return found;
                }
            }
        }
    }

    /// Whether the file `name` of `keys/` may hold a key under the prefix.
    fn is_watched(&self, name: &OsStr) -> bool {
        parse_name(name).is_some_and(|shown| may_start_with(&shown, &self.prefix))
    }

    /// Reads the header of every watched key's file again. When the store cannot be read,
    /// looks again soon rather than never: the next look may succeed.
    fn rescan(&mut self) {
        let names = self
            .layout
            .keys()
            .and_then(|keys| key_files(&keys, &self.prefix));
        match names {
            Ok(names) => {
                for (_, lease) in std::mem::take(&mut self.leased) {
                    self.release(lease);
                }
                self.reread(&names.into_iter().collect());
                self.rescan_due = false;
            }
            Err(err) => {
                log::debug!("no lease deadline: {err}");
                self.rescan_due = true;
            }
        }
    }

    /// Reads the headers of the files `names` again: which lease, if any, each holds now.
    fn reread(&mut self, names: &HashSet<OsString>) {
        let keys = match self.layout.keys() {
            Ok(keys) => keys,
            Err(err) => {
                log::debug!("no lease deadline: {err}");
                self.rescan_due = true;
                return;
            }
        };
        for name in names {
            let lease = key_and_lease(&keys, name)
                .filter(|(key, _)| key.starts_with(&self.prefix))
                .and_then(|(_, lease)| lease);
            let before = match lease {
                Some(lease) => {
                    self.hold(lease);
                    self.leased.insert(name.clone(), lease)
                }
                None => self.leased.remove(name),
            };
            if let Some(before) = before {
                self.release(before);
            }
        }
    }

    /// One more watched key holds `lease`; a lease not known yet is read.
    fn hold(&mut self, lease: LeaseId) {
        if let Some(known) = self.leases.get_mut(&lease) {
            known.keys += 1;
            return;
        }
        let expires = self.expiry(lease);
        self.leases.insert(lease, Lease { expires, keys: 1 });
    }

    fn release(&mut self, lease: LeaseId) {
        if let Some(known) = self.leases.get_mut(&lease) {
            known.keys -= 1;
            if known.keys == 0 {
                self.leases.remove(&lease);
            }
        }
    }

    /// When the lease runs out, from its file; None when it has, or is no lease (readers
    /// ignore its keys). When it cannot be read now, a moment from now: it is read again then.
    fn expiry(&self, lease: LeaseId) -> Option<SystemTime> {
        let state = self.layout.leases().and_then(|leases| leases.state(lease));
        match state {
            Ok(LeaseState::Live { expires }) => Some(expires),
            Ok(_) => None,
            Err(err) => {
                log::debug!("no lease deadline: {err}");
                Some(SystemTime::now() + LOOK_FOR_KEYS)
            }
        }
    }

    /// Reads again the leases whose expiry has come: whether one of them ran out (its keys
    /// changed) rather than being renewed.
    fn leases_ran_out(&mut self) -> bool {
        let now = SystemTime::now();
        let due: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, known)| known.expires.is_some_and(|at| at <= now))
            .map(|(lease, _)| *lease)
            .collect();
        let mut ran_out = false;
        for lease in due {
            let expires = self.expiry(lease);
            ran_out |= expires.is_none();
            if let Some(known) = self.leases.get_mut(&lease) {
                known.expires = expires;
            }
        }
        ran_out
    }

    /// The earliest expiry among the watched keys' leases, on the monotonic clock.
    fn earliest_expiry(&self) -> Option<Instant> {
        let earliest = self
            .leases
            .values()
            .filter_map(|known| known.expires)
            .min()?;
        let wait = earliest
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Instant::now().checked_add(wait)
    }
}
