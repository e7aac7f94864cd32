//! The `FROM scratch` image of `examples/Dockerfile.prebuilt`, built by `make image` from the
//! static binary and run in real containers with podman, the way that file's header tells a
//! user to: the development environment mounted at `/environment`, `--print`, the command with
//! the variables and its exit status, envharness as PID 1 under `--init`, `podman stop`'s
//! SIGTERM, teardown, and no `/environment` at all.
//!
//! Nothing is pulled (the images are `FROM scratch`), and no image or container of the
//! machine's podman is seen or touched: an [`Engine`] keeps a store of its own in a temporary
//! directory (`--root`, `--runroot`, `--tmpdir`), reached through a `podman` script there that
//! adds those options, so that `make image` (`PODMAN=`), podman-compose (`--podman-path`) and
//! the README's commands (PATH) use it too. The engine of this module has a `containers.conf`
//! of its own (`CONTAINERS_CONF`) rather than the system's, which may be missing or say
//! otherwise; the one of `compose.rs` uses the machine's configuration, as a user's commands
//! do. The images are built once per engine, since the tests run in threads and parallel
//! builds would race. Each container is removed by a guard when its test ends, passed or
//! failed; the images and the store go when the process exits. Every podman command is bounded
//! in time. Where podman cannot run a container at all, each test prints `skipped: ...` and
//! returns, unless `ENVHARNESS_TEST_PODMAN=required` (set by `make test`) makes that a failure.

use std::fs;
use std::io::{Read, Seek};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wait_timeout::ChildExt;

use crate::examples::DEVELOPMENT;
use crate::support::*;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DOCKERFILE: &str = "examples/Dockerfile.prebuilt";
/// What `make image` builds from that file.
pub const IMAGE: &str = "localhost/envharness-example:latest";
/// The containers' hostname, so the export scripts' lines (`bootstrap: HOST starting`) are known.
const HOSTNAME: &str = "envharness-test";
pub const DEVELOPMENT_URL: &str = "postgres://app:development@localhost:5432/app_development";
/// `make image` builds the static binary first: at once when `make test` has, in minutes
/// when nothing was built yet.
const MAKE_LIMIT: Duration = Duration::from_secs(300);

/// The engine with the tests' own configuration (this module's), and the one with the
/// machine's (compose.rs and the README's commands); each with the images built.
static OWN: OnceLock<Result<Engine, String>> = OnceLock::new();
static MACHINE: OnceLock<Result<Engine, String>> = OnceLock::new();

/// Whose containers.conf podman reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Configuration {
    /// One written for the tests, in the store.
    Own,
    /// The machine's, as `podman` reads it when a user runs it (`make engine` makes it work).
    Machine,
}

/// Podman with a store of its own, and the images `make image` built in it.
pub struct Engine {
    store: tempfile::TempDir,
    configuration: Configuration,
    /// Makes container names this process's own.
    pub suffix: String,
}

impl Drop for Engine {
    /// Only for an engine that failed to start: one that started is in a static for good.
    fn drop(&mut self) {
        self.reset();
    }
}

/// The engine of `configuration` with the images built; `None`, after saying why, where podman
/// cannot run a container.
pub fn engine(configuration: Configuration) -> Option<&'static Engine> {
    let cell = match configuration {
        Configuration::Own => &OWN,
        Configuration::Machine => &MACHINE,
    };
    match cell.get_or_init(|| Engine::start(configuration)) {
        Ok(engine) => Some(engine),
        Err(reason) => {
            unavailable("ENVHARNESS_TEST_PODMAN", reason);
            None
        }
    }
}

