//! `--require` and `--wait` (docs/reference.md §8): what the final environment must hold before the
//! command starts, and waiting for a dependency to announce itself.

use std::time::{Duration, Instant};

use crate::support::*;

fn requiring(t: &mut Test, extra: &[&str]) {
    t.dir("env").dir("export");
    t.args(&["-x", "export", "-e", "env"]).args(extra);
}

#[test]
fn an_unset_or_empty_requirement_stops_the_start() {
    for setup in ["missing", "empty"] {
        let mut t = Test::new();
        if setup == "empty" {
            t.file("env/DB_URL", "\n");
        }
        requiring(&mut t, &["--require", "DB_URL", "--", "touch", "ran"]);
        t.run()
            .status(125)
            .error_line(&["DB_URL: required but not set"]);
        assert!(!t.exists("ran"), "the command must not run");
    }
}

#[test]
fn a_regex_must_match_the_whole_value_and_the_value_is_never_shown() {
    let mut t = Test::new();
    t.file("env/DB_URL", "mysql://secret@db\n");
    requiring(&mut t, &["--require", "DB_URL=postgres://.*", "--print"]);
    t.run()
        .status(125)
        .error_line(&["DB_URL: required to match 'postgres://.*', and does not"])
        .stderr_lacks("secret");

    let mut t = Test::new();
    t.file("env/PORT", "8080x\n");
    requiring(&mut t, &["--require", "PORT=\\d+", "--print"]);
    t.run().status(125).error_line(&["PORT: required to match"]);

    let mut t = Test::new();
    t.file("env/PORT", "8080\n");
    requiring(&mut t, &["--require", "PORT=\\d+", "--print"]);
    t.run().success().printed_is(&[("PORT", "8080")]);
}

#[test]
fn a_value_that_is_not_utf8_never_matches() {
    let mut t = Test::new();
    t.file("env/X", b"\xff\xfe\n");
    requiring(&mut t, &["--require", "X=.*", "--print"]);
    t.run()
        .status(125)
        .error_line(&["X: required to match '.*'"]);
    let mut t = Test::new();
    t.file("env/X", b"\xff\xfe\n");
    requiring(&mut t, &["--require", "X", "--print"]);
    t.run().success();
}

#[test]
fn the_harness_environment_satisfies_a_requirement() {
    let mut t = Test::new();
    requiring(&mut t, &["--require", "TOKEN", "--", "printenv", "TOKEN"]);
    t.env("TOKEN", "from-docker-run");
    t.run().success().stdout_is("from-docker-run\n");
}

#[test]
fn the_variable_lists_requirements_separated_by_whitespace_and_flags_beat_it() {
    let mut t = Test::new();
    t.file("env/A", "1\n");
    requiring(&mut t, &["--print"]);
    t.env("ENVHARNESS_REQUIRE", " A\tB=x ");
    t.run()
        .status(125)
        .error_line(&["B: required to match 'x', and does not"]);

    let mut t = Test::new();
    t.file("env/A", "1\n");
    requiring(&mut t, &["--require", "A", "--print"]);
    t.env("ENVHARNESS_REQUIRE", "B");
    t.run().success();
}

#[test]
fn bad_requirements_are_usage_errors_even_for_plan() {
    for (args, words) in [
        (
            vec!["--require", "1X", "--print"],
            vec!["--require \"1X\"", "not a variable name"],
        ),
        (
            vec!["--require", "DB-URL", "--print"],
            vec!["not a variable name"],
        ),
        (
            vec!["--require", "X=(", "--print"],
            vec!["--require X", "invalid regex '('"],
        ),
        (
            vec!["--plan", "--require", "X=[", "--", "true"],
            vec!["invalid regex '['"],
        ),
        (
            vec!["--wait", "soon", "--print"],
            vec!["--wait", "not a number"],
        ),
        (vec!["--wait", "-1", "--print"], vec!["--wait"]),
    ] {
        let mut t = Test::new();
        requiring(&mut t, &args);
        t.run().status(125).error_line(&words);
    }
}

#[test]
fn plan_lists_the_requirements() {
    let mut t = Test::new();
    requiring(
        &mut t,
        &[
            "--plan",
            "--require",
            "DB_URL=postgres://.*",
            "--require",
            "TOKEN",
            "--",
            "true",
        ],
    );
    t.run()
        .success()
        .stdout_has("require DB_URL to match 'postgres://.*'\n")
        .stdout_has("require TOKEN (set, not empty)\n");
}

/// DB_URL stays empty until the file `announced` exists, as a discovery script waiting for
/// a dependency would.
const DISCOVER: &str =
    "#!/bin/sh\necho try >> tries\nif [ -f announced ]; then echo postgres://db; fi\n";

