//! `envharness [--kv URL] kv get|put|del|list ...` (docs/reference.md §11.2): the registry for
//! scripts.
//!
//! Parsing is by hand rather than by clap, for three rules clap does not state directly:
//! options may come before or after the KEY, a VALUE may start with `-` (an argument that is
//! not one of the subcommand's options is a VALUE where one is expected), and after `--`
//! nothing is an option. The subcommand reads only the variables in [`VARIABLES`]: scripts
//! inherit the container's other `ENVHARNESS_*` variables, which must not change what a `kv`
//! call does or make it fail.
//!
//! Exit status: 0, 1 when `get` (or `list --wait`) found nothing, 125 for usage and store
//! errors, each with one `envharness:` line. Values go to stdout only, never to a log.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use super::{
    check_value_size, get_or_first_under, reads, Access, Key, Lookup, Seen, Store, VALUE_LIMIT,
};
use crate::duration::parse_seconds;
use crate::error::Error;
use crate::os::poll::Poll;
use crate::os::read_at_most;

/// The only variables `envharness kv` reads (besides RUST_LOG, which the logger reads):
/// the store, its login, its TLS settings (docs/reference.md §12; `SSL_CERT_FILE` is where the
/// CA certificates are when `ENVHARNESS_KV_CACERT` is unset), and the instance, whose presence
/// says the call runs under a harness. The last one is not the user's: the harness sets it for
/// its environment scripts only, so that their reads trigger re-runs under `--watch` (see
/// `registry::reads`).
pub const VARIABLES: [&str; 11] = [
    "ENVHARNESS_KV",
    "ENVHARNESS_KV_USER",
    "ENVHARNESS_KV_PASSWORD",
    "ENVHARNESS_KV_PASSWORD_FILE",
    "ENVHARNESS_KV_CACERT",
    "ENVHARNESS_KV_CERT",
    "ENVHARNESS_KV_KEY",
    "ENVHARNESS_KV_SERVER_NAME",
    "SSL_CERT_FILE",
    "ENVHARNESS_INSTANCE",
    super::reads::READS_VARIABLE,
];

pub const HELP: &str = "\
Usage: envharness [--kv URL] kv SUBCOMMAND ...

