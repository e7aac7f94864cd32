//! The store's directory on disk: whether a directory may be used as a store (its mark, an
//! earlier version's layout, or nothing), where each file lives, the lock that makes removals
//! safe, reading values and leases, and sweeping what dead writers and holders left.
//!
//! Every file is reached through [`StoreDir`]s opened from the store's directory without
//! following a link, and only names of the store's own patterns are ever removed.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::super::{LeaseId, REACH_TIMEOUT, VALUE_LIMIT};
use super::dir::{DirError, Entry, StoreDir, SYMLINK};
use super::format::{
    file_name, is_temporary_name, may_start_with, parse_header, parse_lease, parse_lease_name,
    parse_name, parse_record, temporary_name, Record, HEADER_LIMIT,
};
use crate::error::Error;
use crate::os::dir::Listed;
use crate::os::read_file_at_most;

pub(super) const KEYS: &str = "keys";
pub(super) const LEASES: &str = "leases";
pub(super) const TMP: &str = "tmp";
/// The file that marks a directory as a store: a regular file in DIR (docs/reference.md §11.1).
pub(super) const MARK: &str = "envharness-store";
/// What the mark says to whoever lists the directory.
const MARK_CONTENT: &[u8] =
    b"envharness-store 1\nThis directory is an envharness file store: envharness writes keys/, leases/ and tmp/.\n";
/// A filesystem's own directory at the top of a volume, which makes no directory less empty.
const LOST_AND_FOUND: &str = "lost+found";
/// A temporary file this old belongs to a writer that died: the next grant removes it.
pub(super) const STALE_TEMPORARY: Duration = Duration::from_secs(60);

/// The store's directory, open, and what its mode implies for the files written into it.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// DIR, opened once: everything else is reached from it without following a link.
    root: Arc<StoreDir>,
    /// Owner read/write, plus the group's and others' read bits where the directory has them.
    pub(super) file_mode: u32,
}

/// What a lease file says now.
pub(super) enum LeaseState {
    Live {
        expires: SystemTime,
    },
    Expired,
    Missing,
    /// A regular file that is not a lease (a crash's or a hand's), which the sweep removes.
    Garbage(String),
    /// Not a regular file, or not readable by us: never read, never removed.
    Unusable(String),
}

/// Whether an existing directory may be a store, and whether it says so already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    Marked,
    /// Empty, or holding only an earlier version's `keys/`, `leases/` and `tmp/`.
    Unmarked,
}

impl Layout {
    /// The store at `path`, an existing directory: used if it is marked as a store, empty, or
    /// holds only what an earlier envharness made there (then marked); anything else is
    /// [`Error::NotAStore`] and nothing in it changes. Missing subdirectories are made with
    /// the directory's own mode: a store made group-writable (and setgid) beforehand stays
    /// writable by the group; not its sticky bit, which would keep the group's writers from
    /// replacing one another's values.
    pub(super) fn open(path: &Path) -> Result<Layout, Error> {
        let unreadable = |err| Error::io(path, "reading the registry directory", err);
        let root = StoreDir::open_root(path).map_err(unreadable)?;
        let mode = root.metadata().map_err(unreadable)?.permissions().mode();
        let claim = examine(&root)?;
        let layout = Layout {
            root: Arc::new(root),
            file_mode: 0o600 | (mode & 0o044),
        };
        for name in [KEYS, LEASES, TMP] {
            layout.ensure_subdir(name, mode & 0o2777)?;
        }
        if claim == Claim::Unmarked {
            layout.mark();
        }
        Ok(layout)
    }

    /// DIR's path, for messages.
    pub(super) fn path(&self) -> &Path {
        self.root.path()
    }

    /// `keys/`'s path: what inotify watches (the watch is re-added when `keys/` is made anew).
    pub(super) fn keys_path(&self) -> PathBuf {
        self.path().join(KEYS)
    }

