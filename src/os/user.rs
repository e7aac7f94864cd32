//! `--user USER[:GROUP]` (docs/reference.md §13.1): who the command runs as, looked up before
//! anything runs, and the switch itself, made in the process that becomes the command.
//!
//! The lookup reads `/etc/passwd` and `/etc/group` itself, as gosu (runc's user package) does:
//! a scratch image with those two files is enough, the static and the dynamic build find the
//! same users, and it costs a few thousand instructions where libc's getpwnam and getgrouplist
//! (with musl's probe for nscd) cost a hundred thousand. A name must be there; a number need not
//! (Docker's rule: a uid without an entry gets gid 0 and HOME `/`).
//!
//! The switch is three raw system calls, groups then gid then uid, never libc's wrappers: musl
//! and glibc make `setuid` and friends change every thread of the process by signalling each
//! one, and under `--init` the command is started by a `CLONE_VM` child that shares the
//! harness's memory, whose thread list would be the harness's own (registry, watch) threads.
//! The kernel's calls change only the calling task. Everything the child needs is computed
//! here, before the clone: it allocates nothing.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::libc;
use nix::unistd::{Gid, Uid};

use crate::error::Error;
use crate::os::read_file_at_most;

/// Who the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// `USER[:GROUP]` as given, for messages.
    pub given: String,
    pub uid: Uid,
    pub gid: Gid,
    /// The supplementary groups (USER's groups, or GROUP alone).
    pub groups: Vec<Gid>,
    /// USER's home, `/` without an entry.
    pub home: PathBuf,
    /// The harness already runs as USER and GROUP (not root): nothing to switch.
    pub unchanged: bool,
}

/// A step of the switch that failed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    pub step: &'static str,
    pub errno: Errno,
}

impl Switch {
    /// Looks `USER[:GROUP]` up; an unknown name, or a switch the harness may not make, is a
    /// usage error (125) naming what was given.
    pub fn lookup(given: &str) -> Result<Switch, Error> {
        let usage = |reason: String| Error::Usage(format!("--user {given}: {reason}"));
        let (user, group) = match given.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (given, None),
        };
        if user.is_empty() || group.is_some_and(str::is_empty) {
            return Err(usage("USER[:GROUP], each a name or a number".into()));
        }
        let entry = find_user(user).map_err(usage)?;
        let uid = match (&entry, user.parse::<u32>()) {
            (Some(entry), _) => entry.uid,
            (None, Ok(number)) => Uid::from_raw(number),
            (None, Err(_)) => return Err(usage("no such user in /etc/passwd".into())),
        };
        let (gid, groups) = match group {
            Some(group) => {
                let gid = find_group(group).map_err(usage)?;
                (gid, vec![gid])
            }
            None => match &entry {
                Some(entry) => (entry.gid, groups_of(entry).map_err(usage)?),
                // As `docker run --user 1234` does.
                None => (Gid::from_raw(0), vec![Gid::from_raw(0)]),
            },
        };
        let home = entry
            .as_ref()
            .map_or_else(|| PathBuf::from("/"), |entry| entry.home.clone());
        let unchanged = !Uid::effective().is_root();
        if unchanged && (uid != Uid::current() || gid != Gid::current()) {
            return Err(usage("cannot switch user: not running as root".into()));
        }
        Ok(Switch {
            given: given.to_owned(),
            uid,
            gid,
            groups,
            home,
            unchanged,
        })
    }

    /// The command's environment: `HOME` is USER's, unless an environment directory set it
    /// (`home_from_directory`) or the harness already runs as USER, as gosu does.
    pub fn environment(
        &self,
        mut env: Vec<(OsString, OsString)>,
        home_from_directory: bool,
    ) -> Vec<(OsString, OsString)> {
        // A switch that changes nothing (the harness already runs as USER) changes no HOME.
        if !home_from_directory && !self.unchanged {
            env.retain(|(name, _)| name != "HOME");
            env.push(("HOME".into(), self.home.clone().into_os_string()));
        }
        env
    }

    /// `--plan`'s line.
    pub fn describe(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(|gid| gid.to_string()).collect();
        format!(
            "user {}: uid {}, gid {}, groups {}",
            self.given,
            self.uid,
            self.gid,
            groups.join(",")
        )
    }

    /// Makes this process USER: groups, then gid, then uid, each all or nothing. Only the
    /// calling task changes (see the module's doc). Async-signal-safe and allocation-free, for
    /// the child between clone and exec.
    pub fn switch(&self) -> Result<(), Failed> {
        if self.unchanged {
            return Ok(());
        }
        let (uid, gid) = (self.uid.as_raw(), self.gid.as_raw());
        // SAFETY: raw system calls with plain integers and a pointer to `groups`, a slice of
        // gid_t that lives as long as self; none of them touches memory otherwise.
        unsafe {
            check(
                "setgroups",
                libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()),
            )?;
            check(
                "setresgid",
                libc::syscall(libc::SYS_setresgid, gid, gid, gid),
            )?;
            check(
                "setresuid",
                libc::syscall(libc::SYS_setresuid, uid, uid, uid),
            )?;
        }
        Ok(())
    }

    /// The error of a switch that failed: 126, naming USER and the reason.
    pub fn failed(&self, failed: Failed) -> Error {
        Error::CommandNotExecutable {
            program: format!("--user {}", self.given),
            reason: format!(
                "cannot switch user: {}: {}",
                failed.step,
                failed.errno.desc().to_lowercase()
            ),
        }
    }
}