The registry (file:///DIR, etcd:// or etcds://HOST:PORT[/PREFIX]; --kv, else ENVHARNESS_KV):
  get KEY [--wait SECS]                  KEY's value, exactly; else the first KEY/... one
  put KEY VALUE|- [--ttl SECS]           set KEY (-: from stdin); --ttl: gone SECS later
  del KEY                                remove KEY (already absent is fine)
  list [PREFIX] [--wait SECS] [--keys|--json]
                                         the live keys starting with PREFIX: values, one a line

--wait SECS: wait up to SECS for the key (list: any key under PREFIX) to appear.
Options may come before or after KEY; after -- nothing is an option.
Exit status: 0; 1 not found; 125 usage or store error.
";

/// The subcommand as the man page and the shell completions describe it (`make docs`): the
/// same subcommands and options as [`HELP`] and [`parse`], which a test keeps in step. The
/// harness itself never builds it: [`parse`] is the parser.
pub fn command() -> clap::Command {
    use clap::{Arg, ArgAction, Command};
    let key = || {
        Arg::new("KEY")
            .required(true)
            .help("The key (a string of its own, or NAME/INSTANCE)")
    };
    let wait = |what: &'static str| Arg::new("wait").long("wait").value_name("SECS").help(what);
    Command::new("kv")
        .subcommand_required(true)
        .subcommand_value_name("SUBCOMMAND")
        .about("The registry, for scripts: get, put, del or list keys")
        .long_about(
            "The registry, for scripts: get, put, del or list keys in the store that --kv URL \
             names, else ENVHARNESS_KV (file:///DIR, etcd://HOST:PORT[/PREFIX] or etcds://...). \
             Only --kv may come before kv; options may come before or after KEY; after -- \
             nothing is an option. Exit status: 0; 1 not found; 125 usage or store error.",
        )
        .subcommand(
            Command::new("get")
                .about("KEY's value, exactly; else the value of the first live KEY/... key")
                .arg(key())
                .arg(wait("Wait up to SECS for the key to appear")),
        )
        .subcommand(
            Command::new("put")
                .about("Set KEY to VALUE (-: read it from stdin)")
                .arg(key())
                .arg(
                    Arg::new("VALUE")
                        .required(true)
                        .allow_hyphen_values(true)
                        .help("The value, or - to read it from stdin"),
                )
                .arg(Arg::new("ttl").long("ttl").value_name("SECS").help(
                    "KEY disappears SECS later unless put again (whole seconds, at least 2)",
                )),
        )
        .subcommand(
            Command::new("del")
                .about("Remove KEY (already absent is fine)")
                .arg(key()),
        )
        .subcommand(
            Command::new("list")
                .about("The live keys starting with PREFIX: their values, one a line")
                .arg(Arg::new("PREFIX").help("A string prefix (web/ or we); none: every key"))
                .arg(wait("Wait up to SECS for a key under PREFIX to appear"))
                .arg(
                    Arg::new("keys")
                        .long("keys")
                        .action(ArgAction::SetTrue)
                        .conflicts_with("json")
                        .help("The keys instead of the values"),
                )
                .arg(
                    Arg::new("json")
                        .long("json")
                        .action(ArgAction::SetTrue)
                        .help("One JSON object from keys to values"),
                ),
        )
}

/// A parsed `kv` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// `--kv URL` given before `kv` (else ENVHARNESS_KV).
    pub url: Option<String>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Get {
        key: OsString,
        wait: Option<Duration>,
    },
    Put {
        key: OsString,
        value: Value,
        ttl: Option<Duration>,
    },
    Del {
        key: OsString,
    },
    List {
        prefix: OsString,
        wait: Option<Duration>,
        output: ListOutput,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Given(OsString),
    /// `-`: the value is stdin.
    Stdin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOutput {
    Values,
    Keys,
    Json,
}

/// What the arguments after `kv` ask for: a call, or the help text.
#[derive(Debug)]
pub enum Parsed {
    Run(Kv),
    Help,
}

/// Parses the arguments after `kv`.
pub fn parse(url: Option<String>, args: &[OsString]) -> Result<Parsed, Error> {
    let Some((name, args)) = args.split_first() else {
        return Err(Error::Usage(
            "kv: a subcommand is needed: get, put, del or list (see envharness kv --help)".into(),
        ));
    };
    let name = name.to_string_lossy();
    let (options, positionals): (&[&str], usize) = match name.as_ref() {
        "-h" | "--help" => return Ok(Parsed::Help),
        "get" => (&["--wait"], 1),
        "put" => (&["--ttl"], 2),
        "del" => (&[], 1),
        "list" => (&["--wait", "--keys", "--json"], 1),
        other => {
            return Err(Error::Usage(format!(
                "kv {other}: no such subcommand (get, put, del or list; see envharness kv --help)"
            )))
        }
    };
    let usage = |reason: String| Error::Usage(format!("kv {name}: {reason}"));
    let mut given = Vec::new();
    let mut wait = None;
    let mut ttl = None;
    let mut output = ListOutput::Values;
    let mut args = args.iter();
    let mut options_end = false;
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let (option, inline) = match text.split_once('=') {
            Some((option, value)) if option.starts_with("--") => (option, Some(value)),
            _ => (text.as_ref(), None),
        };
        let is_option =
            !options_end && (options.contains(&option) || matches!(option, "-h" | "--help"));
        if !options_end && text == "--" {
            options_end = true;
            continue;
        }
        if !is_option {
            // A VALUE may start with '-' (`put K -1`); anything else that does is a mistake.
            let value_expected = name == "put" && given.len() == 1;
            if !options_end && text.len() > 1 && text.starts_with('-') && !value_expected {
                return Err(usage(format!(
                    "unknown option '{text}' (a key that starts with '-' goes after '--')"
                )));
            }
            if given.len() == positionals {
                // Not quoted: an unquoted value with a space in it lands here, and values
                // never go to stderr.
                return Err(usage(format!(
                    "one argument too many (the {} argument)",
                    ordinal(given.len() + 1)
                )));
            }
            given.push(arg.clone());
            continue;
        }
        let mut argument = || -> Result<String, Error> {
            match inline {
                Some(value) => Ok(value.to_owned()),
                None => args
                    .next()
                    .map(|value| value.to_string_lossy().into_owned())
                    .ok_or_else(|| usage(format!("{option} needs a value"))),
            }
        };
        match option {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--wait" => {
                let text = argument()?;
                wait = Some(
                    parse_seconds(&text).map_err(|reason| usage(format!("--wait: {reason}")))?,
                );
            }
            "--ttl" => {
                ttl = Some(
                    parse_ttl(&argument()?).map_err(|reason| usage(format!("--ttl: {reason}")))?,
                )
            }
            // The only options left: --keys and --json, which take no value.
            _ => {
                if inline.is_some() {
                    return Err(usage(format!("{option} takes no value")));
                }
                let chosen = if option == "--keys" {
                    ListOutput::Keys
                } else {
                    ListOutput::Json
                };
                if output != ListOutput::Values && output != chosen {
                    return Err(usage("--keys and --json exclude each other".into()));
                }
                output = chosen;
            }
        }
    }
    let mut given = given.into_iter();
    let mut positional = |what: &str| {
        given
            .next()
            .ok_or_else(|| usage(format!("a {what} is needed (see envharness kv --help)")))
    };
    let action = match name.as_ref() {
        "get" => Action::Get {
            key: positional("KEY")?,
            wait,
        },
        "put" => {
            let key = positional("KEY")?;
            let value = positional("VALUE (or '-' for stdin)")?;
            Action::Put {
                key,
                value: if value == "-" {
                    Value::Stdin
                } else {
                    Value::Given(value)
                },
                ttl,
            }
        }
        "del" => Action::Del {
            key: positional("KEY")?,
        },
        _ => Action::List {
            prefix: given.next().unwrap_or_default(),
            wait,
            output,
        },
    };
    Ok(Parsed::Run(Kv { url, action }))
}

