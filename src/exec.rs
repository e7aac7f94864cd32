//! Replacing the harness with the command (docs/reference.md §4). A COMMAND with a `/` is a path;
//! any other is looked up in the PATH of the *final* environment, so an environment entry named
//! PATH takes effect. Then execve with the final environment and the arguments exactly as given,
//! never through a shell: a file without a `#!` line or binary format fails with 126 instead of
//! being handed to /bin/sh. 127 is only for a command that is not found.
//!
//! Every descriptor the harness opened is close-on-exec (std and our signalfd open them so), so
//! the command inherits only what the harness was given. The signal mask and SIGPIPE are put
//! back as the harness found them just before the call.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::libc;

use crate::error::Error;
use crate::os::c_string;
use crate::os::shebang::{explain_exec_error, interpreter_line, InterpreterLine};
use crate::os::signals::Signals;
use crate::os::user::Switch;
use crate::variables::EnvBlock;

/// What execvp uses when PATH is unset (confstr(_CS_PATH) on glibc and musl).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Execs the command; returns only on failure, with the error to exit with. `just_before` runs once
/// the command has been found, right before the execve (docs/reference.md §11.3: exec mode
/// publishes there, so a service is not announced when its command does not exist).
pub fn exec(
    command: &[OsString],
    env: &[(OsString, OsString)],
    found: Option<&Found>,
    user: Option<&Switch>,
    signals: &Signals,
    just_before: impl FnOnce() -> Result<(), Error>,
) -> Error {
    let prepared = match Prepared::new(command, env, found) {
        Ok(prepared) => prepared,
        Err(err) => return err,
    };
    if let Err(err) = just_before() {
        return err;
    }
    if let Err(err) = signals.startup_state().restore() {
        return Error::io(prepared.path, "restoring the signal mask", err);
    }
    // Last, so that nothing of the harness's own runs as USER.
    if let Some(user) = user {
        if let Err(failed) = user.switch() {
            return user.failed(failed);
        }
    }
    let errno = prepared.args.execve();
    prepared.not_executed(errno)
}

/// The command resolved in the final PATH, with execve's arguments ready: what exec mode and
/// `--init` both need before the call.
pub struct Prepared {
    pub program: String,
    pub path: PathBuf,
    pub args: ExecArgs,
}

impl Prepared {
    /// Fails with 127 when the command is not found (a path included: a dangling symlink
    /// is not found, as execve says), and refuses a `#!` loop. What was `found` before the
    /// start is used as it is when `env` searches the same PATH.
    pub fn new(
        command: &[OsString],
        env: &[(OsString, OsString)],
        found: Option<&Found>,
    ) -> Result<Prepared, Error> {
        let program = display(&command[0]);
        let path = match found.filter(|found| found.searched_as(command, env)) {
            Some(found) => found.path.clone(),
            None => find(command, env)?.ok_or(Error::CommandNotFound {
                program: program.clone(),
            })?,
        };
        let args = ExecArgs::new(&path, command, env);
        Ok(Prepared {
            program,
            path,
            args,
        })
    }

    /// The error for an execve of this command that failed with `errno`.
    pub fn not_executed(self, errno: Errno) -> Error {
        not_executed(self.program, &self.path, errno)
    }
}

/// Where the command was found before anything ran, with the PATH it was looked for in, its
/// `#!` line found to be no loop. At exec the same PATH finds the same file: it is not looked
/// for, nor its first line read, again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    program: OsString,
    path_variable: Option<OsString>,
    path: PathBuf,
}

impl Found {
    /// Looks for the command in the harness's own PATH and refuses a loop (docs/reference.md
    /// §1.5: before anything runs). None when it is not there (the final PATH may hold it).
    pub fn before_start(
        command: &[OsString],
        harness_env: &[(OsString, OsString)],
    ) -> Result<Option<Found>, Error> {
        Ok(find(command, harness_env)?.map(|path| Found {
            program: command[0].clone(),
            path_variable: path_variable(harness_env).map(OsStr::to_owned),
            path,
        }))
    }

