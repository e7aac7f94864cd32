//! Publishing (docs/reference.md §11.3), health (§11.4) and registry changes that trigger re-runs
//! (§11.5), on every store (`publish::file_store::*`, `publish::etcd_store::*` on a real etcd):
//! real harnesses, real scripts, the store checked with `envharness kv`.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::kv_stores::*;
use crate::support::*;

every_store!(
    exec_mode_publishes_without_a_lease_and_warns,
    a_command_that_is_not_found_publishes_nothing,
    print_publishes_nothing,
    bootstrap_and_empty_output_publish_nothing,
    the_store_and_instance_reach_scripts_and_the_command,
    init_holds_the_keys_while_the_command_runs_and_withdraws_them_when_it_exits,
    sigterm_withdraws_before_it_is_forwarded,
    a_killed_harness_loses_its_keys_within_the_ttl,
    health_decides_when_the_keys_are_published,
    a_health_check_that_hangs_fails_after_the_interval,
    a_changed_key_that_a_script_read_re_runs_discovery,
    a_key_gone_makes_the_re_run_fail_and_the_command_keep_running,
    keys_outside_what_scripts_read_trigger_nothing,
    a_lease_running_out_unannounced_re_runs_discovery,
    reads_that_start_in_a_re_run_are_watched_too,
);

/// A harness on `store` as instance `i1`, with `env` and `export` directories.
fn harness_test(store: &dyn KvStore) -> Test {
    let t = harness_on(store, "i1");
    t.dir("env").dir("export");
    t
}

const DB: &str = "#!/bin/sh\necho postgres://db-1:5432/app\n";

fn exec_mode_publishes_without_a_lease_and_warns(store: &dyn KvStore) {
    let mut t = harness_test(store);
    t.script("export/db", DB);
    t.args(&[
        "-x",
        "export",
        "-e",
        "env",
        "--",
        "envharness",
        "kv",
        "get",
        "db/i1",
    ]);
    t.run()
        .success()
        .stdout_is("postgres://db-1:5432/app")
        .error_line(&["published db/i1 without a lease", "outlive the service"])
        .stderr_lacks("postgres://");
    // Still there: nothing withdraws it without --init.
    assert!(Client::new(store).has("db/i1"));
}

fn a_command_that_is_not_found_publishes_nothing(store: &dyn KvStore) {
    for command in ["no-such-command", "/no/such/path", "./dangling"] {
        let mut t = harness_test(store);
        t.script("export/db", DB).symlink("dangling", "nowhere");
        t.args(&["-x", "export", "-e", "env", "--", command]);
        t.run()
            .status(127)
            .error_line(&[command, "command not found"])
            .stderr_lacks("published");
        assert!(!Client::new(store).has("db/i1"), "{command}");
    }
}

fn print_publishes_nothing(store: &dyn KvStore) {
    let mut t = harness_test(store);
    t.script("export/db", DB)
        .file("env/A", "1\n")
        .script("export/health", "#!/bin/sh\n")
        .script("export/teardown", "#!/bin/sh\n");
    t.args(&["-v", "-x", "export", "-e", "env", "--print"]);
    t.run()
        .success()
        .stdout_is("A='1'\n")
        .error_line(&["db/i1: not published (--print publishes nothing)"])
        .stderr_lacks("runs only under --init")
        .stderr_lacks("postgres://");
    assert!(!Client::new(store).has("db/i1"), "--print published");
}

fn bootstrap_and_empty_output_publish_nothing(store: &dyn KvStore) {
    let mut t = harness_test(store);
    t.script("export/bootstrap", "#!/bin/sh\necho starting\n")
        .script("export/quiet", "#!/bin/sh\necho to stderr >&2\n")
        .script("export/web", "#!/bin/sh\nprintf 'http://web:80\\n'\n");
    t.args(&["-x", "export", "-e", "env", "--", "true"]);
    t.run()
        .success()
        .stderr_has("starting")
        .stderr_has("to stderr");
    let listed = Client::new(store).run(&["list", "--keys"]);
    listed.success().stdout_is("web/i1\n");
    assert_eq!(Client::new(store).get("web/i1"), b"http://web:80");
}

