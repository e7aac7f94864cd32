//! The environment phase (docs/reference.md §3.3): where a file becomes a variable.
//!
//! Directories are applied in order, and so are the entries of each: an executable `NAME` is
//! run and its stdout is the value; a `NAME` without exec bits is a literal; `PREFIX.env`
//! holds dotenv lines (in the file, or on the stdout of an executable one). A value loses one
//! trailing `\n` or `\r\n` and keeps every other byte. A later definition overrides an earlier
//! one. Sequentially, each script sees the harness's environment plus everything resolved
//! before it; with `--jobs` > 1 the scripts of a directory run at once and see what the
//! earlier directories resolved, and the results are still applied in entry order, so the
//! outcome is sequential mode's except for that visibility.
//!
//! With `--no-clobber`, a variable that was in the harness's environment keeps its value: its
//! `NAME` entry is neither run nor read, and its `.env` lines are ignored.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::rc::Rc;

use super::dotenv;
use super::entries::{self, Entry, Kind};
use super::Directory;
use crate::error::Error;
use crate::os::read_at_most;
use crate::runner::{self, Host, Job, Ran, Stdout};
use crate::variables::{strip_one_newline, EnvBlock, Environment, Variables};

/// The kernel's limit for one `NAME=VALUE` string, its terminating NUL included
/// (MAX_ARG_STRLEN, execve(2)).
pub const ENV_STRING_LIMIT: usize = 131_072;
/// How much a `PREFIX.env` script may print: the kernel's default room for all of argv and
/// the environment (a quarter of an 8 MiB stack).
pub const DOTENV_OUTPUT_LIMIT: usize = 2 * 1024 * 1024;

/// The environment phase's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentSettings {
    /// Applied in order; a later one overrides an earlier one's variables.
    pub directories: Vec<Directory>,
    /// Environment scripts run at once within a directory; 0 means one job per script.
    pub jobs: usize,
    /// `--no-clobber`.
    pub no_clobber: bool,
}

/// Runs every environment directory and returns the variables they set. Scripts get
/// `script_env` plus what was resolved before them.
pub fn discover(
    settings: &EnvironmentSettings,
    host: &mut dyn Host,
    script_env: &Environment,
) -> Result<Variables, Error> {
    let mut phase = Phase {
        host,
        script_env,
        jobs: settings.jobs,
        no_clobber: settings.no_clobber,
        vars: Variables::default(),
        env: None,
    };
    for dir in &settings.directories {
        phase.apply_directory(dir)?;
    }
    Ok(phase.vars)
}

/// One run of the phase: the variables so far, and how scripts run.
struct Phase<'a> {
    host: &'a mut dyn Host,
    /// The harness's environment as scripts get it (see [`discover`]).
    script_env: &'a Environment,
    jobs: usize,
    no_clobber: bool,
    vars: Variables,
    /// What the next script gets: `script_env` with `vars` laid over it, kept up to date as
    /// each is set rather than built again for every script (it was half of the harness's
    /// instructions for a directory of 100 scripts). Built for the first script: a run
    /// without scripts needs none.
    env: Option<Rc<EnvBlock>>,
}

