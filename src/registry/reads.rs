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

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;

use nix::sys::memfd::{memfd_create, MFdFlags};

use super::{Key, Lookup, Seen};
use crate::error::Error;

/// The variable that tells `envharness kv` where to record its reads.
pub const READS_VARIABLE: &str = "ENVHARNESS_KV_READS";

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
    /// starts again empty.
    pub fn take(&mut self) -> Vec<(Lookup, String)> {
        let mut text = String::new();
        let _ = self.file.seek(SeekFrom::Start(0));
        let _ = self.file.read_to_string(&mut text);
        let _ = self.file.set_len(0);
        let _ = self.file.seek(SeekFrom::Start(0));
        let reads: BTreeSet<(Lookup, String)> = text.lines().filter_map(parse_line).collect();
        reads.into_iter().collect()
    }
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
    let line = match lookup {
        Lookup::Get(key) => format!("get\t{key}\t{}\n", seen.digest()),
        Lookup::List(prefix) if !prefix.contains(['\t', '\n']) => {
            format!("list\t{prefix}\t{}\n", seen.digest())
        }
        Lookup::List(_) => return,
    };
    let written = OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(err) = written {
        log::debug!("{}: cannot record the read: {err}", path.to_string_lossy());
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
            vec![
                (key, seen.digest()),
                (Lookup::List("web/".into()), "-".to_owned())
            ]
        );
        assert!(log.take().is_empty(), "the log starts again empty");
    }
}
