//! The aarch64 binary of `make dist` (`make static-aarch64`), run on this machine under
//! Debian's qemu-user-static (`qemu-aarch64-static BINARY ARGS...`): as PID 1 of a scratch root,
//! `--print` of the repository's development environment, the command exec'd with the
//! variables and its status, `--init` forwarding SIGTERM, and `kv put`/`get` on the file store.
//! Scripts and commands are this machine's own (x86_64) programs: qemu emulates envharness
//! only, and execs them natively.
//!
//! `make test` builds the binary, installs qemu and names the binary in
//! `ENVHARNESS_AARCH64_BIN`; with `ENVHARNESS_TEST_PACKAGING=required` (set by `make test`) a
//! missing binary or emulator fails these tests, elsewhere they say why they skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use crate::examples::DEVELOPMENT;
use crate::scratch::{in_namespace, scratch_root, ENVHARNESS, ROOT_COMMAND, ROOT_OUTPUT};
use crate::support::*;

const QEMU: &str = "qemu-aarch64-static";

/// `qemu-aarch64-static` and the aarch64 binary, after checking that the binary is one, or
/// `None` after saying why not.
fn emulated() -> Option<(PathBuf, PathBuf)> {
    let binary = std::env::var_os("ENVHARNESS_AARCH64_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/aarch64-unknown-linux-musl/release/envharness")
        });
    let Some(qemu) = PATH
        .split(':')
        .map(|dir| Path::new(dir).join(QEMU))
        .find(|path| path.exists())
    else {
        unavailable(
            "ENVHARNESS_TEST_PACKAGING",
            &format!("{QEMU} is missing (install qemu-user-static; `make test` does)"),
        );
        return None;
    };
    if !binary.exists() {
        unavailable(
            "ENVHARNESS_TEST_PACKAGING",
            &format!(
                "{} is missing (`make static-aarch64` builds it)",
                binary.display()
            ),
        );
        return None;
    }
    let kind = output(Command::new("file").arg(&binary)).expect("running file(1)");
    let kind = String::from_utf8_lossy(&kind.stdout);
    assert!(
        kind.contains("ARM aarch64") && kind.contains("statically linked"),
        "{} is not a static aarch64 binary: {kind}",
        binary.display()
    );
    Some((qemu, binary))
}

/// A test whose binary is the aarch64 one under qemu.
fn emulated_test() -> Option<Test> {
    let (qemu, binary) = emulated()?;
    let mut t = Test::new();
    t.launcher(&[qemu.into_os_string(), binary.into_os_string()]);
    Some(t)
}

#[test]
fn aarch64_binary_prints_the_development_environment() {
    let Some(mut t) = emulated_test() else {
        return;
    };
    let repo = |relative: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    t.args(&[
        "-x".into(),
        repo("examples/export").into_os_string(),
        "-e".into(),
        repo("environments/development").into_os_string(),
        "--print".into(),
    ]);
    t.run()
        .success()
        .printed_is(DEVELOPMENT)
        .stderr_has("bootstrap: ");
}

#[test]
fn aarch64_binary_execs_the_command_with_the_variables_and_its_status() {
    let Some(mut t) = emulated_test() else {
        return;
    };
    t.file("env/HOST", "db.internal\n")
        .script("env/URL", "#!/bin/sh\necho \"postgres://$HOST/app\"\n")
        .file("env/app.env", "GREETING='hello arm'\n")
        .dir("export");
    t.args(&["-x", "export", "-e", "env", "--", "sh", "-c"])
        .args(&["echo \"$URL $GREETING\"; exit 3"]);
    t.run()
        .status(3)
        .stdout_is("postgres://db.internal/app hello arm\n");
}

#[test]
fn aarch64_binary_under_init_forwards_sigterm_to_the_command() {
    let Some(mut t) = emulated_test() else {
        return;
    };
    t.dir("env").dir("export");
    t.args(&["--init", "-x", "export", "-e", "env", "--", "sh", "-c"])
        .args(&["trap 'echo got TERM; exit 3' TERM; touch ready; while :; do sleep 0.05; done"]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    send(&child, Signal::SIGTERM);
    t.finish(child, started).status(3).stdout_is("got TERM\n");
}

#[test]
fn aarch64_binary_puts_and_gets_on_the_file_store() {
    let Some(mut t) = emulated_test() else {
        return;
    };
    let store = format!("file://{}", t.p("registry"));
    t.args(&[
        "--kv",
        &store,
        "kv",
        "put",
        "db/db-1",
        "postgres://db-1/app",
    ]);
    t.run().success().stdout_is("");
    let (qemu, binary) = emulated().expect("checked above");
    let mut get = t.external(qemu);
    get.arg(binary).args(["--kv", &store, "kv", "get", "db"]);
    t.run_command(get)
        .success()
        .stdout_is("postgres://db-1/app");
}

#[test]
fn aarch64_binary_runs_as_pid_1_in_a_scratch_root_under_qemu() {
    let Some((qemu, binary)) = emulated() else {
        return;
    };
    if !namespaces_permitted() {
        return;
    }
    let t = Test::new();
    scratch_root(&t, &binary);
    // The emulator is static too: the root needs nothing else to run it.
    t.dir("root/usr/bin");
    while_not_forking(|| std::fs::copy(&qemu, t.path("root/usr/bin/qemu-aarch64-static")))
        .expect("copying qemu-aarch64-static");
    let command = in_namespace(
        &t,
        &["/usr/bin/qemu-aarch64-static", ENVHARNESS],
        &["--init", "--", "/bin/sh", "-c", ROOT_COMMAND],
    );
    // PID 1 is the emulator running envharness: its command line says so.
    let who = "echo \"cmdline=$(tr '\\0' ' ' < /proc/1/cmdline)\"";
    let run = t.run_command(command);
    run.status(7);
    let stdout = run.stdout();
    let (first, rest) = stdout.split_once('\n').expect("a first line");
    assert_eq!(first, "pid1=qemu-aarch64-st boot=bootstrapped", "{stdout}");
    assert_eq!(rest, ROOT_OUTPUT, "{stdout}");
    assert_eq!(
        t.read("root/tmp/teardown"),
        "teardown postgres://db.internal/app\n"
    );
    let command = in_namespace(
        &t,
        &["/usr/bin/qemu-aarch64-static", ENVHARNESS],
        &["--init", "--", "/bin/sh", "-c", who],
    );
    t.run_command(command).success().stdout_is(&format!(
        "cmdline=/usr/bin/qemu-aarch64-static {ENVHARNESS} --init -- /bin/sh -c {who} \n"
    ));
}
