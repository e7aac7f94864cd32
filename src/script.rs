//! Running scripts: spawn, capture, time out, kill the process group, retry — for one script
//! or for up to N at once (`--jobs`), with the same loop.
//!
//! Each script is executed directly (never through `sh -c`) with stdin from /dev/null, in a
//! process group of its own so that a timeout or a stop reaches whatever it started. One
//! `poll` waits on everything at once: the scripts' stdout (and, when several run at once,
//! their stderr, whose lines get the script's name in front), and the harness's signalfd,
//! which reports SIGCHLD and the stop signals. That gives, without threads:
//! - timeouts: the group gets SIGTERM, then SIGKILL [`KILL_GRACE`] later;
//! - stuck pipes: once a script has exited, its stdout is read for at most [`PIPE_GRACE`]
//!   more, because a background process may hold it open forever;
//! - bounded memory: output past the caller's limit stops the script;
//! - stops: a stop signal goes to every running group, nothing more starts, and the run ends
//!   with [`Error::Interrupted`].
//!
//! Results come back in the order of the jobs, whatever order they finished in. After a
//! failure (retries used up) the other running scripts get SIGTERM and the failure of the
//! lexically first job that failed by itself is reported.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::Error;
use crate::exec::{c_string, env_strings};
use crate::plan::Limits;
use crate::procfs;
use crate::shebang::explain_exec_error;
use crate::signals::{poll_timeout_until, Watcher, STOP_SIGNALS};

/// Between SIGTERM and SIGKILL for a script that timed out or is being stopped (SPEC.md 3.4).
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long a script's pipes are still read after it exited.
pub const PIPE_GRACE: Duration = Duration::from_millis(100);
/// While the rest of a stopped script's group has its grace period, how often to ask whether
/// it is gone (its members are not our children, so nothing tells us).
const GROUP_CHECK: Duration = Duration::from_millis(20);
/// With `--jobs`, a stderr line longer than this is written in pieces.
const LONGEST_LABELLED_LINE: usize = 4096;

/// Where a script's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Captured, up to `limit` bytes; more stops the script.
    Capture { limit: usize },
    /// Passed to the harness's stderr (export scripts: stdout belongs to `--print`).
    ToStderr,
}

/// One script to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub path: PathBuf,
    /// The script's whole environment.
    pub env: Vec<(OsString, OsString)>,
    pub stdout: Stdout,
}

/// What a successful run produced.
#[derive(Debug)]
pub struct Ran {
    pub output: Vec<u8>,
    pub elapsed: Duration,
}

/// Why a run of a script failed.
#[derive(Debug)]
pub enum Failure {
    Exited(i32),
    Killed(Signal),
    TimedOut(Duration),
    OutputTooLarge(usize),
    /// The script could not be executed at all; the reason comes from [`explain_exec_error`].
    NotExecutable(String),
}

impl Failure {
    /// Only failures that another try might not repeat are retried.
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            Failure::Exited(_) | Failure::Killed(_) | Failure::TimedOut(_)
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Exited(code) => write!(f, "exited with status {code}"),
            Failure::Killed(signal) => write!(f, "killed by {}", signal.as_str()),
            Failure::TimedOut(limit) => write!(f, "timed out after {}s", limit.as_secs_f64()),
            Failure::OutputTooLarge(limit) => {
                write!(f, "output passed {limit} bytes, the limit; stopped it")
            }
            Failure::NotExecutable(reason) => f.write_str(reason),
        }
    }
}

/// Runs jobs under the harness's limits, reading signals from the harness's [`Watcher`].
pub struct Runner<'a> {
    pub watcher: &'a Watcher,
    pub limits: Limits,
}

