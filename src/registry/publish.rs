//! Publishing (SPEC.md 11.3) and registry-change triggers (11.5), as the harness does them.
//!
//! An export script other than `bootstrap` that prints something announces it at key
//! `NAME/INSTANCE`. In exec mode and with `--print` the keys are put once, without a lease
//! ([`publish_unleased`]): nothing would renew one, so they outlive the service, and one
//! warning says so. Under `--init` a [`Registration`] holds them under a lease of `--ttl`,
//! renewed every TTL/3 from the supervisor's loop, withdrawn (the lease revoked) when the
//! service goes away or `health` fails, and published again when the store comes back or the
//! lease was lost. Every request goes through the [`Worker`] thread, so the loop never waits
//! for the store, except for the withdrawal before a stop signal is forwarded, which waits at
//! most [`WITHDRAW_WAIT`].
//!
//! Under `--watch` the same registration watches the store: after each discovery it learns
//! which keys and prefixes the scripts read and what they saw; when the store announces a
//! change (or a watched lease may have run out), it looks them up again and owes a re-run if
//! any differs. A store failure while the command runs is a warning, once per failing stretch.

use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::worker::{Answer, Opener, Request, Worker};
use super::{Key, Lookup, Store, Watch};
use crate::error::Error;

/// How long the withdrawal before a forwarded SIGTERM or SIGINT may wait for the store.
pub const WITHDRAW_WAIT: Duration = Duration::from_secs(2);

/// Exec mode and `--print`: puts the keys once, without a lease.
pub fn publish_unleased(store: &mut dyn Store, keys: &[(Key, Vec<u8>)]) -> Result<(), Error> {
    for (key, value) in keys {
        store.put(key, value, None)?;
    }
    let names: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
    log::warn!(
        "{}: published {} without a lease: without --init nothing withdraws them, so they outlive the service",
        store.url(),
        names.join(", ")
    );
    Ok(())
}

/// What a request in flight was for. Publish and Look carry the generation they were sent
/// in: an answer from before a withdrawal, or about the reads of an earlier run, is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Publish(u64),
    Withdraw,
    Watch,
    Look(u64),
}

/// How long a watch that could not be started waits before it is tried again.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// The harness's presence in the store under `--init`: its published keys and their lease,
/// and the watch that triggers re-runs.
pub struct Registration {
    worker: Worker,
    keys: Vec<(Key, Vec<u8>)>,
    ttl: Duration,
    /// The keys should be in the store (the command runs and `health` passes).
    wanted: bool,
    /// The last publish or renewal worked.
    published: bool,
    /// When the next renewal (or, after a failure, the next try) is due.
    renew_at: Option<Instant>,
    in_flight: Vec<(u64, Pending)>,
    /// A store failure was warned about; the next success says it is over.
    failing: bool,
    watch: Option<Box<dyn Watch>>,
    /// After a failed watch request: when to ask again.
    watch_retry_at: Option<Instant>,
    /// A watch failure was warned about.
    watch_failing: bool,
    /// Bumped by every withdrawal: publish answers sent before it no longer count.
    generation: u64,
    /// Bumped with every new set of reads: look answers about an older set no longer count.
    reads_generation: u64,
    /// The watch's deadline as last handed to the loop: once it has passed, look again. (The
    /// watch itself moves its deadline on as soon as it is asked after it passed.)
    watch_wake: Cell<Option<Instant>>,
    /// What the scripts of the last run read, and the digest of what each saw.
    reads: Vec<(Lookup, String)>,
    /// A change was seen since the last [`Registration::take_change`].
    changed: bool,
}

