//! Logs go to stderr, one line each, starting `envharness:` (stdout belongs to the command and
//! to `--print`). The level is warnings by default; `-v` shows each script with its duration
//! and the variables it set (never a value), `-vv` debug, `-q` errors only. Without `-v`/`-q`,
//! RUST_LOG decides. A `--watch` change is one line at the default level, not a warning
//! (see [`NOTICE`]). A message is always one line: a name that holds a newline or another
//! control character (a file name can) is written escaped, so it can neither break a line nor
//! forge one ([`one_line`]).

use std::borrow::Cow;
use std::fmt::Write as _;
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
        let message = record.args().to_string();
        writeln!(out, "envharness: {level}{}", one_line(&message))
    });
    builder.init();
}

/// `text` with its control characters escaped as Rust writes them (`\n`, `\t`, `\u{1b}`), so
/// that a message stays one line whatever the names in it hold.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(escaped, "{}", c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(one_line("plain /a b/é"), "plain /a b/é");
        assert_eq!(one_line("a\nb\tc\r\u{1b}[1m"), "a\\nb\\tc\\r\\u{1b}[1m");
    }
}
