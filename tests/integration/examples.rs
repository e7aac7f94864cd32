//! The repository's examples, run as a user would run them, so the docs stay true:
//! `environments/development` and `environments/production` with `examples/export`, the
//! shebang script, the Kubernetes ConfigMap layout, the Dockerfiles, and the README's demo.
//! (`containers.rs` builds and runs `examples/Dockerfile.prebuilt`.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn repo(relative: &str) -> String {
    Path::new(ROOT)
        .join(relative)
        .to_string_lossy()
        .into_owned()
}

fn read_repo(relative: &str) -> String {
    fs::read_to_string(repo(relative)).unwrap_or_else(|err| panic!("reading {relative}: {err}"))
}

/// `--print` (dotenv) of an environment directory of the repository, with `examples/export`.
fn print_example(t: &mut Test, environment: &str) -> Run {
    t.args(&[
        "-x".to_string(),
        repo("examples/export"),
        "-e".to_string(),
        repo(environment),
        "--print".to_string(),
    ]);
    t.run()
}

/// What `--print` shows for `environments/development`, in its order.
pub const DEVELOPMENT: &[(&str, &str)] = &[
    ("APP_ENV", "development"),
    ("DB_HOST", "localhost"),
    ("DB_NAME", "app_development"),
    ("DB_PASSWORD", "development"),
    ("DB_PORT", "5432"),
    ("DB_ROLE", "app"),
    (
        "DB_URL",
        "postgres://app:development@localhost:5432/app_development",
    ),
    ("LOG_LEVEL", "debug"),
    ("HTTP_PORT", "8080"),
    ("BRAND_COLOR", "#3366ff"),
    ("GREETING", "Hello from $HOSTNAME"),
    ("BANNER", "development build, \"not for production\""),
];

/// Production with the password `password`, in the order `--print` shows them.
fn production(password: &str) -> Vec<(&'static str, String)> {
    let url = format!("postgres://app:{password}@db.internal.example.com:5432/app?sslmode=require");
    vec![
        ("APP_ENV", "production".into()),
        ("DB_HOST", "db.internal.example.com".into()),
        ("DB_NAME", "app".into()),
        ("DB_PORT", "5432".into()),
        ("DB_ROLE", "app".into()),
        ("DB_URL", url),
        ("LOG_LEVEL", "info".into()),
        ("LOG_FORMAT", "json".into()),
        ("HTTP_PORT", "8080".into()),
        ("BRAND_COLOR", "#3366ff".into()),
        ("GREETING", "Hello from $HOSTNAME".into()),
        ("BANNER", String::new()),
    ]
}

fn borrowed<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn development_prints_the_documented_variables() {
    let mut t = Test::new();
    print_example(&mut t, "environments/development")
        .success()
        .printed_is(DEVELOPMENT)
        .stderr_has("bootstrap: ")
        .stderr_lacks("teardown runs only under --init");
}

/// The fenced block that follows `<!-- output of: ... -->` in README.md.
fn readme_block(marker: &str) -> String {
    let readme = read_repo("README.md");
    let marker = format!("<!-- output of: {marker} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker:?}"))
        .1;
    after
        .split("```")
        .nth(1)
        .expect("a fenced block after the marker")
        .to_owned()
}

#[test]
fn the_readme_demo_output_is_what_make_demo_prints() {
    let block = readme_block("make demo");
    let shown: Vec<&str> = block.lines().filter(|line| line.contains("='")).collect();
    let mut t = Test::new();
    let run = print_example(&mut t, "environments/development");
    run.success();
    let printed = run.stdout();
    let actual: Vec<&str> = printed.lines().collect();
    assert_eq!(shown, actual, "README.md's demo output is out of date");
}

/// `make demo` itself, as a newcomer runs it first: cargo must know which binary to run.
#[test]
fn make_demo_prints_the_readme_demo() {
    let block = readme_block("make demo");
    let shown: Vec<&str> = block.lines().filter(|line| line.contains("='")).collect();
    let out = crate::support::make()
        .args(["-s", "demo"])
        .output()
        .expect("running make demo");
    assert!(
        out.status.success(),
        "make demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let actual: Vec<&str> = printed.lines().filter(|line| line.contains("='")).collect();
    assert_eq!(shown, actual, "make demo does not print README.md's demo");
}

#[test]
fn the_readme_plan_output_is_what_plan_prints() {
    let args = "--plan -x examples/export -e environments/development -- printenv DB_URL";
    let block = readme_block(&format!("envharness {args}"));
    let shown: Vec<&str> = block
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with("$ "))
        .collect();
    let t = Test::new();
    let mut command = Command::new(BIN);
    command
        .args(args.split(' '))
        .env_clear()
        .env("PATH", PATH)
        .current_dir(ROOT)
        .stdout(fs::File::create(t.path(".stdout")).expect("creating .stdout"))
        .stderr(fs::File::create(t.path(".stderr")).expect("creating .stderr"));
    let run = t.run_command(command);
    run.success();
    let printed = run.stdout();
    let actual: Vec<&str> = printed.lines().collect();
    assert_eq!(shown, actual, "README.md's --plan output is out of date");
}

