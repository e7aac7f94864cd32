//! Listing a directory without libc's opendir: musl's takes the buffer it reads into from
//! musl's own allocator, which maps a page for it, unmaps it at closedir and sets itself up
//! on its first call; that was about 15 µs of a start-up that lists its two directories
//! (docs/performance.md). Here the buffer is on the stack. Every listing of the harness's
//! goes through [`entries`]: the environment and export directories, the file store's, /proc.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::stat::Mode;

/// What a listing says an entry is. File systems may not say (`DT_UNKNOWN`): the caller then
/// asks with a `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    Directory,
    File,
    Other,
    Unknown,
}

/// The flags a directory is opened with, to be listed or to work in.
pub fn flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

/// The names in `dir`, without `.` and `..`, in the order the kernel gives them.
pub fn names(dir: &Path) -> io::Result<Vec<OsString>> {
    let fd = nix::fcntl::open(dir, flags(), Mode::empty())?;
    Ok(entries(fd)?.into_iter().map(|(name, _)| name).collect())
}

/// The entries of the directory open as `dir` (read from its offset), without `.` and `..`.
pub fn entries(dir: OwnedFd) -> io::Result<Vec<(OsString, Listed)>> {
    let mut entries = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        // SAFETY: getdents64 writes at most `buffer.len()` bytes to `buffer`.
        let filled = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buffer.as_mut_ptr(),
                buffer.len(),
            )
        };
        let filled = match usize::try_from(filled) {
            Ok(0) => return Ok(entries),
            Ok(filled) => filled,
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
        };
        entries.extend(
            records(&buffer[..filled])
                .filter(|(name, _)| !matches!(*name, b"." | b".."))
                .map(|(name, kind)| (OsString::from_vec(name.to_vec()), kind)),
        );
    }
}

/// The names and types in getdents64's records: each is an inode number (8 bytes), an offset
/// (8), the record's length (2), a type (1) and the name, ended by a NUL.
fn records(mut bytes: &[u8]) -> impl Iterator<Item = (&[u8], Listed)> {
    const TYPE: usize = 18;
    const NAME: usize = 19;
    std::iter::from_fn(move || {
        let length = usize::from(u16::from_ne_bytes(bytes.get(16..18)?.try_into().ok()?));
        let record = bytes.get(..length).filter(|_| length > NAME)?;
        bytes = &bytes[length..];
        let kind = match record[TYPE] {
            libc::DT_DIR => Listed::Directory,
            libc::DT_REG => Listed::File,
            libc::DT_UNKNOWN => Listed::Unknown,
            _ => Listed::Other,
        };
        let name = &record[NAME..];
        Some((&name[..name.iter().position(|&byte| byte == 0)?], kind))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_listed_across_many_reads() {
        let dir = tempfile::tempdir().unwrap();
        // Far more than one 4 KiB read holds, of every length up to the longest name.
        let mut expected: Vec<OsString> = (0..400)
            .map(|i| OsString::from(format!("{i}-{}", "x".repeat(i % 250))))
            .collect();
        for name in &expected {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join(".hidden")).unwrap();
        expected.push(".hidden".into());
        let mut listed = names(dir.path()).unwrap();
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected);
    }

    #[test]
    fn entries_come_with_the_type_the_listing_gives() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        std::os::unix::fs::symlink("file", dir.path().join("link")).unwrap();
        let fd = nix::fcntl::open(dir.path(), flags(), Mode::empty()).unwrap();
        let mut listed = entries(fd).unwrap();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&str> = listed
            .iter()
            .map(|(name, _)| name.to_str().unwrap())
            .collect();
        assert_eq!(names, ["file", "link", "sub"]);
        // A file system that does not say gives Unknown (tmpfs and ext4 say).
        for ((_, listed), said) in
            listed
                .iter()
                .zip([Listed::File, Listed::Other, Listed::Directory])
        {
            assert!(*listed == said || *listed == Listed::Unknown, "{listed:?}");
        }
    }

    #[test]
    fn a_file_or_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let err = names(&dir.path().join("file")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        let err = names(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
