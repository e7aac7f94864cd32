//! A misbehaving etcd (or anything on its port) cannot make the harness use unbounded memory or
//! CPU (docs/reference.md §11.1): a small fake server written here answers the gateway's
//! requests with an endless chunked body, a huge Content-Length, too many entries, a 150 MB
//! value, a value over the limit of a value, or a watch line without a newline. Each call
//! fails promptly, within an address-space limit (RLIMIT_AS) far below what buffering would
//! take, with one line naming the URL (or the key and the limit, for a value).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::support::*;

/// How long the fake server serves: reached only when something hangs.
const SERVE_LIMIT: Duration = Duration::from_secs(30);
/// The harness's address space in these tests: a debug build with a watch thread fits in
/// well under this, and the old client, which buffered answers of up to 256 MiB, did not.
const MEMORY_LIMIT: u64 = 192 * 1024 * 1024;

/// What the fake server answers to a request for `path`, written to the connection.
type Answer = dyn Fn(&str, &mut TcpStream) -> std::io::Result<()> + Send + Sync;

/// A fake etcd on a loopback port: each connection on a thread of its own, each request
/// answered by `answer`, everything given up after [`SERVE_LIMIT`].
struct FakeEtcd {
    port: u16,
}

impl FakeEtcd {
    fn start(answer: Arc<Answer>) -> FakeEtcd {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().expect("the bound address").port();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let until = Instant::now() + SERVE_LIMIT;
        thread::spawn(move || {
            while Instant::now() < until {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let answer = Arc::clone(&answer);
                        thread::spawn(move || serve(stream, &*answer, until));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeEtcd { port }
    }

    fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}/bounds", self.port)
    }
}

/// Reads each request on the connection and answers it, until the client goes or time is up.
fn serve(stream: TcpStream, answer: &Answer, until: Instant) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(SERVE_LIMIT));
    let _ = stream.set_write_timeout(Some(SERVE_LIMIT));
    let Ok(reading) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reading);
    let mut writer = stream;
    while Instant::now() < until {
        let Some(path) = read_request(&mut reader) else {
            return;
        };
        if answer(&path, &mut writer).is_err() {
            return;
        }
    }
}

