//! An etcd watch as a [`Watch`]: one `/v3/watch` stream over a key range, read by a thread of
//! its own that wakes the caller's poll loop through an eventfd.
//!
//! The stream is established in the caller's thread (so an unreachable cluster is an error
//! of [`Store::watch`](crate::registry::Store::watch), within 5 s); only then does the thread
//! start. It blocks reading the stream and adds 1 to the eventfd for each answer that carries
//! events (a put, a delete, a lease that ran out: etcd reports each as an event). When the
//! stream breaks (etcd restarted, the connection dropped, etcd cancelled the watch), the thread
//! logs in afresh (with credentials) and opens a new one, waiting 0.1 s, then twice as long
//! each time up to 5 s, and once it is back
//! it signals a possible change, since whatever happened meanwhile was not seen. One warning
//! says the watch was lost; a debug line names each failed try.
//!
//! A frozen member (a stopped or hung etcd) keeps its connections open and sends nothing, and
//! TCP keep-alive does not notice: the kernel still answers for it. So when the stream has
//! been silent for [`QUIET`], the thread asks that member for its status (on a connection of
//! its own, kept for the next time); one that does not answer within [`ANSWER_WITHIN`] is
//! given up, and the watch moves to the next endpoint as after a lost stream. A change made
//! while a member is frozen is seen within about two seconds.
//!
//! Dropping the [`EtcdWatch`] stops the thread: it sets a flag, shuts the stream's socket down
//! (which ends a blocked read) and unparks a thread waiting to reconnect. The thread then ends
//! by itself (at worst after a connection attempt of at most 5 s); nobody joins it. The
//! eventfd is shared, so the thread never writes to a closed descriptor.

use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use serde_json::{json, Value};

use super::http::{self, Fault, Lines};
use super::{error_message, parse, Client};
use crate::error::Error;
use crate::os::io_reason;
use crate::registry::Watch;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const LAST_BACKOFF: Duration = Duration::from_secs(5);
/// How long a stream may be silent before its member is asked whether it still answers: with
/// [`ANSWER_WITHIN`] and a reconnection, a change made while a member is frozen is seen within
/// about 1.6 s, plus what the re-run's own reads lose to the frozen member (1 s each; `make
/// chaos` measures the whole: its goal is 3 s). A quiet watch costs its member one status
/// request a second, on a kept connection.
const QUIET: Duration = Duration::from_secs(1);
/// How long that member has to answer. A status is answered from the member's own state (no
/// consensus round), in milliseconds even under load; a member that takes longer is given up
/// for another, which costs a re-run.
const ANSWER_WITHIN: Duration = Duration::from_millis(500);

pub struct EtcdWatch {
    events: Arc<EventFd>,
    shared: Arc<Shared>,
    thread: Thread,
}

/// What the caller's thread and the watch thread share.
struct Shared {
    stop: AtomicBool,
    /// The socket of the stream being read, to shut it down from [`EtcdWatch::drop`].
    socket: Mutex<Option<TcpStream>>,
}

impl EtcdWatch {
    /// Opens the stream for `[key, range_end)` (base64) and starts the thread that reads it.
    pub(super) fn start(
        mut client: Client,
        key: String,
        range_end: String,
    ) -> Result<EtcdWatch, Error> {
        let request = json!({ "create_request": { "key": key, "range_end": range_end } });
        let (lines, on) = open(&mut client, &request)?;
        let events = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|errno| client.error(format!("creating an eventfd: {}", errno.desc())))?;
        let events = Arc::new(events);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            socket: Mutex::new(lines.socket_clone().ok()),
        });
        let thread = {
            let events = Arc::clone(&events);
            let shared = Arc::clone(&shared);
            let url = client.url.clone();
            std::thread::Builder::new()
                .name("etcd-watch".into())
                .spawn(move || read(client, request, (lines, on), &events, &shared))
                .map_err(|err| Error::Store {
                    url,
                    reason: format!("starting the watch thread: {}", io_reason(&err)),
                })?
        };
        Ok(EtcdWatch {
            events,
            shared,
            thread: thread.thread().clone(),
        })
    }
}

impl Watch for EtcdWatch {
    fn fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    fn drain(&mut self) -> bool {
        // Reading an eventfd returns its count and sets it to zero; EAGAIN when it is zero.
        self.events.read().is_ok_and(|count| count > 0)
    }
}

