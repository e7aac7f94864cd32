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
//! - It sleeps in `poll` on the signalfd, with a timeout only while a deadline is pending:
//!   an idle supervisor uses no CPU.
//!
//! The export directory's `teardown` runs after this returns (see `lib.rs`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sched::{clone, CloneCb, CloneFlags};
use nix::sys::signal::{kill, killpg, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{setpgid, Pid};

use crate::error::Error;
use crate::exec::{display, ExecArgs, Prepared};
use crate::plan::Supervision;
use crate::procfs;
use crate::signals::{poll_timeout_until, StartupState, Watcher, FORWARDED_ONLY, STOP_SIGNALS};

/// Starts the command, supervises it until it and every orphan are gone, and returns the
/// command's exit status (128+N if signal N killed it).
pub fn supervise(
    command: &[OsString],
    env: &[(OsString, OsString)],
    watcher: &Watcher,
    settings: Supervision,
) -> Result<i32, Error> {
    become_subreaper();
    watcher
        .watch_forwarded()
        .map_err(|err| Error::io("signalfd", "watching signals", err))?;
    let child = spawn(command, env, watcher)?;
    log::debug!("started {} as pid {child}", display(&command[0]));
    let mut supervisor = Supervisor {
        watcher,
        settings,
        child,
        status: None,
        kill_at: None,
    };
    let status = supervisor.until_command_exits()?;
    supervisor.stop_orphans()?;
    Ok(status)
}

fn become_subreaper() {
    if nix::unistd::getpid().as_raw() == 1 {
        return;
    }
    if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
        log::warn!("cannot become a child subreaper ({err}); orphans of the command will not be reaped by envharness");
    }
}

fn spawn(
    command: &[OsString],
    env: &[(OsString, OsString)],
    watcher: &Watcher,
) -> Result<Pid, Error> {
    let prepared = Prepared::new(command, env)?;
    let startup = watcher.startup_state();
    let exec_errno = AtomicI32::new(0);
    // Not posix_spawn: glibc and musl leave their internal real-time signals ignored in a
    // posix_spawn child (and refuse to reset them), and the command must start with the
    // dispositions the harness started with. Not fork or std's Command either: like
    // posix_spawn's, a CLONE_VM|CLONE_VFORK child copies no page tables and causes no
    // copy-on-write faults (the README's Performance section has the figures).
    let mut stack = vec![0u8; CHILD_STACK];
    let become_the_command: CloneCb =
        Box::new(|| become_the_command(&prepared.args, startup, &exec_errno));
    // SAFETY: CLONE_VFORK suspends the harness until the child has exec'd or exited, so the
    // memory they share has one user at a time, and everything the closure borrows outlives
    // the child's use of it. The child runs on `stack` and makes a few plain system calls.
    let spawned = unsafe {
        clone(
            become_the_command,
            &mut stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    };
    let child =
        spawned.map_err(|err| Error::io(&prepared.path, "starting the command", err.into()))?;
    match exec_errno.load(Ordering::SeqCst) {
        0 => Ok(child),
        errno => {
            let _ = waitpid(child, None);
            Err(prepared.not_executed(Errno::from_raw(errno)))
        }
    }
}

/// The stack of the child between clone and exec. The child needs well under a page of it;
/// calloc'd, only the pages it touches are ever mapped in.
const CHILD_STACK: usize = 128 * 1024;

/// In the child: execs the command in a process group of its own, in the terminal's
/// foreground. It shares the harness's memory, so it does nothing that allocates, locks or
/// writes: if exec fails it leaves the errno in `exec_errno` and exits, and the harness,
/// resumed, reports the failure as in exec mode.
fn become_the_command(exec: &ExecArgs, startup: StartupState, exec_errno: &AtomicI32) -> ! {
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    take_the_terminal();
    let errno = match startup.restore() {
        Ok(()) => exec.execve(),
        Err(err) => Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO)),
    };
    exec_errno.store(errno as i32, Ordering::SeqCst);
    // SAFETY: _exit ends the child without running exit handlers or flushing buffers, which
    // belong to the harness.
    unsafe { libc::_exit(127) }
}

