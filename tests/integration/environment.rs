//! The environment phase (docs/reference.md §3.1 and §3.3): what each entry becomes, what is
//! ignored, the value rules.

use crate::support::*;

fn print_env(t: &mut Test) -> Run {
    t.args(&["-x", "no-export", "-e", "env", "--print"]);
    t.dir("no-export");
    t.run()
}

#[test]
fn executable_name_is_its_stdout_minus_one_trailing_newline() {
    let mut t = Test::new();
    t.script("env/A", "#!/bin/sh\nprintf 'a\\n\\n'\n");
    t.script("env/B", "#!/bin/sh\nprintf 'b\\r\\n'\n");
    t.script("env/C", "#!/bin/sh\nprintf 'c'\n");
    print_env(&mut t)
        .success()
        .stdout_is("A='a\n'\nB='b'\nC='c'\n");
}

#[test]
fn literal_name_is_the_file_content_minus_one_trailing_newline() {
    let mut t = Test::new();
    t.file("env/HOST", "db.local\n");
    t.file("env/CRLF", "x\r\n");
    t.file("env/EMPTY", "");
    t.file("env/TWO_LINES", "one\ntwo\n\n");
    print_env(&mut t)
        .success()
        .stdout_is("CRLF='x'\nEMPTY=''\nHOST='db.local'\nTWO_LINES='one\ntwo\n'\n");
}

#[test]
fn script_that_lost_its_exec_bit_is_an_error() {
    let mut t = Test::new();
    t.file("env/DB_URL", "#!/bin/sh\necho x\n");
    print_env(&mut t)
        .status(125)
        .error_line(&["env/DB_URL", "chmod +x"]);
}

#[test]
fn dotenv_files_static_and_executable() {
    let mut t = Test::new();
    t.file(
        "env/a.env",
        "# settings\nexport A=1\nB = ' spaced '\nC=\"multi\nline \\\"q\\\"\"\n\nD=x # kept\n",
    );
    t.script(
        "env/b.env",
        "#!/bin/sh\necho E=from-script\necho \"F=$A$A\"\n",
    );
    print_env(&mut t).success().stdout_is(
        "A='1'\nB=' spaced '\nC='multi\nline \"q\"'\nD='x # kept'\nE='from-script'\nF='11'\n",
    );
}

#[test]
fn malformed_dotenv_line_names_file_and_line() {
    let mut t = Test::new();
    t.file("env/app.env", "A=1\n\nthis is not a pair\n");
    print_env(&mut t)
        .status(125)
        .error_line(&["env/app.env", "line 3", "expected KEY=VALUE"]);
    let mut t = Test::new();
    t.script("env/gen.env", "#!/bin/sh\necho 'A=\"unterminated'\n");
    print_env(&mut t).status(125).error_line(&[
        "env/gen.env",
        "line 1",
        "unterminated double quote",
    ]);
}

#[test]
fn invalid_names_are_errors() {
    for name in ["DB-URL", "1ST", "db.url"] {
        let mut t = Test::new();
        t.file(&format!("env/{name}"), "x");
        print_env(&mut t)
            .status(125)
            .error_line(&[&format!("env/{name}"), "not a valid variable name"]);
    }
}

#[test]
fn dot_names_backups_and_docs_are_ignored_silently() {
    let mut t = Test::new();
    t.file("env/.hidden", "x");
    t.file("env/A~", "x");
    t.file("env/README.md", "# docs");
    t.file("env/bad-name.md", "docs too");
    t.file("env/KEEP", "kept");
    let run = print_env(&mut t);
    run.success().stdout_is("KEEP='kept'\n");
    assert_eq!(run.stderr, "", "ignored entries must not be mentioned");
}

#[test]
fn subdirectories_are_skipped_with_a_warning() {
    let mut t = Test::new();
    t.file("env/nested/X", "x");
    t.file("env/Y", "y");
    print_env(&mut t)
        .success()
        .stdout_is("Y='y'\n")
        .error_line(&["env/nested", "subdirectory"]);
}

#[test]
fn symlinks_are_followed_and_a_broken_one_is_an_error() {
    let mut t = Test::new();
    t.file("shared/value", "linked\n");
    t.symlink("env/LINKED", "../shared/value");
    print_env(&mut t).success().stdout_is("LINKED='linked'\n");

    let mut t = Test::new();
    t.symlink("env/DANGLING", "../nowhere");
    print_env(&mut t)
        .status(125)
        .error_line(&["env/DANGLING", "broken symbolic link", "nowhere"]);
}

#[test]
fn kubernetes_configmap_volume_layout_works() {
    // What the kubelet writes: a timestamped directory, ..data pointing at it, keys as links.
    let mut t = Test::new();
    t.file("env/..2024_01_01_00_00_00.123/DB_HOST", "db.prod\n");
    t.file("env/..2024_01_01_00_00_00.123/LOG_LEVEL", "info");
    t.symlink("env/..data", "..2024_01_01_00_00_00.123");
    t.symlink("env/DB_HOST", "..data/DB_HOST");
    t.symlink("env/LOG_LEVEL", "..data/LOG_LEVEL");
    let run = print_env(&mut t);
    run.success()
        .stdout_is("DB_HOST='db.prod'\nLOG_LEVEL='info'\n");
    assert_eq!(run.stderr, "");
}