impl Registration {
    /// Starts the worker for the store at `url`, which `open` opens at the first request;
    /// `keys` are what the export phase announced.
    pub fn start(
        url: &str,
        open: Opener,
        keys: Vec<(Key, Vec<u8>)>,
        ttl: Duration,
    ) -> Result<Registration, Error> {
        Ok(Registration {
            worker: Worker::start(url, open)?,
            keys,
            ttl,
            wanted: false,
            published: false,
            renew_at: None,
            in_flight: Vec::new(),
            failing: false,
            watch: None,
            watch_retry_at: None,
            watch_failing: false,
            generation: 0,
            reads_generation: 0,
            watch_wake: Cell::new(None),
            reads: Vec::new(),
            changed: false,
        })
    }

    /// The descriptors the loop polls for this registration.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![self.worker.as_fd()];
        fds.extend(self.watch.as_ref().map(|watch| watch.fd()));
        fds
    }

    /// When [`Registration::handle`] has something to do without a wake-up.
    pub fn deadline(&self) -> Option<Instant> {
        let watch_deadline = self
            .watch
            .as_ref()
            .filter(|_| !self.reads.is_empty())
            .and_then(|watch| watch.deadline());
        self.watch_wake.set(watch_deadline);
        // A renewal waits for the one in flight: its passed time would wake the loop at once,
        // again and again, until the store answers.
        let renew_at = self
            .renew_at
            .filter(|_| self.wanted && !self.busy_publishing());
        [renew_at, watch_deadline, self.watch_retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// After every wake-up of the loop: takes the store's answers and the watch's
    /// notifications, and sends what is due.
    pub fn handle(&mut self) {
        for (number, answer) in self.worker.answers() {
            self.answered(number, answer);
        }
        let now = Instant::now();
        let mut look = false;
        if let Some(watch) = self.watch.as_mut() {
            look |= watch.drain();
        }
        if self.watch_wake.get().is_some_and(|at| at <= now) {
            self.watch_wake.set(None);
            look = true;
        }
        if look && !self.reads.is_empty() {
            self.look();
        }
        if self.watch_retry_at.is_some_and(|at| at <= now) {
            self.watch_retry_at = None;
            self.start_watch();
        }
        if self.wanted && self.renew_at.is_some_and(|at| at <= now) && !self.busy_publishing() {
            self.renew_at = None;
            let request = if self.published {
                Request::Renew {
                    keys: self.keys.clone(),
                    ttl: self.ttl,
                }
            } else {
                Request::Publish {
                    keys: self.keys.clone(),
                    ttl: self.ttl,
                }
            };
            self.send(request, Pending::Publish(self.generation));
        }
    }

    /// The command runs (and is healthy): put the keys, with the lease.
    pub fn publish(&mut self) {
        if self.wanted || self.keys.is_empty() {
            return;
        }
        self.wanted = true;
        self.renew_at = None;
        self.send(
            Request::Publish {
                keys: self.keys.clone(),
                ttl: self.ttl,
            },
            Pending::Publish(self.generation),
        );
    }

    /// The service goes away or is unhealthy: revoke the lease. With `wait`, waits up to that
    /// long for the store to confirm (the loop is blocked meanwhile, so only before a stop
    /// signal is forwarded or at the end).
    pub fn withdraw(&mut self, wait: Option<Duration>) {
        if !self.wanted {
            return;
        }
        self.wanted = false;
        self.published = false;
        self.renew_at = None;
        self.generation += 1;
        let number = self.send(Request::Withdraw, Pending::Withdraw);
        let Some(wait) = wait else {
            return;
        };
        let (earlier, answer) = self.worker.wait_for(number, Instant::now() + wait);
        for (id, earlier) in earlier {
            self.answered(id, earlier);
        }
        match answer {
            Some(answer) => self.answered(number, answer),
            None => log::warn!(
                "{}: the store did not confirm the withdrawal within {}s; going on",
                self.worker.url(),
                wait.as_secs_f64()
            ),
        }
    }

    /// What the scripts of a discovery run read; starts the watch the first time and checks
    /// at once whether anything changed since they read it.
    pub fn set_reads(&mut self, reads: Vec<(Lookup, String)>) {
        self.reads = reads;
        self.reads_generation += 1;
        // A change seen against the previous reads is answered by the run that made these;
        // one since then is found by the look below.
        self.changed = false;
        if self.reads.is_empty() {
            return;
        }
        let asked = self.watch.is_some()
            || self.watch_retry_at.is_some()
            || self.in_flight.iter().any(|(_, p)| *p == Pending::Watch);
        if !asked {
            self.start_watch();
        }
        self.send_look();
    }

    fn start_watch(&mut self) {
        self.send(
            Request::Watch {
                prefix: String::new(),
            },
            Pending::Watch,
        );
    }

    /// Whether a change to what the scripts read was seen since the last call.
    pub fn take_change(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Looks again after a change was announced; a second look queued behind one in flight
    /// is enough, since it is answered after the change.
    fn look(&mut self) {
        let queued = self
            .in_flight
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Look(_)))
            .count();
        if queued < 2 {
            self.send_look();
        }
    }

    fn send_look(&mut self) {
        let lookups = self
            .reads
            .iter()
            .map(|(lookup, _)| lookup.clone())
            .collect();
        self.send(Request::Look(lookups), Pending::Look(self.reads_generation));
    }

    fn busy_publishing(&self) -> bool {
        self.in_flight
            .iter()
            .any(|(_, p)| matches!(p, Pending::Publish(_)))
    }

    fn send(&mut self, request: Request, pending: Pending) -> u64 {
        let number = self.worker.send(request);
        self.in_flight.push((number, pending));
        number
    }

    fn answered(&mut self, number: u64, answer: Answer) {
        let Some(at) = self.in_flight.iter().position(|(id, _)| *id == number) else {
            return;
        };
        let (_, pending) = self.in_flight.remove(at);
        match (pending, answer) {
            (Pending::Publish(generation), Answer::Done(result))
                if generation == self.generation =>
            {
                self.published_or_not(result);
            }
            (Pending::Withdraw, Answer::Done(Err(err))) => {
                log::warn!("withdrawing the published keys failed: {err}");
            }
            (Pending::Watch, Answer::Watching(result)) => match result {
                Ok(watch) => {
                    if std::mem::take(&mut self.watch_failing) {
                        log::warn!("{}: watching the registry again", self.worker.url());
                    }
                    self.watch = Some(watch);
                    // Changes between the scripts' reads and the watch's start.
                    self.look();
                }
                Err(err) => {
                    // Tried again, quietly, until it works; warned once per failing stretch.
                    if !std::mem::replace(&mut self.watch_failing, true) {
                        log::warn!(
                            "cannot watch the registry, trying again every {}s; until then its changes trigger no re-run: {err}",
                            WATCH_RETRY.as_secs_f64()
                        );
                    }
                    self.watch_retry_at = Some(Instant::now() + WATCH_RETRY);
                }
            },
            (Pending::Look(generation), Answer::Looked(result)) => match result {
                Ok(_) if generation != self.reads_generation => {}
                Ok(digests) => {
                    let changed = self
                        .reads
                        .iter()
                        .zip(&digests)
                        .any(|((_, seen), now)| seen != now);
                    self.changed |= changed && digests.len() == self.reads.len();
                }
                Err(err) => log::debug!("looking the registry up again failed: {err}"),
            },
            _ => {}
        }
    }

    fn published_or_not(&mut self, result: Result<(), Error>) {
        if !self.wanted {
            return;
        }
        let every = self.ttl / 3;
        match result {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    log::warn!(
                        "{}: the store is back; the keys are published",
                        self.worker.url()
                    );
                }
                self.published = true;
            }
            Err(err) => {
                if !std::mem::replace(&mut self.failing, true) {
                    log::warn!(
                        "cannot publish, the command keeps running and envharness tries again every {}s: {err}",
                        every.as_secs_f64()
                    );
                }
                self.published = false;
            }
        }
        self.renew_at = Some(Instant::now() + every);
    }
}
