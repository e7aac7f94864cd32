//! The registry (docs/reference.md §11): export scripts publish what they print, environment
//! scripts discover it with `envharness kv`, and a lease makes a dead service's keys disappear.
//!
//! One interface, [`Store`], with one file per store behind it; everything above it (the
//! `kv` subcommand, publishing, leases, withdrawal, health, change triggers) is written once
//! against the trait. Keys are checked once, by [`Key::parse`], before any store sees them.
//!
//! Store calls block, each bounded in time (an unreachable store is an error within 5 s,
//! naming the URL and the reason). Change notification is a [`Watch`]: a descriptor that
//! becomes readable when a key under its prefix may have changed (a lease running out
//! included), so a poll loop can wait on it with everything else.
//! Under `--init` the harness makes its requests from a thread ([`worker`]), so that a slow
//! store never holds up the supervisor.

pub mod etcd;
pub mod file;
pub mod kv;
pub(crate) mod publish;
pub(crate) mod reads;
pub(crate) mod worker;

use std::ffi::OsString;
use std::hash::Hasher;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::os::{read_file_at_most, Fnv};

/// The largest value a key may hold (docs/reference.md §11.1).
pub const VALUE_LIMIT: usize = 131_071;
/// The longest key, in bytes.
pub const KEY_LIMIT: usize = 512;
/// How long a store may take to answer before it counts as unreachable.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// `--kv` and what goes with it: where the registry is, and how this instance appears in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub url: String,
    /// This instance's segment of the published keys (`NAME/INSTANCE`).
    pub instance: String,
    /// The lease of published keys under `--init`.
    pub ttl: Duration,
}

/// A checked key: segments of `[A-Za-z0-9_.-]` joined by `/`, no empty, `.` or `..` segment,
/// at most [`KEY_LIMIT`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    pub fn parse(text: &str) -> Result<Key, Error> {
        let invalid = |reason: &str| Error::Key {
            key: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(invalid("an empty key"));
        }
        if text.len() > KEY_LIMIT {
            return Err(invalid(&format!(
                "the key is {} bytes, over the limit of {KEY_LIMIT}",
                text.len()
            )));
        }
        for segment in text.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(invalid(
                    "a key is segments joined by '/', none of them empty, '.' or '..'",
                ));
            }
            if !segment.bytes().all(is_key_byte) {
                return Err(invalid(
                    "a key may only hold A-Z, a-z, 0-9, '_', '.', '-' and '/'",
                ));
            }
        }
        Ok(Key(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_key_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-')
}

/// A value a key may hold: at most [`VALUE_LIMIT`] bytes.
pub fn check_value_size(key: &str, value: &[u8]) -> Result<(), Error> {
    if value.len() > VALUE_LIMIT {
        return Err(Error::Key {
            key: key.to_owned(),
            reason: format!(
                "the value is {} bytes, over the limit of {VALUE_LIMIT}",
                value.len()
            ),
        });
    }
    Ok(())
}

/// etcd's user authentication (docs/reference.md §11.1): `ENVHARNESS_KV_USER` with
/// `ENVHARNESS_KV_PASSWORD` or `ENVHARNESS_KV_PASSWORD_FILE`. Never logged; its Debug hides
/// the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

impl Credentials {
    /// Reads the variables through `var`; None without `ENVHARNESS_KV_USER`. A user without
    /// a password (or a password without a user) is a usage error.
    pub fn from_env(var: impl Fn(&str) -> Option<OsString>) -> Result<Option<Credentials>, Error> {
        let text = |name: &str| {
            var(name)
                .filter(|value| !value.is_empty())
                .map(|value| value.to_string_lossy().into_owned())
        };
        let user = text("ENVHARNESS_KV_USER");
        let password = match (
            text("ENVHARNESS_KV_PASSWORD"),
            text("ENVHARNESS_KV_PASSWORD_FILE"),
        ) {
            (Some(password), _) => Some(password),
            (None, Some(file)) => Some(read_password_file(&PathBuf::from(file))?),
            (None, None) => None,
        };
        match (user, password) {
            (Some(user), Some(password)) => Ok(Some(Credentials { user, password })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(Error::Usage(
                "ENVHARNESS_KV_USER is set without ENVHARNESS_KV_PASSWORD or ENVHARNESS_KV_PASSWORD_FILE".into(),
            )),
            (None, Some(_)) => Err(Error::Usage(
                "a registry password is set without ENVHARNESS_KV_USER".into(),
            )),
        }
    }
}

/// What reaching a store takes besides its URL, read from the environment once: etcd's login
/// (docs/reference.md §11.1) and, for `etcds://`, the TLS settings (§12) with their files.
/// The harness reads it before anything runs, so a password file or certificate that cannot
/// be read is an error then, not once the command runs; its templates and its publishing
/// share it.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub credentials: Option<Credentials>,
    pub tls: Option<etcd::Tls>,
}

impl Access {
    /// Reads the variables through `var` for the store at `url` (the TLS ones only for
    /// `etcds://`).
    pub fn from_env(url: &str, var: impl Fn(&str) -> Option<OsString>) -> Result<Access, Error> {
        let credentials = Credentials::from_env(&var)?;
        let tls = if etcd::is_tls_url(url) {
            let text = |name: &str| var(name).map(|value| value.to_string_lossy().into_owned());
            Some(etcd::Tls::read(
                url,
                etcd::TlsSettings::from_env(url, text)?,
            )?)
        } else {
            None
        };
        Ok(Access { credentials, tls })
    }
}

/// Whether `url` names the etcd store, plain or over TLS (`etcd+https` is refused by it).
fn is_etcd_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        matches!(
            scheme.to_ascii_lowercase().as_str(),
            "etcd" | "etcds" | "etcd+https"
        )
    })
}

