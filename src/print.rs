//! `--print`: the variables the environment phase set, in the order they were first set.
//! - `dotenv`: `NAME='value'` lines that [`dotenv::parse`] reads back unchanged (bytes
//!   are written as they are, non-UTF-8 included);
//! - `shell`: `export NAME='value'` lines, single-quoted with `'\''` for a quote, safe for
//!   `eval` whatever the bytes;
//! - `json`: one object. JSON strings are Unicode, so bytes that are not UTF-8 are replaced by
//!   U+FFFD, with a warning naming the variable.

use clap::ValueEnum;

use crate::phase::dotenv;
use crate::variables::Variables;

/// How `--print` writes the variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `NAME='value'` lines that envharness's dotenv parser reads back unchanged
    Dotenv,
    /// `export NAME='value'` lines safe for `eval`
    Shell,
    /// one JSON object
    Json,
}

/// The text `--print FORMAT` writes to stdout.
pub fn render(vars: &Variables, format: Format) -> Vec<u8> {
    match format {
        Format::Dotenv => lines(vars, b"", dotenv::quote),
        Format::Shell => lines(vars, b"export ", shell_quote),
        Format::Json => json(vars),
    }
}

fn lines(vars: &Variables, prefix: &[u8], quote: fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in vars.iter() {
        out.extend_from_slice(prefix);
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(&quote(value));
        out.push(b'\n');
    }
    out
}

/// POSIX shell single quotes: nothing inside is special, a `'` is written `'\''`.
fn shell_quote(value: &[u8]) -> Vec<u8> {
    let mut quoted = Vec::with_capacity(value.len() + 2);
    quoted.push(b'\'');
    for byte in value {
        if *byte == b'\'' {
            quoted.extend_from_slice(b"'\\''");
        } else {
            quoted.push(*byte);
        }
    }
    quoted.push(b'\'');
    quoted
}

fn json(vars: &Variables) -> Vec<u8> {
    let members: Vec<String> = vars
        .iter()
        .map(|(name, value)| {
            let text = String::from_utf8_lossy(value);
            if matches!(text, std::borrow::Cow::Owned(_)) {
                log::warn!("{name}: value is not UTF-8; --print json replaced the invalid bytes with U+FFFD");
            }
            format!("  {}: {}", json_string(name), json_string(&text))
        })
        .collect();
    if members.is_empty() {
        return b"{}\n".to_vec();
    }
    format!("{{\n{}\n}}\n", members.join(",\n")).into_bytes()
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("serializing a string to JSON cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Variables {
        let mut vars = Variables::default();
        vars.set("A", b"it's $HOME".to_vec());
        vars.set("B", b"line\n\"two\"".to_vec());
        vars
    }

    #[test]
    fn shell_quotes_single_quotes() {
        let out = render(&sample(), Format::Shell);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "export A='it'\\''s $HOME'\nexport B='line\n\"two\"'\n"
        );
    }

    #[test]
    fn json_is_one_object_in_order() {
        let out = String::from_utf8(render(&sample(), Format::Json)).unwrap();
        assert_eq!(
            out,
            "{\n  \"A\": \"it's $HOME\",\n  \"B\": \"line\\n\\\"two\\\"\"\n}\n"
        );
        assert_eq!(render(&Variables::default(), Format::Json), b"{}\n");
    }

    #[test]
    fn dotenv_output_parses_back() {
        let out = render(&sample(), Format::Dotenv);
        let parsed = dotenv::parse(&out).unwrap();
        let expected: Vec<(String, Vec<u8>)> = sample()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect();
        assert_eq!(parsed, expected);
    }
}
