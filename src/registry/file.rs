//! The embedded store, `file:///DIR` (SPEC.md 11.1): a directory that the containers of one
//! machine share through a volume, read and written by any number of processes at once.
//!
//! # Layout
//! ```text
//! DIR/keys/web%host-1      one file per key: '/' written as '%', which no key may hold
//! DIR/keys/#web%…#1f0c…    a key of more than 240 bytes: '#', its first 200, '#', a hash
//! DIR/leases/8125…         one file per lease, named by its id; holds the TTL
//! DIR/tmp/417-3-…          a value or lease being written, renamed into place when complete
//! ```
//! Keys are flat in one directory, so `KEY` and `KEY/…` live side by side, one inotify watch
//! covers them all, and no directory has to be created or removed while others write. Only key
//! files are in `keys/` (temporary and lease files elsewhere), so no other file can ever take a
//! key's name. A value file holds a small header (format, the key, its lease, the value's
//! size) and then the value's bytes: a long key's name is not the key, a lease must be found
//! from the key, and a file cut short by a crash shows by its size. Such a file, or any other
//! that is not one of ours, is ignored with a warning naming it; it never stops a reader.
//!
//! # Writes
//! A value is written whole to `tmp/`, then renamed over `keys/NAME`: a reader sees the old
//! value or the new one, never a part, and a full disk fails the write before the rename, so
//! the old value stays. Files are not fsynced: the registry is about running services, a value
//! lost with the machine is republished when they start again, and the size in the header
//! catches a file the crash cut short. Renames and removals into `keys/` happen under an
//! exclusive flock on the `keys/` directory; readers take no lock. The lock is what makes the
//! lazy removal of an expired key safe: under it, nobody can put a fresh value between the
//! check that the file still belongs to the dead lease and the unlink.
//!
//! # Leases
//! A lease is `leases/ID`, whose mtime is its last renewal and whose content is its TTL: it is
//! live until mtime + TTL. `keep_alive` only sets the mtime, in a directory no watch covers, so
//! renewals wake nobody. A key put with a lease names it in its header and is live while the
//! lease is; once the lease has run out, readers no longer see the key and remove it when they
//! come across it, and the next `grant` (by anyone) removes the lease file and leftovers of
//! crashed writers. A lease running out is announced by no write, so [`FileWatch::deadline`]
//! is the earliest expiry among the watched keys' leases, and a poll loop wakes then. The
//! clock is the wall clock (mtimes): the containers of one machine share it.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::{check_value, Key, LeaseId, Store, Watch, REACH_TIMEOUT, VALUE_LIMIT};
use crate::error::Error;

const KEYS: &str = "keys";
const LEASES: &str = "leases";
const TMP: &str = "tmp";

/// Stands for '/' in a key's file name: not a key character, so decoding is unambiguous.
const SEPARATOR: char = '%';
/// Starts the file name of a long key: not a key character, so it never names a short one.
const LONG: char = '#';
/// Keys up to this many bytes are their own file name (NAME_MAX is 255).
const SHORT_KEY: usize = 240;
/// How much of a long key its file name shows (so `ls` and a watch's prefix check still see it).
const LONG_SHOWN: usize = 200;

const VALUE_FORMAT: &str = "envharness-kv 1";
const LEASE_FORMAT: &str = "envharness-lease 1";
/// Room for a value file's header: the format line, a 512-byte key, a lease id and a size.
const HEADER_LIMIT: usize = 1024;
/// A temporary file this old belongs to a writer that died: the next grant removes it.
const STALE_TEMPORARY: Duration = Duration::from_secs(60);

/// The directory and what its mode implies for the files written into it.
#[derive(Debug, Clone)]
struct Layout {
    keys: PathBuf,
    leases: PathBuf,
    tmp: PathBuf,
    /// Owner read/write, plus the group's and others' read bits where the directory has them.
    file_mode: u32,
}

pub struct FileStore {
    url: String,
    layout: Layout,
}

/// A value file's content.
#[derive(Debug)]
struct Record {
    key: String,
    lease: Option<LeaseId>,
    value: Vec<u8>,
}

/// What a lease file says now.
enum LeaseState {
    Live { expires: SystemTime },
    Expired,
    Missing,
    Garbage(String),
}

