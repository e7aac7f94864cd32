//! Templates (docs/reference.md §9): `-t SRC:DEST` rendered with the final environment, strictly,
//! without escaping, atomically and only when the output changed; a directory SRC; every bad input
//! a 125 naming the file and the reason, with nothing written; `--plan`; `--watch` re-renders.

use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use crate::support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A test with an empty export directory and `env/` holding `vars` as literals.
fn with_env(vars: &[(&str, &str)]) -> Test {
    let t = Test::new();
    t.dir("export").dir("env").dir("out");
    for (name, value) in vars {
        t.file(&format!("env/{name}"), value);
    }
    t
}

/// `-x export -e env`, the `-t` flags, then `rest`.
fn run_with(t: &mut Test, templates: &[&str], rest: &[&str]) -> Run {
    t.args(&["-x", "export", "-e", "env"]);
    for template in templates {
        t.args(&["-t", template]);
    }
    t.args(rest).run()
}

fn mode(t: &Test, relative: &str) -> u32 {
    fs::metadata(t.path(relative))
        .expect("stat")
        .permissions()
        .mode()
        & 0o777
}

/// The names in `dir` other than the ones listed, e.g. temporary files left behind.
fn others_in(t: &Test, dir: &str, expected: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(t.path(dir))
        .expect("listing")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !expected.contains(&name.as_str()))
        .collect();
    names.sort();
    names
}

#[test]
fn a_file_renders_with_names_and_env_the_final_newline_and_no_escaping() {
    let mut t = with_env(&[
        ("HOST", "db.internal"),
        ("PORT", "5432"),
        ("TAG", "<b>&\"x\""),
    ]);
    t.env("FROM_HARNESS", "kept");
    // An .html name: minijinja would escape it by default, Jinja2 does not.
    t.file(
        "page.html",
        "host={{ HOST }}:{{ env['PORT'] | int + 1 }}\n\
         tag={{ TAG }}\n\
         harness={{ FROM_HARNESS }} path={{ env.PATH }}\n\
         {{ MISSING | default('fallback') }}{% if ALSO_MISSING is defined %}no{% endif %}\n\
         {{ HOST | upper | replace('.', '-') }} {{ 'a,b' | split(',') | join('+') }} {{ PORT | tojson }}\n",
    );
    fs::set_permissions(t.path("page.html"), fs::Permissions::from_mode(0o640)).unwrap();
    run_with(&mut t, &["page.html:out/page.html"], &["--", "true"]).success();
    assert_eq!(
        t.read("out/page.html"),
        format!(
            "host=db.internal:5433\ntag=<b>&\"x\"\nharness=kept path={PATH}\nfallback\n\
             DB-INTERNAL a+b \"5432\"\n"
        )
    );
    assert_eq!(mode(&t, "out/page.html"), 0o640, "SRC's permission bits");
    assert!(others_in(&t, "out", &["page.html"]).is_empty());
}

#[test]
fn the_command_and_print_see_the_rendered_file() {
    let mut t = with_env(&[("V", "one")]);
    t.file("a.j2", "v={{ V }}\n");
    let run = run_with(&mut t, &["a.j2:out/a"], &["--", "cat", "out/a"]);
    run.success().stdout_is("v=one\n");

    let mut t = with_env(&[("V", "two")]);
    t.file("a.j2", "v={{ V }}\n");
    run_with(&mut t, &["a.j2:out/a"], &["--print"])
        .success()
        .printed_is(&[("V", "two")]);
    assert_eq!(t.read("out/a"), "v=two\n");

    let mut t = with_env(&[("V", "three")]);
    t.file("a.j2", "v={{ V }}\n");
    run_with(&mut t, &["a.j2:out/a"], &["--init", "--", "cat", "out/a"])
        .success()
        .stdout_is("v=three\n");
}

