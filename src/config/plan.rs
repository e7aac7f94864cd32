//! From a parsed [`Cli`] to a [`Plan`]: every decision the options imply, made once and with
//! no side effects (the one read: `--environment-root`'s listing, see [`environment_root`]).
//! Flags beat their `ENVHARNESS_*` variables; a directory the user named must exist later, a
//! default one may be missing; boolean variables accept `1/true/yes` and `0/false/no/empty`
//! and nothing else.
//!
//! The plan is the top of the house: it builds each layer's own settings ([`Discovery`],
//! [`Supervision`], [`registry::Settings`], [`Limits`]), and no layer below sees the plan.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::cli::Cli;
use crate::duration::parse_seconds;
use crate::error::Error;
use crate::os::signals::{FORWARDED_ONLY, STOP_SIGNALS};
use crate::os::user::Switch;
use crate::phase::environment::EnvironmentSettings;
use crate::phase::hosts::{self, EnvironmentRoot};
use crate::phase::require::Requirement;
use crate::phase::require::WaitFor;
use crate::phase::resolve::Discovery;
use crate::phase::template::{Owner, Template};
use crate::phase::Directory;
use crate::print::Format;
use crate::registry::{self, kv, Key};
use crate::runner::Limits;
use crate::supervise::rerun::{OnChange, RerunSettings};
use crate::supervise::{ExitMap, Rewrites, Supervision};

pub const DEFAULT_ENVIRONMENT: &str = "/environment";
pub const DEFAULT_EXPORT: &str = "/export";

/// What happens after the phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Replace the harness with the command.
    Exec { command: Vec<OsString> },
    /// Print the variables the environment phase set.
    Print { format: Format },
    /// `--plan`: run nothing, describe every entry and the command.
    Explain { command: Vec<OsString> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub export: Directory,
    /// The environment directories, the requirements and the templates: the resolve step.
    pub discovery: Discovery,
    pub limits: Limits,
    /// `--init` (and, inside it, `--watch`).
    pub supervision: Option<Supervision>,
    /// `--wait`: how long unmet requirements are waited for before the command starts.
    pub wait: Option<Duration>,
    /// `--environment-root` and its choice, the first of the environment directories.
    pub environment_root: Option<EnvironmentRoot>,
    /// `--kv` and what goes with it.
    pub registry: Option<registry::Settings>,
    /// `--user`: who the command runs as.
    pub user: Option<Switch>,
    pub mode: Mode,
}

/// The grace after a stop signal: with `teardown`, a stop must fit in an engine's own grace
/// (docker's and podman's 10 s), or the engine kills the harness before teardown runs.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

