//! Publishing (docs/reference.md §11.3) and registry-change triggers (§11.5), as the harness does
//! them.
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

/// What a request in flight was for. An answer that no longer counts (a publish sent before a
/// withdrawal, a look at reads that were replaced) is [`Pending::Stale`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Publish,
    Withdraw,
    Watch,
    Look,
    Stale,
}

/// How long a watch that could not be started waits before it is tried again.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// Whether the keys are in the store, or on their way there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// Not wanted there: before the command runs (and `health` passed), while it is
    /// unhealthy, and once the service goes away.
    Withdrawn,
    /// Wanted: a publish or a renewal is in flight; `after_failure` when the last one failed
    /// (and was warned about).
    Sending { after_failure: bool },
    /// Published under the lease, renewed at `renew_at`.
    Published { renew_at: Instant },
    /// Wanted, but the last publish or renewal failed: tried again at `retry_at`.
    Failed { retry_at: Instant },
}

/// The watch that tells when what the scripts read may have changed.
enum Subscription {
    /// Nothing read yet: nothing to watch.
    Unneeded,
    /// Asked of the store; `after_failure` when an earlier try failed (and was warned about).
    Asked {
        after_failure: bool,
    },
    Held(Box<dyn Watch>),
    /// The store could not watch: asked again at `retry_at`.
    Failed {
        retry_at: Instant,
    },
}