impl Runner<'_> {
    /// Runs one script.
    pub fn run_one(&self, job: Job) -> Result<Ran, Error> {
        self.run_all(vec![job], 1)?
            .remove(0)
            .expect("a lone job is never abandoned")
    }

    /// Runs the jobs, at most `parallel` at once (0: all at once), and returns each one's
    /// outcome in the jobs' order. After a job fails for good nothing more starts and the
    /// other running jobs are stopped (their outcome is None; issue 3: "stop the other
    /// running scripts and report the lexically first failure"). With more than one job at
    /// once, stderr lines get the script's name. A stop signal is the only error for the
    /// whole run.
    pub fn run_all(
        &self,
        jobs: Vec<Job>,
        parallel: usize,
    ) -> Result<Vec<Option<Result<Ran, Error>>>, Error> {
        let parallel = if parallel == 0 {
            jobs.len().max(1)
        } else {
            parallel
        };
        let mut pool = Pool {
            runner: self,
            label_stderr: parallel > 1 && jobs.len() > 1,
            outcomes: jobs.iter().map(|_| None).collect(),
            jobs,
            parallel,
            next: 0,
            running: Vec::new(),
            retries: Vec::new(),
            failed: false,
            stopped_by: None,
        };
        pool.run()?;
        if let Some(signal) = pool.stopped_by {
            return Err(Error::Interrupted { signal });
        }
        let paths = pool.jobs.iter().map(|job| job.path.clone());
        Ok(pool
            .outcomes
            .into_iter()
            .zip(paths)
            .map(|(outcome, path)| {
                outcome.map(|outcome| {
                    outcome.map_err(|(failure, tries)| Error::Script {
                        path,
                        failure,
                        tries,
                    })
                })
            })
            .collect())
    }
}

/// A script that has been started and not yet fully collected.
struct Running {
    index: usize,
    tries: u32,
    /// The script's pid, which is also its process group's id.
    group: Pid,
    stdout: Option<File>,
    stderr: Option<File>,
    output: Vec<u8>,
    stderr_line: Vec<u8>,
    started: Instant,
    /// Why we stopped it, when we did (timeout, too much output).
    failure: Option<Failure>,
    timeout_at: Option<Instant>,
    kill_at: Option<Instant>,
    /// We stopped it because another script failed: its result does not count.
    abandoned: bool,
    exit: Option<WaitStatus>,
    pipes_close_at: Option<Instant>,
}

impl Running {
    /// Exited, pipes closed, and (when we were stopping it) its group gone or killed.
    fn is_collected(&self) -> bool {
        self.exit.is_some()
            && self.stdout.is_none()
            && self.stderr.is_none()
            && self.kill_at.is_none()
    }

    /// Whether any process of the script's group still runs. `killpg(0)` alone would count
    /// zombies that an init has not reaped yet, so /proc is asked when it says yes.
    fn group_alive(&self) -> bool {
        killpg(self.group, None).is_ok() && group_has_a_living_member(self.group)
    }

    fn signal_group(&self, signal: Signal) {
        // ESRCH just means the group is already gone.
        let _ = killpg(self.group, signal);
    }

