//! Entry points for the fuzz targets of `tests/fuzz` (`make fuzz`): thin wrappers over the
//! parsers that read what a user, a file or a server wrote. Compiled only when fuzzing
//! (cargo-fuzz builds with `--cfg fuzzing`), so the library's API is otherwise unchanged.
//! They return plain data (errors as text), so that a target checks properties without
//! reaching into the modules.

#![allow(clippy::type_complexity)]

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use serde_json::Value;

use crate::config::plan;
use crate::phase::require::{Requirement, WaitFor};
use crate::phase::{dotenv, entries};
use crate::registry::etcd::{self, http, watch};
use crate::registry::file::format;
use crate::registry::{kv, reads, Key, Lookup, Seen};
use crate::supervise::rerun::OnChange;

// --- The dotenv parser and `--print` ---------------------------------------------------------

/// `PREFIX.env` text as (NAME, VALUE) pairs, or the line and reason of the first malformed line.
pub fn dotenv_parse(text: &[u8]) -> Result<Vec<(String, Vec<u8>)>, (usize, String)> {
    dotenv::parse(text).map_err(|err| (err.line, err.reason))
}

/// A value as `--print dotenv` quotes it.
pub fn dotenv_quote(value: &[u8]) -> Vec<u8> {
    dotenv::quote(value)
}

pub fn is_variable_name(name: &str) -> bool {
    entries::is_variable_name(name)
}

/// What `--print FORMAT` writes (`dotenv`, `shell` or `json`) for these variables, set in turn.
pub fn print(vars: &[(String, Vec<u8>)], format: &str) -> Vec<u8> {
    let mut variables = crate::variables::Variables::default();
    for (name, value) in vars {
        variables.set(name, value.clone());
    }
    let format = match format {
        "dotenv" => crate::print::Format::Dotenv,
        "shell" => crate::print::Format::Shell,
        _ => crate::print::Format::Json,
    };
    crate::print::render(&variables, format)
}

// --- The etcd client: HTTP answers, the watch stream, the JSON in them --------------------------

/// The most of an answer the client reads whole.
pub const HTTP_BODY_LIMIT: u64 = http::ANSWER_LIMIT;

/// How an answer's body was framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// An answer as the client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub keep_alive: bool,
    pub framing: Framing,
    pub body: Vec<u8>,
}

fn fault(fault: http::Fault) -> String {
    format!("{fault:?}")
}

/// Reads an answer (status line, headers, body) from `reader`, as a connection does.
pub fn http_answer(reader: &mut impl BufRead) -> Result<Answer, String> {
    let head = http::read_head(reader).map_err(fault)?;
    let body = http::read_body(reader, &head.framing).map_err(fault)?;
    Ok(Answer {
        status: head.status,
        keep_alive: head.keep_alive,
        framing: match head.framing {
            http::Framing::Length(length) => Framing::Length(length),
            http::Framing::Chunked => Framing::Chunked,
            http::Framing::UntilClose => Framing::UntilClose,
        },
        body,
    })
}

/// The lines of a chunked stream's body (a watch), at most `most` of them, as the watch thread
/// reads them; then the fault that ended it, if one did.
pub fn http_stream_lines(reader: impl BufRead, most: usize) -> (Vec<Vec<u8>>, Option<String>) {
    let mut lines = BufReader::new(http::Chunked::new(reader));
    let mut read = Vec::new();
    let mut pending = Vec::new();
    while read.len() < most {
        match http::next_line(&mut lines, &mut pending) {
            Ok(Some(line)) => read.push(line),
            Ok(None) => return (read, None),
            Err(failure) => return (read, Some(fault(failure))),
        }
    }
    (read, None)
}

/// What the watch thread makes of one line: events or not, and why the watch ended, if it did.
pub fn watch_answer(line: &[u8]) -> (bool, Option<String>) {
    watch::answer(line)
}