impl Engine {
    /// The engine with the images built, or why podman cannot run a container here (the
    /// reason to skip). A failed build is a failure, not a reason.
    fn start(configuration: Configuration) -> Result<Engine, String> {
        assert!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} is missing: install busybox-static (`make test` does)"
        );
        let store = tempfile::Builder::new()
            .prefix("envharness-podman.")
            .tempdir()
            .expect("creating a directory for podman's store");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let engine = Engine {
            store,
            configuration,
            suffix: format!("{}-{nanos}", std::process::id()),
        };
        if configuration == Configuration::Own {
            while_not_forking(|| fs::write(engine.path("containers.conf"), containers_conf()))
                .expect("writing containers.conf");
        }
        engine.write_wrapper()?;
        static AT_EXIT: Once = Once::new();
        // SAFETY: atexit only records the address of a function that takes no arguments.
        AT_EXIT.call_once(|| unsafe {
            nix::libc::atexit(remove_stores);
        });

        let version =
            checked(
                engine
                    .command()
                    .args(["version", "--format", "{{.Client.Version}}"]),
            )
            .map_err(|err| {
                format!("podman is missing or broken (`make test` installs it): {err}")
            })?;
        // A container from a bare directory, nothing of envharness in it: if this fails,
        // podman cannot run containers on this machine, whatever the image holds.
        let probe = engine.path("probe");
        fs::create_dir_all(probe.join("bin")).expect("mkdir probe/bin");
        while_not_forking(|| fs::copy(BUSYBOX, probe.join("bin/busybox")))
            .expect("copying busybox");
        checked(
            engine
                .command()
                .args(["run", "--rm", "--network=none", "--rootfs"])
                .arg(&probe)
                .args(["/bin/busybox", "true"]),
        )
        .map_err(|err| {
            let whose = match configuration {
                Configuration::Own => "the tests' own configuration",
                Configuration::Machine => {
                    "this machine's configuration (`make engine` makes it work)"
                }
            };
            format!(
                "podman {} cannot run a container here with {whose}: {err}",
                version.trim()
            )
        })?;
        engine.build();
        Ok(engine)
    }

    /// Removes every container (running or not: a test may have killed its podman client)
    /// and image of the store, and unmounts it: the overlay driver leaves its directory
    /// bind-mounted on itself, which would keep the directory from being removed.
    fn reset(&self) {
        let _ = bounded(self.command().args(["system", "reset", "--force"]));
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.store.path().join(relative)
    }

    /// The directory holding the `podman` script that uses this store, for PATH.
    pub fn bin(&self) -> PathBuf {
        self.path("bin")
    }

    /// `bin/podman`: the machine's podman with this store's options (and this engine's
    /// configuration), for the programs that run podman themselves. The networks' directory
    /// is the store's too: podman keeps CNI networks in /etc/cni/net.d whatever `--root`
    /// says, and `podman system reset` of a store of its own removes every network there, the
    /// machine's included.
    fn write_wrapper(&self) -> Result<(), String> {
        let podman = PATH
            .split(':')
            .map(|dir| Path::new(dir).join("podman"))
            .find(|path| path.exists())
            .ok_or("podman is not installed (`make test` installs it)")?;
        let store = self.store.path().display();
        let conf = match self.configuration {
            Configuration::Own => format!("export CONTAINERS_CONF={store}/containers.conf\n"),
            Configuration::Machine => String::new(),
        };
        // root's PATH: the network plugins run iptables, in /usr/sbin.
        let script = format!(
            "#!/bin/sh\n# podman with the store of an envharness test\n{conf}export TMPDIR={store}\n\
             export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             exec {} --root {store}/root --runroot {store}/runroot --tmpdir {store}/tmp \
             --network-config-dir {store}/networks \"$@\"\n",
            podman.display()
        );
        fs::create_dir_all(self.bin()).expect("mkdir bin");
        let wrapper = self.bin().join("podman");
        while_not_forking(|| fs::write(&wrapper, script)).expect("writing bin/podman");
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod bin/podman");
        Ok(())
    }

    /// A podman command with a cleared environment and the minimal PATH.
    pub fn command(&self) -> Command {
        let mut command = Command::new(self.bin().join("podman"));
        command.env_clear().env("PATH", PATH);
        command
    }

    /// A podman command run as [`Test::external`] runs a program: in the test's directory,
    /// stdout and stderr into its capture files.
    fn in_test(&self, t: &Test) -> Command {
        t.external(self.bin().join("podman"))
    }

    /// `make image` into this store: the images a user gets, built the way the user builds
    /// them, from a context of this store's own.
    fn build(&self) {
        let started = Instant::now();
        let mut make = make();
        make.args(["-s", "image"])
            .arg(format!("PODMAN={}", self.bin().join("podman").display()))
            .arg(format!("IMAGE_CONTEXT={}", self.path("context").display()));
        succeeds(&mut make, MAKE_LIMIT);
        // libtest shows this only with --nocapture, which is how `make test` runs this group:
        // it is the line that says the containers ran rather than skipped.
        eprintln!(
            "containers: make image built {IMAGE} from {DOCKERFILE} and {} in {:.2?}",
            static_binary().display(),
            started.elapsed()
        );
    }
}

/// Runs at exit, since the engines, in statics, are never dropped.
extern "C" fn remove_stores() {
    for cell in [&OWN, &MACHINE] {
        if let Some(Ok(engine)) = cell.get() {
            engine.reset();
            let _ = fs::remove_dir_all(engine.store.path());
        }
    }
}

