//! The harness's children: reaping those that exited or stopped ([`reap`]), and listing those
//! left ([`children`]) for the end-of-run cleanup of orphans.

use std::fs;
use std::path::Path;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::procfs;

/// What one [`reap`] found.
pub struct Reaped {
    /// Each child that exited, was killed or stopped, in the order waitpid reported them.
    pub statuses: Vec<WaitStatus>,
    /// Whether any child is still there (running or stopped).
    pub children_left: bool,
}

/// Reaps every child that has exited and reports those that stopped, until waitpid has
/// nothing more: SIGCHLDs coalesce, so one signal may stand for many children. Never blocks.
pub fn reap() -> Reaped {
    let mut statuses = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::StillAlive) => {
                return Reaped {
                    statuses,
                    children_left: true,
                }
            }
            Ok(status) => statuses.push(status),
            // ECHILD: no child left at all.
            Err(_) => {
                return Reaped {
                    statuses,
                    children_left: false,
                }
            }
        }
    }
}

/// The harness's children. `/proc/self/task/*/children` is quick but best-effort (proc(5))
/// and absent without CONFIG_PROC_CHILDREN; when it names none, every process's parent is
/// read from /proc instead. (The caller knows from waitpid that there are some.)
pub fn children() -> Vec<Pid> {
    let listed = children_from_task_lists();
    if listed.is_empty() {
        children_from_proc_scan()
    } else {
        listed
    }
}

fn children_from_task_lists() -> Vec<Pid> {
    let tasks = Path::new("/proc/self/task");
    let Ok(names) = super::dir::names(tasks) else {
        return Vec::new();
    };
    names
        .into_iter()
        .filter_map(|task| fs::read_to_string(tasks.join(task).join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn children_from_proc_scan() -> Vec<Pid> {
    let me = nix::unistd::getpid();
    procfs::processes()
        .unwrap_or_default()
        .into_iter()
        .filter(|process| process.parent == me)
        .map(|process| process.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_of_listing_children_find_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawning sleep");
        let pid = Pid::from_raw(child.id() as i32);
        let scanned = children_from_proc_scan();
        let listed = children_from_task_lists();
        child.kill().expect("killing sleep");
        child.wait().expect("reaping sleep");
        assert!(scanned.contains(&pid), "{pid} not in {scanned:?}");
        assert!(listed.contains(&pid), "{pid} not in {listed:?}");
    }
}
