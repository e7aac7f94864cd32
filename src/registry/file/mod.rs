//! The embedded store, `file:///DIR` (docs/reference.md §11.1): a directory that the containers of
//! one machine share through a volume, read and written by any number of processes at once.
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

mod format;
mod layout;
mod watch;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{check_value_size, Key, LeaseId, Store, Watch};
use crate::duration::seconds;
use crate::error::Error;
use format::{encode_record, lease_content, SHORT_KEY};
use layout::{random_u64, remove_if_present, Layout, LeaseState, KEYS, LEASES, TMP};
use watch::FileWatch;

pub struct FileStore {
    url: String,
    layout: Layout,
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

/// `mkdir` with exactly `mode` (whatever the umask) unless it exists; with `parents`, the missing
/// parents first, with mode 0700 too (docs/reference.md §11.1: the store is created "with its
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
        check_value_size(key.as_str(), value)?;
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
                seconds(ttl)
            )));
        }
        let layout = &self.layout;
        if let Err(err) = layout.sweep() {
            log::debug!("not swept: {err}");
        }
        let content = lease_content(ttl);
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
        Ok(Box::new(FileWatch::start(self.layout.clone(), prefix)?))
    }
}

/// The directory of a `file://` URL's path part (after `file://`): `/DIR`, percent-escapes
/// decoded; `localhost` is the only host allowed, as RFC 8089 has it.
pub fn store_directory(url: &str, rest: &str) -> Result<PathBuf, Error> {
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
    use std::time::Duration;

    fn store() -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open("file:///test", dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn key(text: &str) -> Key {
        Key::parse(text).unwrap()
    }

    /// Whether the watch's descriptor is readable within a moment (its thread signals it).
    fn readable(watch: &dyn Watch) -> bool {
        woken_within(watch, Duration::from_millis(200))
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
        assert!(
            !readable(watch.as_ref()),
            "a put outside the prefix woke the watch"
        );
        store.put(&key("web/a"), b"x", None).unwrap();
        assert!(readable(watch.as_ref()));
        assert!(watch.drain());
        assert!(!watch.drain(), "drain consumes everything");
        store.delete(&key("web/a")).unwrap();
        assert!(readable(watch.as_ref()));
        assert!(watch.drain());
        store.delete(&key("web/a")).unwrap();
        assert!(
            !readable(watch.as_ref()),
            "deleting an absent key woke the watch"
        );
    }

    /// Whether the watch's descriptor becomes readable within `within`.
    fn woken_within(watch: &dyn Watch, within: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(watch.fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(within).unwrap();
        poll(&mut fds, timeout).unwrap() == 1
    }

    #[test]
    fn a_lease_running_out_wakes_the_watch_and_a_renewal_does_not() {
        let (_dir, mut store) = store();
        let lease = store.grant(Duration::from_secs(2)).unwrap();
        store.put(&key("web/a"), b"x", Some(lease)).unwrap();
        renewed_ago(&store, lease, Duration::from_millis(1700));
        let mut watch = store.watch("web/").unwrap();
        assert!(store.keep_alive(lease).unwrap());
        // The old expiry (0.3 s away) passes; the lease was renewed in time: no change.
        assert!(
            !woken_within(watch.as_ref(), Duration::from_millis(800)),
            "a renewal woke the watch"
        );
        assert_eq!(
            store.get(&key("web/a")).unwrap().as_deref(),
            Some(&b"x"[..])
        );
        // Nobody renews it now: within its TTL of 2 s the watch says it ran out.
        assert!(woken_within(watch.as_ref(), Duration::from_millis(2500)));
        assert!(watch.drain());
        assert_eq!(store.get(&key("web/a")).unwrap(), None);
    }

    #[test]
    fn keys_recreated_under_a_watch_are_watched_again() {
        let (dir, mut store) = store();
        let mut watch = store.watch("").unwrap();
        let keys = dir.path().join("store").join(KEYS);
        fs::remove_dir(&keys).unwrap();
        fs::create_dir(&keys).unwrap();
        // The watch looks for the new keys/ within a second, and says it changed.
        assert!(woken_within(watch.as_ref(), Duration::from_secs(3)));
        watch.drain();
        store.put(&key("a"), b"x", None).unwrap();
        assert!(woken_within(watch.as_ref(), Duration::from_secs(2)));
        assert!(watch.drain());
    }

    #[test]
    fn a_lease_nobody_renews_takes_its_keys_with_it() {
        let (_dir, mut store) = store();
        let lease = store.grant(Duration::from_secs(2)).unwrap();
        store.put(&key("svc/a"), b"leased", Some(lease)).unwrap();
        store.put(&key("svc/b"), b"kept", None).unwrap();
        renewed_ago(&store, lease, Duration::from_secs(3));
        assert_eq!(store.get(&key("svc/a")).unwrap(), None);
        let listed = store.list("svc/").unwrap();
        assert_eq!(listed, vec![("svc/b".to_owned(), b"kept".to_vec())]);
        assert!(
            !store.keep_alive(lease).unwrap(),
            "an expired lease renewed"
        );
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
        assert!(readable(watch.as_ref()));
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
        let dir = |rest| store_directory("u", rest);
        assert_eq!(dir("/a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(dir("localhost/a").unwrap(), PathBuf::from("/a"));
        assert_eq!(dir("/my%20dir").unwrap(), PathBuf::from("/my dir"));
        assert!(dir("relative").is_err());
        assert!(dir("/bad%2").is_err());
    }
}
