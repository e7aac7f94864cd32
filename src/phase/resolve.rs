//! The resolve step: the environment directories become the final environment. In order:
//! 1. the environment phase discovers the variables ([`environment::discover`]);
//! 2. the requirements are checked against the final environment ([`require::check`]);
//! 3. the variables are laid over the harness's environment;
//! 4. the templates are rendered with it, on a thread of their own while the loop serves
//!    signals (in memory; written by the caller, who decides when).
//!
//! The start and every `--watch` re-run take this same step, through one [`Resolver`]: what
//! differs is only who drives the scripts (the phases' loop, or the supervisor's) and that the
//! start may wait for its requirements (`--wait`).
//!
//! Scripts get the harness's environment plus, under `--watch` with a registry, where to record
//! what they read through `envharness kv` (`ENVHARNESS_KV_READS`); the requirements and the
//! command see the harness's environment without it.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use super::environment::{self, EnvironmentSettings};
use super::require::{self, Requirement};
use super::template::{self, Rendered, Template};
use crate::error::Error;
use crate::registry::reads::{ReadLog, Reads};
use crate::runner::host::PhaseHost;
use crate::runner::{task, Host};
use crate::variables::{Environment, Variables};

/// What the resolve step reads: the environment directories, the requirements, the templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub environment: EnvironmentSettings,
    pub requirements: Vec<Requirement>,
    /// `-t SRC:DEST`, in the order given.
    pub templates: Vec<Template>,
}

/// One resolve's result.
#[derive(Debug)]
pub struct Resolved {
    /// What the environment phase set, in the order first set (what `--print` shows).
    pub vars: Variables,
    /// The final environment: the harness's, with `vars` laid over it.
    pub env: Environment,
    /// The templates rendered with `env`, not written yet.
    pub templates: Rendered,
}

/// Takes the resolve step, at the start and for every re-run, with the same inputs.
pub struct Resolver<'a> {
    discovery: &'a Discovery,
    harness_env: &'a Environment,
    /// What the scripts get: `harness_env`, plus where to record registry reads.
    script_env: Cow<'a, Environment>,
    reads: Option<ReadLog>,
}

impl<'a> Resolver<'a> {
    /// With `reads`, scripts record what they read through `envharness kv` there.
    pub fn new(
        discovery: &'a Discovery,
        harness_env: &'a Environment,
        reads: Option<ReadLog>,
    ) -> Resolver<'a> {
        let script_env = match &reads {
            Some(log) => Cow::Owned([harness_env.clone(), vec![log.variable()]].concat()),
            None => Cow::Borrowed(harness_env),
        };
        Resolver {
            discovery,
            harness_env,
            script_env,
            reads,
        }
    }

    /// Discovers, checks the requirements, overlays and renders, with `host` driving the
    /// scripts. The first failure is the error: a script, a value, an unmet requirement, a
    /// template.
    pub fn resolve(&self, host: &mut dyn Host) -> Result<Resolved, Error> {
        let vars = environment::discover(&self.discovery.environment, host, &self.script_env)?;
        require::check(&self.discovery.requirements, &vars, self.harness_env)?;
        let env = vars.over(self.harness_env);
        let templates = self.render(host, &env)?;
        Ok(Resolved {
            vars,
            env,
            templates,
        })
    }

    /// Renders the templates with `env`, off the loop's thread: a template's work is bounded
    /// (its fuel), but even a slow render must not hold up a signal, a reap or a renewal.
    fn render(&self, host: &mut dyn Host, env: &Environment) -> Result<Rendered, Error> {
        if self.discovery.templates.is_empty() {
            return Ok(Rendered::default());
        }
        let templates = self.discovery.templates.clone();
        let env = env.clone();
        task::run(host, "templates", move || {
            template::render_all(&templates, &env)
        })?
    }

    /// The start's resolve: with `--wait`, while a requirement is unmet the step is taken
    /// again every `--retry-interval` until the wait is over (a stop signal ends the wait).
    pub fn resolve_waiting(
        &self,
        host: &mut PhaseHost,
        wait: Option<Duration>,
    ) -> Result<Resolved, Error> {
        let give_up = wait.map(|wait| Instant::now() + wait);
        loop {
            let unmet = match self.resolve(host) {
                Err(unmet @ Error::Unmet { .. }) => unmet,
                resolved => return resolved,
            };
            let now = Instant::now();
            let Some(give_up) = give_up.filter(|at| *at > now) else {
                return Err(unmet);
            };
            let next = (now + host.limits().retry_interval).min(give_up);
            log::info!(
                "{unmet}; discovering again in {:.1}s (--wait)",
                (next - now).as_secs_f64()
            );
            host.sleep_until(next)?;
        }
    }

    /// What the scripts read through `envharness kv` since the last call (nothing without a
    /// read log).
    pub fn take_reads(&mut self) -> Reads {
        self.reads.as_mut().map(ReadLog::take).unwrap_or_default()
    }
}
