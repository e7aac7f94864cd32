//! Command-line parsing, and nothing else: turning argv into a [`Cli`]. Decisions about what
//! the options mean (defaults, directories that must exist, boolean variables) are made in
//! [`crate::plan`].
//!
//! Two things happen before clap sees the arguments. A shebang line delivers all of its
//! options as ONE argument (Linux passes everything after the interpreter path as a single
//! string), so a first argument that starts with `-` and contains a space or tab is split with
//! POSIX shell quoting rules, as `env -S` does. And clap's usage errors exit 2; the reference
//! (docs/reference.md §1.2) says 125, like env(1), so they become [`Error::Usage`].
//!
//! A plain line (`-e DIR -x DIR --init -- myapp`) does not come here at all: see
//! [`super::parse`].

use std::ffi::OsString;
use std::time::Duration;

use clap::Parser;

use crate::duration::parse_seconds;
use crate::error::Error;
use crate::print::Format;
use crate::registry::kv;

const EXAMPLES: &str = "\
Examples:
  envharness -- myapp --port 8080            run /export, read /environment, exec myapp
  envharness -e environments/development --print
                                             show the variables instead of running anything
  #!/usr/local/bin/envharness -e /app/env -- /usr/bin/python3
                                             as a shebang line
  envharness kv get --wait 30 DATABASE_URL
                                             the registry, for scripts (envharness kv --help)

Exit status: the command's own; 125 envharness failed; 126 the command could not be executed;
127 the command was not found; 128+N stopped by signal N.";

/// Run the export scripts, turn the environment directory into variables, then exec COMMAND.
#[derive(Parser, Debug, Default)]
#[command(name = "envharness", version, about, after_help = EXAMPLES)]
#[command(disable_help_subcommand = true, max_term_width = 100)]
pub struct Cli {
    /// Environment directory; repeat to layer them, a later one wins
    /// [env: ENVHARNESS_ENVIRONMENT (':'-separated)] [default: /environment]
    #[arg(short = 'e', long = "environment", value_name = "DIR")]
    pub environment: Vec<OsString>,

    /// Export directory whose scripts announce the service [env: ENVHARNESS_EXPORT]
    /// [default: /export]
    #[arg(short = 'x', long = "export", value_name = "DIR")]
    pub export: Option<OsString>,

    /// Limit for one run of one script, fractions allowed; 0 means none
    /// [env: ENVHARNESS_TIMEOUT] [default: 0]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_seconds)]
    pub timeout: Option<Duration>,

    /// Run a failing script again up to N more times [env: ENVHARNESS_RETRIES] [default: 0]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Pause between tries, fractions allowed [env: ENVHARNESS_RETRY_INTERVAL] [default: 1]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_seconds)]
    pub retry_interval: Option<Duration>,

    /// Run up to N environment scripts of a directory at once; 0 means all
    /// [env: ENVHARNESS_JOBS] [default: 1]
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Keep variables already set: skip their entries [env: ENVHARNESS_NO_CLOBBER]
    #[arg(long)]
    pub no_clobber: bool,

    /// Stay as the command's parent: forward signals, reap zombies, run teardown
    /// [env: ENVHARNESS_INIT]
    #[arg(long)]
    pub init: bool,

    /// With --init: signal the command's whole process group [env: ENVHARNESS_GROUP]
    #[arg(long)]
    pub group: bool,

    /// With --init: grace after SIGTERM/SIGINT before SIGKILL [env: ENVHARNESS_STOP_TIMEOUT]
    /// [default: 5]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_seconds)]
    pub stop_timeout: Option<Duration>,

    /// With --init: re-run discovery every SECS; 0: only on SIGHUP or a registry change
    /// [env: ENVHARNESS_WATCH]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_seconds)]
    pub watch: Option<Duration>,

    /// With --watch: restart, or a signal to send (HUP, SIGUSR1, 15, ...)
    /// [env: ENVHARNESS_ON_CHANGE] [default: restart]
    #[arg(long, value_name = "ACTION")]
    pub on_change: Option<String>,

