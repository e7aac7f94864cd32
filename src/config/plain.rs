//! The command lines that need no parser: a few common options, each in its plainest form,
//! then `--` and the command (`envharness -e /app/env -x /app/export --init -- myapp`, what an
//! image's ENTRYPOINT says). Building clap's description of every option and matching against
//! it is a tenth of an `--init -- true` (docs/performance.md); for these lines the [`Cli`]
//! clap would return is written directly.
//!
//! clap stays the definition: anything else, every line clap would refuse included, goes to
//! it, and a unit test checks, over every line up to six words drawn from these forms and
//! their near misses, that a line taken here is one clap takes the same way.

use std::ffi::OsString;

use super::cli::Cli;

/// The [`Cli`] of a plain line, `None` for any other (clap's to parse).
pub fn parse(args: &[OsString]) -> Option<Cli> {
    let mut cli = Cli::default();
    let mut words = args.get(1..)?.iter();
    while let Some(word) = words.next() {
        match word.as_encoded_bytes() {
            b"--" => {
                cli.command = words.cloned().collect();
                return (!cli.command.is_empty()).then_some(cli);
            }
            b"--init" => set_once(&mut cli.init)?,
            b"--group" => set_once(&mut cli.group)?,
            b"--no-clobber" => set_once(&mut cli.no_clobber)?,
            b"-e" | b"--environment" => cli.environment.push(value(words.next())?),
            b"-x" | b"--export" => fill_once(&mut cli.export, value(words.next())?)?,
            b"--user" => fill_once(&mut cli.user, value(words.next())?.into_string().ok()?)?,
            _ => return None,
        }
    }
    None
}

/// A flag given twice is clap's to refuse.
fn set_once(flag: &mut bool) -> Option<()> {
    (!std::mem::replace(flag, true)).then_some(())
}

/// So is an option that takes one value given twice.
fn fill_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.replace(value).is_none().then_some(())
}

/// An option's value as a separate word; one that is missing, empty or looks like an option is
/// clap's to judge.
fn value(word: Option<&OsString>) -> Option<OsString> {
    word.filter(|word| !word.is_empty() && !word.as_encoded_bytes().starts_with(b"-"))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain forms, their near misses (attached values, repeats, values that look like
    /// options, empty words, other options) and commands.
    const WORDS: &[&str] = &[
        "--init",
        "--group",
        "--no-clobber",
        "-e",
        "--environment",
        "-x",
        "--export",
        "--user",
        "--",
        "d",
        "",
        "-",
        "--init=1",
        "-ed",
        "-v",
        "kv",
        "--help",
    ];

    fn words(line: &[&str]) -> Vec<OsString> {
        line.iter().map(OsString::from).collect()
    }

    /// Whether some longer line that starts with `line` could be taken and is worth checking:
    /// once a word is refused before `--`, no continuation is taken; after `--`, two words of
    /// the command are enough.
    fn may_grow(line: &[&str]) -> bool {
        if let Some(separator) = line.iter().position(|word| *word == "--") {
            return line.len() - separator <= 2;
        }
        [&["--", "c"][..], &["d", "--", "c"]].iter().any(|tail| {
            let longer: Vec<&str> = line.iter().chain(tail.iter()).copied().collect();
            parse(&words(&longer)).is_some()
        })
    }

    /// Checks `line` and, below `length` words, every line that continues it.
    fn check_from(line: &mut Vec<&'static str>, length: usize, taken: &mut usize) {
        if let Some(plain) = parse(&words(line)) {
            *taken += 1;
            match <Cli as clap::Parser>::try_parse_from(words(line)) {
                Ok(cli) => assert_eq!(format!("{plain:?}"), format!("{cli:?}"), "{line:?}"),
                Err(err) => panic!("{line:?}: taken here, but clap says {err}"),
            }
        }
        if line.len() > length || !may_grow(line) {
            return;
        }
        for word in WORDS {
            line.push(word);
            check_from(line, length, taken);
            line.pop();
        }
    }

    #[test]
    fn a_line_taken_here_is_one_clap_takes_the_same_way() {
        let mut taken = 0;
        check_from(&mut vec!["envharness"], 6, &mut taken);
        assert!(taken > 1000, "only {taken} lines taken");
    }

    #[test]
    fn the_image_entrypoints_are_taken() {
        for line in [
            "envharness --init -- myapp --port 8080",
            "envharness -e /app/env -x /app/export -- myapp",
            "envharness --environment a -e b --user app -- x",
        ] {
            let words: Vec<OsString> = line.split(' ').map(OsString::from).collect();
            assert!(parse(&words).is_some(), "{line}");
        }
    }
}
