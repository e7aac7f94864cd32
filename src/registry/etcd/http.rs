//! Just enough HTTP/1.1 to talk to etcd's JSON gateway: `POST` a body, read the answer whole
//! (`Content-Length` or chunked) or as a stream of lines (a watch), in plain text or over TLS
//! ([`tls`](super::tls), `etcds://`).
//!
//! Why not a crate: ureq 3 without TLS added 262 KB to a static test program that already had
//! std's networking, serde_json and base64 (measured), more than the whole etcd store adds to
//! envharness (172 KB, 98 KB of it those shared parts); and it hides the socket, so a watch
//! stream blocked in a read could not be woken to stop it. Here every connection is a plain
//! [`TcpStream`] that the owner can shut down from another thread; with TLS, rustls sits
//! between the socket (with its deadline) and the buffered reader, and a clone of the socket
//! is still at hand for that.
//!
//! Invariant: nothing here waits past the deadline it is given. Connecting gets what is left
//! of it, and so does every read and write (the TLS handshake's included), because the
//! socket's timeout is set again before each one (a server that trickles bytes cannot stretch
//! the deadline). A stream's reads wait as long as their caller says; a read that times out
//! loses nothing, so the caller may look elsewhere and read on (the watch checks a silent
//! member that way).
//!
//! Invariant: nothing here holds more than a limit in memory, whatever the server sends. An
//! answer read whole is at most [`ANSWER_LIMIT`] bytes (a larger `Content-Length` is refused
//! before reading any of it), a line of a stream at most [`STREAM_LINE_LIMIT`], a status,
//! header or chunk-size line at most 16 KiB; past a limit the exchange fails as a protocol
//! error.
//!
//! It speaks to one kind of server only (Go's net/http, through grpc-gateway), so it reads
//! what that server sends and refuses the rest as a protocol error.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};
use rustls::{ClientConnection, StreamOwned};

use super::tls::{self, Verdict};
use crate::os::{io_reason, read_at_most};

/// The largest answer read whole (docs/reference.md §11.1): room for a list of about a
/// hundred values of the largest size, which travel in base64 (a third more).
pub const ANSWER_LIMIT: u64 = 16 * 1024 * 1024;
/// The longest line of a streamed answer (a watch's answers, which carry the changed values).
pub const STREAM_LINE_LIMIT: u64 = 4 * 1024 * 1024;
/// The longest status, header or chunk-size line, and the most header lines, we accept.
const LINE_LIMIT: u64 = 16 * 1024;
const HEADER_LINES: usize = 100;

/// One member of the cluster, as the URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why an exchange failed, before etcd said anything about the request itself.
#[derive(Debug)]
pub enum Fault {
    /// Connecting failed or the connection broke; the text is for messages.
    Io(String),
    /// No answer before the deadline.
    TimedOut,
    /// A connection kept from an earlier request was closed before it answered: try a new one.
    Stale,
    /// A new connection was closed before any answer: a server that does not speak plain
    /// HTTP (etcd's TLS port) does that.
    Closed,
    /// An answer that is not HTTP as etcd's gateway speaks it, or one over a size limit.
    Protocol(String),
    /// TLS failed; the words follow `TLS: ` in messages.
    Tls(String),
    /// What rustls said, before [`Connection`] puts it in words (it knows the server name
    /// and whether a client certificate was asked for).
    Rustls(rustls::Error),
}

/// What etcd's gateway answers first, unless it is not HTTP.
const NOT_HTTP: &str = "an answer that is not HTTP/1.1";

impl Fault {
    /// Whether the server closed a new connection without an answer, or answered with
    /// something that is not HTTP: what a TLS server does with a plain request.
    pub fn gave_no_http_answer(&self) -> bool {
        match self {
            Fault::Closed => true,
            Fault::Protocol(text) => text == NOT_HTTP,
            _ => false,
        }
    }

    fn from_io(err: io::Error) -> Fault {
        match err.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => return Fault::TimedOut,
            io::ErrorKind::Other | io::ErrorKind::InvalidData if err.get_ref().is_some() => {}
            _ => return Fault::Io(io_reason(&err)),
        }
        let text = io_reason(&err);
        let inner = err.into_inner().expect("checked: it has an inner error");
        let inner = match inner.downcast::<Carried>() {
            Ok(carried) => return carried.0,
            Err(other) => other,
        };
        match inner.downcast::<rustls::Error>() {
            Ok(tls) => Fault::Rustls(*tls),
            Err(_) => Fault::Io(text),
        }
    }
}

/// A [`Fault`] carried through `io::Read` (the chunked decoder's errors), so that it comes
/// out as what it was: a line over the limit stays a protocol error.
#[derive(Debug)]
struct Carried(Fault);

impl fmt::Display for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for Carried {}

fn carry(fault: Fault) -> io::Error {
    match fault {
        Fault::TimedOut => io::ErrorKind::TimedOut.into(),
        other => io::Error::other(Carried(other)),
    }
}

/// An answer read whole.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A socket whose every read and write waits at most until the deadline (none: as long as it
/// takes).
struct Deadlined {
    stream: TcpStream,
    deadline: Option<Instant>,
}

impl Deadlined {
    /// What is left until the deadline, as a socket timeout; an error once it has passed
    /// (a zero timeout would mean "no timeout" to the kernel).
    fn arm(&self, write: bool) -> io::Result<()> {
        let timeout = match self.deadline {
            None => None,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                Some(left)
            }
        };
        if write {
            self.stream.set_write_timeout(timeout)
        } else {
            self.stream.set_read_timeout(timeout)
        }
    }
}

