//! The supervisor's loop: wait for the next event, handle it. Its state is where the command
//! is ([`Child`]) and what the supervisor is doing with the service ([`Course`]); everything
//! that can happen (a signal, a child's exit, a script's output, a registry answer, a deadline)
//! is one descriptor or one deadline of the one `poll` in [`Supervisor::turn`].

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::drain::Drain;
use super::health::{Health, Turn};
use super::rerun::{Change, OnChange, Reruns};
use super::start::{spawn, stdin_is_a_terminal, Start};
use super::{Service, Supervision};
use crate::duration::seconds;
use crate::error::Error;
use crate::exec::display;
use crate::os::children::{children, reap};
use crate::os::poll::Poll;
use crate::os::signals::{Signals, FORWARDED_ONLY, STOP_SIGNALS};
use crate::os::user::Switch;
use crate::phase::export::{find_health, find_prestop};
use crate::phase::Directory;
use crate::registry::publish::{Registration, WITHDRAW_WAIT};
use crate::runner::{Host, Limits, Pipe, Pool};

/// Starts the command, supervises it (re-running discovery under `--watch`) until it and
/// every orphan are gone, and returns the command's exit status (128+N if signal N killed
/// it). `service.env` ends as the environment of the command that ran last, for teardown.
pub fn supervise(
    service: &mut Service,
    signals: &Signals,
    settings: &Supervision,
    registration: Option<Registration>,
    mut reruns: Option<Reruns>,
) -> Result<i32, Error> {
    become_subreaper();
    signals
        .read_forwarded()
        .map_err(|err| Error::io("signalfd", "watching signals", err))?;
    let pid = spawn(
        &Start {
            command: service.command,
            env: &service.env,
            home_from_directory: service.home_from_directory,
            found: service.found.as_ref(),
            user: service.user,
        },
        signals,
    )?;
    log::debug!("started {} as pid {pid}", display(&service.command[0]));
    // From here on the harness runs for as long as the command: memory it frees must be
    // reused, which the start-up arena does not do.
    crate::arena::end_startup();
    // Looked for once the command is started: the listing overlaps the command's own start.
    let health =
        find_health(service.export).map(|entry| Health::new(entry.path, settings.health_interval));
    let mut supervisor = Supervisor {
        signals,
        settings,
        limits: service.limits,
        command: service.command,
        env: &mut service.env,
        export: service.export,
        user: service.user,
        child: Child::Running(pid),
        course: Course::Serving,
        rerun_owed: false,
        registration,
        health,
    };
    supervisor.start_registration(reruns.as_mut());
    let status = supervisor.until_command_exits(reruns.as_mut());
    supervisor.withdraw();
    supervisor.stop_orphans()?;
    // Only the command's own status is remapped, never a failure of the harness's.
    status.map(|status| settings.exit_map.apply(status))
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

/// The command, as the supervisor knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    Running(Pid),
    /// Told to stop (a stop signal, or a restart): SIGKILL at `kill_at` if it is still there.
    Stopping {
        pid: Pid,
        kill_at: Instant,
    },
    /// Sent SIGKILL, not reaped yet.
    Killed(Pid),
    /// Reaped, with the status the harness exits with (128+N for signal N).
    Exited(i32),
}

impl Child {
    /// The pid to signal; none once reaped (its pid may already be another process's).
    fn pid(self) -> Option<Pid> {
        match self {
            Child::Running(pid) | Child::Stopping { pid, .. } | Child::Killed(pid) => Some(pid),
            Child::Exited(_) => None,
        }
    }

    fn status(self) -> Option<i32> {
        match self {
            Child::Exited(status) => Some(status),
            _ => None,
        }
    }

    fn kill_at(self) -> Option<Instant> {
        match self {
            Child::Stopping { kill_at, .. } => Some(kill_at),
            _ => None,
        }
    }
}

/// What the supervisor is doing with the service.
enum Course {
    /// The command serves; re-runs may start.
    Serving,
    /// A re-run's change is stopping the old command to start it again: its exit is not the
    /// service going away (its keys stay).
    Restarting,
    /// A stop signal came and the keys are withdrawn: `prestop` runs and the command keeps
    /// serving until `--drain` is over, then gets the signal.
    Draining(Drain),
    /// The command got its stop signal: no re-run or restart starts any more.
    ShuttingDown,
}