/// `--ttl`: whole seconds, at least 2 (etcd's floor, and what a lease needs to be renewed
/// in time).
fn ordinal(n: usize) -> String {
    match n {
        1 => "first".into(),
        2 => "second".into(),
        3 => "third".into(),
        n => format!("{n}th"),
    }
}

pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) if (2..=1_000_000_000).contains(&seconds) => Ok(Duration::from_secs(seconds)),
        _ => Err(format!(
            "{text:?} is not a whole number of seconds of at least 2"
        )),
    }
}

/// Runs the call; returns the exit status. `var` reads the environment and is asked only for
/// [`VARIABLES`].
pub fn run(kv: Kv, var: impl Fn(&str) -> Option<OsString>) -> Result<i32, Error> {
    let var = |name: &str| VARIABLES.contains(&name).then(|| var(name)).flatten();
    ignore_file_size_signal();
    // Everything that can be checked without the store is checked before it is opened.
    let request = Call::check(kv.action)?;
    let url = kv
        .url
        .filter(|url| !url.is_empty())
        .or_else(|| var("ENVHARNESS_KV").map(|url| url.to_string_lossy().into_owned()))
        .filter(|url| !url.is_empty())
        .ok_or_else(|| {
            Error::Usage("kv: no registry configured: give --kv URL or set ENVHARNESS_KV".into())
        })?;
    super::check_url(&url)?;
    let access = Access::from_env(&url, var)?;
    // Under a harness (its scripts and its command have ENVHARNESS_INSTANCE) the harness has
    // warned already: once, not at every call.
    if var("ENVHARNESS_INSTANCE").is_none() {
        super::warn_of_a_clear_text_password(&url, &access);
    }
    let mut store = super::open(&url, access)?;
    request.run(store.as_mut(), var)
}

/// The call with its key checked and its value read.
enum Call {
    Get {
        key: Key,
        wait: Option<Duration>,
    },
    Put {
        key: Key,
        value: Vec<u8>,
        ttl: Option<Duration>,
    },
    Del {
        key: Key,
    },
    List {
        prefix: String,
        wait: Option<Duration>,
        output: ListOutput,
    },
}

fn key(text: &OsString) -> Result<Key, Error> {
    Key::parse(&text.to_string_lossy())
}

impl Call {
    fn check(action: Action) -> Result<Call, Error> {
        Ok(match action {
            Action::Get { key: text, wait } => Call::Get {
                key: key(&text)?,
                wait,
            },
            Action::Put {
                key: text,
                value,
                ttl,
            } => {
                let key = key(&text)?;
                let value = match value {
                    Value::Given(value) => value.as_bytes().to_vec(),
                    Value::Stdin => read_stdin(&key)?,
                };
                check_value_size(key.as_str(), &value)?;
                Call::Put { key, value, ttl }
            }
            Action::Del { key: text } => Call::Del { key: key(&text)? },
            Action::List {
                prefix,
                wait,
                output,
            } => {
                let prefix = prefix.to_string_lossy().into_owned();
                if !prefix.bytes().all(|b| super::is_key_byte(b) || b == b'/') {
                    return Err(Error::Key {
                        key: prefix,
                        reason: "a prefix may only hold A-Z, a-z, 0-9, '_', '.', '-' and '/'"
                            .into(),
                    });
                }
                Call::List {
                    prefix,
                    wait,
                    output,
                }
            }
        })
    }

