//! What users install: `make install` into a temporary DESTDIR (the binary, the man page and
//! the completions, then `make uninstall`), what `make dist` wrote (both static binaries, the
//! Debian packages and SHA256SUMS), and the amd64 package installed with `dpkg -i`, run, read
//! with `man`, and removed.
//!
//! `make test` runs `make dist` (which builds the binaries and `make docs`) first and says so
//! with `ENVHARNESS_TEST_PACKAGING=required`: then nothing here may be missing. The package is
//! installed on the machine itself, so that test needs root and dpkg, and runs under
//! `ENVHARNESS_TEST_SYSTEM=required`; it refuses to run where an envharness package is
//! installed already, and removes its own even when it fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::containers::{bounded_by, succeeds};
use crate::support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// A `make` whose prerequisites are built takes seconds; one that builds them, minutes.
const MAKE_LIMIT: Duration = Duration::from_secs(300);
/// The installed files under PREFIX, and their modes.
const INSTALLED: &[(&str, u32)] = &[
    ("bin/envharness", 0o755),
    ("share/man/man1/envharness.1", 0o644),
    ("share/bash-completion/completions/envharness", 0o644),
    ("share/zsh/site-functions/_envharness", 0o644),
    ("share/fish/vendor_completions.d/envharness.fish", 0o644),
];

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether `paths` exist (what `make` built before the tests); if not, says so and whether
/// that is a failure.
fn built(paths: &[&Path], by: &str) -> bool {
    match paths.iter().find(|path| !path.exists()) {
        None => true,
        Some(missing) => {
            unavailable(
                "ENVHARNESS_TEST_PACKAGING",
                &format!("{} is missing (`{by}` makes it)", missing.display()),
            );
            false
        }
    }
}

