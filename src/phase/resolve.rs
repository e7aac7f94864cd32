//! The resolve step: the environment directories become the final environment. In order:
//! 1. the environment phase discovers the variables ([`environment::discover`]);
//! 2. the requirements are checked against the final environment ([`require::check`]), then
//!    the `--wait-for` addresses are connected to (off the loop's thread);
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
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::environment::{self, EnvironmentSettings};
use super::require::{self, Requirement, WaitFor};
use super::template::{self, KvReads, KvSource, Owner, Rendered, SharedReads, Template};
use crate::duration::seconds;
use crate::error::Error;
use crate::registry::reads::{ReadLog, Reads};
use crate::registry::{Access, Lookup};
use crate::runner::host::PhaseHost;
use crate::runner::{task, Host};
use crate::variables::{Environment, Variables};

/// What the resolve step reads: the environment directories, the requirements, the templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub environment: EnvironmentSettings,
    pub requirements: Vec<Requirement>,
    /// `--wait-for`: addresses that must accept a connection.
    pub wait_for: Vec<WaitFor>,
    /// `-t SRC:DEST`, in the order given.
    pub templates: Vec<Template>,
    /// Who the written DESTs belong to (`--user`, when the harness runs as root).
    pub owner: Option<Owner>,
    /// The registry's URL (`--kv`), which templates may read.
    pub kv: Option<String>,
}

/// The variables of the result last applied (at the start, or by a re-run's change), by name.
pub type Applied = BTreeMap<String, Vec<u8>>;

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
    /// How the templates reach the registry (`discovery.kv`), when there is one.
    access: Option<Access>,
    /// The store the templates read, kept between renders once a render opened it.
    kv: Option<KvSource>,
    /// What the templates of the last render read of the registry.
    template_reads: Vec<(Lookup, String)>,
}

impl<'a> Resolver<'a> {
    /// With `reads`, scripts record what they read through `envharness kv` there; with
    /// `access`, templates read the registry.
    pub fn new(
        discovery: &'a Discovery,
        harness_env: &'a Environment,
        reads: Option<ReadLog>,
        access: Option<Access>,
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
            access,
            kv: None,
            template_reads: Vec::new(),
        }
    }

    /// Discovers, checks the requirements, overlays and renders, with `host` driving the
    /// scripts. The first failure is the error: a script, a value, an unmet requirement, an
    /// address that does not answer, a template. `applied` is the result a re-run is compared
    /// with (None at the start).
    pub fn resolve(
        &mut self,
        host: &mut dyn Host,
        applied: Option<&Applied>,
    ) -> Result<Resolved, Error> {
        let vars = environment::discover(&self.discovery.environment, host, &self.script_env)?;
        require::check(&self.discovery.requirements, &vars, self.harness_env)?;
        self.wait_for(host, &vars, applied)?;
        let env = vars.over(self.harness_env);
        let templates = self.render(host, &env)?;
        Ok(Resolved {
            vars,
            env,
            templates,
        })
    }

    /// Connects to each `--wait-for` address, off the loop's thread (a name lookup can take
    /// seconds). A re-run tries again only an address whose variable changed since the result
    /// last applied: a database should not see a probe every `--watch` interval.
    fn wait_for(
        &self,
        host: &mut dyn Host,
        vars: &Variables,
        applied: Option<&Applied>,
    ) -> Result<(), Error> {
        let targets = require::targets(&self.discovery.wait_for, vars, self.harness_env)?;
        let changed = |name: &Option<String>| match (applied, name) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(applied), Some(name)) => applied.get(name).map(Vec::as_slice) != vars.get(name),
        };
        // At start, an address that accepts at once needs no task; a re-run's probes all go
        // off the supervisor's thread.
        let targets: Vec<_> = targets
            .into_iter()
            .filter(|(name, _)| changed(name))
            .filter(|(_, target)| applied.is_some() || !require::accepts_at_once(target))
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        task::run(host, "wait-for", move || require::probe_all(&targets))?
    }

    /// Renders the templates with `env`, off the loop's thread: a template's work is bounded
    /// (its fuel), but even a slow render must not hold up a signal, a reap or a renewal.
    fn render(&mut self, host: &mut dyn Host, env: &Environment) -> Result<Rendered, Error> {
        self.template_reads.clear();
        if self.discovery.templates.is_empty() {
            return Ok(Rendered::default());
        }
        let source = self.kv.take().or_else(|| {
            let url = self.discovery.kv.clone()?;
            Some(KvSource::new(url, self.access.clone()?))
        });
        let reads: SharedReads = Arc::new(Mutex::new(KvReads::new(source)));
        let templates = self.discovery.templates.clone();
        let (env, owner, shared) = (env.clone(), self.discovery.owner, reads.clone());
        let rendered = task::run(host, "templates", move || {
            template::render_all(&templates, &env, owner, &shared)
        })?;
        let done = std::mem::replace(
            &mut *reads.lock().unwrap_or_else(PoisonError::into_inner),
            KvReads::new(None),
        );
        let (source, template_reads) = done.finish();
        self.kv = source;
        self.template_reads = template_reads;
        rendered
    }

    /// The start's resolve: with `--wait`, while a requirement is unmet the step is taken
    /// again every `--retry-interval` until the wait is over (a stop signal ends the wait).
    pub fn resolve_waiting(
        &mut self,
        host: &mut PhaseHost,
        wait: Option<Duration>,
    ) -> Result<Resolved, Error> {
        let give_up = wait.map(|wait| Instant::now() + wait);
        loop {
            let unmet = match self.resolve(host, None) {
                Err(
                    unmet @ (Error::Unmet { .. }
                    | Error::Unreachable { .. }
                    | Error::KeyAbsent { .. }),
                ) => unmet,
                resolved => return resolved,
            };
            let now = Instant::now();
            let Some(give_up) = give_up.filter(|at| *at > now) else {
                return Err(unmet);
            };
            let next = (now + host.limits().retry_interval).min(give_up);
            log::info!(
                "{unmet}; discovering again in {}s (--wait)",
                seconds(next - now)
            );
            host.sleep_until(next)?;
        }
    }

    /// What the last run read of the registry: its scripts through `envharness kv` (nothing
    /// without a read log), and its templates.
    pub fn take_reads(&mut self) -> Reads {
        let scripts = self.reads.as_mut().map(ReadLog::take).unwrap_or_default();
        let templates = std::mem::take(&mut self.template_reads);
        match scripts {
            Reads::Everything => Reads::Everything,
            Reads::These(mut reads) => {
                reads.extend(templates);
                reads.sort();
                reads.dedup();
                Reads::These(reads)
            }
        }
    }
}