    /// SIGTERM now, SIGKILL after [`KILL_GRACE`] if the script is still there.
    fn terminate(&mut self, now: Instant) {
        self.signal_group(Signal::SIGTERM);
        self.kill_at.get_or_insert(now + KILL_GRACE);
        self.timeout_at = None;
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        // A stopped script that has exited leaves its group a grace period; whether the group
        // is gone can only be asked, so ask again soon.
        let group_check =
            (self.exit.is_some() && self.kill_at.is_some()).then(|| now + GROUP_CHECK);
        [
            self.timeout_at,
            self.kill_at,
            self.pipes_close_at,
            group_check,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Which descriptor a poll entry stands for.
#[derive(Clone, Copy)]
enum Source {
    Signals,
    Stdout(usize),
    Stderr(usize),
}

struct Pool<'r, 'w> {
    runner: &'r Runner<'w>,
    jobs: Vec<Job>,
    parallel: usize,
    label_stderr: bool,
    next: usize,
    running: Vec<Running>,
    /// (job index, tries so far, not before)
    retries: Vec<(usize, u32, Instant)>,
    /// Per job: its result, or its last failure and the number of tries.
    outcomes: Vec<Option<Result<Ran, (Failure, u32)>>>,
    /// A job failed for good: nothing more starts.
    failed: bool,
    stopped_by: Option<Signal>,
}

impl Pool<'_, '_> {
    fn run(&mut self) -> Result<(), Error> {
        // A stop signal that came while no script ran (between two scripts, or between the
        // phases) waits in the signalfd: read it before starting anything, or the next script
        // would be started and only then stopped (SPEC.md 3.4: "runs nothing more").
        self.read_signals()?;
        loop {
            self.start_due_jobs();
            if self.running.is_empty() && !self.has_work_left() {
                return Ok(());
            }
            let ready = self.wait()?;
            for source in ready {
                match source {
                    Source::Signals => self.read_signals()?,
                    Source::Stdout(slot) => self.read_stdout(slot),
                    Source::Stderr(slot) => self.read_stderr(slot),
                }
            }
            self.handle_deadlines(Instant::now());
            self.collect_finished();
        }
    }

    /// Whether jobs may still start (or start again).
    fn accepting(&self) -> bool {
        self.stopped_by.is_none() && !self.failed
    }

    fn has_work_left(&self) -> bool {
        self.accepting() && (self.next < self.jobs.len() || !self.retries.is_empty())
    }

    fn start_due_jobs(&mut self) {
        let now = Instant::now();
        while self.running.len() < self.parallel {
            if let Some(pos) = self.retries.iter().position(|(_, _, at)| *at <= now) {
                let (index, tries, _) = self.retries.remove(pos);
                self.start(index, tries + 1);
            } else if self.accepting() && self.next < self.jobs.len() {
                self.next += 1;
                self.start(self.next - 1, 1);
            } else {
                break;
            }
        }
    }

    fn start(&mut self, index: usize, tries: u32) {
        let job = &self.jobs[index];
        match spawn(job, self.label_stderr) {
            Ok(spawned) => {
                let started = Instant::now();
                self.running.push(Running {
                    index,
                    tries,
                    group: spawned.pid,
                    stdout: spawned.stdout,
                    stderr: spawned.stderr,
                    output: Vec::new(),
                    stderr_line: Vec::new(),
                    started,
                    failure: None,
                    timeout_at: self.runner.limits.timeout.map(|limit| started + limit),
                    kill_at: None,
                    abandoned: false,
                    exit: None,
                    pipes_close_at: None,
                });
            }
            Err(err) => {
                let reason = explain_exec_error(&job.path, &err);
                self.fail(index, Failure::NotExecutable(reason), tries);
            }
        }
    }

    /// Polls until something is ready or the next deadline passes; returns what is ready.
    fn wait(&self) -> Result<Vec<Source>, Error> {
        let mut sources = vec![Source::Signals];
        let mut fds = vec![PollFd::new(self.runner.watcher.as_fd(), PollFlags::POLLIN)];
        for (slot, running) in self.running.iter().enumerate() {
            if let Some(stdout) = &running.stdout {
                sources.push(Source::Stdout(slot));
                fds.push(PollFd::new(stdout.as_fd(), PollFlags::POLLIN));
            }
            if let Some(stderr) = &running.stderr {
                sources.push(Source::Stderr(slot));
                fds.push(PollFd::new(stderr.as_fd(), PollFlags::POLLIN));
            }
        }
        let timeout = self.time_to_next_deadline();
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => return Err(Error::io("poll", "waiting for scripts", err.into())),
        }
        Ok(fds
            .iter()
            .zip(sources)
            .filter(|(fd, _)| fd.revents().is_some_and(|events| !events.is_empty()))
            .map(|(_, source)| source)
            .collect())
    }

    fn time_to_next_deadline(&self) -> PollTimeout {
        let now = Instant::now();
        let retry_at = self.retries.iter().map(|(_, _, at)| *at);
        let deadline = self
            .running
            .iter()
            .filter_map(|running| running.next_deadline(now))
            .chain(retry_at)
            .min();
        poll_timeout_until(deadline)
    }

    fn read_signals(&mut self) -> Result<(), Error> {
        let watcher = self.runner.watcher;
        while let Some(signal) = watcher
            .next()
            .map_err(|err| Error::io("signalfd", "reading signals", err))?
        {
            // Any other signal is one that --init forwards, read during teardown: no command
            // is left to take it.
            if signal == Signal::SIGCHLD {
                self.reap();
            } else if STOP_SIGNALS.contains(&signal) && self.stopped_by.is_none() {
                log::warn!("got {}: stopping the running scripts", signal.as_str());
                self.stopped_by = Some(signal);
                self.retries.clear();
                let now = Instant::now();
                for running in &mut self.running {
                    running.signal_group(signal);
                    running.kill_at.get_or_insert(now + KILL_GRACE);
                    running.timeout_at = None;
                }
            }
        }
        Ok(())
    }

    /// Reaps every child that has exited: SIGCHLDs coalesce, and as PID 1 (or a subreaper)
    /// the harness also inherits orphans of scripts, whose zombies are reaped and forgotten.
    fn reap(&mut self) {
        let now = Instant::now();
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(status @ WaitStatus::Exited(pid, _)) => (pid, status),
                Ok(status @ WaitStatus::Signaled(pid, ..)) => (pid, status),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let Some(running) = self.running.iter_mut().find(|r| r.group == pid) else {
                continue;
            };
            running.exit = Some(status);
            running.timeout_at = None;
            if running.stdout.is_some() || running.stderr.is_some() {
                running.pipes_close_at = Some(now + PIPE_GRACE);
            }
        }
    }

    fn read_stdout(&mut self, slot: usize) {
        let Stdout::Capture { limit } = self.jobs[self.running[slot].index].stdout else {
            return;
        };
        let running = &mut self.running[slot];
        let Some(stdout) = &mut running.stdout else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        match stdout.read(&mut chunk) {
            Ok(0) | Err(_) => running.stdout = None,
            Ok(len) => {
                running.output.extend_from_slice(&chunk[..len]);
                if running.output.len() > limit && running.failure.is_none() {
                    running.failure = Some(Failure::OutputTooLarge(limit));
                    running.signal_group(Signal::SIGKILL);
                    running.stdout = None;
                }
            }
        }
    }

    fn read_stderr(&mut self, slot: usize) {
        let running = &mut self.running[slot];
        let Some(stderr) = &mut running.stderr else {
            return;
        };
        let mut chunk = [0u8; 8 * 1024];
        let label = file_name(&self.jobs[running.index].path);
        match stderr.read(&mut chunk) {
            Ok(0) | Err(_) => {
                running.stderr = None;
                if !running.stderr_line.is_empty() {
                    running.stderr_line.push(b'\n');
                    write_labelled(&label, &running.stderr_line);
                    running.stderr_line.clear();
                }
            }
            Ok(len) => {
                running.stderr_line.extend_from_slice(&chunk[..len]);
                while let Some(end) = running.stderr_line.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = running.stderr_line.drain(..=end).collect();
                    write_labelled(&label, &line);
                }
                // A line without end is written in pieces rather than held without bound.
                if running.stderr_line.len() > LONGEST_LABELLED_LINE {
                    running.stderr_line.push(b'\n');
                    write_labelled(&label, &running.stderr_line);
                    running.stderr_line.clear();
                }
            }
        }
    }

