//! The registry in templates (docs/reference.md §14): `kv`, `kv_list` and `instances` on every
//! store, their errors, waiting at the start for a key a template reads bare, re-rendering
//! under `--watch` when what a template read changed, and `--splay`.

use std::time::{Duration, Instant};

use crate::kv_stores::*;
use crate::support::*;

every_store!(
    templates_read_keys_lists_and_instances,
    a_key_read_bare_that_is_absent_is_an_error_naming_the_template_line_and_call,
    a_value_that_is_not_utf8_is_an_error_naming_the_key,
    the_functions_win_over_variables_of_the_same_name,
    at_the_start_wait_waits_for_a_key_a_template_reads_bare,
    a_key_that_never_comes_is_125_when_the_wait_runs_out,
    a_change_to_what_a_template_read_re_renders_and_signals_the_command,
);

const UPSTREAM: &str = "upstream web {\n{% for addr in instances(\"web\") %}  server {{ addr }};\n\
{% endfor %}}\n# db {{ kv(\"db\") }}\n{% for key, value in kv_list(\"web/\") | items %}# {{ key }}={{ value }}\n\
{% endfor %}# none {{ kv(\"nope\") | default(\"-\") }}\n";

/// A harness on `store` with `env/`, `export/` and `out/`, and `up.j2`.
fn templating(store: &dyn KvStore) -> Test {
    let t = harness_on(store, "i1");
    t.dir("env")
        .dir("export")
        .dir("out")
        .file("up.j2", UPSTREAM);
    t
}

fn templates_read_keys_lists_and_instances(store: &dyn KvStore) {
    let client = Client::new(store);
    client.put("web/b", "10.0.0.2:80");
    client.put("web/a", "10.0.0.1:80");
    client.put("web/a/deeper", "not an instance");
    client.put("db/main", "postgres://db");
    let mut t = templating(store);
    t.args(&[
        "-x",
        "export",
        "-e",
        "env",
        "-t",
        "up.j2:out/up.conf",
        "--print",
    ]);
    t.run().success();
    assert_eq!(
        t.read("out/up.conf"),
        "upstream web {\n  server 10.0.0.1:80;\n  server 10.0.0.2:80;\n}\n# db postgres://db\n\
         # web/a=10.0.0.1:80\n# web/a/deeper=not an instance\n# web/b=10.0.0.2:80\n# none -\n"
    );
}

fn a_key_read_bare_that_is_absent_is_an_error_naming_the_template_line_and_call(
    store: &dyn KvStore,
) {
    let mut t = templating(store);
    t.file("bare.j2", "first line\n{{ kv(\"absent/key\") }}\n");
    t.args(&[
        "-x",
        "export",
        "-e",
        "env",
        "-t",
        "bare.j2:out/bare",
        "--",
        "touch",
        "ran",
    ]);
    t.run()
        .status(125)
        .error_line(&["bare.j2: line 2: kv(\"absent/key\") is undefined"]);
    assert!(!t.exists("ran"));
    assert!(!t.exists("out/bare"));
}

fn a_value_that_is_not_utf8_is_an_error_naming_the_key(store: &dyn KvStore) {
    let client = Client::new(store);
    client
        .run_with_stdin(&["put", "bin", "-"], b"\xff\xfe")
        .success();
    client
        .run_with_stdin(&["put", "web/bin", "-"], b"\xff\xfe")
        .success();
    // The same from each function that reads values.
    for (call, key) in [
        ("kv(\"bin\")", "bin"),
        ("kv_list(\"web/\")", "web/bin"),
        ("instances(\"web\")", "web/bin"),
    ] {
        let mut t = templating(store);
        t.file("bin.j2", format!("{{{{ {call} }}}}\n"));
        t.args(&[
            "-x",
            "export",
            "-e",
            "env",
            "-t",
            "bin.j2:out/bin",
            "--print",
        ]);
        t.run()
            .status(125)
            .error_line(&["bin.j2", &format!("{key}: the value is not UTF-8")]);
    }
}