/// A socket timeout reads as EAGAIN, which rustls takes for "no data yet" and reads again:
/// it is a timeout.
fn timed_out_if_would_block(err: io::Error) -> io::Error {
    match err.kind() {
        io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut.into(),
        _ => err,
    }
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm(false)?;
        self.stream.read(buf).map_err(timed_out_if_would_block)
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm(true)?;
        self.stream.write(buf).map_err(timed_out_if_would_block)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the buffered reader reads from: the socket itself, or TLS over it.
enum Transport {
    Plain(Deadlined),
    Tls(Box<StreamOwned<ClientConnection, Deadlined>>),
}

impl Transport {
    fn socket(&self) -> &Deadlined {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => &tls.sock,
        }
    }

    fn socket_mut(&mut self) -> &mut Deadlined {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => &mut tls.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.read(buf),
            // A close without TLS's close_notify (Go's server closing an idle connection, or
            // giving up on one) is the end of the stream: every answer is framed by its
            // length or its chunks, so a cut-short answer is noticed all the same.
            Transport::Tls(tls) => match tls.read(buf) {
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(socket) => socket.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

/// A connection to one endpoint, kept for the next request while the server allows.
pub struct Connection {
    reader: BufReader<Transport>,
    host: String,
    /// It has carried a request already, so a close before the answer means it went stale.
    used: bool,
    /// With TLS: how to put its failures in words.
    verdict: Option<Verdict>,
}

/// Connects to `endpoint` (each of its addresses in turn) before `deadline`, with TLS when
/// `tls` is given (the handshake done too).
pub fn connect(
    endpoint: &Endpoint,
    deadline: Instant,
    tls: Option<&tls::Connector>,
) -> Result<Connection, Fault> {
    let socket = Deadlined {
        stream: tcp(endpoint, deadline)?,
        deadline: Some(deadline),
    };
    let (transport, verdict) = match tls {
        None => (Transport::Plain(socket), None),
        Some(connector) => {
            let (session, verdict) = connector.session(&endpoint.host).map_err(Fault::Tls)?;
            let transport = handshake(session, socket, endpoint)
                .map_err(|fault| in_words(fault, Some(&verdict), false))?;
            (transport, Some(verdict))
        }
    };
    Ok(Connection {
        reader: BufReader::new(transport),
        host: endpoint.to_string(),
        used: false,
        verdict,
    })
}

/// A TCP connection to `endpoint`, without Nagle's delay.
fn tcp(endpoint: &Endpoint, deadline: Instant) -> Result<TcpStream, Fault> {
    // The system resolver has its own timeouts (resolv.conf's `timeout` and `attempts`); an
    // address literal, the usual case, does not consult it.
    let addresses = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|err| Fault::Io(format!("resolving {}: {}", endpoint.host, io_reason(&err))))?;
    let mut last = Fault::Io(format!("{} has no address", endpoint.host));
    for address in addresses {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Fault::TimedOut);
        }
        match TcpStream::connect_timeout(&address, left) {
            Ok(stream) => {
                // Requests are small and answered at once: no Nagle delay on them.
                stream.set_nodelay(true).map_err(Fault::from_io)?;
                abort_on_close(&stream)?;
                return Ok(stream);
            }
            Err(err) => last = Fault::from_io(err),
        }
    }
    Err(last)
}

/// Makes closing `stream` (by the harness, or by the kernel when the harness dies) drop
/// whatever it has sent that the network has not delivered. Otherwise the kernel goes on
/// sending it after the harness gave up on it or died: a keep-alive given up on a member
/// behind a cut link renewed, once the link healed, the lease of a harness dead for seconds
/// (`make chaos`). Nothing is lost by it: a request is given up only when its answer did not
/// come in time, and closing a connection that has no answer pending drops nothing.
fn abort_on_close(stream: &TcpStream) -> Result<(), Fault> {
    let abort = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(stream, sockopt::Linger, &abort).map_err(|errno| Fault::from_io(errno.into()))
}

/// The TLS handshake, within the socket's deadline.
fn handshake(
    mut session: ClientConnection,
    mut socket: Deadlined,
    endpoint: &Endpoint,
) -> Result<Transport, Fault> {
    while session.is_handshaking() {
        session
            .complete_io(&mut socket)
            .map_err(|err| match err.kind() {
                // A server that is not TLS closes or resets the connection on our hello.
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => Fault::Closed,
                _ => Fault::from_io(err),
            })?;
    }
    log::debug!(
        "{endpoint}: TLS handshake done ({})",
        session
            .protocol_version()
            .and_then(|version| version.as_str())
            .unwrap_or("TLS")
    );
    Ok(Transport::Tls(Box::new(StreamOwned::new(session, socket))))
}

/// A failure of a TLS connection in words. A close or an alert from a server that asked for a
/// client certificate when none is configured is that: TLS 1.3 reports it only after the
/// handshake, at the first read.
fn in_words(fault: Fault, verdict: Option<&Verdict>, used: bool) -> Fault {
    let Some(verdict) = verdict else {
        return fault;
    };
    match fault {
        Fault::Rustls(err) => Fault::Tls(verdict.words(&err)),
        Fault::Closed | Fault::Io(_) if !used && verdict.wanted_a_certificate() => {
            Fault::Tls(tls::CLIENT_CERT_REQUIRED.into())
        }
        Fault::Closed if !used => Fault::Tls(HANDSHAKE_CLOSED.into()),
        other => other,
    }
}

/// The words for a server that closed the connection instead of completing the handshake.
pub const HANDSHAKE_CLOSED: &str = "the server closed the connection during the handshake";

/// Whether the server at `endpoint` answers a plain HTTP request: asked after it closed the
/// connection on our ClientHello, to say "use etcd://" rather than "closed".
pub fn speaks_plain_http(endpoint: &Endpoint, deadline: Instant) -> bool {
    let request = format!("GET /health HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n");
    first_reply(endpoint, deadline, request.as_bytes(), 5) == b"HTTP/"
}

/// Whether the server at `endpoint` answers a TLS ClientHello as a TLS server does: asked
/// after a plain request got no HTTP answer, to say "use etcds://" rather than "closed".
pub fn speaks_tls(endpoint: &Endpoint, deadline: Instant) -> bool {
    tls::client_hello(&endpoint.host)
        .is_some_and(|hello| tls::is_tls_reply(&first_reply(endpoint, deadline, &hello, 3)))
}

