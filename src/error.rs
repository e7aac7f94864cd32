//! The one error type. Every way envharness can fail is a variant here, and each variant knows
//! the exit status SPEC.md section 2 gives it: 125 for the harness's own failures, 126 and 127
//! for a command that cannot be run, 128+N for a harness stopped by signal N. Messages are one
//! lower-case line that starts with the thing that failed, so `main` prints
//! `envharness: <message>` and nothing else.

use std::io;
use std::path::PathBuf;

use nix::sys::signal::Signal;

use crate::script::Failure;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad options or arguments (clap's own errors are turned into this too).
    #[error("{0}")]
    Usage(String),

    /// A directory named by a flag or variable does not exist (a default one is skipped).
    #[error("{}: no such directory", path.display())]
    MissingDirectory { path: PathBuf },

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
}

fn tries_suffix(tries: u32) -> String {
    if tries > 1 {
        format!(" (after {tries} tries)")
    } else {
        String::new()
    }
}

impl Error {
    /// The exit status SPEC.md section 2 assigns to this failure.
    pub fn exit_status(&self) -> i32 {
        match self {
            Error::CommandNotFound { .. } => 127,
            Error::CommandNotExecutable { .. } => 126,
            Error::Interrupted { signal } => 128 + *signal as i32,
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
