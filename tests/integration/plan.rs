//! Deciding what runs: `--plan` (docs/reference.md §5.2) shows what every entry would do and runs
//! nothing; `--no-clobber` (docs/reference.md §1.3) keeps a variable the harness was given and
//! skips the entries that would set it. Every script here would leave a file behind if it ran.

use crate::support::*;

/// `path` as given and the entries listed under it in `--plan` output: (name, action).
fn section(stdout: &str, header: &str) -> Vec<(String, String)> {
    let mut lines = stdout.lines().skip_while(|line| *line != header);
    assert!(
        lines.next().is_some(),
        "no {header:?} in the plan:\n{stdout}"
    );
    lines
        .take_while(|line| line.starts_with("  "))
        .map(|line| {
            let (name, action) = line
                .trim_start()
                .split_once(' ')
                .unwrap_or_else(|| panic!("not an entry line: {line:?}"));
            (name.to_owned(), action.trim().to_owned())
        })
        .collect()
}

#[track_caller]
fn entries_are(stdout: &str, header: &str, expected: &[(&str, &str)]) {
    let listed = section(stdout, header);
    let listed: Vec<(&str, &str)> = listed
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str()))
        .collect();
    assert_eq!(listed, expected, "under {header:?}:\n{stdout}");
}

fn touching(name: &str) -> String {
    format!("#!/bin/sh\ntouch ran-{name}\necho {name}\n")
}

#[test]
fn plan_shows_every_entry_and_the_resolved_command_and_runs_nothing() {
    let mut t = Test::new();
    t.script("export/bootstrap", &touching("bootstrap"));
    t.script("export/register", &touching("register"));
    t.script("export/teardown", &touching("teardown"));
    t.file("export/README.md", "docs");
    t.script("env/A", &touching("A"));
    t.file("env/B", "literal");
    t.file("env/c.env", "C=1\n");
    t.script("env/d.env", &touching("d"));
    t.file("env/.hidden", "x");
    t.file("env/E~", "backup");
    t.dir("env/sub");
    t.script("bin/mycmd", &touching("command"));
    let path = format!("{}:{PATH}", t.p("bin"));
    t.env("PATH", path).args(&[
        "--plan", "-x", "export", "-e", "env", "--", "mycmd", "an arg",
    ]);
    let run = t.run();
    run.success();
    let stdout = run.stdout();
    entries_are(
        &stdout,
        "export export:",
        &[
            ("README.md", "ignored (documentation)"),
            ("bootstrap", "run (first)"),
            ("register", "run"),
            ("teardown", "ignored (teardown runs only under --init)"),
        ],
    );
    entries_are(
        &stdout,
        "environment env:",
        &[
            (".hidden", "ignored (dot-name)"),
            ("A", "run"),
            ("B", "literal"),
            ("E~", "ignored (backup file)"),
            ("c.env", "dotenv"),
            ("d.env", "dotenv (run)"),
            ("sub", "ignored (subdirectory)"),
        ],
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("command: mycmd 'an arg' ({})", t.p("bin/mycmd")),
        "{stdout}"
    );
    let export_at = stdout.find("export export:").expect("export section");
    let env_at = stdout
        .find("environment env:")
        .expect("environment section");
    assert!(export_at < env_at, "export comes first:\n{stdout}");
    for name in ["bootstrap", "register", "teardown", "A", "d", "command"] {
        assert!(!t.exists(&format!("ran-{name}")), "{name} ran under --plan");
    }
}

#[test]
fn plan_lists_every_directory_in_order() {
    let mut t = Test::new();
    t.file("one/A", "1");
    t.script("two/A", &touching("A"));
    t.args(&[
        "--plan", "-x", "export", "-e", "one", "-e", "two", "--", "true",
    ]);
    t.dir("export");
    let run = t.run();
    run.success();
    let stdout = run.stdout();
    entries_are(&stdout, "environment one:", &[("A", "literal")]);
    entries_are(&stdout, "environment two:", &[("A", "run")]);
    assert!(stdout.find("environment one:") < stdout.find("environment two:"));
    assert!(!t.exists("ran-A"));
}

#[test]
fn plan_resolves_the_command_in_the_current_path_not_one_a_script_would_set() {
    let mut t = Test::new();
    t.script("bin/mycmd", "#!/bin/sh\n");
    t.script("other/mycmd", "#!/bin/sh\n");
    t.file("env/PATH", format!("{}:{PATH}", t.p("other")));
    let path = format!("{}:{PATH}", t.p("bin"));
    t.env("PATH", path)
        .args(&["--plan", "-e", "env", "--", "mycmd"]);
    let run = t.run();
    run.success()
        .stdout_has(&format!("command: mycmd ({})", t.p("bin/mycmd")));
}

#[test]
fn plan_with_an_invalid_entry_lists_everything_after_it_and_exits_125() {
    let mut t = Test::new();
    t.script("env/A-B", &touching("A-B"));
    t.file("env/C", "literal");
    t.file("env/D", "#!/bin/sh\ntouch ran-D\n");
    t.symlink("env/E", "nowhere");
    t.script("env/F", &touching("F"));
    t.script("later/G", &touching("G"));
    t.args(&[
        "--plan", "-x", "export", "-e", "env", "-e", "later", "--", "true",
    ]);
    t.dir("export");
    let run = t.run();
    run.status(125)
        .error_line(&["env/A-B", "not a valid variable name"]);
    let stdout = run.stdout();
    let listed = section(&stdout, "environment env:");
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["A-B", "C", "D", "E", "F"], "{stdout}");
    assert!(
        listed[0].1.starts_with("error (not a valid variable name"),
        "{stdout}"
    );
    assert_eq!(listed[1].1, "literal");
    assert!(listed[2].1.starts_with("error (") && listed[2].1.contains("chmod +x"));
    assert!(
        listed[3].1.starts_with("error (broken symbolic link"),
        "{stdout}"
    );
    assert_eq!(listed[4].1, "run");
    entries_are(&stdout, "environment later:", &[("G", "run")]);
    assert!(stdout.contains("command: true ("), "{stdout}");
    // One error line: the first error's.
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("envharness: "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    for name in ["A-B", "D", "F", "G"] {
        assert!(!t.exists(&format!("ran-{name}")), "{name} ran under --plan");
    }
}

