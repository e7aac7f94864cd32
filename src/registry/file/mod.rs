//! The embedded store, `file:///DIR` (docs/reference.md §11.1): a directory that the containers of
//! one machine share through a volume, read and written by any number of processes at once.
//!
//! # Layout
//! ```text
//! DIR/envharness-store     the mark: DIR is a store
//! DIR/keys/web%host-1      one file per key: '/' written as '%', which no key may hold
//! DIR/keys/#web%…#1f0c…    a key of more than 240 bytes: '#', its first 200, '#', a hash
//! DIR/leases/8125…         one file per lease, named by its id; holds the TTL
//! DIR/tmp/417-3-…          a value or lease being written, renamed into place when complete
//! ```
//!
//! Keys are flat in one directory, so `KEY` and `KEY/…` live side by side, one inotify watch
//! covers them all, and no directory has to be created or removed while others write. Only key
//! files are in `keys/` (temporary and lease files elsewhere), so no other file can ever take a
//! key's name. A value file holds a small header (format, the key, its lease, the value's
//! size) and then the value's bytes: a long key's name is not the key, a lease must be found
//! from the key, and a file cut short by a crash shows by its size. Such a file, or any other
//! that is not one of ours or that another member of a shared store made unreadable, is
//! ignored with a warning naming it; it never stops a reader.
//!
//! # A store never touches anything but its own files
//! A store removes files (stale temporary files, dead leases), so a mistaken URL (`file:///`,
//! from an unset `file:///$REGISTRY`, or `file:///var`) must not make a store of a directory
//! that holds other files. An existing DIR is used only when it carries the mark, is empty
//! (`lost+found` aside), or holds nothing but an earlier version's `keys/`, `leases/` and
//! `tmp/` (which it adopts, marking it); anything else is refused and left as it is. Inside
//! the store no link is followed: the subdirectories and files are reached from DIR's
//! descriptor (`dir.rs`), a value is read only from a regular file (a FIFO named like a key
//! would block its reader forever), and the sweep removes only names the store gives.
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

mod dir;
pub(crate) mod format;
mod layout;
mod watch;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{check_value_size, Key, LeaseId, Store, Watch};
use crate::duration::seconds;
use crate::error::Error;
use dir::{Entry, StoreDir};
use format::{encode_record, file_name, lease_content, SHORT_KEY};
use layout::{
    key_files, lock, random_u64, read_record, remove_expired, Layout, LeaseState, Leases,
};
use watch::FileWatch;

pub struct FileStore {
    url: String,
    layout: Layout,
}

impl FileStore {
    /// Opens the store at `root` (the path of `url`): a missing directory is created (mode
    /// 0700, with its missing parents); an existing one is used only if it is a store, empty,
    /// or an earlier version's store (docs/reference.md §11.1; see [`Layout::open`]).
    pub fn open(url: &str, root: PathBuf) -> Result<FileStore, Error> {
        create_directory(&root)?;
        Ok(FileStore {
            url: url.to_owned(),
            layout: Layout::open(&root)?,
        })
    }
}

/// Makes the store's directory and its missing parents, each with exactly mode 0700 (whatever
/// the umask), unless it exists (docs/reference.md §11.1: created "with its missing parents"
/// 0700; a parent that exists keeps its mode).
fn create_directory(path: &Path) -> Result<(), Error> {
    let failed = |err| Error::io(path, "creating the registry directory", err);
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error::entry(
                path,
                "not a directory: the registry must be a directory",
            ))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(failed(err)),
    }
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|dir| fs::symlink_metadata(dir).is_err())
        .collect();
    for dir in missing.into_iter().rev() {
        make_directory(dir, 0o700).map_err(failed)?;
    }
    Ok(())
}

/// `mkdir` with exactly `mode`; one made meanwhile by another process is fine, as it is.
fn make_directory(dir: &Path, mode: u32) -> io::Result<()> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode)),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(err) => Err(err),
    }
}

impl FileStore {
    /// A lease's state, and `leases/` for what follows.
    fn lease(&self, lease: LeaseId) -> Result<(Leases, LeaseState), Error> {
        let leases = self.layout.leases()?;
        let state = leases.state(lease)?;
        Ok((leases, state))
    }

