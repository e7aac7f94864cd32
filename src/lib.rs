//! envharness: the entrypoint a container (or a shebang script) runs first.
//!
//! # Theory of operation
//! [`run`] takes the parsed command line through these steps, each one call:
//! 1. [`config`]: decide everything the options and `ENVHARNESS_*` variables imply, as a plan
//!    that hands each layer below its own settings;
//! 2. [`os::signals`]: block SIGCHLD and the stop signals and read them from a signalfd, so
//!    no signal is lost and one loop can wait on scripts, children and signals at once;
//! 3. [`phase::export`]: announce the service by running the export scripts;
//! 4. [`phase::resolve`]: turn the environment directories into the final environment
//!    (discover, check the requirements, overlay, render the templates), again every
//!    `--retry-interval` while `--wait` allows an unmet requirement; then write the templates;
//! 5. [`exec`] the command with the final environment, or [`print`] the variables; under
//!    `--init`, [`supervise`] it instead and then run the export directory's `teardown`.
//!    Under `--watch` the supervisor's loop takes step 4 again on a timer, SIGHUP or a
//!    registry change, and restarts or signals the command when the result changed.
//!
//! Scripts run in a [`runner`] pool that owns no loop: before the command starts the phases'
//! loop drives it, during a re-run the supervisor's own. The [`registry`] is reached only
//! when there is something to publish or to watch. `--plan` stops after step 1 and
//! [`explain`]s instead. Every failure is an [`Error`] that knows its exit status; only
//! `main` exits.

pub mod arena;
pub mod config;
mod duration;
pub mod error;
mod exec;
mod explain;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod logging;
pub mod os;
mod phase;
mod print;
pub mod registry;
mod runner;
mod supervise;
mod variables;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

pub use error::Error;

use config::cli::Cli;
use config::{Mode, Plan};
use exec::Found;
use os::signals::Signals;
use phase::export::Announced;
use phase::hosts::EnvironmentRoot;
use phase::resolve::Resolver;
use print::Format;
use registry::publish::Registration;
use registry::reads::ReadLog;
use runner::host::PhaseHost;
use supervise::rerun::Reruns;
use supervise::{Service, Supervision};
use variables::{Environment, Variables};

/// Runs envharness; returns the exit status to exit with (`--print`, `--plan`, and under
/// `--init` the command's), and never returns after a successful exec.
pub fn run(cli: Cli) -> Result<i32, Error> {
    let started_with: Environment = os::start::environment();
    let plan = Plan::from_cli(cli, settings_in(&started_with))?;
    let harness_env = with_registry_variables(started_with, &plan);
    let then = match &plan.mode {
        Mode::Explain { command } => return explain_plan(&plan, command, &harness_env),
        Mode::Print { format } => Then::Print(*format),
        Mode::Exec { command } => Then::Exec(command, Found::before_start(command, &harness_env)?),
    };
    let access = registry_access(&plan)?;
    if let Some(unmatched) = plan
        .environment_root
        .as_ref()
        .and_then(EnvironmentRoot::unmatched)
    {
        return Err(unmatched);
    }
    let signals = Signals::install(plan.supervision.is_some(), plan.rerun().is_some())
        .map_err(|err| Error::io("signalfd", "watching signals", err))?;
    let mut host = PhaseHost::new(&signals, plan.limits);
    let exec_mode = matches!(then, Then::Exec(..)) && plan.supervision.is_none();
    let announced = phase::export::announce(
        &plan.export,
        &mut host,
        &harness_env,
        exec_mode,
        plan.registry
            .as_ref()
            .map(|registry| registry.instance.as_str()),
    )?;
    let mut resolver = Resolver::new(
        &plan.discovery,
        &harness_env,
        read_log(&plan)?,
        access.clone(),
    );
    let resolved = resolver.resolve_waiting(&mut host, plan.wait)?;
    host.check_stop()?;
    resolved.templates.write()?;
    match (then, &plan.supervision) {
        (Then::Print(format), _) => {
            // A look at the variables announces no service: a watching consumer would follow
            // it to an address that serves nothing.
            for (key, _) in &announced {
                log::info!("{key}: not published (--print publishes nothing)");
            }
            print_variables(&resolved.vars, format)
        }
        (Then::Exec(command, found), None) => {
            let home_from_directory = resolved.vars.get("HOME").is_some();
            let env = match &plan.user {
                Some(user) => user.environment(resolved.env, home_from_directory),
                None => resolved.env,
            };
            Err(exec::exec(
                command,
                &env,
                found.as_ref(),
                plan.user.as_ref(),
                &signals,
                || publish_unleased(&plan, access, &announced),
            ))
        }
        (Then::Exec(command, found), Some(settings)) => {
            let started = Supervised {
                plan: &plan,
                settings,
                signals: &signals,
                access,
            };
            let service = Service {
                command,
                found,
                home_from_directory: resolved.vars.get("HOME").is_some(),
                env: resolved.env,
                user: plan.user.as_ref(),
                export: &plan.export,
                limits: plan.limits,
            };
            started.run(service, &resolved.vars, resolver, announced, host)
        }
    }
}

