//! From argv to a [`Plan`]: [`cli`] parses (and nothing else; [`plain`] reads the lines that
//! need no parser), [`plan`] decides what the options and `ENVHARNESS_*` variables mean, once,
//! and builds each layer's own settings. The layers below never see the flags: they get their
//! settings from the plan.

pub mod cli;
pub mod plain;
pub mod plan;

use std::ffi::OsString;

use crate::error::Error;
use cli::Invocation;
pub use plan::{Mode, Plan};

/// argv as a run, a `kv` call or a text to show. A shebang line's options are split first; a
/// plain line is then read directly ([`plain`]), any other by clap ([`cli`]).
pub fn parse(args: Vec<OsString>) -> Result<Invocation, Error> {
    let args = cli::split_shebang_options(args)?;
    match plain::parse(&args) {
        Some(cli) => Ok(Invocation::Run(Box::new(cli))),
        None => cli::parse(args),
    }
}
