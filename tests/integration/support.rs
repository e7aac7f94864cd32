//! A small builder around a temporary directory of real files and scripts, and the built
//! binary run against it with a cleared environment and a minimal PATH, so nothing from the
//! developer's shell leaks in. Every run is bounded in time; a failed assertion prints the
//! command, the directory tree, the status, stdout and stderr.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{kill, SigHandler, Signal};
use nix::unistd::Pid;
use wait_timeout::ChildExt;

pub const BIN: &str = env!("CARGO_BIN_EXE_envharness");
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Executables the kernel refuses (docs/reference.md §3.4 and §4): no `#!` line (run through a
/// shell it would touch `ran`), Windows line endings, an interpreter that does not exist.
pub const NO_SHEBANG: &str = "touch ran\necho value\n";
pub const CRLF: &str = "#!/bin/sh\r\necho value\r\n";
pub const NO_INTERPRETER: &str = "#!/nonexistent/sh\necho value\n";
/// A static busybox (Debian's busybox-static), the `/bin/sh` of the scratch roots and images.
pub const BUSYBOX: &str = "/bin/busybox";
/// No single run in this suite should come near this.
pub const RUN_LIMIT: Duration = Duration::from_secs(20);

/// Forks of this test process and writes of files must not overlap. A child forked while
/// another test has a script open for writing holds that descriptor until its own exec, and
/// executing the script in that window fails with ETXTBSY ("Text file busy"). Spawns share
/// the lock (std's spawn returns once the child has exec'd); writes take it alone.
static FORK_OR_WRITE: RwLock<()> = RwLock::new(());

/// `command.spawn()`, never while a file of this suite is open for writing.
pub fn spawn(command: &mut Command) -> std::io::Result<Child> {
    let _forking = FORK_OR_WRITE.read().unwrap_or_else(PoisonError::into_inner);
    command.spawn()
}

/// Like `command.output()` (stdin from /dev/null, stdout and stderr captured), through [`spawn`].
pub fn output(command: &mut Command) -> std::io::Result<Output> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(command)?.wait_with_output()
}

/// The bits of a `/proc/*/status` mask line such as `SigBlk:\t0000000000014001`.
pub fn mask(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim_start_matches(':').trim(), 16).expect("a hex mask")
}

/// `signal`'s bit in such a mask.
pub fn bit(signal: Signal) -> u64 {
    1 << (signal as i32 - 1)
}

/// Sends `signal` to a process this test started.
pub fn send(child: &Child, signal: Signal) {
    kill(Pid::from_raw(child.id() as i32), signal).expect("signalling envharness");
}

/// Runs `write`, which opens files for writing, while no spawn is under way; see [`spawn`].
pub fn while_not_forking<T>(write: impl FnOnce() -> T) -> T {
    let _writing = FORK_OR_WRITE
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    write()
}

pub struct Test {
    dir: tempfile::TempDir,
    /// What runs the arguments: the built binary, or [`Test::launcher`]'s program.
    launcher: Vec<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    pub fn new() -> Test {
        Test {
            dir: tempfile::Builder::new()
                .prefix("envharness-test.")
                .tempdir()
                .expect("creating a temporary directory"),
            launcher: vec![BIN.into()],
            args: Vec::new(),
            env: vec![("PATH".into(), PATH.into())],
        }
    }

