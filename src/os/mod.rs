//! What the harness asks of the kernel beyond starting processes: its signals ([`signals`]),
//! waiting on many descriptors at once ([`poll`]), the process table ([`procfs`], [`children`])
//! and why a file could not be executed ([`shebang`]). A floor of its own: it knows nothing of
//! scripts, the command or the registry.

pub(crate) mod children;
pub(crate) mod poll;
pub(crate) mod procfs;
pub(crate) mod shebang;
pub mod signals;

use std::ffi::CString;

/// A C string for execve and posix_spawn: a path, an argument or a `NAME=VALUE` string.
pub fn c_string(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("paths, arguments and checked environment strings contain no NUL")
}