    pub(super) fn keys(&self) -> Result<StoreDir, Error> {
        self.subdir(KEYS)
    }

    pub(super) fn tmp(&self) -> Result<StoreDir, Error> {
        self.subdir(TMP)
    }

    pub(super) fn leases(&self) -> Result<Leases, Error> {
        Ok(Leases {
            dir: self.subdir(LEASES)?,
            known: HashMap::new(),
        })
    }

    fn subdir(&self, name: &str) -> Result<StoreDir, Error> {
        self.root
            .open_subdir(name)
            .map_err(|err| self.subdir_error(name, err))
    }

    fn subdir_error(&self, name: &str, err: DirError) -> Error {
        let path = self.root.path_of(name);
        match err {
            DirError::Missing => {
                Error::io(path, "reading the registry directory", Errno::ENOENT.into())
            }
            DirError::NotADirectory(kind) if kind == SYMLINK => Error::entry(
                path,
                format!("{kind}, which the file store never follows: it must be a directory"),
            ),
            DirError::NotADirectory(kind) => Error::entry(path, format!("{kind}, not a directory")),
            DirError::Failed(err) => Error::io(path, "reading the registry directory", err),
        }
    }

    /// Opens the subdirectory `name`, making it if it is missing.
    fn ensure_subdir(&self, name: &str, mode: u32) -> Result<(), Error> {
        match self.root.open_subdir(name) {
            Ok(_) => Ok(()),
            Err(DirError::Missing) => {
                self.root.create_subdir(name, mode).map_err(|err| {
                    Error::io(
                        self.root.path_of(name),
                        "creating the registry directory",
                        err,
                    )
                })?;
                self.subdir(name).map(drop)
            }
            Err(err) => Err(self.subdir_error(name, err)),
        }
    }

    /// Marks the directory as a store. Best effort: a reader that may not write DIR (a
    /// consumer of an earlier version's store, a read-only volume) uses the store unmarked,
    /// and its next writer marks it.
    fn mark(&self) {
        let name = OsStr::new(MARK);
        let written = self
            .root
            .create_new(name, self.file_mode)
            .and_then(|mut file| file.write_all(MARK_CONTENT));
        match written {
            Ok(()) => {}
            // Another process marked it at the same moment.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => log::debug!(
                "{}: not marked as a store ({err}); its next writer marks it",
                self.path().display()
            ),
        }
    }

    /// Every live key (with its value) whose file name may hold a key starting with `prefix`.
    pub(super) fn live_records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let keys = self.keys()?;
        let mut leases = self.leases()?;
        let mut found = Vec::new();
        for name in key_files(&keys, prefix)? {
            let Some(record) = read_record(&keys, &name, None)? else {
                continue;
            };
            if !record.key.starts_with(prefix) {
                continue;
            }
            if let Some(lease) = record.lease {
                if leases.expiry(lease)?.is_none() {
                    remove_expired(&keys, &leases, &name, lease);
                    continue;
                }
            }
            found.push((record.key, record.value));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// A new file in `tmp/` holding `bytes`, with the store's file mode; returns its name.
    /// Errors name `target`, the file it is meant to replace.
    pub(super) fn write_temporary(
        &self,
        tmp: &StoreDir,
        bytes: &[u8],
        target: &Path,
    ) -> Result<OsString, Error> {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let name = OsString::from(temporary_name(
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed),
            random_u64(),
        ));
        let written = tmp
            .create_new(&name, self.file_mode)
            .and_then(|mut file| file.write_all(bytes));
        match written {
            Ok(()) => Ok(name),
            Err(err) => {
                let _ = tmp.remove(&name);
                Err(Error::io(target, "writing to the registry", err))
            }
        }
    }

    /// Removes what dead holders and writers left: expired or garbage lease files, and
    /// temporary files older than [`STALE_TEMPORARY`], each only if its name is one the store
    /// gives (a lease id, a temporary name) and it is a regular file. Expired keys are removed
    /// by the readers that come across them.
    pub(super) fn sweep(&self) -> Result<(), Error> {
        let keys = self.keys()?;
        let _lock = lock(&keys)?;
        let leases = self.leases()?;
        for (name, _) in leases
            .dir
            .names()
            .map_err(|err| listing(&leases.dir, err))?
        {
            let Some(lease) = parse_lease_name(&name) else {
                continue;
            };
            match leases.state(lease)? {
                LeaseState::Expired => {
                    let _ = leases.dir.remove(&name);
                }
                LeaseState::Garbage(reason) => {
                    log::warn!("{}: {reason}; removed", leases.dir.path_of(&name).display());
                    let _ = leases.dir.remove(&name);
                }
                LeaseState::Live { .. } | LeaseState::Missing | LeaseState::Unusable(_) => {}
            }
        }
        let tmp = self.tmp()?;
        for (name, _) in tmp.names().map_err(|err| listing(&tmp, err))? {
            if !is_temporary_name(&name) {
                continue;
            }
            let stale = tmp
                .regular_file_age(&name)
                .is_ok_and(|age| age.is_some_and(|age| age > STALE_TEMPORARY));
            if stale {
                let _ = tmp.remove(&name);
            }
        }
        Ok(())
    }
}