    /// The temporary directory (also the current directory of every run).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root().join(relative)
    }

    /// The absolute path of `relative`, as a String, for arguments.
    pub fn p(&self, relative: &str) -> String {
        self.path(relative).to_string_lossy().into_owned()
    }

    fn write(&self, relative: &str, content: &[u8], mode: u32) -> &Self {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir -p");
        while_not_forking(|| fs::write(&path, content)).expect("writing a test file");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    /// An executable (mode 0755).
    pub fn script(&self, relative: &str, body: &str) -> &Self {
        self.write(relative, body.as_bytes(), 0o755)
    }

    /// A plain file (mode 0644).
    pub fn file(&self, relative: &str, content: impl AsRef<[u8]>) -> &Self {
        self.write(relative, content.as_ref(), 0o644)
    }

    /// Replaces a plain file at once (write a temporary file, then rename), as the kubelet
    /// swaps a ConfigMap: a harness re-running discovery sees the old content or the new.
    pub fn replace(&self, relative: &str, content: impl AsRef<[u8]>) -> &Self {
        let temporary = format!("{relative}.new~");
        self.file(&temporary, content);
        fs::rename(self.path(&temporary), self.path(relative)).expect("renaming a test file");
        self
    }

    pub fn dir(&self, relative: &str) -> &Self {
        fs::create_dir_all(self.path(relative)).expect("mkdir -p");
        self
    }

    pub fn symlink(&self, relative: &str, target: &str) -> &Self {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().expect("a link has a parent")).expect("mkdir -p");
        symlink(target, path).expect("creating a symlink");
        self
    }

    pub fn read(&self, relative: &str) -> String {
        fs::read_to_string(self.path(relative))
            .unwrap_or_else(|err| panic!("reading {relative}: {err}\n{}", self.tree()))
    }

    pub fn exists(&self, relative: &str) -> bool {
        self.path(relative).exists()
    }

    pub fn args<S: Into<OsString> + Clone>(&mut self, args: &[S]) -> &mut Self {
        self.args.extend(args.iter().cloned().map(Into::into));
        self
    }

    pub fn env(&mut self, name: &str, value: impl Into<OsString>) -> &mut Self {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs `program` with `args` before the test's own arguments instead of the built binary:
    /// another build of it, or one under an emulator (`qemu-aarch64-static BINARY`).
    pub fn launcher<S: Into<OsString> + Clone>(&mut self, program_and_args: &[S]) -> &mut Self {
        self.launcher = program_and_args.iter().cloned().map(Into::into).collect();
        self
    }

    /// The command that runs the binary; stdout and stderr go to files in the test directory.
    pub fn command(&self) -> Command {
        let mut command = self.external(&self.launcher[0]);
        command
            .args(&self.launcher[1..])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// `program` run as the binary is: in the test directory, with a cleared environment and
    /// the minimal PATH, stdin from /dev/null, stdout and stderr into the capture files that
    /// [`Test::run_command`] reads.
    pub fn external(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", PATH)
            .current_dir(self.root())
            .stdin(Stdio::null())
            .stdout(self.capture_file(".stdout"))
            .stderr(self.capture_file(".stderr"));
        command
    }

    fn capture_file(&self, name: &str) -> fs::File {
        fs::File::create(self.path(name)).expect("creating a capture file")
    }

    /// Runs the binary to completion (bounded by [`RUN_LIMIT`]).
    pub fn run(&self) -> Run {
        self.run_command(self.command())
    }

    /// Runs `command` to completion (bounded by [`RUN_LIMIT`]); a failure shows `command`
    /// itself, whatever program it runs.
    pub fn run_command(&self, mut command: Command) -> Run {
        let started = Instant::now();
        let child = spawn(&mut command).expect("spawning the command");
        self.finish_command(child, started, &command)
    }

    /// Starts the binary without waiting, with the stop signals at their default disposition
    /// (for signal tests); finish with [`Test::finish`].
    pub fn spawn(&self) -> (Child, Instant) {
        self.spawn_with_ignored(&[])
    }

    /// Starts the binary with the stop signals at their default disposition except those in
    /// `ignored`, which start ignored; see [`Test::command_with_ignored`].
    pub fn spawn_with_ignored(&self, ignored: &[Signal]) -> (Child, Instant) {
        let child = spawn(&mut self.command_with_ignored(ignored)).expect("spawning envharness");
        (child, Instant::now())
    }

    /// The command, with the stop signals at their default disposition except those in
    /// `ignored`, which start ignored. The harness deliberately keeps a stop signal that it
    /// was started with ignored (`nohup`, a shell's `&`), so a signal test must not depend on
    /// what the test runner inherited.
    pub fn command_with_ignored(&self, ignored: &[Signal]) -> Command {
        let mut command = self.command();
        let ignored = ignored.to_vec();
        // SAFETY: the closure runs between fork and exec and only calls sigaction (through
        // `signal`), which is async-signal-safe; `ignored` was allocated before the fork.
        unsafe {
            command.pre_exec(move || {
                for stop in [
                    Signal::SIGTERM,
                    Signal::SIGINT,
                    Signal::SIGHUP,
                    Signal::SIGQUIT,
                ] {
                    let handler = if ignored.contains(&stop) {
                        SigHandler::SigIgn
                    } else {
                        SigHandler::SigDfl
                    };
                    nix::sys::signal::signal(stop, handler)?;
                }
                Ok(())
            });
        }
        command
    }

    /// The command, with its address space limited to `bytes` (RLIMIT_AS), so a run that
    /// buffers without bound fails instead of filling the machine's memory.
    pub fn command_with_memory_limit(&self, bytes: u64) -> Command {
        let mut command = self.command();
        // SAFETY: the closure runs between fork and exec and only calls setrlimit, which is
        // async-signal-safe, on a struct on its own stack.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }

    /// The process id a script wrote to `relative` (`echo $$ > relative`).
    pub fn pid(&self, relative: &str) -> i32 {
        let text = self.read(relative);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{relative} does not hold a pid: {text:?}"))
    }

    pub fn finish(&self, child: Child, started: Instant) -> Run {
        self.finish_with(child, started, || self.describe())
    }

    /// Like [`Test::finish`], for a child started from `command`, whatever program it runs: a
    /// failure shows that command.
    pub fn finish_command(&self, child: Child, started: Instant, command: &Command) -> Run {
        self.finish_with(child, started, || self.describe_command(command))
    }

    /// `context` says what ran, with the directory tree as the run left it.
    fn finish_with(&self, mut child: Child, started: Instant, context: impl Fn() -> String) -> Run {
        let status = match child
            .wait_timeout(RUN_LIMIT)
            .expect("waiting for the command")
        {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the command did not finish within {RUN_LIMIT:?}\n{}",
                    context()
                );
            }
        };
        Run {
            status,
            elapsed: started.elapsed(),
            stdout: fs::read(self.path(".stdout")).unwrap_or_default(),
            stderr: fs::read_to_string(self.path(".stderr")).unwrap_or_default(),
            context: context(),
        }
    }

    /// Waits until `relative` exists (a script's "ready" file), failing after a bound.
    pub fn wait_for(&self, relative: &str) {
        let limit = Instant::now() + Duration::from_secs(10);
        while !self.exists(relative) {
            assert!(
                Instant::now() < limit,
                "{relative} never appeared\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `condition` holds, failing after a bound; `what` names it in the failure.
    pub fn wait_until(&self, what: &str, condition: impl Fn() -> bool) {
        let limit = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(
                Instant::now() < limit,
                "{what}: never happened\n{}\n--- stderr so far\n{}",
                self.describe(),
                self.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the file `relative` (such as `.stdout`) contains `text`, failing after a
    /// bound.
    pub fn wait_for_text(&self, relative: &str, text: &str) {
        self.wait_until(&format!("{relative} containing {text:?}"), || {
            fs::read_to_string(self.path(relative)).is_ok_and(|content| content.contains(text))
        });
    }

    /// Waits until `relative` has a line that is exactly `line`.
    pub fn wait_for_line(&self, relative: &str, line: &str) {
        self.wait_until(&format!("{relative} holding the line {line:?}"), || {
            self.lines(relative).iter().any(|l| l == line)
        });
    }

    /// Sends SIGTERM to the binary started by [`Test::spawn`] and waits for it to finish.
    pub fn terminate(&self, child: Child, started: Instant) -> Run {
        send(&child, Signal::SIGTERM);
        self.finish(child, started)
    }

    /// Waits until the running binary's stderr contains `text`.
    pub fn wait_for_stderr(&self, text: &str) {
        self.wait_for_text(".stderr", text);
    }

    /// What the binary started by [`Test::spawn`] has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        fs::read_to_string(self.path(".stderr")).unwrap_or_default()
    }

    /// The lines of `relative`, none when it does not exist (yet).
    pub fn lines(&self, relative: &str) -> Vec<String> {
        fs::read_to_string(self.path(relative))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// What a failure of `command` shows: the program, its arguments, environment and
    /// directory (as `Command`'s Debug writes them), and the directory tree.
    fn describe_command(&self, command: &Command) -> String {
        format!("command: {command:?}\ntree:\n{}", self.tree())
    }

    fn describe(&self) -> String {
        format!(
            "command: {} {}\nenv: {:?}\ntree:\n{}",
            shell_words_join(&self.launcher),
            shell_words_join(&self.args),
            self.env,
            self.tree()
        )
    }

    fn tree(&self) -> String {
        let mut lines = Vec::new();
        list_tree(self.root(), self.root(), &mut lines);
        lines.join("\n")
    }
}

impl Drop for Test {
    /// Whatever a test left running (a command that ignores SIGTERM, a harness a failed
    /// assertion never stopped) is killed: every process this suite starts runs in the test
    /// directory, so a process whose current directory is in it is one of ours.
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let in_test = fs::read_link(entry.path().join("cwd"))
                .is_ok_and(|cwd| cwd.starts_with(self.root()));
            if in_test {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn shell_words_join(args: &[OsString]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn list_tree(root: &Path, dir: &Path, lines: &mut Vec<String>) {
    let Ok(read) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = read.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        if relative.starts_with(".std") {
            continue;
        }
        let meta = fs::symlink_metadata(&path);
        let mode = meta
            .as_ref()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0);
        match fs::read_link(&path) {
            Ok(target) => lines.push(format!("  {relative} -> {}", target.display())),
            Err(_) => lines.push(format!("  {relative} ({mode:o})")),
        }
        if meta.is_ok_and(|m| m.is_dir()) {
            list_tree(root, &path, lines);
        }
    }
}

/// The outcome of one run, with assertions that print everything when they fail.
pub struct Run {
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stdout: Vec<u8>,
    pub stderr: String,
    context: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n{}\nstatus: {:?} (signal {:?}) after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.context,
            self.status.code(),
            self.status.signal(),
            self.elapsed,
            self.stdout(),
            self.stderr
        )
    }

    #[track_caller]
    pub fn status(&self, expected: i32) -> &Self {
        if self.status.code() != Some(expected) {
            self.fail(&format!("expected exit status {expected}"));
        }
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        self.status(0)
    }

    /// Asserts stderr has a line starting `envharness:` that contains every one of `parts`
    /// (the file or command, and the reason).
    #[track_caller]
    pub fn error_line(&self, parts: &[&str]) -> &Self {
        let found = self
            .stderr
            .lines()
            .any(|line| line.starts_with("envharness: ") && parts.iter().all(|p| line.contains(p)));
        if !found {
            self.fail(&format!(
                "no stderr line 'envharness: ...' containing all of {parts:?}"
            ));
        }
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Self {
        if !self.stderr.contains(text) {
            self.fail(&format!("stderr does not contain {text:?}"));
        }
        self
    }

    #[track_caller]
    pub fn stderr_lacks(&self, text: &str) -> &Self {
        if self.stderr.contains(text) {
            self.fail(&format!("stderr contains {text:?}"));
        }
        self
    }

    #[track_caller]
    pub fn stdout_is(&self, expected: &str) -> &Self {
        if self.stdout != expected.as_bytes() {
            self.fail(&format!("expected stdout {expected:?}"));
        }
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Self {
        if !self.stdout().contains(text) {
            self.fail(&format!("stdout does not contain {text:?}"));
        }
        self
    }

    #[track_caller]
    pub fn faster_than(&self, limit: Duration) -> &Self {
        if self.elapsed >= limit {
            self.fail(&format!(
                "took {:?}, expected under {limit:?}",
                self.elapsed
            ));
        }
        self
    }

    #[track_caller]
    pub fn slower_than(&self, limit: Duration) -> &Self {
        if self.elapsed < limit {
            self.fail(&format!(
                "took {:?}, expected at least {limit:?}",
                self.elapsed
            ));
        }
        self
    }

    /// The stderr lines that contain `text`.
    pub fn stderr_lines_with(&self, text: &str) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|line| line.contains(text))
            .collect()
    }

    /// The variables of `--print` (dotenv), parsed the simple way: one `NAME='value'` line
    /// each (tests that need multi-line values compare stdout bytes instead).
    pub fn printed(&self) -> Vec<(String, String)> {
        self.stdout()
            .lines()
            .map(|line| {
                let (name, quoted) = line
                    .split_once('=')
                    .unwrap_or_else(|| self.fail(&format!("not a NAME=value line: {line:?}")));
                let value = quoted.trim_matches('\'');
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    #[track_caller]
    pub fn printed_is(&self, expected: &[(&str, &str)]) -> &Self {
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if self.printed() != expected {
            self.fail(&format!("expected --print to show {expected:?}"));
        }
        self
    }
}

/// Runs `command` once directly and once through envharness (same spawn, same setup), and
/// returns both outputs: what the command sees should not depend on envharness being there.
pub fn direct_and_through_harness(
    harness_flags: &[&str],
    command: &[&str],
    setup: Option<fn() -> std::io::Result<()>>,
) -> (Vec<u8>, Vec<u8>) {
    let mut t = Test::new();
    t.script("env/A", "#!/bin/sh\necho a\n");
    t.dir("export");
    t.args(harness_flags)
        .args(&["-x", "export", "-e", "env", "--"])
        .args(command);
    let mut through = t.command();
    let mut direct = t.external(command[0]);
    direct.args(&command[1..]);
    if let Some(setup) = setup {
        // SAFETY: the setups below only make async-signal-safe calls.
        unsafe {
            through.pre_exec(setup);
            direct.pre_exec(setup);
        }
    }
    let direct = t.run_command(direct);
    direct.success();
    let through = t.run_command(through);
    through.success();
    (direct.stdout, through.stdout)
}

/// The static envharness that `make static` builds, named by `ENVHARNESS_STATIC_BIN` (as
/// `make test` does) or found where `make static` puts it.
pub fn static_binary() -> PathBuf {
    let path = std::env::var_os("ENVHARNESS_STATIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/x86_64-unknown-linux-musl/release/envharness")
        });
    assert!(
        path.exists(),
        "{} is missing: build it with `make static` (`make test` does)",
        path.display()
    );
    path
}

/// The fenced block of README.md that follows the line `<!-- MARKER -->`.
pub fn readme_block(marker: &str) -> String {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("reading README.md");
    readme
        .split_once(&format!("<!-- {marker} -->\n```\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block.to_owned())
        .unwrap_or_else(|| panic!("README.md has no block after <!-- {marker} -->"))
}

/// README.md's fenced blocks, each without its fences.
pub fn readme_blocks() -> Vec<String> {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("reading README.md");
    readme
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|block| block.trim_start_matches('\n').to_owned())
        .collect()
}

/// `make` in the repository, with a cleared environment but what it needs to find its tools
/// (PATH as the user has it: `make deps` looks for gosu, in /usr/sbin) and cargo (HOME, and
/// rustup's and cargo's homes when they are set).
pub fn make() -> Command {
    let mut make = Command::new("make");
    make.current_dir(env!("CARGO_MANIFEST_DIR")).env_clear();
    for name in ["PATH", "HOME", "RUSTUP_HOME", "CARGO_HOME"] {
        if let Some(value) = std::env::var_os(name) {
            make.env(name, value);
        }
    }
    make
}

/// What a test needs of this machine and does not find there. Where `make test` provided it
/// (and says so with `VARIABLE=required`: `ENVHARNESS_TEST_PODMAN`, `ENVHARNESS_TEST_SYSTEM`
/// for namespaces, root and the util-linux tools), its absence fails the test: a test that
/// passes without testing would hide it. Elsewhere (a developer's laptop) the test says why it
/// skips and returns.
pub fn unavailable(variable: &str, reason: &str) {
    if std::env::var(variable).as_deref() == Ok("required") {
        panic!("{reason}, and {variable}=required");
    }
    eprintln!("skipped: {reason}");
}

/// Whether this machine lets us make a PID namespace (`unshare --fork --pid --mount-proc`);
/// see [`unavailable`] for when it does not.
pub fn namespaces_permitted() -> bool {
    let probe = output(Command::new("unshare").args([
        "--fork",
        "--pid",
        "--mount",
        "--mount-proc",
        "true",
    ]));
    let reason = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "unshare is not permitted: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => format!("unshare cannot run: {err}"),
    };
    unavailable("ENVHARNESS_TEST_SYSTEM", &reason);
    false
}

/// Is a process still alive (not gone, not a zombie)?
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Waits (bounded) until the process is gone.
pub fn gone_within(pid: i32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !alive(pid)
}

/// Whether `unshare -r -m` (a user and a mount namespace of its own) works here; prints why
/// not.
pub fn can_unshare_mounts() -> bool {
    let probe = output(Command::new("unshare").args(["-r", "-m", "true"]));
    if probe.as_ref().is_ok_and(|out| out.status.success()) {
        return true;
    }
    unavailable(
        "ENVHARNESS_TEST_SYSTEM",
        "unshare -r -m is not permitted here",
    );
    false
}