/// The man page rendered as `man` shows it, plain text, each run of white space one space
/// (the page's lines are filled to the width).
fn rendered(man: &mut Command) -> String {
    man.env("MANPAGER", "cat")
        .env("MANWIDTH", "250")
        .env("LANG", "C.UTF-8");
    let page = stdout(&succeeds(man, RUN_LIMIT));
    // man-db without a terminal still marks bold and underline with backspaces.
    let mut plain = String::new();
    for c in page.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What the man page must show: the run's options, the kv subcommand with its own, the
/// examples and the exit statuses.
fn assert_is_the_man_page(page: &str) {
    for text in [
        "envharness - A container entrypoint",
        "-e, --environment <DIR>",
        "--init",
        "THE KV SUBCOMMAND",
        "envharness kv get [--wait] <KEY>",
        "envharness kv list [--wait] [--keys] [--json] [PREFIX]",
        "EXAMPLES",
        "EXIT STATUS",
        "127 the command was not found",
    ] {
        assert!(page.contains(text), "the man page lacks {text:?}:\n{page}");
    }
}

/// bash's completions of `words` (the last being completed) from the script at `path`.
fn bash_completes(path: &Path, words: &[&str]) -> Vec<String> {
    let script = format!(
        "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
         COMP_POINT=${{#COMP_LINE}}; _envharness envharness {} {}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display(),
        words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        words.len() - 1,
        words.last().map_or("''".into(), |w| format!("'{w}'")),
        words[words.len() - 2],
    );
    let output = succeeds(
        Command::new("bash")
            .args(["--norc", "-c", &script])
            .env_clear()
            .env("PATH", PATH),
        RUN_LIMIT,
    );
    stdout(&output).lines().map(str::to_owned).collect()
}

fn assert_completes(path: &Path, words: &[&str], expected: &[&str]) {
    let got = bash_completes(path, words);
    for word in expected {
        assert!(
            got.iter().any(|g| g == word),
            "bash completes {words:?} without {word:?}: {got:?}"
        );
    }
}

#[test]
fn make_install_puts_the_binary_man_page_and_completions_under_destdir() {
    // What the README tells a user to run; the test runs the same, under a DESTDIR.
    assert_eq!(
        readme_block("install session"),
        "make install\nenvharness --help\nman envharness\n"
    );
    let docs = Path::new(ROOT).join("target/docs/man/man1/envharness.1");
    if !built(&[&static_binary(), &docs], "make docs") {
        return;
    }
    let t = Test::new();
    let destdir = t.p("destdir");
    succeeds(
        make().args([
            "-s",
            "install",
            &format!("DESTDIR={destdir}"),
            "PREFIX=/usr/local",
        ]),
        MAKE_LIMIT,
    );
    let prefix = t.path("destdir/usr/local");
    for (relative, mode) in INSTALLED {
        let path = prefix.join(relative);
        let metadata = fs::metadata(&path)
            .unwrap_or_else(|err| panic!("make install wrote no {relative}: {err}"));
        assert_eq!(
            metadata.permissions().mode() & 0o777,
            *mode,
            "{relative}'s mode"
        );
    }
    let binary = prefix.join("bin/envharness");
    assert!(
        fs::read(&binary).unwrap() == fs::read(static_binary()).unwrap(),
        "the installed binary is not the static one"
    );
    let mut help = t.external(&binary);
    help.arg("--help");
    t.run_command(help)
        .success()
        .stdout_has("Usage: envharness [OPTIONS] [COMMAND]...");

    let man = prefix.join("share/man/man1/envharness.1");
    assert_is_the_man_page(&rendered(Command::new("man").arg("-l").arg(&man)));
    let bash = prefix.join("share/bash-completion/completions/envharness");
    assert_completes(
        &bash,
        &["envharness", "--env"],
        &["--environment", "--environment-root"],
    );
    assert_completes(
        &bash,
        &["envharness", "kv", ""],
        &["get", "put", "del", "list"],
    );
    assert_completes(
        &bash,
        &["envharness", "kv", "list", "--"],
        &["--keys", "--json", "--wait"],
    );
    let zsh = fs::read_to_string(prefix.join("share/zsh/site-functions/_envharness")).unwrap();
    assert!(zsh.starts_with("#compdef envharness"), "{zsh}");
    let fish =
        fs::read_to_string(prefix.join("share/fish/vendor_completions.d/envharness.fish")).unwrap();
    assert!(fish.contains("complete -c envharness") && fish.contains("-l environment"));

    succeeds(
        make().args([
            "-s",
            "uninstall",
            &format!("DESTDIR={destdir}"),
            "PREFIX=/usr/local",
        ]),
        MAKE_LIMIT,
    );
    for (relative, _) in INSTALLED {
        assert!(
            !prefix.join(relative).exists(),
            "make uninstall left {relative}"
        );
    }
}

/// What `make dist` wrote, or `None` after saying why it is missing.
fn dist() -> Option<PathBuf> {
    let dir = std::env::var_os("ENVHARNESS_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target/dist"));
    built(&[&dir.join("SHA256SUMS")], "make dist").then_some(dir)
}

/// The package of `arch` unpacked into `into`; its control file.
fn unpack(deb: &Path, into: &Path) -> String {
    succeeds(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(into),
        RUN_LIMIT,
    );
    stdout(&succeeds(
        Command::new("dpkg-deb").arg("-f").arg(deb),
        RUN_LIMIT,
    ))
}

#[test]
fn make_dist_wrote_both_static_binaries_the_packages_and_their_sums() {
    let Some(dir) = dist() else {
        return;
    };
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("reading target/dist")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let binaries = [
        (
            format!("envharness-{VERSION}-aarch64-linux-musl"),
            "ARM aarch64",
            "arm64",
        ),
        (
            format!("envharness-{VERSION}-x86_64-linux-musl"),
            "x86-64",
            "amd64",
        ),
    ];
    let debs: Vec<String> = binaries
        .iter()
        .map(|(_, _, arch)| format!("envharness_{VERSION}_{arch}.deb"))
        .collect();
    let mut expected: Vec<String> = vec!["SHA256SUMS".into()];
    expected.extend(binaries.iter().map(|(name, _, _)| name.clone()));
    expected.extend(debs.iter().cloned());
    expected.sort();
    assert_eq!(names, expected, "target/dist");

    let check = succeeds(
        Command::new("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(&dir),
        RUN_LIMIT,
    );
    // The README shows this check and what it prints.
    assert_eq!(
        readme_block("dist session"),
        format!(
            "$ make dist\n$ cd target/dist && sha256sum --check SHA256SUMS\n{}",
            stdout(&check)
        ),
        "README.md's make dist session"
    );
    let mut checked: Vec<String> = stdout(&check).lines().map(str::to_owned).collect();
    checked.sort();
    let mut all: Vec<String> = expected
        .iter()
        .filter(|name| *name != "SHA256SUMS")
        .map(|name| format!("{name}: OK"))
        .collect();
    all.sort();
    assert_eq!(checked, all, "SHA256SUMS");

    for ((binary, kind, arch), deb) in binaries.iter().zip(&debs) {
        let path = dir.join(binary);
        let file = stdout(&succeeds(Command::new("file").arg(&path), RUN_LIMIT));
        assert!(
            file.contains(kind) && file.contains("statically linked"),
            "{binary}: {file}"
        );
        let t = Test::new();
        let control = unpack(&dir.join(deb), &t.path("root"));
        for field in [
            "Package: envharness\n".to_owned(),
            format!("Version: {VERSION}\n"),
            format!("Architecture: {arch}\n"),
        ] {
            assert!(
                control.contains(&field),
                "{deb} lacks {field:?}:\n{control}"
            );
        }
        assert!(
            fs::read(t.path("root/usr/bin/envharness")).unwrap() == fs::read(&path).unwrap(),
            "{deb}'s /usr/bin/envharness is not {binary}"
        );
        for file in [
            "usr/share/man/man1/envharness.1.gz",
            "usr/share/bash-completion/completions/envharness",
            "usr/share/zsh/vendor-completions/_envharness",
            "usr/share/fish/vendor_completions.d/envharness.fish",
            "usr/share/doc/envharness/copyright",
        ] {
            assert!(t.path("root").join(file).is_file(), "{deb} lacks /{file}");
        }
    }
}

/// Removes the package when the test ends, passed or failed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = bounded_by(
            Command::new("dpkg").args(["-r", "envharness"]),
            Duration::from_secs(60),
        );
    }
}

