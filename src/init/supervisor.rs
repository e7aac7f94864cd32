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
use super::signals::{Signals, FORWARDED_ONLY, STOP_SIGNALS};
use super::start::{spawn, stdin_is_a_terminal};
use super::wait_readable;
use crate::error::Error;
use crate::exec::display;
use crate::runner::{Host, Limits, Pool};
use crate::variables::Environment;
use crate::watch::{Change, OnChange, Watching};

/// `--init` settings (SPEC.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supervision {
    pub group: bool,
    pub stop_timeout: Duration,
}

/// Starts the command, supervises it (re-running discovery under `--watch`) until it and
/// every orphan are gone, and returns the command's exit status (128+N if signal N killed
/// it). `env` ends as the environment of the command that ran last, for teardown.
pub fn supervise(
    command: &[OsString],
    env: &mut Environment,
    signals: &Signals,
    settings: Supervision,
    limits: Limits,
    mut watching: Option<Watching>,
    rerun_requested: bool,
) -> Result<i32, Error> {
    become_subreaper();
    signals
        .watch_forwarded()
        .map_err(|err| Error::io("signalfd", "watching signals", err))?;
    let child = spawn(command, env, signals)?;
    log::debug!("started {} as pid {child}", display(&command[0]));
    let mut supervisor = Supervisor {
        signals,
        settings,
        limits,
        command,
        env,
        child,
        status: None,
        kill_at: None,
        stopping: false,
        rerun_requested: false,
    };
    let status = supervisor.until_command_exits(watching.as_mut(), rerun_requested);
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
    /// A SIGHUP under `--watch` that no re-run has answered yet.
    rerun_requested: bool,
}

impl Supervisor<'_> {
    /// `rerun_requested`: a SIGHUP came during the phases (under `--watch`).
    fn until_command_exits(
        &mut self,
        mut watching: Option<&mut Watching>,
        mut rerun_requested: bool,
    ) -> Result<i32, Error> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            rerun_requested |= std::mem::take(&mut self.rerun_requested);
            let watch_deadline = match watching.as_deref_mut() {
                Some(watching) if !self.stopping => {
                    if rerun_requested || watching.is_due(Instant::now()) {
                        rerun_requested = false;
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

    /// One wake-up of the loop: sleeps in `poll` on the signalfd (and the pipes of `pool`, a
    /// re-run's scripts) until something happens or a deadline passes, then handles it.
    fn turn(
        &mut self,
        mut pool: Option<&mut Pool>,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        let deadline = [
            deadline,
            self.kill_at,
            pool.as_ref().and_then(|p| p.deadline()),
        ]
        .into_iter()
        .flatten()
        .min();
        let (pipes, signals_ready) = {
            let pipes = pool.as_ref().map(|pool| pool.pipes()).unwrap_or_default();
            let mut fds = vec![self.signals.as_fd()];
            fds.extend(pipes.iter().map(|(fd, _)| *fd));
            let ready = wait_readable(&fds, deadline)?;
            let signals_ready = ready.contains(&0);
            let ready_pipes: Vec<_> = ready
                .into_iter()
                .filter(|at| *at > 0)
                .map(|at| pipes[at - 1].1)
                .collect();
            (ready_pipes, signals_ready)
        };
        if let Some(pool) = pool.as_deref_mut() {
            for pipe in pipes {
                pool.read(pipe);
            }
        }
        if signals_ready {
            self.handle_signals(pool.as_deref_mut())?;
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
        if self.status.is_some() || self.stopping {
            return Ok(());
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
        while self.status.is_none() {
            self.turn(None, None)?;
        }
        if self.stopping {
            return Ok(());
        }
        self.kill_at = None;
        change.write_templates();
        *self.env = change.env;
        self.child = spawn(self.command, self.env, self.signals)?;
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
        self.signal_command(signal);
        if matches!(signal, Signal::SIGTERM | Signal::SIGINT) {
            self.stopping = true;
            self.kill_at
                .get_or_insert(Instant::now() + self.settings.stop_timeout);
        }
    }

    fn signal_command(&self, signal: Signal) {
        // ESRCH: it exited and is about to be reaped.
        let _ = if self.settings.group {
            killpg(self.child, signal)
        } else {
            kill(self.child, signal)
        };
    }

    /// Reaps every child that has exited, noting the command's status and handing a re-run's
    /// scripts to `pool`; returns whether any child is left.
    fn reap(&mut self, mut pool: Option<&mut Pool>) -> bool {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.child => self.status = Some(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == self.child => {
                    self.status = Some(128 + signal as i32)
                }
                Ok(WaitStatus::Stopped(pid, _)) if pid == self.child => self.follow_stop(),
                Ok(status @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, ..))) => {
                    if let Some(pool) = pool.as_deref_mut() {
                        pool.exited(pid, status);
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
