//! A directory of the file store, opened without following a symbolic link, and the calls on
//! its entries, all relative to its descriptor (`openat`, `fstatat`, `renameat`, `linkat`,
//! `unlinkat`): once the store is open, no path is resolved again from the top, so a component
//! swapped for a symbolic link (`keys` -> `/etc`) cannot redirect a read, a write or a removal
//! out of the store (docs/reference.md §11.1: inside the store nothing is followed).
//!
//! Only regular files are ever read: a FIFO, a device or a link named like a key is reported
//! as [`Entry::Other`] without being opened for reading (a FIFO opened without `O_NONBLOCK`
//! blocks until a writer comes, forever in a shared store).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};

use crate::os::{self, dir::Listed};

/// What a symbolic link is called in messages.
pub(super) const SYMLINK: &str = "a symbolic link";

/// A directory of the store, open, with its path for messages.
#[derive(Debug)]
pub(super) struct StoreDir {
    fd: File,
    path: PathBuf,
}

/// What a name in a store directory is, looked at for reading.
pub(super) enum Entry {
    /// A regular file, open for reading.
    File(File),
    Missing,
    /// Anything else, which is never read: what it is (`a FIFO`, `a symbolic link`).
    Other(&'static str),
}

/// How a subdirectory could not be opened.
#[derive(Debug)]
pub(super) enum DirError {
    Missing,
    /// A symbolic link, a file: what it is.
    NotADirectory(&'static str),
    Failed(io::Error),
}

impl StoreDir {
    /// The store's own directory, DIR: the one path resolved from the top (DIR itself may be
    /// a symbolic link, to a volume for instance; nothing inside it may).
    pub(super) fn open_root(path: &Path) -> io::Result<StoreDir> {
        let fd = nix::fcntl::open(path, os::dir::flags(), Mode::empty())?;
        Ok(StoreDir {
            fd: File::from(fd),
            path: path.to_owned(),
        })
    }

    /// The subdirectory `name`, never through a symbolic link.
    pub(super) fn open_subdir(&self, name: &str) -> Result<StoreDir, DirError> {
        match openat(
            &self.fd,
            name,
            os::dir::flags() | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(StoreDir {
                fd: File::from(fd),
                path: self.path.join(name),
            }),
            Err(Errno::ENOENT) => Err(DirError::Missing),
            // O_NOFOLLOW on a symbolic link is ELOOP; O_DIRECTORY on anything else, ENOTDIR.
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                Err(DirError::NotADirectory(match self.stat(OsStr::new(name)) {
                    Ok(stat) => kind(&stat),
                    Err(_) => "not a directory",
                }))
            }
            Err(errno) => Err(DirError::Failed(errno.into())),
        }
    }

    /// Makes the subdirectory `name` with exactly `mode` (whatever the umask); false when it
    /// was there already.
    pub(super) fn create_subdir(&self, name: &str, mode: u32) -> io::Result<bool> {
        match mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Ok(false),
            Err(errno) => return Err(errno.into()),
        }
        let fd = openat(
            &self.fd,
            name,
            os::dir::flags() | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?;
        fchmod(&fd, Mode::from_bits_truncate(mode))?;
        Ok(true)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's own metadata (its mode), from its descriptor.
    pub(super) fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.fd.metadata()
    }

    /// The path of the entry `name`, for messages.
    pub(super) fn path_of(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// The names of the entries (not `.` and `..`), each with its type when the directory
    /// listing gives it.
    pub(super) fn names(&self) -> io::Result<Vec<(OsString, Listed)>> {
        // A descriptor of its own: a listing reads from its own offset.
        os::dir::entries(openat(&self.fd, ".", os::dir::flags(), Mode::empty())?)
    }

    /// `fstatat` without following a symbolic link.
    pub(super) fn stat(&self, name: &OsStr) -> io::Result<FileStat> {
        Ok(fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?)
    }

    /// Whether `name` is a regular file, and how long ago it was last modified.
    pub(super) fn regular_file_age(&self, name: &OsStr) -> io::Result<Option<Duration>> {
        let stat = self.stat(name)?;
        if !is_regular(&stat) {
            return Ok(None);
        }
        let modified = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(stat.st_mtime).unwrap_or(0),
                u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
            );
        Ok(Some(
            SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default(),
        ))
    }

    /// Opens `name` for reading if it is a regular file. A FIFO, a device, a socket, a
    /// directory or a symbolic link is [`Entry::Other`]: looked at with `fstatat` first, so a
    /// device is never opened, then opened with `O_NOFOLLOW | O_NONBLOCK` and checked again,
    /// so that one swapped in between neither redirects the read nor blocks it.
    pub(super) fn open_regular(&self, name: &OsStr) -> io::Result<Entry> {
        match self.stat(name) {
            Ok(stat) if !is_regular(&stat) => return Ok(Entry::Other(kind(&stat))),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Entry::Missing),
            Err(err) => return Err(err),
        }
        self.open_regular_with(name, OFlag::O_RDONLY)
    }