impl Drop for EtcdWatch {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let socket = self
            .shared
            .socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(socket) = socket.as_ref() {
            http::shut_down(socket);
        }
        drop(socket);
        self.thread.unpark();
    }
}

/// Opens the stream and waits for etcd's `created` answer; returns its lines and the endpoint
/// they come from.
fn open(client: &mut Client, request: &Value) -> Result<(Lines, usize), Error> {
    let (lines, on) = client.stream("/v3/watch", request, |first| {
        let result = &first["result"];
        if result["canceled"].as_bool() == Some(true) {
            return Err(result["cancel_reason"]
                .as_str()
                .unwrap_or("etcd cancelled the watch")
                .to_owned());
        }
        if result["created"].as_bool() == Some(true) {
            return Ok(());
        }
        Err(error_message(first))
    })?;
    lines
        .keep_alive()
        .map_err(|failure| client.error(format!("setting TCP keep-alive: {failure:?}")))?;
    Ok((lines, on))
}

/// The watch thread: reads the stream, signals events, reconnects when it breaks, ends when
/// the [`EtcdWatch`] is dropped.
fn read(
    mut client: Client,
    request: Value,
    (mut lines, mut on): (Lines, usize),
    events: &EventFd,
    shared: &Shared,
) {
    let stopped = || shared.stop.load(Ordering::SeqCst);
    loop {
        let why = loop {
            match lines.next_line(Some(Instant::now() + QUIET)) {
                Ok(Some(line)) => {
                    let (changed, ended) = answer(&line);
                    if changed {
                        signal(events);
                    }
                    if let Some(why) = ended {
                        break why;
                    }
                }
                Ok(None) => break "etcd ended the stream".to_owned(),
                Err(Fault::TimedOut) => {
                    if stopped() || client.answers(on, Instant::now() + ANSWER_WITHIN) {
                        continue;
                    }
                    // Reconnect elsewhere first: this member may stay frozen.
                    client.prefer((on + 1) % client.endpoints.len());
                    break format!("{} stopped answering", client.endpoints[on]);
                }
                Err(fault) => break words(fault),
            }
        };
        if stopped() {
            return;
        }
        log::warn!("{}: the watch was lost ({why}); reconnecting", client.url);
        let mut backoff = FIRST_BACKOFF;
        (lines, on) = loop {
            std::thread::park_timeout(backoff);
            if stopped() {
                return;
            }
            client.forget_token();
            match open(&mut client, &request) {
                Ok(opened) => break opened,
                Err(err) => log::debug!("watch: {err}"),
            }
            backoff = (backoff * 2).min(LAST_BACKOFF);
        };
        {
            let mut socket = shared.socket.lock().unwrap_or_else(PoisonError::into_inner);
            if stopped() {
                return;
            }
            *socket = lines.socket_clone().ok();
        }
        log::info!("{}: watching again", client.url);
        // Whatever changed while the stream was down was not seen.
        signal(events);
    }
}

/// What one line of the stream says: whether it carries events, and why the watch ended
/// (etcd cancelled it, or sent an error), if it did.
pub(crate) fn answer(line: &[u8]) -> (bool, Option<String>) {
    let answer = parse(line).unwrap_or(Value::Null);
    let result = &answer["result"];
    let changed = result["events"].as_array().is_some_and(|e| !e.is_empty());
    if result["canceled"].as_bool() == Some(true) {
        let why = result["cancel_reason"]
            .as_str()
            .unwrap_or("etcd cancelled the watch");
        return (changed, Some(why.to_owned()));
    }
    if answer.get("error").is_some() {
        return (changed, Some(error_message(&answer["error"])));
    }
    (changed, None)
}

/// Why the stream broke, for the warning.
fn words(fault: Fault) -> String {
    match fault {
        Fault::TimedOut => "the connection timed out".to_owned(),
        Fault::Io(text) | Fault::Protocol(text) => text,
        Fault::Stale | Fault::Closed => "the connection was closed".to_owned(),
        Fault::Tls(words) => format!("TLS: {words}"),
        Fault::Rustls(err) => format!("TLS: {err}"),
    }
}

fn signal(events: &EventFd) {
    // Only fails when the count would overflow, and then the fd is readable anyway.
    let _ = events.write(1);
}
