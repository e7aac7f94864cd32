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
    parse_interpreter_line(&read_head(path)?)
}

/// The `#!` line of a file that starts with `head`, as the kernel reads it (fs/binfmt_script.c):
/// only spaces and tabs separate the interpreter from its argument, a NUL ends either, and when
/// its first [`HEAD`] bytes hold no newline, the line is the first 255 of them (and no script at
/// all when the interpreter's name does not end within them: it may have been cut short).
pub(crate) fn parse_interpreter_line(head: &[u8]) -> Option<InterpreterLine> {
    // The kernel's buffer: NULs after a shorter file (so without a newline, a short file's
    // trailing blanks are not trimmed: the line ends in NULs).
    let mut buffer = [0u8; HEAD];
    let len = head.len().min(HEAD);
    buffer[..len].copy_from_slice(&head[..len]);
    let rest = buffer.strip_prefix(b"#!")?;
    let line = match rest.iter().position(|b| *b == b'\n') {
        Some(newline) => &rest[..newline],
        None => {
            let name = rest.iter().position(|b| !is_blank(*b))?;
            rest[name..].iter().position(|b| is_blank(*b) || *b == 0)?;
            &rest[..rest.len() - 1]
        }
    };
    let end = line.iter().rposition(|b| !is_blank(*b))? + 1;
    let line = &line[..end];
    let line = &line[line.iter().position(|b| !is_blank(*b))?..];
    let separator = line.iter().position(|b| is_blank(*b) || *b == 0);
    let interpreter = &line[..separator.unwrap_or(line.len())];
    let argument = separator
        .filter(|at| line[*at] != 0)
        .and_then(|at| {
            let after = &line[at..];
            after
                .iter()
                .position(|b| !is_blank(*b))
                .map(|start| &after[start..])
        })
        .map(|argument| until_nul(argument).to_vec());
    (!interpreter.is_empty()).then(|| InterpreterLine {
        interpreter: interpreter.to_vec(),
        argument,
    })
}

/// What separates the words of a `#!` line for the kernel.
fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// A C string's bytes: up to the first NUL.
fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// How much of a file the kernel reads for its `#!` line (BINPRM_BUF_SIZE).
const HEAD: usize = 256;

/// The first [`HEAD`] bytes of the file (fewer when it is shorter), or None when it cannot be
/// read.
fn read_head(path: &Path) -> Option<Vec<u8>> {
    let mut head = [0u8; HEAD];
    let mut file = File::open(path).ok()?;
    let len = file.read(&mut head).ok()?;
    Some(head[..len].to_vec())
}

/// The first line (without `\n`), or None when the file cannot be read. The kernel reads no
/// more than this of a `#!` line (BINPRM_BUF_SIZE).
fn read_first_line(path: &Path) -> Option<Vec<u8>> {
    let head = read_head(path)?;
    let end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    Some(head[..end].to_vec())
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
        let line = parse_interpreter_line(b"#! /usr/bin/env  -S envharness -e x  \n").unwrap();
        assert_eq!(line.interpreter, b"/usr/bin/env");
        assert_eq!(line.argument.as_deref(), Some(&b"-S envharness -e x"[..]));
        let bare = parse_interpreter_line(b"#!/bin/sh").unwrap();
        assert_eq!(bare.argument, None);
        assert_eq!(parse_interpreter_line(b"echo"), None);
        assert_eq!(parse_interpreter_line(b"#!"), None);
    }

    /// The head of a file of 256 bytes or more whose first 256 hold no newline: `line` padded
    /// with blanks so that `last` is its 256th byte.
    fn without_newline(line: &[u8], last: &[u8]) -> Vec<u8> {
        let mut head = line.to_vec();
        head.resize(HEAD - last.len(), b' ');
        head.extend_from_slice(last);
        head.extend_from_slice(b" and more of the file");
        head
    }

    #[test]
    fn the_line_is_read_as_the_kernel_reads_it() {
        // Found by fuzzing (tests/fuzz shebang), against a model of fs/binfmt_script.c.
        // Only spaces and tabs separate: a \r stays in the interpreter's name, a form feed in
        // its argument.
        let crlf = parse_interpreter_line(b"#!/bin/sh\r\necho\r\n").unwrap();
        assert_eq!(crlf.interpreter, b"/bin/sh\r");
        let feed = parse_interpreter_line(b"#!/bin/sh -e\x0c-x\x0c\n").unwrap();
        assert_eq!(feed.argument.as_deref(), Some(&b"-e\x0c-x\x0c"[..]));
        // A NUL ends the argument: a `--` after it never reaches envharness, which would then
        // run the script with itself again.
        let nul =
            parse_interpreter_line(b"#!/usr/local/bin/envharness -e x\0 -- /bin/sh\n").unwrap();
        assert_eq!(nul.argument.as_deref(), Some(&b"-e x"[..]));
        let nul = parse_interpreter_line(b"#!/usr/local/bin/envharness\0-- /bin/sh\n").unwrap();
        assert_eq!(nul.interpreter, b"/usr/local/bin/envharness");
        assert_eq!(nul.argument, None);
        // Without a newline in the first 256 bytes the kernel reads 255 of them.
        let cut = without_newline(b"#!/usr/local/bin/envharness -e x", b"-- s");
        let line = parse_interpreter_line(&cut).unwrap();
        let argument = line.argument.unwrap();
        assert!(argument.starts_with(b"-e x ") && argument.ends_with(b" --"));
        // A file without a newline: its trailing blanks are part of the argument.
        let bare = parse_interpreter_line(b"#!/usr/local/bin/envharness -e x\\ ").unwrap();
        assert_eq!(bare.argument.as_deref(), Some(&b"-e x\\ "[..]));
        // ... and an interpreter whose name does not end within them is no script.
        assert_eq!(
            parse_interpreter_line(&without_newline(b"#!", b"/bin/sh")),
            None
        );
    }

    #[test]
    fn interpreter_is_the_first_word_after_the_bang() {
        assert_eq!(interpreter(b"#! /usr/bin/env python3 -u"), "/usr/bin/env");
        assert_eq!(interpreter(b"#!/nonexistent/sh"), "/nonexistent/sh");
    }
}