fn the_store_and_instance_reach_scripts_and_the_command(store: &dyn KvStore) {
    let mut t = harness_test(store);
    t.script(
        "env/SEEN",
        "#!/bin/sh\necho \"$ENVHARNESS_KV $ENVHARNESS_INSTANCE\"\n",
    );
    t.args(&["-x", "export", "-e", "env", "--", "sh", "-c"])
        .args(&["echo \"$SEEN|$ENVHARNESS_KV|$ENVHARNESS_INSTANCE\""]);
    let url = store.kv_url();
    t.run().success().stdout_is(&format!("{url} i1|{url}|i1\n"));
}

/// The command under `--init`: records whether the key is there, then waits for `stop`.
const LOOKS_AND_WAITS: &str = "#!/bin/sh\n\
    if envharness kv get db/i1 >/dev/null; then echo present >> seen; else echo absent >> seen; fi\n\
    touch ready\n\
    while [ ! -f stop ]; do sleep 0.02; done\n";

fn init_holds_the_keys_while_the_command_runs_and_withdraws_them_when_it_exits(
    store: &dyn KvStore,
) {
    let (t, child, started) = publishing_under_init(store, LOOKS_AND_WAITS);
    let client = Client::new(store);
    // Renewed: still there after more than one TTL.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        client.has("db/i1"),
        "the lease is renewed while the command runs"
    );
    t.file("stop", "");
    t.finish(child, started).success();
    assert!(
        !client.has("db/i1"),
        "withdrawn when the command exits by itself"
    );
}

