//! The file store's files (src/registry/file/format.rs). By the first byte:
//! - any bytes as a value file: a record read has a valid key and a value no larger than the
//!   file; its header reads the same from the whole file as from the first bytes a watch reads
//!   (HEADER_LIMIT + 2); and the record, written again, reads back the same;
//! - a record built from the input (a valid key, any lease, any value): written and read back the
//!   same, whatever the value holds;
//! - any text as a lease file: a TTL read is 1 s to 1e9 s, and written again reads the same;
//! - any bytes as a name in `leases/` or `tmp/`: only names the store itself makes are taken as
//!   its own (the sweep removes nothing else), and every name it makes is.
#![no_main]

use std::time::Duration;

use envharness::fuzzing::{
    encode_record, is_temporary_name, key_parse, lease_content, parse_header, parse_lease,
    parse_lease_name, parse_record, temporary_name, HEADER_LIMIT,
};
use envharness_fuzz::{draw_bytes, draw_key, DrawResult, Unstructured};
use libfuzzer_sys::fuzz_target;

fn any_file(bytes: &[u8]) {
    let whole = parse_header(bytes);
    let head = parse_header(&bytes[..bytes.len().min(HEADER_LIMIT + 2)]);
    assert_eq!(
        head, whole,
        "the header read from the first bytes and from the whole file"
    );
    if let Ok((key, _, size, end)) = &whole {
        assert_eq!(key_parse(key).as_ref(), Ok(key));
        assert!(*end < HEADER_LIMIT, "a header ending at {end}");
        let _ = size;
    }
    if let Ok((key, lease, value)) = parse_record(bytes.to_vec()) {
        assert!(value.len() <= bytes.len());
        let (_, _, size, _) = whole.expect("a record has a header");
        assert_eq!(size, value.len());
        let again = encode_record(&key, lease, &value);
        assert_eq!(parse_record(again), Ok((key, lease, value)));
    }
}

fn built(data: &[u8]) -> DrawResult<()> {
    let mut u = Unstructured::new(data);
    let key = draw_key(&mut u)?;
    if key_parse(&key).is_err() {
        return Ok(());
    }
    let lease: Option<i64> = u.arbitrary()?;
    let value = draw_bytes(&mut u, 4096)?;
    let bytes = encode_record(&key, lease, &value);
    let (_, _, size, end) = parse_header(&bytes[..bytes.len().min(HEADER_LIMIT + 2)])
        .unwrap_or_else(|reason| panic!("the header of {key:?} from its first bytes: {reason}"));
    assert_eq!((size, bytes.len()), (value.len(), end + 2 + value.len()));
    assert_eq!(parse_record(bytes), Ok((key, lease, value)));
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => any_file(rest),
        1 => {
            let _ = built(rest);
        }
        2 => {
            if let Some(ttl) = parse_lease(&String::from_utf8_lossy(rest)) {
                assert!(ttl >= Duration::from_secs(1) && ttl <= Duration::from_secs(1_000_000_000));
                assert_eq!(ttl.subsec_nanos(), 0);
                assert_eq!(parse_lease(&lease_content(ttl)), Some(ttl));
            }
        }
        _ => {
            if let Some(id) = parse_lease_name(rest) {
                assert!(id > 0 && id.to_string().as_bytes() == rest, "{rest:?}");
            }
            if is_temporary_name(rest) {
                let text = std::str::from_utf8(rest).unwrap();
                let fields: Vec<&str> = text.split('-').collect();
                assert_eq!(fields.len(), 3, "{text:?}");
                assert!(
                    fields[2].len() == 16
                        && fields[2]
                            .bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                );
            }
            let mut u = Unstructured::new(rest);
            if let (Ok(pid), Ok(serial), Ok(random)) = (
                u.arbitrary::<u32>(),
                u.arbitrary::<u64>(),
                u.arbitrary::<u64>(),
            ) {
                assert!(is_temporary_name(
                    temporary_name(pid, serial, random).as_bytes()
                ));
            }
        }
    }
});
