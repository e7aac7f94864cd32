//! The one error type. Every way envharness can fail is a variant here, and each variant knows
//! the exit status docs/reference.md §2 gives it: 125 for the harness's own failures, 126 and 127
//! for a command that cannot be run, 128+N for a harness stopped by signal N. Messages are one
//! lower-case line that starts with the thing that failed, so `main` prints
//! `envharness: <message>` and nothing else.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::duration::seconds;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad options or arguments (clap's own errors are turned into this too).
    #[error("{0}")]
    Usage(String),

    /// A directory named by a flag or variable does not exist (a default one is skipped);
    /// `variable` is the one that named it, if one did.
    #[error("{}{}: no such directory", variable.map(|name| format!("{name}=")).unwrap_or_default(), path.display())]
    MissingDirectory {
        path: PathBuf,
        variable: Option<&'static str>,
    },

    /// An entry that can never become a variable or run: bad name, lost exec bit, broken
    /// symlink, malformed dotenv line, a value the kernel would refuse.
    #[error("{}: {reason}", path.display())]
    Entry { path: PathBuf, reason: String },

    /// A script failed for the last time (after retries).
    #[error("{}: {failure}{}", path.display(), tries_suffix(*tries))]
    Script {
        path: PathBuf,
        failure: Failure,
        tries: u32,
    },

    /// A system call failed; `about` says what was being attempted.
    #[error("{}: {about}: {err}", path.display())]
    Io {
        path: PathBuf,
        about: &'static str,
        #[source]
        err: io::Error,
    },

    /// The command was not found (127).
    #[error("{program}: command not found")]
    CommandNotFound { program: String },

    /// The command was found but could not be executed (126).
    #[error("{program}: {reason}")]
    CommandNotExecutable { program: String, reason: String },

    /// `--plan` found this error (the plan's status is 125 whatever the error).
    #[error(transparent)]
    InPlan(Box<Error>),

    /// The harness received a terminating signal while running the phases (128+N).
    #[error("stopped by {} while running the phases", signal.as_str())]
    Interrupted { signal: Signal },

    /// A re-run under `--watch` was given up because the command exited or a stop signal
    /// came; the supervisor goes on with its shutdown, nothing reports this.
    #[error("the re-run was cancelled")]
    Cancelled,

    /// A registry store failed or cannot be reached; `url` never holds credentials.
    #[error("{url}: {reason}")]
    Store { url: String, reason: String },

    /// A registry key or value that breaks the rules of docs/reference.md §11.1.
    #[error("{key}: {reason}")]
    Key { key: String, reason: String },

    /// `envharness kv get|list` found nothing (exit 1), after waiting `waited` if it did.
    #[error("{key}: not found{}", waited_suffix(*waited))]
    NotFound {
        key: String,
        waited: Option<Duration>,
    },

    /// A `--wait-for` address that does not accept a connection; `name` is the variable that
    /// held it, `address` only `HOST:PORT` (never a password).
    #[error("{}{address} not reachable: {reason}", name.as_ref().map(|name| format!("{name}: ")).unwrap_or_default())]
    Unreachable {
        name: Option<String>,
        address: String,
        reason: String,
    },

    /// A template used `kv("KEY")` bare and KEY is absent from the registry: at the start,
    /// `--wait` waits for it as for a requirement.
    #[error("{}: line {line}: kv(\"{key}\") is undefined: no such key in the registry", path.display())]
    KeyAbsent {
        path: PathBuf,
        line: usize,
        key: String,
    },

    /// A `--require` that the final environment does not meet.
    #[error("{name}: {}", unmet_reason(rule.as_deref()))]
    Unmet { name: String, rule: Option<String> },

    /// A `file:///DIR` whose directory holds files that are not a store's: it is left as it
    /// is (docs/reference.md §11.1), so that `file:///` or `file:///var` never becomes one.
    #[error("{}: not an envharness store (it holds other files): use an empty directory", path.display())]
    NotAStore { path: PathBuf },
}

fn waited_suffix(waited: Option<Duration>) -> String {
    match waited {
        Some(waited) => format!(" after {} s", seconds(waited)),
        None => String::new(),
    }
}

fn unmet_reason(rule: Option<&str>) -> String {
    match rule {
        None => "required but not set".into(),
        Some(regex) => format!("required to match '{regex}', and does not"),
    }
}

/// Why a run of a script failed.
#[derive(Debug)]
pub enum Failure {
    Exited(i32),
    Killed(Signal),
    TimedOut(Duration),
    OutputTooLarge(usize),
    /// The script could not be executed at all; the reason says why (see `shebang`).
    NotExecutable(String),
}

impl Failure {
    /// Only failures that another try might not repeat are retried.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Failure::Exited(_) | Failure::Killed(_) | Failure::TimedOut(_)
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Exited(code) => write!(f, "exited with status {code}"),
            Failure::Killed(signal) => write!(f, "killed by {}", signal.as_str()),
            Failure::TimedOut(limit) => write!(f, "timed out after {}s", seconds(*limit)),
            Failure::OutputTooLarge(limit) => {
                write!(f, "output passed {limit} bytes, the limit; stopped it")
            }
            Failure::NotExecutable(reason) => f.write_str(reason),
        }
    }
}

fn tries_suffix(tries: u32) -> String {
    if tries > 1 {
        format!(" (after {tries} tries)")
    } else {
        String::new()
    }
}

impl Error {
    /// The exit status docs/reference.md §2 assigns to this failure.
    pub fn exit_status(&self) -> i32 {
        match self {
            Error::CommandNotFound { .. } => 127,
            Error::CommandNotExecutable { .. } => 126,
            Error::Interrupted { signal } => 128 + *signal as i32,
            Error::NotFound { .. } => 1,
            _ => 125,
        }
    }

    pub fn entry(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Entry {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, about: &'static str, err: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            about,
            err,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