    /// NAME must end up non-empty (and match REGEX, anchored); repeatable
    /// [env: ENVHARNESS_REQUIRE (whitespace-separated)]
    #[arg(long, value_name = "NAME[=REGEX]")]
    pub require: Vec<String>,

    /// While a requirement is unmet, re-run discovery for up to SECS [env: ENVHARNESS_WAIT]
    /// [default: 0]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_seconds)]
    pub wait: Option<Duration>,

    /// Render SRC to DEST with the final environment (Jinja syntax); repeatable
    /// [env: ENVHARNESS_TEMPLATE (whitespace-separated)]
    #[arg(short = 't', long = "template", value_name = "SRC:DEST")]
    pub template: Vec<OsString>,

    /// Use DIR's subdirectory that matches the hostname as the first environment directory
    /// [env: ENVHARNESS_ENVIRONMENT_ROOT]
    #[arg(long, value_name = "DIR")]
    pub environment_root: Option<OsString>,

    /// The name --environment-root matches [env: ENVHARNESS_HOSTNAME]
    /// [default: the kernel's hostname]
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Print the variables instead of running a command
    #[arg(long, value_name = "FORMAT", num_args = 0..=1, default_missing_value = "dotenv")]
    pub print: Option<Format>,

    /// Run nothing; show what each entry would do and the command that would run
    #[arg(long, conflicts_with = "print")]
    pub plan: bool,

    /// Log more (each script, its duration, the variables it set); repeat for debug
    #[arg(short = 'v', long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Log errors only
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// The registry: file:///DIR, etcd://HOST:PORT[,HOST:PORT...][/PREFIX] or etcds://... (TLS)
    /// [env: ENVHARNESS_KV]
    #[arg(long, value_name = "URL")]
    pub kv: Option<String>,

    /// This instance's name in published keys [env: ENVHARNESS_INSTANCE]
    /// [default: the hostname]
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,

    /// With --init: lease of published keys, whole seconds, at least 2 [env: ENVHARNESS_TTL]
    /// [default: 10]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = kv::parse_ttl)]
    pub ttl: Option<Duration>,

    /// With --init: how often the export directory's health check runs
    /// [env: ENVHARNESS_HEALTH_INTERVAL] [default: 10]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_seconds)]
    pub health_interval: Option<Duration>,

    /// Run the command (only the command) as USER, a name or a uid, with GROUP
    /// [env: ENVHARNESS_USER]
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// A TCP address (HOST:PORT, a URL, or a variable that holds one) that must accept a
    /// connection before the command starts; repeatable
    /// [env: ENVHARNESS_WAIT_FOR (whitespace-separated)]
    #[arg(long, value_name = "ADDRESS")]
    pub wait_for: Vec<String>,

    /// With --init: on SIGTERM/SIGINT withdraw the keys, run prestop, and keep the command
    /// serving until SECS after the signal before forwarding it [env: ENVHARNESS_DRAIN]
    /// [default: 0]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_seconds)]
    pub drain: Option<Duration>,

    /// With --init: forward signal FROM as TO (TERM:QUIT), or drop it (USR1:0); repeatable
    /// [env: ENVHARNESS_REWRITE (whitespace-separated)]
    #[arg(long, value_name = "FROM:TO")]
    pub rewrite: Vec<String>,

    /// With --init: exit M where the command's status would be N (143:0); repeatable
    /// [env: ENVHARNESS_REMAP_EXIT (whitespace-separated)]
    #[arg(long, value_name = "N:M", allow_hyphen_values = true)]
    pub remap_exit: Vec<String>,

    /// With --watch: wait a random time up to SECS before acting on a change, so that the
    /// instances that watch one key do not all restart at once [env: ENVHARNESS_SPLAY]
    /// [default: 0]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_seconds)]
    pub splay: Option<Duration>,

