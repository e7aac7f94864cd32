//! The registry on an etcd v3 cluster (docs/reference.md §11.1):
//! `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`.
//!
//! Key `KEY` is the etcd key `PREFIX/KEY` (just `KEY` without a prefix). Every operation is one
//! `POST` to etcd's JSON gateway (`/v3/kv/range`, `/v3/lease/grant`, …) over plain HTTP/1.1
//! ([`http`]): keys and values travel in base64, 64-bit numbers as strings. TLS
//! (`etcd+https://`) is not supported.
//!
//! # Time
//! One store call, whatever it takes (endpoints tried in turn, logging in, one retry with a
//! new token), finishes within [`REACH_TIMEOUT`]. Each endpoint gets an equal share of what is
//! left when its turn comes, so one frozen member (it accepts connections and never answers)
//! cannot use up the time of the next. The endpoint that answered last is tried first next
//! time, on the connection it answered on. An unreachable cluster is
//! `etcd://127.0.0.1:2379: unreachable: connection refused`; an endpoint that answers "no
//! leader" or "unavailable" counts as unreachable too, any other etcd error is the answer.
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
pub(crate) mod watch;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use super::{Credentials, Key, LeaseId, Store, Watch, REACH_TIMEOUT};
use crate::error::Error;
use http::{Connection, Endpoint, Fault, Response};

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

/// Reads the URL; contacts nobody (docs/reference.md §11.1: the harness contacts the store only
/// when it has something to publish or to watch). A malformed URL is a usage error naming it.
pub fn open(url: &str, credentials: Option<Credentials>) -> Result<EtcdStore, Error> {
    let (endpoints, prefix) = parse_url(url)?;
    Ok(EtcdStore {
        client: Client {
            url: url.to_owned(),
            endpoints,
            login_needed: credentials.is_some(),
            credentials,
            limit: REACH_TIMEOUT,
            token: None,
            current: 0,
            connection: None,
        },
        prefix,
    })
}