/// Whether the existing directory `root` may be a store: marked as one, or holding nothing but
/// `lost+found` and an earlier version's `keys/`, `leases/` and `tmp/` (real directories).
/// The mark is looked at with `lstat`: a link named like it marks nothing.
fn examine(root: &StoreDir) -> Result<Claim, Error> {
    let unreadable = |err| Error::io(root.path(), "reading the registry directory", err);
    match root.stat(OsStr::new(MARK)) {
        Ok(stat) if is_regular(stat.st_mode) => return Ok(Claim::Marked),
        Ok(_) => return Err(not_a_store(root)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(unreadable(err)),
    }
    let mut claim = Claim::Unmarked;
    for (name, listed) in root.names().map_err(unreadable)? {
        let is = |wanted: fn(u32) -> bool| match listed {
            Listed::Directory => wanted(nix::libc::S_IFDIR),
            Listed::File => wanted(nix::libc::S_IFREG),
            Listed::Other | Listed::Unknown => {
                root.stat(&name).is_ok_and(|stat| wanted(stat.st_mode))
            }
        };
        let ours = match name.to_str() {
            Some(KEYS | LEASES | TMP | LOST_AND_FOUND) => is(is_directory),
            // Marked by another process since we looked.
            Some(MARK) if is(is_regular) => {
                claim = Claim::Marked;
                true
            }
            _ => false,
        };
        if !ours {
            return Err(not_a_store(root));
        }
    }
    Ok(claim)
}

fn not_a_store(root: &StoreDir) -> Error {
    Error::NotAStore {
        path: root.path().to_owned(),
    }
}

fn is_regular(mode: u32) -> bool {
    mode & nix::libc::S_IFMT == nix::libc::S_IFREG
}

fn is_directory(mode: u32) -> bool {
    mode & nix::libc::S_IFMT == nix::libc::S_IFDIR
}

fn listing(dir: &StoreDir, err: io::Error) -> Error {
    Error::io(dir.path(), "reading the registry directory", err)
}

/// The exclusive lock every rename and removal in `keys/` holds (see the module comment of
/// the store), waited for at most [`REACH_TIMEOUT`]: a holder stopped with SIGSTOP must not
/// hang every writer of the machine. Holders keep it for a rename or a few removals, so the
/// retries start at 0.1 ms. It is taken on `keys` itself, the directory the caller works in.
pub(super) fn lock(keys: &StoreDir) -> Result<Flock<File>, Error> {
    let failed = |err| Error::io(keys.path(), "locking the registry directory", err);
    let give_up = Instant::now() + REACH_TIMEOUT;
    let mut pause = Duration::from_micros(100);
    let mut dir = keys.duplicate().map_err(failed)?;
    loop {
        match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((file, Errno::EWOULDBLOCK)) if Instant::now() < give_up => {
                dir = file;
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(failed(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "another process has held the lock for {} s",
                        REACH_TIMEOUT.as_secs()
                    ),
                )))
            }
            Err((_, errno)) => return Err(failed(errno.into())),
        }
    }
}

