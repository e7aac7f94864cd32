//! The export phase (SPEC.md 3.2): announce the service by running the export directory's
//! scripts, `bootstrap` first, then the others in byte order. `teardown` is not run here: it
//! belongs to `--init`'s shutdown. Each script gets the harness's environment, and its stdout
//! and stderr go to the harness's stderr, because stdout belongs to the command and `--print`.
//! The first failure (after retries) stops everything.

use crate::entries::{self, Entry, Kind};
use crate::error::Error;
use crate::plan::Directory;
use crate::runner::{self, Host, Job, Stdout};
use crate::variables::Environment;

pub const BOOTSTRAP: &str = "bootstrap";
pub const TEARDOWN: &str = "teardown";

/// Runs the export scripts. `supervised` says whether a `teardown` will run later (`--init`).
pub fn announce(
    dir: &Directory,
    host: &mut dyn Host,
    env: &Environment,
    supervised: bool,
) -> Result<(), Error> {
    if !entries::directory_exists(&dir.path)? {
        return missing(dir);
    }
    // teardown is not part of this phase: without --init it only draws a warning, and under
    // --init it is looked at, and any fault in it logged, when it runs.
    let (teardown, others): (Vec<Entry>, Vec<Entry>) = entries::export_entries(&dir.path)?
        .into_iter()
        .partition(|entry| entry.name == TEARDOWN);
    if let (Some(entry), false) = (teardown.first(), supervised) {
        log::warn!(
            "{}: teardown runs only under --init; ignored",
            entry.path.display()
        );
    }
    for entry in run_order(others)? {
        run(&entry, host, env)?;
    }
    Ok(())
}

/// Runs one export script with its output on the harness's stderr.
fn run(entry: &Entry, host: &mut dyn Host, env: &Environment) -> Result<(), Error> {
    let ran = runner::run_one(
        host,
        Job {
            path: entry.path.clone(),
            env: env.clone(),
            stdout: Stdout::ToStderr,
        },
    )?;
    log::info!(
        "{}: ran ({:.1} ms)",
        entry.path.display(),
        ran.elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Runs `teardown` after a supervised command has exited (SPEC.md 6), with the final
/// environment. It cannot change the exit status any more, so a failure is only logged.
pub fn teardown(dir: &Directory, host: &mut dyn Host, env: &Environment) {
    let result = match find_teardown(dir) {
        Ok(Some(entry)) if entry.kind == Kind::Run => run(&entry, host, env),
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
    if !entries::directory_exists(&dir.path)? {
        return Ok(None);
    }
    let Some(entry) = entries::export_entries(&dir.path)?
        .into_iter()
        .find(|entry| entry.name == TEARDOWN)
    else {
        return Ok(None);
    };
    match entry.error() {
        Some(err) => Err(err),
        None => Ok(Some(entry)),
    }
}

/// A missing directory is an error only when the user named it.
pub fn missing(dir: &Directory) -> Result<(), Error> {
    if dir.named {
        Err(Error::MissingDirectory {
            path: dir.path.clone(),
        })
    } else {
        log::debug!("{}: not there, skipped", dir.path.display());
        Ok(())
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
