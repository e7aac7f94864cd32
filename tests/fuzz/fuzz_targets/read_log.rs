//! The read log (src/registry/reads.rs), which any process of the user may write to. By the
//! first byte:
//! - any bytes as a log: the lookups read are distinct, in order, at most LOOKUP_LIMIT, each a
//!   valid key or a prefix without a tab or newline, and no larger than the log;
//! - lookups built from the input, recorded as `envharness kv` records them: read back as the
//!   same lookups, each with the digest of what it saw, once each.
#![no_main]

use envharness::fuzzing::{key_parse, parse_read_log, read_log_line, LOOKUP_LIMIT};
use envharness::registry::{Key, Lookup, Seen};
use envharness_fuzz::{draw_bytes, draw_key, DrawResult, Unstructured};
use libfuzzer_sys::fuzz_target;

fn any_log(bytes: &[u8]) {
    let Some(lookups) = parse_read_log(bytes) else {
        return;
    };
    assert!(lookups.len() <= LOOKUP_LIMIT);
    assert!(
        lookups.windows(2).all(|pair| pair[0] < pair[1]),
        "sorted and distinct"
    );
    let mut size = 0;
    for (lookup, digest) in &lookups {
        match lookup {
            Lookup::Get(key) => {
                assert_eq!(key_parse(key.as_str()).as_deref(), Ok(key.as_str()));
                size += key.as_str().len();
            }
            Lookup::List(prefix) => {
                assert!(!prefix.contains(['\t', '\n']), "{prefix:?}");
                size += prefix.len();
            }
        }
        assert!(!digest.contains('\n'));
        size += digest.len();
    }
    assert!(size <= bytes.len());
}

fn recorded(data: &[u8]) -> DrawResult<()> {
    let mut u = Unstructured::new(data);
    let mut log = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let lookup = if u.arbitrary()? {
            let Ok(key) = Key::parse(&draw_key(&mut u)?) else {
                continue;
            };
            Lookup::Get(key)
        } else {
            Lookup::List(String::from_utf8_lossy(&draw_bytes(&mut u, 20)?).into_owned())
        };
        let seen = if u.arbitrary()? {
            let value = if u.arbitrary()? {
                Some(draw_bytes(&mut u, 20)?)
            } else {
                None
            };
            Seen::Value(value)
        } else {
            let count = u.int_in_range(0..=2)?;
            let mut pairs = Vec::new();
            for _ in 0..count {
                pairs.push((draw_key(&mut u)?, draw_bytes(&mut u, 20)?));
            }
            Seen::Pairs(pairs)
        };
        match read_log_line(&lookup, &seen) {
            Some(line) => {
                assert!(
                    line.ends_with('\n') && line.matches('\n').count() == 1,
                    "{line:?}"
                );
                log.extend_from_slice(line.as_bytes());
                expected.push((lookup, seen.digest()));
            }
            None => {
                assert!(matches!(&lookup, Lookup::List(prefix) if prefix.contains(['\t', '\n'])))
            }
        }
    }
    expected.sort();
    expected.dedup();
    assert_eq!(
        parse_read_log(&log),
        Some(expected),
        "{:?}",
        String::from_utf8_lossy(&log)
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 => {
            let _ = recorded(rest);
        }
        Some((_, rest)) => any_log(rest),
        None => {}
    }
});
