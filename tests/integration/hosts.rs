//! Per-host environments (docs/reference.md §10): `--environment-root DIR` picks the subdirectory
//! named by the hostname, else the most specific matching pattern, else `default`; `-e` directories
//! apply after it; `--plan` shows the choice; no choice is 125 naming DIR and the hostname.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `root/SUB/ROLE` = SUB for each of `subdirectories`, and an empty export directory.
fn hosts(subdirectories: &[&str]) -> Test {
    let t = Test::new();
    t.dir("export");
    for sub in subdirectories {
        t.file(&format!("root/{sub}/ROLE"), sub);
    }
    t
}

/// The ROLE `--print` shows for `hostname` (None: `--hostname` not given).
fn role(t: &mut Test, hostname: Option<&str>) -> Run {
    t.args(&["-x", "export", "--environment-root", "root"]);
    if let Some(name) = hostname {
        t.args(&["--hostname", name]);
    }
    t.args(&["--print"]).run()
}

#[test]
fn exact_name_then_most_specific_pattern_then_default() {
    let all = ["default", "web-*", "web-eu-*", "*-1", "db-1", "*"];
    for (hostname, expected) in [
        ("db-1", "db-1"),
        ("web-eu-7", "web-eu-*"),
        ("web-7", "web-*"),
        // web-*1 vs *-1: "web-" (4) beats "-1" (2).
        ("web-1", "web-*"),
        ("cache-1", "*-1"),
        ("mail", "*"),
    ] {
        let mut t = hosts(&all);
        role(&mut t, Some(hostname))
            .success()
            .printed_is(&[("ROLE", expected)]);
    }
    let mut t = hosts(&["default", "web-*"]);
    role(&mut t, Some("mail"))
        .success()
        .printed_is(&[("ROLE", "default")]);
}

#[test]
fn a_tie_goes_to_the_first_in_byte_order() {
    // Both keep 4 characters that are not `*`; "*-eu1" sorts before "db-e*".
    let mut t = hosts(&["db-e*", "*-eu1"]);
    role(&mut t, Some("db-eu1"))
        .success()
        .printed_is(&[("ROLE", "*-eu1")]);
}

#[test]
fn dot_names_and_files_are_passed_over() {
    let mut t = hosts(&["default", ".*", ".web-1"]);
    t.file("root/web-1", "a file, not a deployment");
    role(&mut t, Some("web-1"))
        .success()
        .printed_is(&[("ROLE", "default")]);
}

#[test]
fn no_match_and_no_default_is_an_error_naming_the_directory_and_the_hostname() {
    let mut t = hosts(&["web-*", "db-1"]);
    role(&mut t, Some("mail-1"))
        .status(125)
        .stdout_is("")
        .error_line(&["root: no subdirectory matches mail-1, and there is no default"]);
}

#[test]
fn plan_shows_a_failed_choice_and_goes_on_listing() {
    let mut t = hosts(&["web-*"]);
    t.file("env/A", "1\n");
    t.args(&[
        "--environment-root",
        "root",
        "--hostname",
        "mail-1",
        "-e",
        "env",
    ])
    .args(&["--plan", "--", "true"]);
    t.run()
        .status(125)
        .stdout_has("environment-root root: mail-1 -> error (no subdirectory matches, and there is no default)\n")
        .stdout_has("environment env:\n  A  literal\n")
        .stdout_has("command: true")
        .error_line(&["root: no subdirectory matches mail-1, and there is no default"]);
}

#[test]
fn a_missing_root_is_an_error() {
    let mut t = hosts(&[]);
    role(&mut t, Some("web-1"))
        .status(125)
        .error_line(&["root", "no such directory"]);
}

#[test]
fn the_hostname_comes_from_the_variable_and_the_flag_beats_it() {
    let mut t = hosts(&["default", "web-*", "db-1"]);
    t.env("ENVHARNESS_HOSTNAME", "db-1");
    role(&mut t, None).success().printed_is(&[("ROLE", "db-1")]);

    let mut t = hosts(&["default", "web-*", "db-1"]);
    t.env("ENVHARNESS_HOSTNAME", "db-1");
    role(&mut t, Some("web-9"))
        .success()
        .printed_is(&[("ROLE", "web-*")]);
}

#[test]
fn the_default_hostname_is_the_kernel_s() {
    let kernel = fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the kernel's hostname")
        .trim()
        .to_owned();
    let mut t = hosts(&["default", &kernel]);
    role(&mut t, None)
        .success()
        .printed_is(&[("ROLE", &kernel)]);
}

