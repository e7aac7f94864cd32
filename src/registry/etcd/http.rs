//! Just enough HTTP/1.1 to talk to etcd's JSON gateway: `POST` a body, read the answer whole
//! (`Content-Length` or chunked) or as a stream of lines (a watch).
//!
//! Why not a crate: ureq 3 without TLS added 262 KB to a static test program that already had
//! std's networking, serde_json and base64 (measured), more than the whole etcd store adds to
//! envharness (172 KB, 98 KB of it those shared parts); and it hides the socket, so a watch
//! stream blocked in a read could not be woken to stop it. Here every connection is a plain
//! [`TcpStream`] that the owner can shut down from another thread.
//!
//! Invariant: nothing here waits past the deadline it is given. Connecting gets what is left
//! of it, and so does every read and write, because the socket's timeout is set again before
//! each one (a server that trickles bytes cannot stretch the deadline). A stream's reads have
//! no deadline once it is established (a watch may be idle for hours); TCP keep-alive notices
//! a peer that went away instead.
//!
//! It speaks to one kind of server only (Go's net/http, through grpc-gateway), so it reads
//! what that server sends and refuses the rest as a protocol error.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};

/// The largest answer read whole: a `list` of many large values, base64 and all.
const BODY_LIMIT: u64 = 256 * 1024 * 1024;
/// The longest status or header line, and the most header lines, we accept.
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
    /// An answer that is not HTTP as etcd's gateway speaks it.
    Protocol(String),
}

impl Fault {
    fn from_io(err: io::Error) -> Fault {
        match err.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Fault::TimedOut,
            _ => Fault::Io(describe(&err)),
        }
    }
}

/// An I/O error as a lower-case reason without std's "(os error N)" tail:
/// `connection refused`.
pub fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(end) => &text[..end],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An answer read whole.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A socket whose every read waits at most until the deadline (none: as long as it takes).
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

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm(false)?;
        self.stream.read(buf)
    }
}

/// A connection to one endpoint, kept for the next request while the server allows.
pub struct Connection {
    reader: BufReader<Deadlined>,
    host: String,
    /// It has carried a request already, so a close before the answer means it went stale.
    used: bool,
}

/// Connects to `endpoint` (each of its addresses in turn) before `deadline`.
pub fn connect(endpoint: &Endpoint, deadline: Instant) -> Result<Connection, Fault> {
    // The system resolver has its own timeouts (resolv.conf's `timeout` and `attempts`); an
    // address literal, the usual case, does not consult it.
    let addresses = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|err| Fault::Io(format!("resolving {}: {}", endpoint.host, describe(&err))))?;
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
                return Ok(Connection {
                    reader: BufReader::new(Deadlined {
                        stream,
                        deadline: Some(deadline),
                    }),
                    host: endpoint.to_string(),
                    used: false,
                });
            }
            Err(err) => last = Fault::from_io(err),
        }
    }
    Err(last)
}

