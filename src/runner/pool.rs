//! The running scripts of one run, as a state machine that a [`super::Host`]'s loop drives:
//! [`Pool::pipes`] to poll, [`Pool::read`] when one is ready, [`Pool::exited`] for each reaped
//! child, [`Pool::tick`] after every wake-up and [`Pool::deadline`] for the poll's timeout.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::spawn::spawn;
use super::{Job, Limits, Outcomes, Ran, Stdout, KILL_GRACE, PIPE_GRACE};
use crate::duration::seconds;
use crate::error::{Error, Failure};
use crate::os::procfs;
use crate::os::shebang::explain_exec_error;

/// While the rest of a stopped script's group has its grace period, how often to ask whether
/// it is gone (its members are not our children, so nothing tells us).
const GROUP_CHECK: Duration = Duration::from_millis(20);
/// With `--jobs`, a stderr line longer than this is written in pieces.
const LONGEST_LABELLED_LINE: usize = 4096;

/// One of a running script's pipes, as [`Pool::pipes`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    Stdout(usize),
    Stderr(usize),
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

    /// `signal` now (SIGTERM, or the stop signal), SIGKILL after [`KILL_GRACE`] if the
    /// script is still there.
    fn stop(&mut self, signal: Signal, now: Instant) {
        self.signal_group(signal);
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

/// Whether the pool still starts scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Accepting,
    /// A job failed for good: nothing more starts; the results so far count.
    Failed,
    /// Nothing more starts and no result counts.
    Halted(Halt),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// By a stop signal: the run's error is [`Error::Interrupted`].
    Stopped(Signal),
    /// Given up (the command exited during a re-run): the run's error is [`Error::Cancelled`].
    Cancelled,
}

pub struct Pool {
    limits: Limits,
    jobs: Vec<Job>,
    parallel: usize,
    label_stderr: bool,
    next: usize,
    running: Vec<Running>,
    /// (job index, tries so far, not before)
    retries: Vec<(usize, u32, Instant)>,
    /// Per job: its result, or its last failure and the number of tries.
    outcomes: Vec<Option<Result<Ran, (Failure, u32)>>>,
    state: State,
}

impl Pool {
    /// A pool for `jobs`, at most `parallel` at once (0: all at once). Nothing starts before
    /// the first [`Pool::tick`].
    pub fn new(jobs: Vec<Job>, parallel: usize, limits: Limits) -> Pool {
        let parallel = if parallel == 0 {
            jobs.len().max(1)
        } else {
            parallel
        };
        Pool {
            limits,
            label_stderr: parallel > 1 && jobs.len() > 1,
            outcomes: jobs.iter().map(|_| None).collect(),
            jobs,
            parallel,
            next: 0,
            running: Vec::new(),
            retries: Vec::new(),
            state: State::Accepting,
        }
    }

    /// Nothing runs and nothing is left to start.
    pub fn is_finished(&self) -> bool {
        self.running.is_empty() && !self.has_work_left()
    }

