//! `--plan` (docs/reference.md §5.2): run nothing; for the export directory and then each
//! environment directory, show every entry and what it would do, then the command with its path
//! resolved in the current PATH (scripts are not run, so they cannot change it). The requirements
//! are listed too (their regexes were checked by the plan; values cannot be). Every entry is listed
//! even after an error; the first error decides the exit status (125) and the stderr line.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

use crate::config::Plan;
use crate::duration::seconds;
use crate::error::Error;
use crate::exec::resolve;
use crate::logging::one_line;
use crate::phase::entries::{self, Entry, Kind};
use crate::phase::export::{publish_key, publishes, BOOTSTRAP, HEALTH, PRESTOP, TEARDOWN};
use crate::phase::template;
use crate::phase::Directory;
use crate::supervise::Supervision;
use crate::variables::Environment;

/// Writes the plan to `out`; the first error found, if any, is returned after everything was
/// written.
pub fn explain(
    plan: &Plan,
    command: &[OsString],
    harness_env: &Environment,
    out: &mut impl Write,
) -> Result<(), Error> {
    let mut report = Report {
        out,
        first_error: None,
    };
    let instance = plan
        .registry
        .as_ref()
        .map(|registry| registry.instance.as_str());
    report.directory("export", &plan.export, entries::export_entries, |entry| {
        export_action(entry, plan.supervision.is_some(), instance)
    })?;
    if let Some(root) = &plan.environment_root {
        report.line(root.describe())?;
        if let Some(err) = root.unmatched() {
            report.error(err);
        }
    }
    let discovery = &plan.discovery;
    for dir in &discovery.environment.directories {
        report.directory("environment", dir, entries::environment_entries, |entry| {
            Ok(environment_action(
                entry,
                discovery.environment.no_clobber,
                harness_env,
            ))
        })?;
    }
    for requirement in &discovery.requirements {
        report.line(requirement.describe())?;
    }
    for address in &discovery.wait_for {
        report.line(address.describe())?;
    }
    for (line, err) in template::describe(&discovery.templates) {
        report.line(line)?;
        if let Some(err) = err {
            report.error(err);
        }
    }
    if let Some(user) = &plan.user {
        report.line(user.describe())?;
    }
    if let Some(settings) = &plan.supervision {
        for line in stopping(settings) {
            report.line(line)?;
        }
    }
    report.command(command, harness_env)?;
    match report.first_error {
        Some(err) => Err(Error::InPlan(Box::new(err))),
        None => Ok(()),
    }
}

struct Report<'o, W: Write> {
    out: &'o mut W,
    first_error: Option<Error>,
}

impl<W: Write> Report<'_, W> {
    fn line(&mut self, text: String) -> Result<(), Error> {
        writeln!(self.out, "{}", one_line(&text))
            .map_err(|err| Error::io("stdout", "writing the plan", err))
    }

    fn error(&mut self, err: Error) {
        self.first_error.get_or_insert(err);
    }

    fn directory(
        &mut self,
        role: &str,
        dir: &Directory,
        list: fn(&Path) -> Result<Vec<Entry>, Error>,
        action: impl Fn(&Entry) -> Result<String, Error>,
    ) -> Result<(), Error> {
        let path = dir.path.display();
        let listed = match entries::directory_exists(&dir.path) {
            Ok(true) => list(&dir.path),
            Ok(false) if dir.named => {
                self.error(Error::MissingDirectory {
                    path: dir.path.clone(),
                    variable: dir.variable,
                });
                return self.line(format!("{role} {path}: error (no such directory)"));
            }
            Ok(false) => return self.line(format!("{role} {path}: not there, skipped")),
            Err(err) => Err(err),
        };
        let listed = match listed {
            Ok(listed) => listed,
            Err(err) => {
                let line = format!("{role} {path}: error ({err})");
                self.error(err);
                return self.line(line);
            }
        };
        self.line(format!("{role} {path}:"))?;
        let width = listed
            .iter()
            .map(|e| e.name.to_string_lossy().len())
            .max()
            .unwrap_or(0);
        for entry in &listed {
            if let Some(err) = entry.error() {
                self.error(err);
            }
            let name = entry.name.to_string_lossy();
            let what = match action(entry) {
                Ok(what) => what,
                Err(err) => {
                    let what = match &err {
                        Error::Entry { reason, .. } => format!("error ({reason})"),
                        other => format!("error ({other})"),
                    };
                    self.error(err);
                    what
                }
            };
            self.line(format!("  {name:width$}  {what}"))?;
        }
        Ok(())
    }

    fn command(&mut self, command: &[OsString], env: &Environment) -> Result<(), Error> {
        let Some(program) = command.first() else {
            return self.line("command: none".into());
        };
        let args = shell_words::join(command.iter().map(|arg| arg.to_string_lossy()));
        match resolve(program, env) {
            Some(path) => self.line(format!("command: {args} ({})", path.display())),
            None => {
                self.error(Error::CommandNotFound {
                    program: program.to_string_lossy().into_owned(),
                });
                self.line(format!("command: {args}: error (command not found)"))
            }
        }
    }
}