impl FileStore {
    /// Opens the store at `root` (the path of `url`), creating the directory (mode 0700, with
    /// its missing parents) and its three subdirectories when missing.
    pub fn open(url: &str, root: PathBuf) -> Result<FileStore, Error> {
        create_directory(&root, 0o700, true)?;
        let mode = fs::metadata(&root)
            .map_err(|err| Error::io(&root, "reading the registry directory", err))?
            .permissions()
            .mode();
        // Listing the directory is the first thing a reader needs; fail here, naming it.
        fs::read_dir(&root)
            .map_err(|err| Error::io(&root, "reading the registry directory", err))?;
        let layout = Layout {
            keys: root.join(KEYS),
            leases: root.join(LEASES),
            tmp: root.join(TMP),
            file_mode: 0o600 | (mode & 0o044),
        };
        // The subdirectories take the directory's own mode, so a store made group-writable
        // (and setgid) beforehand stays writable by the group; not its sticky bit, which
        // would keep the group's writers from replacing one another's values.
        for dir in [&layout.keys, &layout.leases, &layout.tmp] {
            create_directory(dir, mode & 0o2777, false)?;
        }
        fs::read_dir(&layout.keys)
            .map_err(|err| Error::io(&layout.keys, "reading the registry directory", err))?;
        Ok(FileStore {
            url: url.to_owned(),
            layout,
        })
    }
}

/// `mkdir` with exactly `mode` (whatever the umask) unless it exists; with `parents`, the
/// missing parents first, with mode 0700 too (SPEC.md 11.1: the store is created "with its
/// missing parents" 0700; a parent that exists keeps its mode).
fn create_directory(path: &Path, mode: u32, parents: bool) -> Result<(), Error> {
    let failed = |err| Error::io(path, "creating the registry directory", err);
    if parents {
        if let Some(parent) = path.parent().filter(|parent| !parent.is_dir()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(failed)?;
        }
    }
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(failed),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(Error::entry(
            path,
            "not a directory: the registry must be a directory",
        )),
        Err(err) => Err(failed(err)),
    }
}

impl Layout {
    fn key_path(&self, key: &str) -> PathBuf {
        self.keys.join(file_name(key))
    }

    fn lease_path(&self, lease: LeaseId) -> PathBuf {
        self.leases.join(lease.0.to_string())
    }

    /// The exclusive lock every rename and removal in `keys/` holds (see the module comment),
    /// waited for at most [`REACH_TIMEOUT`]: a holder stopped with SIGSTOP must not hang
    /// every writer of the machine. Holders keep it for a rename or a few removals, so the
    /// retries start at 0.1 ms.
    fn lock(&self) -> Result<Flock<File>, Error> {
        let failed = |err| Error::io(&self.keys, "locking the registry directory", err);
        let give_up = Instant::now() + REACH_TIMEOUT;
        let mut pause = Duration::from_micros(100);
        let mut dir = File::open(&self.keys).map_err(failed)?;
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
    fn try_lock(&self) -> Option<Flock<File>> {
        let dir = File::open(&self.keys).ok()?;
        Flock::lock(dir, FlockArg::LockExclusiveNonblock).ok()
    }

    /// The file at `path` as a record of `key` (`key` None: any key), or None when it is
    /// missing, not ours (with a warning) or another key's (a long name shared by two keys).
    fn read_record(&self, path: &Path, key: Option<&str>) -> Result<Option<Record>, Error> {
        let bytes = match read_bounded(path, VALUE_LIMIT + HEADER_LIMIT) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            // Too large, or a directory: not something a writer of the store left.
            Err(err)
                if err.kind() == io::ErrorKind::InvalidData
                    || err.raw_os_error() == Some(nix::libc::EISDIR) =>
            {
                log::warn!(
                    "{}: not a value of the file store ({err}); ignored",
                    path.display()
                );
                return Ok(None);
            }
            Err(err) => return Err(Error::io(path, "reading a value", err)),
        };
        let record = match parse_record(bytes) {
            Ok(record) => record,
            Err(reason) => {
                log::warn!("{}: {reason}; ignored", path.display());
                return Ok(None);
            }
        };
        let named = file_name(&record.key);
        if path.file_name() != Some(OsStr::new(&named)) {
            log::warn!(
                "{}: holds key {}, which belongs in {named}; ignored",
                path.display(),
                record.key
            );
            return Ok(None);
        }
        Ok(match key {
            Some(key) if key != record.key => None,
            _ => Some(record),
        })
    }