#[test]
fn production_reads_the_password_from_the_secret_file() {
    let mut t = Test::new();
    t.file("secrets/db_password", "from-the-file\n");
    t.env("DB_PASSWORD_FILE", t.p("secrets/db_password"));
    t.env("DB_PASSWORD", "from-the-environment");
    print_example(&mut t, "environments/production")
        .success()
        .printed_is(&borrowed(&production("from-the-file")));
}

#[test]
fn production_falls_back_to_db_password_from_the_environment() {
    let mut t = Test::new();
    t.env("DB_PASSWORD_FILE", t.p("no/such/file"));
    t.env("DB_PASSWORD", "from-the-environment");
    print_example(&mut t, "environments/production")
        .success()
        .printed_is(&borrowed(&production("from-the-environment")));
}

#[test]
fn production_without_a_password_does_not_start() {
    let mut t = Test::new();
    t.env("DB_PASSWORD_FILE", t.p("no/such/file"));
    print_example(&mut t, "environments/production")
        .status(125)
        .stderr_has("no database password")
        .error_line(&["environments/production/DB_URL", "exited with status 1"]);
}

/// The action `--plan` shows for `name` (the text after the name on its line).
fn planned<'a>(plan: &'a str, name: &str) -> &'a str {
    plan.lines()
        .find_map(|line| {
            let line = line.strip_prefix("  ")?;
            let (first, rest) = line.split_once(' ')?;
            (first == name).then(|| rest.trim_start())
        })
        .unwrap_or_else(|| panic!("--plan does not list {name}:\n{plan}"))
}

#[test]
fn plan_of_both_environments_has_no_errors() {
    for environment in ["environments/development", "environments/production"] {
        let mut t = Test::new();
        t.args(&[
            "--plan".to_string(),
            "-x".to_string(),
            repo("examples/export"),
            "-e".to_string(),
            repo(environment),
            "--".to_string(),
            "printenv".to_string(),
            "DB_URL".to_string(),
        ]);
        let run = t.run();
        run.success()
            .stdout_has("command: printenv DB_URL (")
            .stderr_lacks("envharness:");
        let plan = run.stdout();
        let expected = [
            ("bootstrap", "run (first)"),
            ("teardown", "ignored (teardown runs only under --init)"),
            ("APP_ENV", "literal"),
            ("DB_HOST", "literal"),
            ("DB_URL", "run"),
            ("README.md", "ignored (documentation)"),
            ("app.env", "dotenv"),
        ];
        for (name, action) in expected {
            assert_eq!(
                planned(&plan, name),
                action,
                "{environment}: {name}\n{plan}"
            );
        }
    }
}

#[test]
fn shebang_script_runs_with_the_variables_and_its_arguments() {
    let t = Test::new();
    t.file("env/APP_ENV", "shebang-test\n");
    t.file("env/DB_HOST", "db.test\n");
    t.script(
        "env/DB_URL",
        "#!/bin/sh\necho \"postgres://$DB_HOST/app\"\n",
    );
    t.dir("export");

    let example = read_repo("examples/shebang-script");
    let (first_line, body) = example.split_once('\n').expect("a #! line and a body");
    assert_eq!(
        first_line,
        "#!/usr/local/bin/envharness -e /app/env -- /bin/sh"
    );
    let rewritten = first_line
        .replace("/usr/local/bin/envharness", BIN)
        .replace("/app/env", &t.p("env"));
    t.script("shebang-script", &format!("{rewritten}\n{body}"));

    let mut command = t.external(t.path("shebang-script"));
    command
        .args(["one", "two words"])
        // A hermetic export directory, whatever the machine has at /export.
        .env("ENVHARNESS_EXPORT", t.p("export"));
    t.run_command(command).success().stdout_is(
        "environment: shebang-test\n\
         database: postgres://db.test/app\n\
         argument: one\n\
         argument: two words\n",
    );
}

