//! envharness: the entrypoint a container (or a shebang script) runs first.
//!
//! # Theory of operation
//! [`run`] takes the parsed command line through these steps, each one call:
//! 1. [`plan`]: decide everything the options and `ENVHARNESS_*` variables imply;
//! 2. [`init::signals`]: block SIGCHLD and the stop signals and read them from a signalfd, so
//!    no signal is lost and one loop can wait on scripts, children and signals at once;
//! 3. [`phase::export`]: announce the service by running the export scripts;
//! 4. [`phase::environment`]: turn each environment directory's entries into variables, and
//!    check the [`require`]ments (again every `--retry-interval` while `--wait` allows); then
//!    render every [`template`] with the final environment, and write those that changed;
//! 5. [`exec`] the command with the final environment, or [`print`] the variables; under
//!    `--init`, [`init::supervise`] it instead and then run the export directory's `teardown`.
//! 6. Under `--init --watch`, the supervisor's loop re-runs step 4 on a timer or SIGHUP while
//!    the command runs ([`watch`]), and restarts or signals the command when the result changes
//!    (a variable, or a template's output).
//!
//! Scripts run in a [`runner::Pool`] that owns no loop: before the command starts the phases'
//! loop drives it ([`init::PhaseHost`]), during a re-run the supervisor's own.
//! `--plan` stops after step 1 and [`explain`]s instead. Every failure is an [`Error`] that
//! knows its exit status; only `main` exits.

pub mod arena;
pub mod cli;
pub mod dotenv;
pub mod duration;
pub mod entries;
pub mod error;
pub mod exec;
pub mod explain;
pub mod hosts;
pub mod init;
pub mod logging;
pub mod phase;
pub mod plan;
pub mod print;
pub mod registry;
pub mod require;
pub mod runner;
pub mod shebang;
pub mod template;
pub mod variables;
pub mod watch;

use std::borrow::Cow;
use std::io::Write;
use std::time::Instant;

pub use error::Error;

use cli::Cli;
use hosts::EnvironmentRoot;
use init::signals::Signals;
use init::PhaseHost;
use plan::{Mode, Plan};
use registry::publish::Registration;
use registry::reads::ReadLog;
use variables::{Environment, Variables};
use watch::Watching;

/// Runs envharness; returns the exit status to exit with (`--print`, `--plan`, and under
/// `--init` the command's), and never returns after a successful exec.
pub fn run(cli: Cli) -> Result<i32, Error> {
    let plan = Plan::from_cli(cli, |name| std::env::var_os(name))?;
    let harness_env = with_registry_variables(std::env::vars_os().collect(), &plan);
    let then = match &plan.mode {
        Mode::Explain { command } => {
            explain::explain(&plan, command, &harness_env, &mut std::io::stdout().lock())?;
            return Ok(0);
        }
        Mode::Print { format } => Then::Print(*format),
        Mode::Exec { command } => Then::Exec(command),
    };
    if let Some(unmatched) = plan
        .environment_root
        .as_ref()
        .and_then(EnvironmentRoot::unmatched)
    {
        return Err(unmatched);
    }
    let supervised = plan.supervision.is_some();
    let signals = Signals::install(supervised, plan.watch.is_some())
        .map_err(|err| Error::io("signalfd", "watching signals", err))?;
    let mut host = PhaseHost::new(&signals, plan.limits);
    let instance = plan
        .registry
        .as_ref()
        .map(|registry| registry.instance.as_str());
    let announced =
        phase::export::announce(&plan.export, &mut host, &harness_env, supervised, instance)?;
    // Under --watch with a registry, what the scripts read through `envharness kv` is watched.
    let mut reads = match (&plan.registry, plan.watch) {
        (Some(_), Some(_)) => Some(ReadLog::create()?),
        _ => None,
    };
    // The scripts' environment differs from the harness's only by where they record reads.
    let script_env = match &reads {
        Some(log) => Cow::Owned([harness_env.clone(), vec![log.variable()]].concat()),
        None => Cow::Borrowed(&harness_env),
    };
    let vars = discover_until_required(&plan, &mut host, &script_env)?;
    host.check_stop()?;
    let mut env = vars.over(&harness_env);
    template::render_all(&plan.templates, &env)?.write()?;
    match then {
        Then::Print(format) => {
            publish_unleased(&plan, &announced)?;
            print_variables(&vars, format)
        }
        Then::Exec(command) => {
            let Some(settings) = plan.supervision else {
                return Err(exec::exec(command, &env, &signals, || {
                    publish_unleased(&plan, &announced)
                }));
            };
            let first_reads = reads.as_mut().map(ReadLog::take).unwrap_or_default();
            let registration = register(&plan, announced)?;
            // A stop signal that came while the templates were written or the registration
            // started: nothing is started (SPEC.md 3.4), rather than a command that is told
            // to stop at once, its keys published for a moment.
            host.check_stop()?;
            let watching = plan.watch.map(|watch| {
                Watching::new(
                    &plan,
                    &harness_env,
                    script_env.into_owned(),
                    watch,
                    &vars,
                    reads,
                )
            });
            let status = init::supervise(
                &plan,
                command,
                &mut env,
                &signals,
                settings,
                init::Extras {
                    watching,
                    registration,
                    first_reads,
                    rerun_requested: host.rerun_requested(),
                },
            );
            phase::export::teardown(&plan.export, &mut host, &env);
            status
        }
    }
}

