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

use std::io::Write;
use std::time::Instant;

pub use error::Error;

use cli::Cli;
use init::signals::Signals;
use init::PhaseHost;
use plan::{Mode, Plan};
use variables::{Environment, Variables};
use watch::Watching;

/// Runs envharness; returns the exit status to exit with (`--print`, `--plan`, and under
/// `--init` the command's), and never returns after a successful exec.
pub fn run(cli: Cli) -> Result<i32, Error> {
    let plan = Plan::from_cli(cli, |name| std::env::var_os(name))?;
    let harness_env: Environment = std::env::vars_os().collect();
    if let Mode::Explain { command } = &plan.mode {
        explain::explain(&plan, command, &harness_env, &mut std::io::stdout().lock())?;
        return Ok(0);
    }
    let signals = Signals::install(plan.supervision.is_some(), plan.watch.is_some())
        .map_err(|err| Error::io("signalfd", "watching signals", err))?;
    let mut host = PhaseHost::new(&signals, plan.limits);
    phase::export::announce(
        &plan.export,
        &mut host,
        &harness_env,
        plan.supervision.is_some(),
    )?;
    let vars = discover_until_required(&plan, &mut host, &harness_env)?;
    host.check_stop()?;
    let mut env = vars.over(&harness_env);
    template::render_all(&plan.templates, &env)?.write()?;
    match &plan.mode {
        Mode::Print { format } => print_variables(&vars, *format),
        Mode::Exec { command } => {
            let Some(settings) = plan.supervision else {
                return Err(exec::exec(command, &env, &signals));
            };
            let watching = plan
                .watch
                .map(|watch| Watching::new(&plan, &harness_env, watch, &vars));
            let status = init::supervise(
                command,
                &mut env,
                &signals,
                settings,
                plan.limits,
                watching,
                host.rerun_requested(),
            );
            phase::export::teardown(&plan.export, &mut host, &env);
            status
        }
        Mode::Explain { .. } => unreachable!("--plan returned above"),
    }
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
