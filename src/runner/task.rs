//! Work that may take long, done off the loop's thread: rendering templates (and what they read
//! of the registry), probing an address. A [`Task`] runs a closure on a thread of its own and
//! makes an eventfd readable once the result is there, so the loop that owns the signals waits
//! for it with everything else ([`Host::wait_for`]) and a stop signal is never held up.
//!
//! A task cannot be stopped: one that is given up (the harness is told to stop, the command
//! exits during a re-run) runs to its end on its thread and its result is dropped. Every task
//! is bounded in time by what it does (a template's fuel, a connection's timeout), so an
//! abandoned one does not run for long; the harness's exit ends it anyway.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::Host;
use crate::error::Error;

/// A closure running on its own thread, and its result once it is there.
pub struct Task<T> {
    done: Arc<EventFd>,
    result: Receiver<T>,
}

impl<T: Send + 'static> Task<T> {
    /// Starts `work` on a thread named `name`. The thread inherits the caller's signal mask,
    /// in which the signals the loop reads are blocked, so none is delivered to it instead.
    pub fn start(name: &str, work: impl FnOnce() -> T + Send + 'static) -> Result<Task<T>, Error> {
        let done = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map(Arc::new)
            .map_err(|err| Error::io("eventfd", "starting a task", err.into()))?;
        let (sender, result) = mpsc::sync_channel(1);
        let signal = done.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // The receiver is gone when the task was given up: nobody wants the result.
                let _ = sender.send(work());
                let _ = signal.write(1);
            })
            .map_err(|err| Error::io("thread", "starting a task", err))?;
        Ok(Task { done, result })
    }

    /// Readable once the result is there.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.done.as_fd()
    }

    /// The result, if the work is done (never blocks).
    pub fn try_take(&self) -> Option<T> {
        self.result.try_recv().ok()
    }
}

/// Runs `work` off the loop's thread, with `host` serving its events until the result is
/// there. An error from the host (a stop signal, a cancelled re-run) gives the task up.
pub fn run<T: Send + 'static>(
    host: &mut dyn Host,
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let task = Task::start(name, work)?;
    loop {
        if let Some(result) = task.try_take() {
            return Ok(result);
        }
        host.wait_for(task.fd())?;
    }
}