#[test]
fn plan_reports_a_missing_named_directory_and_a_missing_command() {
    let mut t = Test::new();
    t.dir("export");
    t.script("env/A", &touching("A"));
    t.args(&[
        "--plan",
        "-x",
        "export",
        "-e",
        "not-there",
        "-e",
        "env",
        "--",
        "no-such-command-anywhere",
    ]);
    let run = t.run();
    run.status(125)
        .error_line(&["not-there", "no such directory"])
        .stdout_has("environment not-there: error (no such directory)")
        .stdout_has("command: no-such-command-anywhere: error (command not found)");
    entries_are(&run.stdout(), "environment env:", &[("A", "run")]);

    let mut t = Test::new();
    t.dir("export");
    t.dir("env");
    t.args(&[
        "--plan",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        "no-such-command-anywhere",
    ]);
    t.run()
        .status(125)
        .error_line(&["no-such-command-anywhere", "command not found"]);
}

#[test]
fn plan_shows_what_no_clobber_skips() {
    let mut t = Test::new();
    t.dir("export");
    t.script("env/HOST", &touching("HOST"));
    t.file("env/PORT", "80");
    t.file("env/OTHER", "x");
    t.env("HOST", "kept").env("PORT", "").args(&[
        "--plan",
        "--no-clobber",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        "true",
    ]);
    let run = t.run();
    run.success();
    entries_are(
        &run.stdout(),
        "environment env:",
        &[
            ("HOST", "ignored (already set; --no-clobber)"),
            ("OTHER", "literal"),
            ("PORT", "ignored (already set; --no-clobber)"),
        ],
    );
    assert!(!t.exists("ran-HOST"));
}

// --- --no-clobber

/// HOST and EMPTY are in the harness's environment; every entry that would set them must be
/// skipped without being run or read, while everything else applies.
fn clobber_candidates(t: &mut Test) {
    t.script("env/HOST", "#!/bin/sh\ntouch ran-HOST\necho from-script\n");
    // Reading this literal would be an error (a NUL byte cannot be in a variable).
    t.file("env/EMPTY", b"not\0read".as_slice());
    t.file(
        "env/app.env",
        "HOST=from-file\nOTHER=applied\nEMPTY=from-file\n",
    );
    t.script(
        "env/run.env",
        "#!/bin/sh\necho HOST=from-dotenv-script\necho RUN=applied\n",
    );
    t.file("env/ZZ", "last");
    t.env("HOST", "kept").env("EMPTY", "");
}

#[track_caller]
fn nothing_clobbered(t: &Test, run: &Run) {
    run.success();
    let stdout = run.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    for expected in [
        "HOST=kept",
        "EMPTY=",
        "OTHER=applied",
        "RUN=applied",
        "ZZ=last",
    ] {
        assert!(
            lines.contains(&expected),
            "the command's env lacks {expected}:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("from-"),
        "a value was clobbered:\n{stdout}"
    );
    assert!(!t.exists("ran-HOST"), "the HOST script ran");
}

#[test]
fn no_clobber_keeps_the_harness_value_and_skips_its_entries() {
    let mut t = Test::new();
    clobber_candidates(&mut t);
    t.args(&["--no-clobber", "-v", "-e", "env", "--", "env"]);
    let run = t.run();
    nothing_clobbered(&t, &run);
    run.error_line(&["env/HOST", "already set", "--no-clobber"])
        .error_line(&["env/EMPTY", "already set", "--no-clobber"])
        .error_line(&["env/app.env", "HOST", "line ignored"]);
}

#[test]
fn no_clobber_comes_from_envharness_no_clobber_too() {
    let mut t = Test::new();
    clobber_candidates(&mut t);
    t.env("ENVHARNESS_NO_CLOBBER", "1")
        .args(&["-e", "env", "--", "env"]);
    let run = t.run();
    nothing_clobbered(&t, &run);
}

#[test]
fn no_clobber_skips_the_script_with_jobs_too() {
    let mut t = Test::new();
    clobber_candidates(&mut t);
    t.args(&["--no-clobber", "-j", "4", "-e", "env", "--", "env"]);
    let run = t.run();
    nothing_clobbered(&t, &run);
}

#[test]
fn no_clobber_leaves_print_to_the_variables_the_phase_set() {
    let mut t = Test::new();
    clobber_candidates(&mut t);
    t.args(&["--no-clobber", "-e", "env", "--print"]);
    t.run()
        .success()
        .printed_is(&[("ZZ", "last"), ("OTHER", "applied"), ("RUN", "applied")]);
    assert!(!t.exists("ran-HOST"));
}

#[test]
fn without_no_clobber_the_entries_win() {
    let mut t = Test::new();
    t.script("env/HOST", "#!/bin/sh\ntouch ran-HOST\necho from-script\n");
    t.file("env/app.env", "OTHER=applied\n");
    t.env("HOST", "kept")
        .env("ENVHARNESS_NO_CLOBBER", "0")
        .args(&["-e", "env", "--", "env"]);
    let run = t.run();
    run.success().stdout_has("HOST=from-script\n");
    assert!(t.exists("ran-HOST"));
}
