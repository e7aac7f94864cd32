//! `--watch` (docs/reference.md §7): re-running discovery under `--init` and deciding what changed.
//!
//! A re-run is the resolve step again ([`Resolver::resolve`]: the environment phase from the
//! environment the harness was started with, not the previous result, then the requirements,
//! then the templates, rendered, not yet written). Its variables are compared, as a map of names to values, with the last
//! result that was applied: a value changed, a name added or gone is a change; the order they
//! were set in is not. A template whose output differs from its DEST's content is a change
//! too; the supervisor writes the outputs when it applies the change (before the signal, or
//! between the old command's exit and the new one's start). A re-run that fails (a script, a
//! value, a requirement, a template) changes nothing and warns; the next trigger tries again.
//! The supervisor decides when a re-run starts (the timer, SIGHUP) and drives its scripts;
//! this module decides what a re-run does and what a change is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::error::Error;
use crate::logging::NOTICE;
use crate::phase::resolve::{Applied, Resolved, Resolver};
use crate::phase::template::Staged;
use crate::registry::reads::Reads;
use crate::runner::Host;
use crate::variables::{Environment, Variables};

/// What a change does to the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Stop it as on SIGTERM and start it again with the new environment.
    Restart,
    /// Send it this signal; it keeps its environment.
    Signal(Signal),
}

/// `--watch` and `--on-change`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RerunSettings {
    /// The timer; None for `--watch 0` (only SIGHUP and registry changes).
    pub every: Option<Duration>,
    pub on_change: OnChange,
    /// `--splay`: a change is acted on after a random time up to this.
    pub splay: Duration,
}

/// The state of `--watch` while the command runs.
pub struct Reruns<'a> {
    resolver: Resolver<'a>,
    settings: RerunSettings,
    /// The variables of the last result that was applied.
    applied: Applied,
    /// When the next re-run is due: the timer, or now (SIGHUP, a registry change).
    due: Due,
    /// The last run worked, at start or in a re-run (its reads are the ones to watch).
    last_ok: bool,
}

/// When the next re-run is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// At the timer's next tick; never with `--watch 0`.
    At(Option<Instant>),
    /// As soon as the loop can: SIGHUP or a registry change asked for it.
    Now,
}

/// A re-run's result that differs from the applied one.
pub struct Change {
    /// What changed: variables by name, in byte order, then templates by DEST.
    pub names: Vec<String>,
    /// The command's new environment.
    pub env: Environment,
    /// An environment directory set HOME in it (`--user` then leaves it as it is).
    pub home_from_directory: bool,
    /// The templates' changed outputs, written next to their DESTs already (so a DEST that
    /// cannot be written fails the re-run, not the restart), renamed over them when the
    /// change is applied.
    pub staged: Staged,
}

impl Change {
    /// The one line docs/reference.md §7 describes at the default log level: names, never values.
    pub fn announce(&self, action: &str) {
        log::warn!(target: NOTICE, "{} changed; {action}", self.names.join(", "));
    }

    /// Folds a later change into this one, before either was acted on (`--splay`): the later
    /// result is what is applied, under the names of both.
    pub fn fold(&mut self, later: Change) {
        let Change {
            names,
            env,
            home_from_directory,
            staged,
        } = later;
        self.names.extend(names);
        self.names.sort();
        self.names.dedup();
        self.env = env;
        self.home_from_directory = home_from_directory;
        // The earlier staged outputs are removed: the later ones were rendered against the
        // same DESTs, still unwritten.
        self.staged = staged;
    }

    /// Puts the templates' changed outputs in place. A failure (the directory changed since
    /// the re-run) is a warning: the change is applied all the same, and the next re-run
    /// finds the DEST still different.
    pub fn write_templates(&mut self) {
        if let Err(err) = self.staged.commit() {
            log::warn!("templates not written: {err}");
        }
    }
}