#[test]
fn wait_re_runs_discovery_until_the_requirement_is_met() {
    let mut t = Test::new();
    t.script("env/DB_URL", DISCOVER);
    requiring(
        &mut t,
        &[
            "--require",
            "DB_URL",
            "--wait",
            "10",
            "--retry-interval",
            "0.05",
            "-v",
        ],
    );
    t.args(&["--", "printenv", "DB_URL"]);
    let (child, started) = t.spawn();
    t.wait_until("three tries", || t.lines("tries").len() >= 3);
    t.file("announced", "");
    let run = t.finish(child, started);
    run.success()
        .stdout_is("postgres://db\n")
        .error_line(&["DB_URL: required but not set; discovering again in"]);
}

#[test]
fn wait_gives_up_after_secs_and_not_much_earlier() {
    let mut t = Test::new();
    t.script("env/DB_URL", DISCOVER);
    requiring(
        &mut t,
        &[
            "--require",
            "DB_URL",
            "--wait",
            "0.6",
            "--retry-interval",
            "0.1",
            "--print",
        ],
    );
    let run = t.run();
    run.status(125)
        .error_line(&["DB_URL: required but not set"])
        .slower_than(Duration::from_millis(600))
        .faster_than(Duration::from_secs(3));
    assert!(t.lines("tries").len() >= 3, "{:?}", t.lines("tries"));
}

#[test]
fn a_failing_script_fails_at_once_while_waiting() {
    let mut t = Test::new();
    t.script("env/DB_URL", "#!/bin/sh\nexit 3\n");
    requiring(&mut t, &["--require", "DB_URL", "--wait", "10", "--print"]);
    t.run()
        .status(125)
        .error_line(&["env/DB_URL: exited with status 3"])
        .faster_than(Duration::from_secs(5));
}

#[test]
fn a_stop_signal_while_waiting_ends_the_harness() {
    let mut t = Test::new();
    t.script("env/DB_URL", DISCOVER);
    requiring(
        &mut t,
        &[
            "--require",
            "DB_URL",
            "--wait",
            "30",
            "--retry-interval",
            "5",
            "--print",
        ],
    );
    let (child, started) = t.spawn();
    t.wait_for("tries");
    let sent = Instant::now();
    t.terminate(child, started).status(128 + 15);
    assert!(sent.elapsed() < Duration::from_secs(3));
}

#[test]
fn wait_without_a_requirement_warns() {
    let mut t = Test::new();
    requiring(&mut t, &["--wait", "5", "--print"]);
    t.run()
        .success()
        .error_line(&["warning: --wait has no effect without --require"]);
}

#[test]
fn requirements_are_checked_under_init_before_the_command_starts() {
    let mut t = Test::new();
    requiring(&mut t, &["--init", "--require", "A", "--", "touch", "ran"]);
    t.run().status(125).error_line(&["A: required but not set"]);
    assert!(!t.exists("ran"));
}