fn stdin_is_a_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// In the child: when stdin is a terminal, make the child's new process group its
/// foreground. SIGTTOU is blocked for the call: a background group that calls tcsetpgrp
/// would otherwise be stopped by it (tcsetpgrp(3)). SIGTSTP too: a Ctrl-Z before the exec
/// would stop the child while the harness waits for that exec. The mask is restored before it.
fn take_the_terminal() {
    if !stdin_is_a_terminal() {
        return;
    }
    let mut tty_signals = SigSet::empty();
    tty_signals.add(Signal::SIGTTOU);
    tty_signals.add(Signal::SIGTTIN);
    tty_signals.add(Signal::SIGTSTP);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&tty_signals), None);
    // SAFETY: tcsetpgrp on our own stdin with our own process group.
    unsafe {
        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
    }
}

/// How long to wait, after SIGKILL, for processes left behind that still do not go away.
const GIVE_UP_AFTER_SIGKILL: Duration = Duration::from_secs(2);

struct Supervisor<'w> {
    watcher: &'w Watcher,
    settings: Supervision,
    child: Pid,
    status: Option<i32>,
    /// After SIGTERM/SIGINT: when the command gets SIGKILL if it is still there.
    kill_at: Option<Instant>,
}

impl Supervisor<'_> {
    fn until_command_exits(&mut self) -> Result<i32, Error> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            self.wait_for_signal(self.kill_at)?;
            while let Some(signal) = self.next_signal()? {
                match signal {
                    Signal::SIGCHLD => {
                        self.reap();
                    }
                    signal => self.forward(signal),
                }
            }
            if self.status.is_none() && self.kill_at.is_some_and(|at| at <= Instant::now()) {
                log::warn!(
                    "the command did not exit {}s after being told to stop: SIGKILL",
                    self.settings.stop_timeout.as_secs_f64()
                );
                self.signal_command(Signal::SIGKILL);
                self.kill_at = None;
            }
        }
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
        if matches!(signal, Signal::SIGTERM | Signal::SIGINT) && self.kill_at.is_none() {
            self.kill_at = Some(Instant::now() + self.settings.stop_timeout);
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

    /// Reaps every child that has exited, noting the command's status; returns whether
    /// any child is left.
    fn reap(&mut self) -> bool {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.child => self.status = Some(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == self.child => {
                    self.status = Some(128 + signal as i32)
                }
                Ok(WaitStatus::Stopped(pid, _)) if pid == self.child => self.follow_stop(),
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
            if !self.reap() {
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
            self.wait_for_signal(Some(if past_deadline { give_up } else { deadline }))?;
            // Only SIGCHLD matters now; the loop reaps on every pass.
            while self.next_signal()?.is_some() {}
        }
    }

    fn next_signal(&self) -> Result<Option<Signal>, Error> {
        self.watcher
            .next()
            .map_err(|err| Error::io("signalfd", "reading signals", err))
    }

    /// Sleeps until a signal is pending or `deadline` passes.
    fn wait_for_signal(&self, deadline: Option<Instant>) -> Result<(), Error> {
        let mut fds = [PollFd::new(self.watcher.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout_until(deadline)) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(err) => Err(Error::io("poll", "waiting for signals", err.into())),
        }
    }
}

/// The harness's children. `/proc/self/task/*/children` is quick but best-effort (proc(5))
/// and absent without CONFIG_PROC_CHILDREN; when it names none, every process's parent is
/// read from /proc instead. (The caller knows from waitpid that there are some.)
fn children() -> Vec<Pid> {
    let listed = children_from_task_lists();
    if listed.is_empty() {
        children_from_proc_scan()
    } else {
        listed
    }
}

fn children_from_task_lists() -> Vec<Pid> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn children_from_proc_scan() -> Vec<Pid> {
    let me = nix::unistd::getpid();
    procfs::processes()
        .unwrap_or_default()
        .into_iter()
        .filter(|process| process.parent == me)
        .map(|process| process.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_of_listing_children_find_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawning sleep");
        let pid = Pid::from_raw(child.id() as i32);
        let scanned = children_from_proc_scan();
        let listed = children_from_task_lists();
        child.kill().expect("killing sleep");
        child.wait().expect("reaping sleep");
        assert!(scanned.contains(&pid), "{pid} not in {scanned:?}");
        assert!(listed.contains(&pid), "{pid} not in {listed:?}");
    }
}
