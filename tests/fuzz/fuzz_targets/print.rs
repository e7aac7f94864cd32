//! `--print` (src/print.rs) round trips: whatever the values, `dotenv` output parses back with
//! the dotenv parser to the same variables; `shell` output splits, with POSIX shell words, into
//! `export NAME=VALUE` (values that are UTF-8); `json` output is one JSON object of the same
//! variables (bytes that are not UTF-8 replaced).
#![no_main]

use envharness::fuzzing::{dotenv_parse, dotenv_quote, print};
use envharness_fuzz::{draw_bytes, draw_name, DrawResult, Unstructured};
use libfuzzer_sys::fuzz_target;

type Vars = Vec<(String, Vec<u8>)>;

/// Variables set in turn, and the variables they leave (a later one keeps the first's place).
fn draw(u: &mut Unstructured) -> DrawResult<(Vars, Vars)> {
    let count = u.int_in_range(0..=6)?;
    let mut set = Vec::new();
    let mut left: Vars = Vec::new();
    for _ in 0..count {
        let name = if !left.is_empty() && u.ratio(1, 5)? {
            left[u.choose_index(left.len())?].0.clone()
        } else {
            draw_name(u)?
        };
        let value = draw_bytes(u, 64)?;
        match left.iter_mut().find(|(existing, _)| *existing == name) {
            Some(entry) => entry.1 = value.clone(),
            None => left.push((name.clone(), value.clone())),
        }
        set.push((name, value));
    }
    Ok((set, left))
}

fuzz_target!(|data: &[u8]| {
    // One value alone, as quote writes it, with and without `export ` and blanks.
    for line in [
        [b"V=".as_slice(), &dotenv_quote(data)].concat(),
        [b"export V = ".as_slice(), &dotenv_quote(data), b" # note\n"].concat(),
    ] {
        assert_eq!(
            dotenv_parse(&line),
            Ok(vec![("V".to_owned(), data.to_vec())]),
            "{line:?}"
        );
    }

    let mut u = Unstructured::new(data);
    let Ok((set, left)) = draw(&mut u) else {
        return;
    };

    let dotenv = print(&set, "dotenv");
    assert_eq!(
        dotenv_parse(&dotenv),
        Ok(left.clone()),
        "{:?}",
        String::from_utf8_lossy(&dotenv)
    );

    let shell = print(&set, "shell");
    if let Ok(text) = std::str::from_utf8(&shell) {
        let words = shell_words::split(text).expect("shell output splits");
        let expected: Vec<String> = left
            .iter()
            .flat_map(|(name, value)| {
                let value = String::from_utf8(value.clone()).expect("UTF-8, as the whole is");
                ["export".to_owned(), format!("{name}={value}")]
            })
            .collect();
        assert_eq!(words, expected, "{text:?}");
    }

    let json = print(&set, "json");
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).expect("json output is a JSON object");
    assert_eq!(object.len(), left.len());
    for (name, value) in &left {
        assert_eq!(
            object[name],
            String::from_utf8_lossy(value).as_ref(),
            "{name}"
        );
    }
});