/// How a stop goes under `--init`, when it goes otherwise than by default.
fn stopping(settings: &Supervision) -> Vec<String> {
    let mut lines = Vec::new();
    if !settings.drain.is_zero() {
        lines.push(format!(
            "drain {}s after a stop signal before forwarding it",
            seconds(settings.drain)
        ));
    }
    for (from, to) in &settings.rewrites.0 {
        lines.push(match to {
            Some(to) => format!("rewrite {} to {}", from.as_str(), to.as_str()),
            None => format!("rewrite {} to nothing (dropped)", from.as_str()),
        });
    }
    for (from, to) in &settings.exit_map.0 {
        lines.push(format!("remap exit status {from} to {to}"));
    }
    lines
}

fn export_action(entry: &Entry, supervised: bool, instance: Option<&str>) -> Result<String, Error> {
    Ok(match &entry.kind {
        Kind::Run if entry.name == BOOTSTRAP => "run (first)".into(),
        Kind::Run if entry.name == TEARDOWN && supervised => "run at teardown (--init)".into(),
        Kind::Run if entry.name == TEARDOWN => "ignored (teardown runs only under --init)".into(),
        Kind::Run if entry.name == HEALTH && supervised => {
            "run as the health check (--init)".into()
        }
        Kind::Run if entry.name == HEALTH => "ignored (health runs only under --init)".into(),
        Kind::Run if entry.name == PRESTOP && supervised => {
            "run on a stop signal, before it is forwarded (--init)".into()
        }
        Kind::Run if entry.name == PRESTOP => "ignored (prestop runs only under --init)".into(),
        Kind::Run => match instance.filter(|_| publishes(entry)) {
            Some(instance) => format!("run; publish {}", publish_key(entry, instance)?),
            None => "run".into(),
        },
        other => describe(other),
    })
}

fn environment_action(entry: &Entry, no_clobber: bool, harness_env: &Environment) -> String {
    let kept = |entry: &Entry| {
        no_clobber
            && harness_env
                .iter()
                .any(|(name, _)| name == entry.variable_name())
    };
    match &entry.kind {
        Kind::Run | Kind::Literal if kept(entry) => "ignored (already set; --no-clobber)".into(),
        other => describe(other),
    }
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Run => "run".into(),
        Kind::Literal => "literal".into(),
        Kind::Dotenv { executable: true } => "dotenv (run)".into(),
        Kind::Dotenv { executable: false } => "dotenv".into(),
        Kind::Ignored(reason) | Kind::Skipped(reason) => format!("ignored ({reason})"),
        Kind::Invalid(reason) => format!("error ({reason})"),
    }
}
