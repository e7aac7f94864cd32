//! Listing a directory without libc's opendir: musl's takes the buffer it reads into from
//! musl's own allocator, which maps a page for it, unmaps it at closedir and sets itself up
//! on its first call; that was about 15 µs of a start-up that lists its two directories
//! (docs/performance.md). Here the buffer is on the stack.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::stat::Mode;

/// The names in `dir`, without `.` and `..`, in the order the kernel gives them.
pub fn names(dir: &Path) -> io::Result<Vec<OsString>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(dir, flags, Mode::empty())?;
    let mut names = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        // SAFETY: getdents64 writes at most `buffer.len()` bytes to `buffer`.
        let filled = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buffer.as_mut_ptr(),
                buffer.len(),
            )
        };
        let filled = match usize::try_from(filled) {
            Ok(0) => return Ok(names),
            Ok(filled) => filled,
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
        };
        names.extend(
            records(&buffer[..filled])
                .filter(|name| !matches!(*name, b"." | b".."))
                .map(|name| OsString::from_vec(name.to_vec())),
        );
    }
}

/// The names in getdents64's records: each is an inode number (8 bytes), an offset (8), the
/// record's length (2), a type (1) and the name, ended by a NUL.
fn records(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    const NAME: usize = 19;
    std::iter::from_fn(move || {
        let length = usize::from(u16::from_ne_bytes(bytes.get(16..18)?.try_into().ok()?));
        let record = bytes.get(..length).filter(|_| length > NAME)?;
        bytes = &bytes[length..];
        let name = &record[NAME..];
        Some(&name[..name.iter().position(|&byte| byte == 0)?])
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
    fn a_file_or_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let err = names(&dir.path().join("file")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        let err = names(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
