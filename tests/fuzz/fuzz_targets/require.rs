//! `--require NAME[=REGEX]` (src/phase/require.rs). The input is the requirement, then values
//! after NUL bytes. A requirement accepted names a valid variable, and its REGEX is a regex of
//! its own (what the harness anchors is the whole of it); a value meets it only when not empty,
//! UTF-8, and matched by the REGEX as a whole: the anchored match is a match of the REGEX, and
//! one that spans the value.
#![no_main]

use envharness::fuzzing::{is_variable_name, require};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let values: Vec<&[u8]> = parts.take(4).collect();
    let Ok((name, rule, met)) = require(&text, &values) else {
        return;
    };
    assert!(is_variable_name(&name), "{text:?}: {name:?}");
    let regex = rule.map(|rule| {
        regex_lite::Regex::new(&rule)
            .unwrap_or_else(|err| panic!("{text:?}: {rule:?} is accepted but is no regex: {err}"))
    });
    for (value, met) in values.iter().zip(met) {
        if !met {
            continue;
        }
        assert!(!value.is_empty(), "{text:?}: an empty value met it");
        let Some(regex) = &regex else {
            continue;
        };
        let value = std::str::from_utf8(value)
            .unwrap_or_else(|_| panic!("{text:?}: a value that is not UTF-8 met it"));
        assert!(
            regex.is_match(value),
            "{text:?}: {value:?} met it without a match"
        );
    }
});
