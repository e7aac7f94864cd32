//! The store, seen from the supervisor's poll loop: a thread that owns it and makes the
//! requests, so that no store request holds up the loop (an etcd that is slow or frozen
//! answers within its timeouts, up to 5 s; signals must be forwarded and children reaped
//! meanwhile). Requests go over a channel; each answer comes back over another, and a byte
//! on a pipe makes the loop's `poll` wake up for it.
//!
//! The thread opens the store itself, at the first request: the harness contacts the store
//! only when it has something to publish or to watch, and an etcd that is slow to log in to
//! does not hold up the start either. An open that fails answers that request with the error
//! and is tried again at the next one.
//!
//! The thread is started by [`Worker::start`] only, from the supervisor, after the harness's
//! signal mask is in place: it inherits that mask, so no signal the supervisor reads from its
//! signalfd can be delivered to this thread instead (with its default action).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;

use super::{look_up, Key, LeaseId, Lookup, Store, Watch};
use crate::error::Error;

/// What the loop asks of the store.
pub enum Request {
    /// Put every key with a lease of `ttl`: the lease held, or a new one if there is none or
    /// it is gone.
    Publish {
        keys: Vec<(Key, Vec<u8>)>,
        ttl: Duration,
    },
    /// Keep the lease alive; when it is gone (it ran out while the store was away, or the
    /// store was wiped), publish again with a new one.
    Renew {
        keys: Vec<(Key, Vec<u8>)>,
        ttl: Duration,
    },
    /// Revoke the lease, which removes its keys.
    Withdraw,
    /// Start a watch over `prefix`.
    Watch { prefix: String },
    /// Look these keys and prefixes up again, as the scripts did, for change detection.
    Look(Vec<Lookup>),
}

/// The store's answer to the request with the same number.
pub enum Answer {
    Done(Result<(), Error>),
    Reruns(Result<Box<dyn Watch>, Error>),
    /// Each lookup's digest, in order.
    Looked(Result<Vec<String>, Error>),
}

/// Opens the store, on the worker's thread.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn Store>, Error> + Send>;

pub struct Worker {
    url: String,
    requests: Sender<(u64, Request)>,
    answers: Receiver<(u64, Answer)>,
    /// Readable when an answer is waiting.
    wake: File,
    next: u64,
}