/// A request's path (its head and body read); None when the client closed the connection.
fn read_request(reader: &mut impl BufRead) -> Option<String> {
    let mut path = None;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if path.is_none() {
            path = line.split(' ').nth(1).map(str::to_owned);
        }
        if let Some(value) = line.strip_prefix("Content-Length: ") {
            length = value.parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    path
}

fn chunk(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    write!(stream, "{:x}\r\n", data.len())?;
    stream.write_all(data)?;
    stream.write_all(b"\r\n")
}

/// A 200 with a chunked body: `start`, then `repeated` over and over until the client goes
/// (or `count` times), then `end`.
fn chunked(
    stream: &mut TcpStream,
    start: &[u8],
    repeated: &[u8],
    count: Option<usize>,
    end: &[u8],
) -> std::io::Result<()> {
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    chunk(stream, start)?;
    let until = Instant::now() + SERVE_LIMIT;
    let mut sent = 0;
    while count.is_none_or(|count| sent < count) && Instant::now() < until {
        chunk(stream, repeated)?;
        sent += 1;
    }
    chunk(stream, end)?;
    stream.write_all(b"0\r\n\r\n")
}

fn json(stream: &mut TcpStream, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `envharness kv ARGS` against `url`, within the memory limit; returns the run and its time.
fn kv_bounded(url: &str, args: &[&str]) -> Run {
    let mut t = Test::new();
    t.env("ENVHARNESS_KV", url).args(&["kv"]).args(args);
    let command = t.command_with_memory_limit(MEMORY_LIMIT);
    t.run_command(command)
}

#[track_caller]
fn fails_naming_the_url(run: &Run, url: &str, reason: &str) {
    run.status(125)
        .error_line(&[&format!("envharness: {url}: "), reason])
        .faster_than(Duration::from_secs(5));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn an_endless_chunked_body_stops_at_the_answer_limit() {
    let fake = FakeEtcd::start(Arc::new(|_, stream| {
        chunked(stream, b"{\"kvs\":[", &[b' '; 65536], None, b"]}")
    }));
    let run = kv_bounded(&fake.url(), &["get", "k"]);
    fails_naming_the_url(
        &run,
        &fake.url(),
        "an answer of more than 16777216 bytes, the limit",
    );
}

#[test]
fn a_huge_content_length_is_refused_before_reading_the_body() {
    let fake = FakeEtcd::start(Arc::new(|_, stream| {
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n{\"kvs\":[")?;
        // Then nothing: a client that waited for the body would time out instead.
        thread::sleep(Duration::from_secs(10));
        Ok(())
    }));
    let run = kv_bounded(&fake.url(), &["list"]);
    fails_naming_the_url(
        &run,
        &fake.url(),
        "an answer of 10000000000 bytes (its Content-Length), over the limit of 16777216",
    );
    run.faster_than(Duration::from_secs(1));
}

#[test]
fn many_entries_stop_at_the_list_limit_or_the_answer_limit() {
    let entry = format!(
        "{{\"key\":\"{}\",\"value\":\"{}\"}},",
        b64(b"bounds/k"),
        b64(b"v")
    );
    let entries: String = (0..20_000).map(|_| entry.as_str()).collect();
    let body = format!(
        "{{\"kvs\":[{}],\"count\":\"20000\"}}",
        entries.trim_end_matches(',')
    );
    let fake = FakeEtcd::start(Arc::new(move |_, stream| json(stream, &body)));
    let run = kv_bounded(&fake.url(), &["list", "--keys"]);
    fails_naming_the_url(
        &run,
        &fake.url(),
        "(any key): more than 10000 keys under it, the limit of a list",
    );
    // Entries without end.
    let endless = FakeEtcd::start(Arc::new(move |_, stream| {
        let repeated = entry.repeat(1000);
        chunked(stream, b"{\"kvs\":[", repeated.as_bytes(), None, b"{}]}")
    }));
    let run = kv_bounded(&endless.url(), &["list", "--keys"]);
    fails_naming_the_url(
        &run,
        &endless.url(),
        "an answer of more than 16777216 bytes, the limit",
    );
}

#[test]
fn a_150_mb_value_stops_at_the_answer_limit_and_a_value_over_131071_bytes_is_refused() {
    let fake = FakeEtcd::start(Arc::new(|_, stream| {
        // 150 MB of 'x', in base64 ("eHh4" is "xxx"), streamed.
        let start = format!("{{\"kvs\":[{{\"key\":\"{}\",\"value\":\"", b64(b"bounds/k"));
        let piece = "eHh4".repeat(16384);
        let pieces = 150_000_000 / (3 * 16384);
        chunked(
            stream,
            start.as_bytes(),
            piece.as_bytes(),
            Some(pieces),
            b"\"}]}",
        )
    }));
    let run = kv_bounded(&fake.url(), &["get", "k"]);
    fails_naming_the_url(
        &run,
        &fake.url(),
        "an answer of more than 16777216 bytes, the limit",
    );
    assert!(run.stdout.is_empty());

    let value = b64(&vec![b'v'; 200_000]);
    let body = format!(
        "{{\"kvs\":[{{\"key\":\"{}\",\"value\":\"{value}\"}}],\"count\":\"1\"}}",
        b64(b"bounds/k")
    );
    let fake = FakeEtcd::start(Arc::new(move |_, stream| json(stream, &body)));
    for args in [&["get", "k"][..], &["list"]] {
        let run = kv_bounded(&fake.url(), args);
        run.status(125)
            .error_line(&["envharness: k: the value is 200000 bytes, over the limit of 131071"]);
        assert!(run.stdout.is_empty(), "{args:?}");
    }
}

/// The CPU time (user and system) of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("a stat line")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15, the 12th and 13th after the command's ')'.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

#[test]
fn a_watch_line_without_a_newline_stops_at_the_line_limit_without_burning_cpu() {
    let fake = FakeEtcd::start(Arc::new(|path, stream| {
        if path == "/v3/watch" {
            chunked(
                stream,
                b"{\"result\":{\"created\":true}}\n",
                &[b'x'; 65536],
                None,
                b"\n",
            )
        } else {
            json(stream, "{\"header\":{}}")
        }
    }));
    let url = fake.url();
    let mut t = Test::new();
    t.env("ENVHARNESS_KV", &url)
        .args(&["kv", "get", "k", "--wait", "4"]);
    let mut command = t.command_with_memory_limit(MEMORY_LIMIT);
    let started = Instant::now();
    let child = spawn(&mut command).expect("spawning envharness");
    thread::sleep(Duration::from_millis(3000));
    let cpu = cpu_time(child.id());
    let elapsed = started.elapsed();
    let run = t.finish_command(child, started, &command);
    run.status(1)
        .error_line(&["k: not found after 4 s"])
        .error_line(&[
            &url,
            "the watch was lost",
            "a line of the stream over 4194304 bytes",
        ]);
    assert!(
        cpu < elapsed / 2,
        "{cpu:?} of CPU in {elapsed:?}: the watch spins"
    );
}