#[test]
fn templates_come_from_the_variable_separated_by_whitespace_and_the_flag_beats_it() {
    let mut t = with_env(&[("V", "x")]);
    t.file("a.j2", "a{{ V }}").file("b.j2", "b{{ V }}");
    t.env("ENVHARNESS_TEMPLATE", " a.j2:out/a \n\tb.j2:out/b ");
    run_with(&mut t, &[], &["--", "true"]).success();
    assert_eq!(
        (t.read("out/a"), t.read("out/b")),
        ("ax".into(), "bx".into())
    );

    let mut t = with_env(&[("V", "y")]);
    t.file("a.j2", "a{{ V }}").file("b.j2", "b{{ V }}");
    t.env("ENVHARNESS_TEMPLATE", "a.j2:out/a");
    run_with(&mut t, &["b.j2:out/b"], &["--", "true"]).success();
    assert!(!t.exists("out/a"), "the flag replaces the variable");
    assert_eq!(t.read("out/b"), "by");
}

#[test]
fn a_directory_renders_each_entry_under_the_entry_rules_and_creates_dest() {
    let mut t = with_env(&[("N", "7")]);
    t.file("tpl/app.conf.j2", "n={{ N }}\n")
        .file("tpl/site.template", "site {{ N }}")
        .file("tpl/plain.txt", "plain {{ N }}")
        .script("tpl/run.sh", "#!/bin/sh\necho {{ N }}\n")
        .file("tpl/.hidden", "{{ UNDEFINED }}")
        .file("tpl/backup~", "{{ UNDEFINED }}")
        .file("tpl/README.md", "{{ UNDEFINED }}")
        .file("tpl/sub/inner.j2", "{{ UNDEFINED }}");
    let run = run_with(&mut t, &["tpl:out/deep/conf.d"], &["--", "true"]);
    run.success()
        .error_line(&["tpl/sub", "subdirectory, skipped"]);
    assert_eq!(t.read("out/deep/conf.d/app.conf"), "n=7\n");
    assert_eq!(t.read("out/deep/conf.d/site"), "site 7");
    assert_eq!(t.read("out/deep/conf.d/plain.txt"), "plain 7");
    assert_eq!(t.read("out/deep/conf.d/run.sh"), "#!/bin/sh\necho 7\n");
    assert_eq!(mode(&t, "out/deep/conf.d/run.sh"), 0o755);
    assert_eq!(
        others_in(
            &t,
            "out/deep/conf.d",
            &["app.conf", "site", "plain.txt", "run.sh"]
        ),
        Vec::<String>::new()
    );
}

#[test]
fn an_entry_gone_from_a_directory_src_leaves_its_dest() {
    let mut t = with_env(&[("N", "1")]);
    t.file("tpl/a.j2", "a").file("tpl/b.j2", "b");
    run_with(&mut t, &["tpl:out/d"], &["--", "true"]).success();
    fs::remove_file(t.path("tpl/b.j2")).unwrap();
    t.run().success();
    assert_eq!(t.read("out/d/b"), "b");
}

