//! The command lines that need no parser: options whose value clap takes as it is (`-e DIR`,
//! `-x DIR`, `-t SRC:DEST`, `--user`, `--wait-for`, `--kv`, ...), each value a word of its own,
//! and the flags `--init`, `--group`, `--no-clobber`, `--plan`, `--quiet`, then `--` and the
//! command: what an image's ENTRYPOINT says (`envharness -e /app/env --init -- myapp`).
//! Building clap's description of every option and matching against it is a tenth of an
//! `--init -- true` (docs/performance.md); for these lines the [`Cli`] clap would return is
//! written directly. A shebang line comes here once its options are split.
//!
//! clap stays the definition: anything else (a number or a duration to check, `--print`,
//! `-v`, `--name=value`, a value that starts with `-`, an option given twice that takes one
//! value, any error) goes to it, and a unit test checks, over every line of these words and
//! their near misses up to six words, that a line taken here is one clap takes the same way.

use std::ffi::OsString;

use super::cli::Cli;

/// The [`Cli`] of a plain line, `None` for any other (clap's to parse).
pub fn parse(args: &[OsString]) -> Option<Cli> {
    let mut cli = Cli::default();
    let mut words = args.get(1..)?.iter();
    while let Some(word) = words.next() {
        let mut next_value = || value(words.next());
        let mut next_text = || next_value()?.into_string().ok();
        match word.as_encoded_bytes() {
            b"--" => {
                cli.command = words.cloned().collect();
                return (!cli.command.is_empty()).then_some(cli);
            }
            b"--init" => set_once(&mut cli.init)?,
            b"--group" => set_once(&mut cli.group)?,
            b"--no-clobber" => set_once(&mut cli.no_clobber)?,
            b"--plan" => set_once(&mut cli.plan)?,
            b"-q" | b"--quiet" => set_once(&mut cli.quiet)?,
            b"-e" | b"--environment" => cli.environment.push(next_value()?),
            b"-t" | b"--template" => cli.template.push(next_value()?),
            b"-x" | b"--export" => fill_once(&mut cli.export, next_value()?)?,
            b"--environment-root" => fill_once(&mut cli.environment_root, next_value()?)?,
            b"--hostname" => fill_once(&mut cli.hostname, next_text()?)?,
            b"--on-change" => fill_once(&mut cli.on_change, next_text()?)?,
            b"--kv" => fill_once(&mut cli.kv, next_text()?)?,
            b"--instance" => fill_once(&mut cli.instance, next_text()?)?,
            b"--user" => fill_once(&mut cli.user, next_text()?)?,
            b"--require" => cli.require.push(next_text()?),
            b"--wait-for" => cli.wait_for.push(next_text()?),
            b"--rewrite" => cli.rewrite.push(next_text()?),
            b"--remap-exit" => cli.remap_exit.push(next_text()?),
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
    use clap::{CommandFactory, FromArgMatches};

    /// Every word read here, and near misses: attached values, an empty word, words that look
    /// like options, other options, `kv`, and `--` itself.
    #[rustfmt::skip]
    const WORDS: &[&str] = &[
        "--init", "--group", "--no-clobber", "--plan", "-q", "--quiet",
        "-e", "--environment", "-t", "--template", "-x", "--export", "--environment-root",
        "--hostname", "--on-change", "--kv", "--instance", "--user", "--require", "--wait-for",
        "--rewrite", "--remap-exit",
        "--", "d", "", "-", "--init=1", "-ed", "-v", "--print", "kv", "--help",
    ];

    /// Commands: the words after `--` are taken as they are, so a few kinds of them will do.
    const COMMANDS: &[&str] = &["c", "--", "-e", "kv"];

    fn words(line: &[&str]) -> Vec<OsString> {
        line.iter().map(OsString::from).collect()
    }

    /// Whether some longer line that starts with `line` could be taken and is worth checking:
    /// once a word is refused before `--`, no continuation is taken; after `--`, one word of
    /// the command is enough.
    fn may_grow(line: &[&str]) -> bool {
        if line.contains(&"--") {
            return line.last() == Some(&"--");
        }
        [&["--", "c"][..], &["d", "--", "c"]].iter().any(|tail| {
            let longer: Vec<&str> = line.iter().chain(tail.iter()).copied().collect();
            parse(&words(&longer)).is_some()
        })
    }

    /// clap's reading of `line`, as `Cli::try_parse_from` gives it, from one command built
    /// once (building it for each line made this test minutes long).
    fn clap_reads(command: &mut clap::Command, line: &[&str]) -> Result<Cli, clap::Error> {
        let matches = command.try_get_matches_from_mut(words(line))?;
        Cli::from_arg_matches(&matches)
    }

    /// Checks `line` and, up to `length` words after argv[0], every line that continues it.
    fn check_from(
        command: &mut clap::Command,
        line: &mut Vec<&'static str>,
        length: usize,
        taken: &mut usize,
    ) {
        if let Some(plain) = parse(&words(line)) {
            *taken += 1;
            match clap_reads(command, line) {
                Ok(cli) => assert_eq!(format!("{plain:?}"), format!("{cli:?}"), "{line:?}"),
                Err(err) => panic!("{line:?}: taken here, but clap says {err}"),
            }
        }
        if line.len() > length || !may_grow(line) {
            return;
        }
        let next = if line.last() == Some(&"--") {
            COMMANDS
        } else {
            WORDS
        };
        for word in next {
            line.push(word);
            check_from(command, line, length, taken);
            line.pop();
        }
    }

    #[test]
    fn a_line_taken_here_is_one_clap_takes_the_same_way() {
        let mut taken = 0;
        check_from(&mut Cli::command(), &mut vec!["envharness"], 6, &mut taken);
        assert!(taken > 5_000, "only {taken} lines taken");
    }

    #[test]
    fn the_image_entrypoints_are_taken() {
        for line in [
            "envharness --init -- myapp --port 8080",
            "envharness -e /app/env -x /app/export -- myapp",
            "envharness --environment a -e b --user app -- x",
            "envharness --wait-for db:5432 --wait-for http://cache:6379 -- app",
            "envharness --init --kv etcd://etcd:2379 -t /app/nginx.conf.j2:/etc/nginx.conf -- nginx",
            "envharness --environment-root /app/hosts -q --require DATABASE_URL -- app",
        ] {
            let words: Vec<OsString> = line.split(' ').map(OsString::from).collect();
            assert!(parse(&words).is_some(), "{line}");
        }
    }
}