/// What follows the phases (`--plan` runs none).
enum Then<'p> {
    Print(cli::Format),
    Exec(&'p [std::ffi::OsString]),
}

/// With a registry, every script and the command get `ENVHARNESS_KV` and
/// `ENVHARNESS_INSTANCE`, so that `envharness kv` there reaches the same store (SPEC.md 11.1).
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

/// Exec mode and `--print`: what the export phase announced, put without a lease.
fn publish_unleased(plan: &Plan, announced: &phase::export::Announced) -> Result<(), Error> {
    let Some(registry) = plan.registry.as_ref().filter(|_| !announced.is_empty()) else {
        return Ok(());
    };
    let mut store = registry::open(&registry.url, credentials()?)?;
    registry::publish::publish_unleased(store.as_mut(), announced)
}

/// Under `--init`: the registration that publishes what the export phase announced and, under
/// `--watch`, watches what the scripts read; none when it can have nothing to do. The store is
/// opened by the registration's thread at its first request, not here.
fn register(
    plan: &Plan,
    announced: phase::export::Announced,
) -> Result<Option<Registration>, Error> {
    let Some(registry) = &plan.registry else {
        return Ok(None);
    };
    if announced.is_empty() && plan.watch.is_none() {
        return Ok(None);
    }
    let url = registry.url.clone();
    let open: registry::worker::Opener = Box::new(move || registry::open(&url, credentials()?));
    Registration::start(&registry.url, open, announced, registry.ttl).map(Some)
}

fn credentials() -> Result<Option<registry::Credentials>, Error> {
    registry::Credentials::from_env(|name| std::env::var_os(name))
}

/// The environment phase, then the requirements; with `--wait`, the phase runs again every
/// `--retry-interval` while a requirement is unmet, until the wait is over.
fn discover_until_required(
    plan: &Plan,
    host: &mut PhaseHost,
    harness_env: &Environment,
) -> Result<Variables, Error> {
    let give_up = plan.wait.map(|wait| Instant::now() + wait);
    loop {
        let vars = phase::environment::discover(plan, host, harness_env)?;
        let unmet = match require::check(&plan.requirements, &vars, harness_env) {
            Ok(()) => return Ok(vars),
            Err(unmet) => unmet,
        };
        let now = Instant::now();
        let Some(give_up) = give_up.filter(|at| *at > now) else {
            return Err(unmet);
        };
        let next = (now + plan.limits.retry_interval).min(give_up);
        log::info!(
            "{unmet}; discovering again in {:.1}s (--wait)",
            (next - now).as_secs_f64()
        );
        host.sleep_until(next)?;
    }
}

fn print_variables(vars: &Variables, format: cli::Format) -> Result<i32, Error> {
    std::io::stdout()
        .lock()
        .write_all(&print::render(vars, format))
        .map_err(|err| Error::io("stdout", "printing the variables", err))?;
    Ok(0)
}
