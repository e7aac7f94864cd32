//! The images of `make image` as users run them, with the machine's own podman configuration:
//! the README's first container commands, as printed, and both compose files with
//! podman-compose, each driven by the commands its header shows (`up -d`, `stop db`,
//! `start db`, `down`, ...), with a check of what each must have done. Nothing is pulled.
//!
//! The engine is `containers.rs`'s, with the machine's configuration (`make engine` makes it
//! run containers) and a store of its own; podman-compose reaches that store through
//! `--podman-path`, the README's commands through PATH. Every compose project has a name of
//! this process's own, and a guard that takes it down (containers, networks, volumes) when its
//! test ends, passed or failed. podman-compose comes from PyPI into a virtual environment
//! under target/ (`make compose`), named by `ENVHARNESS_PODMAN_COMPOSE`; where it or podman is
//! missing, the tests skip, unless `ENVHARNESS_TEST_PODMAN=required` (`make test`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::containers::{
    bounded_by, checked, engine, succeeds, Configuration, Engine, DEVELOPMENT_URL, IMAGE, ROOT,
};
use crate::support::*;

/// A podman-compose command: pods, networks and a stop within the services' grace.
const COMPOSE_LIMIT: Duration = Duration::from_secs(90);
/// How long a container may take to show what it must.
const SHOW_LIMIT: Duration = Duration::from_secs(30);

fn podman_compose() -> Option<PathBuf> {
    let path = std::env::var_os("ENVHARNESS_PODMAN_COMPOSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target/venv/bin/podman-compose"));
    if path.exists() {
        return Some(path);
    }
    unavailable(
        "ENVHARNESS_TEST_PODMAN",
        &format!("{} is missing (`make compose` installs it)", path.display()),
    );
    None
}

/// One compose file brought up as a project of this process's own.
struct Project {
    engine: &'static Engine,
    podman_compose: PathBuf,
    file: &'static str,
    name: String,
}

impl Project {
    fn new(engine: &'static Engine, podman_compose: PathBuf, file: &'static str) -> Project {
        let stem = Path::new(file)
            .parent()
            .and_then(Path::file_name)
            .map_or("compose".into(), |name| name.to_string_lossy().into_owned());
        Project {
            engine,
            podman_compose,
            file,
            name: format!("envharness-test-{}-{stem}", engine.suffix),
        }
    }

