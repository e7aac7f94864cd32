//! The registry on an etcd v3 cluster (docs/reference.md §11.1, §12):
//! `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`, and `etcds://…` for the same over TLS.
//!
//! Key `KEY` is the etcd key `PREFIX/KEY` (just `KEY` without a prefix). Every operation is one
//! `POST` to etcd's JSON gateway (`/v3/kv/range`, `/v3/lease/grant`, …) over HTTP/1.1
//! ([`http`]), in plain text or over TLS ([`tls`]): keys and values travel in base64, 64-bit
//! numbers as strings.
//!
//! # Bounds
//! Whatever a server sends, the store holds a bounded amount of it: an answer of at most
//! [`http::ANSWER_LIMIT`] bytes, a list of at most [`LIST_LIMIT`] keys (etcd is asked for no
//! more), a watch line of at most [`http::STREAM_LINE_LIMIT`], and every value read is held to
//! the limit of a value ([`VALUE_LIMIT`], an error naming the key past it).
//!
//! # Time
//! One store call, whatever it takes (endpoints tried in turn, logging in, one retry with a
//! new token), finishes within [`REACH_TIMEOUT`]. Each endpoint gets an equal share of what is
//! left when its turn comes (a read at most [`ENDPOINT_SHARE`] but the last), so one frozen
//! member (it accepts connections and never answers) cannot use up the time of the next, and
//! costs a short-lived `kv get` that starts from it 1 s, not a third of the whole. The
//! endpoint that answered last is tried first next time, on the connection it answered on. An unreachable cluster is
//! `etcd://127.0.0.1:2379: unreachable: connection refused`; an endpoint that answers "no
//! leader" or "unavailable" counts as unreachable too, any other etcd error is the answer.
//!
//! # TLS
//! With `etcds://` every connection is TLS 1.2 or 1.3 with the server's certificate verified
//! ([`tls`]). The settings' files are read when the store is opened and again for each new
//! connection; connections are kept, so renewals and requests do not pay a handshake each.
//! `etcd://` to a server that speaks only TLS gets no HTTP answer (etcd closes the
//! connection): a TLS ClientHello then tells whether it speaks TLS, and the error says to use
//! `etcds://`. etcd's gateway refuses a client certificate with a common name once its
//! authentication is on; that refusal is put in words.
//!
//! # Authentication
//! With [`Credentials`], the store logs in (`/v3/auth/authenticate`) before its first request
//! and sends the token as etcd wants it: the bare `Authorization` header. When etcd refuses a
//! token (it expired: `--auth-token-ttl`, or etcd restarted), the store logs in again once and
//! repeats the request. A wrong user or password is `authentication failed`; the password and
//! the token never appear in a message, a log line or `Debug` output. When etcd says auth is
//! not enabled, requests go without a token (etcd refuses any token then). After a call that
//! found the cluster unreachable the token is dropped and the next call logs in first: a
//! restarted or wiped etcd may not refuse an old token but stall on it (a simple token names
//! the raft index it was issued at, and etcd 3.4 holds a request until its own index gets
//! there), so one call may time out after a wipe, never all of them.
//!
//! # Threads
//! Every call runs in the caller's thread. [`Store::watch`] is the only place that starts a
//! thread: it reads the watch stream and wakes the caller's poll loop through an eventfd
//! ([`watch`]). The caller must have its signal mask in place before calling `watch`, as the
//! thread inherits it. That thread allocates and takes a mutex; it never forks or execs.

pub(crate) mod http;
mod tls;
pub(crate) mod watch;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use super::{check_value_size, Access, Credentials, Key, LeaseId, Store, Watch, REACH_TIMEOUT};
use crate::error::Error;
use http::{Connection, Endpoint, Fault, Response};
pub use http::{ANSWER_LIMIT, STREAM_LINE_LIMIT};
pub use tls::Settings as TlsSettings;

/// The most keys one list returns (docs/reference.md §11.1); etcd is asked for no more, and
/// a list that would hold more is an error naming the prefix.
pub const LIST_LIMIT: usize = 10_000;

/// The most time an endpoint that is not the last to try gets of a read's [`REACH_TIMEOUT`]: a
/// live member answers in milliseconds (a TLS handshake far away: a few hundred), a frozen one
/// never. Only reads and watches move on this early: a write or a renewal given up may still
/// be applied later by the member that held it: with every call moving on after 1 s,
/// `make chaos`'s soak found keys of killed harnesses 8 s after the kill (`--ttl 6`), most
/// likely renewed by such a request, and none without. So those keep an equal share.
const ENDPOINT_SHARE: Duration = Duration::from_secs(1);

