//! The registry (SPEC.md 11): export scripts publish what they print, environment scripts
//! discover it with `envharness kv`, and a lease makes a dead service's keys disappear.
//!
//! One interface, [`Store`], with one file per store behind it; everything above it (the
//! `kv` subcommand, publishing, leases, withdrawal, health, change triggers) is written once
//! against the trait. Keys are checked once, by [`Key::parse`], before any store sees them.
//!
//! Store calls block, each bounded in time (an unreachable store is an error within 5 s,
//! naming the URL and the reason). Change notification is a [`Watch`]: a descriptor that
//! becomes readable when a key under its prefix may have changed, plus a deadline for what no
//! write announces (a lease running out), so a poll loop can wait on it with everything else.

pub mod etcd;

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::Error;

/// The largest value a key may hold (SPEC.md 11.1).
pub const VALUE_LIMIT: usize = 131_071;
/// The longest key, in bytes.
pub const KEY_LIMIT: usize = 512;
/// How long a store may take to answer before it counts as unreachable.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(5);

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
pub fn check_value(key: &str, value: &[u8]) -> Result<(), Error> {
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

/// etcd's user authentication (SPEC.md 11.1): `ENVHARNESS_KV_USER` with
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

/// The password file's content minus one trailing newline (as a Docker secret is written).
fn read_password_file(path: &std::path::Path) -> Result<String, Error> {
    let content = std::fs::read(path)
        .map_err(|err| Error::io(path, "reading ENVHARNESS_KV_PASSWORD_FILE", err))?;
    let content = crate::phase::environment::strip_one_newline(content);
    String::from_utf8(content).map_err(|_| Error::entry(path, "the registry password is not UTF-8"))
}

/// A lease: keys put with it disappear when it runs out or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// A key/value store (SPEC.md 11.1). Every call is bounded in time; an unreachable store is
/// [`Error::Store`] naming the URL and the reason.
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
}

/// Change notification for the keys under one prefix, for a poll loop.
pub trait Watch: Send {
    /// Becomes readable when a key under the prefix may have changed.
    fn fd(&self) -> BorrowedFd<'_>;

    /// Consumes what made [`Watch::fd`] readable (never blocks); returns whether a key under
    /// the prefix may have changed. The caller reads the keys again to know what did.
    fn drain(&mut self) -> bool;

    /// When to look again although nothing was announced: a change no write announces, such
    /// as a lease running out. None when nothing is pending.
    fn deadline(&self) -> Option<Instant>;
}

/// When a blocking wait for `watch` should end: at `until`, or earlier at its own deadline.
pub fn wake_at(watch: &dyn Watch, until: Option<Instant>) -> Option<Instant> {
    [watch.deadline(), until].into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_spec() {
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
        assert!(check_value("k", &vec![0; VALUE_LIMIT]).is_ok());
        assert!(check_value("k", &vec![0; VALUE_LIMIT + 1]).is_err());
    }
}