fn the_functions_win_over_variables_of_the_same_name(store: &dyn KvStore) {
    Client::new(store).put("k", "from the store");
    let mut t = templating(store);
    t.file("env/kv", "a variable\n")
        .file("both.j2", "{{ kv(\"k\") }} / {{ env[\"kv\"] }}\n");
    t.args(&[
        "-x",
        "export",
        "-e",
        "env",
        "-t",
        "both.j2:out/both",
        "--print",
    ]);
    t.run().success();
    assert_eq!(t.read("out/both"), "from the store / a variable\n");
}

/// A harness rendering `kv("db")` bare to out/db, with `--wait WAIT`, then touching `ran`.
fn waiting_for_the_db_key(store: &dyn KvStore, wait: &str) -> Test {
    let mut t = templating(store);
    t.file("db.j2", "db {{ kv(\"db\") }}\n");
    t.args(&[
        "-x",
        "export",
        "-e",
        "env",
        "-t",
        "db.j2:out/db",
        "--wait",
        wait,
        "--retry-interval",
        "0.1",
        "--",
        "touch",
        "ran",
    ]);
    t
}

fn at_the_start_wait_waits_for_a_key_a_template_reads_bare(store: &dyn KvStore) {
    let t = waiting_for_the_db_key(store, "10");
    let (child, started) = t.spawn();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!t.exists("ran"), "started before the key was there");
    Client::new(store).put("db/i9", "postgres://late");
    t.finish(child, started).success();
    assert_eq!(t.read("out/db"), "db postgres://late\n");
}

fn a_key_that_never_comes_is_125_when_the_wait_runs_out(store: &dyn KvStore) {
    let t = waiting_for_the_db_key(store, "0.5");
    let started = Instant::now();
    t.run()
        .status(125)
        .error_line(&["db.j2: line 1: kv(\"db\") is undefined"]);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it did not wait"
    );
    assert!(!t.exists("ran"), "the command ran");
}