impl Phase<'_> {
    fn apply_directory(&mut self, dir: &Directory) -> Result<(), Error> {
        if !entries::directory_exists(&dir.path)? {
            return dir.missing();
        }
        let listed = entries::environment_entries(&dir.path)?;
        if let Some(err) = listed.iter().find_map(Entry::error) {
            return Err(err);
        }
        let mut done = self.run_scripts_at_once(&listed)?;
        for entry in &listed {
            let produced = match done.remove(&entry.name) {
                Some(Done::Read(produced)) => produced,
                Some(Done::Ran(ran)) => self.values(entry, Some(ran))?,
                None => self.values(entry, None)?,
            };
            self.apply_entry(entry, produced)?;
        }
        Ok(())
    }

    /// With `--jobs` other than 1, runs the directory's scripts together, before applying.
    /// Each sees what it would see sequentially except other scripts' output: the variables
    /// set so far plus this directory's literals and static `.env` files that sort before it.
    /// Scripts after a static entry in error are not run (sequential mode stops there, and
    /// its bad value must not reach a script's environment; it is found again when the
    /// entries are applied in order). If a script failed, the lexically first failure is the
    /// phase's error.
    fn run_scripts_at_once(&mut self, listed: &[Entry]) -> Result<BTreeMap<OsString, Done>, Error> {
        let mut done = BTreeMap::new();
        if self.jobs == 1 {
            return Ok(done);
        }
        let mut visible = self.script_env_block();
        let mut scripts = Vec::new();
        let mut jobs = Vec::new();
        for entry in listed {
            if self.will_run(entry) {
                jobs.push(self.job(entry, Rc::clone(&visible)));
                scripts.push(entry.name.clone());
                continue;
            }
            let Ok(produced) = self.values(entry, None) else {
                break;
            };
            if produced
                .set
                .iter()
                .any(|(name, value)| check_env_string(name, value).is_err())
            {
                break;
            }
            for (name, value) in &produced.set {
                Rc::make_mut(&mut visible).set(name.as_bytes(), value);
            }
            done.insert(entry.name.clone(), Done::Read(produced));
        }
        for (name, outcome) in scripts
            .into_iter()
            .zip(runner::run_all(self.host, jobs, self.jobs)?)
        {
            if let Some(outcome) = outcome {
                done.insert(name, Done::Ran(outcome?));
            }
        }
        Ok(done)
    }

    fn will_run(&self, entry: &Entry) -> bool {
        match entry.kind {
            Kind::Run => !self.keeps_harness_value(entry.variable_name()),
            Kind::Dotenv { executable } => executable,
            _ => false,
        }
    }

    /// The environment a script started now gets.
    fn script_env_block(&mut self) -> Rc<EnvBlock> {
        let (vars, base) = (&self.vars, self.script_env);
        Rc::clone(
            self.env
                .get_or_insert_with(|| Rc::new(vars.over_block(base))),
        )
    }

    fn job(&self, entry: &Entry, env: Rc<EnvBlock>) -> Job {
        let limit = match entry.kind {
            Kind::Dotenv { .. } => DOTENV_OUTPUT_LIMIT,
            _ => ENV_STRING_LIMIT,
        };
        Job {
            path: entry.path.clone(),
            env,
            stdout: Stdout::Capture { limit },
        }
    }

    /// `--no-clobber`: a variable the harness was started with keeps its value.
    fn keeps_harness_value(&self, name: &str) -> bool {
        self.no_clobber && self.script_env.iter().any(|(n, _)| n == name)
    }

    fn apply_entry(&mut self, entry: &Entry, produced: Produced) -> Result<(), Error> {
        if let Kind::Skipped(reason) = entry.kind {
            log::warn!("{}: {reason}, skipped", entry.path.display());
        }
        let Produced { set, kept, how } = produced;
        let what = match entry.kind {
            Kind::Dotenv { .. } => "line ignored",
            _ => "skipped",
        };
        for name in kept {
            log::info!(
                "{}: {name} is already set, {what} (--no-clobber)",
                entry.path.display()
            );
        }
        if set.is_empty() {
            return Ok(());
        }
        let mut names = Vec::with_capacity(set.len());
        for (name, value) in set {
            check_env_string(&name, &value).map_err(|reason| Error::entry(&entry.path, reason))?;
            if let Some(env) = &mut self.env {
                Rc::make_mut(env).set(name.as_bytes(), &value);
            }
            self.vars.set(&name, value);
            names.push(name);
        }
        log::info!("{}: set {} ({how})", entry.path.display(), names.join(" "));
        Ok(())
    }

    /// The (NAME, VALUE) pairs an entry gives, in order, without those `--no-clobber`
    /// keeps. Values are not checked yet.
    fn values(&mut self, entry: &Entry, ran: Option<Ran>) -> Result<Produced, Error> {
        match entry.kind {
            Kind::Run | Kind::Literal => {
                let name = entry.variable_name().to_owned();
                if self.keeps_harness_value(&name) {
                    return Ok(Produced::kept(name));
                }
                let (raw, how) = self.produce(entry, ran)?;
                let set = vec![(name, strip_one_newline(raw))];
                Ok(Produced {
                    set,
                    kept: Vec::new(),
                    how,
                })
            }
            Kind::Dotenv { .. } => {
                let (text, how) = self.produce(entry, ran)?;
                let pairs = dotenv::parse(&text)
                    .map_err(|err| Error::entry(&entry.path, err.to_string()))?;
                let (kept, set): (Vec<_>, Vec<_>) = pairs
                    .into_iter()
                    .partition(|(name, _)| self.keeps_harness_value(name));
                let kept = kept.into_iter().map(|(name, _)| name).collect();
                Ok(Produced { set, kept, how })
            }
            Kind::Ignored(_) | Kind::Skipped(_) | Kind::Invalid(_) => Ok(Produced::default()),
        }
    }

    /// The entry's bytes: a script's stdout (run now, unless it already ran) or the file's
    /// content; and how they were produced, for the log.
    fn produce(&mut self, entry: &Entry, ran: Option<Ran>) -> Result<(Vec<u8>, String), Error> {
        let executable = matches!(entry.kind, Kind::Run | Kind::Dotenv { executable: true });
        if !executable {
            return Ok((read_entry(entry)?, "read".into()));
        }
        let ran = match ran {
            Some(ran) => ran,
            None => {
                let env = self.script_env_block();
                let job = self.job(entry, env);
                runner::run_one(self.host, job)?
            }
        };
        let how = format!("ran in {:.1} ms", ran.elapsed.as_secs_f64() * 1000.0);
        Ok((ran.output, how))
    }
}