/// The one warning that a password for `url` crosses the network in clear text
/// (docs/reference.md §12): `etcd://` with a user and password to an endpoint that is not a
/// loopback address. The harness says it once; `envharness kv` outside a harness once per run.
pub fn warn_of_a_clear_text_password(url: &str, access: &Access) {
    if etcd::sends_password_in_clear(url, access) {
        log::warn!(
            "{url}: the etcd password crosses the network in clear text; use etcds:// (TLS) to an etcd that is not on this machine"
        );
    }
}

/// More than any password: a file this large is the wrong file.
const PASSWORD_LIMIT: usize = 64 * 1024;

/// The password file's content minus one trailing newline (as a Docker secret is written).
fn read_password_file(path: &std::path::Path) -> Result<String, Error> {
    let failed = |err| Error::io(path, "reading ENVHARNESS_KV_PASSWORD_FILE", err);
    let content = std::fs::File::open(path)
        .and_then(|file| read_file_at_most(file, PASSWORD_LIMIT))
        .map_err(failed)?
        .ok_or_else(|| {
            Error::entry(
                path,
                format!("over {PASSWORD_LIMIT} bytes: not a password file"),
            )
        })?;
    let content = crate::variables::strip_one_newline(content);
    String::from_utf8(content).map_err(|_| Error::entry(path, "the registry password is not UTF-8"))
}

/// A lease: keys put with it disappear when it runs out or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// A key/value store (docs/reference.md §11.1). Every call is bounded in time; an unreachable store
/// is [`Error::Store`] naming the URL and the reason.
pub trait Store: Send {
    /// The URL as given (never with credentials), for messages.
    fn url(&self) -> &str;

    /// The key's value, or None when it does not exist (or its lease ran out).
    fn get(&mut self, key: &Key) -> Result<Option<Vec<u8>>, Error>;