/// Up to `count` bytes of what the server at `endpoint` sends back to `message` on a new
/// connection, before `deadline`; none when it cannot be reached.
fn first_reply(endpoint: &Endpoint, deadline: Instant, message: &[u8], count: usize) -> Vec<u8> {
    let Ok(stream) = tcp(endpoint, deadline) else {
        return Vec::new();
    };
    let mut socket = Deadlined {
        stream,
        deadline: Some(deadline),
    };
    if socket.write_all(message).is_err() {
        return Vec::new();
    }
    let mut reply = vec![0u8; count];
    let mut got = 0;
    while got < count {
        match socket.read(&mut reply[got..]) {
            Ok(0) | Err(_) => break,
            Ok(read) => got += read,
        }
    }
    reply.truncate(got);
    reply
}

impl Connection {
    /// Sends `POST path` with a JSON body and reads the answer whole, before `deadline`.
    /// Afterwards the connection may carry another request (the bool).
    pub fn post(
        &mut self,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(Response, bool), Fault> {
        let reused = self.used;
        self.exchange(path, authorization, body, deadline)
            .map_err(|fault| in_words(fault, self.verdict.as_ref(), reused))
    }

    fn exchange(
        &mut self,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(Response, bool), Fault> {
        self.reader.get_mut().socket_mut().deadline = Some(deadline);
        let reused = self.used;
        self.used = true;
        let sent = self.send(path, authorization, body);
        let head = sent.and_then(|()| read_head(&mut self.reader));
        let head = match head {
            Err(Fault::Io(_) | Fault::Closed) if reused && self.reader.buffer().is_empty() => {
                return Err(Fault::Stale)
            }
            other => other?,
        };
        let body = read_body(&mut self.reader, &head.framing)?;
        let reusable = head.keep_alive && !matches!(head.framing, Framing::UntilClose);
        Ok((
            Response {
                status: head.status,
                body,
            },
            reusable,
        ))
    }

    /// Sends `POST path` and returns the status and, for a 200, a reader of the answer's lines
    /// (other statuses: the answer whole). Reads of the stream wait as long as their caller
    /// says ([`Lines::next_line`]).
    pub fn post_stream(
        mut self,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Streamed, Fault> {
        let verdict = self.verdict.take();
        match self.open_stream(path, authorization, body, deadline) {
            Ok(Streamed::Lines(mut lines)) => {
                lines.verdict = verdict;
                Ok(Streamed::Lines(lines))
            }
            Ok(refused) => Ok(refused),
            Err(fault) => Err(in_words(fault, verdict.as_ref(), false)),
        }
    }

    fn open_stream(
        mut self,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Streamed, Fault> {
        self.reader.get_mut().socket_mut().deadline = Some(deadline);
        self.send(path, authorization, body)?;
        let head = read_head(&mut self.reader)?;
        if head.status != 200 || !matches!(head.framing, Framing::Chunked) {
            let mut body = Vec::new();
            let _ = (&mut self.reader).take(LINE_LIMIT).read_to_end(&mut body);
            return Ok(Streamed::Refused(Response {
                status: head.status,
                body,
            }));
        }
        Ok(Streamed::Lines(Lines {
            reader: BufReader::new(Chunked::new(self.reader)),
            pending: Vec::new(),
            verdict: None,
        }))
    }

    fn send(&mut self, path: &str, authorization: Option<&str>, body: &[u8]) -> Result<(), Fault> {
        let mut request = Vec::with_capacity(200 + body.len());
        write!(
            request,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        )
        .map_err(Fault::from_io)?;
        if let Some(token) = authorization {
            // etcd wants the bare token, not `Bearer …`.
            request.extend_from_slice(b"Authorization: ");
            request.extend_from_slice(token.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        let transport = self.reader.get_mut();
        transport
            .write_all(&request)
            .and_then(|()| transport.flush())
            .map_err(Fault::from_io)
    }
}

/// What a streaming request got.
pub enum Streamed {
    /// A 200 with a chunked body: the lines follow.
    Lines(Lines),
    /// Any other answer, read whole.
    Refused(Response),
}

/// The lines of a streamed answer (one JSON object each, as etcd's gateway writes them).
pub struct Lines {
    reader: BufReader<Chunked<BufReader<Transport>>>,
    /// What was read of a line whose end has not come yet (a read timed out in it).
    pending: Vec<u8>,
    /// With TLS: how to put its failures in words.
    verdict: Option<Verdict>,
}

impl Lines {
    /// The next line without its newline; None at the end of the stream. Waits until
    /// `deadline` (none: as long as it takes); a read that times out keeps what it read, so
    /// the next call goes on from there. A line over [`STREAM_LINE_LIMIT`] is a protocol
    /// error.
    pub fn next_line(&mut self, deadline: Option<Instant>) -> Result<Option<Vec<u8>>, Fault> {
        self.reader.get_mut().inner.get_mut().socket_mut().deadline = deadline;
        next_line(&mut self.reader, &mut self.pending)
            .map_err(|fault| in_words(fault, self.verdict.as_ref(), true))
    }

    fn socket(&self) -> &TcpStream {
        &self.reader.get_ref().inner.get_ref().socket().stream
    }

    /// Another handle on the socket, so another thread can shut it down to end a blocked read.
    pub fn socket_clone(&self) -> io::Result<TcpStream> {
        self.socket().try_clone()
    }

    /// Turns on TCP keep-alive, so a peer that vanished (a lost machine: no FIN, no RST) ends
    /// an idle stream within about half a minute instead of never.
    pub fn keep_alive(&self) -> Result<(), Fault> {
        let stream = self.socket();
        let set = || -> nix::Result<()> {
            setsockopt(stream, sockopt::KeepAlive, &true)?;
            setsockopt(stream, sockopt::TcpKeepIdle, &10)?;
            setsockopt(stream, sockopt::TcpKeepInterval, &5)?;
            setsockopt(stream, sockopt::TcpKeepCount, &3)
        };
        set().map_err(|errno| Fault::Io(io_reason(&io::Error::from(errno))))
    }
}

/// The next line of `reader`, `pending` holding what an earlier call read of it before its
/// read timed out; a line over [`STREAM_LINE_LIMIT`] is a protocol error, and at the end of
/// the stream the last line may lack its newline.
pub(crate) fn next_line(
    reader: &mut impl BufRead,
    pending: &mut Vec<u8>,
) -> Result<Option<Vec<u8>>, Fault> {
    let room = STREAM_LINE_LIMIT.saturating_sub(pending.len() as u64);
    reader
        .take(room)
        .read_until(b'\n', pending)
        .map_err(Fault::from_io)?;
    if pending.last() == Some(&b'\n') {
        let mut line = std::mem::take(pending);
        line.pop();
        return Ok(Some(line));
    }
    if pending.len() as u64 >= STREAM_LINE_LIMIT {
        return Err(Fault::Protocol(format!(
            "a line of the stream over {STREAM_LINE_LIMIT} bytes, the limit"
        )));
    }
    let last = std::mem::take(pending);
    Ok((!last.is_empty()).then_some(last))
}

/// Shuts a socket down, waking whatever thread is blocked reading it.
pub fn shut_down(socket: &TcpStream) {
    let _ = socket.shutdown(Shutdown::Both);
}

/// The status line and the headers of an answer: its status, how its body is framed, and
/// whether the connection may carry another request.
pub(crate) fn read_head(reader: &mut impl BufRead) -> Result<Head, Fault> {
    let status_line = read_line(reader)?;
    if status_line.is_empty() {
        return Err(Fault::Closed);
    }
    let mut words = status_line.split(' ');
    let version = words.next().unwrap_or_default();
    let status = words
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| Fault::Protocol(NOT_HTTP.into()))?;
    let mut head = Head {
        status,
        framing: Framing::UntilClose,
        keep_alive: version == "HTTP/1.1",
    };
    for _ in 0..HEADER_LINES {
        // A closed connection reads as an empty line too: it must not pass for the blank
        // line that ends the head.
        if at_end(reader)? {
            return Err(Fault::Io("the answer was cut short".into()));
        }
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Fault::Protocol("a malformed header line".into()));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse()
                .map_err(|_| Fault::Protocol("a malformed Content-Length".into()))?;
            head.framing = Framing::Length(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(Fault::Protocol(format!("transfer encoding {value:?}")));
            }
            head.framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            head.keep_alive = false;
        }
    }
    Err(Fault::Protocol("too many header lines".into()))
}

/// Whether the answer has ended: nothing more to read (this waits for the next byte).
fn at_end(reader: &mut impl BufRead) -> Result<bool, Fault> {
    loop {
        match reader.fill_buf() {
            Ok(buffered) => return Ok(buffered.is_empty()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Fault::from_io(err)),
        }
    }
}

/// The body of an answer, framed as its head says; more than [`ANSWER_LIMIT`] bytes is
/// refused, a `Content-Length` over it before anything is read.
pub(crate) fn read_body(reader: &mut impl BufRead, framing: &Framing) -> Result<Vec<u8>, Fault> {
    let limit = ANSWER_LIMIT as usize;
    let read = match *framing {
        Framing::Length(length) if length > ANSWER_LIMIT => {
            return Err(Fault::Protocol(format!(
                "an answer of {length} bytes (its Content-Length), over the limit of {ANSWER_LIMIT}"
            )));
        }
        Framing::Length(length) => {
            let body = read_at_most(reader.take(length), limit, length).map_err(Fault::from_io)?;
            if body
                .as_ref()
                .is_some_and(|body| body.len() as u64 != length)
            {
                return Err(Fault::Io("the answer was cut short".into()));
            }
            body
        }
        Framing::Chunked => read_at_most(Chunked::new(reader), limit, 0).map_err(Fault::from_io)?,
        Framing::UntilClose => read_at_most(reader, limit, 0).map_err(Fault::from_io)?,
    };
    read.ok_or_else(|| {
        Fault::Protocol(format!(
            "an answer of more than {ANSWER_LIMIT} bytes, the limit"
        ))
    })
}

pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
}

pub(crate) enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// One header line (CRLF or LF ended) as text, empty for the blank line that ends the head;
/// an empty string also when the connection closed first (the caller tells them apart by
/// position: a status line is never empty).
fn read_line(reader: &mut impl BufRead) -> Result<String, Fault> {
    let mut line = Vec::new();
    reader
        .take(LINE_LIMIT)
        .read_until(b'\n', &mut line)
        .map_err(Fault::from_io)?;
    finish_line(line)
}

/// A line as [`read_line`] read it: a line without its newline is one over the limit (a
/// protocol error) or one the connection cut short.
fn finish_line(mut line: Vec<u8>) -> Result<String, Fault> {
    if !line.is_empty() && line.last() != Some(&b'\n') {
        if line.len() as u64 >= LINE_LIMIT {
            return Err(Fault::Protocol(format!(
                "a header or chunk-size line over {LINE_LIMIT} bytes"
            )));
        }
        return Err(Fault::Io("the answer was cut short".into()));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| Fault::Protocol("a header that is not UTF-8".into()))
}

/// Reads a chunked body (RFC 9112 7.1): hex size lines, data, and trailers after the last,
/// empty chunk (grpc-gateway sends `Grpc-Trailer-*` there). A read that times out loses
/// nothing: where it was is kept, and so is a line read in part.
pub(crate) struct Chunked<R> {
    inner: R,
    at: Part,
    /// A size, trailer or end-of-chunk line read in part.
    line: Vec<u8>,
}

/// Where a chunked body is.
#[derive(Clone, Copy)]
enum Part {
    /// Before a chunk: its size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// After a chunk's data: the line end that closes it.
    DataEnd,
    /// After the last, empty chunk: trailers up to a blank line.
    Trailers,
    Done,
}

impl<R: BufRead> Chunked<R> {
    pub(crate) fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            at: Part::Size,
            line: Vec::new(),
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let room = LINE_LIMIT.saturating_sub(self.line.len() as u64);
        (&mut self.inner)
            .take(room)
            .read_until(b'\n', &mut self.line)?;
        finish_line(std::mem::take(&mut self.line)).map_err(carry)
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if buf.is_empty() {
                return Ok(0);
            }
            match self.at {
                Part::Done => return Ok(0),
                Part::Size => {
                    let line = self.line()?;
                    if line.is_empty() {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = u64::from_str_radix(size, 16)
                        .map_err(|_| io::Error::other("a malformed chunk size"))?;
                    self.at = if size == 0 {
                        Part::Trailers
                    } else {
                        Part::Data(size)
                    };
                }
                Part::Data(left) => {
                    let wanted = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let read = self.inner.read(&mut buf[..wanted])?;
                    if read == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    self.at = match left - read as u64 {
                        0 => Part::DataEnd,
                        left => Part::Data(left),
                    };
                    return Ok(read);
                }
                Part::DataEnd => {
                    if !self.line()?.is_empty() {
                        return Err(io::Error::other("a chunk longer than its size"));
                    }
                    self.at = Part::Size;
                }
                Part::Trailers => {
                    if self.line()?.is_empty() {
                        self.at = Part::Done;
                    }
                }
            }
        }
    }
}

/// Seconds as a short figure for messages: `5`, `2.5`.
pub fn seconds(duration: Duration) -> String {
    let tenths = (duration.as_millis() + 50) / 100;
    if tenths % 10 == 0 {
        format!("{}", tenths / 10)
    } else {
        format!("{}.{}", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread::{self, JoinHandle};

    use super::*;

    /// How a socket might hand out an answer: sizes of the reads, in turn (1: a byte at a
    /// time; 65536: all at once).
    const SPLITS: [&[usize]; 4] = [&[1], &[2, 3], &[7, 1, 13], &[65536]];

    /// A reader that hands out `bytes` in pieces of `sizes`, in turn, as a socket may; at the
    /// end, EOF, or a timeout when `times_out` (what a socket's read timeout gives).
    struct Pieces {
        bytes: Vec<u8>,
        at: usize,
        piece_end: usize,
        sizes: &'static [usize],
        turn: usize,
        times_out: bool,
    }

    impl Pieces {
        fn new(bytes: &[u8], sizes: &'static [usize]) -> Pieces {
            Pieces {
                bytes: bytes.to_vec(),
                at: 0,
                piece_end: 0,
                sizes,
                turn: 0,
                times_out: false,
            }
        }

        fn then_time_out(self) -> Pieces {
            Pieces {
                times_out: true,
                ..self
            }
        }

        fn rest(&self) -> &[u8] {
            &self.bytes[self.at..]
        }
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let piece = self.fill_buf()?;
            let len = piece.len().min(buf.len());
            buf[..len].copy_from_slice(&piece[..len]);
            self.consume(len);
            Ok(len)
        }
    }

    impl BufRead for Pieces {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            if self.at == self.piece_end {
                if self.at == self.bytes.len() {
                    return match self.times_out {
                        true => Err(io::ErrorKind::WouldBlock.into()),
                        false => Ok(&[]),
                    };
                }
                let size = self.sizes[self.turn % self.sizes.len()];
                self.turn += 1;
                self.piece_end = (self.at + size).min(self.bytes.len());
            }
            Ok(&self.bytes[self.at..self.piece_end])
        }

        fn consume(&mut self, amount: usize) {
            self.at += amount;
        }
    }

    /// What [`read_head`] and [`read_body`] made of an answer, and what they left unread
    /// (the next answer on a kept connection).
    #[derive(Debug, PartialEq, Eq)]
    struct Parsed {
        status: u16,
        keep_alive: bool,
        framing: &'static str,
        body: String,
        rest: String,
    }

    fn parse_from(reader: &mut Pieces) -> Result<Parsed, Fault> {
        let head = read_head(reader)?;
        let body = read_body(reader, &head.framing)?;
        Ok(Parsed {
            status: head.status,
            keep_alive: head.keep_alive,
            framing: match head.framing {
                Framing::Length(_) => "length",
                Framing::Chunked => "chunked",
                Framing::UntilClose => "until close",
            },
            body: String::from_utf8_lossy(&body).into_owned(),
            rest: String::from_utf8_lossy(reader.rest()).into_owned(),
        })
    }

    /// Parses `answer` read in each of the [`SPLITS`]; they must all agree.
    fn parse(answer: &[u8]) -> Result<Parsed, Fault> {
        let mut results = SPLITS
            .iter()
            .map(|sizes| parse_from(&mut Pieces::new(answer, sizes)));
        let first = results.next().expect("splits");
        let first_text = format!("{first:?}");
        for (result, sizes) in results.zip(&SPLITS[1..]) {
            assert_eq!(
                format!("{result:?}"),
                first_text,
                "read in pieces of {sizes:?}"
            );
        }
        first
    }

    fn parsed(answer: &str) -> Parsed {
        parse(answer.as_bytes()).unwrap_or_else(|fault| panic!("{answer:?}: {fault:?}"))
    }

    /// The fault an answer is refused with, as `Io: text` or `Protocol: text`.
    fn refused(answer: &[u8]) -> String {
        match parse(answer) {
            Ok(parsed) => panic!(
                "{:?} was accepted: {parsed:?}",
                String::from_utf8_lossy(answer)
            ),
            Err(Fault::Io(text)) => format!("Io: {text}"),
            Err(Fault::Protocol(text)) => format!("Protocol: {text}"),
            Err(other) => format!("{other:?}"),
        }
    }

    #[test]
    fn a_content_length_answer_stops_at_its_length() {
        let answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}NEXT";
        assert_eq!(
            parsed(answer),
            Parsed {
                status: 200,
                keep_alive: true,
                framing: "length",
                body: r#"{"ok":true}"#.into(),
                rest: "NEXT".into(),
            }
        );
    }