impl Connection {
    /// Sends `POST path` with a JSON body and reads the answer whole, before `deadline`.
    /// Afterwards the connection may carry another request ([`Connection::reusable`]).
    pub fn post(
        &mut self,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(Response, bool), Fault> {
        self.reader.get_mut().deadline = Some(deadline);
        let reused = self.used;
        self.used = true;
        let sent = self.send(path, authorization, body);
        let head = sent.and_then(|()| self.read_head());
        let head = match head {
            Err(Fault::Io(_)) if reused && self.reader.buffer().is_empty() => {
                return Err(Fault::Stale)
            }
            other => other?,
        };
        let mut body = Vec::new();
        let limit = BODY_LIMIT + 1;
        match head.framing {
            Framing::Length(length) => {
                (&mut self.reader)
                    .take(length.min(limit))
                    .read_to_end(&mut body)
                    .map_err(Fault::from_io)?;
                if body.len() as u64 != length {
                    return Err(Fault::Io("the answer was cut short".into()));
                }
            }
            Framing::Chunked => {
                Chunked::new(&mut self.reader)
                    .take(limit)
                    .read_to_end(&mut body)
                    .map_err(Fault::from_io)?;
            }
            Framing::UntilClose => {
                (&mut self.reader)
                    .take(limit)
                    .read_to_end(&mut body)
                    .map_err(Fault::from_io)?;
            }
        }
        if body.len() as u64 > BODY_LIMIT {
            return Err(Fault::Protocol(format!(
                "an answer of more than {BODY_LIMIT} bytes"
            )));
        }
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
    /// (other statuses: the answer whole). Reads of the stream wait as long as it takes.
    pub fn post_stream(
        mut self,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Streamed, Fault> {
        self.reader.get_mut().deadline = Some(deadline);
        self.send(path, authorization, body)?;
        let head = self.read_head()?;
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
        let socket = self.reader.get_ref();
        socket.arm(true).map_err(Fault::from_io)?;
        (&socket.stream).write_all(&request).map_err(Fault::from_io)
    }

    fn read_head(&mut self) -> Result<Head, Fault> {
        let status_line = read_line(&mut self.reader)?;
        if status_line.is_empty() {
            return Err(Fault::Io(
                "the connection was closed before an answer".into(),
            ));
        }
        let mut words = status_line.split(' ');
        let version = words.next().unwrap_or_default();
        let status = words
            .next()
            .and_then(|code| code.parse::<u16>().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| Fault::Protocol("an answer that is not HTTP/1.1".into()))?;
        let mut head = Head {
            status,
            framing: Framing::UntilClose,
            keep_alive: version == "HTTP/1.1",
        };
        for _ in 0..HEADER_LINES {
            let line = read_line(&mut self.reader)?;
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
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                head.keep_alive = false;
            }
        }
        Err(Fault::Protocol("too many header lines".into()))
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
    reader: BufReader<Chunked<BufReader<Deadlined>>>,
}

impl Lines {
    /// The next line without its newline; None at the end of the stream. Waits until
    /// `deadline` (none: as long as it takes).
    pub fn next_line(&mut self, deadline: Option<Instant>) -> Result<Option<Vec<u8>>, Fault> {
        self.reader.get_mut().inner.get_mut().deadline = deadline;
        let mut line = Vec::new();
        (&mut self.reader)
            .take(BODY_LIMIT)
            .read_until(b'\n', &mut line)
            .map_err(Fault::from_io)?;
        if line.is_empty() {
            return Ok(None);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Ok(Some(line))
    }

    /// Another handle on the socket, so another thread can shut it down to end a blocked read.
    pub fn socket(&self) -> io::Result<TcpStream> {
        self.reader.get_ref().inner.get_ref().stream.try_clone()
    }

    /// Turns on TCP keep-alive, so a peer that vanished (a lost machine: no FIN, no RST) ends
    /// an idle stream within about half a minute instead of never.
    pub fn keep_alive(&self) -> Result<(), Fault> {
        let stream = &self.reader.get_ref().inner.get_ref().stream;
        let set = || -> nix::Result<()> {
            setsockopt(stream, sockopt::KeepAlive, &true)?;
            setsockopt(stream, sockopt::TcpKeepIdle, &10)?;
            setsockopt(stream, sockopt::TcpKeepInterval, &5)?;
            setsockopt(stream, sockopt::TcpKeepCount, &3)
        };
        set().map_err(|errno| Fault::Io(describe(&io::Error::from(errno))))
    }
}

/// Shuts a socket down, waking whatever thread is blocked reading it.
pub fn shut_down(socket: &TcpStream) {
    let _ = socket.shutdown(Shutdown::Both);
}

struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

enum Framing {
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
    if !line.is_empty() && line.last() != Some(&b'\n') {
        return Err(Fault::Io("the answer was cut short".into()));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| Fault::Protocol("a header that is not UTF-8".into()))
}

/// Reads a chunked body (RFC 9112 7.1): hex size lines, data, and trailers after the last,
/// empty chunk (grpc-gateway sends `Grpc-Trailer-*` there).
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk; None between chunks.
    left: Option<u64>,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            left: None,
            done: false,
        }
    }

    fn line(&mut self) -> io::Result<String> {
        read_line(&mut self.inner).map_err(|failure| match failure {
            Fault::TimedOut => io::ErrorKind::TimedOut.into(),
            Fault::Io(text) | Fault::Protocol(text) => io::Error::other(text),
            Fault::Stale => io::ErrorKind::UnexpectedEof.into(),
        })
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            match self.left {
                None => {
                    let line = self.line()?;
                    if line.is_empty() {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = u64::from_str_radix(size, 16)
                        .map_err(|_| io::Error::other("a malformed chunk size"))?;
                    if size == 0 {
                        // Trailers, up to the blank line that ends the body.
                        while !self.line()?.is_empty() {}
                        self.done = true;
                        return Ok(0);
                    }
                    self.left = Some(size);
                }
                Some(0) => {
                    if !self.line()?.is_empty() {
                        return Err(io::Error::other("a chunk longer than its size"));
                    }
                    self.left = None;
                }
                Some(left) => {
                    let wanted = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let read = self.inner.read(&mut buf[..wanted])?;
                    if read == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    self.left = Some(left - read as u64);
                    return Ok(read);
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
