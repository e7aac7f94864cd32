//! Which keys and prefixes the environment scripts read through `envharness kv` during a run,
//! and what they saw (docs/reference.md §11.5: under `--watch` a change to any of them re-runs
//! discovery).
//!
//! The harness keeps an in-memory file (memfd) and hands its scripts, and only them, its path
//! as `/proc/PID/fd/N` in [`READS_VARIABLE`]; `envharness kv get|list` run by a script (or by
//! anything a script starts) appends one line per read: the operation, the key or prefix, and a
//! digest of what it saw (never the value). Lines are short and appended with `O_APPEND`, so
//! scripts running at once (`--jobs`) do not interleave. The command never gets the variable,
//! and the memfd is close-on-exec, so nothing of it reaches the command. A `kv` that cannot
//! open the path (another user, no /proc) records nothing: only the re-run on a change is lost.
//!
//! Any process of the same user may write to the memfd too, so what it holds is not trusted:
//! malformed lines are passed over, and a log larger than [`READ_LOG_LIMIT`], or naming more
//! than [`LOOKUP_LIMIT`] lookups, is not read at all. Such a run counts as having read
//! everything ([`Reads::Everything`]): the next change anywhere in the registry re-runs
//! discovery. Nothing is lost but precision, and the harness's memory and the work of each
//! change stay bounded whatever is written there.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;

use nix::sys::memfd::{memfd_create, MFdFlags};

use super::{Key, Lookup, Seen};
use crate::error::Error;
use crate::os::read_at_most;

/// The variable that tells `envharness kv` where to record its reads.
pub const READS_VARIABLE: &str = "ENVHARNESS_KV_READS";

/// The most of a read log the harness reads: 1 MiB, tens of thousands of lines, far more than the
/// environment scripts of one run read (docs/reference.md §11.5).
pub const READ_LOG_LIMIT: usize = 1 << 20;

/// The most distinct lookups the harness looks up again at each change of the registry: each
/// one is a request to the store (a listing of the file store's keys, for a `get`), made on
/// the thread that also renews the leases.
pub const LOOKUP_LIMIT: usize = 1000;

/// What the environment scripts of one run read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// These lookups, each with the digest of what it saw.
    These(Vec<(Lookup, String)>),
    /// More than the harness reads (or looks up again): any change of the registry counts.
    Everything,
}

impl Default for Reads {
    fn default() -> Reads {
        Reads::These(Vec::new())
    }
}

/// The harness's end: the reads of one run.
pub struct ReadLog {
    file: File,
    path: OsString,
}

impl ReadLog {
    pub fn create() -> Result<ReadLog, Error> {
        let fd = memfd_create(c"envharness-kv-reads", MFdFlags::MFD_CLOEXEC)
            .map_err(|err| Error::io("memfd", "recording the registry reads", err.into()))?;
        let file = File::from(fd);
        let path = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd()).into();
        Ok(ReadLog { file, path })
    }

    /// `ENVHARNESS_KV_READS=…`, for the environment scripts' environment.
    pub fn variable(&self) -> (OsString, OsString) {
        (READS_VARIABLE.into(), self.path.clone())
    }

    /// The reads recorded since the last call, each with the digest of what it saw; the log
    /// starts again empty. A log over the limits is [`Reads::Everything`], with a warning.
    pub fn take(&mut self) -> Reads {
        let _ = self.file.seek(SeekFrom::Start(0));
        let bytes = read_at_most(&mut self.file, READ_LOG_LIMIT, 0);
        let _ = self.file.set_len(0);
        let _ = self.file.seek(SeekFrom::Start(0));
        let reads = match bytes {
            Ok(Some(bytes)) => parse_log(&bytes),
            Ok(None) => None,
            Err(err) => {
                log::debug!("the registry reads cannot be read: {err}");
                None
            }
        };
        reads.unwrap_or_else(|| {
            log::warn!(
                "{READS_VARIABLE}: the scripts recorded more than {READ_LOG_LIMIT} bytes or {LOOKUP_LIMIT} lookups; any change in the registry now re-runs discovery"
            );
            Reads::Everything
        })
    }
}

