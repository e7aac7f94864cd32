//! `--user USER[:GROUP]` (docs/reference.md §13.1), with real users and groups: each test runs
//! in a private mount namespace whose `/etc/passwd` and `/etc/group` are the test's own (bind
//! mounts, as root), and compares what the command sees (`/proc/self/status`: Uid, Gid,
//! Groups; HOME) with what Debian's gosu gives the same command for the same USER.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use nix::sys::signal::Signal;

use crate::kv_stores::*;
use crate::support::*;

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
appuser:x:1000:1000:App:/home/app:/bin/sh
other:x:1001:1001::/home/other:/bin/sh
";

const GROUP: &str = "\
root:x:0:
appuser:x:1000:
other:x:1001:
extra:x:2000:appuser,other
more:x:2001:appuser
";

/// Debian's gosu (`make test` installs it).
const GOSU: &str = "/usr/sbin/gosu";

/// What the command records: its ids, groups and HOME, on stdout (a user other than root may
/// not write in the test's directory).
const RECORDER: &str =
    "#!/bin/sh\ngrep -E '^(Uid|Gid|Groups):' /proc/self/status\necho \"HOME=$HOME\"\n";

/// A test whose directory anybody may read and run things from (the command runs as another
/// user), with the passwd and group files and the recorder.
fn users_test() -> Option<Test> {
    if !root_with_namespaces() {
        return None;
    }
    let t = Test::new();
    t.file("etc/passwd", PASSWD)
        .file("etc/group", GROUP)
        .script("recorder", RECORDER)
        .dir("env")
        .dir("export");
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o755)).expect("chmod");
    Some(t)
}

/// Whether the tests run as root and may make mount namespaces; says why not otherwise.
fn root_with_namespaces() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        unavailable("ENVHARNESS_TEST_SYSTEM", "not root: cannot switch users");
        return false;
    }
    let probe = output(Command::new("unshare").args(["--mount", "true"]));
    if !probe.is_ok_and(|out| out.status.success()) {
        unavailable("ENVHARNESS_TEST_SYSTEM", "unshare --mount is not permitted");
        return false;
    }
    true
}

/// `program ARGS` in a mount namespace of its own where the test's passwd and group files are
/// /etc/passwd and /etc/group.
fn with_users(t: &Test, program: &str, args: &[&str]) -> Command {
    let mut command = t.external("unshare");
    command
        .args([
            "--mount",
            "sh",
            "-c",
            "mount --bind \"$1\" /etc/passwd && mount --bind \"$2\" /etc/group && shift 2 && exec \"$@\"",
            "sh",
        ])
        .arg(t.path("etc/passwd"))
        .arg(t.path("etc/group"))
        .arg(program)
        .args(args);
    command
}

