//! What runs before the command: the export phase announces the service ([`export`]), and
//! [`resolve`] turns the environment directories into the final environment: the environment
//! phase ([`environment`], over [`entries`] and [`dotenv`] files), then the [`require`]ments,
//! then the [`template`]s, rendered. [`hosts`] picks the per-host environment directory.
//!
//! `resolve` is the one step that both the start and every `--watch` re-run take.

pub(crate) mod dotenv;
pub(crate) mod entries;
pub(crate) mod environment;
pub(crate) mod export;
pub(crate) mod hosts;
pub(crate) mod require;
pub(crate) mod resolve;
pub(crate) mod template;

use std::path::PathBuf;

use crate::error::Error;

/// A directory to read, and whether the user named it (a named one that is missing is an
/// error, a default one is skipped: an image without /export is normal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    pub path: PathBuf,
    pub named: bool,
    /// The variable that named it, for messages (None: a flag, or the default).
    pub variable: Option<&'static str>,
}

impl Directory {
    /// What a directory that is not there means: an error only when the user named it.
    pub fn missing(&self) -> Result<(), Error> {
        if self.named {
            Err(Error::MissingDirectory {
                path: self.path.clone(),
                variable: self.variable,
            })
        } else {
            log::debug!("{}: not there, skipped", self.path.display());
            Ok(())
        }
    }
}