/// The lock if nobody holds it now, for work that can be left to the next one.
pub(super) fn try_lock(keys: &StoreDir) -> Option<Flock<File>> {
    let dir = keys.duplicate().ok()?;
    Flock::lock(dir, FlockArg::LockExclusiveNonblock).ok()
}

/// The names in `keys/` that may hold a key that starts with `prefix`; others are passed
/// over with a warning.
pub(super) fn key_files(keys: &StoreDir, prefix: &str) -> Result<Vec<OsString>, Error> {
    let mut files = Vec::new();
    for (name, _) in keys.names().map_err(|err| listing(keys, err))? {
        match parse_name(&name) {
            Some(shown) if may_start_with(&shown, prefix) => files.push(name),
            Some(_) => {}
            None => log::warn!(
                "{}: not a key of the file store; ignored",
                keys.path_of(&name).display()
            ),
        }
    }
    Ok(files)
}

/// The file `name` of `keys/` as a record of `key` (`key` None: any key), or None when it is
/// missing, another key's (a long name shared by two keys), or not to be read, with one
/// warning: not a regular file, not ours, or made unreadable by another member of a shared
/// store (which never fails the call: docs/reference.md §11.1).
pub(super) fn read_record(
    keys: &StoreDir,
    name: &OsStr,
    key: Option<&str>,
) -> Result<Option<Record>, Error> {
    let path = || keys.path_of(name);
    let ignored = |reason: &dyn std::fmt::Display| {
        log::warn!("{}: {reason}; ignored", path().display());
        Ok(None)
    };
    let file = match keys.open_regular(name) {
        Ok(Entry::File(file)) => file,
        Ok(Entry::Missing) => return Ok(None),
        Ok(Entry::Other(kind)) => {
            return ignored(&format!("{kind}, not a value of the file store"))
        }
        Err(err) if is_denied(&err) => return ignored(&format!("cannot be read ({err})")),
        Err(err) => return Err(Error::io(path(), "reading a value", err)),
    };
    let bytes = match read_file_at_most(file, VALUE_LIMIT + HEADER_LIMIT) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return ignored(&"larger than any value of the file store"),
        Err(err) => return Err(Error::io(path(), "reading a value", err)),
    };
    let record = match parse_record(bytes) {
        Ok(record) => record,
        Err(reason) => return ignored(&reason),
    };
    let named = file_name(&record.key);
    if name != OsStr::new(&named) {
        return ignored(&format!(
            "holds key {}, which belongs in {named}",
            record.key
        ));
    }
    Ok(match key {
        Some(key) if key != record.key => None,
        _ => Some(record),
    })
}

fn is_denied(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(nix::libc::EACCES | nix::libc::EPERM)
    )
}

/// Removes the key file `name` if it still belongs to `lease` and the lease is still dead,
/// under the lock so that no fresh value is removed. Best effort: a reader that may not write
/// the store, or finds the lock taken, leaves it to the next one.
pub(super) fn remove_expired(keys: &StoreDir, leases: &Leases, name: &OsStr, lease: LeaseId) {
    let removed = (|| -> Result<(), Error> {
        let Some(_lock) = try_lock(keys) else {
            return Ok(());
        };
        let still_dead = !matches!(leases.state(lease)?, LeaseState::Live { .. });
        let record = read_record(keys, name, None)?;
        if still_dead && record.is_some_and(|record| record.lease == Some(lease)) {
            keys.remove(name)
                .map_err(|err| Error::io(keys.path_of(name), "removing a key", err))?;
        }
        Ok(())
    })();
    if let Err(err) = removed {
        log::debug!("leaving an expired key for later: {err}");
    }
}