/// Whether a request to `path` leaves nothing behind when given up: see [`ENDPOINT_SHARE`].
fn is_read(path: &str) -> bool {
    path == "/v3/kv/range" || path == "/v3/watch"
}

/// An etcd cluster as a [`Store`].
pub struct EtcdStore {
    client: Client,
    /// `PREFIX/`, or empty without a prefix.
    prefix: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdStore {{ url: {:?} }}", self.client.url)
    }
}

/// Reads the URL and, for `etcds://`, the TLS settings' files; contacts nobody
/// (docs/reference.md §11.1: the harness contacts the store only when it has something to
/// publish or to watch). A malformed URL is a usage error naming it; a TLS file that cannot be
/// read, or holds no certificate (key), is the store's error naming the variable and the file.
pub fn open(url: &str, access: Access) -> Result<EtcdStore, Error> {
    let (endpoints, prefix) = parse_url(url)?;
    let tls = match (is_tls_url(url), access.tls) {
        (false, _) => None,
        (true, Some(tls)) => Some(tls),
        (true, None) => Some(Tls::read(url, TlsSettings::from_env(url, |_| None)?)?),
    };
    let credentials = access.credentials;
    Ok(EtcdStore {
        client: Client {
            url: url.to_owned(),
            endpoints,
            login_needed: credentials.is_some(),
            credentials,
            tls,
            limit: REACH_TIMEOUT,
            token: None,
            current: Arc::new(AtomicUsize::new(0)),
            connection: None,
        },
        prefix,
    })
}

/// Checks an etcd URL's syntax, reading no file and contacting nobody.
pub fn check_url(url: &str) -> Result<(), Error> {
    parse_url(url).map(drop)
}

/// Whether the URL is `etcds://` (TLS).
pub fn is_tls_url(url: &str) -> bool {
    url.starts_with("etcds://")
}