impl Plan {
    /// Decides the plan; `var` reads the harness's environment (a parameter so tests need none).
    pub fn from_cli(mut cli: Cli, var: impl Fn(&str) -> Option<OsString>) -> Result<Plan, Error> {
        fill_from_variables(&mut cli, &var)?;
        let init = cli.init || boolean_variable(&var, "ENVHARNESS_INIT")?;
        let group = cli.group || boolean_variable(&var, "ENVHARNESS_GROUP")?;
        let no_clobber = cli.no_clobber || boolean_variable(&var, "ENVHARNESS_NO_CLOBBER")?;
        let mode = choose_mode(&cli)?;
        let on_change = on_change(cli.on_change.as_deref(), &var)?;
        let watch = watch_interval(cli.watch, &var)?;
        if watch.is_some() && !init {
            return Err(Error::Usage(
                "--watch needs --init: only a supervising harness can re-run discovery".into(),
            ));
        }
        let splay = splay(cli.splay, &var, watch.is_some())?;
        if cli.on_change.is_some() && watch.is_none() {
            log::warn!("--on-change has no effect without --watch: nothing re-runs discovery");
        }
        let requirements = requirements(&cli.require, &var)?;
        let wait_for = flags_or_list(&cli.wait_for, &var, "ENVHARNESS_WAIT_FOR")
            .parse_each("--wait-for", WaitFor::parse)?;
        let user = user(cli.user.as_deref(), &var)?;
        let stopping = Stopping::from_cli(&cli, &var, init)?;
        let registry = registry(&cli)?;
        let health_interval = cli.health_interval.unwrap_or(Duration::from_secs(10));
        if health_interval.is_zero() {
            return Err(Error::Usage(
                "--health-interval 0: the health check needs a pause between runs".into(),
            ));
        }
        let wait = cli.wait.filter(|wait| !wait.is_zero());
        let templates = templates(&cli.template, &var)?;
        if wait.is_some() && requirements.is_empty() && wait_for.is_empty() && templates.is_empty()
        {
            log::warn!(
                "--wait has no effect without --require, --wait-for or a template: nothing to wait for"
            );
        }
        let environment_root = environment_root(cli.environment_root, cli.hostname.as_deref())?;
        Ok(Plan {
            // An empty variable counts as unset, as for ENVHARNESS_ENVIRONMENT.
            export: export_directory(cli.export.filter(|dir| !dir.is_empty()), &var),
            discovery: Discovery {
                environment: EnvironmentSettings {
                    directories: environment_directories(
                        cli.environment,
                        &var,
                        environment_root.as_ref(),
                    ),
                    jobs: cli.jobs.unwrap_or(1),
                    no_clobber,
                },
                requirements,
                wait_for,
                templates,
                kv: registry.as_ref().map(|registry| registry.url.clone()),
                owner: user
                    .as_ref()
                    .filter(|user| !user.unchanged)
                    .map(|user| Owner {
                        uid: user.uid.as_raw(),
                        gid: user.gid.as_raw(),
                    }),
            },
            limits: Limits {
                timeout: cli.timeout.filter(|limit| !limit.is_zero()),
                retries: cli.retries.unwrap_or(0),
                retry_interval: cli.retry_interval.unwrap_or(Duration::from_secs(1)),
            },
            supervision: init.then(|| Supervision {
                group,
                stop_timeout: cli.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
                health_interval,
                rerun: watch.map(|every| RerunSettings {
                    every: Some(every).filter(|every| !every.is_zero()),
                    on_change,
                    splay,
                }),
                drain: stopping.drain,
                rewrites: stopping.rewrites,
                exit_map: stopping.exit_map,
            }),
            user,
            wait,
            environment_root,
            registry,
            mode,
        })
    }

    /// `--watch`'s settings, under `--init`.
    pub fn rerun(&self) -> Option<RerunSettings> {
        self.supervision
            .as_ref()
            .and_then(|settings| settings.rerun)
    }
}

/// The options whose flag was not given, from their `ENVHARNESS_*` variables (an empty one is
/// unset). A flag beats its variable; a value that is wrong names the variable the user set,
/// not the flag they did not write. (The repeatable options, the booleans, `--watch`,
/// `--on-change` and the options that need `--init` or `--watch` are read where they are
/// decided.)
fn fill_from_variables(cli: &mut Cli, var: impl Fn(&str) -> Option<OsString>) -> Result<(), Error> {
    let text = |name: &str| {
        var(name)
            .filter(|value| !value.is_empty())
            .map(|value| value.to_string_lossy().into_owned())
    };
    let number = |text: &str| {
        text.trim()
            .parse::<u32>()
            .map_err(|_| format!("{text:?} is not a whole number"))
    };
    fill(
        &mut cli.timeout,
        text("ENVHARNESS_TIMEOUT"),
        "ENVHARNESS_TIMEOUT",
        parse_seconds,
    )?;
    fill(
        &mut cli.retries,
        text("ENVHARNESS_RETRIES"),
        "ENVHARNESS_RETRIES",
        number,
    )?;
    let interval = text("ENVHARNESS_RETRY_INTERVAL");
    fill(
        &mut cli.retry_interval,
        interval,
        "ENVHARNESS_RETRY_INTERVAL",
        parse_seconds,
    )?;
    let jobs = |text: &str| number(text).map(|jobs| jobs as usize);
    fill(
        &mut cli.jobs,
        text("ENVHARNESS_JOBS"),
        "ENVHARNESS_JOBS",
        jobs,
    )?;
    let stop = text("ENVHARNESS_STOP_TIMEOUT");
    fill(
        &mut cli.stop_timeout,
        stop,
        "ENVHARNESS_STOP_TIMEOUT",
        parse_seconds,
    )?;
    fill(
        &mut cli.wait,
        text("ENVHARNESS_WAIT"),
        "ENVHARNESS_WAIT",
        parse_seconds,
    )?;
    fill(
        &mut cli.ttl,
        text("ENVHARNESS_TTL"),
        "ENVHARNESS_TTL",
        kv::parse_ttl,
    )?;
    let health = text("ENVHARNESS_HEALTH_INTERVAL");
    fill(
        &mut cli.health_interval,
        health,
        "ENVHARNESS_HEALTH_INTERVAL",
        parse_seconds,
    )?;
    let as_is = |text: &str| Ok::<_, String>(text.to_owned());
    fill(
        &mut cli.hostname,
        text("ENVHARNESS_HOSTNAME"),
        "ENVHARNESS_HOSTNAME",
        as_is,
    )?;
    fill(&mut cli.kv, text("ENVHARNESS_KV"), "ENVHARNESS_KV", as_is)?;
    fill(
        &mut cli.instance,
        text("ENVHARNESS_INSTANCE"),
        "ENVHARNESS_INSTANCE",
        as_is,
    )?;
    // Directories keep their bytes (a path need not be UTF-8).
    let path = |name: &str| var(name).filter(|value| !value.is_empty());
    cli.environment_root = cli
        .environment_root
        .take()
        .or_else(|| path("ENVHARNESS_ENVIRONMENT_ROOT"));
    Ok(())
}