    /// The outcomes in the jobs' order; a stop signal is the error of the whole run.
    pub fn into_outcomes(self) -> Result<Outcomes, Error> {
        match self.state {
            State::Halted(Halt::Stopped(signal)) => return Err(Error::Interrupted { signal }),
            State::Halted(Halt::Cancelled) => return Err(Error::Cancelled),
            State::Accepting | State::Failed => {}
        }
        let paths = self.jobs.into_iter().map(|job| job.path);
        Ok(self
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

    /// The pipes to poll for reading.
    pub fn pipes(&self) -> Vec<(BorrowedFd<'_>, Pipe)> {
        let mut pipes = Vec::new();
        for (slot, running) in self.running.iter().enumerate() {
            if let Some(stdout) = &running.stdout {
                pipes.push((stdout.as_fd(), Pipe::Stdout(slot)));
            }
            if let Some(stderr) = &running.stderr {
                pipes.push((stderr.as_fd(), Pipe::Stderr(slot)));
            }
        }
        pipes
    }

    /// The nearest moment [`Pool::tick`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        // A retry waits for a free slot as well as for its time: while every slot is taken,
        // its passed time would wake the loop at once, again and again; a slot frees with a
        // child's exit, which wakes the loop anyway.
        let slot_free = self.running.len() < self.parallel;
        let retry_at = self
            .retries
            .iter()
            .filter(|_| slot_free)
            .map(|(_, _, at)| *at);
        self.running
            .iter()
            .filter_map(|running| running.next_deadline(now))
            .chain(retry_at)
            .min()
    }

    /// Handles what is due: timeouts, kills, closing pipes, collecting finished scripts, and
    /// starting the scripts that may start.
    pub fn tick(&mut self) {
        let now = Instant::now();
        self.handle_deadlines(now);
        self.collect_finished();
        self.start_due_jobs();
    }

    /// A stop signal: it goes to every running script's group, nothing more starts, and the
    /// run's result is [`Error::Interrupted`].
    pub fn stop(&mut self, signal: Signal) {
        if matches!(self.state, State::Halted(_)) {
            return;
        }
        log::warn!("got {}: stopping the running scripts", signal.as_str());
        self.halt(Halt::Stopped(signal), signal);
    }

    /// Gives the run up: the running scripts get SIGTERM, nothing more starts, and the
    /// result is [`Error::Cancelled`].
    pub fn cancel(&mut self) {
        if !matches!(self.state, State::Halted(_)) {
            self.halt(Halt::Cancelled, Signal::SIGTERM);
        }
    }

    fn halt(&mut self, halt: Halt, signal: Signal) {
        self.state = State::Halted(halt);
        self.retries.clear();
        let now = Instant::now();
        for running in &mut self.running {
            running.stop(signal, now);
        }
    }

    /// A reaped child: returns whether it was one of this pool's scripts. A status that is
    /// no exit (a stopped script) is not one.
    pub fn exited(&mut self, pid: Pid, status: WaitStatus) -> bool {
        if !matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
            return false;
        }
        let Some(running) = self.running.iter_mut().find(|r| r.group == pid) else {
            return false;
        };
        running.exit = Some(status);
        running.timeout_at = None;
        if running.stdout.is_some() || running.stderr.is_some() {
            running.pipes_close_at = Some(Instant::now() + PIPE_GRACE);
        }
        true
    }

    /// Reads what is ready on `pipe`.
    pub fn read(&mut self, pipe: Pipe) {
        match pipe {
            Pipe::Stdout(slot) => self.read_stdout(slot),
            Pipe::Stderr(slot) => self.read_stderr(slot),
        }
    }