    /// The command and its arguments (everything after `--` is the command)
    #[arg(value_name = "COMMAND", trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

/// What the arguments ask for: a run, a `kv` call, or a text to show (`--help`, `--version`)
/// and exit 0.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Cli>),
    Kv(Box<kv::Kv>),
    Show(String),
}

/// Parses argv (including argv[0]), its shebang options already split
/// ([`split_shebang_options`]).
pub fn parse(args: Vec<OsString>) -> Result<Invocation, Error> {
    if let Some(call) = kv_invocation(&args)? {
        return match kv::parse(call.url, call.args)? {
            kv::Parsed::Run(kv) => Ok(Invocation::Kv(Box::new(kv))),
            kv::Parsed::Help => Ok(Invocation::Show(kv::HELP.into())),
        };
    }
    match parse_run(&args) {
        Ok(cli) if names_kv_without_double_dash(&cli, &args) => Err(Error::Usage(
            "kv: the kv subcommand comes first, after --kv URL at most (envharness [--kv URL] kv ...); a command named kv is `envharness ... -- kv`".into(),
        )),
        Ok(cli) => Ok(Invocation::Run(Box::new(cli))),
        Err(err) => match err.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                Ok(Invocation::Show(err.render().to_string()))
            }
            _ => Err(Error::Usage(one_line(&err))),
        },
    }
}

/// The whole command line as the man page and the shell completions describe it (`make docs`,
/// src/bin/envharness-docs.rs): the run's options and the `kv` subcommand. [`parse`] never
/// uses it: `kv` is recognised before clap runs and parsed by hand (see [`kv`]), so this is
/// its only clap description.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().subcommand(kv::command())
}

/// clap's parse of a run, as `Cli::try_parse_from` makes it, except that the command clap
/// builds and the matches it returns are left to the process's exit: they are used once, and
/// taking them apart, piece by piece, cost a tenth of the start-up's instructions.
///
/// Never inlined: clap's kilobytes of locals would be part of every caller's stack frame,
/// touched (three pages of stack) even by the plain lines that never come here.
#[inline(never)]
fn parse_run(args: &[OsString]) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = std::mem::ManuallyDrop::new(Cli::command());
    let mut matches = std::mem::ManuallyDrop::new(command.try_get_matches_from_mut(args)?);
    Cli::from_arg_matches_mut(&mut matches)
}

/// `envharness [--kv URL] kv ARGS...`: the URL given and ARGS.
struct KvCall<'a> {
    url: Option<String>,
    args: &'a [OsString],
}