/// The key and lease of the value file `name`, from its header alone: what a watch needs to
/// know when a lease runs out, without reading the value. None for a file that is gone or not
/// a value (the readers warn about those); never blocks on one that is not a regular file.
pub(super) fn key_and_lease(keys: &StoreDir, name: &OsStr) -> Option<(String, Option<LeaseId>)> {
    let Ok(Entry::File(file)) = keys.open_regular(name) else {
        return None;
    };
    let mut head = Vec::with_capacity(HEADER_LIMIT + 2);
    file.take(HEADER_LIMIT as u64 + 2)
        .read_to_end(&mut head)
        .ok()?;
    let header = parse_header(&head).ok()?;
    Some((header.key, header.lease))
}

/// `leases/`, and what is known of its leases during one call.
pub(super) struct Leases {
    pub(super) dir: StoreDir,
    known: HashMap<LeaseId, Option<SystemTime>>,
}

impl Leases {
    pub(super) fn name(lease: LeaseId) -> OsString {
        OsString::from(lease.0.to_string())
    }

    pub(super) fn path_of(&self, lease: LeaseId) -> PathBuf {
        self.dir.path_of(Self::name(lease))
    }

    pub(super) fn state(&self, lease: LeaseId) -> Result<LeaseState, Error> {
        let name = Self::name(lease);
        let mut file = match self.dir.open_regular(&name) {
            Ok(Entry::File(file)) => file,
            Ok(Entry::Missing) => return Ok(LeaseState::Missing),
            Ok(Entry::Other(kind)) => {
                return Ok(LeaseState::Unusable(format!(
                    "{kind}, not a lease of the file store"
                )))
            }
            Err(err) if is_denied(&err) => {
                return Ok(LeaseState::Unusable(format!("cannot be read ({err})")))
            }
            Err(err) => return Err(Error::io(self.path_of(lease), "reading a lease", err)),
        };
        let renewed = file
            .metadata()
            .and_then(|meta| meta.modified())
            .map_err(|err| Error::io(self.path_of(lease), "reading a lease", err))?;
        let mut text = String::new();
        let read = (&mut file).take(256).read_to_string(&mut text);
        let ttl = match read.ok().and_then(|_| parse_lease(&text)) {
            Some(ttl) => ttl,
            None => return Ok(LeaseState::Garbage("not a lease of the file store".into())),
        };
        // A TTL no writer of ours gives (parse_lease caps it) must not overflow the clock.
        let Some(expires) = renewed.checked_add(ttl) else {
            return Ok(LeaseState::Garbage(format!(
                "a TTL of {}s is out of range",
                ttl.as_secs()
            )));
        };
        Ok(if SystemTime::now() < expires {
            LeaseState::Live { expires }
        } else {
            LeaseState::Expired
        })
    }

    /// When the lease runs out, or None when it has (or is not a lease: then with a
    /// warning); each lease is read once per [`Leases`].
    pub(super) fn expiry(&mut self, lease: LeaseId) -> Result<Option<SystemTime>, Error> {
        if let Some(expiry) = self.known.get(&lease) {
            return Ok(*expiry);
        }
        let expiry = match self.state(lease)? {
            LeaseState::Live { expires } => Some(expires),
            LeaseState::Expired | LeaseState::Missing => None,
            LeaseState::Garbage(reason) | LeaseState::Unusable(reason) => {
                log::warn!(
                    "{}: {reason}; its keys are ignored",
                    self.path_of(lease).display()
                );
                None
            }
        };
        self.known.insert(lease, expiry);
        Ok(expiry)
    }
}

/// 64 random bits: std's RandomState is seeded from the operating system's randomness.
pub(super) fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}