    fn lease_state(&self, lease: LeaseId) -> Result<LeaseState, Error> {
        let path = self.lease_path(lease);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(LeaseState::Missing),
            Err(err) => return Err(Error::io(&path, "reading a lease", err)),
        };
        let renewed = file
            .metadata()
            .and_then(|meta| meta.modified())
            .map_err(|err| Error::io(&path, "reading a lease", err))?;
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

    /// When the lease runs out, or None when it has (or is not a lease: then with a warning).
    fn lease_expiry(
        &self,
        lease: LeaseId,
        known: &mut HashMap<LeaseId, Option<SystemTime>>,
    ) -> Result<Option<SystemTime>, Error> {
        if let Some(expiry) = known.get(&lease) {
            return Ok(*expiry);
        }
        let expiry = match self.lease_state(lease)? {
            LeaseState::Live { expires } => Some(expires),
            LeaseState::Expired | LeaseState::Missing => None,
            LeaseState::Garbage(reason) => {
                log::warn!(
                    "{}: {reason}; its keys are ignored",
                    self.lease_path(lease).display()
                );
                None
            }
        };
        known.insert(lease, expiry);
        Ok(expiry)
    }

    /// Removes the key file at `path` if it still belongs to `lease` and the lease is still
    /// dead, under the lock so that no fresh value is removed. Best effort: a reader that may
    /// not write the store, or finds the lock taken, leaves it to the next one.
    fn remove_expired(&self, path: &Path, lease: LeaseId) {
        let removed = (|| -> Result<(), Error> {
            let Some(_lock) = self.try_lock() else {
                return Ok(());
            };
            let still_dead = !matches!(self.lease_state(lease)?, LeaseState::Live { .. });
            let record = self.read_record(path, None)?;
            if still_dead && record.is_some_and(|record| record.lease == Some(lease)) {
                remove_if_present(path).map_err(|err| Error::io(path, "removing a key", err))?;
            }
            Ok(())
        })();
        if let Err(err) = removed {
            log::debug!("leaving an expired key for later: {err}");
        }
    }

    /// Every live key (with its value) whose file name may hold a key starting with `prefix`.
    fn live_records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let mut found = Vec::new();
        let mut leases = HashMap::new();
        for path in self.key_files(prefix)? {
            let Some(record) = self.read_record(&path, None)? else {
                continue;
            };
            if !record.key.starts_with(prefix) {
                continue;
            }
            if let Some(lease) = record.lease {
                if self.lease_expiry(lease, &mut leases)?.is_none() {
                    self.remove_expired(&path, lease);
                    continue;
                }
            }
            found.push((record.key, record.value));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// The files of `keys/` whose name may hold a key that starts with `prefix`.
    fn key_files(&self, prefix: &str) -> Result<Vec<PathBuf>, Error> {
        let entries = fs::read_dir(&self.keys)
            .map_err(|err| Error::io(&self.keys, "reading the registry directory", err))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|err| Error::io(&self.keys, "reading the registry directory", err))?;
            let name = entry.file_name();
            match parse_name(&name) {
                Some(shown) if may_start_with(&shown, prefix) => files.push(entry.path()),
                Some(_) => {}
                None => log::warn!(
                    "{}: not a key of the file store; ignored",
                    entry.path().display()
                ),
            }
        }
        Ok(files)
    }

    /// A new file in `tmp/` holding `bytes`, with the store's file mode; errors name `target`,
    /// the file it is meant to replace.
    fn write_temporary(&self, bytes: &[u8], target: &Path) -> Result<PathBuf, Error> {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        // The pid alone is not unique: containers sharing the store each have a pid 1.
        let path = self.tmp.join(format!(
            "{}-{}-{:016x}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed),
            random_u64()
        ));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.file_mode)
                .open(&path)?;
            // The umask may have taken bits the store's mode gives.
            file.set_permissions(fs::Permissions::from_mode(self.file_mode))?;
            file.write_all(bytes)
        })();
        match written {
            Ok(()) => Ok(path),
            Err(err) => {
                let _ = fs::remove_file(&path);
                Err(Error::io(target, "writing to the registry", err))
            }
        }
    }

    /// Removes what dead holders and writers left: expired or garbage lease files, and
    /// temporary files older than [`STALE_TEMPORARY`]. Expired keys are removed by the readers
    /// that come across them.
    fn sweep(&self) -> Result<(), Error> {
        let _lock = self.lock()?;
        for entry in fs::read_dir(&self.leases)
            .map_err(|err| Error::io(&self.leases, "reading the registry directory", err))?
            .flatten()
        {
            let id = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok());
            let Some(id) = id.map(LeaseId) else { continue };
            match self.lease_state(id)? {
                LeaseState::Expired => {
                    let _ = remove_if_present(&entry.path());
                }
                LeaseState::Garbage(reason) => {
                    log::warn!("{}: {reason}; removed", entry.path().display());
                    let _ = remove_if_present(&entry.path());
                }
                LeaseState::Live { .. } | LeaseState::Missing => {}
            }
        }
        let now = SystemTime::now();
        for entry in fs::read_dir(&self.tmp)
            .map_err(|err| Error::io(&self.tmp, "reading the registry directory", err))?
            .flatten()
        {
            let modified = entry.metadata().and_then(|meta| meta.modified());
            let stale = modified.is_ok_and(|at| {
                now.duration_since(at)
                    .is_ok_and(|age| age > STALE_TEMPORARY)
            });
            if stale {
                let _ = remove_if_present(&entry.path());
            }
        }
        Ok(())
    }
}