/// Recognises a `kv` call. Only `--kv` may come before `kv`: the harness's other options do
/// not apply to the subcommand, and the environment variables clap would read for them must
/// not be read at all (docs/reference.md §11.1).
fn kv_invocation(args: &[OsString]) -> Result<Option<KvCall<'_>>, Error> {
    let mut url = None;
    let mut index = 1;
    while let Some(arg) = args.get(index) {
        let text = arg.to_string_lossy();
        if text == "kv" {
            return Ok(Some(KvCall {
                url,
                args: &args[index + 1..],
            }));
        }
        if text == "--kv" {
            let value = args
                .get(index + 1)
                .ok_or_else(|| Error::Usage("--kv needs a value (see envharness --help)".into()))?;
            url = Some(value.to_string_lossy().into_owned());
            index += 2;
        } else if let Some(value) = text.strip_prefix("--kv=") {
            url = Some(value.to_owned());
            index += 1;
        } else {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Whether the command clap found is `kv` without a `--` before it: the subcommand written
/// after options that are not its own (`envharness -e env kv get K`).
fn names_kv_without_double_dash(cli: &Cli, args: &[OsString]) -> bool {
    if cli.command.first().is_none_or(|first| first != "kv") {
        return false;
    }
    // The command is argv's tail, as clap keeps it whole after its first word.
    let start = args.len() - cli.command.len();
    start == 0 || args[start - 1] != "--"
}

/// Clap renders an error as a paragraph with usage; docs/reference.md §1.2 says one line.
fn one_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let mut lines = rendered.lines().map(str::trim);
    let first = lines.next().unwrap_or("invalid arguments");
    let reason = first.strip_prefix("error: ").unwrap_or(first);
    // What helps is kept: a suggestion for a misspelt option, the values a choice allows.
    let help: Vec<String> = lines
        .filter_map(|line| {
            if let Some(similar) = line.strip_prefix("tip: a similar argument exists: ") {
                return Some(format!("did you mean {similar}?"));
            }
            let values = line.strip_prefix("[possible values: ")?.strip_suffix(']')?;
            Some(format!("possible values: {values}"))
        })
        .collect();
    match help.as_slice() {
        [] => format!("{reason} (see envharness --help)"),
        help => format!("{reason}; {} (see envharness --help)", help.join("; ")),
    }
}

/// Splits a shebang line's single option argument into separate arguments (docs/reference.md §1.5).
pub fn split_shebang_options(mut args: Vec<OsString>) -> Result<Vec<OsString>, Error> {
    let Some(first) = args.get(1) else {
        return Ok(args);
    };
    let bytes = first.as_encoded_bytes();
    let looks_like_shebang_options =
        bytes.first() == Some(&b'-') && bytes.iter().any(|b| *b == b' ' || *b == b'\t');
    if !looks_like_shebang_options {
        return Ok(args);
    }
    let line = first.to_str().ok_or_else(|| {
        Error::Usage("the shebang options are not valid UTF-8 and cannot be split".into())
    })?;
    let pieces = shell_words::split(line)
        .map_err(|err| Error::Usage(format!("cannot split the shebang options {line:?}: {err}")))?;
    args.splice(1..2, pieces.into_iter().map(OsString::from));
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn shebang_options_are_split_and_the_rest_kept() {
        let args = os(&[
            "envharness",
            "-e '/app/my env' -- /usr/bin/python3",
            "/s.py",
            "a b",
        ]);
        let split = split_shebang_options(args).unwrap();
        assert_eq!(
            split,
            os(&[
                "envharness",
                "-e",
                "/app/my env",
                "--",
                "/usr/bin/python3",
                "/s.py",
                "a b"
            ])
        );
    }

    #[test]
    fn ordinary_arguments_are_not_split() {
        let args = os(&["envharness", "--", "echo", "-n a"]);
        assert_eq!(split_shebang_options(args.clone()).unwrap(), args);
        let args = os(&["envharness", "echo hello"]);
        assert_eq!(split_shebang_options(args.clone()).unwrap(), args);
    }

    #[test]
    fn unbalanced_quotes_in_a_shebang_are_a_usage_error() {
        let err = split_shebang_options(os(&["envharness", "-e 'x -- sh"])).unwrap_err();
        assert!(matches!(err, Error::Usage(_)));
    }

    fn kind(args: &[&str]) -> Result<Invocation, Error> {
        parse(os(args))
    }

    #[test]
    fn kv_is_the_subcommand_only_where_a_command_would_start_without_double_dash() {
        for args in [
            &["envharness", "kv", "get", "K"][..],
            &["envharness", "--kv", "file:///r", "kv", "get", "K"],
            &["envharness", "--kv=file:///r", "kv", "get", "--", "-k"],
        ] {
            assert!(matches!(kind(args), Ok(Invocation::Kv(_))), "{args:?}");
        }
        for args in [
            &["envharness", "--", "kv"][..],
            &["envharness", "--", "kv", "--", "x"],
            &["envharness", "-e", "kv", "--", "true"],
            &["envharness", "--kv", "file:///r", "--", "kv", "get"],
        ] {
            let Ok(Invocation::Run(cli)) = kind(args) else {
                panic!("{args:?} is not a run");
            };
            assert!(cli
                .command
                .first()
                .is_some_and(|c| c == "kv" || c == "true"));
        }
        let err = kind(&["envharness", "-e", "env", "kv", "get", "K"]).unwrap_err();
        assert!(err.to_string().contains("comes first"), "{err}");
    }
}