/// What the recorder printed when run by envharness with `args` (before `--`).
fn as_envharness(t: &Test, args: &[&str]) -> String {
    let recorder = t.p("recorder");
    let mut all = vec!["-x", "export", "-e", "env"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", recorder.as_str()]);
    let run = t.run_command(with_users(t, BIN, &all));
    run.success();
    run.stdout()
}

/// What the recorder printed when run by gosu as `user`.
fn as_gosu(t: &Test, user: &str) -> String {
    let recorder = t.p("recorder");
    let run = t.run_command(with_users(t, GOSU, &[user, recorder.as_str()]));
    run.success();
    run.stdout()
}

#[test]
fn the_command_gets_the_ids_groups_and_home_gosu_gives() {
    let Some(t) = users_test() else { return };
    // Whether the primary group is repeated among the supplementary ones is immaterial (gosu
    // leaves it out, initgroups puts it in): compared without it.
    let normalized = |recorded: String| {
        let gid = recorded
            .lines()
            .find_map(|line| line.strip_prefix("Gid:\t"))
            .and_then(|ids| ids.split('\t').next())
            .map(str::to_owned)
            .unwrap_or_default();
        recorded
            .lines()
            .map(|line| match line.strip_prefix("Groups:") {
                Some(groups) => {
                    let mut groups: Vec<&str> =
                        groups.split_whitespace().filter(|g| *g != gid).collect();
                    groups.sort_unstable();
                    format!("Groups: {}", groups.join(" "))
                }
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for user in [
        "appuser",
        "appuser:extra",
        "1000",
        "1000:2001",
        "other",
        "4242",
        "4242:4343",
        "appuser:4343",
    ] {
        let ours = as_envharness(&t, &["--user", user]);
        assert_eq!(
            normalized(ours.clone()),
            normalized(as_gosu(&t, user)),
            "--user {user}"
        );
        let supervised = as_envharness(&t, &["--init", "--user", user]);
        assert_eq!(supervised, ours, "--init --user {user}");
    }
    // The figures themselves, for one case: initgroups' groups, HOME from /etc/passwd.
    let ours = as_envharness(&t, &["--user", "appuser"]);
    assert!(ours.contains("Uid:\t1000\t1000\t1000\t1000\n"), "{ours}");
    assert!(ours.contains("Groups:\t1000 2000 2001"), "{ours}");
    assert!(ours.contains("HOME=/home/app\n"), "{ours}");
}

#[test]
fn home_set_by_an_environment_directory_is_kept() {
    let Some(mut t) = users_test() else { return };
    t.file("env/HOME", "/srv/app\n");
    t.env("HOME", "/root");
    let ours = as_envharness(&t, &["--user", "appuser"]);
    assert!(ours.contains("HOME=/srv/app\n"), "{ours}");
}

#[test]
fn scripts_run_as_root_and_the_command_and_its_restarts_as_the_user() {
    let Some(t) = users_test() else { return };
    t.script("export/who", "#!/bin/sh\nid -u\n")
        .script("env/SCRIPT_UID", "#!/bin/sh\nid -u\n")
        .file("env/A", "1\n")
        .file("conf.j2", "uid {{ SCRIPT_UID }} a {{ A }}\n")
        .dir("out");
    fs::set_permissions(t.path("out"), fs::Permissions::from_mode(0o777)).unwrap();
    // The command writes where anybody may, in files of its own.
    t.script(
        "cmd",
        "#!/bin/sh\ntrap 'exit 0' TERM\necho \"$(id -u) $SCRIPT_UID $A\" >> out/runs\n\
         touch \"out/ready-$A\"\nwhile :; do sleep 0.05; done\n",
    );
    let template = format!("{}:{}", t.p("conf.j2"), t.p("out/conf"));
    let cmd = t.p("cmd");
    let args = [
        "--init", "--watch", "0", "--user", "appuser", "-x", "export", "-e", "env", "-t",
        &template, "--", &cmd,
    ];
    let command = with_users(&t, BIN, &args);
    let child = spawn(&mut { command }).expect("spawning");
    let started = std::time::Instant::now();
    t.wait_for("out/ready-1");
    let conf = fs::metadata(t.path("out/conf")).expect("the template was written");
    assert_eq!((conf.uid(), conf.gid()), (1000, 1000), "DEST's owner");
    t.replace("env/A", "2\n");
    send(&child, Signal::SIGHUP);
    t.wait_for("out/ready-2");
    assert_eq!(t.lines("out/runs"), ["1000 0 1", "1000 0 2"]);
    send(&child, Signal::SIGTERM);
    let run = t.finish(child, started);
    run.success();
    assert_eq!(
        run.stderr.lines().filter(|line| *line == "0").count(),
        1,
        "the export script ran as root: {}",
        run.stderr
    );
}

#[test]
fn the_command_s_exit_status_and_signals_are_its_own() {
    let Some(t) = users_test() else { return };
    t.script("exits", "#!/bin/sh\nexit 7\n");
    let exits = t.p("exits");
    for init in [&[][..], &["--init"]] {
        let mut args = init.to_vec();
        args.extend_from_slice(&[
            "--user", "appuser", "-x", "export", "-e", "env", "--", &exits,
        ]);
        t.run_command(with_users(&t, BIN, &args)).status(7);
    }
}

#[test]
fn an_unknown_user_or_group_is_125_before_anything_runs() {
    let Some(t) = users_test() else { return };
    t.script("export/announce", "#!/bin/sh\ntouch announced\n");
    for (user, message) in [
        ("nosuch", "--user nosuch: no such user in /etc/passwd"),
        // (Not `nogroup`: glibc's nss-systemd makes that one up.)
        (
            "appuser:nosuchgroup",
            "--user appuser:nosuchgroup: nosuchgroup: no such group in /etc/group",
        ),
        ("appuser:", "--user appuser:: USER[:GROUP]"),
    ] {
        let recorder = t.p("recorder");
        let args = ["--user", user, "-x", "export", "-e", "env", "--", &recorder];
        t.run_command(with_users(&t, BIN, &args))
            .status(125)
            .error_line(&[message])
            .stdout_is("");
        assert!(!t.exists("announced"), "{user}: the export phase ran");
    }
}

#[test]
fn a_switch_the_kernel_refuses_is_126_naming_the_user_and_the_step() {
    // Root in a user namespace that maps only uid 0: the lookup succeeds (nobody is in the
    // machine's /etc/passwd), the switch itself fails.
    let probe = output(Command::new("unshare").args(["-r", "true"]));
    if !probe.is_ok_and(|out| out.status.success()) {
        unavailable("ENVHARNESS_TEST_SYSTEM", "unshare -r is not permitted");
        return;
    }
    for init in [false, true] {
        let t = Test::new();
        t.dir("env").dir("export");
        let mut args = vec!["-r", BIN, "--user", "nobody", "-x", "export", "-e", "env"];
        if init {
            args.push("--init");
        }
        args.extend(["--", "touch", "ran"]);
        let mut command = t.external("unshare");
        command.args(&args);
        t.run_command(command)
            .status(126)
            .error_line(&["--user nobody: cannot switch user: setgroups: operation not permitted"]);
        assert!(!t.exists("ran"), "the command ran");
    }
}

#[test]
fn without_root_only_the_same_user_is_allowed() {
    let Some(t) = users_test() else { return };
    t.script("export/announce", "#!/bin/sh\ntouch /tmp/never\n");
    let recorder = t.p("recorder");
    // As nobody (65534, not in the test's passwd): to appuser is refused, to itself runs.
    let as_nobody = |user: &str| {
        let args = [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "--user",
            user,
            "-e",
            "env",
            "--",
            &recorder,
        ];
        t.run_command(with_users(&t, "setpriv", &args))
    };
    as_nobody("appuser")
        .status(125)
        .error_line(&["--user appuser: cannot switch user: not running as root"])
        .stdout_is("");
    let same = as_nobody("65534:65534");
    same.success();
    assert!(same.stdout().contains("Uid:\t65534\t"), "{}", same.stdout());
}

#[test]
fn the_harness_and_its_threads_stay_root_while_a_switched_command_runs() {
    for binary in [BIN.into(), static_binary()] {
        let Some(mut t) = users_test() else { return };
        let store = FileStore::new();
        t.script("export/db", "#!/bin/sh\necho postgres://db\n")
            .script("env/DB", "#!/bin/sh\nexec envharness kv get db\n")
            .symlink("bin/envharness", &binary.to_string_lossy())
            .script(
                "cmd",
                "#!/bin/sh\ntrap 'exit 0' TERM\nid -u\nwhile :; do sleep 0.05; done\n",
            );
        t.env("PATH", format!("{}:{PATH}", t.p("bin")));
        let cmd = t.p("cmd");
        let url = store.kv_url();
        let args = [
            "--init",
            "--watch",
            "0",
            "--kv",
            &url,
            "--instance",
            "i1",
            "--user",
            "appuser",
            "-x",
            "export",
            "-e",
            "env",
            "--",
            &cmd,
        ];
        Client::new(&store).put("db", "one");
        let mut command = with_users(&t, &binary.to_string_lossy(), &args);
        command.env("PATH", format!("{}:{PATH}", t.p("bin")));
        let child = spawn(&mut command).expect("spawning");
        let started = std::time::Instant::now();
        t.wait_for_text(".stdout", "1000");
        // A registry change restarts the command: the harness's threads are busy meanwhile.
        Client::new(&store).put("db", "two");
        t.wait_until("a restart", || {
            t.read(".stdout").matches("1000").count() >= 2
        });
        // unshare execs sh, which execs the harness: the same pid.
        let harness = child.id();
        let tasks = fs::read_dir(format!("/proc/{harness}/task")).expect("listing the tasks");
        let mut seen = 0;
        for task in tasks.flatten() {
            let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
            if status.is_empty() {
                continue;
            }
            seen += 1;
            assert!(
                status.contains("Uid:\t0\t0\t0\t0\n"),
                "{}: a thread of the harness changed user:\n{status}",
                binary.display()
            );
        }
        assert!(seen >= 2, "the harness has its registry threads: {seen}");
        send(&child, Signal::SIGTERM);
        t.finish(child, started).success();
    }
}

#[test]
fn plan_shows_who_the_command_runs_as() {
    let Some(t) = users_test() else { return };
    let args = [
        "--user", "appuser", "-x", "export", "-e", "env", "--plan", "--", "true",
    ];
    t.run_command(with_users(&t, BIN, &args))
        .success()
        .stdout_has("user appuser: uid 1000, gid 1000, groups 1000,2000,2001\n");
}
