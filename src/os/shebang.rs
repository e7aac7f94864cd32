//! Why an existing file could not be executed. The kernel answers ENOEXEC or ENOENT and leaves the
//! reader to guess; the first line of the file says which of the usual mistakes it is. Scripts and
//! the command share these words (docs/reference.md §3.4 and §4), and neither is ever retried
//! through `/bin/sh`.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use nix::libc;

/// A short reason for an exec failure of `path`, read from its `#!` line when that explains it.
pub fn explain_exec_error(path: &Path, err: &io::Error) -> String {
    let first_line = read_first_line(path);
    match (err.raw_os_error(), first_line.as_deref()) {
        (Some(libc::ENOEXEC), Some(line)) if !line.starts_with(b"#!") => {
            "not a script (no #! line) or binary".into()
        }
        (Some(libc::ENOEXEC | libc::ENOENT), Some(line)) if line.ends_with(b"\r") => {
            "Windows line endings in the #! line (the interpreter name ends in \\r)".into()
        }
        (Some(libc::ENOENT), Some(line)) if line.starts_with(b"#!") => {
            format!(
                "interpreter {} (from its #! line) not found",
                interpreter(line)
            )
        }
        (Some(libc::EACCES), _) => "permission denied".into(),
        _ => err.to_string().to_lowercase(),
    }
}

/// A `#!` line as the kernel reads it: the interpreter, and everything after it (trimmed) as
/// one argument, or None when nothing follows.
#[derive(Debug, PartialEq, Eq)]
pub struct InterpreterLine {
    pub interpreter: Vec<u8>,
    pub argument: Option<Vec<u8>>,
}

/// The `#!` line of `path`, or None when it has none (or cannot be read).
pub fn interpreter_line(path: &Path) -> Option<InterpreterLine> {
    parse_interpreter_line(&read_first_line(path)?)
}

pub(crate) fn parse_interpreter_line(line: &[u8]) -> Option<InterpreterLine> {
    let rest = line.strip_prefix(b"#!")?.trim_ascii();
    let end = rest
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    let (interpreter, argument) = rest.split_at(end);
    let argument = argument.trim_ascii();
    (!interpreter.is_empty()).then(|| InterpreterLine {
        interpreter: interpreter.to_vec(),
        argument: (!argument.is_empty()).then(|| argument.to_vec()),
    })
}

/// The first line (without `\n`), or None when the file cannot be read. The kernel reads no
/// more than this of a `#!` line (BINPRM_BUF_SIZE).
fn read_first_line(path: &Path) -> Option<Vec<u8>> {
    let mut head = [0u8; HEAD];
    let mut file = File::open(path).ok()?;
    let len = file.read(&mut head).ok()?;
    Some(first_line(&head[..len]).to_vec())
}

/// How much of a file the kernel reads for its `#!` line (BINPRM_BUF_SIZE).
pub(crate) const HEAD: usize = 256;

/// The first line of what was read of a file, without `\n`.
pub(crate) fn first_line(head: &[u8]) -> &[u8] {
    let end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    &head[..end]
}

/// The interpreter path of a `#!` line: its first word.
fn interpreter(line: &[u8]) -> String {
    let rest = line[2..].trim_ascii_start();
    let end = rest
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_passes_one_argument_after_the_interpreter() {
        let line = parse_interpreter_line(b"#! /usr/bin/env  -S envharness -e x  ").unwrap();
        assert_eq!(line.interpreter, b"/usr/bin/env");
        assert_eq!(line.argument.as_deref(), Some(&b"-S envharness -e x"[..]));
        let bare = parse_interpreter_line(b"#!/bin/sh").unwrap();
        assert_eq!(bare.argument, None);
        assert_eq!(parse_interpreter_line(b"echo"), None);
        assert_eq!(parse_interpreter_line(b"#!"), None);
    }

    #[test]
    fn interpreter_is_the_first_word_after_the_bang() {
        assert_eq!(interpreter(b"#! /usr/bin/env python3 -u"), "/usr/bin/env");
        assert_eq!(interpreter(b"#!/nonexistent/sh"), "/nonexistent/sh");
    }
}