#[test]
fn an_unchanged_output_leaves_dest_untouched() {
    let mut t = with_env(&[("V", "same")]);
    t.file("a.j2", "v={{ V }}\n");
    t.file("out/a", "v=same\n");
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(t.path("out/a"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let inode = fs::metadata(t.path("out/a")).unwrap().ino();
    run_with(&mut t, &["a.j2:out/a"], &["--", "true"]).success();
    let meta = fs::metadata(t.path("out/a")).unwrap();
    assert_eq!(meta.modified().unwrap(), old, "mtime kept");
    assert_eq!(meta.ino(), inode, "not replaced");
    assert_eq!(mode(&t, "out/a"), 0o644);

    // A changed output replaces it: a new file (renamed over it), the new content.
    fs::write(t.path("env/V"), "other").unwrap();
    t.run().success();
    assert_eq!(t.read("out/a"), "v=other\n");
    assert_ne!(fs::metadata(t.path("out/a")).unwrap().ino(), inode);
}

#[test]
fn an_undefined_name_is_an_error_naming_the_template_line_and_name() {
    let mut t = with_env(&[("A", "a")]);
    t.file(
        "bad.j2",
        "{{ A }}\n{{ B | default('b') }} {% if C is defined %}{% endif %}{{ D }}\n",
    );
    run_with(&mut t, &["bad.j2:out/bad"], &["--", "touch", "ran"])
        .status(125)
        .error_line(&["bad.j2", "line 2", "D is undefined"]);
    assert!(!t.exists("out/bad") && !t.exists("ran"));

    let mut t = with_env(&[]);
    t.file("env.j2", "x\n\n{{ env['NOPE'] }}\n");
    run_with(&mut t, &["env.j2:out/e"], &["--print"])
        .status(125)
        .error_line(&["env.j2", "line 3", "NOPE is undefined"]);
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let mut t = with_env(&[]);
    t.file("syn.j2", "ok\nok\n{% for x in %}\n{% endfor %}\n");
    run_with(&mut t, &["syn.j2:out/s"], &["--", "touch", "ran"])
        .status(125)
        .error_line(&["syn.j2", "line 3", "syntax error"]);
    assert!(!t.exists("out/s") && !t.exists("ran"));
}

#[test]
fn one_failure_writes_none() {
    let mut t = with_env(&[("V", "v")]);
    t.file("good.j2", "{{ V }}").file("bad.j2", "{{ NOPE }}");
    t.file("out/kept", "old");
    run_with(
        &mut t,
        &["good.j2:out/good", "good.j2:out/kept", "bad.j2:out/bad"],
        &["--", "true"],
    )
    .status(125)
    .error_line(&["bad.j2", "NOPE is undefined"]);
    assert!(!t.exists("out/good"));
    assert_eq!(t.read("out/kept"), "old");
    assert!(others_in(&t, "out", &["kept"]).is_empty());
}

#[test]
fn a_non_utf8_value_is_an_error_only_when_the_template_uses_it() {
    let bytes = std::ffi::OsString::from_vec(b"caf\xe9".to_vec());
    let mut t = with_env(&[]);
    t.env("LATIN1", bytes.clone());
    t.file("uses.j2", "{{ LATIN1 }}").file("other.j2", "ok");
    run_with(&mut t, &["other.j2:out/other"], &["--", "true"]).success();
    assert_eq!(t.read("out/other"), "ok");

    let mut t = with_env(&[]);
    t.env("LATIN1", bytes.clone());
    t.file("uses.j2", "{{ LATIN1 }}");
    run_with(&mut t, &["uses.j2:out/u"], &["--", "true"])
        .status(125)
        .error_line(&["uses.j2", "LATIN1", "not UTF-8"]);
    assert!(!t.exists("out/u"));

    let mut t = with_env(&[]);
    t.env("LATIN1", bytes);
    t.file("map.j2", "{% for k in env %}{{ env[k] }}{% endfor %}");
    run_with(&mut t, &["map.j2:out/m"], &["--", "true"])
        .status(125)
        .error_line(&["map.j2", "LATIN1", "not UTF-8"]);
}

#[test]
fn values_never_reach_stderr() {
    const SECRET: &str = "s3cr3t-value";
    for template in [
        "{{ PASSWORD + 1 }}",
        "{{ PASSWORD }}{{ NOPE }}",
        "{{ PASSWORD | int }}{% for %}",
        "{{ PASSWORD.attr.deeper }}",
        "{{ PASSWORD | nofilter }}",
        "{{ PASSWORD }}",
    ] {
        let mut t = with_env(&[("PASSWORD", SECRET)]);
        t.file("t.j2", template);
        let run = run_with(&mut t, &["t.j2:out/t"], &["-vv", "--", "true"]);
        run.stderr_lacks(SECRET);
        if template == "{{ PASSWORD }}" {
            run.success();
            assert_eq!(t.read("out/t"), SECRET);
        } else {
            run.status(125).error_line(&["t.j2", "line 1"]);
        }
    }
}

#[test]
fn a_missing_src_is_an_error_naming_it() {
    let mut t = with_env(&[]);
    run_with(&mut t, &["nope.j2:out/x"], &["--", "touch", "ran"])
        .status(125)
        .error_line(&["nope.j2", "no such template"]);
    assert!(!t.exists("ran"));
}

#[test]
fn a_file_src_needs_dest_s_directory() {
    let mut t = with_env(&[]);
    t.file("a.j2", "a");
    run_with(&mut t, &["a.j2:missing/dir/a"], &["--", "true"])
        .status(125)
        .error_line(&["missing/dir/a", "its directory missing/dir does not exist"]);
    assert!(!t.exists("missing"));
}

#[test]
fn a_file_src_onto_an_existing_directory_is_an_error() {
    let mut t = with_env(&[]);
    t.file("a.j2", "a");
    run_with(&mut t, &["a.j2:out"], &["--", "true"])
        .status(125)
        .error_line(&["out", "is a directory"]);
}

#[test]
fn a_directory_src_onto_a_file_is_an_error() {
    let mut t = with_env(&[]);
    t.file("tpl/a.j2", "a").file("out/file", "x");
    run_with(&mut t, &["tpl:out/file"], &["--", "true"])
        .status(125)
        .error_line(&["out/file", "not a directory"]);
}

#[test]
fn two_templates_for_one_dest_are_an_error() {
    let mut t = with_env(&[]);
    t.file("tpl/a.conf", "1").file("tpl/a.conf.j2", "2");
    run_with(&mut t, &["tpl:out/d"], &["--", "true"])
        .status(125)
        .error_line(&["out/d/a.conf", "rendered from both"]);
    assert!(!t.exists("out/d"));
}

#[test]
fn src_dest_without_a_colon_is_a_usage_error() {
    let mut t = with_env(&[]);
    run_with(&mut t, &["a.j2"], &["--", "true"])
        .status(125)
        .error_line(&["--template \"a.j2\"", "no ':' between SRC and DEST"]);
    let mut t = with_env(&[]);
    t.env("ENVHARNESS_TEMPLATE", "ok.j2:out/x nocolon");
    run_with(&mut t, &[], &["--", "true"])
        .status(125)
        .error_line(&["nocolon", "no ':'"]);
}

#[test]
fn a_render_over_the_limit_is_an_error_and_writes_nothing() {
    let mut t = with_env(&[]);
    t.env("KILO", "x".repeat(1000));
    t.file(
        "big.j2",
        "{% for i in range(20000) %}{{ KILO }}{% endfor %}",
    );
    run_with(&mut t, &["big.j2:out/big"], &["--", "true"])
        .status(125)
        .error_line(&["big.j2", "more than 16777216 bytes"]);
    assert!(others_in(&t, "out", &[]).is_empty());
}

/// Whether the tests run as root, who ignores permissions.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { nix::libc::geteuid() == 0 }
}

/// The test's command, run as nobody when the tests run as root (who ignores permissions), from
/// a copy of the binary (the build directory may not be open to nobody); the test directory
/// gets `mode`.
fn unprivileged(t: &Test, mode: u32) -> Command {
    let command = t.command();
    if !is_root() {
        return command;
    }
    fs::set_permissions(t.root(), fs::Permissions::from_mode(mode)).unwrap();
    let copy = t.path("envharness");
    while_not_forking(|| fs::copy(BIN, &copy)).unwrap();
    let mut setpriv = t.external("setpriv");
    setpriv
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&copy)
        .args(command.get_args())
        .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))));
    setpriv
}