    /// Opens the regular file `name` for writing (never creating it), as [`StoreDir::open_regular`].
    pub(super) fn open_regular_for_writing(&self, name: &OsStr) -> io::Result<Entry> {
        self.open_regular_with(name, OFlag::O_WRONLY)
    }

    fn open_regular_with(&self, name: &OsStr, access: OFlag) -> io::Result<Entry> {
        let flags =
            access | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Entry::Missing),
            Err(Errno::ELOOP) => return Ok(Entry::Other(SYMLINK)),
            // A FIFO opened for writing with no reader.
            Err(Errno::ENXIO) => return Ok(Entry::Other("a FIFO")),
            Err(errno) => return Err(errno.into()),
        };
        let stat = fstat(&fd)?;
        if !is_regular(&stat) {
            return Ok(Entry::Other(kind(&stat)));
        }
        Ok(Entry::File(File::from(fd)))
    }

    /// Creates the new regular file `name` with exactly `mode` (whatever the umask).
    pub(super) fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd: OwnedFd = openat(&self.fd, name, flags, Mode::from_bits_truncate(mode))?;
        fchmod(&fd, Mode::from_bits_truncate(mode))?;
        Ok(File::from(fd))
    }

    /// Removes the file `name` (never a directory); one that is already gone is fine.
    pub(super) fn remove(&self, name: &OsStr) -> io::Result<()> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Renames `name` to `target` in `into`, replacing what is there.
    pub(super) fn rename_into(
        &self,
        name: &OsStr,
        into: &StoreDir,
        target: &OsStr,
    ) -> io::Result<()> {
        Ok(nix::fcntl::renameat(&self.fd, name, &into.fd, target)?)
    }

    /// Links `name` as `target` in `into`; an existing `target` is EEXIST, never replaced.
    pub(super) fn link_into(
        &self,
        name: &OsStr,
        into: &StoreDir,
        target: &OsStr,
    ) -> io::Result<()> {
        Ok(linkat(&self.fd, name, &into.fd, target, AtFlags::empty())?)
    }

    /// Another descriptor of the same open directory (flock(2) locks are held by it).
    pub(super) fn duplicate(&self) -> io::Result<File> {
        self.fd.try_clone()
    }
}

impl AsFd for StoreDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn is_regular(stat: &FileStat) -> bool {
    file_type(stat) == SFlag::S_IFREG
}

fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

/// What a file that is not a regular one is, for messages.
fn kind(stat: &FileStat) -> &'static str {
    match file_type(stat) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => SYMLINK,
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        _ => "not a regular file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn only_regular_files_are_opened_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = StoreDir::open_root(dir.path()).unwrap();
        std::fs::write(dir.path().join("value"), b"x").unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        symlink("value", dir.path().join("link")).unwrap();
        symlink("fifo", dir.path().join("link-to-fifo")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(matches!(
            root.open_regular(OsStr::new("value")),
            Ok(Entry::File(_))
        ));
        assert!(matches!(
            root.open_regular(OsStr::new("gone")),
            Ok(Entry::Missing)
        ));
        for (name, what) in [
            ("fifo", "a FIFO"),
            ("link", "a symbolic link"),
            ("link-to-fifo", "a symbolic link"),
            ("sub", "a directory"),
        ] {
            match root.open_regular(OsStr::new(name)) {
                Ok(Entry::Other(kind)) => assert_eq!(kind, what, "{name}"),
                _ => panic!("{name} was opened"),
            }
        }
        match root.open_regular_for_writing(OsStr::new("fifo")) {
            Ok(Entry::Other(_)) => {}
            _ => panic!("a FIFO was opened for writing"),
        }
    }

    #[test]
    fn a_subdirectory_that_is_a_link_is_refused_and_removal_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), b"root").unwrap();
        symlink(outside.path(), dir.path().join("keys")).unwrap();
        let root = StoreDir::open_root(dir.path()).unwrap();
        assert!(matches!(
            root.open_subdir("keys"),
            Err(DirError::NotADirectory("a symbolic link"))
        ));
        assert!(matches!(root.open_subdir("tmp"), Err(DirError::Missing)));
        assert!(root.create_subdir("tmp", 0o700).unwrap());
        assert!(!root.create_subdir("tmp", 0o700).unwrap());
        let tmp = root.open_subdir("tmp").unwrap();
        // A name is never a path: the removal happens in tmp/, or nowhere.
        tmp.remove(OsStr::new("passwd")).unwrap();
        assert!(outside.path().join("passwd").exists());
    }
}
