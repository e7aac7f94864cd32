//! `envharness kv` (docs/reference.md §11.1–11.2): every rule with its status and message. The
//! bodies take a [`KvStore`] and run on every store (`every_store!` below); the file store's own
//! rules (layout, modes, crash leftovers, a full disk, permissions) follow them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::libc;

use crate::kv_stores::*;
use crate::support::*;

every_store!(
    get_writes_the_value_exactly,
    a_missing_key_is_not_found_with_status_1,
    get_falls_back_to_the_first_key_under_it,
    put_reads_stdin_for_a_dash,
    put_replaces_and_del_is_idempotent,
    ttl_makes_a_key_disappear_unless_put_again,
    ttl_must_be_whole_seconds_of_at_least_2,
    list_shows_live_keys_under_a_string_prefix_in_byte_order,
    list_refuses_a_value_holding_a_newline,
    list_json_shows_bytes_that_are_not_utf8_as_replacement_characters,
    get_wait_answers_soon_after_a_put_from_another_process,
    get_wait_finds_a_key_under_it,
    get_wait_gives_up_after_secs,
    list_wait_answers_for_any_key_under_the_prefix_and_gives_up_after_secs,
    invalid_keys_are_refused_naming_the_key_and_the_reason,
    values_over_131071_bytes_are_refused,
    inherited_harness_variables_are_not_read,
    options_may_come_before_or_after_the_key,
    values_may_start_with_a_dash,
    the_kv_flag_beats_the_variable,
    concurrent_writers_never_tear_a_value,
    reads_are_recorded_for_the_harness_without_their_values,
);

// ---- every store ---------------------------------------------------------------------------

fn get_writes_the_value_exactly(store: &dyn KvStore) {
    let c = Client::new(store);
    c.run(&["put", "text", "two trailing newlines\n\n"])
        .success();
    c.run(&["get", "text"])
        .success()
        .stdout_is("two trailing newlines\n\n");
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    c.put("binary", &binary);
    assert_eq!(c.get("binary"), binary);
    c.put("empty", b"");
    c.run(&["get", "empty"]).success().stdout_is("");
}

fn a_missing_key_is_not_found_with_status_1(store: &dyn KvStore) {
    let c = Client::new(store);
    c.run(&["get", "nope"])
        .status(1)
        .error_line(&["nope: not found"])
        .stdout_is("");
}

fn get_falls_back_to_the_first_key_under_it(store: &dyn KvStore) {
    let c = Client::new(store);
    c.put("db/b", "second");
    c.put("db/a", "first");
    c.put("dbx", "not under db");
    c.run(&["get", "db"]).success().stdout_is("first");
    c.put("db", "its own");
    c.run(&["get", "db"]).success().stdout_is("its own");
    // A string prefix is not a key's children: `dbx` is not under `db`.
    c.run(&["del", "db"]).success();
    c.run(&["del", "db/a"]).success();
    c.run(&["del", "db/b"]).success();
    c.run(&["get", "db"])
        .status(1)
        .error_line(&["db: not found"]);
}

fn put_reads_stdin_for_a_dash(store: &dyn KvStore) {
    let c = Client::new(store);
    c.run_with_stdin(&["put", "k", "-"], b"from stdin\n")
        .success()
        .stdout_is("");
    c.run(&["get", "k"]).success().stdout_is("from stdin\n");
}

fn put_replaces_and_del_is_idempotent(store: &dyn KvStore) {
    let c = Client::new(store);
    c.run(&["put", "k", "1"]).success();
    c.run(&["put", "k", "2"]).success();
    c.run(&["get", "k"]).success().stdout_is("2");
    c.run(&["del", "k"]).success().stdout_is("");
    c.run(&["del", "k"]).success();
    c.run(&["del", "never-there"]).success();
    c.run(&["get", "k"]).status(1).error_line(&["k: not found"]);
}