fn a_change_to_what_a_template_read_re_renders_and_signals_the_command(store: &dyn KvStore) {
    let client = Client::new(store);
    client.put("web/a", "10.0.0.1:80");
    client.put("db/main", "postgres://db");
    let mut t = templating(store);
    t.script(
        "cmd",
        "#!/bin/sh\ntrap 'echo HUP >> log' HUP\ntrap 'exit 0' TERM\ntouch ready\nwhile :; do sleep 0.02; done\n",
    );
    let cmd = t.p("cmd");
    t.args(&[
        "--init",
        "--watch",
        "0",
        "--on-change",
        "HUP",
        "-x",
        "export",
        "-e",
        "env",
        "-t",
        "up.j2:out/up.conf",
        "--",
        &cmd,
    ]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    assert!(t.read("out/up.conf").contains("server 10.0.0.1:80;"));
    client.put("web/b", "10.0.0.2:80");
    t.wait_for_line("log", "HUP");
    assert!(t.read("out/up.conf").contains("server 10.0.0.2:80;"));
    t.wait_for_stderr("out/up.conf changed; sending SIGHUP");
    // A key the template does not read changes nothing.
    client.put("unrelated", "x");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(t.lines("log"), ["HUP"]);
    t.terminate(child, started).success();
}

#[test]
fn without_a_registry_a_call_is_an_error_naming_the_template() {
    for call in ["kv(\"db\")", "kv_list(\"db/\")", "instances(\"web\")"] {
        let mut t = Test::new();
        t.dir("env")
            .dir("export")
            .dir("out")
            .file("a.j2", format!("x\n{{{{ {call} }}}}\n"));
        t.args(&["-x", "export", "-e", "env", "-t", "a.j2:out/a", "--print"]);
        t.run().status(125).error_line(&[&format!(
            "a.j2: line 2: {call}: no registry is configured (--kv or ENVHARNESS_KV)"
        )]);
    }
}

#[test]
fn an_unreachable_store_is_the_store_error_at_the_start() {
    let url = format!("etcd://127.0.0.1:{}", crate::etcd_server::free_port());
    let mut t = Test::new();
    t.dir("env")
        .dir("export")
        .dir("out")
        .file("a.j2", "x {{ kv(\"db\") }}\n");
    t.args(&[
        "--kv",
        &url,
        "-x",
        "export",
        "-e",
        "env",
        "-t",
        "a.j2:out/a",
        "--print",
    ]);
    t.run()
        .status(125)
        .error_line(&[&format!("{url}: unreachable: connection refused")])
        .faster_than(Duration::from_secs(6));
}

#[test]
fn plan_does_not_contact_the_store() {
    let url = format!("etcd://127.0.0.1:{}", crate::etcd_server::free_port());
    let mut t = Test::new();
    t.dir("env")
        .dir("export")
        .dir("out")
        .file("a.j2", "x {{ kv(\"db\") }}\n");
    t.args(&[
        "--kv",
        &url,
        "-x",
        "export",
        "-e",
        "env",
        "-t",
        "a.j2:out/a",
        "--plan",
        "--",
        "true",
    ]);
    t.run().success().stdout_has("template a.j2 -> out/a\n");
}

/// A watching harness on `store` whose command logs each start with the time it started.
fn splayed(store: &dyn KvStore, splay: &str) -> Test {
    let mut t = harness_on(store, "i1");
    t.dir("export")
        .script("env/V", "#!/bin/sh\nexec envharness kv get shared\n")
        .script(
            "cmd",
            "#!/bin/sh\ntrap 'exit 0' TERM\necho \"$V $(date +%s.%N)\" >> starts\ntouch \"ready-$V\"\nwhile :; do sleep 0.02; done\n",
        );
    let cmd = t.p("cmd");
    t.args(&[
        "--init", "--watch", "0", "--splay", splay, "-x", "export", "-e", "env", "--", &cmd,
    ]);
    t
}

#[test]
fn splay_spreads_the_restarts_of_harnesses_watching_one_key() {
    let store = FileStore::new();
    let client = Client::new(&store);
    client.put("shared", "1");
    let harnesses: Vec<_> = (0..10)
        .map(|_| {
            let t = splayed(&store, "2");
            let (child, started) = t.spawn();
            (t, child, started)
        })
        .collect();
    for (t, _, _) in &harnesses {
        t.wait_for("ready-1");
    }
    client.put("shared", "2");
    let put = Instant::now();
    let mut restarts = Vec::new();
    for (t, _, _) in &harnesses {
        t.wait_for("ready-2");
        let line = t.lines("starts").pop().expect("a second start");
        let at: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
        restarts.push(at);
    }
    let within = put.elapsed();
    assert!(
        within < Duration::from_secs(4),
        "not all restarted within 2 s and a margin: {within:?}"
    );
    let first = restarts.iter().cloned().fold(f64::INFINITY, f64::min);
    let last = restarts.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    assert!(last - first >= 0.5, "restarted together: {restarts:?}");
    for (t, child, started) in harnesses {
        let run = t.terminate(child, started);
        run.success();
        assert!(
            run.stderr.contains("restarting the command in "),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn a_stop_signal_during_the_splay_cancels_the_restart() {
    let store = FileStore::new();
    let client = Client::new(&store);
    client.put("shared", "1");
    let t = splayed(&store, "30");
    let (child, started) = t.spawn();
    t.wait_for("ready-1");
    client.put("shared", "2");
    t.wait_for_stderr("restarting the command in ");
    let stopping = Instant::now();
    t.terminate(child, started).success();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(t.lines("starts").len(), 1, "restarted");
}

#[test]
fn splay_needs_watch_and_its_variable_is_ignored_without_it() {
    let mut t = Test::new();
    t.dir("env").dir("export");
    t.args(&[
        "--init", "--splay", "2", "-x", "export", "-e", "env", "--", "true",
    ]);
    t.run().status(125).error_line(&["--splay needs --watch"]);
    let mut t = Test::new();
    t.dir("env").dir("export");
    t.env("ENVHARNESS_SPLAY", "2");
    t.args(&["-x", "export", "-e", "env", "--", "true"]);
    t.run().success();
}
