//! `--init` (SPEC.md 6): the command becomes a child and the harness stays as its parent,
//! doing what tini and dumb-init do as PID 1, plus giving orphans time for their cleanup.
//!
//! - The command is started in a process group of its own (as tini does), and when the
//!   harness's stdin is a terminal that group is made the terminal's foreground, so Ctrl-C and
//!   job control reach the command as they would without envharness.
//! - SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH and SIGCONT are forwarded to
//!   the command (`--group`: to its process group). They are blocked from the harness's start
//!   and read from the signalfd, so one that arrives while the command is being started is
//!   delivered once it runs. After SIGTERM or SIGINT the command has `--stop-timeout` to exit
//!   before SIGKILL.
//! - Every child is reaped in a `waitpid(-1, WNOHANG)` loop (SIGCHLDs coalesce). When the
//!   harness is not PID 1 it becomes a child subreaper, so orphans of the command come to it.
//! - When the command has exited, the processes left under the harness get SIGTERM and up to
//!   `--stop-timeout` to exit, then SIGKILL; the harness returns only when none is left.
//! - Under `--watch` (SPEC.md 7) the same loop re-runs discovery: [`Supervisor::turn`] is the
//!   one `poll`, and a re-run's scripts are a [`Pool`] it drives between its other events, so
//!   the command stays supervised while they run. SIGHUP then asks for a re-run and is not
//!   forwarded; a change restarts or signals the command.
//! - With a registry (SPEC.md 11), the same loop publishes what the export phase announced
//!   once the command runs (and `health` passed), renews the lease, withdraws the keys before a
//!   SIGTERM or SIGINT is forwarded and when the command exits, runs `health`
//!   ([`Health`]) on its interval, and re-runs discovery when what the scripts read changed.
//!   The store is reached through a thread ([`Registration`]): its answers are one more
//!   descriptor of the poll.
//! - It sleeps in `poll`, with a timeout only while a deadline is pending: an idle supervisor
//!   uses no CPU.
//!
//! The export directory's `teardown` runs after this returns (see `lib.rs`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::children::children;
use super::health::{Health, Verdict};
use super::signals::{Signals, FORWARDED_ONLY, STOP_SIGNALS};
use super::start::{spawn, stdin_is_a_terminal};
use super::wait_readable;
use crate::error::Error;
use crate::exec::display;
use crate::phase::export::find_health;
use crate::plan::Plan;
use crate::registry::publish::{Registration, WITHDRAW_WAIT};
use crate::registry::Lookup;
use crate::runner::{Host, Limits, Pipe, Pool};
use crate::variables::Environment;
use crate::watch::{Change, OnChange, Watching};

/// `--init` settings (SPEC.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supervision {
    pub group: bool,
    pub stop_timeout: Duration,
    /// How often the export directory's `health` runs (SPEC.md 11.4).
    pub health_interval: Duration,
}

/// What the supervisor does besides supervising, when asked for.
pub struct Extras<'a> {
    /// `--watch`.
    pub watching: Option<Watching<'a>>,
    /// The registry: what to publish, and the watch for re-runs.
    pub registration: Option<Registration>,
    /// What the first discovery's scripts read through `envharness kv`.
    pub first_reads: Vec<(Lookup, String)>,
    /// A SIGHUP came during the phases (under `--watch`).
    pub rerun_requested: bool,
}

/// Starts the command, supervises it (re-running discovery under `--watch`) until it and
/// every orphan are gone, and returns the command's exit status (128+N if signal N killed
/// it). `env` ends as the environment of the command that ran last, for teardown.
pub fn supervise(
    plan: &Plan,
    command: &[OsString],
    env: &mut Environment,
    signals: &Signals,
    settings: Supervision,
    extras: Extras,
) -> Result<i32, Error> {
    become_subreaper();
    signals
        .watch_forwarded()
        .map_err(|err| Error::io("signalfd", "watching signals", err))?;
    let child = spawn(command, env, signals)?;
    log::debug!("started {} as pid {child}", display(&command[0]));
    // From here on the harness runs for as long as the command: memory it frees must be
    // reused, which the start-up arena does not do.
    crate::arena::end_startup();
    let Extras {
        mut watching,
        mut registration,
        first_reads,
        rerun_requested,
    } = extras;
    let health =
        find_health(&plan.export).map(|entry| Health::new(entry.path, settings.health_interval));
    if let Some(registration) = registration.as_mut() {
        registration.set_reads(first_reads);
        if health.is_none() {
            registration.publish();
        }
    }
    let mut supervisor = Supervisor {
        signals,
        settings,
        limits: plan.limits,
        command,
        env,
        child,
        status: None,
        kill_at: None,
        stopping: false,
        rerun_requested,
        registration,
        health,
        unhealthy: false,
        restarting: false,
    };
    let status = supervisor.until_command_exits(watching.as_mut());
    supervisor.withdraw();
    supervisor.stop_orphans()?;
    status
}

