//! Durations (src/duration.rs parse_seconds and how messages show one; src/registry/kv.rs
//! parse_ttl, and a TTL in a file store's lease file). Any text: an accepted duration is not
//! negative, at most 1e9 s, and shown as a number that reads back to it within the rounding the
//! message promises; an accepted TTL is whole seconds from 2 to 1e9, and a lease file written
//! with it reads back the same.
#![no_main]

use std::time::Duration;

use envharness::fuzzing::{lease_content, parse_lease, parse_seconds, parse_ttl, show_seconds};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(duration) = parse_seconds(&text) {
        assert!(!text.trim_start().starts_with('-'), "{text:?}");
        assert!(
            duration <= Duration::from_secs(1_000_000_000),
            "{text:?}: {duration:?}"
        );
        let shown = show_seconds(duration);
        assert!(shown.len() <= 16, "{shown:?}");
        let again = parse_seconds(&shown).unwrap_or_else(|err| panic!("{shown:?}: {err}"));
        // Whole milliseconds as given, else a tenth of a second (a millisecond below 1 s).
        let tolerance = if duration < Duration::from_secs(1) {
            Duration::from_micros(500)
        } else {
            Duration::from_millis(50)
        };
        let off = duration.abs_diff(again);
        assert!(
            off <= tolerance + Duration::from_nanos(1),
            "{text:?}: {duration:?} shown as {shown:?}"
        );
        if duration.subsec_nanos() % 1_000_000 == 0 {
            assert_eq!(again, duration, "{text:?} shown as {shown:?}");
        }
    }
    if let Ok(ttl) = parse_ttl(&text) {
        assert_eq!(ttl.subsec_nanos(), 0);
        assert!(
            (2..=1_000_000_000).contains(&ttl.as_secs()),
            "{text:?}: {ttl:?}"
        );
        assert_eq!(parse_lease(&lease_content(ttl)), Some(ttl));
        assert_eq!(
            parse_seconds(&text),
            Ok(ttl),
            "{text:?} is a TTL and not as many seconds"
        );
    }
});
