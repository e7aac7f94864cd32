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
pub(crate) const BODY_LIMIT: u64 = 256 * 1024 * 1024;
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
        let head = sent.and_then(|()| read_head(&mut self.reader));
        let head = match head {
            Err(Fault::Io(_)) if reused && self.reader.buffer().is_empty() => {
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
        next_line(&mut self.reader)
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

/// The next line of a stream's body without its newline; None at its end.
pub(crate) fn next_line(reader: &mut impl BufRead) -> Result<Option<Vec<u8>>, Fault> {
    let mut line = Vec::new();
    reader
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

/// Shuts a socket down, waking whatever thread is blocked reading it.
pub fn shut_down(socket: &TcpStream) {
    let _ = socket.shutdown(Shutdown::Both);
}

/// The status line and the headers of an answer: its status, how its body is framed, and
/// whether the connection may carry another request.
pub(crate) fn read_head(reader: &mut impl BufRead) -> Result<Head, Fault> {
    let status_line = read_line(reader)?;
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

/// The body of an answer, framed as its head says; more than [`BODY_LIMIT`] bytes is refused.
pub(crate) fn read_body(reader: &mut impl BufRead, framing: &Framing) -> Result<Vec<u8>, Fault> {
    let mut body = Vec::new();
    let limit = BODY_LIMIT + 1;
    match *framing {
        Framing::Length(length) => {
            reader
                .take(length.min(limit))
                .read_to_end(&mut body)
                .map_err(Fault::from_io)?;
            if body.len() as u64 != length {
                return Err(Fault::Io("the answer was cut short".into()));
            }
        }
        Framing::Chunked => {
            Chunked::new(reader)
                .take(limit)
                .read_to_end(&mut body)
                .map_err(Fault::from_io)?;
        }
        Framing::UntilClose => {
            reader
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
    Ok(body)
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
pub(crate) struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk; None between chunks.
    left: Option<u64>,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    pub(crate) fn new(inner: R) -> Chunked<R> {
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
            ("", "Io: the connection was closed before an answer"),
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
        let mut connection = connect(&server.endpoint, soon()).expect("connecting");
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
        let mut connection = connect(&server.endpoint, soon()).expect("connecting");
        connection
            .post("/v3/kv/range", None, b"{}", soon())
            .expect("the first answer");
        server.requests();
        let second = connection.post("/v3/kv/range", None, b"{}", soon());
        assert!(matches!(second, Err(Fault::Stale)), "{second:?}");
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
        let connection = connect(&server.endpoint, soon()).expect("connecting");
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
        let connection = connect(&server.endpoint, soon()).expect("connecting");
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
        let connection = connect(&server.endpoint, soon()).expect("connecting");
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
}