#[test]
fn the_root_comes_from_its_variable_too() {
    let mut t = hosts(&["default"]);
    t.env("ENVHARNESS_ENVIRONMENT_ROOT", "root");
    t.args(&["-x", "export", "--hostname", "x", "--print"]);
    t.run().success().printed_is(&[("ROLE", "default")]);
}

#[test]
fn named_directories_apply_after_the_choice_and_the_default_is_replaced() {
    let mut t = hosts(&["web-*"]);
    t.file("root/web-*/ONLY_HOST", "host");
    t.file("over/ROLE", "override");
    t.args(&["-e", "over", "--hostname", "web-1"]);
    role(&mut t, None)
        .success()
        .printed_is(&[("ONLY_HOST", "host"), ("ROLE", "override")]);

    let mut t = hosts(&["web-*"]);
    t.file("over/ROLE", "from-variable");
    t.env("ENVHARNESS_ENVIRONMENT", "over");
    role(&mut t, Some("web-1"))
        .success()
        .printed_is(&[("ROLE", "from-variable")]);

    // The chosen directory takes /environment's place: --plan names no other directory.
    let mut t = hosts(&["web-*"]);
    t.args(&[
        "-x",
        "export",
        "--environment-root",
        "root",
        "--hostname",
        "web-1",
    ])
    .args(&["--plan", "--", "true"]);
    let run = t.run();
    run.success();
    let directories: Vec<String> = run
        .stdout()
        .lines()
        .filter(|line| line.starts_with("environment"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        directories,
        [
            "environment-root root: web-1 -> web-*",
            "environment root/web-*:"
        ]
    );
}

/// The repository's examples/hosts, as a user would run it from a checkout.
fn example(t: &Test, args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command
        .args(["-x", &t.p("export"), "--environment-root", "examples/hosts"])
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .current_dir(ROOT)
        .stdout(fs::File::create(t.path(".stdout")).unwrap())
        .stderr(fs::File::create(t.path(".stderr")).unwrap());
    t.run_command(command)
}

#[test]
fn the_hosts_example_picks_db_1_web_and_default() {
    let t = hosts(&[]);
    for (hostname, expected) in [
        ("db-1", &[("ROLE", "db"), ("SERVICE", "postgres")][..]),
        ("web-3", &[("HTTP_PORT", "8080"), ("ROLE", "web")][..]),
        ("db-2", &[("LOG_LEVEL", "info"), ("ROLE", "app")][..]),
    ] {
        example(&t, &["--hostname", hostname, "--print"])
            .success()
            .printed_is(expected);
    }
}

#[test]
fn the_readme_plan_for_hosts_is_what_plan_prints() {
    let marker = "envharness --plan -x examples/export --environment-root examples/hosts --hostname web-3 -- true";
    let readme = fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let block = readme
        .split_once(&format!("<!-- output of: {marker} -->"))
        .expect("README.md shows the plan")
        .1
        .split("```")
        .nth(1)
        .expect("a fenced block")
        .to_owned();
    let shown: Vec<&str> = block
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with("$ "))
        .collect();
    let t = Test::new();
    let mut command = Command::new(BIN);
    command
        .args(marker.split(' ').skip(1))
        .env_clear()
        .env("PATH", PATH)
        .current_dir(ROOT)
        .stdout(fs::File::create(t.path(".stdout")).unwrap())
        .stderr(fs::File::create(t.path(".stderr")).unwrap());
    let run = t.run_command(command);
    run.success();
    let printed = run.stdout();
    let actual: Vec<&str> = printed.lines().collect();
    assert_eq!(
        shown, actual,
        "README.md's --environment-root plan is out of date"
    );
}

#[test]
fn the_hostname_is_also_the_default_instance() {
    let mut t = hosts(&[]);
    t.script("export/db", "#!/bin/sh\necho postgres://db:5432\n")
        .dir("env");
    let url = format!("file://{}", t.p("store"));
    t.args(&[
        "--kv",
        &url,
        "--hostname",
        "db-7",
        "-x",
        "export",
        "-e",
        "env",
    ])
    .args(&["--", "true"]);
    t.run().success();
    let mut get = t.external(BIN);
    get.args(["--kv", &url, "kv", "get", "db/db-7"]);
    t.run_command(get).success().stdout_is("postgres://db:5432");
}