    /// `podman-compose` with this project's name and engine, then `args` (a header line's,
    /// after `podman-compose`), run in the repository as the header says.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.podman_compose);
        command
            .current_dir(ROOT)
            .env_clear()
            .env("PATH", PATH)
            .arg("--podman-path")
            .arg(self.engine.bin().join("podman"))
            .args(["-p", &self.name])
            .args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        succeeds(&mut self.command(args), COMPOSE_LIMIT)
    }

    /// The container of `service`, as podman-compose names it.
    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }

    /// `podman` with the engine's store.
    fn podman(&self, args: &[&str]) -> Result<Output, String> {
        bounded_by(self.engine.command().args(args), RUN_LIMIT)
    }

    /// Waits until `service`'s log (stdout and stderr) contains `text`.
    fn wait_for_log(&self, service: &str, text: &str) {
        let container = self.container(service);
        let mut log = String::new();
        let until = Instant::now() + SHOW_LIMIT;
        while Instant::now() < until {
            if let Ok(output) = self.podman(&["logs", &container]) {
                log = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                if log.contains(text) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{container}'s log never showed {text:?} within {SHOW_LIMIT:?}:\n{log}");
    }

    /// `envharness kv ARGS` run in `service`'s container, with its ENVHARNESS_KV.
    fn kv(&self, service: &str, args: &[&str]) -> Output {
        let container = self.container(service);
        let mut exec = vec!["exec", &container, "envharness", "kv"];
        exec.extend(args);
        self.podman(&exec).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Waits until `service` sees `key` with `value` (`Some`) or sees it gone (`None`).
    fn wait_for_key(&self, service: &str, key: &str, value: Option<&str>) {
        let until = Instant::now() + SHOW_LIMIT;
        let mut last = String::new();
        while Instant::now() < until {
            let output = self.kv(service, &["get", key]);
            let got = String::from_utf8_lossy(&output.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            let seen = match value {
                Some(value) => output.status.success() && got == value,
                None => {
                    output.status.code() == Some(1) && stderr.contains(&format!("{key}: not found"))
                }
            };
            if seen {
                return;
            }
            last = format!("{}: {got}{stderr}", output.status);
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{service} never saw {key} as {value:?} within {SHOW_LIMIT:?}; last: {last}");
    }

    fn running(&self, service: &str) -> bool {
        let output = self
            .podman(&[
                "inspect",
                "--format",
                "{{.State.Running}}",
                &self.container(service),
            ])
            .unwrap_or_else(|err| panic!("{err}"));
        String::from_utf8_lossy(&output.stdout).trim() == "true"
    }

    /// The project's containers, running or not.
    fn containers(&self) -> String {
        checked(self.engine.command().args([
            "ps",
            "--all",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=io.podman.compose.project={}", self.name),
        ]))
        .unwrap_or_else(|err| panic!("podman ps: {err}"))
    }
}

impl Drop for Project {
    /// Takes everything of the project down, whatever the test left: containers, the pod,
    /// the network and the volumes.
    fn drop(&mut self) {
        let mut down = self.command(&["--profile", "production", "-f", self.file, "down", "-v"]);
        let _ = bounded_by(&mut down, COMPOSE_LIMIT);
        let network = format!("{}_default", self.name);
        let _ = self.podman(&["network", "rm", "--force", &network]);
        // CNI's host-local allocator keeps a directory per network name, which removing the
        // network leaves; the name is this process's own.
        let _ = fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(&network));
    }
}

/// The commands of a compose file's header (`#     podman-compose ...`), without their
/// comments; `make image` is left out (the engine ran it).
fn header_commands(file: &str) -> Vec<Vec<String>> {
    let text = fs::read_to_string(Path::new(ROOT).join(file))
        .unwrap_or_else(|err| panic!("reading {file}: {err}"));
    let commands: Vec<Vec<String>> = text
        .lines()
        .map_while(|line| line.strip_prefix('#'))
        .filter_map(|line| line.strip_prefix("     "))
        .map(|line| line.split("  #").next().unwrap_or(line))
        .filter(|line| *line != "make image")
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect();
    for command in &commands {
        assert_eq!(command[0], "podman-compose", "{file}: {command:?}");
    }
    assert!(
        commands.len() >= 3,
        "{file} shows no commands: {commands:?}"
    );
    commands
}

/// The README shows `file`'s header commands as a block of their own, as they are.
fn assert_the_readme_shows(file: &str) {
    let text = fs::read_to_string(Path::new(ROOT).join(file)).expect("reading the file");
    let header: String = text
        .lines()
        .map_while(|line| line.strip_prefix('#'))
        .filter_map(|line| line.strip_prefix("     "))
        .map(|line| format!("{}\n", line.split("  #").next().unwrap_or(line).trim_end()))
        .collect();
    assert!(
        readme_blocks().contains(&header),
        "README.md has no block of {file}'s commands:\n{header}"
    );
}

/// Runs the header's commands in order; after each, `check` is called with the words after
/// `-f FILE` (`["up", "-d"]`, `["stop", "db"]`, ...), those before it (`--profile NAME`) and
/// how long the command took.
fn run_header(project: &Project, mut check: impl FnMut(&[String], &[String], Duration)) {
    let commands = header_commands(project.file);
    for command in &commands {
        let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
        let file = command
            .iter()
            .position(|word| word == project.file)
            .expect("the header's commands name their file");
        let started = Instant::now();
        project.run(&args);
        check(
            &command[1..file - 1],
            &command[file + 1..],
            started.elapsed(),
        );
    }
}

#[test]
fn the_discovery_compose_file_runs_as_its_header_says() {
    let file = "examples/discovery/docker-compose.yml";
    assert_the_readme_shows(file);
    let (Some(engine), Some(podman_compose)) = (engine(Configuration::Machine), podman_compose())
    else {
        return;
    };
    let project = Project::new(engine, podman_compose, file);
    let url = "postgres://db-1:5432/app";
    let mut seen = Vec::new();
    run_header(&project, |_, action, _| {
        let action: Vec<&str> = action.iter().map(String::as_str).collect();
        match action.as_slice() {
            ["up", "-d"] => {
                project.wait_for_log("db", "db: serving");
                project.wait_for_log("app", &format!("app: using {url}"));
            }
            ["stop", "db"] => {
                // db's harness withdrew its key: the app's side of the store has none.
                project.wait_for_key("app", "DATABASE_URL", None);
                assert!(project.running("app"), "app stopped with db");
                assert!(!project.running("db"), "db still runs");
            }
            ["start", "db"] => project.wait_for_key("app", "DATABASE_URL", Some(url)),
            ["down"] => assert_eq!(project.containers(), "", "down left containers"),
            other => panic!("a header command this test does not know: {other:?}"),
        }
        seen.push(action.join(" "));
    });
    assert_eq!(seen, ["up -d", "stop db", "start db", "down"]);
}

#[test]
fn the_deployments_compose_file_runs_as_its_header_says() {
    let file = "examples/docker-compose.yml";
    assert_the_readme_shows(file);
    let (Some(engine), Some(podman_compose)) = (engine(Configuration::Machine), podman_compose())
    else {
        return;
    };
    let file = "examples/docker-compose.yml";
    assert_the_readme_shows(file);
    let project = Project::new(engine, podman_compose, file);
    let development = format!("development: {DEVELOPMENT_URL}");
    // The password is the compose secret's, examples/db_password.example.
    let password = fs::read_to_string(Path::new(ROOT).join("examples/db_password.example"))
        .expect("reading examples/db_password.example");
    let production = format!(
        "production: postgres://app:{}@db.internal.example.com:5432/app?sslmode=require",
        password.trim_end()
    );
    let mut seen = Vec::new();
    run_header(&project, |global, action, took| {
        let global: Vec<&str> = global.iter().map(String::as_str).collect();
        let action: Vec<&str> = action.iter().map(String::as_str).collect();
        match (global.as_slice(), action.as_slice()) {
            ([], ["up", "-d"]) => project.wait_for_log("app", &development),
            ([], ["logs", "app"]) => {}
            (["--profile", "production"], ["up", "-d"]) => {
                project.wait_for_log("app-production", &production);
                assert!(project.running("app"), "app stopped");
            }
            (["--profile", "production"], ["down"]) => {
                assert_eq!(project.containers(), "", "down left containers");
                // envharness forwards the stop's SIGTERM to the command, which ends at once:
                // nothing waits for the 15 s grace.
                assert!(took < Duration::from_secs(10), "down took {took:?}");
            }
            other => panic!("a header command this test does not know: {other:?}"),
        }
        seen.push(format!("{} {}", global.join(" "), action.join(" ")));
    });
    assert_eq!(seen.len(), 4, "{seen:?}");
}

/// The README's first container commands (the block after `<!-- container session -->`):
/// each `$ ` line (with its `\` continuation lines) run by sh in the repository, `podman`
/// being the engine's, after `make image`; their stdout is the block's other lines.
#[test]
fn the_readme_first_container_commands_work_as_printed() {
    let Some(engine) = engine(Configuration::Machine) else {
        return;
    };
    let readme = fs::read_to_string(Path::new(ROOT).join("README.md")).expect("reading README.md");
    let (before, block) = readme
        .split_once("<!-- container session -->\n```\n")
        .and_then(|(before, rest)| Some((before, rest.split_once("```")?.0)))
        .expect("README.md has a container session block");
    let previous = before
        .rsplit("```")
        .nth(1)
        .expect("a block before the session");
    assert_eq!(
        previous.trim(),
        "make image",
        "the session follows make image"
    );
    let mut script = String::new();
    let mut expected = String::new();
    let mut continued = false;
    for line in block.lines() {
        if let Some(command) = line.strip_prefix("$ ").filter(|_| !continued) {
            script.push_str(command);
            script.push('\n');
            continued = command.ends_with('\\');
        } else if continued {
            script.push_str(line);
            script.push('\n');
            continued = line.ends_with('\\');
        } else {
            expected.push_str(line);
            expected.push('\n');
        }
    }
    assert!(script.contains(&format!("{} ", &IMAGE[..IMAGE.len() - ":latest".len()])));
    let t = Test::new();
    let mut command = t.external("sh");
    command
        .args(["-c", &script])
        .current_dir(ROOT)
        .env("PATH", format!("{}:{PATH}", engine.bin().display()));
    t.run_command(command).success().stdout_is(&expected);
}