/// Whether a password for `url` would cross the network in clear text: `etcd://` with
/// credentials to an endpoint that is not a loopback address (`localhost`, 127.0.0.0/8,
/// `::1`). A name other than `localhost` counts as remote: it is not resolved for this.
pub fn sends_password_in_clear(url: &str, access: &Access) -> bool {
    if access.credentials.is_none() || is_tls_url(url) {
        return false;
    }
    let Ok((endpoints, _)) = parse_url(url) else {
        return false;
    };
    endpoints
        .iter()
        .any(|endpoint| !is_loopback(&endpoint.host))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// The endpoints and `PREFIX/` (empty without one) of an `etcd://` or `etcds://` URL.
pub(crate) fn parse_url(url: &str) -> Result<(Vec<Endpoint>, String), Error> {
    let usage = |reason: &str| Error::Usage(format!("{url}: {reason}"));
    if url.contains('@') {
        // Never echo it: what precedes the @ is likely a password.
        return Err(Error::Usage(
            "an etcd:// URL cannot hold a user or password: set ENVHARNESS_KV_USER and \
             ENVHARNESS_KV_PASSWORD (or ENVHARNESS_KV_PASSWORD_FILE)"
                .into(),
        ));
    }
    if url.starts_with("etcd+https://") {
        return Err(usage("TLS to etcd is written etcds://HOST:PORT"));
    }
    let Some(rest) = url
        .strip_prefix("etcd://")
        .or_else(|| url.strip_prefix("etcds://"))
    else {
        return Err(usage(
            "not an etcd://HOST:PORT[,HOST:PORT…][/PREFIX] (or etcds://…) URL",
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash + 1..]),
        None => (rest, ""),
    };
    let mut endpoints = Vec::new();
    for member in authority.split(',') {
        endpoints.push(parse_endpoint(member).map_err(|reason| usage(&reason))?);
    }
    let path = path.strip_suffix('/').unwrap_or(path);
    let prefix = if path.is_empty() {
        String::new()
    } else {
        Key::parse(path).map_err(|err| {
            usage(&format!(
                "the prefix {path:?} is not a key path: {}",
                match err {
                    Error::Key { reason, .. } => reason,
                    other => other.to_string(),
                }
            ))
        })?;
        format!("{path}/")
    };
    Ok((endpoints, prefix))
}

fn parse_endpoint(member: &str) -> Result<Endpoint, String> {
    let (host, port) = if let Some(bracketed) = member.strip_prefix('[') {
        // An IPv6 address: [::1]:2379.
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{member:?}: an IPv6 address needs its closing ']'"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("{member:?}: HOST:PORT expected"))?;
        (host, port)
    } else {
        member
            .rsplit_once(':')
            .ok_or_else(|| format!("{member:?}: HOST:PORT expected"))?
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !host_ok {
        return Err(format!("{member:?}: not a host name or address"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("{member:?}: the port is not a number from 1 to 65535"))?;
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

impl EtcdStore {
    /// Bounds every later call by `limit` instead of [`REACH_TIMEOUT`] (at least 0.1 s): for
    /// a caller that must not wait long, such as a withdrawal before a forwarded SIGTERM
    /// (docs/reference.md §11.3: at most 2 s). Establishing a watch (and each of its reconnects) is
    /// bounded the same way.
    pub fn set_timeout(&mut self, limit: Duration) {
        self.client.limit = limit.max(Duration::from_millis(100));
    }

    fn etcd_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl Store for EtcdStore {
    fn url(&self) -> &str {
        &self.client.url
    }

    fn limit_calls(&mut self, limit: Duration) {
        self.set_timeout(limit.min(REACH_TIMEOUT));
    }

    fn get(&mut self, key: &Key) -> Result<Option<Vec<u8>>, Error> {
        let reply = self.client.call(
            "/v3/kv/range",
            &json!({ "key": encode(&self.etcd_key(key.as_str())) }),
        )?;
        match reply["kvs"].as_array().and_then(|kvs| kvs.first()) {
            None => Ok(None),
            Some(kv) => Ok(Some(self.client.value(key.as_str(), &kv["value"])?)),
        }
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let (key, range_end) = range(&self.etcd_key(prefix));
        // etcd answers in byte order of the keys unless told otherwise; with a limit it says
        // whether there were more (`more`).
        let reply = self.client.call(
            "/v3/kv/range",
            &json!({ "key": key, "range_end": range_end, "limit": LIST_LIMIT.to_string() }),
        )?;
        let kvs = reply["kvs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if kvs.len() > LIST_LIMIT || reply["more"].as_bool() == Some(true) {
            let shown = if prefix.is_empty() {
                "(any key)"
            } else {
                prefix
            };
            return Err(self.client.error(format!(
                "{shown}: more than {LIST_LIMIT} keys under it, the limit of a list"
            )));
        }
        let mut entries = Vec::new();
        for kv in kvs {
            let name = self.client.decode(&kv["key"])?;
            // Keys another tool wrote that no `put` could name are left out.
            let Some(name) = String::from_utf8(name)
                .ok()
                .and_then(|name| name.strip_prefix(&self.prefix).map(str::to_owned))
            else {
                continue;
            };
            let value = self.client.value(&name, &kv["value"])?;
            entries.push((name, value));
        }
        Ok(entries)
    }

    fn put(&mut self, key: &Key, value: &[u8], lease: Option<LeaseId>) -> Result<(), Error> {
        let mut request = json!({
            "key": encode(&self.etcd_key(key.as_str())),
            "value": BASE64.encode(value),
        });
        if let Some(LeaseId(id)) = lease {
            request["lease"] = Value::String(id.to_string());
        }
        self.client.call("/v3/kv/put", &request).map(drop)
    }

    fn delete(&mut self, key: &Key) -> Result<(), Error> {
        self.client
            .call(
                "/v3/kv/deleterange",
                &json!({ "key": encode(&self.etcd_key(key.as_str())) }),
            )
            .map(drop)
    }

    fn grant(&mut self, ttl: Duration) -> Result<LeaseId, Error> {
        let seconds = ttl.as_secs().max(2);
        let reply = self
            .client
            .call("/v3/lease/grant", &json!({ "TTL": seconds.to_string() }))?;
        number(&reply["ID"])
            .filter(|id| *id != 0)
            .map(LeaseId)
            .ok_or_else(|| self.client.error("etcd granted no lease"))
    }

    fn keep_alive(&mut self, LeaseId(id): LeaseId) -> Result<bool, Error> {
        // A streaming call answered with one `{"result": …}` line; a lease that is gone comes
        // back without `TTL` (etcd omits zero fields).
        let reply = self
            .client
            .call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))?;
        Ok(number(&reply["result"]["TTL"]).is_some_and(|ttl| ttl > 0))
    }

    fn revoke(&mut self, LeaseId(id): LeaseId) -> Result<(), Error> {
        match self
            .client
            .call("/v3/lease/revoke", &json!({ "ID": id.to_string() }))
        {
            Err(Error::Store { reason, .. }) if reason.contains("requested lease not found") => {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    fn watch(&mut self, prefix: &str) -> Result<Box<dyn Watch>, Error> {
        let (key, range_end) = range(&self.etcd_key(prefix));
        let watch = watch::EtcdWatch::start(self.client.detached(), key, range_end)?;
        Ok(Box::new(watch))
    }
}

/// The range request for every key that starts with `prefix`: from the prefix to the prefix
/// with its last byte plus one (etcd's `WithPrefix`); `\0` to `\0` is all keys.
pub(crate) fn range(prefix: &str) -> (String, String) {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (encode(prefix), BASE64.encode(end));
        }
    }
    (BASE64.encode([0]), BASE64.encode([0]))
}

fn encode(text: &str) -> String {
    BASE64.encode(text.as_bytes())
}

/// An int64 as etcd's gateway writes it: a string (or, leniently, a number).
pub(crate) fn number(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// How the cluster is reached: the endpoints, the login, TLS, and the connection in use.
struct Client {
    url: String,
    endpoints: Vec<Endpoint>,
    credentials: Option<Credentials>,
    /// With `etcds://`: what each new connection's TLS is made from.
    tls: Option<Tls>,
    /// The token etcd gave at login; None before it, and while etcd has auth disabled.
    token: Option<String>,
    /// With credentials, before the first login (later ones follow a refused token).
    login_needed: bool,
    /// How long one call may take in all.
    limit: Duration,
    /// The endpoint to try first: the one that answered last. Shared with the store's watch
    /// threads: a watch that finds its member frozen moves the store's next call on too.
    current: Arc<AtomicUsize>,
    /// A kept connection, with the index of its endpoint.
    connection: Option<(usize, Connection)>,
}

/// Why one endpoint did not serve a call.
enum Miss {
    /// It could not be reached, or did not answer in time: `unreachable: REASON`.
    Unreachable(String),
    /// It answered in a way another try would not change (TLS refused, a server that is not
    /// etcd's HTTP, an answer over a limit): `REASON`.
    Refused(String),
    /// No endpoint can be tried (a TLS file can no longer be read): the call fails at once.
    Fatal(Error),
}

impl From<Fault> for Miss {
    fn from(fault: Fault) -> Miss {
        match fault {
            Fault::Io(text) => Miss::Unreachable(text),
            Fault::TimedOut => Miss::Unreachable("no answer within {share} s".into()),
            Fault::Stale | Fault::Closed => {
                Miss::Unreachable("the connection was closed before an answer".into())
            }
            Fault::Protocol(text) => Miss::Refused(text),
            Fault::Tls(words) => Miss::Refused(format!("TLS: {words}")),
            Fault::Rustls(err) => Miss::Refused(format!("TLS: {err}")),
        }
    }
}

/// What `etcd://` says to a server that speaks only TLS.
const SPEAKS_TLS: &str = "the server speaks TLS: use etcds://";

/// The TLS settings of an `etcds://` store, with the configuration first read from their
/// files, kept for the first connection that any copy of them makes: the harness reads the
/// files once to start, whether its templates or its publishing connect first.
#[derive(Clone)]
pub struct Tls {
    settings: TlsSettings,
    first: Arc<Mutex<Option<tls::Connector>>>,
}

impl Tls {
    /// Reads the files now: one that cannot be read is an error before anything runs.
    pub fn read(url: &str, settings: TlsSettings) -> Result<Tls, Error> {
        let first = settings.connector().map_err(|reason| Error::Store {
            url: url.to_owned(),
            reason,
        })?;
        Ok(Tls {
            settings,
            first: Arc::new(Mutex::new(Some(first))),
        })
    }

    /// The configuration for a new connection: the files as they are now (renewed
    /// certificates are picked up), except for the first connection, which uses what `read`
    /// read.
    fn connector(&self) -> Result<tls::Connector, String> {
        let first = self
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match first {
            Some(first) => Ok(first),
            None => self.settings.connector(),
        }
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.settings.fmt(f)
    }
}

impl Client {
    /// The same cluster, login, token and TLS settings, sharing the endpoint to try first,
    /// without the connection (for the watch thread).
    fn detached(&self) -> Client {
        Client {
            url: self.url.clone(),
            endpoints: self.endpoints.clone(),
            credentials: self.credentials.clone(),
            tls: self.tls.clone(),
            token: self.token.clone(),
            login_needed: self.login_needed,
            limit: self.limit,
            current: Arc::clone(&self.current),
            connection: None,
        }
    }

    /// The endpoint to try first.
    fn first(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.endpoints.len()
    }

    /// Makes `index` the endpoint to try first, for this client and the others of its store.
    fn prefer(&self, index: usize) {
        self.current.store(index, Ordering::Relaxed);
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Store {
            url: self.url.clone(),
            reason: reason.into(),
        }
    }

    fn decode(&self, value: &Value) -> Result<Vec<u8>, Error> {
        // etcd omits an empty value.
        let text = value.as_str().unwrap_or_default();
        BASE64
            .decode(text)
            .map_err(|_| self.error("etcd sent a value that is not base64"))
    }

    /// The value of `key` as etcd sent it, held to the limit of a value (docs/reference.md
    /// §11.1): another client, or something that is not etcd, may have written a larger one.
    fn value(&self, key: &str, value: &Value) -> Result<Vec<u8>, Error> {
        let value = self.decode(value)?;
        check_value_size(key, &value)?;
        Ok(value)
    }

    /// etcd's refusal of a call as the store's error; the one refusal whose words do not say
    /// what to do is explained.
    fn refusal(&self, message: String) -> Error {
        if message.contains("CommonName of client sending a request against gateway") {
            return self.error(
                "etcd refuses a client certificate that has a common name (CN) once its \
                 authentication is on: use a client certificate without a common name, with \
                 ENVHARNESS_KV_USER and ENVHARNESS_KV_PASSWORD",
            );
        }
        self.error(message)
    }

    /// One request: logs in first if needed, and once more if etcd refuses the token.
    fn call(&mut self, path: &str, request: &Value) -> Result<Value, Error> {
        let body = request.to_string().into_bytes();
        self.logged_in(|store, deadline| {
            let answer = store.exchange(path, &body, true, deadline)?;
            let Some(reply) = parse(&answer.body) else {
                if answer.status != 200 {
                    // Some refusals come as plain text (the gateway's common-name one).
                    return Ok(Err(refusal_text(&answer)));
                }
                return Err(store.error("etcd answered 200 with something that is not JSON"));
            };
            if answer.status == 200 {
                // A streaming call (a keep-alive) reports its error inside the answer.
                if let Some(error) = reply.get("error") {
                    return Err(store.error(error_message(error)));
                }
                return Ok(Ok(reply));
            }
            Ok(Err(error_message(&reply)))
        })
    }

    /// Runs `attempt` (Ok(Err(message)): etcd refused it) within one deadline, logged in
    /// first if needed; an authentication refusal logs in once and tries again.
    fn logged_in<T>(
        &mut self,
        mut attempt: impl FnMut(&mut Self, Instant) -> Result<Result<T, String>, Error>,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + self.limit;
        let mut logged_in = false;
        if self.login_needed {
            self.log_in(deadline)?;
            logged_in = true;
        }
        loop {
            let refusal = match attempt(self, deadline)? {
                Ok(done) => return Ok(done),
                Err(refusal) => refusal,
            };
            if is_auth_refusal(&refusal) {
                if self.credentials.is_none() {
                    return Err(self.error(
                        "etcd requires authentication: set ENVHARNESS_KV_USER and \
                         ENVHARNESS_KV_PASSWORD (or ENVHARNESS_KV_PASSWORD_FILE)",
                    ));
                }
                if !logged_in {
                    self.log_in(deadline)?;
                    logged_in = true;
                    continue;
                }
            }
            return Err(self.refusal(refusal));
        }
    }

    /// Logs in with the credentials and keeps the token; without a token when etcd says auth
    /// is not enabled. Never puts the password or the token into a message.
    fn log_in(&mut self, deadline: Instant) -> Result<(), Error> {
        let Some(credentials) = &self.credentials else {
            return Ok(());
        };
        let body = json!({ "name": credentials.user, "password": credentials.password })
            .to_string()
            .into_bytes();
        self.token = None;
        // No token on this request: etcd refuses a login that carries a stale one.
        let answer = self.exchange("/v3/auth/authenticate", &body, false, deadline)?;
        let reply = parse(&answer.body).unwrap_or(Value::Null);
        if answer.status != 200 && reply.is_null() {
            return Err(self.refusal(refusal_text(&answer)));
        }
        if answer.status == 200 {
            match reply["token"].as_str() {
                Some(token) if !token.is_empty() => {
                    self.token = Some(token.to_owned());
                    self.login_needed = false;
                    log::debug!("{}: logged in", self.url);
                    return Ok(());
                }
                _ => return Err(self.error("etcd gave no token at login")),
            }
        }
        let message = error_message(&reply);
        if message.contains("authentication is not enabled") {
            log::debug!("{}: etcd has authentication disabled", self.url);
            self.login_needed = false;
            return Ok(());
        }
        if message.contains("authentication failed") {
            return Err(self.error("authentication failed: wrong user or password"));
        }
        Err(self.refusal(message))
    }

    /// Sends the request to the endpoints in turn until one answers. An endpoint that says it
    /// cannot serve counts as unreachable ([`Client::unserved`]).
    fn exchange(
        &mut self,
        path: &str,
        body: &[u8],
        with_token: bool,
        deadline: Instant,
    ) -> Result<Response, Error> {
        self.each_endpoint(deadline, is_read(path), |store, index, attempt_deadline| {
            let token = if with_token {
                store.token.clone()
            } else {
                None
            };
            let answer = store.attempt(index, path, body, token.as_deref(), attempt_deadline)?;
            match store.unserved(&answer) {
                Some(miss) => Err(miss),
                None => Ok(answer),
            }
        })
    }

    /// Tries `attempt` on the endpoints in turn, from the one that answered last, each with
    /// its share of what is left until `deadline` (for a `read`, at most [`ENDPOINT_SHARE`]
    /// but the last), until one succeeds (it becomes the one to start from). A miss's
    /// `{share}` stands for the time the endpoint was given; when all missed, the error names
    /// them (a fatal miss ends the turns at once).
    fn each_endpoint<T>(
        &mut self,
        deadline: Instant,
        read: bool,
        mut attempt: impl FnMut(&mut Self, usize, Instant) -> Result<T, Miss>,
    ) -> Result<T, Error> {
        let count = self.endpoints.len();
        let mut failures = Vec::new();
        for turn in 0..count {
            let index = (self.first() + turn) % count;
            let left = deadline.saturating_duration_since(Instant::now());
            let mut share = left / (count - turn) as u32;
            if read && turn + 1 < count {
                share = share.min(ENDPOINT_SHARE);
            }
            match attempt(self, index, Instant::now() + share) {
                Ok(done) => {
                    self.prefer(index);
                    return Ok(done);
                }
                Err(Miss::Fatal(err)) => return Err(err),
                Err(Miss::Unreachable(reason)) => failures.push((
                    index,
                    Miss::Unreachable(reason.replace("{share}", &http::seconds(share))),
                )),
                Err(refused) => failures.push((index, refused)),
            }
        }
        Err(self.missed(&failures))
    }

    /// The error of a call that no endpoint served: `unreachable: REASON` (`REASON` for a
    /// refusal), or with several endpoints each one's; also forgets the token. etcd may have
    /// restarted or been wiped meanwhile, and a token from a wiped etcd does not get refused:
    /// etcd holds a request whose token names a raft index ahead of its own until it gets
    /// there (measured on 3.4: minutes). So the next call logs in again.
    fn missed(&mut self, failures: &[(usize, Miss)]) -> Error {
        if self.token.take().is_some() {
            self.login_needed = true;
        }
        let unreachable = |miss: &Miss| matches!(miss, Miss::Unreachable(_));
        let words = |miss: &Miss| match miss {
            Miss::Unreachable(reason) => reason.clone(),
            Miss::Refused(reason) => reason.clone(),
            Miss::Fatal(err) => err.to_string(),
        };
        let named = |with_word: bool| {
            failures
                .iter()
                .map(|(index, miss)| {
                    let prefix = if with_word && unreachable(miss) {
                        "unreachable: "
                    } else {
                        ""
                    };
                    format!("{}: {prefix}{}", self.endpoints[*index], words(miss))
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let reason = match failures {
            [(_, miss)] if unreachable(miss) => format!("unreachable: {}", words(miss)),
            [(_, miss)] => words(miss),
            _ if failures.iter().all(|(_, miss)| unreachable(miss)) => {
                format!("unreachable: {}", named(false))
            }
            // One refusal from every member (the same certificate everywhere): said once.
            [(_, first), rest @ ..] if rest.iter().all(|(_, miss)| words(miss) == words(first)) => {
                words(first)
            }
            _ => named(true),
        };
        self.error(reason)
    }

    /// Forgets the token, so the next call logs in first (the watch thread does so before it
    /// reconnects: the etcd it finds may not be the one that issued the token).
    fn forget_token(&mut self) {
        self.token = None;
        self.login_needed = self.credentials.is_some();
    }

    /// A new connection to endpoint `index`, with TLS for `etcds://` (the files read again).
    fn connect(&mut self, index: usize, deadline: Instant) -> Result<Connection, Miss> {
        let connector = match &self.tls {
            None => None,
            Some(tls) => Some(
                tls.connector()
                    .map_err(|reason| Miss::Fatal(self.error(reason)))?,
            ),
        };
        http::connect(&self.endpoints[index], deadline, connector.as_ref())
            .map_err(|fault| self.plain_miss(index, fault, deadline))
    }

    /// A fault as a miss. `etcd://` to a server that gave no HTTP answer (it closed the
    /// connection, or sent something else) may have reached a TLS port: a ClientHello tells,
    /// and then the miss says to use `etcds://`. The other way round, a server that closed
    /// the connection on our ClientHello may be plain HTTP: a plain request tells.
    fn plain_miss(&self, index: usize, fault: Fault, deadline: Instant) -> Miss {
        let endpoint = &self.endpoints[index];
        let plain = self.tls.is_none();
        if plain && fault.gave_no_http_answer() && http::speaks_tls(endpoint, deadline) {
            return Miss::Refused(SPEAKS_TLS.into());
        }
        let closed_on_hello =
            matches!(&fault, Fault::Tls(words) if words == http::HANDSHAKE_CLOSED);
        if !plain && closed_on_hello && http::speaks_plain_http(endpoint, deadline) {
            return Miss::Refused(format!("TLS: {}", tls::NOT_TLS));
        }
        Miss::from(fault)
    }

    /// One endpoint, on the kept connection when it is to this endpoint, else a new one.
    fn attempt(
        &mut self,
        index: usize,
        path: &str,
        body: &[u8],
        token: Option<&str>,
        deadline: Instant,
    ) -> Result<Response, Miss> {
        let kept = match self.connection.take() {
            Some((kept_for, connection)) if kept_for == index => Some(connection),
            // One to another endpoint is dropped: the next request goes where this one does.
            _ => None,
        };
        let fresh = kept.is_none();
        let mut connection = match kept {
            Some(connection) => connection,
            None => self.connect(index, deadline)?,
        };
        let mut result = connection.post(path, token, body, deadline);
        if matches!(result, Err(Fault::Stale)) && !fresh {
            // The server closed the idle connection; the request never reached it.
            connection = self.connect(index, deadline)?;
            result = connection.post(path, token, body, deadline);
        }
        let (answer, reusable) = result.map_err(|fault| self.plain_miss(index, fault, deadline))?;
        if reusable {
            self.connection = Some((index, connection));
        }
        Ok(answer)
    }

    /// Opens a streaming request (a watch) on the endpoints in turn, like [`Client::exchange`],
    /// and returns its lines, with the endpoint they come from, once `accept` took the first
    /// one. `accept` says whether the stream is established (Ok), or what etcd refused (Err
    /// with its message).
    fn stream(
        &mut self,
        path: &str,
        request: &Value,
        accept: impl Fn(&Value) -> Result<(), String>,
    ) -> Result<(http::Lines, usize), Error> {
        let body = request.to_string().into_bytes();
        self.logged_in(|store, deadline| store.open_stream(path, &body, deadline, &accept))
    }

    /// Ok(Ok(lines)) when established, Ok(Err(message)) when etcd refused it, Err when no
    /// endpoint answered.
    fn open_stream(
        &mut self,
        path: &str,
        body: &[u8],
        deadline: Instant,
        accept: &impl Fn(&Value) -> Result<(), String>,
    ) -> Result<Result<(http::Lines, usize), String>, Error> {
        self.each_endpoint(deadline, is_read(path), |store, index, attempt_deadline| {
            let connection = store.connect(index, attempt_deadline)?;
            let opened = connection
                .post_stream(path, store.token.as_deref(), body, attempt_deadline)
                .map_err(|fault| store.plain_miss(index, fault, attempt_deadline))?;
            match opened {
                http::Streamed::Lines(mut lines) => match lines.next_line(Some(attempt_deadline)) {
                    Ok(Some(line)) => {
                        let first = parse(&line).unwrap_or(Value::Null);
                        Ok(accept(&first).map(|()| (lines, index)))
                    }
                    Ok(None) => Err(Miss::Unreachable("the stream ended at once".to_owned())),
                    Err(failure) => Err(Miss::from(failure)),
                },
                http::Streamed::Refused(answer) => match store.unserved(&answer) {
                    Some(miss) => Err(miss),
                    None => Ok(Err(refusal_message(&answer))),
                },
            }
        })
    }

    /// What an answer other than a success says of its endpoint when the next one should be
    /// tried instead: it speaks TLS (Go's answer to plain HTTP), or it cannot serve now (HTTP
    /// 503 or 504: no leader, timed out).
    fn unserved(&self, answer: &Response) -> Option<Miss> {
        if self.tls.is_none() && answer.status == 400 && speaks_https(&answer.body) {
            return Some(Miss::Refused(SPEAKS_TLS.into()));
        }
        matches!(answer.status, 503 | 504).then(|| Miss::Unreachable(refusal_message(answer)))
    }

    /// Whether endpoint `index` answers a request (any answer) before `deadline`: the watch
    /// asks when its stream has been silent, to tell a quiet cluster from a frozen member.
    /// No token goes with it (a stale one can stall etcd), and the connection is kept for the
    /// next time.
    fn answers(&mut self, index: usize, deadline: Instant) -> bool {
        self.attempt(index, "/v3/maintenance/status", b"{}", None, deadline)
            .is_ok()
    }
}

/// Go's HTTPS server's answer to plain HTTP (`Client sent an HTTP request to an HTTPS
/// server.`), should an etcd send it rather than close the connection.
fn speaks_https(body: &[u8]) -> bool {
    body.windows(29)
        .any(|window| window == b"HTTP request to an HTTPS serv")
}

/// A refusal in words: etcd's message, or for one that is not JSON, [`refusal_text`].
fn refusal_message(answer: &Response) -> String {
    match parse(&answer.body) {
        Some(reply) => error_message(&reply),
        None => refusal_text(answer),
    }
}

/// A refusal that is not JSON, in a few words: its first line of text, or its status.
fn refusal_text(answer: &Response) -> String {
    let text = String::from_utf8_lossy(&answer.body);
    let line = text.lines().next().unwrap_or_default().trim();
    if line.is_empty() || line.len() > 200 || line.chars().any(char::is_control) {
        return format!(
            "etcd answered {} with something that is not JSON",
            answer.status
        );
    }
    format!("etcd answered {}: {line}", answer.status)
}

pub(crate) fn parse(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

/// etcd's words for a failed request: `{"error": "...", "message": "...", "code": N}` (a
/// unary call), or the same inside a stream's `{"error": {...}}`.
pub(crate) fn error_message(reply: &Value) -> String {
    for field in [
        &reply["message"],
        &reply["error"],
        &reply["error"]["message"],
    ] {
        if let Some(text) = field.as_str().filter(|text| !text.is_empty()) {
            return text.to_owned();
        }
    }
    "etcd refused the request without saying why".into()
}

/// Whether etcd refused the request for want of a valid token: none given while auth is on
/// ("user name is empty"), or one that expired or belongs to another etcd.
fn is_auth_refusal(message: &str) -> bool {
    [
        "invalid auth token",
        "user name is empty",
        "revision of auth store is old",
    ]
    .iter()
    .any(|known| message.contains(known))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_endpoints_and_a_prefix() {
        let (endpoints, prefix) = parse_url("etcd://127.0.0.1:2379").unwrap();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].to_string(), "127.0.0.1:2379");
        assert_eq!(prefix, "");
        let (endpoints, prefix) = parse_url("etcd://a:1,b.example:2,[::1]:3/app/prod/").unwrap();
        let names: Vec<_> = endpoints.iter().map(|e| e.to_string()).collect();
        assert_eq!(names, ["a:1", "b.example:2", "[::1]:3"]);
        assert_eq!(prefix, "app/prod/");
        assert_eq!(parse_url("etcd://h:1/").unwrap().1, "");
    }

    #[test]
    fn malformed_urls_are_usage_errors_naming_them() {
        for (url, reason) in [
            ("etcd://", "HOST:PORT expected"),
            ("etcd://host", "HOST:PORT expected"),
            ("etcd://host:0", "the port is not a number"),
            ("etcd://host:http", "the port is not a number"),
            ("etcd://a:1,,b:2", "HOST:PORT expected"),
            ("etcd://a b:1", "not a host name"),
            ("etcd://h:1/a//b", "is not a key path"),
            ("etcd://h:1/a b", "is not a key path"),
            ("http://h:1", "not an etcd://"),
            ("etcd+https://h:1", "TLS to etcd is written etcds://"),
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{url}: {err:?}");
            assert_eq!(err.exit_status(), 125);
            let text = err.to_string();
            assert!(text.starts_with(&format!("{url}: ")), "{text}");
            assert!(text.contains(reason), "{url}: {text}");
        }
    }

    #[test]
    fn a_url_with_a_password_is_refused_without_echoing_it() {
        let err = parse_url("etcd://root:hunter2@h:1").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("ENVHARNESS_KV_USER"), "{text}");
    }

    #[test]
    fn a_prefix_range_ends_after_its_last_byte() {
        let decode = |text: String| BASE64.decode(text).unwrap();
        let (key, end) = range("app/");
        assert_eq!(decode(key), b"app/");
        assert_eq!(decode(end), b"app0");
        let (key, end) = range("");
        assert_eq!((decode(key), decode(end)), (vec![0], vec![0]));
    }

    #[test]
    fn open_contacts_nobody_and_debug_shows_no_secret() {
        let store = open(
            "etcd://127.0.0.1:1/p",
            Access {
                credentials: Some(Credentials {
                    user: "root".into(),
                    password: "hunter2".into(),
                }),
                tls: None,
            },
        )
        .unwrap();
        let text = format!("{store:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(store.url(), "etcd://127.0.0.1:1/p");
    }

    #[test]
    fn seconds_are_short() {
        assert_eq!(http::seconds(Duration::from_secs(5)), "5");
        assert_eq!(http::seconds(Duration::from_millis(2499)), "2.5");
    }
}
