//! Logs go to stderr, one line each, starting `envharness:` (stdout belongs to the command and
//! to `--print`). The level is warnings by default; `-v` shows each script with its duration
//! and the variables it set (never a value), `-vv` debug, `-q` errors only. Without `-v`/`-q`,
//! RUST_LOG decides. A `--watch` change is one line at the default level, not a warning
//! (see [`NOTICE`]).

use std::io::Write;

use log::{Level, LevelFilter};

/// The target of lines that show at the default level without being warnings (a `--watch`
/// change): logged with `log::warn!(target: NOTICE, ...)` and written without `warning: `.
pub const NOTICE: &str = "envharness::notice";

pub fn init(verbose: u8, quiet: bool) {
    let flag_level = match (quiet, verbose) {
        (true, _) => Some(LevelFilter::Error),
        (false, 0) => None,
        (false, 1) => Some(LevelFilter::Info),
        (false, _) => Some(LevelFilter::Debug),
    };
    // A flag beats RUST_LOG entirely, module directives included.
    let mut builder = match flag_level {
        Some(level) => {
            let mut builder = env_logger::Builder::new();
            builder.filter_level(level);
            builder
        }
        None => env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")),
    };
    builder.format(|out, record| {
        let level = match record.level() {
            Level::Error => "error: ",
            Level::Warn if record.target() == NOTICE => "",
            Level::Warn => "warning: ",
            _ => "",
        };
        writeln!(out, "envharness: {level}{}", record.args())
    });
    builder.init();
}
