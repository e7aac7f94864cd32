//! The file store's formats: how a key names its file in `keys/`, what a value file holds (a
//! small header, then the value's bytes) and what a lease file holds. Pure functions of bytes:
//! nothing here touches the filesystem.

use std::ffi::OsStr;
use std::hash::Hasher;
use std::time::Duration;

use super::super::{is_key_byte, Key, LeaseId};
use crate::os::Fnv;

/// Stands for '/' in a key's file name: not a key character, so decoding is unambiguous.
pub(super) const SEPARATOR: char = '%';
/// Starts the file name of a long key: not a key character, so it never names a short one.
pub(super) const LONG: char = '#';
/// Keys up to this many bytes are their own file name (NAME_MAX is 255).
pub(crate) const SHORT_KEY: usize = 240;
/// How much of a long key its file name shows (so `ls` and a watch's prefix check still see it).
pub(crate) const LONG_SHOWN: usize = 200;

pub(super) const VALUE_FORMAT: &str = "envharness-kv 1";
pub(super) const LEASE_FORMAT: &str = "envharness-lease 1";
/// Room for a value file's header: the format line, a 512-byte key, a lease id and a size.
pub(crate) const HEADER_LIMIT: usize = 1024;

/// A value file's content.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) key: String,
    pub(crate) lease: Option<LeaseId>,
    pub(crate) value: Vec<u8>,
}

/// The file name of `key` in `keys/`.
pub(crate) fn file_name(key: &str) -> String {
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
pub(crate) struct Shown {
    pub(crate) key: String,
    pub(crate) whole: bool,
}

pub(crate) fn parse_name(name: &OsStr) -> Option<Shown> {
    let name = name.to_str()?;
    if let Some(long) = name.strip_prefix(LONG) {
        let (start, hash) = long.split_once(LONG)?;
        let key = start.replace(SEPARATOR, "/");
        let plausible = start.len() == LONG_SHOWN
            && hash.len() == 16
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && key.bytes().all(|b| is_key_byte(b) || b == b'/');
        return plausible.then_some(Shown { key, whole: false });
    }
    let key = name.replace(SEPARATOR, "/");
    (key.len() <= SHORT_KEY && Key::parse(&key).is_ok()).then_some(Shown { key, whole: true })
}

/// Whether a key of which `shown` is known may start with `prefix`.
pub(crate) fn may_start_with(shown: &Shown, prefix: &str) -> bool {
    if shown.whole || prefix.len() <= shown.key.len() {
        shown.key.starts_with(prefix)
    } else {
        prefix.starts_with(&shown.key)
    }
}

/// FNV-1a, 64 bits: a stable hash (std's may change between releases, and a store outlives
/// binaries) that only tells long keys' file names apart; [`Layout::read_record`] checks the
/// key itself.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = Fnv::default();
    hash.write(bytes);
    hash.finish()
}

pub(crate) fn encode_record(key: &str, lease: Option<LeaseId>, value: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{VALUE_FORMAT}\nkey {key}\n").into_bytes();
    if let Some(lease) = lease {
        bytes.extend_from_slice(format!("lease {}\n", lease.0).as_bytes());
    }
    bytes.extend_from_slice(format!("size {}\n\n", value.len()).as_bytes());
    bytes.extend_from_slice(value);
    bytes
}

/// Reads a value file; the reason says why it is not one.
pub(crate) fn parse_record(mut bytes: Vec<u8>) -> Result<Record, String> {
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
pub(crate) struct Header {
    pub(crate) key: String,
    pub(crate) lease: Option<LeaseId>,
    pub(crate) size: usize,
    pub(crate) end: usize,
}

pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, String> {
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
            Some(("key", text)) => key = Key::parse(text).ok().map(|key| key.as_str().to_owned()),
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

/// The name of a file being written in `tmp/`: the writer's pid (not unique alone: containers
/// sharing the store each have a pid 1), a serial of the writer and 64 random bits.
pub(crate) fn temporary_name(pid: u32, serial: u64, random: u64) -> String {
    format!("{pid}-{serial}-{random:016x}")
}

/// Whether `name` is one that [`temporary_name`] makes: the sweep removes nothing else.
pub(crate) fn is_temporary_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let mut fields = name.split('-');
    let digits = |field: Option<&str>| {
        field.is_some_and(|field| !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit()))
    };
    digits(fields.next())
        && digits(fields.next())
        && fields.next().is_some_and(|random| {
            random.len() == 16
                && random
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        && fields.next().is_none()
}

/// The lease a file name in `leases/` stands for: a positive id written as `lease.0.to_string()`
/// writes it (no sign, no leading zero), or None for any other name, which the sweep leaves.
pub(crate) fn parse_lease_name(name: &OsStr) -> Option<LeaseId> {
    let name = name.to_str()?;
    let id: i64 = name.parse().ok()?;
    (id > 0 && id.to_string() == name).then_some(LeaseId(id))
}

/// A lease file's TTL.
pub(crate) fn parse_lease(text: &str) -> Option<Duration> {
    let mut lines = text.lines();
    if lines.next() != Some(LEASE_FORMAT) {
        return None;
    }
    let seconds: u64 = lines.next()?.strip_prefix("ttl ")?.parse().ok()?;
    // At most parse_ttl's limit: a foreign file with a larger one is garbage, not a lease.
    (lines.next().is_none() && (1..=1_000_000_000).contains(&seconds))
        .then(|| Duration::from_secs(seconds))
}

/// A lease file's content: its format and TTL.
pub(crate) fn lease_content(ttl: Duration) -> String {
    format!("{LEASE_FORMAT}\nttl {}\n", ttl.as_secs())
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
    fn only_the_store_s_own_temporary_and_lease_names_are_recognised() {
        let made = temporary_name(417, 3, 0x1f);
        assert_eq!(made, "417-3-000000000000001f");
        assert!(is_temporary_name(OsStr::new(&made)));
        for other in [
            "passwd",
            "417-3",
            "417-3-1f",
            "417-3-000000000000001F",
            "417-3-000000000000001f-x",
            "-3-000000000000001f",
            ".X11-unix",
            "systemd-private-1f0c",
        ] {
            assert!(!is_temporary_name(OsStr::new(other)), "{other}");
        }
        assert_eq!(parse_lease_name(OsStr::new("8125")), Some(LeaseId(8125)));
        for other in ["0", "-5", "+5", "007", "5x", "", "99999999999999999999"] {
            assert_eq!(parse_lease_name(OsStr::new(other)), None, "{other}");
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
}