/// A loopback port nobody listens on, and a listener that counts the connections it accepts.
struct Listener {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Listener {
    /// Listens on `port` (from now, or `after` from now), accepting until the test ends.
    fn on(port: u16, after: Duration) -> Listener {
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let bind = move || std::net::TcpListener::bind(("127.0.0.1", port)).expect("listening");
        // Listening before the harness starts, or later on the thread.
        let listening = after.is_zero().then(bind);
        std::thread::spawn(move || {
            let listener = listening.unwrap_or_else(|| {
                std::thread::sleep(after);
                bind()
            });
            for connection in listener.incoming() {
                drop(connection);
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Listener { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn free_port() -> u16 {
    crate::etcd_server::free_port()
}

#[test]
fn wait_for_waits_until_the_port_accepts_and_then_runs_the_command() {
    let listener = Listener::on(free_port(), Duration::from_secs(1));
    let mut t = Test::new();
    let address = format!("127.0.0.1:{}", listener.port);
    requiring(
        &mut t,
        &[
            "--wait-for",
            &address,
            "--wait",
            "10",
            "--retry-interval",
            "0.2",
            "--",
            "touch",
            "ran",
        ],
    );
    let started = Instant::now();
    t.run().success();
    assert!(t.exists("ran"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_address_in_a_variable_is_named_by_the_variable_and_its_password_never_shown() {
    let port = free_port();
    let mut t = Test::new();
    t.file(
        "env/DATABASE_URL",
        format!("postgres://app:s3cret@127.0.0.1:{port}/db\n"),
    );
    requiring(
        &mut t,
        &["--wait-for", "$DATABASE_URL", "--", "touch", "ran"],
    );
    t.run()
        .status(125)
        .error_line(&[&format!(
            "DATABASE_URL: 127.0.0.1:{port} not reachable: connection refused"
        )])
        .stderr_lacks("s3cret");
    assert!(!t.exists("ran"));
}

#[test]
fn wait_for_gives_up_when_the_wait_runs_out() {
    let port = free_port();
    let mut t = Test::new();
    t.env("ENVHARNESS_WAIT_FOR", format!("127.0.0.1:{port}"));
    requiring(
        &mut t,
        &[
            "--wait",
            "0.6",
            "--retry-interval",
            "0.2",
            "--",
            "touch",
            "ran",
        ],
    );
    let started = Instant::now();
    t.run().status(125).error_line(&[&format!(
        "127.0.0.1:{port} not reachable: connection refused"
    )]);
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(!t.exists("ran"));
}

#[test]
fn an_address_that_changes_between_tries_is_followed() {
    let listener = Listener::on(free_port(), Duration::ZERO);
    let closed = free_port();
    let mut t = Test::new();
    // The first try finds a port nobody listens on, the next ones the listener.
    t.script(
        "env/DB",
        &format!(
            "#!/bin/sh\nif [ -f tried ]; then echo tcp://127.0.0.1:{}; else touch tried; echo 127.0.0.1:{closed}; fi\n",
            listener.port
        ),
    );
    requiring(
        &mut t,
        &[
            "--wait-for",
            "DB",
            "--wait",
            "10",
            "--retry-interval",
            "0.1",
            "--",
            "touch",
            "ran",
        ],
    );
    t.run().success();
    assert!(t.exists("ran"));
    assert_eq!(listener.accepted(), 1);
}

#[test]
fn bad_addresses_are_errors_naming_them() {
    for (setup, args, words) in [
        (
            None,
            vec!["--wait-for", "gopher://hole"],
            vec!["--wait-for gopher://hole", "scheme gopher has no default"],
        ),
        (
            None,
            vec!["--wait-for", "db:x"],
            vec!["--wait-for db:x", "not a port"],
        ),
        (
            Some("gopher://hole"),
            vec!["--wait-for", "DB"],
            vec!["DB: holds no address", "gopher"],
        ),
        (
            None,
            vec!["--wait-for", "DB"],
            vec!["DB: required but not set"],
        ),
    ] {
        let mut t = Test::new();
        if let Some(value) = setup {
            t.file("env/DB", value);
        }
        requiring(&mut t, &args);
        t.args(&["--", "touch", "ran"]);
        t.run().status(125).error_line(&words);
        assert!(!t.exists("ran"), "{args:?}");
    }
}

#[test]
fn a_re_run_probes_only_an_address_whose_value_changed() {
    let listener = Listener::on(free_port(), Duration::ZERO);
    let other = Listener::on(free_port(), Duration::ZERO);
    let mut t = Test::new();
    t.file("env/DB", format!("127.0.0.1:{}\n", listener.port))
        .file("env/A", "1\n")
        .script(
            "cmd",
            "#!/bin/sh\ntrap 'exit 0' TERM\ntrap '' USR1\ntouch ready\nwhile :; do sleep 0.02; done\n",
        );
    let literal = format!("127.0.0.1:{}", other.port);
    let cmd = t.p("cmd");
    requiring(
        &mut t,
        &[
            "--init",
            "--watch",
            "0",
            "--on-change",
            "USR1",
            "--wait-for",
            "DB",
            "--wait-for",
            &literal,
            "--",
            &cmd,
        ],
    );
    let (child, started) = t.spawn();
    t.wait_for("ready");
    assert_eq!((listener.accepted(), other.accepted()), (1, 1));
    // Re-runs whose DB is unchanged probe nothing.
    for (n, value) in ["2", "3"].into_iter().enumerate() {
        t.replace("env/A", format!("{value}\n"));
        send(&child, nix::sys::signal::Signal::SIGHUP);
        t.wait_until("the change", || {
            t.stderr_so_far()
                .matches("A changed; sending SIGUSR1")
                .count()
                == n + 1
        });
    }
    assert_eq!((listener.accepted(), other.accepted()), (1, 1));
    // A changed DB is probed again (the literal address never changes).
    let moved = Listener::on(free_port(), Duration::ZERO);
    t.replace("env/DB", format!("127.0.0.1:{}\n", moved.port));
    send(&child, nix::sys::signal::Signal::SIGHUP);
    t.wait_for_stderr("DB changed; sending SIGUSR1");
    assert_eq!((moved.accepted(), other.accepted()), (1, 1));
    t.terminate(child, started).success();
}

#[test]
fn plan_lists_each_address() {
    let mut t = Test::new();
    requiring(
        &mut t,
        &[
            "--wait-for",
            "db:5432",
            "--wait-for",
            "$DATABASE_URL",
            "--plan",
            "--",
            "true",
        ],
    );
    t.run()
        .success()
        .stdout_has("wait for db:5432 to accept a connection\n")
        .stdout_has("wait for the address in DATABASE_URL to accept a connection\n");
}