impl Store for FileStore {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&mut self, key: &Key) -> Result<Option<Vec<u8>>, Error> {
        let layout = &self.layout;
        let path = layout.key_path(key.as_str());
        let Some(record) = layout.read_record(&path, Some(key.as_str()))? else {
            return Ok(None);
        };
        if let Some(lease) = record.lease {
            if layout.lease_expiry(lease, &mut HashMap::new())?.is_none() {
                layout.remove_expired(&path, lease);
                return Ok(None);
            }
        }
        Ok(Some(record.value))
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.layout.live_records(prefix)
    }

    fn put(&mut self, key: &Key, value: &[u8], lease: Option<LeaseId>) -> Result<(), Error> {
        check_value(key.as_str(), value)?;
        let layout = &self.layout;
        let path = layout.key_path(key.as_str());
        let temporary =
            layout.write_temporary(&encode_record(key.as_str(), lease, value), &path)?;
        let placed = (|| {
            let _lock = layout.lock()?;
            if let Some(lease) = lease {
                if !matches!(layout.lease_state(lease)?, LeaseState::Live { .. }) {
                    return Err(Error::Store {
                        url: self.url.clone(),
                        reason: format!("lease {} not found (it ran out or was revoked)", lease.0),
                    });
                }
            }
            if key.as_str().len() > SHORT_KEY {
                // Two long keys may share a file name (the same first 200 bytes and hash):
                // refuse rather than overwrite the other one.
                if let Some(other) = layout.read_record(&path, None)? {
                    if other.key != key.as_str() {
                        return Err(Error::Key {
                            key: key.to_string(),
                            reason: format!(
                                "shares its file name in the store with key {}; use a shorter key",
                                other.key
                            ),
                        });
                    }
                }
            }
            fs::rename(&temporary, &path)
                .map_err(|err| Error::io(&path, "writing to the registry", err))
        })();
        if placed.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        placed
    }

    fn delete(&mut self, key: &Key) -> Result<(), Error> {
        let path = self.layout.key_path(key.as_str());
        let _lock = self.layout.lock()?;
        if key.as_str().len() > SHORT_KEY
            && self
                .layout
                .read_record(&path, Some(key.as_str()))?
                .is_none()
        {
            return Ok(());
        }
        remove_if_present(&path).map_err(|err| Error::io(&path, "removing a key", err))
    }

    fn grant(&mut self, ttl: Duration) -> Result<LeaseId, Error> {
        if ttl.subsec_nanos() != 0 || ttl.as_secs() < 2 {
            return Err(Error::Usage(format!(
                "a lease's TTL is whole seconds, at least 2 (not {}s)",
                ttl.as_secs_f64()
            )));
        }
        let layout = &self.layout;
        if let Err(err) = layout.sweep() {
            log::debug!("not swept: {err}");
        }
        let content = format!("{LEASE_FORMAT}\nttl {}\n", ttl.as_secs());
        for _ in 0..16 {
            let lease = LeaseId((random_u64() >> 1).max(1) as i64);
            let path = layout.lease_path(lease);
            let temporary = layout.write_temporary(content.as_bytes(), &path)?;
            // link(2) never replaces: an id already taken fails with EEXIST and another is
            // drawn. The lease appears complete, with its mtime (its start) already set.
            let linked = fs::hard_link(&temporary, &path);
            let _ = fs::remove_file(&temporary);
            match linked {
                Ok(()) => return Ok(lease),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(Error::io(&path, "granting a lease", err)),
            }
        }
        Err(Error::Store {
            url: self.url.clone(),
            reason: "no free lease id after 16 tries".into(),
        })
    }

    fn keep_alive(&mut self, lease: LeaseId) -> Result<bool, Error> {
        let layout = &self.layout;
        let path = layout.lease_path(lease);
        // Under the lock, so that a sweep cannot remove the lease between our check and the
        // renewal (and then we would report a lease that is gone as kept).
        let _lock = layout.lock()?;
        match layout.lease_state(lease)? {
            LeaseState::Live { .. } => {
                let renewed = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|file| file.set_modified(SystemTime::now()));
                match renewed {
                    Ok(()) => Ok(true),
                    Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
                    Err(err) => Err(Error::io(&path, "renewing a lease", err)),
                }
            }
            LeaseState::Expired => {
                let _ = remove_if_present(&path);
                Ok(false)
            }
            LeaseState::Missing => Ok(false),
            LeaseState::Garbage(reason) => {
                log::warn!("{}: {reason}; the lease is lost", path.display());
                Ok(false)
            }
        }
    }

    fn revoke(&mut self, lease: LeaseId) -> Result<(), Error> {
        let layout = &self.layout;
        let path = layout.lease_path(lease);
        let _lock = layout.lock()?;
        remove_if_present(&path).map_err(|err| Error::io(&path, "revoking a lease", err))?;
        for file in layout.key_files("")? {
            let record = layout.read_record(&file, None)?;
            if record.is_some_and(|record| record.lease == Some(lease)) {
                remove_if_present(&file).map_err(|err| Error::io(&file, "removing a key", err))?;
            }
        }
        Ok(())
    }

    fn watch(&mut self, prefix: &str) -> Result<Box<dyn Watch>, Error> {
        let keys = &self.layout.keys;
        let failed = |err: Errno| Error::io(keys, "watching the registry directory", err.into());
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(failed)?;
        // What a put (a rename into keys/), a del and an expired key's removal do, and an
        // edit by hand; temporary files are written elsewhere and leases renewed elsewhere.
        let events = AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF;
        inotify.add_watch(keys, events).map_err(failed)?;
        let watch = FileWatch {
            inotify,
            layout: self.layout.clone(),
            prefix: prefix.to_owned(),
            deadline: Cell::new(None),
        };
        watch.refresh_deadline();
        Ok(Box::new(watch))
    }
}