    /// Whether jobs may still start (or start again).
    fn accepting(&self) -> bool {
        self.state == State::Accepting
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
                    timeout_at: self.limits.timeout.map(|limit| started + limit),
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
                let limit = self.limits.timeout.unwrap_or_default();
                running.failure.get_or_insert(Failure::TimedOut(limit));
                running.stop(Signal::SIGTERM, now);
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
        if running.abandoned || matches!(self.state, State::Halted(_)) {
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
        let limits = self.limits;
        if failure.is_retryable() && tries <= limits.retries && self.accepting() {
            log::warn!(
                "{}: {failure}; trying again in {}s (try {} of {})",
                path.display(),
                seconds(limits.retry_interval),
                tries + 1,
                limits.retries + 1
            );
            self.retries
                .push((index, tries, Instant::now() + limits.retry_interval));
            return;
        }
        self.outcomes[index] = Some(Err((failure, tries)));
        self.state = State::Failed;
        self.retries.clear();
        let now = Instant::now();
        for running in &mut self.running {
            if running.exit.is_none() && !running.abandoned {
                running.abandoned = true;
                running.stop(Signal::SIGTERM, now);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::ffi::OsString;
    use std::path::PathBuf;
    use std::process::Command;

    use nix::sys::wait::{waitpid, WaitPidFlag};
    use tempfile::TempDir;

    use super::*;
    use crate::os::poll::Poll;

    /// How long one test may drive its pool: reached only when something hangs.
    const GIVE_UP: Duration = Duration::from_secs(20);
    /// No SIGCHLD reaches a test as an event (the harness's signalfd is not set up here), so
    /// the driver asks waitpid about the pool's children at least this often.
    const REAP_EVERY: Duration = Duration::from_millis(10);
    /// A script that is meant to be stopped runs this long otherwise: far past `GIVE_UP`.
    const LONG: &str = "sleep 60";

    const NO_RETRIES: Limits = Limits {
        timeout: None,
        retries: 0,
        retry_interval: Duration::ZERO,
    };
    const CAPTURE: Stdout = Stdout::Capture { limit: 64 * 1024 };

    /// A directory of scripts and of the files they leave behind.
    struct Scripts {
        dir: TempDir,
    }

    impl Scripts {
        fn new() -> Scripts {
            Scripts {
                dir: tempfile::tempdir().expect("creating a temporary directory"),
            }
        }

        fn file(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// A job running the `#!/bin/sh` script `body`, with `$DIR` the scripts' directory.
        /// A child process writes the script: a descriptor open for writing on it in this
        /// process could be inherited by a child that another test thread forks meanwhile,
        /// and the script's exec would then fail with ETXTBSY.
        fn job(&self, name: &str, body: &str) -> Job {
            let path = self.file(name);
            let written = Command::new("/bin/sh")
                .args(["-c", r#"printf '%s\n' "$2" >"$1" && chmod 755 "$1""#, "sh"])
                .arg(&path)
                .arg(format!("#!/bin/sh\n{body}"))
                .status()
                .expect("running sh to write a script");
            assert!(written.success(), "writing {}", path.display());
            Job {
                path,
                env: std::rc::Rc::new(
                    [
                        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                        (OsString::from("DIR"), self.dir.path().into()),
                    ]
                    .as_slice()
                    .into(),
                ),
                stdout: CAPTURE,
            }
        }

        fn exists(&self, name: &str) -> bool {
            self.file(name).exists()
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.file(name)).unwrap_or_default()
        }
    }

    /// The pids of the pool's scripts that have not been reaped yet.
    fn unreaped(pool: &Pool) -> Vec<Pid> {
        pool.running
            .iter()
            .filter(|running| running.exit.is_none())
            .map(|running| running.group)
            .collect()
    }

    /// Hands the pool the exits of its own children. Only their pids are asked about:
    /// `waitpid(-1)` would reap the children of other tests running in this process.
    fn reap_own(pool: &mut Pool) {
        for pid in unreaped(pool) {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => {}
                Ok(status) => {
                    pool.exited(pid, status);
                }
            }
        }
    }

    /// Plays the host ([`super::super::host::PhaseHost`] without signals): polls the pool's
    /// pipes until its deadline, reads the ready ones, hands it its children's exits and
    /// ticks, until it is finished. `meanwhile` sees the pool after every wake-up (to stop
    /// or cancel it). Returns the process groups of every script that ran.
    fn drive(pool: &mut Pool, mut meanwhile: impl FnMut(&mut Pool)) -> BTreeSet<Pid> {
        let give_up = Instant::now() + GIVE_UP;
        let mut groups = BTreeSet::new();
        loop {
            pool.tick();
            groups.extend(pool.running.iter().map(|running| running.group));
            if pool.is_finished() {
                return groups;
            }
            if Instant::now() >= give_up {
                kill_and_reap(pool);
                panic!("the pool did not finish within {GIVE_UP:?}");
            }
            let reap_at = Instant::now() + REAP_EVERY;
            let wake_at = pool.deadline().map_or(reap_at, |at| at.min(reap_at));
            let mut poll = Poll::default();
            for (fd, pipe) in pool.pipes() {
                poll.add(fd, pipe);
            }
            for pipe in poll.wait(Some(wake_at)).expect("polling the pipes") {
                pool.read(pipe);
            }
            reap_own(pool);
            meanwhile(pool);
        }
    }

    /// Leaves nothing running behind a test that failed.
    fn kill_and_reap(pool: &Pool) {
        for running in &pool.running {
            let _ = killpg(running.group, Signal::SIGKILL);
            if running.exit.is_none() {
                let _ = waitpid(running.group, None);
            }
        }
    }

    fn run(
        jobs: Vec<Job>,
        parallel: usize,
        limits: Limits,
    ) -> (Result<Outcomes, Error>, BTreeSet<Pid>) {
        let mut pool = Pool::new(jobs, parallel, limits);
        let groups = drive(&mut pool, |_| {});
        (pool.into_outcomes(), groups)
    }

    fn assert_all_gone(groups: &BTreeSet<Pid>) {
        assert!(!groups.is_empty(), "no script ran");
        for group in groups {
            assert!(
                !group_has_a_living_member(*group),
                "a process of group {group} still runs"
            );
        }
    }

    fn output(outcome: &Option<Result<Ran, Error>>) -> String {
        match outcome {
            Some(Ok(ran)) => String::from_utf8_lossy(&ran.output).into_owned(),
            other => panic!("expected a success, got {other:?}"),
        }
    }

    /// The failure and the number of tries of an outcome that is a script's failure.
    fn failure(outcome: &Option<Result<Ran, Error>>) -> (&Failure, u32) {
        match outcome {
            Some(Err(Error::Script { failure, tries, .. })) => (failure, *tries),
            other => panic!("expected a script's failure, got {other:?}"),
        }
    }

    #[test]
    fn results_come_back_in_the_jobs_order_not_the_order_they_finished_in() {
        let scripts = Scripts::new();
        // `first` cannot finish before `second` has: they run at once, and the last job
        // starts in the slot `second` frees.
        let jobs = vec![
            scripts.job(
                "first",
                r#"while [ ! -e "$DIR/second-done" ]; do sleep 0.01; done; echo first"#,
            ),
            scripts.job("second", r#"echo second; touch "$DIR/second-done""#),
            scripts.job("third", "echo third"),
        ];
        let (outcomes, groups) = run(jobs, 2, NO_RETRIES);
        let outcomes = outcomes.expect("no stop signal");
        let outputs: Vec<String> = outcomes.iter().map(output).collect();
        assert_eq!(outputs, ["first\n", "second\n", "third\n"]);
        assert_eq!(groups.len(), 3);
    }

    #[test]
    fn a_failing_script_is_retried_apart_and_its_last_failure_reported_with_the_tries() {
        let scripts = Scripts::new();
        let job = scripts.job("flaky", r#"echo try >>"$DIR/tries"; exit 3"#);
        let interval = Duration::from_millis(300);
        let limits = Limits {
            retries: 2,
            retry_interval: interval,
            ..NO_RETRIES
        };
        let started = Instant::now();
        let (outcomes, _) = run(vec![job], 1, limits);
        let elapsed = started.elapsed();
        let outcomes = outcomes.expect("no stop signal");
        let (last, tries) = failure(&outcomes[0]);
        assert!(matches!(last, Failure::Exited(3)), "{last:?}");
        assert_eq!(tries, 3);
        assert_eq!(scripts.read("tries").lines().count(), 3);
        assert!(elapsed >= interval * 2, "3 tries in {elapsed:?}");
        let message = outcomes[0]
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap_err()
            .to_string();
        assert!(message.contains("(after 3 tries)"), "{message}");
    }

    #[test]
    fn a_retry_that_succeeds_is_a_success() {
        let scripts = Scripts::new();
        let job = scripts.job(
            "third-time-lucky",
            r#"echo try >>"$DIR/tries"; [ "$(wc -l <"$DIR/tries")" -ge 3 ] || exit 1; echo ok"#,
        );
        let limits = Limits {
            retries: 5,
            retry_interval: Duration::from_millis(10),
            ..NO_RETRIES
        };
        let (outcomes, _) = run(vec![job], 1, limits);
        assert_eq!(output(&outcomes.expect("no stop signal")[0]), "ok\n");
        assert_eq!(scripts.read("tries").lines().count(), 3);
    }

    #[test]
    fn a_script_over_the_timeout_fails_timed_out_and_its_group_gets_sigterm() {
        let scripts = Scripts::new();
        // The background sleep is in the script's group: the SIGTERM must reach it too.
        let job = scripts.job(
            "slow",
            &format!(r#"trap 'echo TERM >"$DIR/got"; exit 1' TERM; {LONG} & wait"#),
        );
        let limit = Duration::from_millis(300);
        let limits = Limits {
            timeout: Some(limit),
            ..NO_RETRIES
        };
        let started = Instant::now();
        let (outcomes, groups) = run(vec![job], 1, limits);
        let outcomes = outcomes.expect("no stop signal");
        let (failure, tries) = failure(&outcomes[0]);
        assert!(
            matches!(failure, Failure::TimedOut(at) if *at == limit),
            "{failure:?}"
        );
        assert_eq!(tries, 1);
        assert!(failure.to_string().contains("timed out"), "{failure}");
        assert_eq!(scripts.read("got"), "TERM\n");
        // Gone with the SIGTERM, not with the SIGKILL that would follow KILL_GRACE later.
        assert!(
            started.elapsed() < limit + KILL_GRACE,
            "{:?}",
            started.elapsed()
        );
        assert_all_gone(&groups);
    }

    #[test]
    fn cancel_ends_the_run_as_cancelled_and_the_scripts_are_gone() {
        let scripts = Scripts::new();
        let body = |name: &str| format!(r#"touch "$DIR/{name}-ready"; {LONG} & wait"#);
        let jobs = vec![
            scripts.job("one", &body("one")),
            scripts.job("two", &body("two")),
            scripts.job("never", r#"touch "$DIR/never-ran""#),
        ];
        let mut pool = Pool::new(jobs, 2, NO_RETRIES);
        let groups = drive(&mut pool, |pool| {
            if scripts.exists("one-ready") && scripts.exists("two-ready") {
                pool.cancel();
            }
        });
        assert!(matches!(pool.into_outcomes(), Err(Error::Cancelled)));
        assert!(!scripts.exists("never-ran"));
        assert_eq!(groups.len(), 2);
        assert_all_gone(&groups);
    }

    #[test]
    fn a_retry_pending_when_the_run_is_cancelled_never_starts() {
        let scripts = Scripts::new();
        // `lingering` outlives its SIGTERM by far more than the retry interval: a retry
        // that survived the cancel would start meanwhile.
        let jobs = vec![
            scripts.job(
                "lingering",
                &format!(r#"trap 'sleep 0.5; exit 1' TERM; {LONG} & wait"#),
            ),
            scripts.job("flaky", r#"echo try >>"$DIR/tries"; exit 1"#),
        ];
        let limits = Limits {
            retries: 3,
            retry_interval: Duration::from_millis(50),
            ..NO_RETRIES
        };
        let mut pool = Pool::new(jobs, 2, limits);
        let groups = drive(&mut pool, |pool| {
            if !pool.retries.is_empty() {
                pool.cancel();
            }
        });
        assert!(matches!(pool.into_outcomes(), Err(Error::Cancelled)));
        assert_eq!(scripts.read("tries").lines().count(), 1);
        assert_eq!(groups.len(), 2);
        assert_all_gone(&groups);
    }

    #[test]
    fn a_stop_signal_goes_to_the_scripts_and_ends_the_run_as_interrupted() {
        let scripts = Scripts::new();
        let jobs = vec![
            scripts.job(
                "waiting",
                &format!(
                    r#"trap 'echo INT >"$DIR/got"; exit 130' INT; touch "$DIR/ready"; {LONG}"#
                ),
            ),
            scripts.job("never", r#"touch "$DIR/never-ran""#),
        ];
        let mut pool = Pool::new(jobs, 1, NO_RETRIES);
        let groups = drive(&mut pool, |pool| {
            if scripts.exists("ready") {
                pool.stop(Signal::SIGINT);
            }
        });
        match pool.into_outcomes() {
            Err(Error::Interrupted { signal }) => assert_eq!(signal, Signal::SIGINT),
            other => panic!("expected Interrupted, got {other:?}"),
        }
        assert_eq!(scripts.read("got"), "INT\n");
        assert!(!scripts.exists("never-ran"));
        assert_all_gone(&groups);
    }

    #[test]
    fn output_past_the_capture_limit_fails_without_a_retry() {
        let scripts = Scripts::new();
        let job = Job {
            stdout: Stdout::Capture { limit: 1000 },
            ..scripts.job(
                "chatty",
                r#"echo try >>"$DIR/tries"; while :; do echo 0123456789; done"#,
            )
        };
        let limits = Limits {
            retries: 2,
            retry_interval: Duration::from_millis(10),
            ..NO_RETRIES
        };
        let (outcomes, groups) = run(vec![job], 1, limits);
        let outcomes = outcomes.expect("no stop signal");
        let (failure, tries) = failure(&outcomes[0]);
        assert!(
            matches!(failure, Failure::OutputTooLarge(1000)),
            "{failure:?}"
        );
        assert_eq!(tries, 1);
        assert_eq!(scripts.read("tries").lines().count(), 1);
        assert_all_gone(&groups);
    }

    #[test]
    fn after_a_job_fails_for_good_the_others_are_stopped_and_count_as_none() {
        let scripts = Scripts::new();
        let jobs = vec![
            scripts.job("slow", &format!(r#"touch "$DIR/slow-ready"; {LONG}"#)),
            scripts.job(
                "failing",
                r#"while [ ! -e "$DIR/slow-ready" ]; do sleep 0.01; done; exit 7"#,
            ),
            scripts.job("never", r#"touch "$DIR/never-ran""#),
        ];
        let (outcomes, groups) = run(jobs, 2, NO_RETRIES);
        let outcomes = outcomes.expect("a failure is no error of the whole run");
        assert!(outcomes[0].is_none(), "{:?}", outcomes[0]);
        let (failure, tries) = failure(&outcomes[1]);
        assert!(matches!(failure, Failure::Exited(7)), "{failure:?}");
        assert_eq!(tries, 1);
        assert!(outcomes[2].is_none(), "{:?}", outcomes[2]);
        assert!(!scripts.exists("never-ran"));
        assert_eq!(groups.len(), 2);
        assert_all_gone(&groups);
    }
}