fn ttl_makes_a_key_disappear_unless_put_again(store: &dyn KvStore) {
    let c = Client::new(store);
    let started = Instant::now();
    c.run(&["put", "leased", "v", "--ttl", "2"]).success();
    c.run(&["put", "renewed", "v1", "--ttl", "2"]).success();
    c.run(&["put", "renewed", "v2"]).success();
    c.run(&["get", "leased"]).success().stdout_is("v");
    // Present until the TTL has passed, gone soon after.
    let gone = loop {
        if !c.has("leased") {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a key with --ttl 2 still there after 8 s"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        gone >= Duration::from_millis(1900),
        "gone after {gone:?}, before its 2 s"
    );
    c.run(&["get", "renewed"]).success().stdout_is("v2");
    c.run(&["list", "--keys"]).success().stdout_is("renewed\n");
}

fn ttl_must_be_whole_seconds_of_at_least_2(store: &dyn KvStore) {
    let c = Client::new(store);
    for bad in ["1", "0", "1.5", "2.5", "-3", "soon", ""] {
        c.run(&["put", "k", "v", "--ttl", bad])
            .status(125)
            .error_line(&["--ttl", "whole number of seconds of at least 2"]);
    }
    c.run(&["put", "k", "v", "--ttl"])
        .status(125)
        .error_line(&["--ttl needs a value"]);
    c.run(&["get", "k"]).status(1);
}

fn list_shows_live_keys_under_a_string_prefix_in_byte_order(store: &dyn KvStore) {
    let c = Client::new(store);
    c.run(&["list"]).success().stdout_is("");
    for (key, value) in [
        ("web/b", "3"),
        ("web/a", "2"),
        ("web/A", "1"),
        ("wex", "4"),
        ("we", "0"),
        ("other", "x"),
    ] {
        c.run(&["put", key, value]).success();
    }
    c.run(&["list", "web/"]).success().stdout_is("1\n2\n3\n");
    c.run(&["list", "we"])
        .success()
        .stdout_is("0\n1\n2\n3\n4\n");
    c.run(&["list", "we", "--keys"])
        .success()
        .stdout_is("we\nweb/A\nweb/a\nweb/b\nwex\n");
    c.run(&["list", "--keys"])
        .success()
        .stdout_is("other\nwe\nweb/A\nweb/a\nweb/b\nwex\n");
    let run = c.run(&["list", "web/", "--json"]);
    run.success();
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({"web/A": "1", "web/a": "2", "web/b": "3"})
    );
    c.run(&["list", "nothing/"]).success().stdout_is("");
    c.run(&["list", "--keys", "--json"])
        .status(125)
        .error_line(&["--keys and --json"]);
    c.run(&["list", "a b"])
        .status(125)
        .error_line(&["a b", "a prefix may only hold"]);
}

fn list_refuses_a_value_holding_a_newline(store: &dyn KvStore) {
    let c = Client::new(store);
    c.put("m/one", "1");
    c.put("m/two", "two\nlines");
    c.run(&["list", "m/"])
        .status(125)
        .error_line(&["m/two", "newline", "--json"])
        .stdout_is("");
    let run = c.run(&["list", "m/", "--json"]);
    run.success();
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({"m/one": "1", "m/two": "two\nlines"})
    );
}

fn list_json_shows_bytes_that_are_not_utf8_as_replacement_characters(store: &dyn KvStore) {
    let c = Client::new(store);
    c.put("bin", b"ok\xff\xfe!");
    let run = c.run(&["list", "--json"]);
    run.success()
        .error_line(&["warning", "bin", "not UTF-8", "U+FFFD"]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "{\"bin\":\"ok\u{fffd}\u{fffd}!\"}\n"
    );
}

