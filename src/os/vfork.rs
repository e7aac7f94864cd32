//! Starting a child that shares the harness's memory until it execs: `clone` with `CLONE_VM`
//! and `CLONE_VFORK`, as posix_spawn does, on a stack of the harness's own. Scripts and the
//! command both start this way.
//!
//! Not posix_spawn: musl's blocks every signal around the clone, opens a pipe to learn the
//! exec's error, resets every handled signal in the child and allocates its file actions (a
//! mapping of its own, made and unmapped for each script), about a dozen system calls a start
//! that the child here does not make. And glibc and musl leave their internal real-time
//! signals ignored in a posix_spawn child (and refuse to reset them), where the command must
//! start with the dispositions the harness started with. Not fork or std's `Command` either:
//! a `CLONE_VM` child copies no page tables and causes no copy-on-write faults.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::libc;
use nix::sched::{clone, CloneCb, CloneFlags};
use nix::unistd::Pid;

/// The size of a child's stack; the child needs well under a page of it.
const CHILD_STACK: usize = 16 * 1024;

/// The children's stack, in the harness's zeroed data: a child touches only the page or so it
/// uses. On the caller's stack, a frame this large is probed page by page (stack-clash
/// protection), four pages touched at each start; a heap block this size was a fresh mapping
/// (mmap, munmap) for each start.
static STACK: SharedStack = SharedStack {
    bytes: UnsafeCell::new([0; CHILD_STACK]),
    in_use: AtomicBool::new(false),
};

struct SharedStack {
    bytes: UnsafeCell<[u8; CHILD_STACK]>,
    /// Claimed by a start until its child has exec'd or exited.
    in_use: AtomicBool,
}

// SAFETY: `bytes` is only reached by the start that has set `in_use` (see `spawn`).
unsafe impl Sync for SharedStack {}

/// Starts a child that runs `child`, which execs or returns a nonzero code that says why it
/// could not (the child then exits 127). Returns the child's pid and that code, 0 when the
/// exec succeeded; the caller reaps a child that failed.
///
/// # Safety
/// `child` runs in the caller's memory, on a stack of its own, while the calling thread is
/// suspended; the harness's other threads (the registry's worker, a template's) go on running
/// in that memory. So it may only read what it borrows and make system calls that concern the
/// child alone: it must not allocate, take a lock or write to memory it shares, or it could
/// wait on a lock a running thread holds or see the allocator's state change under it; and a
/// libc call that acts on every thread (musl's setuid and the like) would act on the
/// harness's.
pub unsafe fn spawn(child: impl Fn() -> u64) -> nix::Result<(Pid, u64)> {
    let failure = AtomicU64::new(0);
    // Only the loop's thread starts children, so the shared stack is free; were it not, a
    // start on another thread gets a stack of its own.
    let shared = !STACK.in_use.swap(true, Ordering::Acquire);
    let mut own = Vec::new();
    let stack: &mut [u8] = if shared {
        // SAFETY: claimed through `in_use` above, released below once the child is done.
        unsafe { &mut *STACK.bytes.get() }
    } else {
        own.resize(CHILD_STACK, 0);
        &mut own
    };
    let run: CloneCb = Box::new(|| {
        failure.store(child(), Ordering::SeqCst);
        // SAFETY: _exit ends the child without running exit handlers or flushing buffers,
        // which belong to the harness.
        unsafe { libc::_exit(127) }
    });
    // SAFETY: CLONE_VFORK suspends this thread until the child has exec'd or exited, so
    // `stack`, `failure` and what `child` borrows outlive the child's use of them; the caller
    // vouches for what the child does (above).
    let pid = unsafe {
        clone(
            run,
            stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    };
    if shared {
        STACK.in_use.store(false, Ordering::Release);
    }
    Ok((pid?, failure.load(Ordering::SeqCst)))
}

/// In a child: `from` becomes descriptor `to`, without close-on-exec. dup2 leaves the flag
/// set when the two are the same descriptor, so it is cleared then instead.
pub fn dup_onto(from: libc::c_int, to: libc::c_int) -> Result<(), nix::errno::Errno> {
    // SAFETY: dup2 and fcntl on descriptors, async-signal-safe system calls.
    let done = unsafe {
        if from == to {
            libc::fcntl(to, libc::F_SETFD, 0)
        } else {
            libc::dup2(from, to)
        }
    };
    if done == -1 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};

    #[test]
    fn a_child_that_cannot_exec_leaves_its_code_and_exits_127() {
        // SAFETY: the child only returns a number.
        let (pid, code) = unsafe { spawn(|| 42) }.unwrap();
        assert_eq!(code, 42);
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 127));
    }

    #[test]
    fn starts_on_several_threads_at_once_each_get_a_stack() {
        let threads: Vec<_> = (0..4u64)
            .map(|thread| {
                std::thread::spawn(move || {
                    for start in 0..50 {
                        let code = thread * 100 + start + 1;
                        // SAFETY: the child only returns a number.
                        let (pid, got) = unsafe { spawn(|| code) }.unwrap();
                        assert_eq!(got, code);
                        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 127));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