/// The file store's [`Watch`]: an inotify descriptor on `keys/`, and the earliest expiry of a
/// watched key's lease as the deadline.
pub struct FileWatch {
    inotify: Inotify,
    layout: Layout,
    prefix: String,
    /// Recomputed after a change and once it has passed (the lease may have been renewed),
    /// so [`Watch::deadline`], which takes `&self`, keeps it in a Cell.
    deadline: Cell<Option<Instant>>,
}

impl FileWatch {
    fn refresh_deadline(&self) {
        self.deadline.set(self.next_expiry().unwrap_or_else(|err| {
            log::debug!("no lease deadline: {err}");
            // Look again soon rather than never: the next look may succeed.
            Some(Instant::now() + Duration::from_secs(1))
        }));
    }

    fn next_expiry(&self) -> Result<Option<Instant>, Error> {
        let mut leases = HashMap::new();
        let mut earliest: Option<SystemTime> = None;
        for path in self.layout.key_files(&self.prefix)? {
            let Some(lease) = key_and_lease(&path)
                .filter(|(key, _)| key.starts_with(&self.prefix))
                .and_then(|(_, lease)| lease)
            else {
                continue;
            };
            if let Some(expires) = self.layout.lease_expiry(lease, &mut leases)? {
                earliest = Some(earliest.map_or(expires, |at| at.min(expires)));
            }
        }
        let now_wall = SystemTime::now();
        let now = Instant::now();
        Ok(
            earliest
                .and_then(|at| now.checked_add(at.duration_since(now_wall).unwrap_or_default())),
        )
    }
}