#[test]
fn values_are_bytes_with_newlines_and_non_utf8_kept() {
    let mut t = Test::new();
    t.file("env/BIN", [0xff, 0xfe, b'\n', b'x', 0x80]);
    t.script("env/MULTI", "#!/bin/sh\nprintf 'l1\\nl2\\n'\n");
    let run = print_env(&mut t);
    run.success();
    let mut expected = b"BIN='".to_vec();
    expected.extend_from_slice(&[0xff, 0xfe, b'\n', b'x', 0x80]);
    expected.extend_from_slice(b"'\nMULTI='l1\nl2'\n");
    assert_eq!(run.stdout, expected);
}

#[test]
fn a_nul_byte_is_an_error_naming_the_file() {
    let mut t = Test::new();
    t.script("env/WITH_NUL", "#!/bin/sh\nprintf 'a\\0b'\n");
    print_env(&mut t)
        .status(125)
        .error_line(&["env/WITH_NUL", "NUL byte"]);
    let mut t = Test::new();
    t.file("env/LIT", b"x\0y".as_slice());
    print_env(&mut t)
        .status(125)
        .error_line(&["env/LIT", "NUL byte"]);
}

#[test]
fn a_value_over_the_kernel_limit_is_an_error_with_its_size() {
    // NAME=VALUE plus the terminating NUL may be 131072 bytes: "A=" + 131069 bytes fits.
    let mut t = Test::new();
    t.file("env/A", vec![b'v'; 131_069]);
    let run = print_env(&mut t);
    run.success();
    assert_eq!(run.stdout.len(), "A=''\n".len() + 131_069);

    let mut t = Test::new();
    t.file("env/A", vec![b'v'; 131_070]);
    print_env(&mut t)
        .status(125)
        .error_line(&["env/A", "131072 bytes", "131072"]);
    let mut t = Test::new();
    t.script(
        "env/BIG",
        "#!/bin/sh\nhead -c 200000 /dev/zero | tr '\\0' x\n",
    );
    print_env(&mut t)
        .status(125)
        .error_line(&["env/BIG", "131072"]);
}

#[test]
fn later_definitions_override_earlier_ones_across_files_and_directories() {
    let mut t = Test::new();
    t.file("base/A", "base-a");
    t.file("base/B", "base-b");
    t.file("base/c.env", "C=base-c\nA=base-dotenv-a\n");
    t.file("over/B", "over-b");
    t.file("over/z.env", "C=over-c\n");
    t.dir("no-export");
    t.args(&["-x", "no-export", "-e", "base", "-e", "over", "--print"]);
    t.run()
        .success()
        .printed_is(&[("A", "base-dotenv-a"), ("B", "over-b"), ("C", "over-c")]);
}

#[test]
fn sequential_scripts_see_earlier_variables_and_the_harness_environment() {
    let mut t = Test::new();
    t.file("env/DB_HOST", "db.local");
    t.script(
        "env/DB_URL",
        "#!/bin/sh\necho \"postgres://$DB_USER@$DB_HOST/app\"\n",
    );
    t.env("DB_USER", "app");
    print_env(&mut t).success().printed_is(&[
        ("DB_HOST", "db.local"),
        ("DB_URL", "postgres://app@db.local/app"),
    ]);
}

#[test]
fn a_later_script_sees_overrides_in_place_of_what_they_replace_with_and_without_jobs() {
    // The scripts' environment is kept up to date as variables are set: an override of the
    // harness's variable, or of an earlier directory's, replaces the string it overrides. The
    // count is read from the script's own /proc environ: a shell keeps one of two strings of
    // a name, so its `env` would show one anyway.
    for jobs in ["1", "4"] {
        let mut t = Test::new();
        t.script("base/A_FIRST", "#!/bin/sh\necho one\n");
        t.file("base/GREETING", "from-dir");
        t.file("over/A_FIRST", "two");
        t.script(
            "over/Z_SEEN",
            r#"#!/bin/sh
count() { tr '\0' '\n' </proc/$$/environ | grep -c "^$1="; }
echo "$GREETING $A_FIRST $(count GREETING) $(count A_FIRST)"
"#,
        );
        t.dir("no-export");
        t.env("GREETING", "harness");
        t.args(&[
            "-j",
            jobs,
            "-x",
            "no-export",
            "-e",
            "base",
            "-e",
            "over",
            "--print",
        ]);
        t.run().success().printed_is(&[
            ("A_FIRST", "two"),
            ("GREETING", "from-dir"),
            ("Z_SEEN", "from-dir two 1 1"),
        ]);
    }
}

#[test]
fn scripts_get_stdin_from_dev_null_and_a_process_group_of_their_own() {
    let mut t = Test::new();
    t.script("env/STDIN", "#!/bin/sh\nreadlink /proc/self/fd/0\n");
    t.script(
        "env/GROUP",
        "#!/bin/sh\nset -- $(cut -d' ' -f5 /proc/$$/stat)\n[ \"$1\" = \"$$\" ] && echo leader || echo \"pgrp $1 pid $$\"\n",
    );
    print_env(&mut t)
        .success()
        .printed_is(&[("GROUP", "leader"), ("STDIN", "/dev/null")]);
}