    /// Whether `env` would find `command` where this was found.
    fn searched_as(&self, command: &[OsString], env: &[(OsString, OsString)]) -> bool {
        self.program == command[0]
            && (self.program.as_bytes().contains(&b'/')
                || self.path_variable.as_deref() == path_variable(env))
    }
}

/// The command's path in `env`'s PATH, its `#!` line checked; None when it is not there (a
/// path that is not there is not found either: nothing is announced for it, as exec mode
/// publishes between this and the execve).
fn find(command: &[OsString], env: &[(OsString, OsString)]) -> Result<Option<PathBuf>, Error> {
    let Some(path) = resolve(&command[0], env).filter(|path| path.exists()) else {
        return Ok(None);
    };
    refuse_a_loop(&command[0], &path, env)?;
    Ok(Some(path))
}

fn path_variable(env: &[(OsString, OsString)]) -> Option<&OsStr> {
    env.iter()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.as_os_str())
}

/// The command's path: as given when it has a `/`; else, as execvp(3) searches, the first
/// executable file of that name in the final PATH (an empty entry is the current directory),
/// or failing that the first non-executable one, so that exec reports 126 "permission
/// denied" as env(1) does rather than 127.
pub fn resolve(program: &OsStr, env: &[(OsString, OsString)]) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = path_variable(env).unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut not_executable = None;
    for dir in path.as_bytes().split(|byte| *byte == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return Some(candidate)
            }
            Ok(meta) if meta.is_file() => {
                not_executable.get_or_insert(candidate);
            }
            _ => {}
        }
    }
    not_executable
}

/// Refuses a command whose `#!` line runs envharness itself without naming a command after a
/// `--` word: the kernel would run envharness with the script as its command, which the kernel
/// would run with envharness again, forever (docs/reference.md §1.5). A line with
/// `-- INTERPRETER` is a nested harness, and runs.
fn refuse_a_loop(program: &OsStr, path: &Path, env: &[(OsString, OsString)]) -> Result<(), Error> {
    let Some(args) = interpreter_line(path).and_then(|line| envharness_arguments(&line, env))
    else {
        return Ok(());
    };
    let after_double_dash = args.iter().skip_while(|arg| arg.as_slice() != b"--").nth(1);
    if after_double_dash.is_some() {
        return Ok(());
    }
    Err(Error::entry(
        display(program),
        "its #! line runs envharness without a command: add -- INTERPRETER (e.g. -- /bin/sh)",
    ))
}

/// The arguments a `#!` line gives envharness, when it runs envharness: directly, or as
/// `env envharness` or `env -S envharness ...` found in `env`'s PATH.
fn envharness_arguments(
    line: &InterpreterLine,
    env: &[(OsString, OsString)],
) -> Option<Vec<Vec<u8>>> {
    let argument = line.argument.clone().unwrap_or_default();
    let interpreter = Path::new(OsStr::from_bytes(&line.interpreter));
    if is_this_program(interpreter) {
        return harness_words(argument);
    }
    if interpreter.file_name() != Some(OsStr::new("env")) {
        return None;
    }
    // Without -S, env gets the rest of the line as one word: the program's name.
    let mut words = match argument.strip_prefix(b"-S") {
        Some(rest) => shell_words::split(&String::from_utf8_lossy(rest))
            .ok()?
            .into_iter()
            .map(String::into_bytes)
            .collect(),
        None => vec![argument],
    };
    if words.is_empty() {
        return None;
    }
    let program = words.remove(0);
    let found = resolve(OsStr::from_bytes(&program), env)?;
    is_this_program(&found).then_some(words)
}