impl<'a> Reruns<'a> {
    /// Starts after the first resolve gave `applied` (the resolver still holds its
    /// reads); the first timed re-run is due one interval from now.
    pub fn new(resolver: Resolver<'a>, settings: RerunSettings, applied: &Variables) -> Reruns<'a> {
        Reruns {
            resolver,
            settings,
            applied: as_map(applied),
            due: Due::At(next_tick(settings.every)),
            last_ok: true,
        }
    }

    pub fn on_change(&self) -> OnChange {
        self.settings.on_change
    }

    pub fn splay(&self) -> Duration {
        self.settings.splay
    }

    /// SIGHUP or a registry change: a re-run as soon as the loop can.
    pub fn request(&mut self) {
        self.due = Due::Now;
    }

    /// When the timer asks for the next re-run (a requested one is due already).
    pub fn deadline(&self) -> Option<Instant> {
        match self.due {
            Due::At(at) => at,
            Due::Now => Some(Instant::now()),
        }
    }

    pub fn is_due(&self, now: Instant) -> bool {
        match self.due {
            Due::At(at) => at.is_some_and(|at| at <= now),
            Due::Now => true,
        }
    }

    /// Re-runs discovery with `host` driving the scripts; returns the change to apply, if
    /// any. The timer starts again from the end of the re-run, so re-runs never overlap.
    pub fn rerun(&mut self, host: &mut dyn Host) -> Option<Change> {
        log::debug!("re-running discovery");
        let result = self.resolver.resolve(host, Some(&self.applied));
        self.due = Due::At(next_tick(self.settings.every));
        self.last_ok = result.is_ok();
        let Resolved {
            vars,
            env,
            templates: rendered,
        } = match result {
            Ok(result) => result,
            // The command exited or a stop signal came: the supervisor is shutting down.
            Err(Error::Cancelled | Error::Interrupted { .. }) => return None,
            Err(err) => {
                log::warn!("re-run failed, nothing changed: {err}");
                return None;
            }
        };
        let now = as_map(&vars);
        let mut names = changed_names(&self.applied, &now);
        names.extend(
            rendered
                .changed()
                .iter()
                .map(|dest| dest.display().to_string()),
        );
        if names.is_empty() {
            log::debug!("re-run: no change");
            return None;
        }
        let staged = match rendered.stage() {
            Ok(staged) => staged,
            Err(err) => {
                log::warn!("re-run failed, nothing changed: {err}");
                return None;
            }
        };
        self.applied = now;
        Some(Change {
            names,
            home_from_directory: vars.get("HOME").is_some(),
            env,
            staged,
        })
    }

    /// What the last run's scripts read through `envharness kv` (docs/reference.md §11.5), the
    /// first resolve's included. None after a re-run that failed or was cancelled: it changes
    /// nothing, so what the last good run read stays watched (a script that was never reached read
    /// nothing).
    pub fn take_reads(&mut self) -> Option<Reads> {
        let reads = self.resolver.take_reads();
        self.last_ok.then_some(reads)
    }
}

/// The shortest pause between two timed re-runs: a `--watch` interval below it (`0.000001`)
/// would have the supervisor re-run discovery back to back, a CPU kept busy for nothing.
const SHORTEST_INTERVAL: Duration = Duration::from_millis(100);

/// When the timer next asks for a re-run, counted from now.
fn next_tick(every: Option<Duration>) -> Option<Instant> {
    every.map(|every| Instant::now() + every.max(SHORTEST_INTERVAL))
}

fn as_map(vars: &Variables) -> BTreeMap<String, Vec<u8>> {
    vars.iter()
        .map(|(name, value)| (name.to_owned(), value.to_vec()))
        .collect()
}

/// The names whose value differs, that appeared or that are gone, in byte order.
fn changed_names(
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let mut names: Vec<String> = after
        .iter()
        .filter(|(name, value)| before.get(*name) != Some(value))
        .map(|(name, _)| name.clone())
        .chain(
            before
                .keys()
                .filter(|name| !after.contains_key(*name))
                .cloned(),
        )
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn order_does_not_count_values_and_names_do() {
        let before = map(&[("A", "1"), ("B", "2")]);
        assert!(changed_names(&before, &map(&[("B", "2"), ("A", "1")])).is_empty());
        assert_eq!(
            changed_names(&before, &map(&[("A", "1"), ("B", "3"), ("C", "")])),
            ["B", "C"]
        );
        assert_eq!(changed_names(&before, &map(&[("B", "2")])), ["A"]);
    }
}
