//! Dotenv lines: parsing `PREFIX.env` files and writing `--print`'s default format. The two
//! must round-trip: whatever [`quote`] writes, [`parse`] reads back byte for byte.
//!
//! The rules (docs/reference.md §3.3): blank lines and `#` comments are skipped; an optional
//! `export ` prefix; `KEY=VALUE` where an unquoted VALUE is trimmed and kept as it is (a `#` in it
//! is part of the value, as in `docker run --env-file`), a `'single'` quoted one is literal, a
//! `"double"` quoted one knows the escapes `\n`, `\"` and `\\` (any other backslash is kept);
//! quoted values may span lines, and only a `#` comment may follow the closing quote. Values are
//! bytes. A malformed line is an error naming its line number.

use crate::phase::entries::is_variable_name;

/// A malformed dotenv line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Parses dotenv text into (KEY, VALUE) pairs in file order.
pub fn parse(text: &[u8]) -> Result<Vec<(String, Vec<u8>)>, LineError> {
    let mut pairs = Vec::new();
    let mut pos = 0;
    let mut line_number = 1;
    while pos < text.len() {
        let line = first_line(&text[pos..]);
        let content = line.trim_ascii();
        let consumed = if content.is_empty() || content.starts_with(b"#") {
            line.len() + 1
        } else {
            let error = |reason: String| LineError {
                line: line_number,
                reason,
            };
            let (key, value, consumed) = parse_assignment(&text[pos..]).map_err(error)?;
            pairs.push((key, value));
            consumed
        };
        let end = (pos + consumed).min(text.len());
        line_number += count_newlines(&text[pos..end]);
        pos = end;
    }
    Ok(pairs)
}

/// Parses `[export ]KEY=VALUE` at the start of `text`; returns the pair and the bytes used,
/// through the newline that ends the (possibly multi-line) assignment.
fn parse_assignment(text: &[u8]) -> Result<(String, Vec<u8>, usize), String> {
    let line = first_line(text);
    let indent = line.len() - line.trim_ascii_start().len();
    let content = strip_export(&line[indent..]);
    let eq = content
        .iter()
        .position(|b| *b == b'=')
        .ok_or("expected KEY=VALUE")?;
    let key = std::str::from_utf8(content[..eq].trim_ascii())
        .ok()
        .filter(|key| is_variable_name(key))
        .ok_or("not a valid variable name before '='")?;
    let value_start = line.len() - content.len() + eq + 1;
    let (value, value_len) = parse_value(&text[value_start..])?;
    Ok((key.to_owned(), value, value_start + value_len))
}

/// The text up to (not including) the first newline.
fn first_line(text: &[u8]) -> &[u8] {
    let end = text.iter().position(|b| *b == b'\n').unwrap_or(text.len());
    &text[..end]
}

fn strip_export(content: &[u8]) -> &[u8] {
    match content.strip_prefix(b"export") {
        Some(rest) if rest.first().is_some_and(|b| *b == b' ' || *b == b'\t') => {
            rest.trim_ascii_start()
        }
        _ => content,
    }
}

/// Parses a value that starts right after '='; returns it and the bytes used, through the end
/// of the line its closing quote is on (newline included).
fn parse_value(text: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let blanks = text.len() - trim_blanks_start(text).len();
    let quoted = &text[blanks..];
    let (value, closing_quote) = match quoted.first() {
        Some(b'\'') => single_quoted(quoted)?,
        Some(b'"') => double_quoted(quoted)?,
        _ => {
            let line = first_line(quoted);
            return Ok((line.trim_ascii().to_vec(), blanks + line.len() + 1));
        }
    };
    let after = first_line(&quoted[closing_quote + 1..]).trim_ascii();
    if !after.is_empty() && !after.starts_with(b"#") {
        return Err("unexpected text after the closing quote".into());
    }
    let rest_of_line = first_line(&quoted[closing_quote + 1..]).len();
    Ok((value, blanks + closing_quote + 1 + rest_of_line + 1))
}

/// `'literal'`: the value and the index of the closing quote.
fn single_quoted(text: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let end = text[1..]
        .iter()
        .position(|b| *b == b'\'')
        .ok_or("unterminated single quote")?;
    Ok((text[1..1 + end].to_vec(), end + 1))
}

