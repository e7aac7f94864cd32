//! The export phase (docs/reference.md §3.2).

use crate::support::*;

/// An empty environment directory and `-x export -e env -- touch command-ran`.
fn then_touch_command_ran(t: &mut Test) {
    t.dir("env");
    t.args(&["-x", "export", "-e", "env", "--", "touch", "command-ran"]);
}

fn logging_script(name: &str) -> String {
    format!("#!/bin/sh\necho {name} >> \"$LOG\"\necho \"{name} says hi\"\n")
}

#[test]
fn bootstrap_runs_first_then_byte_order_and_output_goes_to_stderr() {
    let mut t = Test::new();
    for name in ["a", "B", "bootstrap", "_z", "10-first"] {
        t.script(&format!("export/{name}"), &logging_script(name));
    }
    t.file("env/X", "1");
    t.env("LOG", t.p("log"))
        .args(&["-x", "export", "-e", "env", "--print"]);
    let run = t.run();
    run.success()
        .stdout_is("X='1'\n")
        .stderr_has("bootstrap says hi");
    assert_eq!(t.read("log"), "bootstrap\n10-first\nB\n_z\na\n");
}

#[test]
fn teardown_is_not_run_without_init_and_draws_a_warning() {
    let mut t2 = Test::new();
    t2.script("export/teardown", &logging_script("teardown"));
    t2.script("export/bootstrap", &logging_script("bootstrap"));
    t2.dir("env");
    t2.env("LOG", t2.p("log"))
        .args(&["-x", "export", "-e", "env", "--", "true"]);
    let run = t2.run();
    run.success().error_line(&["export/teardown", "--init"]);
    assert_eq!(t2.read("log"), "bootstrap\n");
}

#[test]
fn a_failing_export_script_stops_everything() {
    let mut t = Test::new();
    t.script("export/register", "#!/bin/sh\nexit 3\n");
    t.script("export/zz-after", "#!/bin/sh\ntouch \"$MARK\"\n");
    t.dir("env");
    t.env("MARK", t.p("after-ran")).args(&[
        "-x",
        "export",
        "-e",
        "env",
        "--",
        "touch",
        "command-ran",
    ]);
    t.run()
        .status(125)
        .error_line(&["export/register", "exited with status 3"]);
    assert!(!t.exists("after-ran"), "a script after the failure ran");
    assert!(!t.exists("command-ran"), "the command ran");
}

#[test]
fn export_scripts_get_the_harness_environment_and_no_stdin() {
    let mut t = Test::new();
    t.script(
        "export/bootstrap",
        "#!/bin/sh\necho \"service=$SERVICE stdin=$(readlink /proc/self/fd/0)\" > \"$OUT\"\n",
    );
    t.file("env/SERVICE", "overridden-later");
    let out = t.p("out");
    t.env("SERVICE", "api")
        .env("OUT", out)
        .args(&["-x", "export", "-e", "env", "--", "true"]);
    t.run().success();
    assert_eq!(t.read("out"), "service=api stdin=/dev/null\n");
}

#[test]
fn non_executable_files_in_export_are_skipped_with_a_warning_unless_they_lost_their_exec_bit() {
    let mut t = Test::new();
    t.file("export/notes.txt", "just notes\n");
    t.dir("env");
    t.args(&["-x", "export", "-e", "env", "--", "true"]);
    t.run()
        .success()
        .error_line(&["export/notes.txt", "not executable"]);

    let mut t = Test::new();
    t.file("export/register", "#!/bin/sh\necho hi\n");
    t.dir("env");
    t.args(&["-x", "export", "-e", "env", "--", "true"]);
    t.run()
        .status(125)
        .error_line(&["export/register", "chmod +x"]);
}

#[test]
fn an_export_script_that_keeps_failing_stops_everything_with_its_tries() {
    let mut t = Test::new();
    t.script("export/register", "#!/bin/sh\necho try >> tries\nexit 3\n");
    t.dir("env");
    t.args(&[
        "-x",
        "export",
        "-e",
        "env",
        "--retries",
        "1",
        "--retry-interval",
        "0",
        "--",
        "touch",
        "command-ran",
    ]);
    t.run()
        .status(125)
        .error_line(&["export/register", "exited with status 3 (after 2 tries)"]);
    assert_eq!(t.read("tries"), "try\ntry\n");
    assert!(!t.exists("command-ran"));
}

#[test]
fn an_export_script_past_its_timeout_stops_everything() {
    let mut t = Test::new();
    t.script("export/register", "#!/bin/sh\nexec sleep 30\n");
    t.dir("env");
    t.args(&[
        "-x",
        "export",
        "-e",
        "env",
        "--timeout",
        "0.2",
        "--",
        "touch",
        "command-ran",
    ]);
    t.run()
        .status(125)
        .error_line(&["export/register", "timed out after 0.2s"])
        .faster_than(std::time::Duration::from_secs(2));
    assert!(!t.exists("command-ran"));
}

#[test]
fn export_entries_that_cannot_be_run_stop_everything_and_say_why() {
    for (body, reason) in [
        (CRLF, "Windows line endings"),
        (NO_INTERPRETER, "/nonexistent/sh"),
    ] {
        let mut t = Test::new();
        t.script("export/register", body);
        then_touch_command_ran(&mut t);
        t.run().status(125).error_line(&["export/register", reason]);
        assert!(!t.exists("command-ran"));
    }
    let mut t = Test::new();
    t.symlink("export/register", "../nowhere");
    then_touch_command_ran(&mut t);
    t.run()
        .status(125)
        .error_line(&["export/register", "broken symbolic link"]);
    assert!(!t.exists("command-ran"));
}

#[test]
fn a_broken_teardown_is_only_a_warning_without_init() {
    // Not run without --init (docs/reference.md §3.2), so a fault in it stops nothing.
    let mut t = Test::new();
    t.file("export/teardown", "#!/bin/sh\ntouch torn-down\n");
    then_touch_command_ran(&mut t);
    t.run()
        .success()
        .error_line(&["export/teardown", "only under --init"]);
    assert!(t.exists("command-ran"));
    assert!(!t.exists("torn-down"));
}

#[test]
fn a_subdirectory_in_the_export_directory_is_skipped_with_a_warning() {
    let mut t = Test::new();
    t.script("export/sub/bootstrap", "#!/bin/sh\ntouch nested-ran\n");
    then_touch_command_ran(&mut t);
    t.run()
        .success()
        .error_line(&["export/sub", "subdirectory, skipped"]);
    assert!(!t.exists("nested-ran"));
    assert!(t.exists("command-ran"));
}