#[test]
fn an_unwritable_dest_directory_is_an_error_and_leaves_nothing_half_written() {
    let mut t = with_env(&[("V", "new")]);
    t.file("a.j2", "{{ V }}").file("b.j2", "{{ V }}");
    t.dir("writable").file("ro/a", "old");
    fs::set_permissions(t.path("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    t.args(&["-x", "export", "-e", "env"]).args(&[
        "-t",
        "b.j2:writable/b",
        "-t",
        "a.j2:ro/a",
        "--",
        "true",
    ]);
    fs::set_permissions(t.path("writable"), fs::Permissions::from_mode(0o777)).unwrap();
    t.run_command(unprivileged(&t, 0o755))
        .status(125)
        .error_line(&["ro/a", "writing the rendered template", "ermission denied"]);
    assert_eq!(t.read("ro/a"), "old");
    assert!(others_in(&t, "ro", &["a"]).is_empty());
    assert!(
        others_in(&t, "writable", &[]).is_empty(),
        "b was staged, then removed, not renamed"
    );
}

#[test]
fn templates_are_rendered_after_the_requirements() {
    let mut t = with_env(&[]);
    t.file("a.j2", "{{ NEEDED }}");
    run_with(
        &mut t,
        &["a.j2:out/a"],
        &["--require", "NEEDED", "--", "true"],
    )
    .status(125)
    .error_line(&["NEEDED", "required but not set"]);
    assert!(!t.exists("out/a"));
}