/// The endpoints and `PREFIX/` (empty without one) of an `etcd://` URL.
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
    if url.starts_with("etcd+https://") || url.starts_with("etcds://") {
        return Err(usage("TLS to etcd is not supported; use etcd://HOST:PORT"));
    }
    let Some(rest) = url.strip_prefix("etcd://") else {
        return Err(usage("not an etcd://HOST:PORT[,HOST:PORT…][/PREFIX] URL"));
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
            Some(kv) => Ok(Some(self.client.decode(&kv["value"])?)),
        }
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let (key, range_end) = range(&self.etcd_key(prefix));
        // etcd answers in byte order of the keys unless told otherwise.
        let reply = self.client.call(
            "/v3/kv/range",
            &json!({ "key": key, "range_end": range_end }),
        )?;
        let mut entries = Vec::new();
        for kv in reply["kvs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let name = self.client.decode(&kv["key"])?;
            // Keys another tool wrote that no `put` could name are left out.
            let Some(name) = String::from_utf8(name)
                .ok()
                .and_then(|name| name.strip_prefix(&self.prefix).map(str::to_owned))
            else {
                continue;
            };
            entries.push((name, self.client.decode(&kv["value"])?));
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

/// How the cluster is reached: the endpoints, the login, and the connection in use.
struct Client {
    url: String,
    endpoints: Vec<Endpoint>,
    credentials: Option<Credentials>,
    /// The token etcd gave at login; None before it, and while etcd has auth disabled.
    token: Option<String>,
    /// With credentials, before the first login (later ones follow a refused token).
    login_needed: bool,
    /// How long one call may take in all.
    limit: Duration,
    /// The endpoint to try first: the one that answered last.
    current: usize,
    /// A kept connection, with the index of its endpoint.
    connection: Option<(usize, Connection)>,
}

/// What one endpoint said, or why it said nothing.
enum Attempt {
    Answer(Response),
    Unreachable(String),
}

impl Client {
    /// The same cluster, login and token, without the connection (for the watch thread).
    fn detached(&self) -> Client {
        Client {
            url: self.url.clone(),
            endpoints: self.endpoints.clone(),
            credentials: self.credentials.clone(),
            token: self.token.clone(),
            login_needed: self.login_needed,
            limit: self.limit,
            current: self.current,
            connection: None,
        }
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

    /// One request: logs in first if needed, and once more if etcd refuses the token.
    fn call(&mut self, path: &str, request: &Value) -> Result<Value, Error> {
        let body = request.to_string().into_bytes();
        self.logged_in(|store, deadline| {
            let answer = store.exchange(path, &body, true, deadline)?;
            let reply = parse(&answer.body).ok_or_else(|| {
                store.error(format!(
                    "etcd answered {} with something that is not JSON",
                    answer.status
                ))
            })?;
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
            return Err(self.error(refusal));
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
        Err(self.error(message))
    }

    /// Sends the request to the endpoints in turn until one answers. An endpoint that says it
    /// cannot serve (HTTP 503 or 504: no leader, timed out) counts as unreachable.
    fn exchange(
        &mut self,
        path: &str,
        body: &[u8],
        with_token: bool,
        deadline: Instant,
    ) -> Result<Response, Error> {
        self.each_endpoint(deadline, |store, index, attempt_deadline| {
            let token = if with_token {
                store.token.clone()
            } else {
                None
            };
            match store.attempt(index, path, body, token.as_deref(), attempt_deadline) {
                Attempt::Answer(answer) if !matches!(answer.status, 503 | 504) => Ok(answer),
                Attempt::Answer(answer) => {
                    Err(error_message(&parse(&answer.body).unwrap_or(Value::Null)))
                }
                Attempt::Unreachable(reason) => Err(reason),
            }
        })
    }

    /// Tries `attempt` on the endpoints in turn, from the one that answered last, each with
    /// its share of what is left until `deadline`, until one succeeds (it becomes the one to
    /// start from). Err(reason) is that endpoint's failure, where `{share}` stands for the time
    /// it was given; when all failed, the error names them.
    fn each_endpoint<T>(
        &mut self,
        deadline: Instant,
        mut attempt: impl FnMut(&mut Self, usize, Instant) -> Result<T, String>,
    ) -> Result<T, Error> {
        let count = self.endpoints.len();
        let mut failures = Vec::new();
        for turn in 0..count {
            let index = (self.current + turn) % count;
            let share = deadline.saturating_duration_since(Instant::now()) / (count - turn) as u32;
            match attempt(self, index, Instant::now() + share) {
                Ok(done) => {
                    self.current = index;
                    return Ok(done);
                }
                Err(failure) => {
                    failures.push((index, failure.replace("{share}", &http::seconds(share))))
                }
            }
        }
        Err(self.unreachable(&failures))
    }

    /// `unreachable: REASON`, or with several endpoints each one's; also forgets the token.
    /// etcd may have restarted or been wiped meanwhile, and a token from a wiped etcd does not
    /// get refused: etcd holds a request whose token names a raft index ahead of its own until
    /// it gets there (measured on 3.4: minutes). So the next call logs in again.
    fn unreachable(&mut self, failures: &[(usize, String)]) -> Error {
        if self.token.take().is_some() {
            self.login_needed = true;
        }
        let reason = match failures {
            [(_, reason)] => reason.clone(),
            _ => failures
                .iter()
                .map(|(index, reason)| format!("{}: {reason}", self.endpoints[*index]))
                .collect::<Vec<_>>()
                .join("; "),
        };
        self.error(format!("unreachable: {reason}"))
    }

    /// Forgets the token, so the next call logs in first (the watch thread does so before it
    /// reconnects: the etcd it finds may not be the one that issued the token).
    fn forget_token(&mut self) {
        self.token = None;
        self.login_needed = self.credentials.is_some();
    }

    /// One endpoint, on the kept connection when it is to this endpoint, else a new one.
    fn attempt(
        &mut self,
        index: usize,
        path: &str,
        body: &[u8],
        token: Option<&str>,
        deadline: Instant,
    ) -> Attempt {
        let kept = match self.connection.take() {
            Some((kept_for, connection)) if kept_for == index => Some(connection),
            // One to another endpoint is dropped: the next request goes where this one does.
            _ => None,
        };
        let fresh = kept.is_none();
        let mut connection = match kept {
            Some(connection) => connection,
            None => match http::connect(&self.endpoints[index], deadline) {
                Ok(connection) => connection,
                Err(failure) => return Attempt::Unreachable(reason(failure)),
            },
        };
        let mut result = connection.post(path, token, body, deadline);
        if matches!(result, Err(Fault::Stale)) && !fresh {
            // The server closed the idle connection; the request never reached it.
            match http::connect(&self.endpoints[index], deadline) {
                Ok(new) => connection = new,
                Err(failure) => return Attempt::Unreachable(reason(failure)),
            }
            result = connection.post(path, token, body, deadline);
        }
        match result {
            Ok((answer, reusable)) => {
                if reusable {
                    self.connection = Some((index, connection));
                }
                Attempt::Answer(answer)
            }
            Err(failure) => Attempt::Unreachable(reason(failure)),
        }
    }

    /// Opens a streaming request (a watch) on the endpoints in turn, like [`Client::exchange`],
    /// and returns its lines once `accept` took the first one. `accept` says whether the
    /// stream is established (Ok), or what etcd refused (Err with its message).
    fn stream(
        &mut self,
        path: &str,
        request: &Value,
        accept: impl Fn(&Value) -> Result<(), String>,
    ) -> Result<http::Lines, Error> {
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
    ) -> Result<Result<http::Lines, String>, Error> {
        self.each_endpoint(deadline, |store, index, attempt_deadline| {
            let opened = http::connect(&store.endpoints[index], attempt_deadline)
                .and_then(|c| c.post_stream(path, store.token.as_deref(), body, attempt_deadline));
            match opened {
                Ok(http::Streamed::Lines(mut lines)) => {
                    match lines.next_line(Some(attempt_deadline)) {
                        Ok(Some(line)) => {
                            let first = parse(&line).unwrap_or(Value::Null);
                            Ok(accept(&first).map(|()| lines))
                        }
                        Ok(None) => Err("the stream ended at once".to_owned()),
                        Err(failure) => Err(reason(failure)),
                    }
                }
                Ok(http::Streamed::Refused(answer)) => {
                    let message = error_message(&parse(&answer.body).unwrap_or(Value::Null));
                    if matches!(answer.status, 503 | 504) {
                        Err(message)
                    } else {
                        Ok(Err(message))
                    }
                }
                Err(failure) => Err(reason(failure)),
            }
        })
    }
}

/// A failure as the reason in `unreachable: …`; `{share}` stands for the time the endpoint
/// was given, filled in by the caller.
fn reason(failure: Fault) -> String {
    match failure {
        Fault::Io(text) | Fault::Protocol(text) => text,
        Fault::TimedOut => "no answer within {share} s".into(),
        Fault::Stale => "the connection was closed before an answer".into(),
    }
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
            ("etcd+https://h:1", "TLS to etcd is not supported"),
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
            Some(Credentials {
                user: "root".into(),
                password: "hunter2".into(),
            }),
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
