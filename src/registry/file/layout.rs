//! The store's directory on disk: where each file lives, the lock that makes removals safe,
//! reading values and leases, and sweeping what dead writers and holders left.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::super::{LeaseId, REACH_TIMEOUT, VALUE_LIMIT};
use super::format::{
    file_name, may_start_with, parse_header, parse_lease, parse_name, parse_record, Record,
    HEADER_LIMIT,
};
use crate::error::Error;
use crate::os::read_at_most;

pub(super) const KEYS: &str = "keys";
pub(super) const LEASES: &str = "leases";
pub(super) const TMP: &str = "tmp";
/// A temporary file this old belongs to a writer that died: the next grant removes it.
pub(super) const STALE_TEMPORARY: Duration = Duration::from_secs(60);

/// The directory and what its mode implies for the files written into it.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) keys: PathBuf,
    pub(super) leases: PathBuf,
    pub(super) tmp: PathBuf,
    /// Owner read/write, plus the group's and others' read bits where the directory has them.
    pub(super) file_mode: u32,
}

/// What a lease file says now.
pub(super) enum LeaseState {
    Live { expires: SystemTime },
    Expired,
    Missing,
    Garbage(String),
}

impl Layout {
    pub(super) fn key_path(&self, key: &str) -> PathBuf {
        self.keys.join(file_name(key))
    }

    pub(super) fn lease_path(&self, lease: LeaseId) -> PathBuf {
        self.leases.join(lease.0.to_string())
    }

    /// The exclusive lock every rename and removal in `keys/` holds (see the module comment),
    /// waited for at most [`REACH_TIMEOUT`]: a holder stopped with SIGSTOP must not hang
    /// every writer of the machine. Holders keep it for a rename or a few removals, so the
    /// retries start at 0.1 ms.
    pub(super) fn lock(&self) -> Result<Flock<File>, Error> {
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
    pub(super) fn try_lock(&self) -> Option<Flock<File>> {
        let dir = File::open(&self.keys).ok()?;
        Flock::lock(dir, FlockArg::LockExclusiveNonblock).ok()
    }

    /// The file at `path` as a record of `key` (`key` None: any key), or None when it is
    /// missing, not ours (with a warning) or another key's (a long name shared by two keys).
    pub(super) fn read_record(
        &self,
        path: &Path,
        key: Option<&str>,
    ) -> Result<Option<Record>, Error> {
        let bytes = match read_value_file(path, VALUE_LIMIT + HEADER_LIMIT) {
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

    pub(super) fn lease_state(&self, lease: LeaseId) -> Result<LeaseState, Error> {
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
    pub(super) fn lease_expiry(
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
    pub(super) fn remove_expired(&self, path: &Path, lease: LeaseId) {
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
    pub(super) fn live_records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
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
    pub(super) fn key_files(&self, prefix: &str) -> Result<Vec<PathBuf>, Error> {
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
    pub(super) fn write_temporary(&self, bytes: &[u8], target: &Path) -> Result<PathBuf, Error> {
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
    pub(super) fn sweep(&self) -> Result<(), Error> {
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

/// 64 random bits: std's RandomState is seeded from the operating system's randomness.
pub(super) fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// The key and lease of the value file at `path`, from its header alone: what a watch needs
/// to know when a lease runs out, without reading every value (it runs on the supervisor's
/// thread). None for a file that is gone or not a value (the readers warn about those).
pub(super) fn key_and_lease(path: &Path) -> Option<(String, Option<LeaseId>)> {
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

/// The file's bytes, failing (InvalidData) past `limit` rather than reading without bound.
fn read_value_file(path: &Path, limit: usize) -> io::Result<Vec<u8>> {
    read_at_most(File::open(path)?, limit)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "larger than any value of the file store",
        )
    })
}

pub(super) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}
