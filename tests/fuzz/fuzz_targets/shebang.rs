//! Shebang lines. By the first byte:
//! - a file's first bytes (src/os/shebang.rs): the interpreter and argument the loop check reads
//!   are those the kernel gives (fs/binfmt_script.c, modelled below: only spaces and tabs
//!   separate, a NUL ends the line, the first 255 bytes when there is no newline in 256);
//! - a `#!` line's one argument: split as the harness splits it (src/config/cli.rs
//!   split_shebang_options: the rest of argv kept, the pieces join back to the same words) and
//!   as the loop check reads it (src/exec.rs harness_words), the two agreeing.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use envharness::fuzzing::{harness_words, interpreter_line, split_shebang};
use libfuzzer_sys::fuzz_target;

const BINPRM_BUF_SIZE: usize = 256;

fn spacetab(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// The first index in first..=last that is not a space or tab.
fn next_non_spacetab(buf: &[u8], first: usize, last: usize) -> Option<usize> {
    (first..=last).find(|at| !spacetab(buf[*at]))
}

/// The first index in first..=last that is a space, a tab or a NUL.
fn next_terminator(buf: &[u8], first: usize, last: usize) -> Option<usize> {
    (first..=last).find(|at| spacetab(buf[*at]) || buf[*at] == 0)
}

/// C string: up to the first NUL.
fn c_string(bytes: &[u8]) -> Vec<u8> {
    bytes.split(|b| *b == 0).next().unwrap_or_default().to_vec()
}

/// load_script() of Linux 5.1 and later: the interpreter and its optional argument, or None
/// (ENOEXEC) when the file is not a script the kernel runs.
fn kernel(head: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let mut buf = [0u8; BINPRM_BUF_SIZE];
    let len = head.len().min(BINPRM_BUF_SIZE);
    buf[..len].copy_from_slice(&head[..len]);
    if buf[0] != b'#' || buf[1] != b'!' {
        return None;
    }
    let buf_end = BINPRM_BUF_SIZE - 1;
    let mut i_end = match buf.iter().position(|b| *b == b'\n') {
        Some(newline) => newline,
        None => {
            let start = next_non_spacetab(&buf, 2, buf_end)?;
            next_terminator(&buf, start, buf_end)?;
            buf_end
        }
    };
    while spacetab(buf[i_end - 1]) {
        i_end -= 1;
    }
    let i_name = next_non_spacetab(&buf, 2, i_end)?;
    if i_name == i_end {
        return None;
    }
    let i_sep = next_terminator(&buf, i_name, i_end);
    let i_arg = i_sep
        .filter(|sep| buf[*sep] != 0)
        .and_then(|sep| next_non_spacetab(&buf, sep, i_end));
    buf[i_end] = 0;
    let argument = i_arg.map(|arg| {
        buf[i_sep.unwrap()] = 0;
        c_string(&buf[arg..])
    });
    // An empty name (a NUL right after the blanks) is no interpreter: exec fails with ENOENT.
    let interpreter = c_string(&buf[i_name..]);
    (!interpreter.is_empty()).then_some((interpreter, argument))
}

fn argument(argument: &[u8]) {
    if argument.is_empty() {
        // The kernel passes no empty argument: none at all is no word.
        assert_eq!(harness_words(Vec::new()), Some(Vec::new()));
        return;
    }
    let tail = [OsString::from("/app/script"), OsString::from("a b")];
    let mut args = vec![
        OsString::from("envharness"),
        OsString::from_vec(argument.to_vec()),
    ];
    args.extend(tail.iter().cloned());
    let split = split_shebang(args.clone());
    if let Ok(split) = &split {
        assert_eq!(split[0], "envharness");
        assert!(split.ends_with(&tail), "{split:?}");
        let words = &split[1..split.len() - tail.len()];
        let looks_split = argument.first() == Some(&b'-') && argument.iter().any(|b| spacetab(*b));
        if !looks_split {
            assert_eq!(split, &args);
        } else {
            let words: Vec<String> = words
                .iter()
                .map(|word| word.to_str().unwrap().to_owned())
                .collect();
            let joined = shell_words::join(&words);
            assert_eq!(shell_words::split(&joined).unwrap(), words, "{joined:?}");
        }
    }
    // The loop check reads the argument as the harness will.
    let read = split.ok().map(|split| {
        split[1..split.len() - tail.len()]
            .iter()
            .map(|word| word.as_bytes().to_vec())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        harness_words(argument.to_vec()),
        read,
        "{:?}",
        String::from_utf8_lossy(argument)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        assert_eq!(
            interpreter_line(rest),
            kernel(rest),
            "{:?}",
            String::from_utf8_lossy(rest)
        );
    } else {
        argument(rest);
    }
});