impl Watch for FileWatch {
    fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    fn drain(&mut self) -> bool {
        let mut changed = false;
        loop {
            match self.inotify.read_events() {
                Ok(events) => {
                    for event in events {
                        // No name: the queue overflowed or keys/ itself went; assume a change.
                        changed |= match &event.name {
                            None => true,
                            Some(name) => parse_name(name)
                                .is_some_and(|shown| may_start_with(&shown, &self.prefix)),
                        };
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(err) => {
                    log::debug!("reading the registry watch: {err}");
                    changed = true;
                    break;
                }
            }
        }
        if changed {
            self.refresh_deadline();
        }
        changed
    }

    fn deadline(&self) -> Option<Instant> {
        if self.deadline.get().is_some_and(|at| at <= Instant::now()) {
            self.refresh_deadline();
        }
        self.deadline.get()
    }
}

/// The file name of `key` in `keys/`.
fn file_name(key: &str) -> String {
    let encoded = key.replace('/', "%");
    if encoded.len() <= SHORT_KEY {
        encoded
    } else {
        // The key is ASCII (Key::parse), so any byte index is a char boundary.
        format!(
            "{LONG}{}{LONG}{:016x}",
            &encoded[..LONG_SHOWN],
            fnv1a(key.as_bytes())
        )
    }
}

/// What a file name in `keys/` shows of its key: all of it, or (`whole` false) its start.
struct Shown {
    key: String,
    whole: bool,
}

fn parse_name(name: &OsStr) -> Option<Shown> {
    let name = name.to_str()?;
    if let Some(long) = name.strip_prefix(LONG) {
        let (start, hash) = long.split_once(LONG)?;
        let key = start.replace(SEPARATOR, "/");
        let plausible = start.len() == LONG_SHOWN
            && hash.len() == 16
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && key.bytes().all(|b| super::is_key_byte(b) || b == b'/');
        return plausible.then_some(Shown { key, whole: false });
    }
    let key = name.replace(SEPARATOR, "/");
    (key.len() <= SHORT_KEY && Key::parse(&key).is_ok()).then_some(Shown { key, whole: true })
}

/// Whether a key of which `shown` is known may start with `prefix`.
fn may_start_with(shown: &Shown, prefix: &str) -> bool {
    if shown.whole || prefix.len() <= shown.key.len() {
        shown.key.starts_with(prefix)
    } else {
        prefix.starts_with(&shown.key)
    }
}

/// FNV-1a, 64 bits: a stable hash (std's may change between releases, and a store outlives
/// binaries) that only tells long keys' file names apart; [`Layout::read_record`] checks the
/// key itself.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// 64 random bits: std's RandomState is seeded from the operating system's randomness.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn encode_record(key: &str, lease: Option<LeaseId>, value: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{VALUE_FORMAT}\nkey {key}\n").into_bytes();
    if let Some(lease) = lease {
        bytes.extend_from_slice(format!("lease {}\n", lease.0).as_bytes());
    }
    bytes.extend_from_slice(format!("size {}\n\n", value.len()).as_bytes());
    bytes.extend_from_slice(value);
    bytes
}

/// Reads a value file; the reason says why it is not one.
fn parse_record(mut bytes: Vec<u8>) -> Result<Record, String> {
    let header = parse_header(&bytes)?;
    let value = bytes.split_off(header.end + 2);
    if value.len() != header.size {
        return Err(format!(
            "truncated or damaged: {} bytes of a {}-byte value",
            value.len(),
            header.size
        ));
    }
    Ok(Record {
        key: header.key,
        lease: header.lease,
        value,
    })
}

/// A value file's header: its key, lease and value size, and where the header ends.
struct Header {
    key: String,
    lease: Option<LeaseId>,
    size: usize,
    end: usize,
}

fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    let not_ours = || "not a value of the file store".to_owned();
    let end = bytes
        .windows(2)
        .take(HEADER_LIMIT)
        .position(|pair| pair == b"\n\n")
        .ok_or_else(not_ours)?;
    let header = std::str::from_utf8(&bytes[..end]).map_err(|_| not_ours())?;
    let mut lines = header.lines();
    if lines.next() != Some(VALUE_FORMAT) {
        return Err(not_ours());
    }
    let (mut key, mut lease, mut size) = (None, None, None);
    for line in lines {
        match line.split_once(' ') {
            Some(("key", text)) => key = Key::parse(text).ok().map(|key| key.0),
            Some(("lease", text)) => {
                lease = Some(text.parse().map(LeaseId).map_err(|_| not_ours())?)
            }
            Some(("size", text)) => size = Some(text.parse::<usize>().map_err(|_| not_ours())?),
            _ => return Err(not_ours()),
        }
    }
    let (Some(key), Some(size)) = (key, size) else {
        return Err(not_ours());
    };
    Ok(Header {
        key,
        lease,
        size,
        end,
    })
}

