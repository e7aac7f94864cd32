//! The static binary in a root that holds nothing else of ours: only envharness, a static
//! busybox for the scripts' `/bin/sh`, and the default `/environment` and `/export`. It runs as
//! PID 1 of a new PID namespace (`unshare --fork --pid --mount-proc --root`), as in a
//! `FROM scratch` image. `make test` builds the static binary (`make static`) and installs
//! busybox-static first.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

const APPLETS: &[&str] = &["sh", "cat", "sleep", "touch", "grep", "wc", "ls", "tr"];
/// Where the root holds envharness.
pub const ENVHARNESS: &str = "/usr/local/bin/envharness";
/// What the root's command prints, and its exit status, 7: who PID 1 is (`comm`), that the
/// bootstrap ran, the variables, and how many zombies are left after three orphans exited.
pub const ROOT_COMMAND: &str = "echo \"pid1=$(cat /proc/1/comm) boot=$(cat /tmp/bootstrap)\"; \
     echo \"url=$DB_URL greeting=$GREETING\"; \
     for i in 1 2 3; do (sleep 0.1 &); done; sleep 0.5; \
     echo \"zombies=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)\"; \
     exit 7";
/// [`ROOT_COMMAND`]'s output after its first line.
pub const ROOT_OUTPUT: &str = "url=postgres://db.internal/app greeting=hello from scratch\n\
                               zombies=0\n";

/// The root: `binary` as static envharness, static busybox as /bin/sh and friends, /dev/null,
/// and the default directories with a bootstrap, a teardown and three variables.
pub fn scratch_root(t: &Test, binary: &Path) {
    let output = output(Command::new("file").arg("-L").arg(BUSYBOX));
    if let Ok(out) = output {
        let kind = String::from_utf8_lossy(&out.stdout);
        assert!(
            kind.contains("statically linked"),
            "{BUSYBOX} is not static (install busybox-static): {kind}"
        );
    }
    t.dir("root/usr/local/bin")
        .dir("root/bin")
        .dir("root/proc")
        .dir("root/dev")
        .dir("root/tmp");
    while_not_forking(|| std::fs::copy(binary, t.path("root/usr/local/bin/envharness")))
        .expect("copying envharness");
    while_not_forking(|| std::fs::copy(BUSYBOX, t.path("root/bin/busybox")))
        .expect("copying busybox (install busybox-static)");
    for applet in APPLETS {
        t.symlink(&format!("root/bin/{applet}"), "busybox");
    }
    // /dev/null as a container runtime provides it (character device 1:3).
    let _ = nix::sys::stat::mknod(
        &t.path("root/dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    );
    t.file("root/environment/DB_HOST", "db.internal\n");
    t.script(
        "root/environment/DB_URL",
        "#!/bin/sh\necho \"postgres://$DB_HOST/app\"\n",
    );
    t.file(
        "root/environment/app.env",
        "GREETING='hello from scratch'\n",
    );
    t.script(
        "root/export/bootstrap",
        "#!/bin/sh\necho bootstrapped > /tmp/bootstrap\n",
    );
    t.script(
        "root/export/teardown",
        "#!/bin/sh\necho \"teardown $DB_URL\" > /tmp/teardown\n",
    );
}

/// `launcher` (the root's envharness, or an emulator and it) with `args` as PID 1 of a new PID
/// namespace whose root is the test's `root`.
pub fn in_namespace(t: &Test, launcher: &[&str], args: &[&str]) -> Command {
    let root = t.p("root");
    let mut command = t.external("unshare");
    command
        .args(["--fork", "--pid", "--mount", "--mount-proc"])
        .arg(format!("--root={root}"))
        .args(launcher)
        .args(args)
        .env("PATH", "/bin");
    command
}

#[test]
fn static_binary_runs_as_pid_1_in_a_scratch_root() {
    let binary = static_binary();
    let kind = output(Command::new("file").arg(&binary)).expect("running file(1)");
    let kind = String::from_utf8_lossy(&kind.stdout);
    assert!(kind.contains("static"), "not a static binary: {kind}");
    if !namespaces_permitted() {
        return;
    }
    let t = Test::new();
    scratch_root(&t, &binary);
    let command = in_namespace(
        &t,
        &[ENVHARNESS],
        &["--init", "--", "/bin/sh", "-c", ROOT_COMMAND],
    );
    t.run_command(command)
        .status(7)
        .stdout_is(&format!("pid1=envharness boot=bootstrapped\n{ROOT_OUTPUT}"));
    assert_eq!(
        t.read("root/tmp/teardown"),
        "teardown postgres://db.internal/app\n"
    );
}

#[test]
fn sigterm_reaches_the_command_through_pid_1_in_a_scratch_root() {
    if !namespaces_permitted() {
        return;
    }
    let t = Test::new();
    scratch_root(&t, &static_binary());
    let mut command = in_namespace(
        &t,
        &[ENVHARNESS],
        &[
            "--init",
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo got-term > /tmp/term; exit 3' TERM; touch /tmp/ready; while :; do sleep 0.05; done",
        ],
    );
    let started = Instant::now();
    let unshare = spawn(&mut command).expect("running unshare");
    t.wait_for("root/tmp/ready");
    // envharness is unshare's child; signal it from outside the namespace, as `docker stop`
    // would.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
        .expect("reading unshare's children");
    let harness: i32 = children
        .split_whitespace()
        .next()
        .expect("a child")
        .parse()
        .unwrap();
    kill(Pid::from_raw(harness), Signal::SIGTERM).expect("signalling envharness");
    t.finish(unshare, started)
        .status(3)
        .faster_than(Duration::from_secs(5));
    assert_eq!(t.read("root/tmp/term"), "got-term\n");
}