    #[test]
    fn a_chunked_answer_joins_its_chunks_and_skips_the_trailers() {
        let answer = concat!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "5\r\nhello\r\n",
            "1;name=value\r\n \r\n",
            "A\r\n0123456789\r\n",
            "0\r\nGrpc-Trailer-Status: 0\r\n\r\n",
            "NEXT"
        );
        let parsed = parsed(answer);
        assert_eq!(parsed.framing, "chunked");
        assert_eq!(parsed.body, "hello 0123456789");
        assert_eq!(parsed.rest, "NEXT");
        assert!(parsed.keep_alive);
    }

    #[test]
    fn header_names_are_case_blind_and_lines_may_end_in_lf_alone() {
        let closing = parsed(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-LENGTH: 2\r\nCONNECTION: Close\r\n\r\nno",
        );
        assert_eq!((closing.status, closing.keep_alive), (503, false));
        assert_eq!(closing.body, "no");
        let bare = parsed("HTTP/1.1 204 No Content\nContent-Length: 0\n\n");
        assert_eq!((bare.status, bare.body.as_str()), (204, ""));
        let chunked =
            parsed("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
        assert_eq!(chunked.body, "ok");
    }

    #[test]
    fn an_answer_without_framing_lasts_until_the_connection_closes() {
        let old = parsed("HTTP/1.0 200 OK\r\n\r\nall of it");
        assert_eq!((old.framing, old.keep_alive), ("until close", false));
        assert_eq!(old.body, "all of it");
    }

    #[test]
    fn malformed_heads_are_refused() {
        for (answer, fault) in [
            ("", "Closed"),
            (
                "HTTP/2 200\r\n\r\n",
                "Protocol: an answer that is not HTTP/1.1",
            ),
            (
                "HTTP/1.1 OK\r\n\r\n",
                "Protocol: an answer that is not HTTP/1.1",
            ),
            (
                "SSH-2.0-OpenSSH_9.6\r\n",
                "Protocol: an answer that is not HTTP/1.1",
            ),
            (
                "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
                "Protocol: a malformed header line",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
                "Protocol: a malformed Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "Protocol: a malformed Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "Protocol: transfer encoding \"gzip\"",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Le",
                "Io: the answer was cut short",
            ),
            ("HTTP/1.1 200 OK", "Io: the answer was cut short"),
        ] {
            assert_eq!(refused(answer.as_bytes()), fault, "{answer:?}");
        }
        let latin1 = b"HTTP/1.1 200 OK\r\nServer: caf\xe9\r\n\r\n";
        assert_eq!(refused(latin1), "Protocol: a header that is not UTF-8");
    }

    #[test]
    fn a_head_cut_short_at_the_end_of_a_line_is_refused() {
        // A closed connection reads as an empty line, as the blank line that ends the head
        // does: neither answer may pass for a complete one (the second would be a 200 with
        // an empty body on a connection that looks reusable).
        for answer in [
            "HTTP/1.1 200 OK\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",
        ] {
            assert_eq!(
                refused(answer.as_bytes()),
                "Io: the answer was cut short",
                "{answer:?}"
            );
        }
    }

    /// An answer with `count` header lines (besides the blank line that ends them).
    fn with_headers(count: usize) -> String {
        let mut answer = String::from("HTTP/1.1 200 OK\r\n");
        for number in 1..count {
            answer.push_str(&format!("X-Header-{number}: {number}\r\n"));
        }
        answer + "Content-Length: 2\r\n\r\nok"
    }

    #[test]
    fn at_most_a_hundred_header_lines_are_read() {
        // The limit counts the blank line that ends the head.
        assert_eq!(parsed(&with_headers(HEADER_LINES - 1)).body, "ok");
        assert_eq!(
            refused(with_headers(HEADER_LINES).as_bytes()),
            "Protocol: too many header lines"
        );
    }

    #[test]
    fn a_header_line_over_the_limit_is_refused_without_reading_it_all() {
        let long = |length: usize| {
            let name = "X-Long: ";
            let value = "v".repeat(length - name.len() - 2);
            format!("HTTP/1.1 200 OK\r\n{name}{value}\r\nContent-Length: 2\r\n\r\nok")
        };
        let limit = LINE_LIMIT as usize;
        assert_eq!(
            parsed(&long(limit)).body,
            "ok",
            "a line of the limit exactly"
        );
        let answer = long(4 * limit);
        assert!(parse(answer.as_bytes()).is_err());
        let mut reader = Pieces::new(answer.as_bytes(), &[65536]);
        assert!(read_head(&mut reader).is_err());
        let read = answer.len() - reader.rest().len();
        assert!(read <= 2 * limit, "{read} bytes read for a refused line");
    }

    #[test]
    fn a_line_over_the_limit_is_a_protocol_error_not_a_cut_short_answer() {
        let long = "v".repeat(2 * LINE_LIMIT as usize);
        let header = format!("HTTP/1.1 200 OK\r\nX-Long: {long}\r\nContent-Length: 0\r\n\r\n");
        let chunk = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{long}\r\n");
        let status = format!("HTTP/1.1 200 {long}\r\n\r\n");
        for answer in [header, chunk, status] {
            assert_eq!(
                refused(answer.as_bytes()),
                "Protocol: a header or chunk-size line over 16384 bytes",
                "{}",
                &answer[..40]
            );
        }
    }

    #[test]
    fn a_content_length_over_the_limit_is_refused_before_reading_the_body() {
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{{",
            ANSWER_LIMIT + 1
        );
        let mut reader = Pieces::new(answer.as_bytes(), &[65536]).then_time_out();
        let result = parse_from(&mut reader);
        let Err(Fault::Protocol(text)) = result else {
            panic!("{result:?}");
        };
        assert_eq!(
            text,
            format!(
                "an answer of {} bytes (its Content-Length), over the limit of {ANSWER_LIMIT}",
                ANSWER_LIMIT + 1
            )
        );
        assert_eq!(reader.rest(), b"{", "nothing of the body was read");
    }

    /// An endless chunked body: chunks of `size` bytes, forever.
    struct Endless {
        head: Vec<u8>,
        chunk: Vec<u8>,
        at: usize,
        served: u64,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let source = if self.head.is_empty() {
                &self.chunk
            } else {
                &self.head
            };
            let len = (source.len() - self.at).min(buf.len());
            buf[..len].copy_from_slice(&source[self.at..self.at + len]);
            self.at += len;
            self.served += len as u64;
            if self.at == source.len() {
                self.at = 0;
                self.head.clear();
            }
            Ok(len)
        }
    }

    #[test]
    fn an_endless_chunked_body_stops_at_the_limit() {
        let mut endless = BufReader::new(Endless {
            head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            chunk: format!("10000\r\n{}\r\n", "x".repeat(0x10000)).into_bytes(),
            at: 0,
            served: 0,
        });
        let head = read_head(&mut endless).expect("a head");
        let result = read_body(&mut endless, &head.framing);
        let Err(Fault::Protocol(text)) = result else {
            panic!("{result:?}");
        };
        assert_eq!(
            text,
            format!("an answer of more than {ANSWER_LIMIT} bytes, the limit")
        );
        let served = endless.get_ref().served;
        assert!(
            served < ANSWER_LIMIT + 2 * 0x10000 + 8192,
            "{served} bytes read"
        );
    }

    #[test]
    fn a_stream_line_resumes_after_a_timeout_and_stops_at_its_limit() {
        // A read that times out inside a line, or inside a chunk-size line, loses nothing.
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{\"a\":1\r\n2\r\n}\n\r\n0\r\n\r\n";
        for sizes in SPLITS {
            let mut pieces = Pieces::new(answer.as_bytes(), sizes);
            read_head(&mut pieces).expect("a head");
            let stutter = Stutter {
                inner: pieces,
                turn: 0,
            };
            let mut reader = BufReader::new(Chunked::new(BufReader::with_capacity(3, stutter)));
            let mut pending = Vec::new();
            let mut got = Vec::new();
            let mut timeouts = 0;
            loop {
                match next_line(&mut reader, &mut pending) {
                    Ok(Some(line)) => got.push(String::from_utf8(line).unwrap()),
                    Ok(None) => break,
                    Err(Fault::TimedOut) => timeouts += 1,
                    Err(other) => panic!("{sizes:?}: {other:?} after {got:?} pending {pending:?} timeouts {timeouts}"),
                }
                assert!(timeouts < 1000);
            }
            assert_eq!(got, [r#"{"a":1}"#], "{sizes:?}");
            assert!(timeouts > 0);
        }
        // A line that never ends stops at the limit.
        let mut endless = BufReader::new(Chunked::new(BufReader::new(Endless {
            head: Vec::new(),
            chunk: format!("10000\r\n{}\r\n", "x".repeat(0x10000)).into_bytes(),
            at: 0,
            served: 0,
        })));
        let result = next_line(&mut endless, &mut Vec::new());
        let Err(Fault::Protocol(text)) = result else {
            panic!("{result:?}");
        };
        assert_eq!(
            text,
            format!("a line of the stream over {STREAM_LINE_LIMIT} bytes, the limit")
        );
    }

    /// A reader whose every other read times out, as a socket read with a short deadline
    /// on a slow stream does.
    struct Stutter {
        inner: Pieces,
        turn: usize,
    }

    impl Read for Stutter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.turn += 1;
            if self.turn % 2 == 1 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.inner.read(buf)
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (answer, fault) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_owned(),
                "Io: the answer was cut short",
            ),
            (
                format!("{chunked}zz\r\nhello\r\n0\r\n\r\n"),
                "Io: a malformed chunk size",
            ),
            (
                format!("{chunked}\r\nhello\r\n0\r\n\r\n"),
                "Io: unexpected end of file",
            ),
            (
                format!("{chunked}5\r\nhello world\r\n0\r\n\r\n"),
                "Io: a chunk longer than its size",
            ),
            (format!("{chunked}a\r\nhello"), "Io: unexpected end of file"),
            (
                format!("{chunked}5\r\nhello\r\n"),
                "Io: unexpected end of file",
            ),
            (format!("{chunked}5\r\nhel"), "Io: unexpected end of file"),
        ] {
            assert_eq!(refused(answer.as_bytes()), fault, "{answer:?}");
        }
    }

    #[test]
    fn a_read_that_times_out_is_a_timeout_wherever_it_happens() {
        for answer in [
            "HTTP/1.1 200 O",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTrailer: x",
        ] {
            for sizes in SPLITS {
                let mut reader = Pieces::new(answer.as_bytes(), sizes).then_time_out();
                let result = parse_from(&mut reader);
                assert!(
                    matches!(result, Err(Fault::TimedOut)),
                    "{answer:?} in {sizes:?}: {result:?}"
                );
            }
        }
    }

    /// A server on loopback for one connection: it reads each request and answers it with the
    /// next of `answers`, each written in the pieces given (so a chunk boundary can fall
    /// anywhere). Then it closes the connection, or holds it open until `hold` is dropped.
    /// Its thread returns the head of each request it read.
    struct Server {
        endpoint: Endpoint,
        thread: JoinHandle<Vec<String>>,
    }

    /// How long a loopback exchange may take: reached only when something hangs.
    const EXCHANGE: Duration = Duration::from_secs(5);

    impl Server {
        fn start(answers: Vec<Vec<&'static str>>, hold: Option<mpsc::Receiver<()>>) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
            let port = listener.local_addr().expect("the bound address").port();
            let thread = thread::spawn(move || {
                let (stream, _) = listener.accept().expect("accepting the client");
                stream
                    .set_read_timeout(Some(EXCHANGE))
                    .expect("a read timeout");
                let mut reader = BufReader::new(stream.try_clone().expect("cloning the socket"));
                let mut requests = Vec::new();
                for answer in answers {
                    requests.push(read_request(&mut reader));
                    for piece in answer {
                        (&stream).write_all(piece.as_bytes()).expect("answering");
                    }
                }
                if let Some(hold) = hold {
                    let _ = hold.recv();
                }
                requests
            });
            Server {
                endpoint: Endpoint {
                    host: "127.0.0.1".into(),
                    port,
                },
                thread,
            }
        }

        fn requests(self) -> Vec<String> {
            self.thread.join().expect("the server's thread")
        }
    }

    /// A request's head (its body, as long as Content-Length says, is read and dropped).
    fn read_request(reader: &mut impl BufRead) -> String {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("reading a request");
            if line.trim_end().is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .and_then(|length| length.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader
            .read_exact(&mut body)
            .expect("reading a request's body");
        head
    }

    fn soon() -> Instant {
        Instant::now() + EXCHANGE
    }

    #[test]
    fn a_kept_connection_carries_one_request_after_another() {
        let server = Server::start(
            vec![
                vec!["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"],
                vec![
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                    "b\r\n{\"count\"",
                    ":1}\r\n0\r\n\r\n",
                ],
            ],
            None,
        );
        let mut connection = connect(&server.endpoint, soon(), None).expect("connecting");
        let (first, reusable) = connection
            .post("/v3/kv/range", Some("token"), b"{}", soon())
            .expect("the first answer");
        assert_eq!(
            (first.status, first.body.as_slice(), reusable),
            (200, &b"{}"[..], true)
        );
        let (second, reusable) = connection
            .post("/v3/kv/put", None, b"{\"key\":\"a\"}", soon())
            .expect("the second answer");
        assert_eq!(second.body, br#"{"count":1}"#);
        assert!(reusable);
        let requests = server.requests();
        assert!(
            requests[0].starts_with("POST /v3/kv/range HTTP/1.1\r\n"),
            "{requests:?}"
        );
        assert!(
            requests[0].contains("\r\nAuthorization: token\r\n"),
            "{requests:?}"
        );
        assert!(
            requests[1].contains("\r\nContent-Length: 11\r\n"),
            "{requests:?}"
        );
        assert!(!requests[1].contains("Authorization"), "{requests:?}");
    }

    #[test]
    fn a_kept_connection_closed_before_the_next_answer_is_stale() {
        let server = Server::start(
            vec![vec!["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"]],
            None,
        );
        let mut connection = connect(&server.endpoint, soon(), None).expect("connecting");
        connection
            .post("/v3/kv/range", None, b"{}", soon())
            .expect("the first answer");
        server.requests();
        let second = connection.post("/v3/kv/range", None, b"{}", soon());
        assert!(matches!(second, Err(Fault::Stale)), "{second:?}");
    }

    #[test]
    fn a_line_over_the_limit_on_a_kept_connection_is_no_stale_connection() {
        let long: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nX-Long: {}\r\nContent-Length: 2\r\n\r\n{{}}",
                "v".repeat(LINE_LIMIT as usize)
            )
            .into_boxed_str(),
        );
        let server = Server::start(
            vec![
                vec!["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"],
                vec![long],
            ],
            None,
        );
        let mut connection = connect(&server.endpoint, soon(), None).expect("connecting");
        connection
            .post("/v3/kv/range", None, b"{}", soon())
            .expect("the first answer");
        let second = connection.post("/v3/kv/range", None, b"{}", soon());
        assert!(
            matches!(&second, Err(Fault::Protocol(text)) if text.contains("line over 16384 bytes")),
            "{second:?}"
        );
        server.requests();
    }

    #[test]
    fn a_stream_yields_its_lines_whatever_the_chunks() {
        let server = Server::start(
            vec![vec![
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "4\r\n{\"a\"\r\n",
                "c\r\n:1}\n{\"b\":2}\n\r\n",
                "7\r\n{\"c\":3}\r\n",
                "0\r\n\r\n",
            ]],
            None,
        );
        let connection = connect(&server.endpoint, soon(), None).expect("connecting");
        let Streamed::Lines(mut lines) = connection
            .post_stream("/v3/watch", None, b"{}", soon())
            .expect("the stream")
        else {
            panic!("a 200 with a chunked body is a stream");
        };
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line(Some(soon())).expect("a line") {
            seen.push(String::from_utf8(line).expect("UTF-8"));
        }
        assert_eq!(seen, [r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
        server.requests();
    }

    #[test]
    fn a_stream_that_is_refused_is_read_whole() {
        let server = Server::start(
            vec![vec![
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 15\r\n\r\n{\"error\":\"no\"}\n",
            ]],
            None,
        );
        let connection = connect(&server.endpoint, soon(), None).expect("connecting");
        match connection.post_stream("/v3/watch", None, b"{}", soon()) {
            Ok(Streamed::Refused(answer)) => {
                assert_eq!(answer.status, 401);
                assert_eq!(answer.body, b"{\"error\":\"no\"}\n");
            }
            Ok(Streamed::Lines(_)) => panic!("a 401 is no stream"),
            Err(fault) => panic!("{fault:?}"),
        }
        server.requests();
    }

    #[test]
    fn a_line_of_a_stream_waits_no_longer_than_its_deadline() {
        let (hold, held) = mpsc::channel();
        let server = Server::start(
            vec![vec![
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "6\r\n{\"a\":1\r\n",
            ]],
            Some(held),
        );
        let connection = connect(&server.endpoint, soon(), None).expect("connecting");
        let Ok(Streamed::Lines(mut lines)) =
            connection.post_stream("/v3/watch", None, b"{}", soon())
        else {
            panic!("a stream");
        };
        let wait = Duration::from_millis(200);
        let started = Instant::now();
        let result = lines.next_line(Some(started + wait));
        assert!(matches!(result, Err(Fault::TimedOut)), "{result:?}");
        // Not sooner, and not at the later deadline the request was sent with.
        let waited = started.elapsed();
        assert!(
            waited >= wait && waited < EXCHANGE / 2,
            "gave up after {waited:?}"
        );
        drop(hold);
        server.requests();
    }

    /// A connection the harness closes (or its death closes) is reset, not finished: the
    /// server sees no orderly end, and nothing queued behind a cut link is sent on later.
    #[test]
    fn closing_a_connection_resets_it() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port: listener.local_addr().expect("the bound address").port(),
        };
        let connection = connect(&endpoint, soon(), None).expect("connecting");
        let (mut accepted, _) = listener.accept().expect("accepting the client");
        accepted
            .set_read_timeout(Some(EXCHANGE))
            .expect("a read timeout");
        drop(connection);
        let read = accepted.read(&mut [0u8; 16]);
        assert!(
            matches!(&read, Err(err) if err.kind() == io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
    }
}