#[test]
fn plan_lists_templates_once_and_writes_nothing() {
    let mut t = with_env(&[("V", "v")]);
    t.file("a.j2", "{{ V }}")
        .file("tpl/x.j2", "{{ V }}")
        .file("tpl/y.j2", "{{ V }}");
    let run = run_with(
        &mut t,
        &["a.j2:out/a", "tpl:out/d"],
        &["--plan", "--", "true"],
    );
    run.success();
    let lines: Vec<String> = run
        .stdout()
        .lines()
        .filter(|line| line.starts_with("template "))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, ["template a.j2 -> out/a", "template tpl -> out/d"]);
    assert!(!t.exists("out/a") && !t.exists("out/d"));
}

#[test]
fn plan_reports_a_missing_src_and_a_syntax_error() {
    let mut t = with_env(&[]);
    t.file("tpl/ok.j2", "fine").file("tpl/z.j2", "\n{{ oops");
    let run = run_with(
        &mut t,
        &["gone.j2:out/g", "tpl:out/d"],
        &["--plan", "--", "true"],
    );
    run.status(125)
        .error_line(&["gone.j2", "no such template"])
        .stdout_has("template gone.j2 -> out/g: error (gone.j2: no such template")
        .stdout_has("template tpl -> out/d: error (tpl/z.j2: line 2: syntax error")
        .stdout_has("command: true");
    assert!(others_in(&t, "out", &[]).is_empty());
}

#[test]
fn the_nginx_example_renders_as_the_readme_shows() {
    let marker = "envharness -e examples/templates/environment -t examples/templates/nginx:/tmp/nginx -- cat /tmp/nginx/upstream.conf";
    let readme = fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let block = readme
        .split_once(&format!("<!-- output of: {marker} -->"))
        .expect("README.md shows the example's output")
        .1
        .split("```")
        .nth(1)
        .expect("a fenced block")
        .to_owned();
    let shown: String = block
        .lines()
        .skip_while(|line| line.is_empty() || line.starts_with("$ "))
        .map(|line| format!("{line}\n"))
        .collect();

    let t = Test::new();
    t.dir("export");
    let dest = t.p("nginx");
    let mut command = Command::new(BIN);
    command
        .args(["-x", &t.p("export"), "-e", "examples/templates/environment"])
        .args(["-t", &format!("examples/templates/nginx:{dest}")])
        .args(["--", "cat", &format!("{dest}/upstream.conf")])
        .env_clear()
        .env("PATH", PATH)
        .current_dir(ROOT)
        .stdout(fs::File::create(t.path(".stdout")).unwrap())
        .stderr(fs::File::create(t.path(".stderr")).unwrap());
    let run = t.run_command(command);
    run.success().stdout_is(&shown);
    assert_eq!(t.read("nginx/upstream.conf"), shown);
    assert!(
        !t.exists("nginx/README.md"),
        "documentation is not rendered"
    );
    assert!(run.stdout().contains("server app-2:8080 max_fails=3;"));
}

