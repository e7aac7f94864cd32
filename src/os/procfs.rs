//! The process table as /proc shows it: for each process its state, parent and process group.
//! Used where the kernel tells the harness nothing: whether a script's group still has a
//! living member (its members are not our children), and which processes are our children
//! when `/proc/self/task/*/children` says nothing.

use std::path::Path;

use nix::unistd::Pid;

/// One line of the process table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pub pid: Pid,
    pub parent: Pid,
    pub group: Pid,
    /// A zombie or a dead process: it has exited but not been reaped.
    pub exited: bool,
}

/// Every process /proc lists, or None when /proc cannot be read.
pub fn processes() -> Option<Vec<Process>> {
    let names = super::dir::names(Path::new("/proc")).ok()?;
    Some(
        names
            .into_iter()
            .filter_map(|name| {
                let pid = name.to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                parse_stat(pid, &stat)
            })
            .collect(),
    )
}

/// `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses, so the fields are
/// counted from the last `)`.
fn parse_stat(pid: i32, stat: &str) -> Option<Process> {
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some(Process {
        pid: Pid::from_raw(pid),
        parent: Pid::from_raw(parent),
        group: Pid::from_raw(group),
        exited: matches!(state, "Z" | "X"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_from_the_last_parenthesis() {
        let process = parse_stat(42, "42 (a) b (c) Z 7 9 9 0 -1").unwrap();
        assert_eq!(process.parent, Pid::from_raw(7));
        assert_eq!(process.group, Pid::from_raw(9));
        assert!(process.exited);
    }

    #[test]
    fn this_process_is_listed_with_its_parent() {
        let me = nix::unistd::getpid();
        let listed = processes().expect("/proc is readable");
        let mine = listed
            .iter()
            .find(|p| p.pid == me)
            .expect("this process is listed");
        assert_eq!(mine.parent, nix::unistd::getppid());
        assert!(!mine.exited);
    }
}
