//! Which processes are the harness's children, for the end-of-run cleanup of orphans.

use std::fs;

use nix::unistd::Pid;

use super::procfs;

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
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
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