/// How the plan reads its `ENVHARNESS_*` variables: from the environment the harness was started
/// with, copied once, of which only those few are kept to look in (thirty lookups in the
/// whole environment, libc's getenv, took a tenth of the start-up's instructions).
fn settings_in(env: &Environment) -> impl Fn(&str) -> Option<OsString> {
    let ours: Vec<(OsString, OsString)> = env
        .iter()
        .filter(|(name, _)| name.as_bytes().starts_with(b"ENVHARNESS_"))
        .cloned()
        .collect();
    move |name| {
        ours.iter()
            .find(|(found, _)| found == name)
            .map(|(_, value)| value.clone())
    }
}

/// What follows the phases (`--plan` runs none).
enum Then<'p> {
    Print(Format),
    /// The command, and where it was found before anything ran (if it was).
    Exec(&'p [OsString], Option<Found>),
}

/// Step 5 under `--init`: the command as a child, then `teardown`.
struct Supervised<'a> {
    plan: &'a Plan,
    settings: &'a Supervision,
    signals: &'a Signals,
    access: Option<registry::Access>,
}

impl Supervised<'_> {
    fn run(
        &self,
        mut service: Service,
        applied: &Variables,
        resolver: Resolver,
        announced: Announced,
        mut host: PhaseHost,
    ) -> Result<i32, Error> {
        let registration = register(self.plan, self.access.clone(), announced)?;
        // A stop signal that came while the templates were written or the registration started:
        // nothing is started (docs/reference.md §3.4), rather than a command that is told to stop
        // at once, its keys published for a moment.
        host.check_stop()?;
        let reruns = self.settings.rerun.map(|rerun| {
            let mut reruns = Reruns::new(resolver, rerun, applied);
            if host.rerun_requested() {
                reruns.request();
            }
            reruns
        });
        let status = supervise::supervise(
            &mut service,
            self.signals,
            self.settings,
            registration,
            reruns,
        );
        phase::export::teardown(&self.plan.export, &mut host, &service.env);
        status
    }
}

fn explain_plan(
    plan: &Plan,
    command: &[OsString],
    harness_env: &Environment,
) -> Result<i32, Error> {
    explain::explain(plan, command, harness_env, &mut std::io::stdout().lock())?;
    Ok(0)
}

/// With a registry, every script and the command get `ENVHARNESS_KV` and `ENVHARNESS_INSTANCE`, so
/// that `envharness kv` there reaches the same store (docs/reference.md §11.1).
fn with_registry_variables(mut env: Environment, plan: &Plan) -> Environment {
    let Some(registry) = &plan.registry else {
        return env;
    };
    for (name, value) in [
        ("ENVHARNESS_KV", &registry.url),
        ("ENVHARNESS_INSTANCE", &registry.instance),
    ] {
        env.retain(|(existing, _)| existing != name);
        env.push((name.into(), value.into()));
    }
    env
}

/// Under `--watch` with a registry, what the scripts read through `envharness kv` is watched:
/// they record it in a read log.
fn read_log(plan: &Plan) -> Result<Option<ReadLog>, Error> {
    match (&plan.registry, plan.rerun()) {
        (Some(_), Some(_)) => ReadLog::create().map(Some),
        _ => Ok(None),
    }
}

/// With a registry: its login and TLS settings, read before anything runs with the
/// certificate files (contacting nobody), and the one warning of a password in clear text
/// given (docs/reference.md §12).
fn registry_access(plan: &Plan) -> Result<Option<registry::Access>, Error> {
    let Some(registry) = &plan.registry else {
        return Ok(None);
    };
    let access = registry::Access::from_env(&registry.url, |name| std::env::var_os(name))?;
    registry::warn_of_a_clear_text_password(&registry.url, &access);
    Ok(Some(access))
}

/// Exec mode: what the export phase announced, put without a lease.
fn publish_unleased(
    plan: &Plan,
    access: Option<registry::Access>,
    announced: &Announced,
) -> Result<(), Error> {
    let (Some(registry), Some(access)) = (&plan.registry, access) else {
        return Ok(());
    };
    if announced.is_empty() {
        return Ok(());
    }
    let mut store = registry::open(&registry.url, access)?;
    registry::publish::publish_unleased(store.as_mut(), announced)
}

/// Under `--init`: the registration that publishes what the export phase announced and, under
/// `--watch`, watches what the scripts read; none when it can have nothing to do. The store is
/// opened by the registration's thread at its first request, not here (its settings were
/// checked at the start).
fn register(
    plan: &Plan,
    access: Option<registry::Access>,
    announced: Announced,
) -> Result<Option<Registration>, Error> {
    let (Some(registry), Some(access)) = (&plan.registry, access) else {
        return Ok(None);
    };
    if announced.is_empty() && plan.rerun().is_none() {
        return Ok(None);
    }
    let url = registry.url.clone();
    let open: registry::worker::Opener = Box::new(move || registry::open(&url, access.clone()));
    Registration::start(&registry.url, open, announced, registry.ttl).map(Some)
}

fn print_variables(vars: &Variables, format: Format) -> Result<i32, Error> {
    std::io::stdout()
        .lock()
        .write_all(&print::render(vars, format))
        .map_err(|err| Error::io("stdout", "printing the variables", err))?;
    Ok(0)
}