/// A double-quoted value with its three escapes: the value and the index of the closing quote.
fn double_quoted(text: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut value = Vec::new();
    let mut i = 1;
    loop {
        match (text.get(i), text.get(i + 1)) {
            (None, _) | (Some(b'\\'), None) => return Err("unterminated double quote".into()),
            (Some(b'"'), _) => return Ok((value, i)),
            (Some(b'\\'), Some(escaped)) => {
                match escaped {
                    b'n' => value.push(b'\n'),
                    b'"' | b'\\' => value.push(*escaped),
                    other => value.extend_from_slice(&[b'\\', *other]),
                }
                i += 2;
            }
            (Some(byte), _) => {
                value.push(*byte);
                i += 1;
            }
        }
    }
}

/// Spaces and tabs only: a newline right after '=' means an empty value, not the next line.
fn trim_blanks_start(text: &[u8]) -> &[u8] {
    let start = text
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(text.len());
    &text[start..]
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| **b == b'\n').count()
}

/// A value quoted so that [`parse`] reads it back unchanged: single quotes when it has no `'`,
/// else double quotes with `\\`, `\"` and `\n` escaped.
pub fn quote(value: &[u8]) -> Vec<u8> {
    if !value.contains(&b'\'') {
        let mut quoted = Vec::with_capacity(value.len() + 2);
        quoted.push(b'\'');
        quoted.extend_from_slice(value);
        quoted.push(b'\'');
        return quoted;
    }
    let mut quoted = Vec::with_capacity(value.len() + 8);
    quoted.push(b'"');
    for byte in value {
        match byte {
            b'\\' => quoted.extend_from_slice(b"\\\\"),
            b'"' => quoted.extend_from_slice(b"\\\""),
            b'\n' => quoted.extend_from_slice(b"\\n"),
            other => quoted.push(*other),
        }
    }
    quoted.push(b'"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect()
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn plain_lines_comments_and_export() {
        let text = "# comment\n\nA=1\nexport B = two words \n  C=x#not a comment\r\nD=\n";
        assert_eq!(
            pairs(text),
            vec![
                kv("A", "1"),
                kv("B", "two words"),
                kv("C", "x#not a comment"),
                kv("D", "")
            ]
        );
    }

    #[test]
    fn single_quotes_are_literal_and_may_span_lines() {
        let text = "A='$x \\n \"q\"'\nB='line1\nline2' # trailing comment\nC=after\n";
        assert_eq!(
            pairs(text),
            vec![
                kv("A", "$x \\n \"q\""),
                kv("B", "line1\nline2"),
                kv("C", "after")
            ]
        );
    }

    #[test]
    fn double_quotes_know_three_escapes() {
        let text = "A=\"a\\nb \\\"c\\\" d\\\\e \\t\"\nB=\"multi\nline\"\nC=3";
        assert_eq!(
            pairs(text),
            vec![
                kv("A", "a\nb \"c\" d\\e \\t"),
                kv("B", "multi\nline"),
                kv("C", "3")
            ]
        );
    }

    #[test]
    fn malformed_lines_name_their_line_number() {
        let cases = [
            ("A=1\nnot a pair\n", 2, "expected KEY=VALUE"),
            ("A=1\n\n1BAD=x\n", 3, "not a valid variable name"),
            ("A='open\nB=2\n", 1, "unterminated single quote"),
            ("A=\"open\n", 1, "unterminated double quote"),
            ("A=1\nB='x' y\n", 2, "after the closing quote"),
            ("A='x\ny'\nC\n", 3, "expected KEY=VALUE"),
        ];
        for (text, line, reason) in cases {
            let err = parse(text.as_bytes()).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.reason.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn quote_round_trips_nasty_values() {
        let values: Vec<Vec<u8>> = vec![
            b"plain".to_vec(),
            b"".to_vec(),
            b"it's \"quoted\" $HOME `x` \\n \\ \\\\".to_vec(),
            b"line1\nline2\n".to_vec(),
            b"it's\nmulti \\ line".to_vec(),
            b"  spaces  ".to_vec(),
            b"# not a comment".to_vec(),
            vec![0xff, 0xfe, b'\'', 0x80, b'\r'],
        ];
        let mut text = Vec::new();
        for (i, value) in values.iter().enumerate() {
            text.extend_from_slice(format!("V{i}=").as_bytes());
            text.extend_from_slice(&quote(value));
            text.push(b'\n');
        }
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.len(), values.len());
        for (i, (key, value)) in parsed.into_iter().enumerate() {
            assert_eq!(key, format!("V{i}"));
            assert_eq!(value, values[i], "value {i}");
        }
    }
}
