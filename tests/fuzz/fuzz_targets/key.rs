//! Keys (src/registry/mod.rs Key::parse) and their file names in the file store
//! (src/registry/file/format.rs file_name, parse_name, may_start_with). By the first byte:
//! - any text as a key: a key accepted is the text, within the limit, of the key alphabet,
//!   and parses again; its file name is a valid file name that shows the key (all of it, or
//!   its start), and a watch's prefix filter never passes over it for a prefix it has;
//! - any bytes as a file name in `keys/`: a name that shows a whole key is that key's name;
//! - a valid key built from the input, and a prefix: the same checks on long keys, whose
//!   names show only their start.
#![no_main]

use envharness::fuzzing::{key_file_name, key_of_file_name, key_parse, may_start_with};
use envharness_fuzz::{draw_key, Unstructured};
use libfuzzer_sys::fuzz_target;

fn check_key(text: &str, prefix: &str) {
    let Ok(key) = key_parse(text) else {
        return;
    };
    assert_eq!(key, text);
    assert!(!key.is_empty() && key.len() <= 512, "{} bytes", key.len());
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b)),
        "{key:?}"
    );
    assert!(
        key.split('/')
            .all(|segment| !["", ".", ".."].contains(&segment)),
        "{key:?}"
    );
    assert_eq!(key_parse(&key), Ok(key.clone()));

    let name = key_file_name(&key);
    assert!(
        !name.is_empty() && name.len() <= 255,
        "{name:?}: {} bytes",
        name.len()
    );
    assert!(
        !name.contains(['/', '\0']) && name != "." && name != "..",
        "{name:?}"
    );
    let shown =
        key_of_file_name(name.as_bytes()).unwrap_or_else(|| panic!("{name:?} shows no key"));
    if shown.1 {
        assert_eq!(shown.0, key);
    } else {
        assert!(
            key.starts_with(&shown.0) && shown.0.len() < key.len(),
            "{key:?} shown as {shown:?}"
        );
    }
    // Every prefix the key has (the key is ASCII: any index is a boundary).
    for end in (0..=key.len()).step_by(7).chain([key.len()]) {
        assert!(
            may_start_with(shown.clone(), &key[..end]),
            "{key:?} missed under {:?}",
            &key[..end]
        );
    }
    if key.starts_with(prefix) {
        assert!(
            may_start_with(shown.clone(), prefix),
            "{key:?} missed under {prefix:?}"
        );
    }
    if shown.1 {
        assert_eq!(may_start_with(shown, prefix), key.starts_with(prefix));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            let (key, prefix) = text.split_once('\n').unwrap_or((&text, ""));
            check_key(key, prefix);
        }
        1 => {
            if let Some((key, whole)) = key_of_file_name(rest) {
                assert!(
                    key.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b)),
                    "{key:?}"
                );
                if whole {
                    assert_eq!(key_parse(&key), Ok(key.clone()));
                    if !rest.contains(&b'/') {
                        assert_eq!(key_file_name(&key).as_bytes(), rest, "{key:?}");
                    }
                }
            }
        }
        _ => {
            let mut u = Unstructured::new(rest);
            let Ok(key) = draw_key(&mut u) else {
                return;
            };
            let end = u.int_in_range(0..=key.len()).unwrap_or(0);
            let mut prefix = key[..end].to_owned();
            if u.ratio(1, 3).unwrap_or(false) {
                prefix.push('/');
            }
            check_key(&key, &prefix);
        }
    }
});