fn become_subreaper() {
    if nix::unistd::getpid().as_raw() == 1 {
        return;
    }
    if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
        log::warn!("cannot become a child subreaper ({err}); orphans of the command will not be reaped by envharness");
    }
}

/// How long to wait, after SIGKILL, for processes left behind that still do not go away.
const GIVE_UP_AFTER_SIGKILL: Duration = Duration::from_secs(2);

struct Supervisor<'s> {
    signals: &'s Signals,
    settings: Supervision,
    limits: Limits,
    command: &'s [OsString],
    env: &'s mut Environment,
    child: Pid,
    status: Option<i32>,
    /// After SIGTERM/SIGINT (or a restart's SIGTERM): when the command gets SIGKILL if it is
    /// still there.
    kill_at: Option<Instant>,
    /// SIGTERM or SIGINT came: no re-run or restart starts any more.
    stopping: bool,
    /// A SIGHUP under `--watch` (or a registry change) that no re-run has answered yet.
    rerun_requested: bool,
    registration: Option<Registration>,
    health: Option<Health>,
    /// `health`'s last run failed: its failing stretch was warned about.
    unhealthy: bool,
    /// A restart is stopping the old command: its exit is not the service going away.
    restarting: bool,
}

impl Supervisor<'_> {
    fn until_command_exits(&mut self, mut watching: Option<&mut Watching>) -> Result<i32, Error> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            if let Some(registration) = self.registration.as_mut() {
                self.rerun_requested |= registration.take_change();
            }
            let watch_deadline = match watching.as_deref_mut() {
                Some(watching) if !self.stopping => {
                    if self.rerun_requested || watching.is_due(Instant::now()) {
                        self.rerun_requested = false;
                        self.rerun(watching)?;
                        continue;
                    }
                    watching.deadline()
                }
                _ => None,
            };
            self.turn(None, watch_deadline)?;
        }
    }

    /// One wake-up of the loop: sleeps in `poll` on the signalfd, the pipes of the scripts
    /// that run (a re-run's `pool`, a health check) and the registry's descriptors, until
    /// something happens or a deadline passes, then handles it.
    fn turn(
        &mut self,
        mut pool: Option<&mut Pool>,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        self.check_health();
        let deadline = [
            deadline,
            self.kill_at,
            pool.as_ref().and_then(|p| p.deadline()),
            // Health is not moved on once the command is gone or stopping (check_health):
            // its passed deadline would wake the loop at once, again and again.
            self.health
                .as_ref()
                .filter(|_| self.status.is_none() && !self.stopping)
                .and_then(Health::deadline),
            self.registration.as_ref().and_then(Registration::deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        let (rerun_pipes, health_pipes, signals_ready) = {
            let rerun = pool.as_ref().map(|pool| pool.pipes()).unwrap_or_default();
            let health = self
                .health
                .as_ref()
                .and_then(Health::running_ref)
                .map(Pool::pipes)
                .unwrap_or_default();
            let mut fds = vec![self.signals.as_fd()];
            fds.extend(rerun.iter().map(|(fd, _)| *fd));
            fds.extend(health.iter().map(|(fd, _)| *fd));
            if let Some(registration) = &self.registration {
                fds.extend(registration.fds());
            }
            let ready = wait_readable(&fds, deadline)?;
            let pick = |pipes: &[(std::os::fd::BorrowedFd, Pipe)], offset: usize| -> Vec<Pipe> {
                ready
                    .iter()
                    .filter(|at| (offset..offset + pipes.len()).contains(*at))
                    .map(|at| pipes[at - offset].1)
                    .collect()
            };
            (
                pick(&rerun, 1),
                pick(&health, 1 + rerun.len()),
                ready.contains(&0),
            )
        };
        if let Some(pool) = pool.as_deref_mut() {
            for pipe in rerun_pipes {
                pool.read(pipe);
            }
        }
        if let Some(running) = self.health.as_mut().and_then(Health::running) {
            for pipe in health_pipes {
                running.read(pipe);
            }
        }
        if signals_ready {
            self.handle_signals(pool.as_deref_mut())?;
        }
        if let Some(registration) = self.registration.as_mut() {
            registration.handle();
        }
        if self.status.is_some() {
            // The command is gone: a re-run's result could not be applied any more.
            if let Some(pool) = pool {
                pool.cancel();
            }
        } else if self.kill_at.is_some_and(|at| at <= Instant::now()) {
            log::warn!(
                "the command did not exit {}s after being told to stop: SIGKILL",
                self.settings.stop_timeout.as_secs_f64()
            );
            self.signal_command(Signal::SIGKILL);
            self.kill_at = None;
        }
        Ok(())
    }

    /// Moves `health` on: starts a due run, and acts on a finished one's verdict (SPEC.md
    /// 11.4): the first pass publishes, a failure withdraws with one warning per failing
    /// stretch, a pass after failures publishes again.
    fn check_health(&mut self) {
        if self.status.is_some() || self.stopping {
            return;
        }
        let Some(health) = self.health.as_mut() else {
            return;
        };
        let Some(verdict) = health.tick(self.env, self.limits) else {
            return;
        };
        match verdict {
            Verdict::Passed => {
                if std::mem::take(&mut self.unhealthy) {
                    log::warn!("health passes again; publishing the keys again");
                }
                if let Some(registration) = self.registration.as_mut() {
                    registration.publish();
                }
            }
            Verdict::Failed(err) => {
                if !std::mem::replace(&mut self.unhealthy, true) {
                    let what = if self.registration.is_some() {
                        "withdrawing the published keys until it passes"
                    } else {
                        "the command keeps running"
                    };
                    log::warn!("{err}; {what}");
                }
                if let Some(registration) = self.registration.as_mut() {
                    registration.withdraw(None);
                }
            }
        }
    }

    /// The service goes away: its keys first, at most [`WITHDRAW_WAIT`].
    fn withdraw(&mut self) {
        if let Some(registration) = self.registration.as_mut() {
            registration.withdraw(Some(WITHDRAW_WAIT));
        }
    }

    fn handle_signals(&mut self, mut pool: Option<&mut Pool>) -> Result<(), Error> {
        while let Some(signal) = self
            .signals
            .next()
            .map_err(|err| Error::io("signalfd", "reading signals", err))?
        {
            if signal == Signal::SIGCHLD {
                self.reap(pool.as_deref_mut());
            } else if self.signals.is_rerun_request(signal) {
                // Kept while a re-run or a restart is under way: one more re-run follows.
                self.rerun_requested = true;
            } else {
                self.forward(signal);
                if self.signals.is_stop(signal) {
                    if let Some(pool) = pool.as_deref_mut() {
                        pool.stop(signal);
                    }
                }
            }
        }
        Ok(())
    }

    /// Re-runs discovery while the loop goes on, then applies a change (SPEC.md 7).
    fn rerun(&mut self, watching: &mut Watching) -> Result<(), Error> {
        let change = watching.rerun(&mut Rerunning { supervisor: self });
        let reads = watching.take_reads();
        if self.status.is_some() || self.stopping {
            return Ok(());
        }
        if let (Some(registration), Some(reads)) = (self.registration.as_mut(), reads) {
            registration.set_reads(reads);
        }
        let Some(mut change) = change else {
            return Ok(());
        };
        match watching.on_change() {
            OnChange::Restart => {
                change.announce("restarting the command");
                self.restart(change)
            }
            OnChange::Signal(signal) => {
                change.announce(&format!("sending {}", signal.as_str()));
                change.write_templates();
                self.signal_command(signal);
                Ok(())
            }
        }
    }

    /// Stops the command as SIGTERM would and starts it again with the new environment.
    /// A SIGTERM or SIGINT that comes meanwhile cancels the restart: the old command's
    /// status is the harness's.
    fn restart(&mut self, mut change: Change) -> Result<(), Error> {
        self.signal_command(Signal::SIGTERM);
        self.kill_at
            .get_or_insert(Instant::now() + self.settings.stop_timeout);
        self.restarting = true;
        while self.status.is_none() {
            if let Err(err) = self.turn(None, None) {
                self.restarting = false;
                return Err(err);
            }
        }
        self.restarting = false;
        if self.stopping {
            return Ok(());
        }
        self.kill_at = None;
        change.write_templates();
        // The environment changes only with a command that runs with it (teardown gets it).
        self.child = spawn(self.command, &change.env, self.signals)?;
        *self.env = std::mem::take(&mut change.env);
        self.status = None;
        log::debug!(
            "restarted {} as pid {}",
            display(&self.command[0]),
            self.child
        );
        Ok(())
    }

    /// Job control: Ctrl-Z stopped the command, in its own process group, so the shell that
    /// started envharness would wait for it forever. When there is a terminal, envharness
    /// stops too, which gives the shell its prompt; on `fg` it hands the terminal back to the
    /// command's group and continues it.
    fn follow_stop(&mut self) {
        if !stdin_is_a_terminal() {
            return;
        }
        let _ = nix::sys::signal::raise(Signal::SIGSTOP);
        // Continued. Only a foreground group may take the terminal (a `bg` leaves it alone).
        // SAFETY: tcgetpgrp, getpgrp and tcsetpgrp only query and set the terminal's
        // foreground group.
        unsafe {
            if libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp() {
                libc::tcsetpgrp(libc::STDIN_FILENO, self.child.as_raw());
            }
        }
        self.signal_command(Signal::SIGCONT);
    }

    fn forward(&mut self, signal: Signal) {
        if !STOP_SIGNALS.contains(&signal) && !FORWARDED_ONLY.contains(&signal) {
            return;
        }
        log::debug!("forwarding {}", signal.as_str());
        let stop = matches!(signal, Signal::SIGTERM | Signal::SIGINT);
        if stop {
            // Consumers stop using the service before it stops serving (SPEC.md 11.3).
            self.withdraw();
        }
        self.signal_command(signal);
        if stop {
            self.stopping = true;
            self.kill_at
                .get_or_insert(Instant::now() + self.settings.stop_timeout);
        }
    }

    fn signal_command(&self, signal: Signal) {
        // Once reaped, its pid (and group) may already be another process's.
        if self.status.is_some() {
            return;
        }
        // ESRCH: it exited and is about to be reaped.
        let _ = if self.settings.group {
            killpg(self.child, signal)
        } else {
            kill(self.child, signal)
        };
    }

    /// Reaps every child that has exited, noting the command's status and handing a re-run's
    /// scripts to `pool`; returns whether any child is left.
    fn reap(&mut self, pool: Option<&mut Pool>) -> bool {
        let had_exited = self.status.is_some();
        let left = self.reap_all(pool);
        if self.status.is_some() && !had_exited && !self.restarting {
            // Withdrawn at once (SPEC.md 11.3), not only once a re-run's scripts are gone; a
            // restart is the same service, whose keys stay.
            self.withdraw();
        }
        left
    }

    fn reap_all(&mut self, mut pool: Option<&mut Pool>) -> bool {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.child => self.status = Some(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == self.child => {
                    self.status = Some(128 + signal as i32)
                }
                Ok(WaitStatus::Stopped(pid, _)) if pid == self.child => self.follow_stop(),
                Ok(status @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, ..))) => {
                    let rerun = pool
                        .as_deref_mut()
                        .is_some_and(|pool| pool.exited(pid, status));
                    if !rerun {
                        if let Some(running) = self.health.as_mut().and_then(Health::running) {
                            running.exited(pid, status);
                        }
                    }
                }
                Ok(WaitStatus::StillAlive) => return true,
                Err(_) => return false,
                Ok(_) => {}
            }
        }
    }

    /// After the command: SIGTERM to every process left under the harness, SIGKILL to those
    /// still there `--stop-timeout` later; returns when there are none (waitpid says so), or
    /// [`GIVE_UP_AFTER_SIGKILL`] after the SIGKILL if one cannot die (uninterruptible sleep).
    fn stop_orphans(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.settings.stop_timeout;
        let give_up = deadline + GIVE_UP_AFTER_SIGKILL;
        let mut told = HashSet::new();
        loop {
            if !self.reap(None) {
                return Ok(());
            }
            let left = children();
            let now = Instant::now();
            if now >= give_up {
                log::warn!(
                    "{} process(es) left behind survive SIGKILL; not waiting for them",
                    left.len()
                );
                return Ok(());
            }
            let past_deadline = now >= deadline;
            for pid in &left {
                if past_deadline {
                    let _ = kill(*pid, Signal::SIGKILL);
                } else if told.insert(*pid) {
                    log::info!("process {pid} was left behind by the command: SIGTERM");
                    let _ = kill(*pid, Signal::SIGTERM);
                }
            }
            if past_deadline {
                log::warn!(
                    "{} process(es) left behind did not exit within {}s: SIGKILL",
                    left.len(),
                    self.settings.stop_timeout.as_secs_f64()
                );
            }
            wait_readable(
                &[self.signals.as_fd()],
                Some(if past_deadline { give_up } else { deadline }),
            )?;
            // Only SIGCHLD matters now; the loop reaps on every pass.
            while self
                .signals
                .next()
                .map_err(|err| Error::io("signalfd", "reading signals", err))?
                .is_some()
            {}
        }
    }
}

/// The supervisor as the host of a re-run's scripts: each wake-up of its loop also serves the
/// command.
struct Rerunning<'a, 's> {
    supervisor: &'a mut Supervisor<'s>,
}

impl Host for Rerunning<'_, '_> {
    fn limits(&self) -> Limits {
        self.supervisor.limits
    }

    fn drive(&mut self, pool: &mut Pool) -> Result<(), Error> {
        loop {
            pool.tick();
            if pool.is_finished() {
                return Ok(());
            }
            self.supervisor.turn(Some(pool), None)?;
        }
    }
}