/// The tests' containers.conf.
fn containers_conf() -> String {
    let (soft_files, hard_files) = own_limit("Max open files");
    let (soft_processes, hard_processes) = own_limit("Max processes");
    // Podman lowers its own nproc to kernel.pid_max when that is below it (containers/common's
    // default process limits), and a container may not have more than podman itself.
    let pid_max: u64 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("reading /proc/sys/kernel/pid_max")
        .trim()
        .parse()
        .expect("pid_max is a number");
    format!(
        "# Written by tests/integration/containers.rs for its own podman store.\n\
         [containers]\n\
         # By default podman gives a container nofile and nproc of 1048576, and where the\n\
         # caller may not raise its limits (a sandbox, root without CAP_SYS_RESOURCE) runc\n\
         # fails: \"error setting rlimit type 7: operation not permitted\". So the tests'\n\
         # own limits.\n\
         default_ulimits = [\"nofile={soft_files}:{hard_files}\", \"nproc={}:{}\"]\n\
         [engine]\n\
         # crun refuses a hybrid cgroup v1/v2 hierarchy; runc runs there and everywhere else.\n\
         runtime = \"runc\"\n\
         # Neither needs systemd: cgroups set up directly, events in --tmpdir.\n\
         cgroup_manager = \"cgroupfs\"\n\
         events_logger = \"file\"\n",
        soft_processes.min(pid_max),
        hard_processes.min(pid_max),
    )
}

/// The soft and hard values of this process's limit `name` in /proc/self/limits (`unlimited`
/// is `u64::MAX`).
fn own_limit(name: &str) -> (u64, u64) {
    let limits = fs::read_to_string("/proc/self/limits").expect("reading /proc/self/limits");
    let line = limits
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .unwrap_or_else(|| panic!("/proc/self/limits has no {name:?}:\n{limits}"));
    let mut values = line.split_whitespace().map(|value| match value {
        "unlimited" => u64::MAX,
        number => number.parse().expect("a limit is a number"),
    });
    let soft = values.next().expect("a soft limit");
    let hard = values.next().expect("a hard limit");
    (soft, hard)
}

/// Runs `command` to its end, killing it after [`RUN_LIMIT`]. Its stdout and stderr go to
/// unnamed files, so a chatty command cannot fill a pipe and stall. Never panics (it runs at
/// exit too).
pub fn bounded(command: &mut Command) -> Result<Output, String> {
    bounded_by(command, RUN_LIMIT)
}