    fn handle_deadlines(&mut self, now: Instant) {
        for running in &mut self.running {
            if running.timeout_at.is_some_and(|at| at <= now) {
                let limit = self.runner.limits.timeout.unwrap_or_default();
                running.failure.get_or_insert(Failure::TimedOut(limit));
                running.terminate(now);
            }
            if running.kill_at.is_some_and(|at| at <= now) {
                running.signal_group(Signal::SIGKILL);
                running.kill_at = None;
            } else if running.exit.is_some() && running.kill_at.is_some() && !running.group_alive()
            {
                running.kill_at = None;
            }
            if running.pipes_close_at.is_some_and(|at| at <= now) {
                if running.stdout.is_some() {
                    log::warn!(
                        "{}: a background process kept stdout open; redirect its output (e.g. `cmd >/dev/null &`)",
                        self.jobs[running.index].path.display()
                    );
                }
                running.stdout = None;
                running.stderr = None;
                running.pipes_close_at = None;
            }
        }
    }

    fn collect_finished(&mut self) {
        while let Some(slot) = self.running.iter().position(Running::is_collected) {
            let running = self.running.swap_remove(slot);
            self.finish(running);
        }
    }

    fn finish(&mut self, running: Running) {
        if running.abandoned || self.stopped_by.is_some() {
            return;
        }
        let status = running.exit.expect("collected scripts have exited");
        let elapsed = running.started.elapsed();
        let failure = running.failure.or_else(|| failure_of(status));
        match failure {
            None => {
                self.outcomes[running.index] = Some(Ok(Ran {
                    output: running.output,
                    elapsed,
                }));
            }
            Some(failure) => self.fail(running.index, failure, running.tries),
        }
    }