fn check(step: &'static str, result: libc::c_long) -> Result<(), Failed> {
    if result == -1 {
        return Err(Failed {
            step,
            errno: Errno::last(),
        });
    }
    Ok(())
}

/// An entry of /etc/passwd: what the switch needs of it.
struct PasswdEntry {
    name: String,
    uid: Uid,
    gid: Gid,
    home: PathBuf,
}

/// The files are small; one past this is not a passwd or group file.
const ACCOUNTS_LIMIT: usize = 16 * 1024 * 1024;

fn read_accounts(path: &str) -> Result<Vec<u8>, String> {
    let failed = |reason: String| format!("reading {path}: {reason}");
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        // No file is no entry: a scratch image may have none.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(failed(super::io_reason(&err))),
    };
    read_file_at_most(file, ACCOUNTS_LIMIT)
        .map_err(|err| failed(super::io_reason(&err)))?
        .ok_or_else(|| failed("too large".into()))
}

/// The entry lines of a passwd or group file (comments and blank lines skipped), each as its
/// fields: bytes, split without allocating, since the files can be long.
fn entries(text: &[u8]) -> impl Iterator<Item = impl Iterator<Item = &[u8]>> {
    text.split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty() && line[0] != b'#')
        .map(|line| line.trim_ascii_end().split(|byte| *byte == b':'))
}

fn number(field: &[u8]) -> Option<u32> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// USER's entry: by name, or (a number) by uid; None for a number without one.
fn find_user(user: &str) -> Result<Option<PasswdEntry>, String> {
    let passwd = read_accounts("/etc/passwd")?;
    let by_uid = user.parse::<u32>().ok();
    let found = entries(&passwd).find_map(|mut fields| {
        let name = fields.next()?;
        if by_uid.is_none() && name != user.as_bytes() {
            return None;
        }
        let uid = number(fields.nth(1)?)?;
        if by_uid.is_some_and(|wanted| wanted != uid) {
            return None;
        }
        let gid = number(fields.next()?)?;
        let home = fields.nth(1)?;
        Some(PasswdEntry {
            name: String::from_utf8_lossy(name).into_owned(),
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(gid),
            home: PathBuf::from(OsStr::from_bytes(home)),
        })
    });
    Ok(found)
}

/// GROUP's gid: by name, or a number (which need not have an entry).
fn find_group(group: &str) -> Result<Gid, String> {
    if let Ok(number) = group.parse::<u32>() {
        return Ok(Gid::from_raw(number));
    }
    let groups = read_accounts("/etc/group")?;
    let found = entries(&groups).find_map(|mut fields| {
        (fields.next()? == group.as_bytes())
            .then(|| number(fields.nth(1)?).map(Gid::from_raw))
            .flatten()
    });
    found.ok_or_else(|| format!("{group}: no such group in /etc/group"))
}

/// As initgroups: USER's primary group, then every group of /etc/group that lists USER.
fn groups_of(entry: &PasswdEntry) -> Result<Vec<Gid>, String> {
    let groups = read_accounts("/etc/group")?;
    let name = entry.name.as_bytes();
    let mut found = vec![entry.gid];
    for mut fields in entries(&groups) {
        let (Some(gid), Some(members)) = (fields.nth(2), fields.next()) else {
            continue;
        };
        let listed = members
            .split(|byte| *byte == b',')
            .any(|member| member.trim_ascii() == name);
        let Some(gid) = listed.then(|| number(gid)).flatten() else {
            continue;
        };
        let gid = Gid::from_raw(gid);
        if !found.contains(&gid) {
            found.push(gid);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_by_name_and_number_and_a_uid_without_an_entry() {
        let root = Switch::lookup("root").unwrap();
        assert_eq!((root.uid.as_raw(), root.gid.as_raw()), (0, 0));
        assert_eq!(Switch::lookup("0").unwrap().home, root.home);
        if Uid::effective().is_root() {
            let nobody = Switch::lookup("4242").unwrap();
            assert_eq!(nobody.gid.as_raw(), 0);
            assert_eq!(nobody.home, PathBuf::from("/"));
            let with_group = Switch::lookup("4242:4343").unwrap();
            assert_eq!(with_group.groups, vec![Gid::from_raw(4343)]);
        }
    }

    #[test]
    fn unknown_names_are_usage_errors_naming_them() {
        let err = Switch::lookup("no-such-user-here").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--user no-such-user-here: no such user in /etc/passwd"
        );
        let err = Switch::lookup("root:no-such-group-here").unwrap_err();
        assert!(err.to_string().contains("no such group"), "{err}");
        assert!(Switch::lookup(":0").is_err());
        assert!(Switch::lookup("root:").is_err());
    }
}