/// Waits (bounded) until the process is blocked in poll(2): then it is really waiting, and
/// what it answers after that comes through the watch, not its first look.
fn wait_until_polling(pid: u32) {
    let limit = Instant::now() + Duration::from_secs(5);
    while Instant::now() < limit {
        let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if wchan.contains("poll") {
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
    eprintln!("warning: /proc/{pid}/wchan never showed poll; measuring anyway");
}

/// Starts `kv ARGS` on `waiter`, puts `key` from another process once it waits, and returns
/// its run and how long after the put ended it did.
fn answer_after_put(store: &dyn KvStore, args: &[&str], key: &str, value: &str) -> (Run, Duration) {
    let waiter = Client::new(store);
    let writer = Client::new(store);
    let started = Instant::now();
    let mut child = spawn(&mut waiter.command(args)).expect("spawning envharness");
    wait_until_polling(child.id());
    writer.run(&["put", key, value]).success();
    let put = Instant::now();
    let limit = put + Duration::from_secs(10);
    while child.try_wait().expect("waiting").is_none() && Instant::now() < limit {
        thread::sleep(Duration::from_millis(1));
    }
    let answered = put.elapsed();
    (waiter.t.finish(child, started), answered)
}

fn get_wait_answers_soon_after_a_put_from_another_process(store: &dyn KvStore) {
    let (run, answered) = answer_after_put(store, &["get", "--wait", "30", "svc"], "svc", "up");
    run.success().stdout_is("up");
    eprintln!("get --wait answered {answered:?} after the put");
    // The goal is 100 ms; a shared test machine gets slack, a polling interval would not.
    assert!(
        answered < Duration::from_millis(500),
        "answered after {answered:?}"
    );
}

fn get_wait_finds_a_key_under_it(store: &dyn KvStore) {
    let (run, answered) =
        answer_after_put(store, &["get", "db", "--wait", "30"], "db/host-1", "url");
    run.success().stdout_is("url");
    assert!(
        answered < Duration::from_millis(500),
        "answered after {answered:?}"
    );
}

fn get_wait_gives_up_after_secs(store: &dyn KvStore) {
    let c = Client::new(store);
    let run = c.run(&["get", "--wait", "1.5", "late"]);
    run.status(1)
        .error_line(&["late: not found after 1.5 s"])
        .stdout_is("")
        .slower_than(Duration::from_millis(1500))
        .faster_than(Duration::from_millis(4000));
    c.run(&["get", "--wait", "0", "late"])
        .status(1)
        .error_line(&["late: not found after 0 s"]);
    c.run(&["get", "--wait", "soon", "late"])
        .status(125)
        .error_line(&["--wait", "soon"]);
}

fn list_wait_answers_for_any_key_under_the_prefix_and_gives_up_after_secs(store: &dyn KvStore) {
    let c = Client::new(store);
    c.put("unrelated", "x");
    let run = c.run(&["list", "pool/", "--wait", "1"]);
    run.status(1)
        .error_line(&["pool/: not found after 1 s"])
        .slower_than(Duration::from_secs(1));
    let (run, answered) = answer_after_put(
        store,
        &["list", "--wait", "30", "pool/", "--keys"],
        "pool/a",
        "1",
    );
    run.success().stdout_is("pool/a\n");
    assert!(
        answered < Duration::from_millis(500),
        "answered after {answered:?}"
    );
    // Something already there answers at once, wait or not.
    c.run(&["list", "pool/", "--wait", "30"])
        .success()
        .stdout_is("1\n")
        .faster_than(Duration::from_secs(5));
}

fn invalid_keys_are_refused_naming_the_key_and_the_reason(store: &dyn KvStore) {
    let c = Client::new(store);
    let long = "k".repeat(513);
    for (key, reason) in [
        ("a//b", "none of them empty, '.' or '..'"),
        ("/a", "none of them empty"),
        ("a/", "none of them empty"),
        ("a/../b", "'..'"),
        ("./a", "'.'"),
        ("a b", "may only hold"),
        ("é", "may only hold"),
        ("a=b", "may only hold"),
        (long.as_str(), "513 bytes, over the limit of 512"),
    ] {
        for args in [
            vec!["get", "--", key],
            vec!["put", "--", key, "v"],
            vec!["del", "--", key],
        ] {
            c.run(&args)
                .status(125)
                .error_line(&[&format!("envharness: {key}: "), reason]);
        }
    }
    // A key with a control character is named escaped: the message stays one line.
    let run = c.run(&["get", "--", "a\nforged: line"]);
    run.status(125)
        .error_line(&["envharness: a\\nforged: line: ", "may only hold"]);
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    c.run(&["put", &"k".repeat(512), "longest"]).success();
    c.run(&["get", &"k".repeat(512)])
        .success()
        .stdout_is("longest");
    // After `--` a key may start with '-' (the key rules allow it); before, it is an option.
    c.run(&["get", "-odd-key"])
        .status(125)
        .error_line(&["-odd-key", "unknown option", "'--'"]);
    c.run(&["get", "--", "-odd-key"])
        .status(1)
        .error_line(&["-odd-key: not found"]);
    c.run(&["put", "--", "-odd-key", "v"]).success();
    c.run(&["get", "--", "-odd-key"]).success().stdout_is("v");
}

fn values_over_131071_bytes_are_refused(store: &dyn KvStore) {
    let c = Client::new(store);
    c.put("big", "old");
    c.run_with_stdin(&["put", "big", "-"], &vec![b'x'; 131_072])
        .status(125)
        .error_line(&["big", "131072 bytes, over the limit of 131071"]);
    c.run_with_stdin(&["put", "big", "-"], &vec![b'x'; 1_000_000])
        .status(125)
        .error_line(&["big", "1000000 bytes"]);
    c.run(&["get", "big"]).success().stdout_is("old");
    let largest = vec![b'y'; 131_071];
    c.put("big", &largest);
    assert_eq!(c.get("big"), largest);
}

fn inherited_harness_variables_are_not_read(store: &dyn KvStore) {
    // What a script of a harness started with these would inherit; any of them read by `kv`
    // would fail it or change what it does.
    let mut c = Client::new(store);
    for (name, value) in [
        ("ENVHARNESS_WATCH", "bogus"),
        ("ENVHARNESS_TTL", "1"),
        ("ENVHARNESS_INIT", "1"),
        ("ENVHARNESS_GROUP", "maybe"),
        ("ENVHARNESS_TIMEOUT", "soon"),
        ("ENVHARNESS_RETRIES", "many"),
        ("ENVHARNESS_JOBS", "x"),
        ("ENVHARNESS_WAIT", "forever"),
        ("ENVHARNESS_EXPORT", "/nonexistent"),
        ("ENVHARNESS_ENVIRONMENT", "/nonexistent"),
        ("ENVHARNESS_ON_CHANGE", "SIGKILL"),
        ("ENVHARNESS_REQUIRE", "X=("),
        ("ENVHARNESS_HEALTH_INTERVAL", "-1"),
        ("ENVHARNESS_INSTANCE", "me"),
    ] {
        c = c.env(name, value);
    }
    c.run(&["put", "k", "v"]).success().stdout_is("");
    c.run(&["get", "k"])
        .success()
        .stdout_is("v")
        .stderr_lacks("envharness");
    c.run(&["list", "--keys"]).success().stdout_is("k\n");
    c.run(&["del", "k"]).success();
}

fn options_may_come_before_or_after_the_key(store: &dyn KvStore) {
    let c = Client::new(store);
    c.run(&["put", "--ttl", "30", "k", "v"]).success();
    c.run(&["put", "k2", "--ttl", "30", "v2"]).success();
    c.run(&["get", "--wait", "30", "k"])
        .success()
        .stdout_is("v");
    c.run(&["get", "k2", "--wait", "30"])
        .success()
        .stdout_is("v2");
    c.run(&["get", "k2", "--wait=30"]).success().stdout_is("v2");
    c.run(&["list", "--keys", "k", "--wait", "1"])
        .success()
        .stdout_is("k\nk2\n");
    c.run(&["get", "a", "b"])
        .status(125)
        .error_line(&["kv get", "one argument too many (the second argument)"])
        .stderr_lacks("'b'");
    c.run(&["get"]).status(125).error_line(&["kv get", "KEY"]);
    c.run(&["put", "k"])
        .status(125)
        .error_line(&["kv put", "VALUE"]);
    c.run(&["frob"])
        .status(125)
        .error_line(&["kv frob", "no such subcommand"]);
    c.run(&["del", "k", "--ttl", "3"])
        .status(125)
        .error_line(&["kv del", "unknown option '--ttl'"]);
    c.run::<&str>(&[])
        .status(125)
        .error_line(&["kv", "subcommand"]);
    c.run(&["--help"])
        .success()
        .stdout_has("get KEY [--wait SECS]");
}

fn values_may_start_with_a_dash(store: &dyn KvStore) {
    let c = Client::new(store);
    for value in ["-1", "-x", "--json", "--wait"] {
        c.run(&["put", "k", value]).success();
        c.run(&["get", "k"]).success().stdout_is(value);
    }
    c.run(&["put", "k", "--ttl", "5", "-1"]).success();
    c.run(&["get", "k"]).success().stdout_is("-1");
    c.run(&["put", "k", "--", "--ttl"]).success();
    c.run(&["get", "k"]).success().stdout_is("--ttl");
}

fn the_kv_flag_beats_the_variable(store: &dyn KvStore) {
    let c = Client::new(store);
    c.run(&["put", "k", "in the store"]).success();
    let t = Test::new();
    let url = store.kv_url();
    let equals = format!("--kv={url}");
    for flag in [vec!["--kv", url.as_str()], vec![equals.as_str()]] {
        let mut command = t.external(BIN);
        command
            .envs(store.kv_env())
            .args(&flag)
            .args(["kv", "get", "k"]);
        t.run_command(command).success().stdout_is("in the store");
        // The flag wins over a variable naming another store.
        let mut command = t.external(BIN);
        command
            .envs(store.kv_env())
            .env("ENVHARNESS_KV", "file:///nonexistent-envharness-store/x")
            .args(&flag)
            .args(["kv", "get", "k"]);
        t.run_command(command).success().stdout_is("in the store");
    }
}

/// A value that says who wrote it and can be checked whole: `WRITER:ROUND:` and then the
/// writer's letter up to `size` bytes.
fn stamped(writer: usize, round: usize, size: usize) -> Vec<u8> {
    let mut value = format!("{writer}:{round}:").into_bytes();
    value.resize(size, b'a' + writer as u8);
    value
}

fn is_whole(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&value[..value.len().min(32)]).into_owned();
    let mut parts = text.splitn(3, ':');
    let (Some(writer), Some(round)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(writer), Ok(round)) = (writer.parse(), round.parse()) else {
        return false;
    };
    value == stamped(writer, round, value.len()) && [100_000, 120_000].contains(&value.len())
}

fn concurrent_writers_never_tear_a_value(store: &dyn KvStore) {
    const WRITERS: usize = 8;
    const ROUNDS: usize = 20;
    const READERS: usize = 8;
    let first = Client::new(store);
    first.put("shared", stamped(0, 0, 100_000));
    let done = std::sync::atomic::AtomicBool::new(false);
    let reads = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                scope.spawn(move || {
                    let c = Client::new(store);
                    for round in 0..ROUNDS {
                        // Two sizes, so a mix of two values could not pass for one.
                        let size = if (writer + round) % 2 == 0 {
                            100_000
                        } else {
                            120_000
                        };
                        c.put("shared", stamped(writer, round, size));
                    }
                })
            })
            .collect();
        for _ in 0..READERS {
            scope.spawn(|| {
                let c = Client::new(store);
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut command = c.command(&["get", "shared"]);
                    command.stdout(Stdio::piped()).stderr(Stdio::piped());
                    let out = output(&mut command).expect("running kv get");
                    assert_eq!(
                        out.status.code(),
                        Some(0),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    assert!(
                        is_whole(&out.stdout),
                        "a torn value of {} bytes",
                        out.stdout.len()
                    );
                    reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        for writer in writers {
            writer.join().expect("a writer");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let reads = reads.into_inner();
    eprintln!("{reads} reads during {} puts", WRITERS * ROUNDS);
    assert!(
        reads >= READERS,
        "too few reads overlapped the writes: {reads}"
    );
    assert!(is_whole(&first.get("shared")));
}

fn reads_are_recorded_for_the_harness_without_their_values(store: &dyn KvStore) {
    let c = Client::new(store);
    c.put("db/url", "secret-url");
    let log = c.t.path("reads");
    fs::write(&log, "").expect("creating the read log");
    let c = c.env("ENVHARNESS_KV_READS", &log.display().to_string());
    c.run(&["get", "db"]).success().stdout_is("secret-url");
    c.run(&["get", "missing"]).status(1);
    c.run(&["list", "db/", "--keys"]).success();
    c.run(&["put", "other", "v"]).success();
    c.run(&["get", "--wait", "0.2", "late"]).status(1);
    let text = fs::read_to_string(&log).expect("reading the read log");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let ops: Vec<(&str, &str)> = lines.iter().map(|f| (f[0], f[1])).collect();
    assert_eq!(
        ops,
        [
            ("get", "db"),
            ("get", "missing"),
            ("list", "db/"),
            ("get", "late")
        ],
        "{text}"
    );
    assert_eq!(lines[1][2], "-", "a missing key's digest");
    assert_ne!(lines[0][2], "-");
    assert!(!text.contains("secret"), "a value in the read log: {text}");
    // A log that cannot be written to costs the read nothing.
    let c = Client::new(store).env("ENVHARNESS_KV_READS", "/nonexistent/reads");
    c.run(&["get", "db"])
        .success()
        .stdout_is("secret-url")
        .stderr_lacks("envharness");
}

// ---- the harness's command line ------------------------------------------------------------

#[test]
fn a_url_holding_credentials_is_refused_without_showing_them() {
    for url in [
        "etcd://root:hunter2@127.0.0.1:1",
        "file://me:hunter2@localhost/tmp/x",
    ] {
        // `envharness kv`, and the harness before anything runs.
        for args in [&["kv", "get", "k"][..], &["-e", "env", "--", "true"]] {
            let mut t = Test::new();
            t.dir("env");
            t.args(&["--kv", url]).args(args);
            t.run()
                .status(125)
                .error_line(&["the registry URL holds '@'", "ENVHARNESS_KV_USER"])
                .stderr_lacks("hunter2");
        }
    }
}

#[test]
fn no_store_configured_is_a_usage_error() {
    let t = Test::new();
    for url in [None, Some("")] {
        let mut command = t.external(BIN);
        command.args(["kv", "get", "k"]);
        if let Some(url) = url {
            command.env("ENVHARNESS_KV", url);
        }
        t.run_command(command).status(125).error_line(&[
            "no registry configured",
            "--kv",
            "ENVHARNESS_KV",
        ]);
    }
}

#[test]
fn urls_that_name_no_store_are_usage_errors_naming_them() {
    let t = Test::new();
    for (url, reason) in [
        ("registry", "not a registry URL"),
        ("http://localhost/x", "unknown registry scheme 'http'"),
        ("file://relative/dir", "absolute path"),
        ("file:///bad%zz", "two hex digits"),
    ] {
        let mut command = t.external(BIN);
        command.args(["--kv", url, "kv", "get", "k"]);
        t.run_command(command)
            .status(125)
            .error_line(&[url, reason]);
    }
}

#[test]
fn the_harness_accepts_kv_and_a_command_named_kv_runs_after_double_dash() {
    let store = FileStore::new();
    let mut t = Test::new();
    t.script("bin/kv", "#!/bin/sh\necho \"kv ran $1\"\n");
    let path = format!("{}:{PATH}", t.p("bin"));
    t.env("PATH", path)
        .args(&["--kv", &store.kv_url(), "-e", ".", "--", "kv", "get"]);
    t.run().success().stdout_is("kv ran get\n");
    // -e kv is still a directory named kv.
    let mut t = Test::new();
    t.file("kv/NAME", "from the kv directory\n");
    t.args(&["-e", "kv", "--print"]);
    t.run()
        .success()
        .printed_is(&[("NAME", "from the kv directory")]);
    // The subcommand after other options of the harness is a mistake, said so.
    let mut t = Test::new();
    t.args(&["-e", ".", "kv", "get", "k"]);
    t.run()
        .status(125)
        .error_line(&["kv", "comes first", "envharness ... -- kv"]);
}

// ---- the file store ------------------------------------------------------------------------

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn file_store_is_created_0700_with_its_parents_and_values_are_0600() {
    let store = FileStore::new();
    let nested = store.path().join("a/b/registry");
    let url = format!("file://{}", nested.display());
    let t = Test::new();
    let mut command = t.external(BIN);
    command.args(["--kv", &url, "kv", "put", "k", "v"]);
    t.run_command(command).success();
    assert_eq!(mode(&nested), 0o700);
    for dir in nested.ancestors().skip(1).take(2) {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    let files = files_under(&nested);
    assert_eq!(
        files,
        [nested.join("envharness-store"), nested.join("keys/k")],
        "the mark and the value"
    );
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn file_store_gives_values_the_read_bits_of_an_existing_directory() {
    for (dir_mode, file_mode) in [
        (0o750, 0o640),
        (0o755, 0o644),
        (0o705, 0o604),
        (0o770, 0o640),
    ] {
        let store = FileStore::new();
        fs::create_dir(store.path()).expect("mkdir");
        fs::set_permissions(store.path(), fs::Permissions::from_mode(dir_mode)).expect("chmod");
        let c = Client::new(&store);
        c.run(&["put", "k", "v"]).success();
        c.run(&["put", "leased", "v", "--ttl", "30"]).success();
        assert_eq!(
            mode(&store.path()),
            dir_mode,
            "an existing directory keeps its mode"
        );
        for file in files_under(&store.path()) {
            assert_eq!(
                mode(&file),
                file_mode,
                "{} in a {dir_mode:o} store",
                file.display()
            );
        }
    }
}

#[test]
fn file_store_keeps_a_key_and_its_children_and_long_keys_side_by_side() {
    let store = FileStore::new();
    let c = Client::new(&store);
    let long_a = format!("{}/a", "x".repeat(300));
    let long_b = format!("{}/b", "x".repeat(300));
    let longest = format!("{}/{}", "y".repeat(255), "z".repeat(256));
    for (key, value) in [("svc", "0"), ("svc/one", "1"), ("svc/one/two", "2")] {
        c.run(&["put", key, value]).success();
    }
    for (key, value) in [(&long_a, "a"), (&long_b, "b"), (&longest, "l")] {
        c.run(&["put", key, value]).success();
    }
    c.run(&["list", "svc"]).success().stdout_is("0\n1\n2\n");
    c.run(&["get", &long_a]).success().stdout_is("a");
    c.run(&["get", &long_b]).success().stdout_is("b");
    c.run(&["get", &longest]).success().stdout_is("l");
    c.run(&["list", &"x".repeat(250), "--keys"])
        .success()
        .stdout_is(&format!("{long_a}\n{long_b}\n"));
    c.run(&["list", &format!("{}/b", "x".repeat(300))])
        .success()
        .stdout_is("b\n");
    c.run(&["del", &long_a]).success();
    c.run(&["get", &long_b]).success().stdout_is("b");
    c.run(&["get", &long_a]).status(1);
    // Nothing but the key files is left in keys/, and no temporary file anywhere.
    let files = files_under(&store.file("keys"));
    assert_eq!(files.len(), 5, "{files:#?}");
    assert!(files_under(&store.file("tmp")).is_empty());
}

#[test]
fn file_store_removes_an_expired_key_when_a_reader_comes_across_it() {
    let store = FileStore::new();
    let c = Client::new(&store);
    c.run(&["put", "gone", "v", "--ttl", "2"]).success();
    assert_eq!(files_under(&store.file("keys")).len(), 1);
    let limit = Instant::now() + Duration::from_secs(8);
    while c.has("gone") {
        assert!(Instant::now() < limit, "never expired");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        files_under(&store.file("keys")).is_empty(),
        "the expired key's file stays"
    );
    // The next lease granted sweeps the dead one.
    c.run(&["put", "next", "v", "--ttl", "30"]).success();
    assert_eq!(files_under(&store.file("leases")).len(), 1);
}

#[test]
fn file_store_ignores_garbage_left_by_a_crash_with_a_warning() {
    let store = FileStore::new();
    let c = Client::new(&store);
    c.put("good", "fine");
    c.run(&["put", "leased", "v", "--ttl", "30"]).success();
    let keys = store.file("keys");
    fs::write(keys.join("junk"), b"\x00\x01 not a value").expect("writing junk");
    fs::write(
        keys.join("cut"),
        b"envharness-kv 1\nkey cut\nsize 10\n\nabc",
    )
    .expect("writing");
    fs::write(keys.join("empty"), b"").expect("writing");
    fs::write(keys.join("not a key"), b"x").expect("writing");
    let lease = files_under(&store.file("leases"))
        .pop()
        .expect("a lease file");
    fs::write(&lease, b"envharness-lease 1\nttl").expect("truncating the lease");
    fs::write(store.file("tmp/123-0-half"), b"envharness-kv 1\nkey good\n").expect("writing");
    for key in ["junk", "cut", "empty"] {
        c.run(&["get", key])
            .status(1)
            .error_line(&["warning", &format!("keys/{key}"), "ignored"]);
    }
    c.run(&["get", "cut"])
        .error_line(&["truncated", "3 bytes of a 10-byte value"]);
    c.run(&["get", "leased"]).status(1).error_line(&[
        "warning",
        &lease.display().to_string(),
        "not a lease",
    ]);
    c.run(&["get", "good"]).success().stdout_is("fine");
    c.run(&["list", "--keys"])
        .success()
        .stdout_is("good\n")
        .error_line(&["keys/not a key", "not a key of the file store"])
        .error_line(&["keys/junk", "ignored"]);
    c.put("cut", "repaired");
    c.run(&["get", "cut"]).success().stdout_is("repaired");
}

/// `kv put` with RLIMIT_FSIZE at `bytes`: writing past it fails with EFBIG, as a full disk
/// fails with ENOSPC.
fn with_file_size_limit(mut command: Command, bytes: u64) -> Command {
    // SAFETY: the closure runs between fork and exec and only calls setrlimit, which is
    // async-signal-safe, on a struct on its own stack.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

#[test]
fn file_store_keeps_the_old_value_when_a_write_fails_for_lack_of_room() {
    let store = FileStore::new();
    let c = Client::new(&store);
    c.put("k", "old value");
    let command = with_file_size_limit(c.command(&["put", "k", "-"]), 4096);
    c.finish_with_stdin(command, &vec![b'n'; 100_000])
        .status(125)
        .error_line(&["keys/k", "writing to the registry", "File too large"]);
    c.run(&["get", "k"]).success().stdout_is("old value");
    assert!(
        files_under(&store.file("tmp")).is_empty(),
        "a partial temporary file is left"
    );
}

#[test]
fn file_store_on_a_full_tmpfs_keeps_the_old_value() {
    if !can_unshare_mounts() {
        return;
    }
    let t = Test::new();
    t.dir("mnt");
    // In a mount namespace of its own, a 64 KiB tmpfs is the store: the first put fits, the
    // second cannot, and the first value must survive it.
    let script = format!(
        "mount -t tmpfs -o size=64k none mnt || exit 99\n\
         export ENVHARNESS_KV=file://$PWD/mnt/store\n\
         '{BIN}' kv put k small || exit 98\n\
         head -c 100000 /dev/zero | '{BIN}' kv put k -\n\
         echo \"status $?\"\n\
         '{BIN}' kv get k\n"
    );
    let mut command = t.external("unshare");
    command.args(["-r", "-m", "sh", "-c", &script]);
    t.run_command(command)
        .success()
        .error_line(&["keys/k", "No space left on device"])
        .stdout_is("status 125\nsmall");
}

/// Whether the tests can run a command as nobody (they run as root, which permissions do
/// not stop); prints why not.
fn can_run_as_nobody() -> bool {
    use std::os::unix::fs::MetadataExt;
    if !fs::metadata("/proc/self").is_ok_and(|me| me.uid() == 0) {
        unavailable(
            "ENVHARNESS_TEST_SYSTEM",
            "not root, so cannot switch to nobody",
        );
        return false;
    }
    let probe = output(Command::new("setpriv").args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "true",
    ]));
    if !probe.as_ref().is_ok_and(|out| out.status.success()) {
        unavailable(
            "ENVHARNESS_TEST_SYSTEM",
            "setpriv cannot run a command as nobody",
        );
        return false;
    }
    true
}

#[test]
fn file_store_that_cannot_be_created_or_read_names_the_path_and_the_reason() {
    if !can_run_as_nobody() {
        return;
    }
    let store = FileStore::new();
    let t = Test::new();
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o755)).expect("chmod");
    // Root's directories: one nobody may not write into, one nobody may not read.
    let parent = store.path().join("parent");
    fs::create_dir_all(&parent).expect("mkdir");
    for dir in [
        store.path().parent().expect("a parent"),
        &store.path(),
        &parent,
    ] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let unreadable = store.path().join("private");
    fs::create_dir(&unreadable).expect("mkdir");
    fs::set_permissions(&unreadable, fs::Permissions::from_mode(0o700)).expect("chmod");
    let as_nobody = |dir: &std::path::Path, args: &[&str]| {
        let mut command = t.external("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(["--kv", &format!("file://{}", dir.display()), "kv"])
            .args(args);
        t.run_command(command)
    };
    let missing = parent.join("store");
    as_nobody(&missing, &["put", "k", "v"])
        .status(125)
        .error_line(&[
            &missing.display().to_string(),
            "creating",
            "Permission denied",
        ]);
    as_nobody(&unreadable, &["get", "k"])
        .status(125)
        .error_line(&[&unreadable.display().to_string(), "Permission denied"]);
    // Readable but not writable (a consumer in the group of a 0755 store): reads work, a put
    // says why it cannot.
    let shared = store.path().join("shared");
    let c = Client::new(&UrlStore(format!("file://{}", shared.display())));
    c.run(&["put", "k", "v"]).success();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).expect("chmod");
    for sub in ["keys", "leases", "tmp"] {
        fs::set_permissions(shared.join(sub), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::set_permissions(shared.join("keys/k"), fs::Permissions::from_mode(0o644)).expect("chmod");
    as_nobody(&shared, &["get", "k"]).success().stdout_is("v");
    as_nobody(&shared, &["put", "k", "w"])
        .status(125)
        .error_line(&["shared/keys/k", "Permission denied"]);
}

#[test]
fn file_store_writers_give_up_on_a_lock_held_too_long_and_readers_never_wait() {
    use nix::fcntl::{Flock, FlockArg};
    let store = FileStore::new();
    let c = Client::new(&store);
    c.put("k", "v");
    // What a writer stopped with SIGSTOP in the middle of a put would hold.
    let keys = fs::File::open(store.file("keys")).expect("opening keys/");
    let _held = Flock::lock(keys, FlockArg::LockExclusive).expect("flock");
    c.run(&["get", "k"])
        .success()
        .stdout_is("v")
        .faster_than(Duration::from_secs(2));
    c.run(&["put", "k", "w"])
        .status(125)
        .error_line(&[
            "keys",
            "locking the registry directory",
            "held the lock for 5 s",
        ])
        .slower_than(Duration::from_secs(5))
        .faster_than(Duration::from_secs(10));
    c.run(&["get", "k"]).success().stdout_is("v");
}

/// The README's `kv` session, run: each `$ ` line through sh (stderr with stdout) with
/// `envharness` on PATH and a fresh file store, the whole transcript compared.
#[test]
fn the_readme_kv_session_is_what_kv_does() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("reading README.md");
    let block = readme
        .split_once("<!-- kv session -->\n```\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("README.md has a kv session block");
    let mut script = String::from("exec 2>&1\n");
    let mut expected = String::new();
    for line in block.lines() {
        match line.strip_prefix("$ ") {
            Some(command) => script.push_str(&format!("{command}\n")),
            None => expected.push_str(&format!("{line}\n")),
        }
    }
    let store = FileStore::new();
    let t = Test::new();
    t.symlink("bin/envharness", BIN);
    let mut command = t.external("sh");
    command
        .args(["-c", &script])
        .env("PATH", format!("{}:{PATH}", t.p("bin")))
        .env("ENVHARNESS_KV", store.kv_url());
    t.run_command(command).success().stdout_is(&expected);
}
