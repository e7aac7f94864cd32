//! The export phase (docs/reference.md §3.2): announce the service by running the export
//! directory's scripts, `bootstrap` first, then the others in byte order. `teardown` and `health`
//! are not run here: they belong to `--init` (its shutdown, and the health checks while the command
//! runs). Each script gets the harness's environment; its stderr goes to the harness's stderr, and
//! so does its stdout, because stdout belongs to the command and `--print`, unless a registry is
//! configured: then a script other than `bootstrap` whose stdout is not empty publishes it at
//! `NAME/INSTANCE` (docs/reference.md §11.3), so its stdout is captured (the value rules of §3.3
//! apply, at most 131071 bytes). The values are published later, when the command starts. The first
//! failure (after retries) stops everything.

use std::rc::Rc;

use super::entries::{self, Entry, Kind};
use super::Directory;
use crate::error::Error;
use crate::registry::{Key, VALUE_LIMIT};
use crate::runner::{self, Host, Job, Stdout};
use crate::variables::strip_one_newline;
use crate::variables::Environment;

pub const BOOTSTRAP: &str = "bootstrap";
pub const TEARDOWN: &str = "teardown";
pub const HEALTH: &str = "health";
pub const PRESTOP: &str = "prestop";

/// The entries the export phase does not run: `--init` runs them later.
const LATER: [&str; 3] = [TEARDOWN, HEALTH, PRESTOP];

/// What the export phase announced: the keys to publish and their values.
pub type Announced = Vec<(Key, Vec<u8>)>;

/// Runs the export scripts. `warn_unrun`: `teardown` and `health`, which only `--init` runs
/// (later), draw a warning (exec mode; not under `--init`, nor for `--print`, a look at the
/// variables). With `instance` (a registry is configured) the scripts' output is captured and
/// returned as the keys to publish.
pub fn announce(
    dir: &Directory,
    host: &mut dyn Host,
    env: &Environment,
    warn_unrun: bool,
    instance: Option<&str>,
) -> Result<Announced, Error> {
    if !entries::directory_exists(&dir.path)? {
        dir.missing()?;
        return Ok(Vec::new());
    }
    // teardown and health are not part of this phase: without --init they only draw a
    // warning, and under --init they are looked at, and any fault in them logged, when they run.
    let (later, others): (Vec<Entry>, Vec<Entry>) = entries::export_entries(&dir.path)?
        .into_iter()
        .partition(|entry| LATER.iter().any(|later| entry.name == *later));
    if warn_unrun {
        for entry in &later {
            log::warn!(
                "{}: {} runs only under --init; ignored",
                entry.path.display(),
                entry.name.to_string_lossy()
            );
        }
    }
    let mut announced = Vec::new();
    for entry in run_order(others)? {
        let publishes = instance.filter(|_| entry.name != BOOTSTRAP);
        if let Some(value) = run(&entry, host, env, publishes.is_some())? {
            let instance = publishes.expect("only publishing scripts capture their output");
            announced.push((publish_key(&entry, instance)?, value));
        }
    }
    Ok(announced)
}

/// Whether the export entry would publish (for `--plan`): a script other than `bootstrap`,
/// `teardown` and `health`.
pub fn publishes(entry: &Entry) -> bool {
    entry.kind == Kind::Run
        && entry.name != BOOTSTRAP
        && !LATER.iter().any(|later| entry.name == *later)
}

/// `NAME/INSTANCE`; a NAME that cannot be a key segment is the script's error.
pub fn publish_key(entry: &Entry, instance: &str) -> Result<Key, Error> {
    let name = entry.name.to_string_lossy();
    if name.contains('/') {
        return Err(Error::entry(&entry.path, "not a key segment"));
    }
    Key::parse(&format!("{name}/{instance}")).map_err(|err| {
        Error::entry(
            &entry.path,
            format!("its name cannot be a registry key segment ({err})"),
        )
    })
}