/// One argument as envharness reads it: split with shell rules when it starts with `-` and
/// holds a blank (a shebang line's options), else one word. None when it cannot be split: the
/// nested harness would refuse it with a usage error, not loop.
pub(crate) fn harness_words(argument: Vec<u8>) -> Option<Vec<Vec<u8>>> {
    if argument.is_empty() {
        return Some(Vec::new());
    }
    let blank = argument.iter().any(|b| *b == b' ' || *b == b'\t');
    if argument[0] != b'-' || !blank {
        return Some(vec![argument]);
    }
    // Options that are not UTF-8 are a usage error to the harness, as to this check.
    let words = shell_words::split(std::str::from_utf8(&argument).ok()?).ok()?;
    Some(words.into_iter().map(String::into_bytes).collect())
}

/// Whether `path` is the file this process runs (the same inode as /proc/self/exe).
fn is_this_program(path: &Path) -> bool {
    let identity = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()))
    };
    identity(path).is_some_and(|found| identity(Path::new("/proc/self/exe")) == Some(found))
}

/// The error for a command that the kernel refused to execute.
fn not_executed(program: String, path: &Path, errno: Errno) -> Error {
    // Following symlinks: a dangling link is a command that is not there (127), while an
    // existing file that gives ENOENT names a missing interpreter (126).
    if errno == Errno::ENOENT && std::fs::metadata(path).is_err() {
        return Error::CommandNotFound { program };
    }
    let reason = match errno {
        Errno::E2BIG => "the arguments and environment are too large for execve".into(),
        // execve says EACCES, "permission denied", which does not tell what is wrong.
        Errno::EACCES if path.is_dir() => "is a directory".into(),
        _ => explain_exec_error(path, &std::io::Error::from(errno)),
    };
    Error::CommandNotExecutable { program, reason }
}

/// execve's arguments, built in advance so that the call itself allocates nothing: `--init`
/// makes it in the cloned child. (execve, not std's execvp, which runs a file without a `#!`
/// line through /bin/sh; docs/reference.md §4 says 126 instead.)
pub struct ExecArgs {
    path: CString,
    _argv: Vec<CString>,
    _env: EnvBlock,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecArgs {
    pub fn new(path: &Path, command: &[OsString], env: &[(OsString, OsString)]) -> ExecArgs {
        let argv: Vec<CString> = command.iter().map(|arg| c_string(arg.as_bytes())).collect();
        let env = EnvBlock::from(env);
        let mut pointers: Vec<_> = argv.iter().map(|arg| arg.as_ptr()).collect();
        pointers.push(std::ptr::null());
        ExecArgs {
            path: c_string(path.as_os_str().as_bytes()),
            argv: pointers,
            envp: env.pointers(),
            _argv: argv,
            _env: env,
        }
    }

    /// Returns only on failure, with execve's errno.
    pub fn execve(&self) -> Errno {
        // SAFETY: every pointer points into `_argv` or `_env`, owned by self, and both arrays end
        // with a null pointer, as execve(2) requires.
        unsafe { libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        Errno::last()
    }
}

/// The command's name for messages; an empty one shows as `''`.
pub fn display(program: &OsStr) -> String {
    if program.is_empty() {
        return "''".into();
    }
    program.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;
    use crate::config::cli::split_shebang_options;

    #[test]
    fn the_loop_check_reads_a_shebang_argument_as_the_harness_does() {
        // Found by fuzzing (tests/fuzz shebang): options that are not UTF-8 were split with
        // their bytes replaced, where the harness refuses to split them (a usage error).
        let argument = b"-e \xff -x export".to_vec();
        let args = vec![
            OsString::from("envharness"),
            OsString::from_vec(argument.clone()),
        ];
        assert!(split_shebang_options(args).is_err());
        assert_eq!(harness_words(argument), None);
        let words = |words: &[&str]| words.iter().map(|w| w.as_bytes().to_vec()).collect();
        assert_eq!(
            harness_words(b"-e '/my env' -- sh".to_vec()),
            Some(words(&["-e", "/my env", "--", "sh"]))
        );
        assert_eq!(
            harness_words(b"\xff x".to_vec()),
            Some(vec![b"\xff x".to_vec()])
        );
    }
}
