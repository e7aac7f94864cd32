//! The etcd client's HTTP/1.1 answer parser (src/registry/etcd/http.rs: read_head, read_body,
//! chunked bodies). Two halves, chosen by the first byte:
//! - any bytes as an answer, read whole and in pieces of sizes the input draws: no panic, the
//!   same result however the bytes arrive, a body within the limit and no larger than the
//!   answer, a Content-Length body of exactly that length, and nothing read past the answer
//!   of a framed body;
//! - a well-formed answer built from the input (status, headers, a body in chunks with
//!   extensions and trailers, or with a Content-Length), followed by the next answer's bytes:
//!   read back to the same status and body, leaving the next answer unread.
#![no_main]

use envharness::fuzzing::{http_answer, Answer, Framing, HTTP_BODY_LIMIT};
use envharness_fuzz::{draw_bytes, draw_from, draw_sizes, DrawResult, Pieces, Unstructured};
use libfuzzer_sys::fuzz_target;

fn read(bytes: &[u8], sizes: &[usize]) -> (Result<Answer, String>, usize) {
    let mut reader = Pieces::new(bytes, sizes);
    let answer = http_answer(&mut reader);
    (answer, bytes.len() - reader.rest().len())
}

fn any_bytes(data: &[u8]) {
    let (sizes, answer) = match data.split_first() {
        Some((split, rest)) => (
            vec![usize::from(split % 16) + 1, usize::from(split / 16) + 1],
            rest,
        ),
        None => (Vec::new(), data),
    };
    let (whole, used) = read(answer, &[]);
    for sizes in [&[1][..], &sizes] {
        let (pieces, used_in_pieces) = read(answer, sizes);
        assert_eq!(pieces, whole, "read in pieces of {sizes:?}");
        if whole.is_ok() {
            assert_eq!(used_in_pieces, used, "read in pieces of {sizes:?}");
        }
    }
    if let Ok(read) = whole {
        assert!(read.body.len() as u64 <= HTTP_BODY_LIMIT);
        assert!(
            read.body.len() <= used,
            "a body of {} from {used} bytes",
            read.body.len()
        );
        match read.framing {
            Framing::Length(length) => assert_eq!(read.body.len() as u64, length),
            Framing::UntilClose => assert_eq!(used, answer.len()),
            Framing::Chunked => {}
        }
    }
}

const TOKEN: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~";
const VALUE: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ;=,\"/:-_()";

/// A header line that is neither Content-Length, Transfer-Encoding nor Connection.
fn draw_header(u: &mut Unstructured) -> DrawResult<String> {
    let mut name = draw_from(u, TOKEN, 20)?;
    let lower = name.to_ascii_lowercase();
    if ["content-length", "transfer-encoding", "connection"].contains(&lower.as_str())
        || name.is_empty()
    {
        name.insert(0, 'X');
    }
    let value = draw_from(u, VALUE, 40)?;
    let space = if u.arbitrary()? { " " } else { "" };
    Ok(format!("{name}:{space}{value}"))
}

fn well_formed(data: &[u8]) -> DrawResult<()> {
    let mut u = Unstructured::new(data);
    let status: u16 = u.int_in_range(100..=599)?;
    let crlf = if u.ratio(1, 8)? { "\n" } else { "\r\n" };
    let chunked = u.arbitrary::<bool>()?;
    let close = u.ratio(1, 4)?;
    let body = draw_bytes(&mut u, 300)?;
    let mut answer = format!("HTTP/1.1 {status} Whatever{crlf}").into_bytes();
    let headers = u.int_in_range(0..=4)?;
    let framing_at = u.int_in_range(0..=headers)?;
    for index in 0..=headers {
        if index == framing_at {
            let framing = if chunked {
                "Transfer-Encoding: chunked".to_owned()
            } else {
                format!("Content-Length: {}", body.len())
            };
            answer.extend_from_slice(framing.as_bytes());
            answer.extend_from_slice(crlf.as_bytes());
            if close {
                answer.extend_from_slice(format!("Connection: close{crlf}").as_bytes());
            }
        }
        if index < headers {
            answer.extend_from_slice(draw_header(&mut u)?.as_bytes());
            answer.extend_from_slice(crlf.as_bytes());
        }
    }
    answer.extend_from_slice(crlf.as_bytes());
    if chunked {
        let mut rest = body.as_slice();
        while !rest.is_empty() {
            let size = u.int_in_range(1..=rest.len())?;
            let upper = u.arbitrary::<bool>()?;
            let hex = if upper {
                format!("{size:X}")
            } else {
                format!("{size:x}")
            };
            let extension = if u.ratio(1, 4)? {
                format!(";{}", draw_from(&mut u, TOKEN, 8)?)
            } else {
                String::new()
            };
            answer.extend_from_slice(format!("{hex}{extension}{crlf}").as_bytes());
            answer.extend_from_slice(&rest[..size]);
            answer.extend_from_slice(crlf.as_bytes());
            rest = &rest[size..];
        }
        answer.extend_from_slice(format!("0{crlf}").as_bytes());
        for _ in 0..u.int_in_range(0..=2)? {
            answer.extend_from_slice(draw_header(&mut u)?.as_bytes());
            answer.extend_from_slice(crlf.as_bytes());
        }
        answer.extend_from_slice(crlf.as_bytes());
    } else {
        answer.extend_from_slice(&body);
    }
    let framed = answer.len();
    answer.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let sizes = draw_sizes(&mut u)?;
    let (read, used) = read(&answer, &sizes);
    let read = read.unwrap_or_else(|fault| {
        panic!(
            "{:?} in pieces of {sizes:?}: {fault}",
            String::from_utf8_lossy(&answer)
        )
    });
    assert_eq!((read.status, read.keep_alive), (status, !close));
    assert_eq!(read.body, body);
    assert_eq!(used, framed, "{:?}", String::from_utf8_lossy(&answer));
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 => {
            let _ = well_formed(rest);
        }
        Some((_, rest)) => any_bytes(rest),
        None => any_bytes(data),
    }
});