/// The distinct lookups of a log, or None when there are more than [`LOOKUP_LIMIT`]. Lines
/// that are not lookups (not UTF-8, an unknown operation, an invalid key) are passed over.
pub(crate) fn parse_log(bytes: &[u8]) -> Option<Reads> {
    let mut reads = BTreeSet::new();
    for line in bytes.split(|&byte| byte == b'\n') {
        let Some(read) = std::str::from_utf8(line).ok().and_then(parse_line) else {
            continue;
        };
        reads.insert(read);
        if reads.len() > LOOKUP_LIMIT {
            return None;
        }
    }
    Some(Reads::These(reads.into_iter().collect()))
}

fn parse_line(line: &str) -> Option<(Lookup, String)> {
    let mut fields = line.splitn(3, '\t');
    let (operation, what, digest) = (fields.next()?, fields.next()?, fields.next()?);
    let lookup = match operation {
        "get" => Lookup::Get(Key::parse(what).ok()?),
        "list" => Lookup::List(what.to_owned()),
        _ => return None,
    };
    Some((lookup, digest.to_owned()))
}

/// In `envharness kv`: records a read when the harness asked for it (`var` reads the
/// environment). Best effort: a read that cannot be recorded is only logged at debug level.
pub fn record(var: impl Fn(&str) -> Option<OsString>, lookup: &Lookup, seen: &Seen) {
    let Some(path) = var(READS_VARIABLE).filter(|path| !path.is_empty()) else {
        return;
    };
    let Some(line) = log_line(lookup, seen) else {
        return;
    };
    let written = OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(err) = written {
        log::debug!("{}: cannot record the read: {err}", path.to_string_lossy());
    }
}

/// The line that records a lookup; None for a prefix that no line can hold.
pub(crate) fn log_line(lookup: &Lookup, seen: &Seen) -> Option<String> {
    match lookup {
        Lookup::Get(key) => Some(format!("get\t{key}\t{}\n", seen.digest())),
        Lookup::List(prefix) if !prefix.contains(['\t', '\n']) => {
            Some(format!("list\t{prefix}\t{}\n", seen.digest()))
        }
        Lookup::List(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_recorded_through_the_proc_path_come_back_once_each() {
        let mut log = ReadLog::create().expect("a memfd");
        let (name, path) = log.variable();
        let var = |asked: &str| (asked == name).then(|| path.clone());
        let key = Lookup::Get(Key::parse("db/url").unwrap());
        let seen = Seen::Value(Some(b"x".to_vec()));
        record(var, &key, &seen);
        record(var, &key, &seen);
        record(var, &Lookup::List("web/".into()), &Seen::Pairs(Vec::new()));
        let reads = log.take();
        assert_eq!(
            reads,
            Reads::These(vec![
                (key, seen.digest()),
                (Lookup::List("web/".into()), "-".to_owned())
            ])
        );
        assert_eq!(log.take(), Reads::default(), "the log starts again empty");
    }

    /// Appends `bytes` to the log, as any process of the user may.
    fn append(log: &ReadLog, bytes: &[u8]) {
        let (_, path) = log.variable();
        OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(bytes))
            .expect("appending to the read log");
    }

    #[test]
    fn lines_that_are_not_lookups_are_passed_over() {
        let mut log = ReadLog::create().expect("a memfd");
        append(
            &log,
            b"get\tdb\t-\nfrob\tx\t-\nget\ta//b\t-\n\xff\xfe\tx\nget\tdb\nlist\tweb/\t00ff\n\n",
        );
        assert_eq!(
            log.take(),
            Reads::These(vec![
                (Lookup::Get(Key::parse("db").unwrap()), "-".to_owned()),
                (Lookup::List("web/".into()), "00ff".to_owned()),
            ])
        );
    }

    #[test]
    fn a_log_over_the_limits_is_everything_and_starts_again_empty() {
        let mut log = ReadLog::create().expect("a memfd");
        // One huge line, then many short ones.
        append(&log, &vec![b'x'; READ_LOG_LIMIT + 1]);
        assert_eq!(log.take(), Reads::Everything);
        assert_eq!(log.take(), Reads::default());
        let many: String = (0..=LOOKUP_LIMIT)
            .map(|n| format!("list\tp{n}\t-\n"))
            .collect();
        assert!(many.len() < READ_LOG_LIMIT);
        append(&log, many.as_bytes());
        assert_eq!(log.take(), Reads::Everything);
        let within: String = (0..LOOKUP_LIMIT)
            .map(|n| format!("get\tk{n}\t-\n"))
            .collect();
        append(&log, within.as_bytes());
        assert!(matches!(log.take(), Reads::These(reads) if reads.len() == LOOKUP_LIMIT));
    }
}