impl Worker {
    /// Starts the thread that opens the store at `url` with `open` and owns it.
    pub fn start(url: &str, open: Opener) -> Result<Worker, Error> {
        let url = url.to_owned();
        let (wake, wake_up) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|err| Error::io("pipe", "starting the registry thread", err.into()))?;
        let (requests, inbox) = mpsc::channel::<(u64, Request)>();
        let (outbox, answers) = mpsc::channel();
        let mut wake_up = File::from(wake_up);
        thread::Builder::new()
            .name("registry".into())
            .spawn(move || serve(open, inbox, outbox, &mut wake_up))
            .map_err(|err| Error::io("thread", "starting the registry thread", err))?;
        Ok(Worker {
            url,
            requests,
            answers,
            wake: File::from(wake),
            next: 0,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends a request; returns its number, which its answer carries.
    pub fn send(&mut self, request: Request) -> u64 {
        self.next += 1;
        // A send fails only when the thread is gone, which it never leaves before the
        // harness exits; the answer then simply never comes.
        let _ = self.requests.send((self.next, request));
        self.next
    }

    /// The answers that have come, in the order of the requests (never blocks).
    pub fn answers(&mut self) -> Vec<(u64, Answer)> {
        let mut drained = [0u8; 64];
        while matches!(self.wake.read(&mut drained), Ok(n) if n > 0) {}
        self.answers.try_iter().collect()
    }

    /// Waits up to `until` for the answer to request `number`; the answers that come before
    /// it are returned too, in order. None for the awaited one when time ran out.
    pub fn wait_for(
        &mut self,
        number: u64,
        until: Instant,
    ) -> (Vec<(u64, Answer)>, Option<Answer>) {
        let mut earlier = Vec::new();
        loop {
            for (id, answer) in self.answers() {
                if id == number {
                    return (earlier, Some(answer));
                }
                earlier.push((id, answer));
            }
            let now = Instant::now();
            if now >= until {
                return (earlier, None);
            }
            let mut fds = [nix::poll::PollFd::new(
                self.wake.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, crate::duration::poll_timeout_until(Some(until)));
        }
    }
}

impl AsFd for Worker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

/// The thread: one request at a time, in order.
fn serve(
    mut open: Opener,
    inbox: Receiver<(u64, Request)>,
    outbox: Sender<(u64, Answer)>,
    wake_up: &mut File,
) {
    let mut opened: Option<Box<dyn Store>> = None;
    let mut lease: Option<LeaseId> = None;
    for (number, request) in inbox {
        let store = match opened.take() {
            Some(store) => Ok(store),
            None => open(),
        };
        let answer = match store {
            Ok(store) => answer(opened.insert(store).as_mut(), &mut lease, request),
            Err(err) => failed(&request, err),
        };
        if outbox.send((number, answer)).is_err() {
            return;
        }
        let _ = wake_up.write(&[1]);
    }
}

/// Carries out one request.
fn answer(store: &mut dyn Store, lease: &mut Option<LeaseId>, request: Request) -> Answer {
    match request {
        Request::Publish { keys, ttl } => Answer::Done(publish(store, lease, &keys, ttl)),
        Request::Renew { keys, ttl } => Answer::Done(renew(store, lease, &keys, ttl)),
        Request::Withdraw => Answer::Done(match lease.take() {
            Some(held) => store.revoke(held),
            None => Ok(()),
        }),
        Request::Watch { prefix } => Answer::Reruns(store.watch(&prefix)),
        Request::Look(lookups) => Answer::Looked(
            lookups
                .iter()
                .map(|lookup| look_up(store, lookup).map(|seen| seen.digest()))
                .collect(),
        ),
    }
}

/// The answer to `request` when the store could not be opened.
fn failed(request: &Request, err: Error) -> Answer {
    match request {
        Request::Watch { .. } => Answer::Reruns(Err(err)),
        Request::Look(_) => Answer::Looked(Err(err)),
        _ => Answer::Done(Err(err)),
    }
}

fn publish(
    store: &mut dyn Store,
    lease: &mut Option<LeaseId>,
    keys: &[(Key, Vec<u8>)],
    ttl: Duration,
) -> Result<(), Error> {
    // After a failure the lease may have run out meanwhile: keys put with it would fail.
    let held = match (keep_held_alive(store, lease)?, *lease) {
        (true, Some(held)) => held,
        _ => *lease.insert(store.grant(ttl)?),
    };
    for (key, value) in keys {
        store.put(key, value, Some(held))?;
    }
    Ok(())
}

/// Keeps the lease alive; when it is gone (it ran out while the store was away, or the
/// store was wiped), publishes again with a new one.
fn renew(
    store: &mut dyn Store,
    lease: &mut Option<LeaseId>,
    keys: &[(Key, Vec<u8>)],
    ttl: Duration,
) -> Result<(), Error> {
    if keep_held_alive(store, lease)? {
        log::debug!("{}: lease renewed", store.url());
        return Ok(());
    }
    publish(store, lease, keys, ttl)
}

/// Renews the lease held, if any; forgets one that is gone, with a warning. Whether a live
/// lease is held.
fn keep_held_alive(store: &mut dyn Store, lease: &mut Option<LeaseId>) -> Result<bool, Error> {
    let Some(held) = *lease else {
        return Ok(false);
    };
    if store.keep_alive(held)? {
        return Ok(true);
    }
    log::warn!(
        "{}: the lease of the published keys is gone; publishing them again",
        store.url()
    );
    *lease = None;
    Ok(false)
}