    fn run(
        self,
        store: &mut dyn Store,
        var: impl Fn(&str) -> Option<OsString>,
    ) -> Result<i32, Error> {
        match self {
            Call::Get { key, wait } => {
                // A watch of KEY covers its `KEY/…` keys too: they start with KEY.
                let found = wait_for(store, key.as_str(), key.as_str(), wait, |store| {
                    get_or_first_under(store, &key)
                });
                let seen = Seen::Value(found.as_ref().ok().cloned());
                reads::record(&var, &Lookup::Get(key), &seen);
                write_stdout(&found?)?;
            }
            Call::Put { key, value, ttl } => {
                let lease = ttl.map(|ttl| store.grant(ttl)).transpose()?;
                store.put(&key, &value, lease)?;
            }
            Call::Del { key } => store.delete(&key)?,
            Call::List {
                prefix,
                wait,
                output,
            } => {
                let found = match wait {
                    None => store.list(&prefix),
                    Some(_) => {
                        let shown = if prefix.is_empty() {
                            "(any key)"
                        } else {
                            &prefix
                        };
                        wait_for(store, &prefix, shown, wait, |store| {
                            let found = store.list(&prefix)?;
                            Ok((!found.is_empty()).then_some(found))
                        })
                    }
                };
                let seen = Seen::Pairs(found.as_ref().cloned().unwrap_or_default());
                reads::record(&var, &Lookup::List(prefix), &seen);
                write_stdout(&render_list(found?, output)?)?;
            }
        }
        Ok(0)
    }
}

/// `look` once, or with `wait` until it finds something or the wait is over (NotFound naming
/// `shown`), watching the keys under `prefix`. The watch is set up before the first look, so
/// nothing put in between is missed, and each wake-up (a change, a lease's expiry, the end)
/// looks again: the wait ends within a poll's wake-up of the key's appearance.
fn wait_for<T>(
    store: &mut dyn Store,
    prefix: &str,
    shown: &str,
    wait: Option<Duration>,
    mut look: impl FnMut(&mut dyn Store) -> Result<Option<T>, Error>,
) -> Result<T, Error> {
    let not_found = || Error::NotFound {
        key: shown.to_owned(),
        waited: wait,
    };
    let Some(wait) = wait else {
        return look(store)?.ok_or_else(not_found);
    };
    let until = Instant::now() + wait;
    let mut watch = store.watch(prefix)?;
    loop {
        if let Some(found) = look(store)? {
            return Ok(found);
        }
        if Instant::now() >= until {
            return Err(not_found());
        }
        let mut poll = Poll::default();
        poll.add(watch.fd(), ());
        poll.wait(Some(until))?;
        watch.drain();
    }
}

/// `list`'s output: values (or keys) one a line, or one JSON object.
fn render_list(found: Vec<(String, Vec<u8>)>, output: ListOutput) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    match output {
        ListOutput::Keys => {
            for (key, _) in found {
                out.extend_from_slice(key.as_bytes());
                out.push(b'\n');
            }
        }
        ListOutput::Values => {
            // All checked before anything is written: the output is whole or absent.
            if let Some((key, _)) = found.iter().find(|(_, value)| value.contains(&b'\n')) {
                return Err(Error::Key {
                    key: key.clone(),
                    reason: "the value holds a newline, so it cannot be one line; use --json"
                        .into(),
                });
            }
            for (_, value) in found {
                out.extend_from_slice(&value);
                out.push(b'\n');
            }
        }
        ListOutput::Json => {
            let mut object = serde_json::Map::new();
            for (key, value) in found {
                let text = match String::from_utf8(value) {
                    Ok(text) => text,
                    Err(err) => {
                        log::warn!(
                            "{key}: the value is not UTF-8; its invalid bytes are shown as U+FFFD"
                        );
                        String::from_utf8_lossy(err.as_bytes()).into_owned()
                    }
                };
                object.insert(key, serde_json::Value::String(text));
            }
            out = serde_json::to_vec(&object)
                .map_err(|err| Error::Usage(format!("--json: {err}")))?;
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// stdin for `put KEY -`, refusing a value over the limit by its size (counted to the end,
/// but never held in memory past the limit).
fn read_stdin(key: &Key) -> Result<Vec<u8>, Error> {
    let failed = |err| Error::io("stdin", "reading the value", err);
    let mut stdin = std::io::stdin().lock();
    if let Some(value) = read_at_most(&mut stdin, VALUE_LIMIT, 0).map_err(failed)? {
        return Ok(value);
    }
    let rest = std::io::copy(&mut stdin, &mut std::io::sink()).map_err(failed)?;
    Err(Error::Key {
        key: key.to_string(),
        reason: format!(
            "the value is {} bytes, over the limit of {VALUE_LIMIT}",
            VALUE_LIMIT as u64 + 1 + rest
        ),
    })
}

fn write_stdout(bytes: &[u8]) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|err| Error::io("stdout", "writing the output", err))
}