    /// Under the lock: refuses a long key whose file name holds another key already.
    fn check_name_is_free(keys: &StoreDir, key: &Key, name: &OsStr) -> Result<(), Error> {
        if key.as_str().len() <= SHORT_KEY {
            return Ok(());
        }
        // Two long keys may share a file name (the same first 200 bytes and hash): refuse
        // rather than overwrite the other one.
        match read_record(keys, name, None)? {
            Some(other) if other.key != key.as_str() => Err(Error::Key {
                key: key.to_string(),
                reason: format!(
                    "shares its file name in the store with key {}; use a shorter key",
                    other.key
                ),
            }),
            _ => Ok(()),
        }
    }
}

impl Store for FileStore {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&mut self, key: &Key) -> Result<Option<Vec<u8>>, Error> {
        let keys = self.layout.keys()?;
        let name = OsString::from(file_name(key.as_str()));
        let Some(record) = read_record(&keys, &name, Some(key.as_str()))? else {
            return Ok(None);
        };
        if let Some(lease) = record.lease {
            let mut leases = self.layout.leases()?;
            if leases.expiry(lease)?.is_none() {
                remove_expired(&keys, &leases, &name, lease);
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
        let keys = layout.keys()?;
        let tmp = layout.tmp()?;
        let name = OsString::from(file_name(key.as_str()));
        let target = keys.path_of(&name);
        let record = encode_record(key.as_str(), lease, value);
        let temporary = layout.write_temporary(&tmp, &record, &target)?;
        let placed = (|| {
            let _lock = lock(&keys)?;
            if let Some(lease) = lease {
                if !matches!(self.lease(lease)?.1, LeaseState::Live { .. }) {
                    return Err(Error::Store {
                        url: self.url.clone(),
                        reason: format!("lease {} not found (it ran out or was revoked)", lease.0),
                    });
                }
            }
            Self::check_name_is_free(&keys, key, &name)?;
            tmp.rename_into(&temporary, &keys, &name)
                .map_err(|err| Error::io(&target, "writing to the registry", err))
        })();
        if placed.is_err() {
            let _ = tmp.remove(&temporary);
        }
        placed
    }

    fn delete(&mut self, key: &Key) -> Result<(), Error> {
        let keys = self.layout.keys()?;
        let name = OsString::from(file_name(key.as_str()));
        let _lock = lock(&keys)?;
        if key.as_str().len() > SHORT_KEY
            && read_record(&keys, &name, Some(key.as_str()))?.is_none()
        {
            return Ok(());
        }
        keys.remove(&name)
            .map_err(|err| Error::io(keys.path_of(&name), "removing a key", err))
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
        let tmp = layout.tmp()?;
        let leases = layout.leases()?;
        let content = lease_content(ttl);
        for _ in 0..16 {
            let lease = LeaseId((random_u64() >> 1).max(1) as i64);
            let path = leases.path_of(lease);
            let temporary = layout.write_temporary(&tmp, content.as_bytes(), &path)?;
            // link(2) never replaces: an id already taken fails with EEXIST and another is
            // drawn. The lease appears complete, with its mtime (its start) already set.
            let linked = tmp.link_into(&temporary, &leases.dir, &Leases::name(lease));
            let _ = tmp.remove(&temporary);
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
        // Under the lock, so that a sweep cannot remove the lease between our check and the
        // renewal (and then we would report a lease that is gone as kept).
        let keys = self.layout.keys()?;
        let _lock = lock(&keys)?;
        let (leases, state) = self.lease(lease)?;
        let path = leases.path_of(lease);
        match state {
            LeaseState::Live { .. } => {
                let renewed = leases
                    .dir
                    .open_regular_for_writing(&Leases::name(lease))
                    .and_then(|entry| match entry {
                        Entry::File(file) => file.set_modified(SystemTime::now()).map(|()| true),
                        Entry::Missing | Entry::Other(_) => Ok(false),
                    });
                renewed.map_err(|err| Error::io(&path, "renewing a lease", err))
            }
            LeaseState::Expired => {
                let _ = leases.dir.remove(&Leases::name(lease));
                Ok(false)
            }
            LeaseState::Missing => Ok(false),
            LeaseState::Garbage(reason) | LeaseState::Unusable(reason) => {
                log::warn!("{}: {reason}; the lease is lost", path.display());
                Ok(false)
            }
        }
    }

    fn revoke(&mut self, lease: LeaseId) -> Result<(), Error> {
        let keys = self.layout.keys()?;
        let leases = self.layout.leases()?;
        let _lock = lock(&keys)?;
        leases
            .dir
            .remove(&Leases::name(lease))
            .map_err(|err| Error::io(leases.path_of(lease), "revoking a lease", err))?;
        for name in key_files(&keys, "")? {
            let record = read_record(&keys, &name, None)?;
            if record.is_some_and(|record| record.lease == Some(lease)) {
                keys.remove(&name)
                    .map_err(|err| Error::io(keys.path_of(&name), "removing a key", err))?;
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
    use layout::KEYS;
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
        let file = fs::OpenOptions::new()
            .write(true)
            .open(store.layout.leases().unwrap().path_of(lease))
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

    /// Every name under `dir` with its modification time, to show that nothing changed.
    fn listing(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>)> {
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            found.push((entry.path(), meta.modified().ok()));
            if meta.is_dir() {
                found.extend(listing(&entry.path()));
            }
        }
        found.sort();
        found
    }

    #[test]
    fn a_directory_of_other_files_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        for (path, content) in [("tmp/417-3-000000000000001f", "x"), ("passwd", "root")] {
            fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            fs::write(root.join(path), content).unwrap();
        }
        let before = listing(&root);
        let err = FileStore::open("file:///test", root.clone()).err().unwrap();
        assert!(
            matches!(&err, Error::NotAStore { path } if *path == root),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: not an envharness store (it holds other files): use an empty directory",
                root.display()
            )
        );
        assert_eq!(listing(&root), before);
    }

    #[test]
    fn an_earlier_store_is_adopted_and_marked_and_an_empty_one_marked() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = dir.path().join("earlier");
        for sub in [KEYS, "lost+found"] {
            fs::create_dir_all(earlier.join(sub)).unwrap();
        }
        let mut store = FileStore::open("file:///test", earlier.clone()).unwrap();
        assert!(earlier.join(layout::MARK).is_file());
        assert!(earlier.join("leases").is_dir() && earlier.join("tmp").is_dir());
        store.put(&key("k"), b"v", None).unwrap();
        // Marked, it is used whatever else comes to be there.
        fs::write(earlier.join("notes"), "mine").unwrap();
        let mut again = FileStore::open("file:///test", earlier).unwrap();
        assert_eq!(again.get(&key("k")).unwrap().as_deref(), Some(&b"v"[..]));
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        FileStore::open("file:///test", empty.clone()).unwrap();
        assert!(empty.join(layout::MARK).is_file());
    }

    #[test]
    fn a_watch_learns_a_lease_from_the_put_it_is_told_of() {
        let (_dir, mut store) = store();
        let mut watch = store.watch("web/").unwrap();
        let lease = store.grant(Duration::from_secs(2)).unwrap();
        store.put(&key("web/a"), b"x", Some(lease)).unwrap();
        assert!(readable(watch.as_ref()));
        assert!(watch.drain());
        // The holder stops renewing: the watch, which read the lease at the put, wakes when
        // it runs out.
        renewed_ago(&store, lease, Duration::from_millis(1700));
        assert!(woken_within(watch.as_ref(), Duration::from_millis(2500)));
        assert!(watch.drain());
        // Put again without a lease, the key no longer depends on one.
        let other = store.grant(Duration::from_secs(2)).unwrap();
        store.put(&key("web/b"), b"x", Some(other)).unwrap();
        store.put(&key("web/b"), b"y", None).unwrap();
        assert!(readable(watch.as_ref()));
        // Each put may wake it on its own: until it is quiet.
        while readable(watch.as_ref()) {
            watch.drain();
        }
        renewed_ago(&store, other, Duration::from_secs(3));
        assert!(
            !woken_within(watch.as_ref(), Duration::from_millis(2500)),
            "a lease no watched key holds woke the watch"
        );
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