/// What a unary answer's JSON says: etcd's error message, and the numbers `ID` and
/// `result.TTL` (a lease grant, a keep-alive); None when it is not JSON.
pub fn etcd_reply(body: &[u8]) -> Option<(String, Option<i64>, Option<i64>)> {
    let reply: Value = etcd::parse(body)?;
    Some((
        etcd::error_message(&reply),
        etcd::number(&reply["ID"]),
        etcd::number(&reply["result"]["TTL"]),
    ))
}

/// An `etcd://` URL's endpoints (as messages show them) and its key prefix.
pub fn etcd_url(url: &str) -> Result<(Vec<String>, String), String> {
    let (endpoints, prefix) = etcd::parse_url(url).map_err(|err| err.to_string())?;
    Ok((endpoints.iter().map(ToString::to_string).collect(), prefix))
}

/// The key range of a prefix, as base64 text: [key, range_end).
pub fn etcd_range(prefix: &str) -> (String, String) {
    etcd::range(prefix)
}

// --- Keys, and their file names in the file store -------------------------------------------

pub fn key_parse(text: &str) -> Result<String, String> {
    Key::parse(text)
        .map(|key| key.as_str().to_owned())
        .map_err(|err| err.to_string())
}

/// A key's file name in the file store's `keys/`.
pub fn key_file_name(key: &str) -> String {
    format::file_name(key)
}

/// What a file name in `keys/` shows of its key: the key, and whether that is all of it.
pub fn key_of_file_name(name: &[u8]) -> Option<(String, bool)> {
    format::parse_name(OsStr::from_bytes(name)).map(|shown| (shown.key, shown.whole))
}

/// Whether a file whose name shows `shown` may hold a key under `prefix` (a watch's filter).
pub fn may_start_with(shown: (String, bool), prefix: &str) -> bool {
    let (key, whole) = shown;
    format::may_start_with(&format::Shown { key, whole }, prefix)
}

// --- The file store's files --------------------------------------------------------------------

pub const HEADER_LIMIT: usize = format::HEADER_LIMIT;

/// A value file as (key, lease, value).
pub fn parse_record(bytes: Vec<u8>) -> Result<(String, Option<i64>, Vec<u8>), String> {
    format::parse_record(bytes)
        .map(|record| (record.key, record.lease.map(|lease| lease.0), record.value))
}

/// A value file's header as (key, lease, size, end of the header).
pub fn parse_header(bytes: &[u8]) -> Result<(String, Option<i64>, usize, usize), String> {
    format::parse_header(bytes).map(|header| {
        (
            header.key,
            header.lease.map(|lease| lease.0),
            header.size,
            header.end,
        )
    })
}

pub fn encode_record(key: &str, lease: Option<i64>, value: &[u8]) -> Vec<u8> {
    format::encode_record(key, lease.map(crate::registry::LeaseId), value)
}

pub fn parse_lease(text: &str) -> Option<Duration> {
    format::parse_lease(text)
}

pub fn lease_content(ttl: Duration) -> String {
    format::lease_content(ttl)
}

pub fn parse_lease_name(name: &[u8]) -> Option<i64> {
    format::parse_lease_name(OsStr::from_bytes(name)).map(|lease| lease.0)
}

pub fn temporary_name(pid: u32, serial: u64, random: u64) -> String {
    format::temporary_name(pid, serial, random)
}

pub fn is_temporary_name(name: &[u8]) -> bool {
    format::is_temporary_name(OsStr::from_bytes(name))
}

// --- The read log --------------------------------------------------------------------------------

pub const READ_LOG_LIMIT: usize = reads::READ_LOG_LIMIT;
pub const LOOKUP_LIMIT: usize = reads::LOOKUP_LIMIT;

/// The lookups of a read log, each with its digest; None when it holds too many.
pub fn parse_read_log(bytes: &[u8]) -> Option<Vec<(Lookup, String)>> {
    match reads::parse_log(bytes)? {
        reads::Reads::These(lookups) => Some(lookups),
        reads::Reads::Everything => None,
    }
}

/// The line `envharness kv` appends for a lookup, if any.
pub fn read_log_line(lookup: &Lookup, seen: &Seen) -> Option<String> {
    reads::log_line(lookup, seen)
}