    /// The live keys that start with `prefix` (a string prefix: `web/` or `we`; empty: all),
    /// with their values, in byte order of the keys.
    fn list(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error>;

    /// Sets the key; with a lease, the key goes when the lease does.
    fn put(&mut self, key: &Key, value: &[u8], lease: Option<LeaseId>) -> Result<(), Error>;

    /// Removes the key; one that is already absent is fine.
    fn delete(&mut self, key: &Key) -> Result<(), Error>;

    /// A new lease that runs out `ttl` (whole seconds, at least 2) from now unless kept alive.
    fn grant(&mut self, ttl: Duration) -> Result<LeaseId, Error>;

    /// Renews the lease for another TTL; `Ok(false)` when it is gone (it ran out, the store
    /// was wiped): its keys are gone too, and a new lease must be granted.
    fn keep_alive(&mut self, lease: LeaseId) -> Result<bool, Error>;

    /// Ends the lease and removes its keys.
    fn revoke(&mut self, lease: LeaseId) -> Result<(), Error>;

    /// Starts watching the keys that start with `prefix` (empty: all).
    fn watch(&mut self, prefix: &str) -> Result<Box<dyn Watch>, Error>;

    /// Bounds every later call by `limit` (less than [`REACH_TIMEOUT`]), for a caller with a
    /// budget of its own (a template's reads). A store whose calls cannot wait for long
    /// anyway does nothing.
    fn limit_calls(&mut self, _limit: Duration) {}
}

/// Change notification for the keys under one prefix, for a poll loop. Each store watches on
/// a thread of its own, so that the caller's loop only ever polls a descriptor.
pub trait Watch: Send {
    /// Becomes readable when a key under the prefix may have changed (a put, a delete, a
    /// lease running out).
    fn fd(&self) -> BorrowedFd<'_>;

    /// Consumes what made [`Watch::fd`] readable (never blocks); returns whether a key under
    /// the prefix may have changed. The caller reads the keys again to know what did.
    fn drain(&mut self) -> bool;
}

/// Opens the store a `--kv` URL names: `file:///DIR` (the embedded store, [`file`]) or
/// `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` and `etcds://…` ([`etcd`], which contacts nobody
/// yet); any other scheme, or a URL without one, is a usage error naming it. `access` is for
/// the stores that log in and speak TLS; the file store has none to check.
pub fn open(url: &str, access: Access) -> Result<Box<dyn Store>, Error> {
    refuse_credentials(url)?;
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Error::Usage(format!(
            "{url}: not a registry URL (file:///DIR, etcd://HOST:PORT or etcds://HOST:PORT)"
        )));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" => {
            drop(access);
            let dir = file::store_directory(url, rest)?;
            let store = file::FileStore::open(url, dir).map_err(|err| unusable(url, err))?;
            Ok(Box::new(store))
        }
        // etcd+https is refused there, saying TLS is written etcds://.
        _ if is_etcd_url(url) => Ok(Box::new(etcd::open(url, access)?)),
        _ => Err(Error::Usage(format!(
            "{url}: unknown registry scheme '{scheme}' (file:///DIR, etcd://HOST:PORT or etcds://HOST:PORT)"
        ))),
    }
}

/// A URL holding a user or password is refused before anything echoes it; credentials go in
/// ENVHARNESS_KV_USER and ENVHARNESS_KV_PASSWORD.
fn refuse_credentials(url: &str) -> Result<(), Error> {
    if url.contains('@') {
        return Err(Error::Usage(
            "the registry URL holds '@': give credentials in ENVHARNESS_KV_USER and ENVHARNESS_KV_PASSWORD(_FILE), not in the URL".into(),
        ));
    }
    Ok(())
}

/// Checks a `--kv` URL as the harness starts, contacting nothing and creating nothing: a
/// scheme, a path or an endpoint that could never work is a usage error before anything runs,
/// even under `--init`, where the store itself is opened later, on the registry's thread.
pub fn check_url(url: &str) -> Result<(), Error> {
    refuse_credentials(url)?;
    let file = url
        .split_once("://")
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("file"));
    match file {
        Some((_, rest)) => file::store_directory(url, rest).map(drop),
        // Its certificate files are read with the settings (Access::from_env).
        _ if is_etcd_url(url) => etcd::check_url(url),
        // Refused by open, naming the URL and what is wrong with it.
        _ => open(url, Access::default()).map(drop),
    }
}