impl Course {
    fn is_serving(&self) -> bool {
        matches!(self, Course::Serving)
    }

    /// A stop signal came: no re-run, restart or health check starts any more.
    fn is_stopping(&self) -> bool {
        matches!(self, Course::Draining(_) | Course::ShuttingDown)
    }
}

/// What a re-run is waiting for while the loop goes on.
enum Rerun<'a> {
    /// Its scripts.
    Scripts(&'a mut Pool),
    /// Work off the loop's thread (rendering the templates): `ready` once its descriptor is
    /// readable; `stopped` by a stop signal that came meanwhile.
    Task {
        fd: BorrowedFd<'a>,
        ready: bool,
        stopped: Option<Signal>,
    },
}

impl Rerun<'_> {
    fn pool(&mut self) -> Option<&mut Pool> {
        match self {
            Rerun::Scripts(pool) => Some(pool),
            Rerun::Task { .. } => None,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self {
            Rerun::Scripts(pool) => pool.deadline(),
            Rerun::Task { .. } => None,
        }
    }

    /// A stop signal (or SIGQUIT) during the re-run: its scripts are stopped, its task is
    /// given up.
    fn stop(&mut self, signal: Signal) {
        match self {
            Rerun::Scripts(pool) => pool.stop(signal),
            Rerun::Task { stopped, .. } => *stopped = Some(signal),
        }
    }

    /// The command exited: the re-run's result could not be applied any more.
    fn cancel(&mut self) {
        if let Rerun::Scripts(pool) = self {
            pool.cancel();
        }
    }
}

/// What woke the loop.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A re-run's script has output.
    Rerun(Pipe),
    /// A re-run's task is done.
    Task,
    /// The health check has output.
    Health(Pipe),
    /// `prestop` has output.
    Prestop(Pipe),
    Signals,
    /// The registration's thread answered, or its watch saw a change.
    Registry,
}

struct Supervisor<'s> {
    signals: &'s Signals,
    settings: &'s Supervision,
    limits: Limits,
    command: &'s [std::ffi::OsString],
    env: &'s mut crate::variables::Environment,
    /// The export directory: `prestop` is looked for there when a stop signal comes.
    export: &'s Directory,
    /// `--user`: who every start of the command runs as.
    user: Option<&'s Switch>,
    child: Child,
    course: Course,
    /// A SIGHUP under `--watch` asked for a re-run that has not started yet (it may come while
    /// a re-run or a restart is under way: one more follows).
    rerun_owed: bool,
    registration: Option<Registration>,
    health: Option<Health>,
}

