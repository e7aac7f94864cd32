//! What the Rust runtime does before `main`, done by the harness's own C `main` instead
//! (main.rs is `#![no_main]`): the standard streams, SIGPIPE and the arguments; and the
//! environment the harness started with, read in one go.
//!
//! Why: the runtime also gives the main thread an alternate signal stack and handlers that turn
//! a stack overflow into a message (a mapping, a guard page, `sigaltstack`, four `sigaction`s),
//! 13 system calls in all and 8 µs of the 0.55 ms an `--init -- true` takes
//! (docs/performance.md). The harness's recursion is bounded (a template's, by its fuel), and
//! an overflow still ends the process: by SIGSEGV, without the message.

use std::ffi::{c_char, c_int, CStr, OsString};
use std::os::unix::ffi::OsStringExt;

use nix::libc;

/// Prepares the process as the runtime would, and returns argv. To be called first in `main`.
///
/// # Safety
/// `argc` and `argv` are what the C library passed to `main`.
pub unsafe fn prepare(argc: c_int, argv: *const *const c_char) -> Vec<OsString> {
    open_closed_standard_streams();
    super::signals::ignore_sigpipe();
    // SAFETY: the caller's terms.
    unsafe { arguments(argc, argv) }
}

/// A closed stdin, stdout or stderr is opened on /dev/null, as the runtime does: otherwise the
/// next file the harness opens would take its number, and what it writes as its messages would
/// go into that file.
fn open_closed_standard_streams() {
    let mut streams = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll on three pollfd structs we own; with no events asked, it returns at once.
    let polled = unsafe { libc::poll(streams.as_mut_ptr(), 3, 0) } != -1;
    for stream in streams {
        let closed = if polled {
            stream.revents & libc::POLLNVAL != 0
        } else {
            // SAFETY: F_GETFD only reads the descriptor's flags.
            let flags = unsafe { libc::fcntl(stream.fd, libc::F_GETFD) };
            flags == -1 && nix::errno::Errno::last() == nix::errno::Errno::EBADF
        };
        // SAFETY: open with a constant path; the lowest free number is the closed stream's.
        if closed && unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } == -1 {
            // As the runtime: no way to say why, nowhere safe to say it.
            std::process::abort();
        }
    }
}

/// argv as owned strings.
///
/// # Safety
/// `argc` and `argv` are what the C library passed to `main`.
unsafe fn arguments(argc: c_int, argv: *const *const c_char) -> Vec<OsString> {
    (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| {
            // SAFETY: argv holds argc pointers to NUL-terminated strings that live as long as
            // the process.
            let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
            OsString::from_vec(arg.to_bytes().to_vec())
        })
        .collect()
}

/// The environment the process started with, in its order, as std's `vars_os` reads it: a name
/// may begin with `=`, a string without another `=` is left out. In a vector of the right size
/// from the start, where std's grows one variable at a time and is then copied: three blocks,
/// 6 KiB of memory touched for 35 variables, against one of 1.7 KiB.
pub fn environment() -> Vec<(OsString, OsString)> {
    extern "C" {
        static environ: *const *const c_char;
    }
    let strings = || {
        // SAFETY: nothing in the harness changes its environment (no setenv, putenv), so
        // `environ` is the NULL-terminated array of NUL-terminated strings the process started
        // with, and stays so.
        let mut next = unsafe { environ };
        std::iter::from_fn(move || {
            // SAFETY: as above; `next` stops at the terminating NULL.
            let string = unsafe { next.as_ref().filter(|s| !s.is_null())? };
            next = unsafe { next.add(1) };
            Some(unsafe { CStr::from_ptr(*string) }.to_bytes())
        })
    };
    let mut variables = Vec::with_capacity(strings().count());
    for string in strings() {
        let Some(at) = string.iter().skip(1).position(|byte| *byte == b'=') else {
            continue;
        };
        let (name, value) = string.split_at(at + 1);
        variables.push((
            OsString::from_vec(name.to_vec()),
            OsString::from_vec(value[1..].to_vec()),
        ));
    }
    variables
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_environment_is_what_std_reads() {
        assert_eq!(
            super::environment(),
            std::env::vars_os().collect::<Vec<_>>()
        );
    }
}