/// `slot`, when the flag left it empty, from a variable's `text`, parsed; an error names the
/// variable.
fn fill<T>(
    slot: &mut Option<T>,
    text: Option<String>,
    variable: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<(), Error> {
    if let (None, Some(text)) = (&slot, text) {
        *slot = Some(parse(&text).map_err(|reason| Error::Usage(format!("{variable}: {reason}")))?);
    }
    Ok(())
}

/// `--kv URL` and its companions; None without a URL (an empty one counts as none).
fn registry(cli: &Cli) -> Result<Option<registry::Settings>, Error> {
    let Some(url) = cli.kv.clone().filter(|url| !url.is_empty()) else {
        return Ok(None);
    };
    registry::check_url(&url)?;
    let instance = match cli.instance.clone().filter(|id| !id.is_empty()) {
        Some(instance) => instance,
        None => hostname(cli.hostname.as_deref())?,
    };
    if instance.contains('/') || Key::parse(&instance).is_err() {
        return Err(Error::Usage(format!(
            "--instance {instance:?}: not a key segment (A-Z, a-z, 0-9, '_', '.', '-')"
        )));
    }
    Ok(Some(registry::Settings {
        url,
        instance,
        ttl: cli.ttl.unwrap_or(Duration::from_secs(10)),
    }))
}

/// The hostname: `--hostname` (or `ENVHARNESS_HOSTNAME`; empty counts as unset), else the
/// kernel's (`uname -n`). It is what `--environment-root` matches and the default `--instance`.
pub fn hostname(given: Option<&str>) -> Result<String, Error> {
    if let Some(name) = given.filter(|name| !name.is_empty()) {
        return Ok(name.to_owned());
    }
    let name = nix::unistd::gethostname()
        .map_err(|err| Error::io("gethostname", "reading the host name", err.into()))?;
    Ok(name.to_string_lossy().into_owned())
}

/// `--watch SECS`, else `ENVHARNESS_WATCH` (empty: off).
fn watch_interval(
    flag: Option<Duration>,
    var: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<Duration>, Error> {
    if flag.is_some() {
        return Ok(flag);
    }
    let Some(value) = var("ENVHARNESS_WATCH").filter(|value| !value.is_empty()) else {
        return Ok(None);
    };
    parse_seconds(&value.to_string_lossy())
        .map(Some)
        .map_err(|reason| Error::Usage(format!("ENVHARNESS_WATCH: {reason}")))
}

/// `--splay SECS`, which needs `--watch`; `ENVHARNESS_SPLAY` is read only under `--watch`, so a
/// harness nested in a script that inherits it still runs.
fn splay(
    flag: Option<Duration>,
    var: impl Fn(&str) -> Option<OsString>,
    watching: bool,
) -> Result<Duration, Error> {
    if flag.is_some() && !watching {
        return Err(Error::Usage(
            "--splay needs --watch: it spreads the restarts of re-runs".into(),
        ));
    }
    if !watching {
        return Ok(Duration::ZERO);
    }
    if let Some(splay) = flag {
        return Ok(splay);
    }
    match var("ENVHARNESS_SPLAY").filter(|value| !value.is_empty()) {
        Some(value) => parse_seconds(&value.to_string_lossy())
            .map_err(|reason| Error::Usage(format!("ENVHARNESS_SPLAY: {reason}"))),
        None => Ok(Duration::ZERO),
    }
}

/// `--on-change restart|SIGNAL`, else `ENVHARNESS_ON_CHANGE` (empty: unset, as for the other
/// variables); checked even without `--watch`, where it has no effect.
pub(crate) fn on_change(
    flag: Option<&str>,
    var: impl Fn(&str) -> Option<OsString>,
) -> Result<OnChange, Error> {
    let from_variable = var("ENVHARNESS_ON_CHANGE")
        .filter(|value| !value.is_empty())
        .map(|value| value.to_string_lossy().into_owned());
    // Messages name what the user wrote: the flag, or the variable.
    let (action, given) = match (flag, &from_variable) {
        (Some(action), _) => (action, format!("--on-change {action:?}")),
        (None, Some(action)) => (action.as_str(), format!("ENVHARNESS_ON_CHANGE={action:?}")),
        (None, None) => return Ok(OnChange::Restart),
    };
    if action.eq_ignore_ascii_case("restart") {
        return Ok(OnChange::Restart);
    }
    let signal = parse_signal(action).ok_or_else(|| {
        Error::Usage(format!(
            "{given}: not `restart` nor a signal (HUP, SIGUSR1, 15, ...)"
        ))
    })?;
    if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
        return Err(Error::Usage(format!(
            "{given}: {} cannot be caught, so the command could not react to it; use restart",
            signal.as_str()
        )));
    }
    Ok(OnChange::Signal(signal))
}

/// `HUP`, `SIGHUP`, `hup` or `1`.
pub(crate) fn parse_signal(text: &str) -> Option<Signal> {
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().ok()
}

/// `--require` flags, else `ENVHARNESS_REQUIRE` split at whitespace.
fn requirements(
    flags: &[String],
    var: impl Fn(&str) -> Option<OsString>,
) -> Result<Vec<Requirement>, Error> {
    flags_or_list(flags, var, "ENVHARNESS_REQUIRE").parse_each("--require", Requirement::parse)
}

/// A repeatable option's values, and the variable they came from, if they did.
struct Listed {
    items: Vec<String>,
    variable: Option<&'static str>,
}

impl Listed {
    /// Each value parsed; an error about a value the variable gave names the variable
    /// (`ENVHARNESS_REWRITE=TERM: ...`), not the flag the user did not write.
    fn parse_each<T>(
        &self,
        flag: &str,
        parse: impl Fn(&str) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        self.items
            .iter()
            .map(|item| parse(item).map_err(|err| named_by(err, flag, self.variable)))
            .collect()
    }
}

/// A repeatable option's flags, else its variable split at whitespace.
fn flags_or_list(
    flags: &[String],
    var: impl Fn(&str) -> Option<OsString>,
    variable: &'static str,
) -> Listed {
    if !flags.is_empty() {
        return Listed {
            items: flags.to_vec(),
            variable: None,
        };
    }
    let items = var(variable)
        .map(|value| {
            value
                .to_string_lossy()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Listed {
        items,
        variable: Some(variable),
    }
}

/// A usage error that starts with `FLAG VALUE`, restated as `VARIABLE=VALUE` when the value
/// came from the variable.
fn named_by(err: Error, flag: &str, variable: Option<&str>) -> Error {
    match (err, variable) {
        (Error::Usage(message), Some(variable)) => {
            match message
                .strip_prefix(flag)
                .and_then(|rest| rest.strip_prefix(' '))
            {
                Some(rest) => Error::Usage(format!("{variable}={rest}")),
                None => Error::Usage(message),
            }
        }
        (err, _) => err,
    }
}

/// `--user USER[:GROUP]`, else `ENVHARNESS_USER` (empty: unset), looked up now: an unknown
/// user is an error before anything runs.
fn user(
    flag: Option<&str>,
    var: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<Switch>, Error> {
    let from_variable = var("ENVHARNESS_USER")
        .filter(|value| !value.is_empty())
        .map(|value| value.to_string_lossy().into_owned());
    match (flag, from_variable) {
        (Some(given), _) => Switch::lookup(given).map(Some),
        (None, Some(given)) => Switch::lookup(&given)
            .map(Some)
            .map_err(|err| named_by(err, "--user", Some("ENVHARNESS_USER"))),
        (None, None) => Ok(None),
    }
}

/// How a stop goes under `--init`: `--drain`, `--rewrite`, `--remap-exit`.
struct Stopping {
    drain: Duration,
    rewrites: Rewrites,
    exit_map: ExitMap,
}

impl Stopping {
    /// The flags need `--init` (a usage error without it); their variables are read only under
    /// `--init`, so a harness nested in a script that inherits them still runs.
    fn from_cli(
        cli: &Cli,
        var: impl Fn(&str) -> Option<OsString>,
        init: bool,
    ) -> Result<Stopping, Error> {
        let flags = [
            ("--drain", cli.drain.is_some()),
            ("--rewrite", !cli.rewrite.is_empty()),
            ("--remap-exit", !cli.remap_exit.is_empty()),
        ];
        if let Some((flag, _)) = flags.iter().find(|(_, given)| *given).filter(|_| !init) {
            return Err(Error::Usage(format!(
                "{flag} needs --init: only a supervising harness stops the command"
            )));
        }
        if !init {
            return Ok(Stopping {
                drain: Duration::ZERO,
                rewrites: Rewrites::default(),
                exit_map: ExitMap::default(),
            });
        }
        let drain = match cli.drain {
            Some(drain) => drain,
            None => match var("ENVHARNESS_DRAIN").filter(|value| !value.is_empty()) {
                Some(value) => parse_seconds(&value.to_string_lossy())
                    .map_err(|reason| Error::Usage(format!("ENVHARNESS_DRAIN: {reason}")))?,
                None => Duration::ZERO,
            },
        };
        let rewrites = flags_or_list(&cli.rewrite, &var, "ENVHARNESS_REWRITE")
            .parse_each("--rewrite", rewrite)?;
        let exit_map = flags_or_list(&cli.remap_exit, &var, "ENVHARNESS_REMAP_EXIT")
            .parse_each("--remap-exit", remap_exit)?;
        Ok(Stopping {
            drain,
            rewrites: Rewrites(rewrites),
            exit_map: ExitMap(exit_map),
        })
    }
}

/// `FROM:TO`: FROM a signal the harness forwards, TO any signal, or `0` to drop FROM.
pub(crate) fn rewrite(text: &str) -> Result<(Signal, Option<Signal>), Error> {
    let usage = |reason: String| Error::Usage(format!("--rewrite {text}: {reason}"));
    let (from, to) = text
        .split_once(':')
        .ok_or_else(|| usage("FROM:TO, e.g. TERM:QUIT, or USR1:0 to drop it".into()))?;
    let from_signal = parse_signal(from).ok_or_else(|| usage(format!("{from} is not a signal")))?;
    if !STOP_SIGNALS.contains(&from_signal) && !FORWARDED_ONLY.contains(&from_signal) {
        return Err(usage(format!(
            "{from} is not a signal envharness forwards (TERM, INT, HUP, QUIT, USR1, USR2, WINCH, CONT)"
        )));
    }
    if to == "0" {
        return Ok((from_signal, None));
    }
    let to_signal = parse_signal(to).ok_or_else(|| usage(format!("{to} is not a signal")))?;
    Ok((from_signal, Some(to_signal)))
}

/// `N:M`, each an exit status (0-255).
pub(crate) fn remap_exit(text: &str) -> Result<(i32, i32), Error> {
    let usage = |reason: String| Error::Usage(format!("--remap-exit {text}: {reason}"));
    let (from, to) = text
        .split_once(':')
        .ok_or_else(|| usage("N:M, e.g. 143:0".into()))?;
    let status = |part: &str| {
        part.parse::<u8>()
            .map(i32::from)
            .map_err(|_| usage(format!("{part} is not an exit status (0-255)")))
    };
    Ok((status(from)?, status(to)?))
}

/// `-t` flags, else `ENVHARNESS_TEMPLATE` split at whitespace.
fn templates(
    flags: &[OsString],
    var: impl Fn(&str) -> Option<OsString>,
) -> Result<Vec<Template>, Error> {
    if !flags.is_empty() {
        return flags.iter().map(|flag| Template::parse(flag)).collect();
    }
    let Some(list) = var("ENVHARNESS_TEMPLATE") else {
        return Ok(Vec::new());
    };
    list.as_bytes()
        .split(|byte| byte.is_ascii_whitespace())
        .filter(|piece| !piece.is_empty())
        .map(|piece| Template::parse(OsStr::from_bytes(piece)))
        .collect()
}

/// `--environment-root DIR` (an empty variable counts as unset): the one decision that reads
/// the filesystem, DIR's listing, since the chosen directory is part of the plan (`--plan`
/// shows it) and stays the same for `--watch` re-runs.
fn environment_root(
    dir: Option<OsString>,
    hostname_flag: Option<&str>,
) -> Result<Option<EnvironmentRoot>, Error> {
    let Some(dir) = dir.filter(|dir| !dir.is_empty()) else {
        return Ok(None);
    };
    hosts::choose(Path::new(&dir), &hostname(hostname_flag)?).map(Some)
}

fn choose_mode(cli: &Cli) -> Result<Mode, Error> {
    let command = cli.command.clone();
    if cli.plan {
        return Ok(Mode::Explain { command });
    }
    if let Some(format) = cli.print {
        if !command.is_empty() {
            return Err(Error::Usage(
                "--print runs no command; drop the command or drop --print".into(),
            ));
        }
        return Ok(Mode::Print { format });
    }
    if command.is_empty() {
        return Err(Error::Usage(
            "no command given: put it after --, or use --print or --plan (see envharness --help)"
                .into(),
        ));
    }
    Ok(Mode::Exec { command })
}

/// `-x DIR`, else `ENVHARNESS_EXPORT` (empty: unset), else the default.
fn export_directory(flag: Option<OsString>, var: impl Fn(&str) -> Option<OsString>) -> Directory {
    let named = |path: OsString, variable| Directory {
        path: path.into(),
        named: true,
        variable,
    };
    match flag {
        Some(path) => named(path, None),
        None => match var("ENVHARNESS_EXPORT").filter(|dir| !dir.is_empty()) {
            Some(path) => named(path, Some("ENVHARNESS_EXPORT")),
            None => Directory {
                path: DEFAULT_EXPORT.into(),
                named: false,
                variable: None,
            },
        },
    }
}

/// The environment directories: the `--environment-root` choice (in place of the default),
/// then the named ones.
fn environment_directories(
    flags: Vec<OsString>,
    var: impl Fn(&str) -> Option<OsString>,
    root: Option<&EnvironmentRoot>,
) -> Vec<Directory> {
    let (named, variable): (Vec<PathBuf>, _) = if flags.is_empty() {
        let listed = var("ENVHARNESS_ENVIRONMENT")
            .map(|list| split_colon_list(&list))
            .unwrap_or_default();
        (listed, Some("ENVHARNESS_ENVIRONMENT"))
    } else {
        (flags.into_iter().map(PathBuf::from).collect(), None)
    };
    let chosen = root.and_then(EnvironmentRoot::path).map(|path| Directory {
        path,
        named: true,
        variable: None,
    });
    if named.is_empty() && root.is_none() {
        return vec![Directory {
            path: DEFAULT_ENVIRONMENT.into(),
            named: false,
            variable: None,
        }];
    }
    chosen
        .into_iter()
        .chain(named.into_iter().map(|path| Directory {
            path,
            named: true,
            variable,
        }))
        .collect()
}

/// `a::b:` -> [a, b]: empty pieces are dropped, as in a PATH-style list nobody means them.
fn split_colon_list(list: &OsStr) -> Vec<PathBuf> {
    list.as_bytes()
        .split(|byte| *byte == b':')
        .filter(|piece| !piece.is_empty())
        .map(|piece| OsStr::from_bytes(piece).into())
        .collect()
}

fn boolean_variable(var: impl Fn(&str) -> Option<OsString>, name: &str) -> Result<bool, Error> {
    let Some(value) = var(name) else {
        return Ok(false);
    };
    match value.to_string_lossy().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" | "" => Ok(false),
        other => Err(Error::Usage(format!(
            "{name}={other:?} is not a boolean (use 1/true/yes or 0/false/no)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn plan(cli: Cli, vars: &[(&str, &str)]) -> Result<Plan, Error> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Plan::from_cli(cli, |name| vars.get(name).cloned())
    }

    fn with_command() -> Cli {
        Cli {
            command: vec!["true".into()],
            ..Cli::default()
        }
    }

    #[test]
    fn defaults_are_unnamed_and_may_be_missing() {
        let plan = plan(with_command(), &[]).unwrap();
        assert_eq!(plan.export.path, PathBuf::from("/export"));
        assert!(!plan.export.named);
        let environment = &plan.discovery.environment;
        assert_eq!(environment.directories.len(), 1);
        assert!(!environment.directories[0].named);
        assert_eq!(plan.limits.retry_interval, Duration::from_secs(1));
        assert_eq!(environment.jobs, 1);
        assert_eq!(plan.supervision, None);
    }

    #[test]
    fn environment_variable_is_colon_separated_and_flags_beat_it() {
        let vars = [("ENVHARNESS_ENVIRONMENT", "/a::/b:")];
        let from_var = plan(with_command(), &vars).unwrap();
        let paths: Vec<_> = from_var
            .discovery
            .environment
            .directories
            .iter()
            .map(|d| d.path.clone())
            .collect();
        assert_eq!(paths, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(from_var
            .discovery
            .environment
            .directories
            .iter()
            .all(|d| d.named));

        let cli = Cli {
            environment: vec!["/c".into()],
            ..with_command()
        };
        let from_flag = plan(cli, &vars).unwrap();
        let directories = &from_flag.discovery.environment.directories;
        assert_eq!(directories[0].path, PathBuf::from("/c"));
        assert_eq!(directories.len(), 1);
    }

    #[test]
    fn booleans_accept_the_documented_words_only() {
        for on in ["1", "true", "yes", "YES"] {
            assert!(
                plan(with_command(), &[("ENVHARNESS_NO_CLOBBER", on)])
                    .unwrap()
                    .discovery
                    .environment
                    .no_clobber
            );
        }
        for off in ["0", "false", "no", ""] {
            assert!(
                !plan(with_command(), &[("ENVHARNESS_NO_CLOBBER", off)])
                    .unwrap()
                    .discovery
                    .environment
                    .no_clobber
            );
        }
        let err = plan(with_command(), &[("ENVHARNESS_INIT", "maybe")]).unwrap_err();
        assert!(err.to_string().contains("ENVHARNESS_INIT"), "{err}");
        assert_eq!(err.exit_status(), 125);
    }

    #[test]
    fn zero_timeout_means_none() {
        let cli = Cli {
            timeout: Some(Duration::ZERO),
            ..with_command()
        };
        assert_eq!(plan(cli, &[]).unwrap().limits.timeout, None);
    }

    #[test]
    fn a_command_is_required_unless_printing_or_planning() {
        assert!(matches!(plan(Cli::default(), &[]), Err(Error::Usage(_))));
        let print = Cli {
            print: Some(Format::Json),
            ..Cli::default()
        };
        assert_eq!(
            plan(print, &[]).unwrap().mode,
            Mode::Print {
                format: Format::Json
            }
        );
        let print_and_command = Cli {
            print: Some(Format::Json),
            ..with_command()
        };
        assert!(matches!(plan(print_and_command, &[]), Err(Error::Usage(_))));
    }
}