/// Waits (bounded) until `relative` holds a line equal to `line`.
fn wait_for_line(t: &Test, relative: &str, line: &str) {
    t.wait_until(&format!("{line:?} in {relative}"), || {
        t.lines(relative).iter().any(|l| l == line)
    });
}

/// A command that logs `start CONTENT` of out/app.conf when it starts, `stop CONTENT` on
/// SIGTERM and `usr1 CONTENT` on SIGUSR1. Its sleep starts before the traps, so no SIGTERM is
/// lost in a sleep that has not exec'd yet.
const LOGGER: &str = r#"
sleep 1000 & sleeper=$!
echo "start $(cat out/app.conf)" >> log
trap 'echo "usr1 $(cat out/app.conf)" >> log' USR1
trap 'echo "stop $(cat out/app.conf)" >> log; kill $sleeper 2>/dev/null; exit 0' TERM
while kill -0 $sleeper 2>/dev/null; do wait $sleeper; done
"#;

/// `--init --watch 0` (re-runs on SIGHUP only) with `extra` flags, rendering out/app.conf
/// from `v={{ V }}` for [`LOGGER`].
fn watching(extra: &[&str]) -> Test {
    let mut t = with_env(&[("V", "1")]);
    t.file("app.conf.j2", "v={{ V }}\n");
    t.args(&["--init", "--watch", "0", "-x", "export", "-e", "env"])
        .args(&["-t", "app.conf.j2:out/app.conf"])
        .args(extra)
        .args(&["--", "/bin/sh", "-c", LOGGER]);
    t
}

#[test]
fn under_watch_an_edited_template_restarts_the_command_after_writing() {
    let t = watching(&[]);
    let (child, started) = t.spawn();
    wait_for_line(&t, "log", "start v=1");
    t.file("app.conf.j2", "w={{ V }}\n");
    send(&child, Signal::SIGHUP);
    wait_for_line(&t, "log", "start w=1");
    // Written once the old command had exited: it saw the old file when it stopped.
    wait_for_line(&t, "log", "stop v=1");
    // A variable and the template it feeds: variables by name, then templates by DEST.
    t.file("env/V", "2");
    send(&child, Signal::SIGHUP);
    wait_for_line(&t, "log", "start w=2");
    let run = t.terminate(child, started);
    run.success()
        .error_line(&["out/app.conf changed; restarting the command"])
        .error_line(&["V, out/app.conf changed; restarting the command"]);
    assert_eq!(t.read("out/app.conf"), "w=2\n");
}

#[test]
fn under_watch_with_a_signal_the_file_is_written_before_the_signal() {
    let t = watching(&["--on-change", "USR1"]);
    let (child, started) = t.spawn();
    wait_for_line(&t, "log", "start v=1");
    t.file("app.conf.j2", "w={{ V }}\n");
    send(&child, Signal::SIGHUP);
    wait_for_line(&t, "log", "usr1 w=1");
    let run = t.terminate(child, started);
    run.success()
        .error_line(&["out/app.conf changed; sending SIGUSR1"]);
    let log = t.read("log");
    assert_eq!(log.matches("start").count(), 1, "not restarted: {log}");
}

#[test]
fn under_watch_a_failing_render_warns_and_changes_nothing() {
    let t = watching(&[]);
    let (child, started) = t.spawn();
    wait_for_line(&t, "log", "start v=1");
    let before = fs::metadata(t.path("out/app.conf")).unwrap().ino();
    // The variable changes too, but the template that uses it no longer parses.
    t.file("env/V", "2");
    t.file("app.conf.j2", "{{ V\n");
    send(&child, Signal::SIGHUP);
    t.wait_for_stderr("re-run failed, nothing changed");
    assert_eq!(t.read("out/app.conf"), "v=1\n");
    assert_eq!(fs::metadata(t.path("out/app.conf")).unwrap().ino(), before);
    // The next trigger tries again.
    t.file("app.conf.j2", "v={{ V }}\n");
    send(&child, Signal::SIGHUP);
    wait_for_line(&t, "log", "start v=2");
    let run = t.terminate(child, started);
    run.success()
        .error_line(&["app.conf.j2", "line 1", "syntax error"])
        .error_line(&["V, out/app.conf changed; restarting the command"]);
    assert_eq!(t.read("log").matches("start").count(), 2);
}