/// The key and lease of the value file at `path`, from its header alone: what a watch needs
/// to know when a lease runs out, without reading every value (it runs on the supervisor's
/// thread). None for a file that is gone or not a value (the readers warn about those).
fn key_and_lease(path: &Path) -> Option<(String, Option<LeaseId>)> {
    let mut head = vec![0u8; HEADER_LIMIT + 2];
    let mut file = File::open(path).ok()?;
    let mut len = 0;
    while len < head.len() {
        match file.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    let header = parse_header(&head[..len]).ok()?;
    Some((header.key, header.lease))
}

/// A lease file's TTL.
fn parse_lease(text: &str) -> Option<Duration> {
    let mut lines = text.lines();
    if lines.next() != Some(LEASE_FORMAT) {
        return None;
    }
    let seconds: u64 = lines.next()?.strip_prefix("ttl ")?.parse().ok()?;
    // At most parse_ttl's limit: a foreign file with a larger one is garbage, not a lease.
    (lines.next().is_none() && (1..=1_000_000_000).contains(&seconds))
        .then(|| Duration::from_secs(seconds))
}

/// The file's bytes, failing (InvalidData) past `limit` rather than reading without bound.
fn read_bounded(path: &Path, limit: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "larger than any value of the file store",
        ));
    }
    Ok(bytes)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// The directory of a `file://` URL's path part (after `file://`): `/DIR`, percent-escapes
