//! The dotenv parser (src/phase/dotenv.rs) on any bytes: no panic; an error names a line of the
//! text; every name read is a valid variable name; what is read is no larger than the text;
//! and what it read, written as `--print dotenv` writes it, reads back the same.
#![no_main]

use envharness::fuzzing::{dotenv_parse, dotenv_quote, is_variable_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &[u8]| {
    let lines = text.iter().filter(|b| **b == b'\n').count() + 1;
    match dotenv_parse(text) {
        Err((line, reason)) => {
            assert!(
                (1..=lines).contains(&line),
                "line {line} of {lines}: {reason}"
            );
            assert!(!reason.is_empty());
        }
        Ok(pairs) => {
            assert!(
                pairs.len() <= lines,
                "{} pairs from {lines} lines",
                pairs.len()
            );
            let read: usize = pairs
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum();
            assert!(read <= text.len(), "{read} bytes read from {}", text.len());
            let mut printed = Vec::new();
            for (name, value) in &pairs {
                assert!(is_variable_name(name), "{name:?}");
                printed.extend_from_slice(name.as_bytes());
                printed.push(b'=');
                printed.extend_from_slice(&dotenv_quote(value));
                printed.push(b'\n');
            }
            assert_eq!(
                dotenv_parse(&printed),
                Ok(pairs),
                "{:?}",
                String::from_utf8_lossy(&printed)
            );
        }
    }
});
