//! envharness: the entrypoint a container (or a shebang script) runs first.
//!
//! # Theory of operation
//! [`run`] takes the parsed command line through these steps, each one call:
//! 1. [`plan`]: decide everything the options and `ENVHARNESS_*` variables imply;
//! 2. [`signals`]: block SIGCHLD and the stop signals and read them from a signalfd, so no
//!    signal is lost and the script runner can wait on everything at once;
//! 3. [`phase::export`]: announce the service by running the export scripts;
//! 4. [`phase::environment`]: turn each environment directory's entries into variables;
//! 5. [`exec`] the command with the final environment, or [`print`] the variables; under
//!    `--init`, [`supervise`] it instead and then run the export directory's `teardown`.
//!
//! `--plan` stops after step 1 and [`explain`]s instead. Every failure is an [`Error`] that
//! knows its exit status; only `main` exits.

pub mod arena;
pub mod cli;
pub mod dotenv;
pub mod entries;
pub mod error;
pub mod exec;
pub mod explain;
pub mod logging;
pub mod phase;
pub mod plan;
pub mod print;
pub mod procfs;
pub mod script;
pub mod shebang;
pub mod signals;
pub mod supervise;
pub mod variables;

use std::io::Write;

pub use error::Error;

use cli::Cli;
use plan::{Mode, Plan};
use script::Runner;
use signals::Watcher;
use variables::Environment;

/// Runs envharness; returns the exit status to exit with (`--print`, `--plan`, and under
/// `--init` the command's), and never returns after a successful exec.
pub fn run(cli: Cli) -> Result<i32, Error> {
    let plan = Plan::from_cli(cli, |name| std::env::var_os(name))?;
    let harness_env: Environment = std::env::vars_os().collect();
    if let Mode::Explain { command } = &plan.mode {
        explain::explain(&plan, command, &harness_env, &mut std::io::stdout().lock())?;
        return Ok(0);
    }
    let watcher = Watcher::install(plan.supervision.is_some())
        .map_err(|err| Error::io("signalfd", "watching signals", err))?;
    let runner = Runner {
        watcher: &watcher,
        limits: plan.limits,
    };
    phase::export::announce(
        &plan.export,
        &runner,
        &harness_env,
        plan.supervision.is_some(),
    )?;
    let vars = phase::environment::discover(&plan, &runner, &harness_env)?;
    stop_if_signalled(&watcher)?;
    match plan.mode {
        Mode::Print { format } => print_variables(&vars, format),
        Mode::Exec { command } => {
            let env = vars.over(&harness_env);
            let Some(settings) = plan.supervision else {
                return Err(exec::exec(&command, &env, &watcher));
            };
            let status = supervise::supervise(&command, &env, &watcher, settings);
            phase::export::teardown(&plan.export, &runner, &env);
            status
        }
        Mode::Explain { .. } => unreachable!("--plan returned above"),
    }
}

/// A stop signal that came after the last script still means "stop": nothing is started.
fn stop_if_signalled(watcher: &Watcher) -> Result<(), Error> {
    match watcher.pending_stop() {
        Ok(None) => Ok(()),
        Ok(Some(signal)) => Err(Error::Interrupted { signal }),
        Err(err) => Err(Error::io("signalfd", "reading signals", err)),
    }
}

fn print_variables(vars: &variables::Variables, format: cli::Format) -> Result<i32, Error> {
    std::io::stdout()
        .lock()
        .write_all(&print::render(vars, format))
        .map_err(|err| Error::io("stdout", "printing the variables", err))?;
    Ok(0)
}