/// Runs `command` within `limit`; its output if it succeeded, else a failure that shows it.
pub fn succeeds(command: &mut Command, limit: Duration) -> Output {
    let shown = format!("{command:?}");
    let output = bounded_by(command, limit).unwrap_or_else(|err| panic!("{err}"));
    assert!(
        output.status.success(),
        "{shown}: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// [`bounded`], killing it after `limit`.
pub fn bounded_by(command: &mut Command, limit: Duration) -> Result<Output, String> {
    let shown = format!("{command:?}");
    let capture = || tempfile::tempfile().map_err(|err| format!("creating a capture file: {err}"));
    let (mut stdout, mut stderr) = (capture()?, capture()?);
    let clone = |file: &fs::File| {
        file.try_clone()
            .map_err(|err| format!("cloning a capture file: {err}"))
    };
    command
        .stdin(Stdio::null())
        .stdout(clone(&stdout)?)
        .stderr(clone(&stderr)?);
    let mut child = spawn(command)
        .map_err(|err| format!("{}: {err}", command.get_program().to_string_lossy()))?;
    let status: ExitStatus = match child.wait_timeout(limit) {
        Ok(Some(status)) => status,
        Ok(None) | Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{shown}: did not finish within {limit:?}"));
        }
    };
    let read = |file: &mut fs::File| {
        let mut bytes = Vec::new();
        file.rewind()
            .and_then(|()| file.read_to_end(&mut bytes))
            .map(|_| bytes)
            .map_err(|err| format!("reading a capture file: {err}"))
    };
    Ok(Output {
        status,
        stdout: read(&mut stdout)?,
        stderr: read(&mut stderr)?,
    })
}

/// [`bounded`], and its stdout if it succeeded; else the status and stderr.
pub fn checked(command: &mut Command) -> Result<String, String> {
    let output = bounded(command)?;
    if !output.status.success() {
        return Err(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The image and the engine that has it.
#[derive(Clone, Copy)]
struct Scratch {
    engine: &'static Engine,
    image: &'static str,
}

impl Scratch {
    /// The image, built on first use; `None`, after saying why, where podman cannot run.
    fn get() -> Option<Scratch> {
        let engine = engine(Configuration::Own)?;
        Some(Scratch {
            engine,
            image: IMAGE,
        })
    }

    fn container(&self, test: &str) -> Container {
        Container {
            engine: self.engine,
            name: format!("envharness-test-{}-{test}", self.engine.suffix),
        }
    }

    /// `podman run` of the image as `container`, with `options` before the image and `command`
    /// (if any) after it; stdout and stderr into the test's capture files.
    fn run(&self, t: &Test, container: &Container, options: &[&str], command: &[&str]) -> Command {
        let mut run = self.engine.in_test(t);
        run.args(["run", "--rm", "--network=none", "--name", &container.name])
            .args(["--hostname", HOSTNAME])
            .args(options)
            .arg(self.image)
            .args(command);
        run
    }

    /// `podman stop` (SIGTERM, SIGKILL 10 s later); how long it took.
    fn stop(&self, container: &Container) -> Duration {
        let started = Instant::now();
        checked(
            self.engine
                .command()
                .args(["stop", "--time", "10", &container.name]),
        )
        .unwrap_or_else(|err| panic!("podman stop failed: {err}"));
        started.elapsed()
    }
}

/// A container name of one test. Dropping it removes the container, running or not, so a test
/// that fails half-way leaves none behind.
struct Container {
    engine: &'static Engine,
    name: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = bounded(
            self.engine
                .command()
                .args(["rm", "--force", "--ignore", "--time", "0", &self.name]),
        );
    }
}

/// `-v` for the repository's development environment at /environment, read-only.
fn development() -> String {
    format!("{ROOT}/environments/development:/environment:ro")
}

#[test]
fn print_in_the_container_shows_the_mounted_environment() {
    let Some(scratch) = Scratch::get() else {
        return;
    };
    let t = Test::new();
    let container = scratch.container("print");
    // The image's entrypoint ends with `--`, after which everything is the command.
    let run = scratch.run(
        &t,
        &container,
        &["-v", &development(), "--entrypoint", "envharness"],
        &["--print"],
    );
    t.run_command(run)
        .success()
        .printed_is(DEVELOPMENT)
        .stderr_has(&format!("bootstrap: {HOSTNAME} starting (pid "))
        .stderr_lacks("teardown runs only under --init")
        .stderr_lacks("not found");
}

#[test]
fn the_command_gets_the_variables_with_envharness_as_pid_1_and_its_status_is_the_containers() {
    let Some(scratch) = Scratch::get() else {
        return;
    };
    let t = Test::new();
    let container = scratch.container("command");
    let run = scratch.run(
        &t,
        &container,
        &["-v", &development()],
        &[
            "sh",
            "-c",
            "echo \"$APP_ENV: $DB_URL\"; echo \"pid 1: $(cat /proc/1/comm)\"; exit 7",
        ],
    );
    let run = t.run_command(run);
    run.status(7)
        .stdout_is(&format!(
            "development: {DEVELOPMENT_URL}\npid 1: envharness\n"
        ))
        .stderr_has(&format!("bootstrap: {HOSTNAME} starting (pid "))
        .stderr_lacks("not found");
    assert_eq!(
        run.stderr_lines_with("teardown: "),
        [format!("teardown: {HOSTNAME} stopping")],
        "{}",
        run.stderr
    );
}

#[test]
fn a_command_the_image_lacks_is_127_and_envharness_says_so() {
    let Some(scratch) = Scratch::get() else {
        return;
    };
    let t = Test::new();
    let container = scratch.container("missing-command");
    let run = scratch.run(
        &t,
        &container,
        &["-v", &development()],
        &["no-such-command"],
    );
    t.run_command(run)
        .status(127)
        .stdout_is("")
        .error_line(&["no-such-command", "command not found"]);
}

#[test]
fn podman_stop_ends_the_default_command_by_sigterm_and_teardown_runs() {
    let Some(scratch) = Scratch::get() else {
        return;
    };
    let t = Test::new();
    let container = scratch.container("stop-default");
    let mut run = scratch.run(&t, &container, &["-v", &development()], &[]);
    let started = Instant::now();
    let podman = spawn(&mut run).expect("running podman");
    // The default CMD prints this, then becomes `sleep 3600`.
    let printed = format!("development: {DEVELOPMENT_URL}\n");
    t.wait_for_text(".stdout", &printed);
    let stop = scratch.stop(&container);
    let run = t.finish_command(podman, started, &run);
    // 143 = 128 + SIGTERM: sleep died of the signal envharness forwarded; a SIGKILL after
    // podman's 10 s would be 137.
    run.status(143)
        .stdout_is(&printed)
        .stderr_has(&format!("teardown: {HOSTNAME} stopping"));
    assert!(stop < Duration::from_secs(5), "podman stop took {stop:?}");
}

#[test]
fn podman_stop_delivers_sigterm_to_the_command_and_the_status_is_the_commands() {
    let Some(scratch) = Scratch::get() else {
        return;
    };
    let t = Test::new();
    let container = scratch.container("stop-trap");
    let mut run = scratch.run(
        &t,
        &container,
        &["-v", &development()],
        &[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    let started = Instant::now();
    let podman = spawn(&mut run).expect("running podman");
    t.wait_for_text(".stdout", "ready\n");
    let stop = scratch.stop(&container);
    let run = t.finish_command(podman, started, &run);
    run.status(3)
        .stdout_is("ready\ngot TERM\n")
        .stderr_has(&format!("teardown: {HOSTNAME} stopping"));
    assert!(stop < Duration::from_secs(5), "podman stop took {stop:?}");
}

#[test]
fn a_container_without_environment_skips_it() {
    let Some(scratch) = Scratch::get() else {
        return;
    };
    let t = Test::new();
    let container = scratch.container("no-environment");
    // Debug logging, for the line that says /environment was skipped; `env` is one of the
    // applet links the Dockerfile makes, found on the image's PATH.
    let run = scratch.run(&t, &container, &["-e", "RUST_LOG=debug"], &["env"]);
    let run = t.run_command(run);
    run.success()
        .stdout_has("PATH=/usr/local/bin:/bin\n")
        .error_line(&["/environment", "not there, skipped"])
        .stderr_has(&format!("teardown: {HOSTNAME} stopping"));
    let stdout = run.stdout();
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    for (name, _) in DEVELOPMENT {
        assert!(!names.contains(name), "{name} is set:\n{stdout}");
    }
}

/// A named volume of one test, removed when the test ends.
struct Volume {
    engine: &'static Engine,
    name: String,
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = bounded(
            self.engine
                .command()
                .args(["volume", "rm", "--force", &self.name]),
        );
    }
}

/// examples/discovery in two containers sharing a named volume as the store: `app` waits for
/// `db`, `podman stop db` withdraws db's key, and the watching `app` sees it go.
#[test]
fn discovery_across_two_containers_sharing_a_volume() {
    let Some(scratch) = Scratch::get() else {
        return;
    };
    let volume = Volume {
        engine: scratch.engine,
        name: format!("envharness-test-registry-{}", scratch.engine.suffix),
    };
    let store = format!("{}:/registry", volume.name);
    let example = |part: &str| format!("{ROOT}/examples/discovery/{part}");
    let app_t = Test::new();
    let app = scratch.container("discovery-app");
    let mut app_run = scratch.run(
        &app_t,
        &app,
        &[
            "-v",
            &store,
            "-v",
            &format!("{}:/environment:ro", example("app/environment")),
            "-e",
            "ENVHARNESS_KV=file:///registry",
            "-e",
            "DISCOVERY_WAIT=2",
            "--entrypoint",
            "envharness",
        ],
        &[
            "--init",
            "--watch",
            "0",
            "--",
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo \"app: using $DATABASE_URL\"; while :; do sleep 0.05; done",
        ],
    );
    let app_started = Instant::now();
    let app_podman = spawn(&mut app_run).expect("running the app container");

    let db_t = Test::new();
    let db = scratch.container("discovery-db");
    let mut db_run = scratch.run(
        &db_t,
        &db,
        &[
            "-v",
            &store,
            "-v",
            &format!("{}:/export:ro", example("db/export")),
            "-e",
            "ENVHARNESS_KV=file:///registry",
            "-e",
            "ENVHARNESS_INSTANCE=db-1",
            "-e",
            "DB_ADDRESS=db-1.internal",
        ],
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo 'db: serving'; while :; do sleep 0.05; done",
        ],
    );
    let db_started = Instant::now();
    let db_podman = spawn(&mut db_run).expect("running the db container");
    db_t.wait_for_text(".stdout", "db: serving\n");
    app_t.wait_for_text(".stdout", "app: using postgres://db-1.internal:5432/app\n");

    scratch.stop(&db);
    db_t.finish_command(db_podman, db_started, &db_run)
        .success();
    app_t.wait_for_text(".stderr", "re-run failed, nothing changed");
    app_t.wait_for_text(".stderr", "DATABASE_URL: not found after 2 s");
    scratch.stop(&app);
    let run = app_t.finish_command(app_podman, app_started, &app_run);
    run.success()
        .stdout_is("app: using postgres://db-1.internal:5432/app\n");
}