    /// Retries the job if it may be, else records the failure and stops the others.
    fn fail(&mut self, index: usize, failure: Failure, tries: u32) {
        let path = &self.jobs[index].path;
        let limits = self.runner.limits;
        if failure.is_retryable() && tries <= limits.retries && self.accepting() {
            log::warn!(
                "{}: {failure}; trying again in {}s (try {} of {})",
                path.display(),
                limits.retry_interval.as_secs_f64(),
                tries + 1,
                limits.retries + 1
            );
            self.retries
                .push((index, tries, Instant::now() + limits.retry_interval));
            return;
        }
        self.outcomes[index] = Some(Err((failure, tries)));
        self.failed = true;
        self.retries.clear();
        let now = Instant::now();
        for running in &mut self.running {
            if running.exit.is_none() && !running.abandoned {
                running.abandoned = true;
                running.terminate(now);
            }
        }
    }
}

/// Whether /proc lists a process of group `group` that has not exited. Only asked during a
/// stopped script's grace period; without /proc, assume so (SIGKILL comes on time anyway).
fn group_has_a_living_member(group: Pid) -> bool {
    procfs::processes().is_none_or(|processes| {
        processes
            .iter()
            .any(|process| process.group == group && !process.exited)
    })
}

fn failure_of(status: WaitStatus) -> Option<Failure> {
    match status {
        WaitStatus::Exited(_, 0) => None,
        WaitStatus::Exited(_, code) => Some(Failure::Exited(code)),
        WaitStatus::Signaled(_, signal, _) => Some(Failure::Killed(signal)),
        other => unreachable!("only exits are recorded, not {other:?}"),
    }
}

/// A started script: its pid (also its process group) and our ends of its pipes.
struct Spawned {
    pid: Pid,
    stdout: Option<File>,
    stderr: Option<File>,
}

/// Starts the script with posix_spawn: directly (no shell, and unlike execvp no /bin/sh
/// fallback for a file without `#!`), stdin from /dev/null, in a process group of its own,
/// with an empty signal mask and default SIGPIPE. std's `Command` would hand the child the
/// harness's mask, in which the stop signals and SIGCHLD are blocked, so a timeout's SIGTERM
/// would not reach it.
fn spawn(job: &Job, pipe_stderr: bool) -> io::Result<Spawned> {
    let mut actions = PosixSpawnFileActions::init()?;
    let stdin = empty_stdin()?;
    actions.add_dup2(stdin.as_raw_fd(), 0)?;
    let (stdout, child_stdout) = match job.stdout {
        Stdout::Capture { .. } => {
            let (ours, theirs) = pipe()?;
            actions.add_dup2(theirs.as_raw_fd(), 1)?;
            (Some(ours), Some(theirs))
        }
        Stdout::ToStderr => {
            actions.add_dup2(2, 1)?;
            (None, None)
        }
    };
    let (stderr, child_stderr) = if pipe_stderr {
        let (ours, theirs) = pipe()?;
        actions.add_dup2(theirs.as_raw_fd(), 2)?;
        (Some(ours), Some(theirs))
    } else {
        (None, None)
    };
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    attr.set_pgroup(Pid::from_raw(0))?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut default = SigSet::empty();
    default.add(Signal::SIGPIPE);
    attr.set_sigdefault(&default)?;
    let path = c_string(job.path.as_os_str().as_bytes());
    let envp = env_strings(&job.env);
    let pid = posix_spawn(path.as_c_str(), &actions, &attr, &[&path], &envp)?;
    // Our copies of the child's ends must close, or its stdout never reaches EOF.
    drop((stdin, child_stdout, child_stderr));
    Ok(Spawned {
        pid,
        stdout: stdout.map(File::from),
        stderr: stderr.map(File::from),
    })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// /dev/null, or an empty pipe where there is none (a bare chroot): either reads as EOF.
fn empty_stdin() -> io::Result<OwnedFd> {
    match File::open("/dev/null") {
        Ok(null) => Ok(null.into()),
        Err(_) => Ok(pipe()?.0),
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// One write per line, so lines of scripts running at once do not interleave mid-line.
fn write_labelled(label: &str, line: &[u8]) {
    let mut labelled = Vec::with_capacity(label.len() + 2 + line.len());
    labelled.extend_from_slice(label.as_bytes());
    labelled.extend_from_slice(b"| ");
    labelled.extend_from_slice(line);
    let _ = io::stderr().lock().write_all(&labelled);
}