/// What the `--jobs` pass already has for an entry: a script's run, or a literal's or static
/// `.env` file's values.
enum Done {
    Ran(Ran),
    Read(Produced),
}

/// What an entry gives: the pairs to set, the names `--no-clobber` kept, how (for the log).
#[derive(Default)]
struct Produced {
    set: Vec<(String, Vec<u8>)>,
    kept: Vec<String>,
    how: String,
}

impl Produced {
    fn kept(name: String) -> Produced {
        Produced {
            kept: vec![name],
            ..Produced::default()
        }
    }
}

/// A literal or static `.env` file's content; one too large to ever fit in the environment
/// is refused by its size, without reading it into memory.
fn read_entry(entry: &Entry) -> Result<Vec<u8>, Error> {
    let read_error = |err| Error::io(&entry.path, "reading the file", err);
    let (limit, refused) = match entry.kind {
        Kind::Dotenv { .. } => (
            DOTENV_OUTPUT_LIMIT,
            format!("over the {DOTENV_OUTPUT_LIMIT}-byte limit for a .env file"),
        ),
        // Room for the one trailing newline (or \r\n) that is dropped.
        _ => (
            ENV_STRING_LIMIT + 2,
            format!("more than one environment string can hold ({ENV_STRING_LIMIT} bytes)"),
        ),
    };
    let file = std::fs::File::open(&entry.path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    let too_large = || Error::entry(&entry.path, format!("the file is {size} bytes, {refused}"));
    if size > limit as u64 {
        return Err(too_large());
    }
    read_at_most(file, limit, size)
        .map_err(read_error)?
        .ok_or_else(too_large)
}

/// A value the kernel would refuse in an environment string is an error, with its size.
pub fn check_env_string(name: &str, value: &[u8]) -> Result<(), String> {
    if let Some(at) = value.iter().position(|b| *b == 0) {
        return Err(format!(
            "{name}: the value contains a NUL byte (at byte {at} of {}); an environment variable cannot hold one",
            value.len()
        ));
    }
    let string_len = name.len() + 1 + value.len() + 1;
    if string_len > ENV_STRING_LIMIT {
        return Err(format!(
            "{name}: NAME=VALUE is {} bytes; with its terminating NUL that is over the kernel's limit of {ENV_STRING_LIMIT} bytes for one environment string",
            string_len - 1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_name_equals_value_and_the_nul() {
        let fits = vec![b'v'; ENV_STRING_LIMIT - 3];
        assert!(check_env_string("A", &fits).is_ok());
        let over = vec![b'v'; ENV_STRING_LIMIT - 2];
        let err = check_env_string("A", &over).unwrap_err();
        assert!(err.contains("131072 bytes"), "{err}");
        assert!(check_env_string("A", b"a\0b").unwrap_err().contains("NUL"));
    }
}