/// decoded; `localhost` is the only host allowed, as RFC 8089 has it.
pub fn directory_of(url: &str, rest: &str) -> Result<PathBuf, Error> {
    let usage = |reason: &str| Error::Usage(format!("{url}: {reason}"));
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(usage(
            "a file store is file:///DIR, with an absolute path (three slashes)",
        ));
    }
    let mut bytes = Vec::with_capacity(path.len());
    let mut rest = path.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail
                .get(..2)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| usage("a '%' in the path is not followed by two hex digits"))?;
            bytes.push(hex);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    Ok(PathBuf::from(OsStr::from_bytes(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_decode_to_their_keys() {
        for key in ["a", "web/host-1", ".x/y", &"k".repeat(240)] {
            let name = file_name(key);
            let shown = parse_name(OsStr::new(&name)).unwrap();
            assert!(shown.whole);
            assert_eq!(shown.key, key);
        }
    }

    #[test]
    fn long_keys_get_short_distinct_names() {
        let a = format!("{}/a", "k".repeat(300));
        let b = format!("{}/b", "k".repeat(300));
        let (name_a, name_b) = (file_name(&a), file_name(&b));
        assert_ne!(name_a, name_b);
        assert!(name_a.len() <= 255, "{}", name_a.len());
        let shown = parse_name(OsStr::new(&name_a)).unwrap();
        assert!(!shown.whole);
        assert!(may_start_with(&shown, &"k".repeat(250)));
        assert!(!may_start_with(&shown, "x"));
        assert!(parse_name(OsStr::new(&file_name(&"k".repeat(512)))).is_some());
    }

    #[test]
    fn other_names_are_not_keys() {
        for name in ["a b", "#short#1", "a%%b", "%a", "..", "x~"] {
            assert!(parse_name(OsStr::new(name)).is_none(), "{name}");
        }
    }

    #[test]
    fn records_round_trip_and_truncation_shows() {
        let bytes = encode_record("a/b", Some(LeaseId(7)), b"v\n\n\0x");
        let record = parse_record(bytes.clone()).unwrap();
        assert_eq!(
            (record.key.as_str(), record.lease, record.value.as_slice()),
            ("a/b", Some(LeaseId(7)), &b"v\n\n\0x"[..])
        );
        let cut = parse_record(bytes[..bytes.len() - 1].to_vec()).unwrap_err();
        assert!(cut.contains("truncated"), "{cut}");
        assert!(parse_record(b"garbage".to_vec()).is_err());
        assert!(parse_record(Vec::new()).is_err());
    }

    fn store() -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open("file:///test", dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn key(text: &str) -> Key {
        Key::parse(text).unwrap()
    }

    /// Whether the watch's descriptor is readable right now.
    fn readable(watch: &dyn Watch) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(watch.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    }

    /// Moves the lease's last renewal `ago` into the past, as if its holder had stopped then.
    fn renewed_ago(store: &FileStore, lease: LeaseId, ago: Duration) {
        let file = OpenOptions::new()
            .write(true)
            .open(store.layout.lease_path(lease))
            .unwrap();
        file.set_modified(SystemTime::now() - ago).unwrap();
    }

    #[test]
    fn a_watch_wakes_for_changes_under_its_prefix_only() {
        let (_dir, mut store) = store();
        let mut watch = store.watch("web/").unwrap();
        assert!(!readable(watch.as_ref()));
        store.put(&key("other"), b"x", None).unwrap();
        assert!(readable(watch.as_ref()));
        assert!(!watch.drain(), "a put outside the prefix is no change");
        assert!(!readable(watch.as_ref()), "drain consumes everything");
        store.put(&key("web/a"), b"x", None).unwrap();
        assert!(watch.drain());
        store.delete(&key("web/a")).unwrap();
        assert!(watch.drain());
        store.delete(&key("web/a")).unwrap();
        assert!(!watch.drain(), "deleting an absent key changes nothing");
    }

    #[test]
    fn renewals_wake_no_watcher_and_the_deadline_follows_them() {
        let (_dir, mut store) = store();
        let lease = store.grant(Duration::from_secs(2)).unwrap();
        store.put(&key("web/a"), b"x", Some(lease)).unwrap();
        renewed_ago(&store, lease, Duration::from_millis(1700));
        let mut watch = store.watch("web/").unwrap();
        let left = watch.deadline().unwrap() - Instant::now();
        assert!(left <= Duration::from_millis(300), "{left:?}");
        assert!(store.keep_alive(lease).unwrap());
        assert!(!readable(watch.as_ref()), "a renewal woke the watch");
        // Once the old deadline has passed, the watch finds the renewal.
        std::thread::sleep(left);
        let left = watch.deadline().unwrap() - Instant::now();
        assert!(
            left > Duration::from_millis(1500) && left <= Duration::from_secs(2),
            "{left:?}"
        );
        assert!(!watch.drain());
        assert_eq!(
            store.get(&key("web/a")).unwrap().as_deref(),
            Some(&b"x"[..])
        );
    }

    #[test]
    fn a_lease_nobody_renews_takes_its_keys_with_it() {
        let (_dir, mut store) = store();
        let lease = store.grant(Duration::from_secs(2)).unwrap();
        store.put(&key("svc/a"), b"leased", Some(lease)).unwrap();
        store.put(&key("svc/b"), b"kept", None).unwrap();
        assert!(store.watch("svc/").unwrap().deadline().is_some());
        renewed_ago(&store, lease, Duration::from_secs(3));
        assert_eq!(store.get(&key("svc/a")).unwrap(), None);
        let listed = store.list("svc/").unwrap();
        assert_eq!(listed, vec![("svc/b".to_owned(), b"kept".to_vec())]);
        assert!(
            !store.keep_alive(lease).unwrap(),
            "an expired lease renewed"
        );
        // Nothing under the prefix is leased any more: no deadline.
        assert_eq!(store.watch("svc/").unwrap().deadline(), None);
        let err = store.put(&key("svc/c"), b"x", Some(lease)).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[test]
    fn revoke_removes_the_lease_and_only_its_keys() {
        let (_dir, mut store) = store();
        let lease = store.grant(Duration::from_secs(30)).unwrap();
        let other = store.grant(Duration::from_secs(30)).unwrap();
        assert_ne!(lease, other);
        store.put(&key("a"), b"1", Some(lease)).unwrap();
        store.put(&key("b"), b"2", Some(other)).unwrap();
        store.put(&key("c"), b"3", None).unwrap();
        let mut watch = store.watch("").unwrap();
        store.revoke(lease).unwrap();
        assert!(watch.drain());
        let keys: Vec<String> = store
            .list("")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["b", "c"]);
        assert!(!store.keep_alive(lease).unwrap());
        assert!(store.keep_alive(other).unwrap());
        store.revoke(lease).unwrap();
    }

    #[test]
    fn a_lease_is_whole_seconds_of_at_least_2() {
        let (_dir, mut store) = store();
        for ttl in [Duration::from_secs(1), Duration::from_millis(2500)] {
            assert!(matches!(store.grant(ttl), Err(Error::Usage(_))), "{ttl:?}");
        }
    }

    #[test]
    fn file_urls_are_absolute_paths() {
        let dir = |rest| directory_of("u", rest);
        assert_eq!(dir("/a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(dir("localhost/a").unwrap(), PathBuf::from("/a"));
        assert_eq!(dir("/my%20dir").unwrap(), PathBuf::from("/my dir"));
        assert!(dir("relative").is_err());
        assert!(dir("/bad%2").is_err());
    }
}