/// Runs one export script; with `capture`, returns its stdout minus one trailing newline
/// when that is not empty, else its output goes to the harness's stderr.
fn run(
    entry: &Entry,
    host: &mut dyn Host,
    env: &Environment,
    capture: bool,
) -> Result<Option<Vec<u8>>, Error> {
    let stdout = if capture {
        // Room for the one trailing \n or \r\n that is dropped.
        Stdout::Capture {
            limit: VALUE_LIMIT + 2,
        }
    } else {
        Stdout::ToStderr
    };
    let ran = runner::run_one(
        host,
        Job {
            path: entry.path.clone(),
            env: Rc::new(env.as_slice().into()),
            stdout,
        },
    )?;
    log::info!(
        "{}: ran ({:.1} ms)",
        entry.path.display(),
        ran.elapsed.as_secs_f64() * 1000.0
    );
    if !capture {
        return Ok(None);
    }
    let value = strip_one_newline(ran.output);
    if let Some(at) = value.iter().position(|b| *b == 0) {
        return Err(Error::entry(
            &entry.path,
            format!("its output contains a NUL byte (at byte {at} of {}); a published value cannot hold one", value.len()),
        ));
    }
    if value.len() > VALUE_LIMIT {
        return Err(Error::entry(
            &entry.path,
            format!(
                "its output is {} bytes, over the registry's limit of {VALUE_LIMIT} for a value",
                value.len()
            ),
        ));
    }
    Ok((!value.is_empty()).then_some(value))
}

/// Runs `teardown` after a supervised command has exited (docs/reference.md §6), with the final
/// environment. It cannot change the exit status any more, so a failure is only logged.
pub fn teardown(dir: &Directory, host: &mut dyn Host, env: &Environment) {
    let result = match find_teardown(dir) {
        Ok(Some(entry)) if entry.kind == Kind::Run => run(&entry, host, env, false).map(drop),
        Ok(Some(entry)) => {
            log::warn!("{}: not executable, not run", entry.path.display());
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        log::error!("teardown failed (the exit status stays the command's): {err}");
    }
}

/// The export directory's `teardown` as it is now (the command may have changed it), or None;
/// an entry that cannot be run as a script is an error.
fn find_teardown(dir: &Directory) -> Result<Option<Entry>, Error> {
    find(dir, TEARDOWN)
}

/// The export directory's `health`, when it is an executable (docs/reference.md §11.4); one that is
/// there but cannot be run is logged and ignored.
pub fn find_health(dir: &Directory) -> Option<Entry> {
    find_to_run(dir, HEALTH)
}

/// The export directory's `prestop`, run on a stop signal under `--init` (docs/reference.md
/// §13.3), as it is now; one that cannot be run is logged and ignored.
pub fn find_prestop(dir: &Directory) -> Option<Entry> {
    find_to_run(dir, PRESTOP)
}

fn find_to_run(dir: &Directory, name: &str) -> Option<Entry> {
    match find(dir, name) {
        Ok(Some(entry)) if entry.kind == Kind::Run => Some(entry),
        Ok(Some(entry)) => {
            log::warn!("{}: not executable, not run", entry.path.display());
            None
        }
        Ok(None) => None,
        Err(err) => {
            log::warn!("{name} is not run: {err}");
            None
        }
    }
}

fn find(dir: &Directory, name: &str) -> Result<Option<Entry>, Error> {
    if !entries::directory_exists(&dir.path)? {
        return Ok(None);
    }
    let Some(entry) = entries::export_entry(&dir.path, name)? else {
        return Ok(None);
    };
    match entry.error() {
        Some(err) => Err(err),
        None => Ok(Some(entry)),
    }
}

/// The entries to run, `bootstrap` first; the first invalid entry is an error.
pub fn run_order(listed: Vec<Entry>) -> Result<Vec<Entry>, Error> {
    let mut runnable = Vec::new();
    for entry in listed {
        match &entry.kind {
            Kind::Invalid(_) => return Err(entry.error().expect("invalid entries have an error")),
            Kind::Skipped(reason) => log::warn!("{}: {reason}, skipped", entry.path.display()),
            Kind::Run => runnable.push(entry),
            _ => {}
        }
    }
    if let Some(at) = runnable.iter().position(|e| e.name == BOOTSTRAP) {
        let bootstrap = runnable.remove(at);
        runnable.insert(0, bootstrap);
    }
    Ok(runnable)
}