fn sigterm_withdraws_before_it_is_forwarded(store: &dyn KvStore) {
    let mut t = harness_test(store);
    t.script("export/db", DB).script(
        "cmd",
        "#!/bin/sh\n\
         trap 'if envharness kv get db/i1 >/dev/null; then echo present >> at-term; else echo absent >> at-term; fi; exit 0' TERM\n\
         until envharness kv get db/i1 >/dev/null; do sleep 0.02; done\n\
         touch ready\n\
         while :; do sleep 0.05; done\n",
    );
    let cmd = t.p("cmd");
    t.args(&["--init", "-x", "export", "-e", "env", "--", cmd.as_str()]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    t.terminate(child, started).success();
    assert_eq!(
        t.lines("at-term"),
        ["absent"],
        "the key went before SIGTERM reached the command"
    );
}

fn a_killed_harness_loses_its_keys_within_the_ttl(store: &dyn KvStore) {
    let (t, child, started) = publishing_under_init(store, LOOKS_AND_WAITS);
    let client = Client::new(store);
    send(&child, Signal::SIGKILL);
    let killed = Instant::now();
    let _ = t.finish(child, started);
    assert!(
        client.has("db/i1"),
        "nothing withdrew it: present until the lease runs out"
    );
    t.wait_until("db/i1 gone", || !client.has("db/i1"));
    let gone = killed.elapsed();
    assert!(
        gone <= Duration::from_millis(3000),
        "gone after {gone:?}, TTL 2 s"
    );
}

fn health_decides_when_the_keys_are_published(store: &dyn KvStore) {
    let mut t = harness_test(store);
    t.file("sick", "");
    t.script("export/db", DB)
        .script(
            "export/health",
            "#!/bin/sh\necho run >> health-runs\n[ ! -f sick ]\n",
        )
        .script(
            "cmd",
            "#!/bin/sh\nwhile [ ! -f stop ]; do sleep 0.02; done\n",
        );
    let cmd = t.p("cmd");
    t.args(&[
        "--init",
        "--health-interval",
        "0.1",
        "-x",
        "export",
        "-e",
        "env",
        "--",
    ])
    .args(&[cmd.as_str()]);
    let (child, started) = t.spawn();
    let client = Client::new(store);
    t.wait_until("three failing health runs", || {
        t.lines("health-runs").len() >= 3
    });
    assert!(!client.has("db/i1"), "not published before health passed");
    std::fs::remove_file(t.path("sick")).expect("healing");
    t.wait_until("published once healthy", || client.has("db/i1"));
    t.file("sick", "");
    t.wait_until("withdrawn when unhealthy", || !client.has("db/i1"));
    let runs = t.lines("health-runs").len();
    t.wait_until("two more failing runs", || {
        t.lines("health-runs").len() >= runs + 2
    });
    std::fs::remove_file(t.path("sick")).expect("healing again");
    t.wait_until("published again", || client.has("db/i1"));
    t.file("stop", "");
    let run = t.finish(child, started);
    run.success();
    // One warning per failing stretch, not per run: the first stretch and the second.
    let warnings = run.stderr_lines_with("health: exited with status 1");
    assert_eq!(warnings.len(), 2, "{}", run.stderr);
}

fn a_health_check_that_hangs_fails_after_the_interval(store: &dyn KvStore) {
    let mut t = harness_test(store);
    t.script("export/db", DB)
        .script(
            "export/health",
            "#!/bin/sh
touch checking
exec sleep 1000
",
        )
        .script(
            "cmd",
            "#!/bin/sh
while [ ! -f stop ]; do sleep 0.02; done
",
        );
    let cmd = t.p("cmd");
    t.args(&[
        "--init",
        "--health-interval",
        "0.5",
        "-x",
        "export",
        "-e",
        "env",
        "--",
    ])
    .args(&[cmd.as_str()]);
    let (child, started) = t.spawn();
    // Without --timeout a run may take one interval: then it has failed, and says so.
    t.wait_for_stderr("health: timed out after 0.5s");
    assert!(
        !Client::new(store).has("db/i1"),
        "published while unhealthy"
    );
    t.file("stop", "");
    let run = t.finish(child, started);
    run.success();
    let warnings = run.stderr_lines_with("timed out");
    assert_eq!(
        warnings.len(),
        1,
        "one warning per failing stretch\n{}",
        run.stderr
    );
}

/// An environment entry that discovers DATABASE_URL from the store, as examples/discovery's
/// app does.
const DISCOVER: &str = "#!/bin/sh\necho run >> discoveries\nexec envharness kv get db\n";

/// The command: records the value it got and waits.
const RECORDS: &str = "#!/bin/sh\ntrap 'exit 0' TERM\necho \"$$ $DATABASE_URL\" >> runs\n\
     touch \"ready-$(echo $DATABASE_URL | tr -c 'a-z0-9\\n' _)\"\nwhile :; do sleep 0.05; done\n";

/// A watching app (`--init --watch 0`) whose DATABASE_URL entry is `discover`, running
/// [`RECORDS`]; the caller waits for its first `ready-` file.
fn discovering_app(store: &dyn KvStore, discover: &str) -> (Test, std::process::Child, Instant) {
    let mut t = harness_test(store);
    t.script("env/DATABASE_URL", discover)
        .script("cmd", RECORDS);
    let cmd = t.p("cmd");
    t.args(&[
        "--init",
        "--watch",
        "0",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        cmd.as_str(),
    ]);
    let (child, started) = t.spawn();
    (t, child, started)
}

fn a_changed_key_that_a_script_read_re_runs_discovery(store: &dyn KvStore) {
    let client = Client::new(store);
    client.put("db/x", "one");
    let (t, child, started) = discovering_app(store, DISCOVER);
    t.wait_for("ready-one");
    let put = Instant::now();
    client.put("db/x", "two");
    t.wait_for("ready-two");
    let took = put.elapsed();
    t.terminate(child, started)
        .success()
        .error_line(&["DATABASE_URL changed; restarting the command"]);
    assert!(
        took < Duration::from_secs(1),
        "re-ran {took:?} after the put"
    );
}

fn a_key_gone_makes_the_re_run_fail_and_the_command_keep_running(store: &dyn KvStore) {
    let client = Client::new(store);
    client.put("db/x", "one");
    let (t, child, started) = discovering_app(store, DISCOVER);
    t.wait_for("ready-one");
    client.run(&["del", "db/x"]).success();
    t.wait_for_stderr("re-run failed, nothing changed");
    assert_eq!(t.lines("runs").len(), 1, "the command keeps running");
    t.terminate(child, started)
        .success()
        .error_line(&["re-run failed", "env/DATABASE_URL: exited with status 1"]);
}

fn keys_outside_what_scripts_read_trigger_nothing(store: &dyn KvStore) {
    let client = Client::new(store);
    client.put("db/x", "one");
    let (t, child, started) = discovering_app(store, DISCOVER);
    t.wait_for("ready-one");
    client.put("other/x", "1");
    client.put("dbx", "1");
    // A change it does watch, after them: its re-run is the first and only one.
    client.put("db/x", "two");
    t.wait_for("ready-two");
    t.terminate(child, started).success();
    assert_eq!(
        t.lines("discoveries").len(),
        2,
        "{:?}",
        t.lines("discoveries")
    );
}

fn a_lease_running_out_unannounced_re_runs_discovery(store: &dyn KvStore) {
    let client = Client::new(store);
    let put = Instant::now();
    client.run(&["put", "db/x", "one", "--ttl", "2"]).success();
    let (t, child, started) = discovering_app(store, DISCOVER);
    t.wait_for("ready-one");
    // Nothing writes when the lease runs out: the harness must notice by itself.
    t.wait_for_stderr("re-run failed, nothing changed");
    let took = put.elapsed();
    t.terminate(child, started).success();
    assert!(
        took < Duration::from_millis(3500),
        "noticed {took:?} after a put with --ttl 2"
    );
}

fn reads_that_start_in_a_re_run_are_watched_too(store: &dyn KvStore) {
    let client = Client::new(store);
    client.put("db/x", "one");
    let (t, child, started) = discovering_app(
        store,
        "#!/bin/sh\nif [ -f go ]; then exec envharness kv get db; fi\necho none\n",
    );
    t.wait_for("ready-none");
    t.file("go", "");
    send(&child, Signal::SIGHUP);
    t.wait_for("ready-one");
    client.put("db/x", "two");
    t.wait_for("ready-two");
    t.terminate(child, started).success();
}

// ---- the harness's side, store-independent -----------------------------------------------

#[test]
fn plan_shows_what_would_publish() {
    let store = FileStore::new();
    let mut t = harness_test(&store);
    t.script("export/bootstrap", "#!/bin/sh\n")
        .script("export/db", DB)
        .script("export/health", "#!/bin/sh\n")
        .script("export/teardown", "#!/bin/sh\n");
    t.args(&[
        "--plan", "--init", "-x", "export", "-e", "env", "--", "true",
    ]);
    t.run()
        .success()
        .stdout_has("  bootstrap  run (first)\n")
        .stdout_has("  db         run; publish db/i1\n")
        .stdout_has("  health     run as the health check (--init)\n");
    assert!(!store.path().exists(), "--plan does not touch the store");
}

#[test]
fn plan_counts_a_script_that_cannot_publish_as_an_error() {
    let store = FileStore::new();
    let mut t = harness_test(&store);
    t.script("export/web+db", DB);
    t.args(&["--plan", "-x", "export", "-e", "env", "--", "true"]);
    t.run()
        .status(125)
        .stdout_has("  web+db  error (its name cannot be a registry key segment")
        .error_line(&["export/web+db", "cannot be a registry key segment"]);
    // Without a store the same script only runs.
    let mut t = Test::new();
    t.script("export/web+db", DB).dir("env");
    t.args(&["--plan", "-x", "export", "-e", "env", "--", "true"]);
    t.run().success().stdout_has("  web+db  run\n");
}

#[test]
fn under_init_a_store_that_cannot_be_used_is_a_warning_and_the_command_runs() {
    let mut t = Test::new();
    t.script("export/db", DB).dir("env");
    t.env("ENVHARNESS_KV", "file:///proc/envharness-store");
    t.args(&["--init", "-x", "export", "-e", "env", "--", "sh", "-c"])
        .args(&["while [ ! -f stop ]; do sleep 0.02; done; exit 3"]);
    let (child, started) = t.spawn();
    // The store is used once the command runs, from the registration's thread.
    t.wait_for_stderr("warning: cannot publish");
    t.file("stop", "");
    t.finish(child, started)
        .status(3)
        .error_line(&["warning: cannot publish", "file:///proc/envharness-store"]);
}

#[test]
fn health_and_teardown_without_init_draw_one_warning_each() {
    let store = FileStore::new();
    let mut t = harness_test(&store);
    t.script("export/health", "#!/bin/sh\ntouch ran\n")
        .script("export/teardown", "#!/bin/sh\ntouch ran\n");
    t.args(&["-x", "export", "-e", "env", "--", "true"]);
    let run = t.run();
    run.success()
        .error_line(&["export/health: health runs only under --init; ignored"])
        .error_line(&["export/teardown: teardown runs only under --init; ignored"]);
    assert_eq!(run.stderr_lines_with("runs only under --init").len(), 2);
    assert!(!t.exists("ran"));
}

#[test]
fn export_output_that_cannot_be_published_is_an_error_naming_the_script() {
    let store = FileStore::new();
    for (name, body, reason) in [
        ("export/d b", DB, "cannot be a registry key segment"),
        ("export/db", "#!/bin/sh\nprintf 'a\\0b'\n", "NUL byte"),
        (
            "export/db",
            "#!/bin/sh\nhead -c 131072 /dev/zero | tr '\\0' x\n",
            "over the registry's limit of 131071",
        ),
    ] {
        let mut t = harness_test(&store);
        t.script(name, body);
        t.args(&["-x", "export", "-e", "env", "--", "touch", "ran"]);
        t.run().status(125).error_line(&[name, reason]);
        assert!(!t.exists("ran"));
    }
    // 131071 bytes plus a newline fit.
    let mut t = harness_test(&store);
    t.script(
        "export/db",
        "#!/bin/sh\nhead -c 131071 /dev/zero | tr '\\0' x\necho\n",
    );
    t.args(&["-x", "export", "-e", "env", "--", "true"]);
    t.run().success();
    assert_eq!(Client::new(&store).get("db/i1").len(), 131071);
}

#[test]
fn bad_registry_options_are_usage_errors() {
    let store = FileStore::new();
    for (args, words) in [
        (
            vec!["--ttl", "1"],
            vec!["--ttl", "not a whole number of seconds of at least 2"],
        ),
        (vec!["--ttl", "2.5"], vec!["--ttl", "not a whole number"]),
        (
            vec!["--instance", "a/b"],
            vec!["--instance \"a/b\"", "not a key segment"],
        ),
        (vec!["--instance", "a b"], vec!["not a key segment"]),
        (
            vec!["--init", "--health-interval", "0"],
            vec!["--health-interval 0"],
        ),
    ] {
        let mut t = harness_test(&store);
        t.args(&args)
            .args(&["-x", "export", "-e", "env", "--", "true"]);
        t.run().status(125).error_line(&words);
    }
}

#[test]
fn the_instance_defaults_to_the_hostname() {
    let store = FileStore::new();
    let mut t = harness_test(&store);
    t.env("ENVHARNESS_INSTANCE", "");
    t.script("export/db", DB);
    t.args(&["-x", "export", "-e", "env", "--", "true"]);
    t.run().success();
    let host = nix::unistd::gethostname().expect("a hostname");
    let key = format!("db/{}", host.to_string_lossy());
    assert!(Client::new(&store).has(&key), "{key}");
}

#[test]
fn an_unreachable_etcd_stops_exec_mode_within_5_s_naming_the_url_and_print_never_asks_it() {
    let port = crate::etcd_server::free_port();
    let url = format!("etcd://127.0.0.1:{port}");
    let harness = |mode: &[&str]| {
        let mut t = Test::new();
        t.script("export/db", DB).file("env/A", "1\n");
        t.env("ENVHARNESS_KV", &url);
        t.args(&["-x", "export", "-e", "env"]).args(mode);
        t
    };
    let t = harness(&["--", "touch", "ran"]);
    t.run()
        .status(125)
        .error_line(&[&format!("{url}: unreachable: connection refused")])
        .faster_than(std::time::Duration::from_secs(6))
        .stdout_is("");
    assert!(!t.exists("ran"), "nothing is exec'd");
    harness(&["--print"])
        .run()
        .success()
        .stdout_is("A='1'\n")
        .stderr_lacks("unreachable");
}

#[test]
fn a_store_that_cannot_be_used_stops_exec_mode_with_125() {
    let mut t = Test::new();
    t.script("export/db", DB).dir("env");
    t.env("ENVHARNESS_KV", "file:///proc/envharness-store");
    t.args(&["-x", "export", "-e", "env", "--", "touch", "ran"]);
    t.run().status(125).error_line(&["/proc/envharness-store"]);
    assert!(!t.exists("ran"));
}
