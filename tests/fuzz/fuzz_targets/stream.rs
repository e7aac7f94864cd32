//! The etcd watch stream and the JSON in etcd's answers (src/registry/etcd: http.rs's chunked
//! body read as lines, watch.rs's reading of each line, mod.rs's error messages, numbers,
//! URLs and key ranges). By the first byte:
//! - any bytes as a chunked stream's body: no panic, no line holds a newline, the lines are no
//!   larger than the stream, and each line's reading by the watch thread never panics and
//!   gives a reason whenever the watch ends;
//! - lines built from the input, sent in chunks the input draws: read back the same;
//! - any bytes as an answer's JSON: an error message that is never empty;
//! - any text as an `etcd://` URL: endpoints and prefix that, written back as a URL, read the
//!   same; and any text as a prefix: its key range holds exactly the keys that start with it.
#![no_main]

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use envharness::fuzzing::{etcd_range, etcd_reply, etcd_url, http_stream_lines, watch_answer};
use envharness_fuzz::{draw_bytes, draw_sizes, DrawResult, Pieces, Unstructured};
use libfuzzer_sys::fuzz_target;

/// A line as the watch thread reads it.
fn check_line(line: &[u8]) {
    let (_, ended) = watch_answer(line);
    if let Some(reason) = ended {
        assert!(
            !reason.is_empty(),
            "the watch ended without a reason: {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

fn any_stream(data: &[u8]) {
    let (lines, _) = http_stream_lines(Pieces::new(data, &[7, 1, 13]), 10_000);
    let read: usize = lines.iter().map(|line| line.len() + 1).sum();
    assert!(
        read <= data.len() + 1,
        "{read} bytes of lines from {}",
        data.len()
    );
    for line in &lines {
        assert!(!line.contains(&b'\n'));
        check_line(line);
    }
}

fn built_stream(data: &[u8]) -> DrawResult<()> {
    let mut u = Unstructured::new(data);
    let count = u.int_in_range(0..=5)?;
    let mut lines = Vec::new();
    for _ in 0..count {
        let mut line = draw_bytes(&mut u, 80)?;
        line.retain(|b| *b != b'\n');
        lines.push(line);
    }
    let body: Vec<u8> = lines
        .iter()
        .flat_map(|line| line.iter().copied().chain([b'\n']))
        .collect();
    let mut stream = Vec::new();
    let mut rest = body.as_slice();
    while !rest.is_empty() {
        let size = u.int_in_range(1..=rest.len())?;
        stream.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        stream.extend_from_slice(&rest[..size]);
        stream.extend_from_slice(b"\r\n");
        rest = &rest[size..];
    }
    stream.extend_from_slice(b"0\r\n\r\n");
    let sizes = draw_sizes(&mut u)?;
    let (read, fault) = http_stream_lines(Pieces::new(&stream, &sizes), 100);
    assert_eq!(fault, None);
    assert_eq!(read, lines, "{:?}", String::from_utf8_lossy(&stream));
    Ok(())
}

fn any_json(data: &[u8]) {
    check_line(data);
    if let Some((message, _, _)) = etcd_reply(data) {
        assert!(!message.is_empty());
    }
}

fn urls_and_ranges(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let url = format!("etcd://{text}");
    if let Ok((endpoints, prefix)) = etcd_url(&url) {
        assert!(!endpoints.is_empty());
        assert!(prefix.is_empty() || prefix.ends_with('/'), "{prefix:?}");
        let again = format!("etcd://{}/{prefix}", endpoints.join(","));
        assert_eq!(
            etcd_url(&again),
            Ok((endpoints, prefix)),
            "{url:?} written as {again:?}"
        );
    }
    let (prefix, other) = text.split_once('\u{0}').unwrap_or((&text, ""));
    let (start, end) = etcd_range(prefix);
    let (start, end) = (BASE64.decode(start).unwrap(), BASE64.decode(end).unwrap());
    if prefix.is_empty() {
        assert_eq!((start.as_slice(), end.as_slice()), (&[0][..], &[0][..]));
    } else {
        assert_eq!(start, prefix.as_bytes());
        let within = start.as_slice() <= other.as_bytes() && other.as_bytes() < end.as_slice();
        assert_eq!(within, other.starts_with(prefix), "{prefix:?} {other:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => any_stream(rest),
        1 => {
            let _ = built_stream(rest);
        }
        2 => any_json(rest),
        _ => urls_and_ranges(rest),
    }
});