/// Lays `source`'s files out the way Kubernetes mounts a ConfigMap volume: the real files in a
/// timestamped dot-directory, `..data` pointing at it, and one symlink per key.
fn kubernetes_layout(t: &Test, source: &Path, volume: &str) {
    let stamp = "..2024_05_01_12_00_00.123456789";
    t.dir(&format!("{volume}/{stamp}"));
    let mut names: Vec<_> = fs::read_dir(source)
        .expect("reading the environment directory")
        .map(|entry| entry.expect("a directory entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        let from = source.join(&name);
        let to = t.path(&format!("{volume}/{stamp}/{name}"));
        while_not_forking(|| fs::copy(&from, &to))
            .expect("copying an entry (permissions included)");
        t.symlink(&format!("{volume}/{name}"), &format!("..data/{name}"));
    }
    t.symlink(&format!("{volume}/..data"), stamp);
}

#[test]
fn a_kubernetes_configmap_volume_layout_gives_the_same_variables() {
    let mut t = Test::new();
    kubernetes_layout(
        &t,
        &PathBuf::from(repo("environments/production")),
        "volume",
    );
    t.env("DB_PASSWORD", "from-the-environment");
    t.env("DB_PASSWORD_FILE", t.p("no/such/file"));
    t.args(&["-x", "no-export", "-e", "volume", "--print"]);
    t.dir("no-export");
    t.run()
        .success()
        .printed_is(&borrowed(&production("from-the-environment")));
}

#[test]
fn the_configmap_example_holds_the_production_entries() {
    let yaml = read_repo("examples/kubernetes/configmap.yaml");
    let dir = repo("environments/production");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("reading environments/production")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| !name.ends_with(".md"))
        .collect();
    names.sort();
    for name in names {
        let content = fs::read_to_string(Path::new(&dir).join(&name)).expect("reading an entry");
        let value = content.strip_suffix('\n').unwrap_or(&content);
        if value.contains('\n') {
            let mut block = format!("  {name}: |\n");
            for line in value.lines() {
                if !line.is_empty() {
                    block.push_str("    ");
                    block.push_str(line);
                }
                block.push('\n');
            }
            assert!(
                yaml.contains(&block),
                "configmap.yaml lacks {name} as in environments/production:\n{block}"
            );
        } else {
            let plain = format!("\n  {name}: {value}\n");
            let quoted = format!("\n  {name}: \"{value}\"\n");
            assert!(
                yaml.contains(&plain) || yaml.contains(&quoted),
                "configmap.yaml lacks `{name}: {value}`"
            );
        }
        assert!(
            yaml.contains(&format!("key: {name}, path: {name}")),
            "configmap.yaml does not mount {name}"
        );
    }
}

#[test]
fn the_dockerfiles_copy_paths_that_exist() {
    let entrypoints = [
        ("examples/Dockerfile", "ENTRYPOINT [\"envharness\", \"--\"]"),
        (
            "examples/Dockerfile.alpine",
            "ENTRYPOINT [\"envharness\", \"--\"]",
        ),
        (
            "examples/Dockerfile.scratch",
            "ENTRYPOINT [\"envharness\", \"--init\", \"--\"]",
        ),
    ];
    for (file, entrypoint) in entrypoints {
        let dockerfile = read_repo(file);
        assert!(dockerfile.contains(entrypoint), "{file}: {entrypoint}");
        assert!(
            dockerfile.contains("COPY examples/export /export"),
            "{file}"
        );
        for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words[1].starts_with("--from") {
                continue;
            }
            for source in &words[1..words.len() - 1] {
                assert!(
                    Path::new(ROOT).join(source).exists(),
                    "{file} copies {source}, which is not in the repository"
                );
            }
        }
    }
}

#[test]
fn the_compose_file_mounts_directories_that_exist() {
    let compose = read_repo("examples/docker-compose.yml");
    let mounts: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ../"))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(
        mounts,
        ["environments/development", "environments/production"]
    );
    for mount in mounts {
        assert!(Path::new(ROOT).join(mount).is_dir(), "{mount}");
    }
}

/// Every service of both compose files runs the example image `make image` builds and never
/// pulls: the files work offline as users run them (`compose.rs` runs them).
#[test]
fn the_compose_files_run_the_image_make_image_builds_without_pulling() {
    let makefile = read_repo("Makefile");
    assert!(makefile.contains("-t localhost/envharness-example:latest"));
    for file in [
        "examples/docker-compose.yml",
        "examples/discovery/docker-compose.yml",
    ] {
        let compose = read_repo(file);
        // The services: section, up to the next top-level key.
        let services: Vec<&str> = compose
            .lines()
            .skip_while(|line| *line != "services:")
            .skip(1)
            .take_while(|line| line.is_empty() || line.starts_with(' '))
            .collect();
        let mut images = 0;
        for line in &services {
            let line = line.trim();
            assert!(!line.starts_with("build:"), "{file} builds: {line}");
            if let Some(image) = line.strip_prefix("image: ") {
                assert_eq!(image, "localhost/envharness-example:latest", "{file}");
                images += 1;
            }
        }
        let never = services
            .iter()
            .filter(|line| **line == "    pull_policy: never")
            .count();
        let names = services
            .iter()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
            .count();
        assert!(names > 0, "{file} has no services");
        assert_eq!((images, never), (names, names), "{file}: every service");
    }
}

/// The README's lines for a user's own image copy envharness from the image `make image`
/// builds, at this version, as the example image (which the container tests build) does.
#[test]
fn the_readme_copies_envharness_as_the_example_image_does() {
    let version = env!("CARGO_PKG_VERSION");
    let block = readme_blocks()
        .into_iter()
        .find(|block| block.contains("\nCOPY --from=localhost/envharness:"))
        .expect("README.md shows COPY --from=localhost/envharness");
    let copy = block
        .lines()
        .find(|line| line.starts_with("COPY --from="))
        .expect("the COPY --from line");
    assert!(copy.contains(&format!(":{version} ")), "{copy}");
    let dockerfile = read_repo("examples/Dockerfile.prebuilt");
    let latest = copy.replace(&format!(":{version} "), ":latest ");
    assert!(
        dockerfile.lines().any(|line| line == latest),
        "examples/Dockerfile.prebuilt lacks {latest}"
    );
    assert!(block.contains("COPY export /export\n"), "{block}");
}
