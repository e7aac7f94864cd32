//! What the harness asks of the kernel: its own start ([`start`]), starting a child
//! ([`vfork`]), its signals ([`signals`]), waiting on many descriptors at once ([`poll`]),
//! listing a directory ([`dir`]), the process table ([`procfs`], [`children`]) and why a file
//! could not be executed ([`shebang`]). A floor of its own: it knows nothing of scripts, the
//! command or the registry.

pub(crate) mod children;
pub(crate) mod dir;
pub(crate) mod poll;
pub(crate) mod procfs;
pub(crate) mod shebang;
pub mod signals;
pub mod start;
pub(crate) mod user;
pub(crate) mod vfork;

use std::ffi::CString;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};

/// An I/O error as the reason in a message, in lower case and without std's "(os error N)"
/// tail: `connection refused`, not `Connection refused (os error 111)`.
pub fn io_reason(err: &io::Error) -> String {
    let text = err.to_string();
    lower_first(text.split(" (os error").next().unwrap_or(&text))
}

/// `text` with its first letter in lower case, for the reason after a colon in a message.
pub fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// 64-bit FNV-1a: stable across releases (a file store's names outlive binaries, where std's
/// hasher may change), a few instructions a byte (std's SipHash was a seventh of the cost of
/// starting each of a hundred scripts), and only ever given names and values of the harness's
/// own, not an adversary's choosing of collisions that matter.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A C string for execve: a path, an argument or a `NAME=VALUE` string.
pub fn c_string(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("paths, arguments and checked environment strings contain no NUL")
}

/// 64 random bits, from this process's own randomness: std's RandomState is seeded from the
/// kernel's (getrandom), so ten harnesses started in the same second draw different numbers,
/// where a seed from the clock would give them the same.
pub fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Reads `reader` to its end, but never holds more than `limit` bytes: None when there are
/// more (after reading `limit` + 1 of them). Every file, answer and stdin the harness reads
/// goes through here, so no input can make it use unbounded memory. `expected` is how many
/// bytes there should be (a file's length; 0 when unknown): the buffer is made that large at
/// once, so a file is read in one call, where a buffer grown from nothing would take one read
/// per doubling from 32 bytes.
pub fn read_at_most(reader: impl Read, limit: usize, expected: u64) -> io::Result<Option<Vec<u8>>> {
    let capacity = usize::try_from(expected).unwrap_or(limit).min(limit) + 1;
    let mut bytes = Vec::with_capacity(capacity);
    reader.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() <= limit).then_some(bytes))
}

/// A file's bytes, at most `limit` of them (see [`read_at_most`]), read in one call.
pub fn read_file_at_most(file: std::fs::File, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let expected = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    read_at_most(file, limit, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_read_keeps_up_to_the_limit_and_refuses_more() {
        assert_eq!(
            read_at_most(&b"abc"[..], 3, 0).unwrap(),
            Some(b"abc".to_vec())
        );
        assert_eq!(read_at_most(&b"abcd"[..], 3, 4).unwrap(), None);
        assert_eq!(read_at_most(&b""[..], 0, 0).unwrap(), Some(Vec::new()));
        assert_eq!(
            read_at_most(&b"ab"[..], 3, 1 << 40).unwrap(),
            Some(b"ab".to_vec())
        );
    }
}