/// The harness's presence in the store under `--init`: its published keys and their lease,
/// and the watch that triggers re-runs.
pub struct Registration {
    worker: Worker,
    keys: Vec<(Key, Vec<u8>)>,
    ttl: Duration,
    presence: Presence,
    subscription: Subscription,
    /// What the scripts of the last run read, and the digest of what each saw.
    reads: Vec<(Lookup, String)>,
    /// A change to `reads` was seen since the last [`Registration::take_change`].
    changed: bool,
    in_flight: Vec<(u64, Pending)>,
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
            presence: Presence::Withdrawn,
            subscription: Subscription::Unneeded,
            reads: Vec::new(),
            changed: false,
            in_flight: Vec::new(),
        })
    }

    /// The descriptors the loop polls for this registration.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![self.worker.as_fd()];
        if let Subscription::Held(watch) = &self.subscription {
            fds.push(watch.fd());
        }
        fds
    }

    /// When [`Registration::handle`] has something to do without a wake-up: a renewal, a
    /// retry. (A renewal waits for the one in flight: its answer wakes the loop.)
    pub fn deadline(&self) -> Option<Instant> {
        let keys = match self.presence {
            Presence::Published { renew_at } => Some(renew_at),
            Presence::Failed { retry_at } => Some(retry_at),
            Presence::Withdrawn | Presence::Sending { .. } => None,
        };
        let watch = match self.subscription {
            Subscription::Failed { retry_at } => Some(retry_at),
            _ => None,
        };
        [keys, watch].into_iter().flatten().min()
    }

    /// After every wake-up of the loop: takes the store's answers and the watch's
    /// notifications, and sends what is due.
    pub fn handle(&mut self) {
        for (number, answer) in self.worker.answers() {
            self.answered(number, answer);
        }
        let now = Instant::now();
        let announced = match &mut self.subscription {
            Subscription::Held(watch) => watch.drain(),
            Subscription::Failed { retry_at } if *retry_at <= now => {
                self.ask_to_watch(true);
                false
            }
            _ => false,
        };
        if announced && !self.reads.is_empty() {
            self.look();
        }
        match self.presence {
            Presence::Published { renew_at } if renew_at <= now => {
                self.send_keys(Request::Renew {
                    keys: self.keys.clone(),
                    ttl: self.ttl,
                });
                self.presence = Presence::Sending {
                    after_failure: false,
                };
            }
            Presence::Failed { retry_at } if retry_at <= now => {
                self.send_keys(Request::Publish {
                    keys: self.keys.clone(),
                    ttl: self.ttl,
                });
                self.presence = Presence::Sending {
                    after_failure: true,
                };
            }
            _ => {}
        }
    }

    /// The command runs (and is healthy): put the keys, with the lease.
    pub fn publish(&mut self) {
        if self.presence != Presence::Withdrawn || self.keys.is_empty() {
            return;
        }
        self.send_keys(Request::Publish {
            keys: self.keys.clone(),
            ttl: self.ttl,
        });
        self.presence = Presence::Sending {
            after_failure: false,
        };
    }

    /// The service goes away or is unhealthy: revoke the lease. With `wait`, waits up to that
    /// long for the store to confirm (the loop is blocked meanwhile, so only before a stop
    /// signal is forwarded or at the end).
    pub fn withdraw(&mut self, wait: Option<Duration>) {
        if self.presence == Presence::Withdrawn {
            return;
        }
        self.presence = Presence::Withdrawn;
        // A publish answered after this must not count as the keys being there.
        self.forget(Pending::Publish);
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
        // Looks at the previous reads answer nothing about these.
        self.forget(Pending::Look);
        // A change seen against the previous reads is answered by the run that made these;
        // one since then is found by the look below.
        self.changed = false;
        if self.reads.is_empty() {
            return;
        }
        if matches!(self.subscription, Subscription::Unneeded) {
            self.ask_to_watch(false);
        }
        self.send_look();
    }

    /// Whether a change to what the scripts read was seen since the last call.
    pub fn take_change(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn ask_to_watch(&mut self, after_failure: bool) {
        self.send(
            Request::Watch {
                prefix: String::new(),
            },
            Pending::Watch,
        );
        self.subscription = Subscription::Asked { after_failure };
    }

    /// Looks again after a change was announced; a second look queued behind one in flight
    /// is enough, since it is answered after the change.
    fn look(&mut self) {
        let queued = self
            .in_flight
            .iter()
            .filter(|(_, pending)| *pending == Pending::Look)
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
        self.send(Request::Look(lookups), Pending::Look);
    }

    fn send_keys(&mut self, request: Request) {
        self.send(request, Pending::Publish);
    }

    fn send(&mut self, request: Request, pending: Pending) -> u64 {
        let number = self.worker.send(request);
        self.in_flight.push((number, pending));
        number
    }

    /// The answers to the requests in flight for `what` will not count.
    fn forget(&mut self, what: Pending) {
        for (_, pending) in &mut self.in_flight {
            if *pending == what {
                *pending = Pending::Stale;
            }
        }
    }

    fn answered(&mut self, number: u64, answer: Answer) {
        let Some(at) = self.in_flight.iter().position(|(id, _)| *id == number) else {
            return;
        };
        let (_, pending) = self.in_flight.remove(at);
        match (pending, answer) {
            (Pending::Publish, Answer::Done(result)) => self.published_or_not(result),
            (Pending::Withdraw, Answer::Done(Err(err))) => {
                log::warn!("withdrawing the published keys failed: {err}");
            }
            (Pending::Watch, Answer::Reruns(result)) => self.watching_or_not(result),
            (Pending::Look, Answer::Looked(Ok(digests))) => {
                let changed = self
                    .reads
                    .iter()
                    .zip(&digests)
                    .any(|((_, seen), now)| seen != now);
                self.changed |= changed && digests.len() == self.reads.len();
            }
            (Pending::Look, Answer::Looked(Err(err))) => {
                log::debug!("looking the registry up again failed: {err}");
            }
            _ => {}
        }
    }

    fn published_or_not(&mut self, result: Result<(), Error>) {
        let Presence::Sending { after_failure } = self.presence else {
            return;
        };
        let every = self.ttl / 3;
        let next = Instant::now() + every;
        self.presence = match result {
            Ok(()) => {
                if after_failure {
                    log::warn!(
                        "{}: the store is back; the keys are published",
                        self.worker.url()
                    );
                }
                Presence::Published { renew_at: next }
            }
            Err(err) => {
                if !after_failure {
                    log::warn!(
                        "cannot publish, the command keeps running and envharness tries again every {}s: {err}",
                        every.as_secs_f64()
                    );
                }
                Presence::Failed { retry_at: next }
            }
        };
    }

    fn watching_or_not(&mut self, result: Result<Box<dyn Watch>, Error>) {
        let Subscription::Asked { after_failure } = self.subscription else {
            return;
        };
        match result {
            Ok(watch) => {
                if after_failure {
                    log::warn!("{}: watching the registry again", self.worker.url());
                }
                self.subscription = Subscription::Held(watch);
                // Changes between the scripts' reads and the watch's start.
                self.look();
            }
            Err(err) => {
                // Tried again, quietly, until it works; warned once per failing stretch.
                if !after_failure {
                    log::warn!(
                        "cannot watch the registry, trying again every {}s; until then its changes trigger no re-run: {err}",
                        WATCH_RETRY.as_secs_f64()
                    );
                }
                self.subscription = Subscription::Failed {
                    retry_at: Instant::now() + WATCH_RETRY,
                };
            }
        }
    }
}
