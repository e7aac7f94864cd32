//! --print in its three formats, round-tripping nasty values; values never in logs.

use crate::support::*;

const NASTY: &[(&str, &[u8])] = &[
    ("QUOTES", b"it's \"double\" and 'single'"),
    ("DOLLAR", b"$HOME ${PATH} `id` $(id)"),
    ("BACKSLASH", b"C:\\path\\n not a newline \\\\"),
    ("NEWLINES", b"line 1\nline 2\n\nline 4"),
    ("SPACES", b"  leading and trailing  "),
    ("HASH", b"# not a comment"),
    ("EMPTY", b""),
    ("BYTES", &[0xff, 0xfe, b'\'', 0x80, b'\r', b'x']),
];

fn nasty_environment(t: &Test) {
    for (name, value) in NASTY {
        // A trailing newline would be stripped; these values have none to lose.
        t.file(&format!("env/{name}"), value);
    }
    t.dir("export");
}

fn sorted_nasty() -> Vec<(&'static str, &'static [u8])> {
    let mut sorted = NASTY.to_vec();
    sorted.sort_by_key(|(name, _)| *name);
    sorted
}

#[test]
fn dotenv_output_reads_back_unchanged() {
    let mut t = Test::new();
    nasty_environment(&t);
    t.args(&["-x", "export", "-e", "env", "--print"]);
    let first = t.run();
    first.success();

    // Feed the printed lines back as a .env file: the same variables come out.
    let mut again = Test::new();
    again.file("env/printed.env", &first.stdout).dir("export");
    again.args(&["-x", "export", "-e", "env", "--print", "dotenv"]);
    let second = again.run();
    second.success();
    assert_eq!(second.stdout, first.stdout);

    // And the command sees exactly the original bytes.
    for (name, value) in sorted_nasty() {
        let mut exec = Test::new();
        exec.file("env/printed.env", &first.stdout).dir("export");
        exec.args(&["-x", "export", "-e", "env", "--", "/bin/sh", "-c"])
            .args(&[format!("printf %s \"${name}\"")]);
        let run = exec.run();
        run.success();
        assert_eq!(run.stdout, value, "{name}");
    }
}

#[test]
fn shell_output_is_safe_for_eval() {
    let mut t = Test::new();
    nasty_environment(&t);
    t.args(&["-x", "export", "-e", "env", "--print", "shell"]);
    let printed = t.run();
    printed.success();
    assert!(printed.stdout().starts_with("export BACKSLASH='"));
    t.file("printed.sh", &printed.stdout);
    for (name, value) in sorted_nasty() {
        let mut sh = t.external("/bin/sh");
        sh.arg("-c")
            .arg(format!(". ./printed.sh && printf %s \"${name}\""))
            .env_clear();
        let run = t.run_command(sh);
        run.success();
        assert_eq!(run.stdout, value, "{name}");
    }
}

#[test]
fn json_output_is_one_object_in_order_and_replaces_invalid_utf8() {
    let mut t = Test::new();
    nasty_environment(&t);
    t.file("env/ZZ_FIRST_SET_LAST", "z");
    t.args(&["-x", "export", "-e", "env", "--print", "json"]);
    let run = t.run();
    run.success().error_line(&["BYTES", "not UTF-8"]);
    let parsed: serde_json::Value = serde_json::from_slice(&run.stdout).expect("valid JSON");
    let object = parsed.as_object().expect("one object");
    for (name, value) in NASTY {
        let expected = String::from_utf8_lossy(value);
        assert_eq!(object[*name].as_str(), Some(expected.as_ref()), "{name}");
    }
    let stdout = run.stdout();
    let keys: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix('"'))
        .filter_map(|line| line.split('"').next())
        .collect();
    let mut expected: Vec<&str> = sorted_nasty().iter().map(|(n, _)| *n).collect();
    expected.push("ZZ_FIRST_SET_LAST");
    assert_eq!(keys, expected);
}

#[test]
fn variables_are_printed_in_the_order_they_were_first_set() {
    let mut t = Test::new();
    t.file("a/B", "1")
        .file("a/C", "2")
        .file("b/A", "3")
        .file("b/B", "4");
    t.dir("export");
    t.args(&["-x", "export", "-e", "a", "-e", "b", "--print"]);
    t.run()
        .success()
        .printed_is(&[("B", "4"), ("C", "2"), ("A", "3")]);
}

#[test]
fn verbose_logs_scripts_durations_and_names_but_never_values() {
    let mut t = Test::new();
    t.script("env/SECRET", "#!/bin/sh\necho hunter2-secret\n");
    t.file("env/db.env", "DB_PASSWORD=s3cr3t-literal\n");
    t.dir("export");
    t.args(&["-v", "-x", "export", "-e", "env", "--", "true"]);
    t.run()
        .success()
        .error_line(&["env/SECRET", "SECRET", "ms"])
        .error_line(&["env/db.env", "DB_PASSWORD"])
        .stderr_lacks("hunter2-secret")
        .stderr_lacks("s3cr3t-literal");
}

#[test]
fn quiet_hides_warnings_and_every_log_line_starts_with_the_prefix() {
    let mut t = Test::new();
    t.file("env/sub/X", "x");
    t.dir("export");
    t.args(&["-q", "-x", "export", "-e", "env", "--", "true"]);
    let run = t.run();
    run.success();
    assert_eq!(run.stderr, "");

    let mut t = Test::new();
    t.file("env/sub/X", "x");
    t.dir("export");
    t.env("RUST_LOG", "debug")
        .args(&["-x", "export", "-e", "env", "--", "true"]);
    let run = t.run();
    run.success().stderr_has("subdirectory");
    assert!(
        run.stderr.lines().all(|l| l.starts_with("envharness: ")),
        "{}",
        run.stderr
    );
}
