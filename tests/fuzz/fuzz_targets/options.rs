//! The other option values (src/config/plan.rs, src/phase/require.rs, src/phase/template).
//! Any text as each of:
//! - a signal (`--on-change`, `--rewrite`): a name or number accepted is a signal whose number
//!   reads back as the same; `--on-change` never takes KILL or STOP; `--rewrite FROM:TO` rewrites
//!   only a signal the harness forwards, and written back as numbers reads the same;
//! - `--remap-exit N:M`: two statuses 0-255 that read back the same;
//! - `--wait-for`: a variable name, or an address (a port 1-65535, a host) that, shown as the
//!   messages show it, reads back the same; and what precedes a URL's `@` (a password) changes
//!   nothing of the result, so no message can repeat it;
//! - `-t SRC:DEST`: both non-empty, split at the first ':', nothing lost.
#![no_main]

use envharness::fuzzing::{
    forwarded_signals, is_variable_name, on_change, parse_signal, parse_target, remap_exit,
    rewrite, template, wait_for,
};
use libfuzzer_sys::fuzz_target;

const SIGKILL: i32 = 9;
const SIGSTOP: i32 = 19;

/// The text with what precedes the last `@` of its authority (as the address parser reads it)
/// replaced by `other`; None without an `@` there.
fn with_other_userinfo(text: &str, other: &str) -> Option<String> {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), text),
    };
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_len].rfind('@')?;
    Some(format!("{scheme}{other}{}", &rest[at..]))
}

fn signals(text: &str) {
    if let Some(number) = parse_signal(text) {
        assert!((1..=64).contains(&number), "{text:?}: {number}");
        assert_eq!(parse_signal(&number.to_string()), Some(number));
    }
    if let Ok(Some(number)) = on_change(text) {
        assert!(number != SIGKILL && number != SIGSTOP, "{text:?}");
        assert_eq!(parse_signal(text), Some(number));
    }
    if let Ok((from, to)) = rewrite(text) {
        assert!(forwarded_signals().contains(&from), "{text:?}: {from}");
        let again = format!("{from}:{}", to.unwrap_or(0));
        assert_eq!(rewrite(&again), Ok((from, to)), "{text:?} as {again:?}");
    }
    if let Ok((from, to)) = remap_exit(text) {
        assert!(
            (0..=255).contains(&from) && (0..=255).contains(&to),
            "{text:?}"
        );
        assert_eq!(remap_exit(&format!("{from}:{to}")), Ok((from, to)));
    }
}

fn addresses(text: &str) {
    let given = wait_for(text);
    match &given {
        Ok(Err(name)) => assert!(is_variable_name(name), "{text:?}: {name:?}"),
        Ok(Ok((host, port, shown))) => {
            assert!(!host.is_empty() && *port != 0, "{text:?}");
            assert_eq!(
                parse_target(shown),
                Ok((host.clone(), *port, shown.clone())),
                "{text:?} shown as {shown:?}"
            );
        }
        Err(_) => {}
    }
    if let Some(other) = with_other_userinfo(text, "someone:other") {
        if !matches!(given, Ok(Err(_))) {
            assert_eq!(wait_for(&other), given, "{text:?} against {other:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => signals(&text),
        1 => addresses(&text),
        _ => {
            if let Ok((src, dest)) = template(rest) {
                assert!(!src.is_empty() && !dest.is_empty() && !src.contains(&b':'));
                assert_eq!([src.as_slice(), b":", &dest].concat(), rest);
            }
        }
    }
});
