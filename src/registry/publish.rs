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
//! any differs. The watch covers the longest prefix common to what they read (`db` for `kv get
//! db/url` and `kv list db/`), so that a put elsewhere in the store costs the harness nothing.
//! When the scripts read more than the read log holds ([`Reads::Everything`]), the whole store
//! is watched and every change it announces is owed a re-run, without a look. A store failure
//! while the command runs is a warning, once per failing stretch.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::reads::Reads;
use super::worker::{Answer, Opener, Request, Worker};
use super::{Key, Lookup, Store, Watch};
use crate::duration::seconds;
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
    /// Wanted: a publish or a renewal is in flight, sent at `since`; `after_failure` when the
    /// last one failed (and was warned about).
    Sending { after_failure: bool, since: Instant },
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
    /// The prefix the subscription asks for or holds: every key the reads depend on starts
    /// with it.
    watched: String,
    /// What the scripts of the last run read, and the digest of what each saw.
    reads: Reads,
    /// A change to `reads` was seen since the last [`Registration::take_change`].
    changed: bool,
    /// The watch announced a change, or started, since the reads were set: what the next
    /// reads saw may already be out of date.
    announced: bool,
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
            watched: String::new(),
            reads: Reads::default(),
            changed: false,
            announced: false,
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
        if announced {
            self.announced = true;
            match self.reads {
                // Nothing to compare: whatever changed may be what the scripts read.
                Reads::Everything => self.changed = true,
                Reads::These(_) => self.look(),
            }
        }
        match self.presence {
            Presence::Published { renew_at } if renew_at <= now => {
                self.send_keys(Request::Renew {
                    keys: self.keys.clone(),
                    ttl: self.ttl,
                });
                self.presence = Presence::Sending {
                    after_failure: false,
                    since: now,
                };
            }
            Presence::Failed { retry_at } if retry_at <= now => {
                self.send_keys(Request::Publish {
                    keys: self.keys.clone(),
                    ttl: self.ttl,
                });
                self.presence = Presence::Sending {
                    after_failure: true,
                    since: now,
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
            since: Instant::now(),
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
                seconds(wait)
            ),
        }
    }

    /// What the scripts of a discovery run read; starts the watch the first time and checks
    /// at once whether anything changed since they read it, unless the watch held since
    /// before announced nothing (when they read too much to say what, [`Reads::Everything`],
    /// the next change the store announces is one).
    pub fn set_reads(&mut self, reads: Reads) {
        self.reads = reads;
        // Looks at the previous reads answer nothing about these.
        self.forget(Pending::Look);
        // A change seen against the previous reads is answered by the run that made these;
        // one since then is found by the look below.
        self.changed = false;
        if self.reads == Reads::default() {
            return;
        }
        let announced = std::mem::take(&mut self.announced);
        let needed = watched_prefix(&self.reads);
        let covered = !matches!(self.subscription, Subscription::Unneeded)
            && needed.starts_with(&self.watched);
        if covered && !announced && matches!(self.subscription, Subscription::Held(_)) {
            // The watch was held since before these reads and announced nothing: a change
            // after them is announced when it comes, so there is nothing to look at (a re-run
            // after SIGHUP or the timer does not cost the store a second round of reads).
            return;
        }
        if !covered {
            // The watch held (if any) goes: a change meanwhile is found by the look below or
            // the one that follows the new watch.
            let after_failure = matches!(self.subscription, Subscription::Failed { .. });
            self.forget(Pending::Watch);
            self.watched = needed;
            self.ask_to_watch(after_failure);
        }
        self.look();
    }

    /// Whether a change to what the scripts read was seen since the last call.
    pub fn take_change(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn ask_to_watch(&mut self, after_failure: bool) {
        self.send(
            Request::Watch {
                prefix: self.watched.clone(),
            },
            Pending::Watch,
        );
        self.subscription = Subscription::Asked { after_failure };
    }

    /// Looks again at what the scripts read (when there is something to look at); a second
    /// look queued behind one in flight is enough, since it is answered after the change.
    fn look(&mut self) {
        let Reads::These(reads) = &self.reads else {
            return;
        };
        if reads.is_empty() {
            return;
        }
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
        let Reads::These(reads) = &self.reads else {
            return;
        };
        let lookups: Vec<Lookup> = reads.iter().map(|(lookup, _)| lookup.clone()).collect();
        log::debug!(
            "{}: looking up again what the last run read ({} keys and prefixes)",
            self.worker.url(),
            lookups.len()
        );
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
                if let Reads::These(reads) = &self.reads {
                    let changed = reads
                        .iter()
                        .zip(&digests)
                        .any(|((_, seen), now)| seen != now);
                    self.changed |= changed && digests.len() == reads.len();
                }
            }
            (Pending::Look, Answer::Looked(Err(err))) => {
                log::debug!("looking the registry up again failed: {err}");
            }
            _ => {}
        }
    }

    fn published_or_not(&mut self, result: Result<(), Error>) {
        let Presence::Sending {
            after_failure,
            since,
        } = self.presence
        else {
            return;
        };
        let every = self.ttl / 3;
        let now = Instant::now();
        let next = now + every;
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
                        seconds(every)
                    );
                }
                // A third of the TTL after this try was sent, at once when that has passed:
                // a try that waited out an unreachable store (up to 5 s, longer than a
                // renewal at a short TTL) must not put the next one a renewal further off,
                // or the keys come back that much later once the store answers again.
                Presence::Failed {
                    retry_at: (since + every).max(now),
                }
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
                // Changes between the scripts' reads and the watch's start; a run under way
                // read before the watch started, so its reads are looked at too.
                self.announced = true;
                self.look();
            }
            Err(err) => {
                // Tried again, quietly, until it works; warned once per failing stretch.
                if !after_failure {
                    log::warn!(
                        "cannot watch the registry, trying again every {}s; until then its changes trigger no re-run: {err}",
                        seconds(WATCH_RETRY)
                    );
                }
                self.subscription = Subscription::Failed {
                    retry_at: Instant::now() + WATCH_RETRY,
                };
            }
        }
    }
}