#[test]
fn under_watch_no_change_writes_nothing() {
    let t = watching(&["-vv"]);
    let (child, started) = t.spawn();
    wait_for_line(&t, "log", "start v=1");
    let meta = fs::metadata(t.path("out/app.conf")).unwrap();
    send(&child, Signal::SIGHUP);
    t.wait_for_stderr("re-run: no change");
    let after = fs::metadata(t.path("out/app.conf")).unwrap();
    assert_eq!(
        (after.ino(), after.modified().unwrap()),
        (meta.ino(), meta.modified().unwrap())
    );
    t.terminate(child, started).success();
}

#[test]
fn under_watch_an_unwritable_dest_fails_the_re_run_and_the_command_keeps_running() {
    let t = watching(&[]);
    fs::set_permissions(t.path("out"), fs::Permissions::from_mode(0o777)).unwrap();
    let mut command = unprivileged(&t, 0o777);
    let started = Instant::now();
    let child = spawn(&mut command).expect("spawning envharness");
    wait_for_line(&t, "log", "start v=1");
    fs::set_permissions(t.path("out"), fs::Permissions::from_mode(0o555)).unwrap();
    t.file("app.conf.j2", "w={{ V }}\n");
    send(&child, Signal::SIGHUP);
    t.wait_for_stderr("re-run failed, nothing changed");
    assert_eq!(t.read("out/app.conf"), "v=1\n");
    assert!(others_in(&t, "out", &["app.conf"]).is_empty());
    let run = t.terminate(child, started);
    run.success()
        .error_line(&[
            "out/app.conf",
            "writing the rendered template",
            "ermission denied",
        ])
        .stderr_lacks("restarting the command");
    assert_eq!(t.read("log").matches("start").count(), 1);
}

/// A template that works for a while without going over its budget: 250,000 loop turns,
/// about a quarter of the budget (20 ms in a release build, ten times that in a debug one).
const HEAVY: &str = "{% for i in range(500) %}{% for j in range(500) %}{% endfor %}{% endfor %}\n";

#[test]
fn a_template_over_its_budget_is_an_error_naming_it_and_writes_nothing() {
    let mut t = with_env(&[]);
    t.file("ok.j2", "fine\n").file(
        "loop.j2",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n",
    );
    run_with(
        &mut t,
        &["ok.j2:out/ok", "loop.j2:out/loop"],
        &["--", "true"],
    )
    .status(125)
    .error_line(&["loop.j2", "line 1", "exceeded its budget"])
    .faster_than(Duration::from_secs(10));
    assert!(others_in(&t, "out", &[]).is_empty());
}

#[test]
fn a_stop_signal_while_templates_render_stops_the_harness_at_once() {
    let t = with_env(&[]);
    t.script("env/RENDERING", "#!/bin/sh\ntouch rendering\n");
    // 800 of them: several seconds of rendering even in a release build (200 took a release
    // build that rendered on the loop's thread 1.2 s, under the 2 s allowed).
    for i in 0..800 {
        t.file(&format!("heavy/t{i:03}.j2"), HEAVY);
    }
    let mut t = t;
    t.args(&[
        "-x",
        "export",
        "-e",
        "env",
        "-t",
        "heavy:out/heavy",
        "--",
        "true",
    ]);
    let (child, started) = t.spawn();
    t.wait_for("rendering");
    send(&child, Signal::SIGTERM);
    let signalled = Instant::now();
    let run = t.finish(child, started);
    run.status(143);
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "stopped {:?} after SIGTERM\n{}",
        signalled.elapsed(),
        run.stderr
    );
    assert!(!t.exists("out/heavy"), "a template was written");
}