/// Whether dpkg's configuration keeps man pages out (`path-exclude=/usr/share/man/*`, as
/// Debian's container images have in /etc/dpkg/dpkg.cfg.d/).
fn dpkg_excludes_man_pages() -> bool {
    fs::read_dir("/etc/dpkg/dpkg.cfg.d").is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            fs::read_to_string(entry.path()).is_ok_and(|text| {
                text.lines()
                    .any(|line| line.starts_with("path-exclude") && line.contains("/usr/share/man"))
            })
        })
    })
}

#[test]
fn the_debian_package_installs_runs_shows_its_man_page_and_removes() {
    let Some(dir) = dist() else {
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        unavailable("ENVHARNESS_TEST_SYSTEM", "dpkg -i needs root");
        return;
    }
    let status = output(Command::new("dpkg-query").args(["-W", "-f", "${Status}", "envharness"]))
        .expect("running dpkg-query");
    assert!(
        !stdout(&status).ends_with(" installed"),
        "a package envharness is installed on this machine: this test would replace it"
    );
    // As the README shows it, in the repository.
    let deb = format!("target/dist/envharness_{VERSION}_amd64.deb");
    assert_eq!(
        readme_block("package session"),
        format!("dpkg -i {deb}\ndpkg -r envharness\n")
    );
    let deb = dir.join(format!("envharness_{VERSION}_amd64.deb"));
    let installed = Installed;
    succeeds(
        Command::new("dpkg").arg("-i").arg(&deb),
        Duration::from_secs(60),
    );

    let t = Test::new();
    let mut help = t.external("envharness");
    help.arg("--help");
    t.run_command(help)
        .success()
        .stdout_has("Usage: envharness [OPTIONS] [COMMAND]...");
    let files = stdout(&succeeds(
        Command::new("dpkg").args(["--listfiles", "envharness"]),
        RUN_LIMIT,
    ));
    for file in [
        "/usr/bin/envharness",
        "/usr/share/man/man1/envharness.1.gz",
        "/usr/share/bash-completion/completions/envharness",
    ] {
        assert!(
            files.lines().any(|line| line == file),
            "dpkg -L lacks {file}:\n{files}"
        );
    }
    assert_completes(
        Path::new("/usr/share/bash-completion/completions/envharness"),
        &["envharness", "kv", ""],
        &["get", "put", "del", "list"],
    );
    if dpkg_excludes_man_pages() {
        // dpkg listed the page but did not unpack it: read the one in the package.
        eprintln!("packaging: dpkg excludes /usr/share/man here; man -l on the package's page");
        let root = t.path("unpacked");
        unpack(&deb, &root);
        assert_is_the_man_page(&rendered(
            Command::new("man")
                .arg("-l")
                .arg(root.join("usr/share/man/man1/envharness.1.gz")),
        ));
    } else {
        assert_is_the_man_page(&rendered(Command::new("man").arg("envharness")));
    }

    drop(installed);
    assert!(
        !Path::new("/usr/bin/envharness").exists(),
        "dpkg -r left /usr/bin/envharness"
    );
    let status = output(Command::new("dpkg-query").args(["-W", "-f", "${Status}", "envharness"]))
        .expect("running dpkg-query");
    assert!(
        !stdout(&status).ends_with(" installed"),
        "envharness is still installed: {}",
        stdout(&status)
    );
}