impl Supervisor<'_> {
    /// The command runs: publish at once unless `health` must pass first, and watch what the
    /// first discovery read.
    fn start_registration(&mut self, reruns: Option<&mut Reruns>) {
        let Some(registration) = self.registration.as_mut() else {
            return;
        };
        if let Some(reads) = reruns.and_then(Reruns::take_reads) {
            registration.set_reads(reads);
        }
        if self.health.is_none() {
            registration.publish();
        }
    }

    fn until_command_exits(&mut self, mut reruns: Option<&mut Reruns>) -> Result<i32, Error> {
        loop {
            if let Some(status) = self.child.status() {
                return Ok(status);
            }
            let serving = self.course.is_serving();
            if let Some(reruns) = reruns.as_deref_mut().filter(|_| serving) {
                let changed = self
                    .registration
                    .as_mut()
                    .is_some_and(Registration::take_change);
                if std::mem::take(&mut self.rerun_owed) || changed {
                    reruns.request();
                }
                if reruns.is_due(Instant::now()) {
                    self.rerun(reruns)?;
                    // Signals first: a re-run with nothing to run never waits in the loop, so
                    // at a tiny --watch interval re-runs alone would starve them.
                    self.turn(None, Some(Instant::now()))?;
                    continue;
                }
            }
            let timer = reruns
                .as_deref()
                .filter(|_| serving)
                .and_then(Reruns::deadline);
            self.turn(None, timer)?;
        }
    }

    /// One wake-up of the loop: waits for the next event (or the nearest deadline) and
    /// handles what came. `rerun` is what a re-run under way waits for.
    fn turn(
        &mut self,
        mut rerun: Option<&mut Rerun>,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        self.move_health_on();
        let deadline = [
            deadline,
            self.child.kill_at(),
            rerun.as_deref().and_then(Rerun::deadline),
            self.health_deadline(),
            self.drain_deadline(),
            self.registration.as_ref().and_then(Registration::deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        for source in self.wait(rerun.as_deref(), deadline)? {
            match source {
                Source::Rerun(pipe) => {
                    if let Some(pool) = rerun.as_deref_mut().and_then(Rerun::pool) {
                        pool.read(pipe);
                    }
                }
                Source::Task => {
                    if let Some(Rerun::Task { ready, .. }) = rerun.as_deref_mut() {
                        *ready = true;
                    }
                }
                Source::Health(pipe) => {
                    if let Some(pool) = self.health.as_mut().and_then(Health::running) {
                        pool.read(pipe);
                    }
                }
                Source::Prestop(pipe) => {
                    if let Course::Draining(drain) = &mut self.course {
                        if let Some(pool) = drain.running() {
                            pool.read(pipe);
                        }
                    }
                }
                Source::Signals => self.handle_signals(rerun.as_deref_mut())?,
                // Handled below, at every wake-up: its deadlines need no descriptor.
                Source::Registry => {}
            }
        }
        if let Some(registration) = self.registration.as_mut() {
            registration.handle();
        }
        if self.child.status().is_some() {
            if let Some(rerun) = rerun {
                rerun.cancel();
            }
        }
        self.move_drain_on();
        self.kill_if_overdue();
        Ok(())
    }

    /// Sleeps in `poll` on the scripts' pipes (a re-run's, a health check's), the signalfd and
    /// the registry's descriptors, until one is ready or `deadline`.
    fn wait(&self, rerun: Option<&Rerun>, deadline: Option<Instant>) -> Result<Vec<Source>, Error> {
        let mut poll = Poll::default();
        match rerun {
            Some(Rerun::Scripts(pool)) => {
                for (fd, pipe) in pool.pipes() {
                    poll.add(fd, Source::Rerun(pipe));
                }
            }
            Some(Rerun::Task { fd, .. }) => {
                poll.add(*fd, Source::Task);
            }
            None => {}
        }
        let health = self.health.as_ref().and_then(Health::running_ref);
        for (fd, pipe) in health.map(Pool::pipes).unwrap_or_default() {
            poll.add(fd, Source::Health(pipe));
        }
        let prestop = match &self.course {
            Course::Draining(drain) => drain.running_ref(),
            _ => None,
        };
        for (fd, pipe) in prestop.map(Pool::pipes).unwrap_or_default() {
            poll.add(fd, Source::Prestop(pipe));
        }
        poll.add(self.signals.as_fd(), Source::Signals);
        for fd in self.registration.iter().flat_map(Registration::fds) {
            poll.add(fd, Source::Registry);
        }
        poll.wait(deadline)
    }

    /// When `health` next needs the loop. Not once the command is gone or stopping
    /// ([`Supervisor::move_health_on`] no longer moves it on, so a passed deadline would wake
    /// the loop at once, again and again).
    fn health_deadline(&self) -> Option<Instant> {
        if self.child.status().is_some() || self.course.is_stopping() {
            return None;
        }
        self.health.as_ref().and_then(Health::deadline)
    }

    fn drain_deadline(&self) -> Option<Instant> {
        match &self.course {
            Course::Draining(drain) => drain.deadline(),
            _ => None,
        }
    }

    /// Moves a drain on: once `prestop` is over and `--drain` has passed, the command gets the
    /// stop signal and has `--stop-timeout` to exit.
    fn move_drain_on(&mut self) {
        let Course::Draining(drain) = &mut self.course else {
            return;
        };
        if let Some(signal) = drain.tick() {
            self.course = Course::ShuttingDown;
            self.send_forwarded(signal);
            self.start_kill_timer();
        }
    }

    /// Moves `health` on: starts a due run, and acts on a change of health
    /// (docs/reference.md §11.4): a pass publishes, a failure withdraws with one warning per
    /// failing stretch.
    fn move_health_on(&mut self) {
        if self.child.status().is_some() || self.course.is_stopping() {
            return;
        }
        let Some(health) = self.health.as_mut() else {
            return;
        };
        let Some(turn) = health.tick(self.env, self.limits) else {
            return;
        };
        match turn {
            Turn::Healthy { again } => {
                if again {
                    log::warn!("health passes again; publishing the keys again");
                }
                if let Some(registration) = self.registration.as_mut() {
                    registration.publish();
                }
            }
            Turn::Unhealthy(err) => {
                let what = if self.registration.is_some() {
                    "withdrawing the published keys until it passes"
                } else {
                    "the command keeps running"
                };
                log::warn!("{err}; {what}");
                if let Some(registration) = self.registration.as_mut() {
                    registration.withdraw(None);
                }
            }
        }
    }

    /// The command did not exit within `--stop-timeout` of being told to stop: SIGKILL.
    fn kill_if_overdue(&mut self) {
        let Child::Stopping { pid, kill_at } = self.child else {
            return;
        };
        if kill_at > Instant::now() {
            return;
        }
        log::warn!(
            "the command did not exit {}s after being told to stop: SIGKILL",
            seconds(self.settings.stop_timeout)
        );
        self.signal_command(Signal::SIGKILL);
        self.child = Child::Killed(pid);
    }

    /// The service goes away: its keys first, at most [`WITHDRAW_WAIT`].
    fn withdraw(&mut self) {
        if let Some(registration) = self.registration.as_mut() {
            registration.withdraw(Some(WITHDRAW_WAIT));
        }
    }

    fn handle_signals(&mut self, mut rerun: Option<&mut Rerun>) -> Result<(), Error> {
        for signal in self.signals.pending()? {
            if signal == Signal::SIGCHLD {
                self.reap(rerun.as_deref_mut().and_then(Rerun::pool));
            } else if self.signals.is_rerun_request(signal) {
                // Kept while a re-run or a restart is under way: one more re-run follows.
                self.rerun_owed = true;
            } else {
                self.forward(signal);
                if self.signals.is_stop(signal) {
                    if let Some(rerun) = rerun.as_deref_mut() {
                        rerun.stop(signal);
                    }
                }
            }
        }
        Ok(())
    }

    /// Re-runs discovery while the loop goes on, then acts on a change (docs/reference.md §7),
    /// after `--splay`.
    fn rerun(&mut self, reruns: &mut Reruns) -> Result<(), Error> {
        let Some(change) = self.rediscover(reruns) else {
            return Ok(());
        };
        let on_change = reruns.on_change();
        let change = match reruns.splay() {
            splay if splay.is_zero() => {
                change.announce(&action(on_change));
                change
            }
            splay => match self.splay(reruns, change, splay)? {
                Some(change) => change,
                None => return Ok(()),
            },
        };
        match on_change {
            OnChange::Restart => self.restart(change),
            OnChange::Signal(signal) => {
                let mut change = change;
                change.write_templates();
                self.signal_command(signal);
                Ok(())
            }
        }
    }

    /// One re-run, its reads watched from now on; the change it found, if the command still
    /// serves.
    fn rediscover(&mut self, reruns: &mut Reruns) -> Option<Change> {
        let change = reruns.rerun(&mut Rerunning { supervisor: self });
        let reads = reruns.take_reads();
        if self.child.status().is_some() || self.course.is_stopping() {
            return None;
        }
        if let (Some(registration), Some(reads)) = (self.registration.as_mut(), reads) {
            registration.set_reads(reads);
        }
        change
    }

    /// `--splay` (docs/reference.md §14): waits a random time up to `splay` before the change
    /// is acted on, the loop going on meanwhile, so that instances watching one key do not all
    /// restart at once. A re-run asked for meanwhile is folded into the change; a stop signal
    /// or the command's exit cancels it (None).
    fn splay(
        &mut self,
        reruns: &mut Reruns,
        mut change: Change,
        splay: Duration,
    ) -> Result<Option<Change>, Error> {
        let act_at = Instant::now() + splay.mul_f64(random_fraction());
        let what = action(reruns.on_change());
        let announce = |change: &Change| {
            let left = act_at.saturating_duration_since(Instant::now());
            change.announce(&format!("{what} in {} s", seconds(left)));
        };
        announce(&change);
        loop {
            if self.child.status().is_some() || self.course.is_stopping() {
                return Ok(None);
            }
            let changed = self
                .registration
                .as_mut()
                .is_some_and(Registration::take_change);
            if std::mem::take(&mut self.rerun_owed) || changed {
                if let Some(newer) = self.rediscover(reruns) {
                    announce(&newer);
                    change.fold(newer);
                }
                continue;
            }
            if Instant::now() >= act_at {
                return Ok(Some(change));
            }
            self.turn(None, Some(act_at))?;
        }
    }

    /// Stops the command as SIGTERM would and starts it again with the new environment.
    /// A SIGTERM or SIGINT that comes meanwhile cancels the restart: the old command's
    /// status is the harness's.
    fn restart(&mut self, mut change: Change) -> Result<(), Error> {
        self.course = Course::Restarting;
        // No stop of the service (no withdrawal, prestop or drain), but its SIGTERM is
        // rewritten as a forwarded one is.
        self.send_forwarded(Signal::SIGTERM);
        self.start_kill_timer();
        while self.child.status().is_none() {
            self.turn(None, None)?;
        }
        if self.course.is_stopping() {
            return Ok(());
        }
        self.course = Course::Serving;
        change.write_templates();
        // The environment changes only with a command that runs with it (teardown gets it).
        // Looked for again, its #! line read again: it may have changed since the start.
        let start = Start {
            command: self.command,
            env: &change.env,
            home_from_directory: change.home_from_directory,
            found: None,
            user: self.user,
        };
        let pid = spawn(&start, self.signals)?;
        self.child = Child::Running(pid);
        *self.env = std::mem::take(&mut change.env);
        log::debug!("restarted {} as pid {pid}", display(&self.command[0]));
        Ok(())
    }

    /// Job control: Ctrl-Z stopped the command, in its own process group, so the shell that
    /// started envharness would wait for it forever. When there is a terminal, envharness
    /// stops too, which gives the shell its prompt; on `fg` it hands the terminal back to the
    /// command's group and continues it.
    fn follow_stop(&mut self, pid: Pid) {
        if !stdin_is_a_terminal() {
            return;
        }
        let _ = nix::sys::signal::raise(Signal::SIGSTOP);
        // Continued. Only a foreground group may take the terminal (a `bg` leaves it alone).
        // SAFETY: tcgetpgrp, getpgrp and tcsetpgrp only query and set the terminal's
        // foreground group.
        unsafe {
            if libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp() {
                libc::tcsetpgrp(libc::STDIN_FILENO, pid.as_raw());
            }
        }
        self.signal_command(Signal::SIGCONT);
    }

    /// A signal the harness forwards (docs/reference.md §6). A stop signal (SIGTERM, SIGINT)
    /// withdraws the keys first, then runs `prestop` and the drain before the command gets it
    /// (§13.3); a second one cuts them short and is forwarded at once.
    fn forward(&mut self, signal: Signal) {
        if !STOP_SIGNALS.contains(&signal) && !FORWARDED_ONLY.contains(&signal) {
            return;
        }
        log::debug!("forwarding {}", signal.as_str());
        if !matches!(signal, Signal::SIGTERM | Signal::SIGINT) {
            self.send_forwarded(signal);
            return;
        }
        match std::mem::replace(&mut self.course, Course::ShuttingDown) {
            Course::Serving => {
                let came = Instant::now();
                // Consumers stop using the service before it stops serving (§11.3).
                self.withdraw();
                let prestop = find_prestop(self.export).map(|entry| entry.path);
                let drain = Drain::start(
                    signal,
                    came,
                    self.settings.drain,
                    prestop,
                    self.env,
                    self.limits,
                    self.settings.stop_timeout,
                );
                self.course = Course::Draining(drain);
                self.move_drain_on();
            }
            Course::Draining(drain) => {
                drain.cut_short();
                self.send_forwarded(signal);
                self.start_kill_timer();
            }
            // A restart is stopping the old command already: the stop cancels the restart.
            Course::Restarting | Course::ShuttingDown => {
                self.withdraw();
                self.send_forwarded(signal);
                self.start_kill_timer();
            }
        }
    }

    /// Sends the command a forwarded signal, as `--rewrite` has it (or not at all).
    fn send_forwarded(&self, signal: Signal) {
        if let Some(signal) = self.settings.rewrites.apply(signal) {
            self.signal_command(signal);
        }
    }

    /// After a stop signal or a restart's SIGTERM: the command gets SIGKILL `--stop-timeout`
    /// later if it is still there (a second stop signal does not move the deadline).
    fn start_kill_timer(&mut self) {
        if let Child::Running(pid) = self.child {
            self.child = Child::Stopping {
                pid,
                kill_at: Instant::now() + self.settings.stop_timeout,
            };
        }
    }

    fn signal_command(&self, signal: Signal) {
        let Some(pid) = self.child.pid() else {
            return;
        };
        // ESRCH: it exited and is about to be reaped.
        let _ = if self.settings.group {
            killpg(pid, signal)
        } else {
            kill(pid, signal)
        };
    }

    /// Reaps every child that has exited: the command's status is noted, a re-run's or a
    /// health check's scripts go to their pool, orphans are forgotten. Returns whether any
    /// child is left.
    fn reap(&mut self, mut rerun: Option<&mut Pool>) -> bool {
        let reaped = reap();
        for status in reaped.statuses {
            let Some(pid) = status.pid() else {
                continue;
            };
            if Some(pid) == self.child.pid() {
                self.command_reported(pid, status);
                continue;
            }
            let pools = [
                rerun.as_deref_mut(),
                self.health.as_mut().and_then(Health::running),
                match &mut self.course {
                    Course::Draining(drain) => drain.running(),
                    _ => None,
                },
            ];
            for pool in pools.into_iter().flatten() {
                if pool.exited(pid, status) {
                    break;
                }
            }
        }
        reaped.children_left
    }

    fn command_reported(&mut self, pid: Pid, status: WaitStatus) {
        let exit = match status {
            WaitStatus::Exited(_, code) => code,
            WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
            WaitStatus::Stopped(..) => return self.follow_stop(pid),
            _ => return,
        };
        self.child = Child::Exited(exit);
        match std::mem::replace(&mut self.course, Course::ShuttingDown) {
            // The command exiting by itself ends a drain (and its prestop).
            Course::Draining(drain) => drain.cut_short(),
            // The restart starts the new one.
            Course::Restarting => self.course = Course::Restarting,
            Course::Serving | Course::ShuttingDown => {}
        }
        if !matches!(self.course, Course::Restarting) {
            // Withdrawn at once (docs/reference.md §11.3), not only once a re-run's scripts are
            // gone; a restart is the same service, whose keys stay.
            self.withdraw();
        }
    }

    /// After the command: SIGTERM to every process left under the harness, SIGKILL to those
    /// still there `--stop-timeout` later; returns when there are none (waitpid says so), or
    /// [`GIVE_UP_AFTER_SIGKILL`] after the SIGKILL if one cannot die (uninterruptible sleep).
    fn stop_orphans(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.settings.stop_timeout;
        let give_up = deadline + GIVE_UP_AFTER_SIGKILL;
        let mut told = BTreeSet::new();
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
                    seconds(self.settings.stop_timeout)
                );
            }
            let mut poll = Poll::default();
            poll.add(self.signals.as_fd(), ());
            poll.wait(Some(if past_deadline { give_up } else { deadline }))?;
            // Only SIGCHLD matters now; the loop reaps on every pass.
            self.signals.pending()?;
        }
    }
}

/// What a change does, in its announcement.
fn action(on_change: OnChange) -> String {
    match on_change {
        OnChange::Restart => "restarting the command".into(),
        OnChange::Signal(signal) => format!("sending {}", signal.as_str()),
    }
}

/// A number in [0, 1) from this process's own randomness.
fn random_fraction() -> f64 {
    (crate::os::random_u64() >> 11) as f64 / (1u64 << 53) as f64
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
            self.supervisor
                .turn(Some(&mut Rerun::Scripts(pool)), None)?;
        }
    }

    fn wait_for(&mut self, fd: BorrowedFd<'_>) -> Result<(), Error> {
        let mut rerun = Rerun::Task {
            fd,
            ready: false,
            stopped: None,
        };
        loop {
            self.supervisor.turn(Some(&mut rerun), None)?;
            if self.supervisor.child.status().is_some() {
                return Err(Error::Cancelled);
            }
            match rerun {
                Rerun::Task {
                    stopped: Some(signal),
                    ..
                } => return Err(Error::Interrupted { signal }),
                Rerun::Task { ready: true, .. } => return Ok(()),
                _ => {}
            }
        }
    }
}