/// The longest prefix common to every lookup's keys (`get KEY` depends on KEY and `KEY/…`,
/// `list PREFIX` on the keys under PREFIX), which a watch of it covers; empty (the whole
/// store) when the reads are [`Reads::Everything`].
fn watched_prefix(reads: &Reads) -> String {
    let Reads::These(reads) = reads else {
        return String::new();
    };
    let mut prefixes = reads.iter().map(|(lookup, _)| match lookup {
        Lookup::Get(key) => key.as_str(),
        Lookup::List(prefix) => prefix.as_str(),
    });
    let Some(first) = prefixes.next() else {
        return String::new();
    };
    prefixes.fold(first, common_prefix).to_owned()
}

fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let mut len = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    // Keys and prefixes are ASCII; a cut inside a character must not panic all the same.
    while !a.is_char_boundary(len) {
        len -= 1;
    }
    &a[..len]
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};

    use nix::sys::eventfd::{EfdFlags, EventFd};

    use super::*;
    use crate::os::poll::Poll;
    use crate::registry::{LeaseId, Seen};

    /// How long one test may drive its registration: reached only when something hangs.
    const GIVE_UP: Duration = Duration::from_secs(10);
    const URL: &str = "memory://test";

    /// Calls the store received, by kind; `refused` counts those it failed.
    #[derive(Debug, Default, Clone, Copy)]
    struct Calls {
        get: usize,
        grant: usize,
        keep_alive: usize,
        put: usize,
        revoke: usize,
        watch: usize,
        refused: usize,
    }

    /// What the store holds, shared between the registration's worker and the test.
    #[derive(Default)]
    struct Contents {
        /// Each key's value and lease.
        keys: BTreeMap<String, (Vec<u8>, Option<LeaseId>)>,
        /// Each live lease with the TTL it was granted with. Leases do not run out by
        /// themselves here: the test says when one is gone ([`Memory::lose_lease`]), so that a
        /// slow machine cannot make one run out behind its back.
        leases: HashMap<LeaseId, Duration>,
        last_lease: i64,
        /// Every call fails while the store is down.
        down: bool,
        /// The next this many calls fail.
        refuse_next: usize,
        /// Calls wait while the gate is closed; `waiting` counts those that do.
        gate_closed: bool,
        waiting: usize,
        calls: Calls,
        /// Written on every change of a key under their prefix, for the watches.
        watches: Vec<(String, Arc<EventFd>)>,
    }

    impl Contents {
        fn announce_change(&self, key: &str) {
            for (prefix, watch) in &self.watches {
                if key.starts_with(prefix.as_str()) {
                    watch.write(1).expect("writing a watch's eventfd");
                }
            }
        }

        /// Removes a lease and the keys put with it.
        fn end_lease(&mut self, lease: LeaseId) {
            self.leases.remove(&lease);
            let ended: Vec<String> = self
                .keys
                .iter()
                .filter(|(_, (_, held))| *held == Some(lease))
                .map(|(key, _)| key.clone())
                .collect();
            for key in ended {
                self.keys.remove(&key);
                self.announce_change(&key);
            }
        }
    }

    /// An in-memory store: the test's handle and the store's are clones of one another.
    #[derive(Clone, Default)]
    struct Memory(Arc<(Mutex<Contents>, Condvar)>);

    impl Memory {
        fn contents(&self) -> MutexGuard<'_, Contents> {
            self.0 .0.lock().expect("the store's lock")
        }

        /// An opener for [`Registration::start`] that hands out this store.
        fn opener(&self) -> Opener {
            let memory = self.clone();
            Box::new(move || Ok(Box::new(memory.clone()) as Box<dyn Store>))
        }

        fn calls(&self) -> Calls {
            self.contents().calls
        }

        /// The keys with their values and leases, as `key=value@lease`.
        fn keys(&self) -> Vec<String> {
            let contents = self.contents();
            contents
                .keys
                .iter()
                .map(|(key, (value, lease))| {
                    let lease = lease.map_or("none".into(), |LeaseId(id)| id.to_string());
                    format!("{key}={}@{lease}", String::from_utf8_lossy(value))
                })
                .collect()
        }

        /// The one lease the keys are held with; panics when there are several or none.
        fn lease_of_keys(&self) -> LeaseId {
            let contents = self.contents();
            let mut leases: Vec<Option<LeaseId>> =
                contents.keys.values().map(|(_, lease)| *lease).collect();
            leases.dedup();
            match leases[..] {
                [Some(lease)] => lease,
                _ => panic!("the keys are not under one lease: {leases:?}"),
            }
        }

        fn is_live(&self, lease: LeaseId) -> bool {
            self.contents().leases.contains_key(&lease)
        }

        fn set_down(&self, down: bool) {
            self.contents().down = down;
        }

        fn refuse_next(&self, calls: usize) {
            self.contents().refuse_next = calls;
        }

        /// The lease runs out (or the store was wiped): its keys go with it.
        fn lose_lease(&self, lease: LeaseId) {
            self.contents().end_lease(lease);
        }

        /// Another instance (or `envharness kv put`) sets a key.
        fn set(&self, key: &str, value: &str) {
            let mut contents = self.contents();
            contents
                .keys
                .insert(key.into(), (value.as_bytes().to_vec(), None));
            contents.announce_change(key);
        }

        /// Closes the gate and returns once a call waits at it.
        fn hold_the_next_call(&self, first: impl FnOnce()) {
            let (lock, turned) = &*self.0;
            lock.lock().expect("the store's lock").gate_closed = true;
            first();
            let (contents, timed_out) = turned
                .wait_timeout_while(lock.lock().expect("the store's lock"), GIVE_UP, |c| {
                    c.waiting == 0
                })
                .expect("the store's lock");
            assert!(!timed_out.timed_out(), "no call reached the store");
            drop(contents);
        }

        fn open_the_gate(&self) {
            self.contents().gate_closed = false;
            self.0 .1.notify_all();
        }

        /// Every call starts here: it waits while the gate is closed, is counted, and fails
        /// while the store is down or refuses it.
        fn call(&self, count: impl FnOnce(&mut Calls)) -> Result<MutexGuard<'_, Contents>, Error> {
            let (lock, turned) = &*self.0;
            let mut contents = lock.lock().expect("the store's lock");
            if contents.gate_closed {
                contents.waiting += 1;
                turned.notify_all();
                contents = turned
                    .wait_timeout_while(contents, GIVE_UP, |c| c.gate_closed)
                    .expect("the store's lock")
                    .0;
                contents.waiting -= 1;
            }
            count(&mut contents.calls);
            if contents.down || contents.refuse_next > 0 {
                contents.refuse_next = contents.refuse_next.saturating_sub(1);
                contents.calls.refused += 1;
                return Err(Error::Store {
                    url: URL.into(),
                    reason: "down".into(),
                });
            }
            Ok(contents)
        }
    }

    impl Store for Memory {
        fn url(&self) -> &str {
            URL
        }

        fn get(&mut self, key: &Key) -> Result<Option<Vec<u8>>, Error> {
            let contents = self.call(|calls| calls.get += 1)?;
            Ok(contents
                .keys
                .get(key.as_str())
                .map(|(value, _)| value.clone()))
        }

        fn list(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
            let contents = self.call(|_| {})?;
            Ok(contents
                .keys
                .iter()
                .filter(|(key, _)| key.starts_with(prefix))
                .map(|(key, (value, _))| (key.clone(), value.clone()))
                .collect())
        }

        fn put(&mut self, key: &Key, value: &[u8], lease: Option<LeaseId>) -> Result<(), Error> {
            let mut contents = self.call(|calls| calls.put += 1)?;
            if lease.is_some_and(|lease| !contents.leases.contains_key(&lease)) {
                // As etcd does: a key cannot be put with a lease that is gone.
                return Err(Error::Store {
                    url: URL.into(),
                    reason: "requested lease not found".into(),
                });
            }
            contents
                .keys
                .insert(key.as_str().into(), (value.to_vec(), lease));
            contents.announce_change(key.as_str());
            Ok(())
        }

        fn delete(&mut self, key: &Key) -> Result<(), Error> {
            let mut contents = self.call(|_| {})?;
            if contents.keys.remove(key.as_str()).is_some() {
                contents.announce_change(key.as_str());
            }
            Ok(())
        }

        fn grant(&mut self, ttl: Duration) -> Result<LeaseId, Error> {
            let mut contents = self.call(|calls| calls.grant += 1)?;
            contents.last_lease += 1;
            let lease = LeaseId(contents.last_lease);
            contents.leases.insert(lease, ttl);
            Ok(lease)
        }

        fn keep_alive(&mut self, lease: LeaseId) -> Result<bool, Error> {
            let contents = self.call(|calls| calls.keep_alive += 1)?;
            Ok(contents.leases.contains_key(&lease))
        }

        fn revoke(&mut self, lease: LeaseId) -> Result<(), Error> {
            self.call(|calls| calls.revoke += 1)?.end_lease(lease);
            Ok(())
        }

        fn watch(&mut self, prefix: &str) -> Result<Box<dyn Watch>, Error> {
            let mut contents = self.call(|calls| calls.watch += 1)?;
            let event = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .expect("creating an eventfd");
            let event = Arc::new(event);
            contents.watches.push((prefix.to_owned(), event.clone()));
            Ok(Box::new(MemoryWatch(event)))
        }
    }

    struct MemoryWatch(Arc<EventFd>);

    impl Watch for MemoryWatch {
        fn fd(&self) -> BorrowedFd<'_> {
            self.0.as_fd()
        }

        fn drain(&mut self) -> bool {
            // EAGAIN: nothing since the last drain.
            self.0.read().is_ok_and(|count| count > 0)
        }
    }

    /// Keeps the warnings logged on this thread, so a test can count them. One logger serves
    /// the whole test process; each thread keeps its own warnings, so tests running at once
    /// do not see each other's.
    struct Warnings;

    thread_local! {
        static WARNINGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    impl log::Log for Warnings {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Warn
        }

        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                WARNINGS.with(|warnings| warnings.borrow_mut().push(record.args().to_string()));
            }
        }

        fn flush(&self) {}
    }

    /// Starts keeping this thread's warnings, from none.
    fn capture_warnings() {
        static INSTALL: Once = Once::new();
        static LOGGER: Warnings = Warnings;
        INSTALL.call_once(|| {
            log::set_logger(&LOGGER).expect("no other logger in the unit tests");
            log::set_max_level(log::LevelFilter::Warn);
        });
        WARNINGS.with(|warnings| warnings.borrow_mut().clear());
    }

    fn warnings() -> Vec<String> {
        WARNINGS.with(|warnings| warnings.borrow().clone())
    }

    fn key(text: &str) -> Key {
        Key::parse(text).expect("a valid key")
    }

    /// What the export phase would have announced.
    fn announced() -> Vec<(Key, Vec<u8>)> {
        vec![
            (key("web/one"), b"10.0.0.1:80".to_vec()),
            (key("web/two"), b"10.0.0.2:80".to_vec()),
        ]
    }

    fn start(memory: &Memory, ttl: Duration) -> Registration {
        Registration::start(URL, memory.opener(), announced(), ttl).expect("starting the worker")
    }

    /// Plays the supervisor's loop: polls the registration's descriptors until its deadline,
    /// then lets it handle what came, until `done` holds. Panics after [`GIVE_UP`], naming
    /// what was awaited.
    fn drive_until(
        registration: &mut Registration,
        awaited: &str,
        mut done: impl FnMut(&mut Registration) -> bool,
    ) {
        let give_up = Instant::now() + GIVE_UP;
        loop {
            registration.handle();
            if done(registration) {
                return;
            }
            assert!(
                Instant::now() < give_up,
                "{awaited}: not within {GIVE_UP:?}"
            );
            let wake_at = registration
                .deadline()
                .map_or(give_up, |at| at.min(give_up));
            let mut poll = Poll::default();
            for fd in registration.fds() {
                poll.add(fd, ());
            }
            poll.wait(Some(wake_at)).expect("polling the registration");
        }
    }

    fn is_published(registration: &mut Registration) -> bool {
        matches!(registration.presence, Presence::Published { .. })
    }

    /// Every answer has come.
    fn is_settled(registration: &mut Registration) -> bool {
        registration.in_flight.is_empty()
    }

    fn publish(registration: &mut Registration) {
        registration.publish();
        drive_until(registration, "published", is_published);
    }

    const PUBLISHED: [&str; 2] = ["web/one=10.0.0.1:80", "web/two=10.0.0.2:80"];

    /// The keys as announced, each held with `lease`.
    fn published_with(lease: LeaseId) -> Vec<String> {
        PUBLISHED
            .iter()
            .map(|pair| format!("{pair}@{}", lease.0))
            .collect()
    }

    #[test]
    fn publish_puts_the_keys_under_one_granted_lease() {
        let memory = Memory::default();
        let ttl = Duration::from_secs(3);
        let mut registration = start(&memory, ttl);
        publish(&mut registration);
        let lease = memory.lease_of_keys();
        assert_eq!(memory.keys(), published_with(lease));
        assert_eq!(memory.contents().leases.get(&lease), Some(&ttl));
        let calls = memory.calls();
        assert_eq!((calls.grant, calls.put), (1, 2), "{calls:?}");
        // Published already: a second publish sends nothing.
        registration.publish();
        assert!(is_settled(&mut registration));
    }

    #[test]
    fn the_lease_is_renewed_every_third_of_the_ttl_without_new_grants() {
        let memory = Memory::default();
        let ttl = Duration::from_millis(1200);
        let mut registration = start(&memory, ttl);
        let started = Instant::now();
        publish(&mut registration);
        let lease = memory.lease_of_keys();
        drive_until(&mut registration, "two renewals", |_| {
            memory.calls().keep_alive >= 2
        });
        // Each renewal waits a third of the TTL after the answer before it.
        let elapsed = started.elapsed();
        assert!(elapsed >= ttl * 2 / 3, "two renewals after {elapsed:?}");
        let calls = memory.calls();
        assert_eq!((calls.grant, calls.put), (1, 2), "{calls:?}");
        assert_eq!(memory.keys(), published_with(lease));
    }

    #[test]
    fn withdraw_revokes_the_lease_and_the_keys_are_gone() {
        let memory = Memory::default();
        let mut registration = start(&memory, Duration::from_secs(3));
        publish(&mut registration);
        let lease = memory.lease_of_keys();
        registration.withdraw(Some(WITHDRAW_WAIT));
        assert_eq!(memory.calls().revoke, 1);
        assert!(memory.keys().is_empty(), "{:?}", memory.keys());
        assert!(!memory.is_live(lease));
        assert_eq!(registration.presence, Presence::Withdrawn);
        assert_eq!(registration.deadline(), None, "nothing more to renew");
        assert!(is_settled(&mut registration));
    }

    #[test]
    fn keys_lost_while_the_store_was_down_are_published_again_when_it_is_back() {
        capture_warnings();
        let memory = Memory::default();
        let mut registration = start(&memory, Duration::from_millis(600));
        publish(&mut registration);
        let first = memory.lease_of_keys();
        memory.set_down(true);
        // Meanwhile the lease runs out: the keys are gone.
        memory.lose_lease(first);
        drive_until(&mut registration, "three failed tries", |_| {
            memory.calls().refused >= 3
        });
        assert!(memory.keys().is_empty());
        let warned = warnings();
        assert_eq!(
            warned.len(),
            1,
            "one warning per failing stretch: {warned:?}"
        );
        assert!(warned[0].contains("cannot publish"), "{warned:?}");
        memory.set_down(false);
        drive_until(&mut registration, "published again", is_published);
        let second = memory.lease_of_keys();
        assert_ne!(second, first);
        assert_eq!(memory.keys(), published_with(second));
        assert_eq!(memory.calls().grant, 2);
        let warned = warnings();
        assert_eq!(warned.len(), 2, "{warned:?}");
        assert!(warned[1].contains("the store is back"), "{warned:?}");
    }

    /// A host cut off from its cluster (bench/chaos.py): each request waits out its time
    /// (5 s) before it fails, longer than a renewal. The next try follows a third of the TTL
    /// after the failed one was sent, at once when that has passed, not a third of the TTL
    /// after the failure: else the keys come back up to a request's time plus a renewal after
    /// the store does (2.7 s with `--ttl 6` when a host is healed, where a renewal is 2 s).
    #[test]
    fn a_try_that_failed_slowly_is_followed_by_the_next_at_once() {
        let memory = Memory::default();
        let ttl = Duration::from_secs(3);
        let every = ttl / 3;
        let mut registration = start(&memory, ttl);
        publish(&mut registration);
        memory.set_down(true);
        // The renewal, sent a third of the TTL after the publish, hangs...
        memory.hold_the_next_call(|| drive_for(&mut registration, every + every / 10));
        drive_for(&mut registration, every * 3 / 2);
        // ...and fails, long after a third of the TTL.
        let failed = Instant::now();
        memory.open_the_gate();
        drive_until(&mut registration, "the next try", |_| {
            memory.calls().refused >= 2
        });
        let after = failed.elapsed();
        assert!(
            after < every / 2,
            "the next try {after:?} after the slow failure (a renewal: {every:?})"
        );
        memory.set_down(false);
        drive_until(&mut registration, "published again", is_published);
    }

    #[test]
    fn a_lease_gone_from_the_store_is_replaced_and_the_keys_published_again() {
        capture_warnings();
        let memory = Memory::default();
        let mut registration = start(&memory, Duration::from_millis(600));
        publish(&mut registration);
        let first = memory.lease_of_keys();
        memory.lose_lease(first);
        assert!(memory.keys().is_empty());
        drive_until(&mut registration, "published again", |registration| {
            is_published(registration) && !memory.keys().is_empty()
        });
        let second = memory.lease_of_keys();
        assert_ne!(second, first);
        assert_eq!(memory.keys(), published_with(second));
        let calls = memory.calls();
        assert_eq!((calls.grant, calls.refused), (2, 0), "{calls:?}");
        // The renewal found the lease gone and published again: no failure to warn about
        // here (the worker warns on its own thread).
        assert_eq!(warnings(), Vec::<String>::new());
    }

    /// What a script saw when it read `key` holding `value`.
    fn read_of(key_text: &str, value: &str) -> (Lookup, String) {
        let seen = Seen::Value(Some(value.as_bytes().to_vec()));
        (Lookup::Get(key(key_text)), seen.digest())
    }

    /// Plays the supervisor's loop for `time`, whatever happens.
    fn drive_for(registration: &mut Registration, time: Duration) {
        let until = Instant::now() + time;
        while Instant::now() < until {
            registration.handle();
            let wake_at = registration.deadline().map_or(until, |at| at.min(until));
            let mut poll = Poll::default();
            for fd in registration.fds() {
                poll.add(fd, ());
            }
            poll.wait(Some(wake_at)).expect("polling the registration");
        }
        registration.handle();
    }

    #[test]
    fn the_watch_covers_the_prefix_common_to_the_reads_and_moves_with_them() {
        let read = |lookups: &[Lookup]| {
            Reads::These(
                lookups
                    .iter()
                    .map(|l| (l.clone(), "-".to_owned()))
                    .collect(),
            )
        };
        let get = |text: &str| Lookup::Get(key(text));
        let list = |text: &str| Lookup::List(text.to_owned());
        assert_eq!(watched_prefix(&read(&[get("db/url")])), "db/url");
        assert_eq!(watched_prefix(&read(&[get("db/url"), list("db/")])), "db/");
        assert_eq!(watched_prefix(&read(&[get("db"), list("dbx/")])), "db");
        assert_eq!(watched_prefix(&read(&[get("db"), get("web")])), "");
        assert_eq!(watched_prefix(&Reads::Everything), "");

        let memory = Memory::default();
        memory.set("db/url", "postgres://one");
        let mut registration = start(&memory, Duration::from_secs(3));
        registration.set_reads(Reads::These(vec![read_of("db/url", "postgres://one")]));
        drive_until(&mut registration, "watching", is_watching);
        // Narrower reads are covered by the watch held.
        registration.set_reads(Reads::These(vec![read_of("db/url/a", "x")]));
        drive_until(&mut registration, "looked", is_settled);
        assert_eq!(memory.calls().watch, 1);
        // Reads elsewhere move the watch there.
        memory.set("web/x", "one");
        registration.set_reads(Reads::These(vec![read_of("web/x", "one")]));
        drive_until(&mut registration, "watching web/x", is_watching);
        assert_eq!(memory.calls().watch, 2);
        assert_eq!(registration.watched, "web/x");
        memory.set("web/x", "two");
        drive_until(
            &mut registration,
            "the change seen",
            Registration::take_change,
        );
    }

    /// Watching, and every look answered.
    fn is_watching(registration: &mut Registration) -> bool {
        matches!(registration.subscription, Subscription::Held(_)) && is_settled(registration)
    }

    #[test]
    fn a_change_of_a_key_the_scripts_read_is_seen_once() {
        let memory = Memory::default();
        memory.set("db/url", "postgres://one");
        let mut registration = start(&memory, Duration::from_secs(3));
        registration.set_reads(Reads::These(vec![read_of("db/url", "postgres://one")]));
        drive_until(&mut registration, "watching", is_watching);
        assert!(!registration.take_change(), "nothing changed yet");
        // A key under the watched prefix that nobody read changes, and the read one is put
        // again unchanged: each is announced and looked at, and neither is a change.
        for (key, value) in [("db/urlx", "x"), ("db/url", "postgres://one")] {
            let looked = memory.calls().get;
            memory.set(key, value);
            drive_until(&mut registration, "looked again", |registration| {
                memory.calls().get > looked && is_settled(registration)
            });
            assert!(!registration.take_change(), "{key} set to {value}");
        }
        // A key elsewhere is not even announced: nothing is looked up.
        let looked = memory.calls().get;
        memory.set("other/key", "x");
        drive_for(&mut registration, Duration::from_millis(300));
        assert_eq!(memory.calls().get, looked, "other/key was looked at");
        memory.set("db/url", "postgres://two");
        drive_until(
            &mut registration,
            "the change seen",
            Registration::take_change,
        );
        assert!(!registration.take_change(), "a change is taken once");
    }

    #[test]
    fn reads_set_again_under_a_quiet_watch_are_not_looked_up_but_after_an_announcement_are() {
        let memory = Memory::default();
        memory.set("db/url", "postgres://one");
        let mut registration = start(&memory, Duration::from_secs(3));
        let one = || Reads::These(vec![read_of("db/url", "postgres://one")]);
        registration.set_reads(one());
        drive_until(&mut registration, "watching", is_watching);
        // The first run after the watch started may have read before it: looked at.
        let looked = memory.calls().get;
        registration.set_reads(one());
        drive_until(&mut registration, "looked", |registration| {
            memory.calls().get > looked && is_settled(registration)
        });
        // A re-run (SIGHUP, the timer) with nothing announced since: nothing to look at.
        let looked = memory.calls().get;
        registration.set_reads(one());
        drive_for(&mut registration, Duration::from_millis(200));
        assert_eq!(
            memory.calls().get,
            looked,
            "a quiet watch's reads were looked up"
        );
        // A change announced while a run is under way, which read before it: that run's
        // reads are looked at when it ends, and the change is seen.
        memory.set("db/url", "postgres://two");
        drive_until(&mut registration, "announced and looked", |registration| {
            memory.calls().get > looked && is_settled(registration)
        });
        registration.set_reads(one());
        drive_until(
            &mut registration,
            "the change seen",
            Registration::take_change,
        );
    }

    #[test]
    fn a_change_before_the_watch_started_is_seen_at_once() {
        let memory = Memory::default();
        memory.set("db/url", "postgres://two");
        let mut registration = start(&memory, Duration::from_secs(3));
        registration.set_reads(Reads::These(vec![read_of("db/url", "postgres://one")]));
        drive_until(
            &mut registration,
            "the change seen",
            Registration::take_change,
        );
    }

    #[test]
    fn after_reads_over_the_limit_any_announced_change_is_a_change() {
        let memory = Memory::default();
        let mut registration = start(&memory, Duration::from_secs(3));
        registration.set_reads(Reads::Everything);
        drive_until(&mut registration, "watching", is_watching);
        assert!(!registration.take_change(), "nothing changed yet");
        let looked = memory.calls().get;
        memory.set("anything/at-all", "x");
        drive_until(
            &mut registration,
            "the change seen",
            Registration::take_change,
        );
        assert_eq!(memory.calls().get, looked, "there is nothing to look up");
        // Reads that fit again: back to looking them up, and only their changes count.
        memory.set("db/url", "postgres://one");
        registration.set_reads(Reads::These(vec![read_of("db/url", "postgres://one")]));
        drive_until(&mut registration, "looked", is_settled);
        memory.set("anything/at-all", "y");
        drive_until(&mut registration, "looked again", |registration| {
            memory.calls().get > looked + 1 && is_settled(registration)
        });
        assert!(!registration.take_change(), "an unrelated key changed");
    }

    #[test]
    fn a_watch_that_failed_is_asked_again_until_the_store_is_back() {
        capture_warnings();
        let memory = Memory::default();
        memory.set_down(true);
        let mut registration = start(&memory, Duration::from_secs(3));
        registration.set_reads(Reads::These(vec![read_of("db/url", "postgres://one")]));
        drive_until(&mut registration, "the watch failed", |registration| {
            matches!(registration.subscription, Subscription::Failed { .. })
        });
        assert!(registration.deadline().is_some(), "a retry is due");
        // A change while nothing watches is found by the look that follows the new watch.
        memory.set("db/url", "postgres://two");
        memory.set_down(false);
        drive_until(&mut registration, "watching", is_watching);
        assert!(registration.take_change(), "the change while unwatched");
        let warned = warnings();
        assert_eq!(warned.len(), 2, "{warned:?}");
        assert!(warned[0].contains("cannot watch"), "{warned:?}");
        assert!(
            warned[1].contains("watching the registry again"),
            "{warned:?}"
        );
        // The watch works: the next change is seen too.
        memory.set("db/url", "postgres://three");
        drive_until(
            &mut registration,
            "the change seen",
            Registration::take_change,
        );
    }

    #[test]
    fn a_publish_answered_after_the_withdrawal_leaves_no_keys() {
        let memory = Memory::default();
        let mut registration = start(&memory, Duration::from_secs(3));
        // The publish is held in the store until the withdrawal has been sent.
        memory.hold_the_next_call(|| registration.publish());
        registration.withdraw(None);
        let pending: Vec<Pending> = registration.in_flight.iter().map(|(_, p)| *p).collect();
        assert_eq!(pending, [Pending::Stale, Pending::Withdraw]);
        memory.open_the_gate();
        drive_until(&mut registration, "every answer", is_settled);
        assert!(memory.keys().is_empty(), "{:?}", memory.keys());
        assert_eq!(memory.calls().revoke, 1);
        assert_eq!(registration.presence, Presence::Withdrawn);
        assert_eq!(registration.deadline(), None, "nothing to renew");
    }

    #[test]
    fn a_failed_publish_from_before_a_withdrawal_does_not_spoil_the_next_publish() {
        capture_warnings();
        let memory = Memory::default();
        let mut registration = start(&memory, Duration::from_secs(3));
        // Unhealthy and healthy again while the first publish is held in the store, and
        // fails there; the publish after the withdrawal succeeds.
        memory.refuse_next(1);
        memory.hold_the_next_call(|| registration.publish());
        registration.withdraw(None);
        registration.publish();
        memory.open_the_gate();
        drive_until(&mut registration, "every answer", is_settled);
        assert!(
            is_published(&mut registration),
            "{:?}",
            registration.presence
        );
        assert_eq!(memory.keys(), published_with(memory.lease_of_keys()));
        assert_eq!(
            warnings(),
            Vec::<String>::new(),
            "the stale failure is no failure"
        );
    }
}
