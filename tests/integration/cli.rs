//! Options, their ENVHARNESS_* twins, usage errors (125) and shebang splitting.

use std::process::Command;

use crate::support::*;

#[test]
fn unknown_option_is_a_usage_error_with_status_125() {
    let mut t = Test::new();
    t.args(&["--bogus", "--", "true"]);
    t.run().status(125).error_line(&["--bogus"]);
}

#[test]
fn no_command_is_a_usage_error() {
    let mut t = Test::new();
    t.args(&["-e", "."]);
    t.run().status(125).error_line(&["no command given"]);
}

#[test]
fn help_shows_an_example_and_exits_0() {
    let mut t = Test::new();
    t.args(&["--help"]);
    t.run()
        .success()
        .stdout_has("Examples:")
        .stdout_has("envharness -- myapp");
}

#[test]
fn version_exits_0() {
    let mut t = Test::new();
    t.args(&["--version"]);
    t.run()
        .success()
        .stdout_has(&format!("envharness {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_number_is_a_usage_error_naming_the_option() {
    let mut t = Test::new();
    t.args(&["--timeout", "soon", "--", "true"]);
    t.run().status(125).error_line(&["--timeout", "soon"]);
    let mut t = Test::new();
    t.env("ENVHARNESS_RETRIES", "many").args(&["--", "true"]);
    t.run()
        .status(125)
        .error_line(&["ENVHARNESS_RETRIES: \"many\" is not a whole number"]);
}

#[test]
fn boolean_variable_with_another_word_is_a_usage_error() {
    for variable in [
        "ENVHARNESS_NO_CLOBBER",
        "ENVHARNESS_INIT",
        "ENVHARNESS_GROUP",
    ] {
        let mut t = Test::new();
        t.env(variable, "maybe").args(&["--", "true"]);
        t.run().status(125).error_line(&[variable, "not a boolean"]);
    }
}

#[test]
fn missing_default_directories_are_skipped_silently() {
    if std::path::Path::new("/environment").exists() || std::path::Path::new("/export").exists() {
        eprintln!("skipped: this machine has /environment or /export");
        return;
    }
    let mut t = Test::new();
    t.args(&["--print"]);
    t.run().success().stdout_is("");
    assert_eq!(t.run().stderr, "");
}

#[test]
fn named_directory_that_does_not_exist_is_an_error() {
    let mut t = Test::new();
    t.args(&["-e", "nope", "--", "true"]);
    t.run()
        .status(125)
        .error_line(&["nope", "no such directory"]);
    let mut t = Test::new();
    t.env("ENVHARNESS_EXPORT", "missing-export")
        .args(&["--", "true"]);
    t.run()
        .status(125)
        .error_line(&["missing-export", "no such directory"]);
}

#[test]
fn environment_variable_lists_directories_and_a_flag_beats_it() {
    let mut t = Test::new();
    t.file("a/X", "from-a")
        .file("a/Y", "only-a")
        .file("b/X", "from-b")
        .file("c/X", "from-c");
    t.env("ENVHARNESS_ENVIRONMENT", "a:b").args(&["--print"]);
    t.run()
        .success()
        .printed_is(&[("X", "from-b"), ("Y", "only-a")]);

    let mut t2 = Test::new();
    t2.file("a/X", "from-a").file("c/X", "from-c");
    t2.env("ENVHARNESS_ENVIRONMENT", "a")
        .args(&["-e", "c", "--print"]);
    t2.run().success().printed_is(&[("X", "from-c")]);
}

#[test]
fn export_variable_and_flag() {
    let mut t = Test::new();
    t.script("x1/bootstrap", "#!/bin/sh\necho from-x1 >&2\n");
    t.script("x2/bootstrap", "#!/bin/sh\necho from-x2 >&2\n");
    t.dir("env");
    t.env("ENVHARNESS_EXPORT", "x1")
        .args(&["-e", "env", "--print"]);
    t.run().success().stderr_has("from-x1");
    let mut t2 = Test::new();
    t2.script("x1/bootstrap", "#!/bin/sh\necho from-x1 >&2\n");
    t2.script("x2/bootstrap", "#!/bin/sh\necho from-x2 >&2\n");
    t2.dir("env");
    t2.env("ENVHARNESS_EXPORT", "x1")
        .args(&["-x", "x2", "-e", "env", "--print"]);
    t2.run()
        .success()
        .stderr_has("from-x2")
        .stderr_lacks("from-x1");
}

#[test]
fn kv_is_the_subcommand_but_a_command_named_kv_runs_after_double_dash() {
    let mut t = Test::new();
    t.args(&["kv", "get", "x"]);
    t.run()
        .status(125)
        .error_line(&["kv", "no registry configured"]);
    let mut t = Test::new();
    t.script("bin/kv", "#!/bin/sh\necho \"kv ran $1\"\n");
    let path = format!("{}:{PATH}", t.p("bin"));
    t.env("PATH", path).args(&["-e", ".", "--", "kv", "get"]);
    // The test directory itself is the environment: its only entries are dot-names and bin/.
    t.run().success().stdout_is("kv ran get\n");
}

#[test]
fn shebang_line_options_are_split_like_env_dash_s() {
    let t = Test::new();
    t.file("env/GREETING", "hello from the env dir\n");
    let script = format!(
        "#!{BIN} -e '{}' -- /bin/sh\necho \"$GREETING; script=$0; args=$*\"\n",
        t.p("env")
    );
    t.script("tool", &script);
    let mut command = t.external(t.path("tool"));
    command.args(["one", "two words"]);
    t.run_command(command).success().stdout_is(&format!(
        "hello from the env dir; script={}; args=one two words\n",
        t.p("tool")
    ));
}

#[test]
fn durations_too_long_to_mean_anything_are_usage_errors() {
    for (option, value) in [
        ("--timeout", "1e19"),
        ("--retry-interval", "1e12"),
        ("--stop-timeout", "1e10"),
    ] {
        let mut t = Test::new();
        t.dir("env");
        t.args(&["-e", "env", "-x", "env", option, value, "--", "true"]);
        t.run().status(125).error_line(&[option, "too long"]);
    }
}

#[test]
fn a_missing_directory_named_by_the_variable_is_an_error() {
    let mut t = Test::new();
    t.dir("a");
    t.env("ENVHARNESS_ENVIRONMENT", "a:typo")
        .args(&["--", "true"]);
    t.run()
        .status(125)
        .error_line(&["typo", "no such directory"]);
}

#[test]
fn an_empty_export_variable_means_the_default() {
    if std::path::Path::new("/export").exists() {
        eprintln!("skipped: this machine has /export");
        return;
    }
    let mut t = Test::new();
    t.file("env/X", "1");
    t.env("ENVHARNESS_EXPORT", "")
        .args(&["-e", "env", "--print"]);
    let run = t.run();
    run.success().stdout_is("X='1'\n");
    assert_eq!(run.stderr, "");
}

#[test]
fn print_with_a_command_is_a_usage_error() {
    let mut t = Test::new();
    t.dir("env");
    t.args(&["-e", "env", "-x", "env", "--print", "--", "true"]);
    t.run().status(125).error_line(&["--print", "command"]);
}

#[test]
fn bad_job_counts_are_usage_errors() {
    for (args, variable, named) in [
        (["-j", "x"], None, ["--jobs", "'x'"]),
        (["-j", "-1"], None, ["-1", "unexpected"]),
        (["-e", "env"], Some("x"), ["ENVHARNESS_JOBS", "\"x\""]),
    ] {
        let mut t = Test::new();
        t.dir("env");
        if let Some(value) = variable {
            t.env("ENVHARNESS_JOBS", value);
        }
        t.args(&args).args(&["-e", "env", "--", "true"]);
        t.run().status(125).error_line(&named);
    }
}

#[test]
fn an_unknown_print_format_is_a_usage_error() {
    let mut t = Test::new();
    t.dir("env");
    t.args(&["-e", "env", "--print", "yaml"]);
    t.run().status(125).error_line(&["--print", "'yaml'"]);
}

#[test]
fn duration_variables_that_are_not_numbers_are_usage_errors_naming_the_variable() {
    for (variable, value) in [
        ("ENVHARNESS_TIMEOUT", "soon"),
        ("ENVHARNESS_RETRY_INTERVAL", "-1"),
        ("ENVHARNESS_STOP_TIMEOUT", "x"),
        ("ENVHARNESS_WAIT", "later"),
        ("ENVHARNESS_HEALTH_INTERVAL", "often"),
        ("ENVHARNESS_TTL", "1"),
    ] {
        let mut t = Test::new();
        t.env(variable, value).args(&["--init", "--", "true"]);
        t.run()
            .status(125)
            .error_line(&[&format!("{variable}: \"{value}\"")])
            .stderr_lacks("--");
    }
}

#[test]
fn a_directory_a_variable_names_is_named_with_the_variable() {
    for variable in ["ENVHARNESS_ENVIRONMENT", "ENVHARNESS_EXPORT"] {
        let mut t = Test::new();
        t.dir("here");
        t.env("ENVHARNESS_ENVIRONMENT", "here")
            .env(variable, "/nope")
            .args(&["--", "true"]);
        t.run()
            .status(125)
            .error_line(&[&format!("{variable}=/nope: no such directory")]);
    }
}

#[test]
fn a_misspelt_option_is_answered_with_a_suggestion_and_a_choice_with_its_values() {
    let mut t = Test::new();
    t.args(&["--enviroment", "env", "--print"]);
    t.run().status(125).error_line(&[
        "unexpected argument '--enviroment'",
        "did you mean '--environment'?",
    ]);
    let mut t = Test::new();
    t.dir("env");
    t.args(&["-e", "env", "--print", "printenv"]);
    t.run()
        .status(125)
        .error_line(&["'printenv'", "possible values: dotenv, shell, json"]);
}

#[test]
fn on_change_without_watch_draws_one_warning() {
    let mut t = Test::new();
    t.dir("env").dir("export");
    t.args(&[
        "-x",
        "export",
        "-e",
        "env",
        "--on-change",
        "HUP",
        "--",
        "true",
    ]);
    let run = t.run();
    run.success()
        .error_line(&["warning: --on-change has no effect without --watch"]);
    assert_eq!(run.stderr.lines().count(), 1);
}

#[test]
fn an_export_directory_named_by_the_flag_must_be_a_directory() {
    let mut t = Test::new();
    t.dir("env");
    t.args(&["-x", "nowhere", "-e", "env", "--", "touch", "ran"]);
    t.run()
        .status(125)
        .error_line(&["nowhere", "no such directory"]);
    assert!(!t.exists("ran"));

    let mut t = Test::new();
    t.dir("env").file("plain", "");
    t.args(&["-x", "plain", "-e", "env", "--", "true"]);
    t.run()
        .status(125)
        .error_line(&["plain", "not a directory"]);
}

#[test]
fn missing_values_and_conflicting_options_are_usage_errors() {
    for (args, named) in [
        (&["-e"][..], &["--environment", "a value is required"][..]),
        (
            &["--plan", "--print"],
            &["--plan", "--print", "cannot be used"],
        ),
        (&["-v", "-q", "--", "true"], &["--verbose", "--quiet"]),
        // Lines of the plain form that clap refuses (src/config/plain.rs leaves them to it).
        (
            &["-x", "a", "-x", "b", "--", "true"],
            &["--export", "cannot be used multiple times"],
        ),
        (
            &["--init", "--init", "--", "true"],
            &["--init", "cannot be used multiple times"],
        ),
        (
            &["-e", "--", "true"],
            &["--environment", "a value is required"],
        ),
    ] {
        let mut t = Test::new();
        t.args(args);
        t.run().status(125).error_line(named);
    }
}

#[test]
fn a_shebang_line_with_an_unbalanced_quote_is_a_usage_error() {
    let t = Test::new();
    t.dir("env");
    t.script("tool", &format!("#!{BIN} -e 'env -- /bin/sh\necho ran\n"));
    t.run_command(t.external(t.path("tool")))
        .status(125)
        .error_line(&["shebang", "missing closing quote"])
        .stdout_is("");
}

/// The refusal of a `#!` line that would run envharness on its own script forever.
const LOOP: &str = "its #! line runs envharness without a command: add -- INTERPRETER";

/// A script `tool` with `shebang` as its first line, an export script that records that it ran,
/// `bin/envharness` and PATH with `bin` first (for `env envharness`).
fn looping_tool(shebang: &str) -> (Test, Command) {
    let t = Test::new();
    t.dir("env")
        .script("export/announce", "#!/bin/sh\ntouch announced\n")
        .symlink("bin/envharness", BIN)
        .script("tool", &format!("{shebang}\necho ran >> ran\n"));
    let mut command = t.external(t.path("tool"));
    command.env("PATH", format!("{}:{PATH}", t.p("bin")));
    (t, command)
}

#[test]
fn a_shebang_line_without_a_command_is_refused_before_anything_runs() {
    for shebang in [
        format!("#!{BIN} -e env -x export"),
        format!("#!{BIN} -x export -e env --"),
        format!("#!{BIN} --init"),
        format!("#!{BIN}"),
        "#!/usr/bin/env envharness".to_owned(),
        "#!/usr/bin/env -S envharness -x export -e env".to_owned(),
    ] {
        let (t, command) = looping_tool(&shebang);
        t.run_command(command)
            .status(125)
            .error_line(&[&t.p("tool"), LOOP])
            .stdout_is("");
        assert!(!t.exists("announced"), "{shebang}: the export phase ran");
        assert!(!t.exists("ran"), "{shebang}: the script ran");
    }
}

#[test]
fn a_looping_script_given_as_the_command_is_refused_too() {
    let (mut t, _) = looping_tool(&format!("#!{BIN} -e env"));
    t.args(&["-x", "export", "-e", "env", "--", "./tool", "arg"]);
    t.run().status(125).error_line(&["./tool", LOOP]);
    assert!(!t.exists("announced"), "the export phase ran");
}

#[test]
fn a_looping_script_found_in_the_harness_s_own_path_is_refused_before_anything_runs() {
    let (mut t, _) = looping_tool(&format!("#!{BIN} -e env"));
    t.script("app-bin/app", &format!("#!{BIN} -e env\necho ran >> ran\n"));
    let path = format!("{}:{PATH}", t.p("app-bin"));
    t.env("PATH", path);
    t.args(&["-x", "export", "-e", "env", "--", "app"]);
    t.run().status(125).error_line(&["app", LOOP]);
    assert!(!t.exists("announced"), "the export phase ran");
    assert!(!t.exists("ran"), "the script ran");
}

#[test]
fn a_looping_script_found_in_the_final_path_is_refused_at_exec() {
    for init in [false, true] {
        let (mut t, _) = looping_tool(&format!("#!{BIN} -e env"));
        t.script("app-bin/app", &format!("#!{BIN} -e env\necho ran >> ran\n"))
            .file("env/PATH", format!("{}:{PATH}\n", t.p("app-bin")));
        if init {
            t.args(&["--init"]);
        }
        t.args(&["-x", "export", "-e", "env", "--", "app"]);
        t.run().status(125).error_line(&["app", LOOP]);
        assert!(!t.exists("ran"), "the script ran");
    }
}

#[test]
fn a_nested_harness_with_an_interpreter_is_no_loop() {
    let (t, command) = looping_tool(&format!("#!{BIN} -x export -e env -- /bin/sh"));
    t.run_command(command).success();
    assert_eq!(t.read("ran"), "ran\n");
    assert!(t.exists("announced"));
}