#[test]
fn script_stderr_passes_through_and_its_current_directory_is_the_harness_one() {
    let mut t = Test::new();
    t.script(
        "env/WHERE",
        "#!/bin/sh\necho 'a note for the operator' >&2\npwd\n",
    );
    let root = std::fs::canonicalize(t.root()).unwrap();
    print_env(&mut t)
        .success()
        .stderr_has("a note for the operator")
        .printed_is(&[("WHERE", &root.to_string_lossy())]);
}

#[test]
fn with_jobs_a_script_sees_earlier_literals_of_its_directory_but_not_other_scripts() {
    let mut t = Test::new();
    t.file("env/A_HOST", "db.local");
    t.script("env/B_FROM_SCRIPT", "#!/bin/sh\necho from-b\n");
    t.script(
        "env/C_URL",
        "#!/bin/sh\necho \"host=$A_HOST b=${B_FROM_SCRIPT:-unset} d=${D_LATER:-unset}\"\n",
    );
    t.file("env/D_LATER", "later");
    t.args(&["-j", "4"]);
    print_env(&mut t).success().printed_is(&[
        ("A_HOST", "db.local"),
        ("B_FROM_SCRIPT", "from-b"),
        ("C_URL", "host=db.local b=unset d=unset"),
        ("D_LATER", "later"),
    ]);
}

#[test]
fn with_jobs_a_bad_literal_before_the_scripts_is_reported_like_sequential_mode() {
    // Its value must never reach a script's environment (a NUL byte cannot be passed at all).
    for jobs in ["1", "2"] {
        let mut t = Test::new();
        t.file("env/A", b"a\0b".as_slice());
        t.script("env/B", "#!/bin/sh\ntouch b-ran\necho b\n");
        t.script("env/C", "#!/bin/sh\necho c\n");
        t.args(&["-j", jobs]);
        print_env(&mut t)
            .status(125)
            .error_line(&["env/A", "NUL byte"]);
        assert!(
            !t.exists("b-ran"),
            "-j {jobs}: a script after the bad entry ran"
        );
    }
    let mut t = Test::new();
    t.file("env/A", vec![b'v'; 200_000]);
    t.script("env/B", "#!/bin/sh\necho b\n");
    t.args(&["-j", "2"]);
    print_env(&mut t)
        .status(125)
        .error_line(&["env/A", "200000 bytes"]);
}

#[test]
fn an_entry_that_is_not_a_regular_file_is_an_error() {
    let mut t = Test::new();
    t.dir("env");
    nix::unistd::mkfifo(
        &t.path("env/PIPE"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("mkfifo");
    print_env(&mut t)
        .status(125)
        .error_line(&["env/PIPE", "not a regular file"]);
}

#[test]
fn malformed_and_nul_holding_env_files_are_errors_naming_the_file() {
    for (content, named) in [
        (
            &b"1BAD=x\n"[..],
            &["env/a.env", "line 1", "not a valid variable name"][..],
        ),
        (
            b"GOOD=x\nQ='open\n",
            &["env/a.env", "line 2", "unterminated single quote"],
        ),
        (b"V=a\0b\n", &["env/a.env", "V", "NUL byte"]),
    ] {
        let mut t = Test::new();
        t.file("env/a.env", content);
        print_env(&mut t)
            .status(125)
            .error_line(named)
            .stdout_is("");
    }
}

#[test]
fn an_oversize_literal_is_refused_by_its_size_without_reading_it() {
    let mut t = Test::new();
    t.file("env/HUGE", vec![b'v'; 200_000]);
    print_env(&mut t)
        .status(125)
        .error_line(&["env/HUGE", "200000 bytes", "131072 bytes"]);
}

#[test]
fn an_error_in_a_dotenv_file_never_shows_its_values() {
    // docs/reference.md §5.1: values never appear in logs, even at -v and even when the file is
    // wrong.
    let mut t = Test::new();
    t.file("env/a.env", "TOKEN=sup3rsecret\nBAD LINE\n");
    t.args(&["-v"]);
    print_env(&mut t)
        .status(125)
        .error_line(&["env/a.env", "line 2", "expected KEY=VALUE"])
        .stderr_lacks("sup3rsecret");
}

#[test]
fn names_with_control_characters_are_escaped_so_every_message_stays_one_line() {
    let mut t = Test::new();
    t.dir("export")
        .dir("env/sub\ndir")
        .file("env/bad\nname", "x")
        .file("env/OK", "1");
    t.args(&["-e", "env", "-x", "export", "--print"]);
    let run = t.run();
    run.status(125)
        .error_line(&["env/bad\\nname", "not a valid variable name"]);
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    // A warning, too: the subdirectory is skipped (the bad entry is gone).
    std::fs::remove_file(t.path("env/bad\nname")).unwrap();
    let run = t.run();
    run.success().error_line(&["env/sub\\ndir", "subdirectory"]);
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
}