// --- Shebang lines -------------------------------------------------------------------------------

/// argv with a shebang line's options split (argv[1], when it looks like them).
pub fn split_shebang(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    crate::config::cli::split_shebang_options(args).map_err(|err| err.to_string())
}

/// The interpreter and its argument of a file that starts with `head` (as much of it as the
/// harness reads: the rest is ignored).
pub fn interpreter_line(head: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    crate::os::shebang::parse_interpreter_line(head).map(|line| (line.interpreter, line.argument))
}

/// The arguments a `#!` line's argument gives envharness, as the loop check reads them.
pub fn harness_words(argument: Vec<u8>) -> Option<Vec<Vec<u8>>> {
    crate::exec::harness_words(argument)
}

// --- Durations and the other option values ------------------------------------------------------

pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    crate::duration::parse_seconds(text)
}

/// A duration as messages show it.
pub fn show_seconds(duration: Duration) -> String {
    crate::duration::seconds(duration)
}

pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    kv::parse_ttl(text)
}

/// A signal's number.
pub fn parse_signal(text: &str) -> Option<i32> {
    plan::parse_signal(text).map(|signal| signal as i32)
}

/// `--on-change`: None for restart, else the signal's number.
pub fn on_change(text: &str) -> Result<Option<i32>, String> {
    let var = |_: &str| None;
    match plan::on_change(Some(text), var).map_err(|err| err.to_string())? {
        OnChange::Restart => Ok(None),
        OnChange::Signal(signal) => Ok(Some(signal as i32)),
    }
}

/// `--rewrite FROM:TO` as signal numbers (None: dropped).
pub fn rewrite(text: &str) -> Result<(i32, Option<i32>), String> {
    plan::rewrite(text)
        .map(|(from, to)| (from as i32, to.map(|to| to as i32)))
        .map_err(|err| err.to_string())
}

/// The signals the harness forwards, which `--rewrite` may rewrite.
pub fn forwarded_signals() -> Vec<i32> {
    use crate::os::signals::{FORWARDED_ONLY, STOP_SIGNALS};
    STOP_SIGNALS
        .iter()
        .chain(FORWARDED_ONLY.iter())
        .map(|signal| *signal as i32)
        .collect()
}

pub fn remap_exit(text: &str) -> Result<(i32, i32), String> {
    plan::remap_exit(text).map_err(|err| err.to_string())
}

/// `--require NAME[=REGEX]` as (NAME, REGEX), and whether each of `values` meets it.
pub fn require(
    text: &str,
    values: &[&[u8]],
) -> Result<(String, Option<String>, Vec<bool>), String> {
    let requirement = Requirement::parse(text).map_err(|err| err.to_string())?;
    let met = values
        .iter()
        .map(|value| requirement.is_met_by(Some(value)))
        .collect();
    let rule = requirement.rule.map(|(regex, _)| regex);
    Ok((requirement.name, rule, met))
}

/// `--wait-for`: `Ok(Err(NAME))` for a variable, `Ok(Ok((HOST, PORT, shown)))` for an address.
pub fn wait_for(text: &str) -> Result<Result<(String, u16, String), String>, String> {
    match WaitFor::parse(text).map_err(|err| err.to_string())? {
        WaitFor::Variable(name) => Ok(Err(name)),
        WaitFor::Address(target) => Ok(Ok((target.host.clone(), target.port, target.to_string()))),
    }
}

/// An address as a variable's value gives it to `--wait-for`: (HOST, PORT, shown).
pub fn parse_target(text: &str) -> Result<(String, u16, String), String> {
    crate::phase::require::parse_target(text)
        .map(|target| (target.host.clone(), target.port, target.to_string()))
}

/// `-t SRC:DEST` as (SRC, DEST).
pub fn template(text: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    crate::phase::template::Template::parse(OsStr::from_bytes(text))
        .map(|template| {
            (
                template.src.as_os_str().as_bytes().to_vec(),
                template.dest.as_os_str().as_bytes().to_vec(),
            )
        })
        .map_err(|err| err.to_string())
}