/// A store that cannot be opened is named by its URL (docs/reference.md §11.1), with what failed.
fn unusable(url: &str, err: Error) -> Error {
    match err {
        Error::Io { path, about, err } => Error::Store {
            url: url.to_owned(),
            reason: format!("{about} {}: {err}", path.display()),
        },
        Error::Entry { path, reason } => Error::Store {
            url: url.to_owned(),
            reason: format!("{}: {reason}", path.display()),
        },
        other => other,
    }
}

/// What an environment script read through `envharness kv`: a key (`get`, which falls back
/// to the first live key under `KEY/`) or a prefix (`list`). Under `--watch` the harness looks
/// each one up again when the store changes (docs/reference.md §11.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lookup {
    Get(Key),
    List(String),
}

/// What a lookup saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// `get`: the value, of KEY or of the first live `KEY/…`, if any.
    Value(Option<Vec<u8>>),
    /// `list`: the live keys under the prefix with their values, in byte order.
    Pairs(Vec<(String, Vec<u8>)>),
}

impl Seen {
    /// A short fingerprint (64-bit FNV-1a, in hex) to compare two lookups by; the values
    /// themselves are never written anywhere.
    pub fn digest(&self) -> String {
        let mut hash = Fnv::default();
        match self {
            Seen::Value(None) => return "-".into(),
            Seen::Value(Some(value)) => hash.write(value),
            Seen::Pairs(pairs) if pairs.is_empty() => return "-".into(),
            Seen::Pairs(pairs) => {
                for (key, value) in pairs {
                    hash.write(key.as_bytes());
                    hash.write(&[0]);
                    hash.write(value);
                    hash.write(&[0]);
                }
            }
        }
        format!("{:016x}", hash.finish())
    }
}

/// `get`'s rule (docs/reference.md §11.2): KEY's value; if KEY does not exist but live keys `KEY/…`
/// do, the value of the first of them in byte order.
pub fn get_or_first_under(store: &mut dyn Store, key: &Key) -> Result<Option<Vec<u8>>, Error> {
    if let Some(value) = store.get(key)? {
        return Ok(Some(value));
    }
    let under = format!("{key}/");
    Ok(store
        .list(&under)?
        .into_iter()
        .next()
        .map(|(_, value)| value))
}

/// Looks up what a script looked up, the way `envharness kv` does.
pub fn look_up(store: &mut dyn Store, lookup: &Lookup) -> Result<Seen, Error> {
    match lookup {
        Lookup::Get(key) => get_or_first_under(store, key).map(Seen::Value),
        Lookup::List(prefix) => store.list(prefix).map(Seen::Pairs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_tell_values_apart_and_nothing_from_empty() {
        let one = Seen::Value(Some(b"a".to_vec())).digest();
        assert_ne!(one, Seen::Value(Some(b"b".to_vec())).digest());
        assert_eq!(Seen::Value(None).digest(), "-");
        assert_eq!(Seen::Pairs(Vec::new()).digest(), "-");
        let pairs = |k: &str, v: &str| Seen::Pairs(vec![(k.into(), v.as_bytes().to_vec())]);
        assert_ne!(pairs("ab", "c").digest(), pairs("a", "bc").digest());
    }

    #[test]
    fn keys_follow_the_key_rules() {
        for good in ["a", "web/host-1", "x.y/z_0", "A/B/C"] {
            assert!(Key::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/./b", "..", "a b", "é", "a=b"] {
            assert!(Key::parse(bad).is_err(), "{bad}");
        }
        assert!(Key::parse(&"k".repeat(512)).is_ok());
        let err = Key::parse(&"k".repeat(513)).unwrap_err();
        assert!(err.to_string().contains("over the limit of 512"), "{err}");
    }

    #[test]
    fn values_may_hold_131071_bytes() {
        assert!(check_value_size("k", &vec![0; VALUE_LIMIT]).is_ok());
        assert!(check_value_size("k", &vec![0; VALUE_LIMIT + 1]).is_err());
    }
}