/// A write past RLIMIT_FSIZE raises SIGXFSZ, which kills by default; ignored, the write fails
/// with EFBIG instead, and `put` reports it with the old value intact, as for a full disk.
/// `kv` executes nothing, so no command inherits the disposition.
fn ignore_file_size_signal() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN installs no handler code, and this runs before the store is touched.
    if let Err(err) = unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) } {
        log::debug!("SIGXFSZ stays as it was: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Action, Error> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        match parse(None, &args)? {
            Parsed::Run(kv) => Ok(kv.action),
            Parsed::Help => panic!("help"),
        }
    }

    #[test]
    fn options_go_before_or_after_the_key() {
        let wait = Some(Duration::from_secs(30));
        let expected = Action::Get {
            key: "K".into(),
            wait,
        };
        assert_eq!(parsed(&["get", "--wait", "30", "K"]).unwrap(), expected);
        assert_eq!(parsed(&["get", "K", "--wait", "30"]).unwrap(), expected);
        assert_eq!(parsed(&["get", "K", "--wait=30"]).unwrap(), expected);
    }

    /// The description the man page and the completions are made of says what the parser
    /// does: its subcommands and options are the parser's, each named in HELP, and a call
    /// written from it parses.
    #[test]
    fn the_documented_command_is_the_one_parse_accepts() {
        let command = command();
        let mut names = Vec::new();
        for sub in command.get_subcommands() {
            let name = sub.get_name();
            names.push(name.to_owned());
            assert!(HELP.contains(&format!("  {name} ")), "HELP lacks {name}");
            let mut call = vec![name.to_owned()];
            for arg in sub.get_positionals() {
                call.push(if arg.get_id() == "VALUE" { "-1" } else { "K" }.to_owned());
            }
            for arg in sub.get_opts() {
                let long = format!("--{}", arg.get_long().expect("a long option"));
                assert!(HELP.contains(&long), "HELP lacks {name} {long}");
                call.push(long);
                if arg.get_action().takes_values() {
                    call.push("2".to_owned());
                }
            }
            // --keys and --json exclude each other; one of them at a time.
            if name == "list" {
                let keys = call.iter().position(|a| a == "--keys").expect("--keys");
                call.remove(keys);
            }
            let call: Vec<&str> = call.iter().map(String::as_str).collect();
            parsed(&call).unwrap_or_else(|err| panic!("{call:?}: {err}"));
        }
        assert_eq!(names, ["get", "put", "del", "list"]);
        let err = parsed(&["get", "K", "--nope"]).unwrap_err();
        assert!(err.to_string().contains("unknown option"), "{err}");
    }

    #[test]
    fn a_value_may_start_with_a_dash() {
        for value in ["-1", "-x", "--json", "-"] {
            let action = parsed(&["put", "K", value]).unwrap();
            let Action::Put { value: got, .. } = action else {
                panic!()
            };
            let expected = if value == "-" {
                Value::Stdin
            } else {
                Value::Given(value.into())
            };
            assert_eq!(got, expected);
        }
        let action = parsed(&["put", "--ttl", "5", "K", "-1"]).unwrap();
        assert!(matches!(action, Action::Put { ttl: Some(_), .. }));
    }

    #[test]
    fn after_double_dash_nothing_is_an_option() {
        let action = parsed(&["get", "--", "--wait"]).unwrap();
        assert_eq!(
            action,
            Action::Get {
                key: "--wait".into(),
                wait: None
            }
        );
        assert!(parsed(&["get", "-odd"]).is_err());
    }

    #[test]
    fn mistakes_are_usage_errors() {
        for args in [
            &["get"][..],
            &["get", "a", "b"],
            &["put", "K"],
            &["put", "K", "v", "--ttl", "1"],
            &["put", "K", "v", "--ttl", "2.5"],
            &["get", "K", "--wait"],
            &["list", "--keys", "--json"],
            &["list", "--keys=yes"],
            &["del", "K", "--wait", "1"],
            &["frob"],
        ] {
            assert!(matches!(parsed(args), Err(Error::Usage(_))), "{args:?}");
        }
    }
}
