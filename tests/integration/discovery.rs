//! examples/discovery: two harnesses, real processes, one store. `app` waits for `db` to
//! announce itself, gets its URL, warns but keeps running when `db` goes away, and restarts
//! with the new URL when a `db` comes back at another address.

use std::path::Path;
use std::process::Child;
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::kv_stores::*;
use crate::support::*;

fn example(relative: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/discovery")
        .join(relative)
        .to_string_lossy()
        .into_owned()
}

/// A harness of the example: `envharness` on PATH, the store in ENVHARNESS_KV.
fn service(store: &dyn KvStore, instance: &str) -> Test {
    let t = harness_on(store, instance);
    t.dir("empty");
    t
}

/// `db` at `address`: the example's export directory and a stand-in server.
fn start_db(store: &dyn KvStore, address: &str) -> (Test, Child, Instant) {
    let mut t = service(store, "db-1");
    t.env("DB_ADDRESS", address);
    let empty = t.p("empty");
    t.args(&["--init", "--ttl", "2", "--health-interval", "0.2"])
        .args(&["-x", &example("db/export"), "-e", &empty])
        .args(&[
            "--",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.05; done",
        ]);
    let (child, started) = t.spawn();
    (t, child, started)
}

#[test]
fn app_waits_for_db_and_follows_it() {
    let store = FileStore::new();
    let mut app = service(&store, "app-1");
    // Discovery waits 3 s for a database before a (re-)run fails.
    app.env("DISCOVERY_WAIT", "3");
    let empty = app.p("empty");
    app.args(&["--init", "--watch", "0", "-x", &empty])
        .args(&["-e", &example("app/environment"), "--", "sh", "-c"])
        .args(&["trap 'exit 0' TERM; echo \"$DATABASE_URL\" >> got; while :; do sleep 0.05; done"]);
    let (app_child, app_started) = app.spawn();
    assert!(
        app.lines("got").is_empty(),
        "app must not start before db announced itself"
    );

    let (db, db_child, db_started) = start_db(&store, "db-1.internal");
    app.wait_until("app started with db's URL", || !app.lines("got").is_empty());
    assert_eq!(app.lines("got"), ["postgres://db-1.internal:5432/app"]);

    // db stops: its key is withdrawn, app's re-run fails, app keeps running.
    send(&db_child, Signal::SIGTERM);
    db.finish(db_child, db_started).success();
    assert!(!Client::new(&store).has("DATABASE_URL/db-1"));
    app.wait_for_stderr("re-run failed, nothing changed");
    assert_eq!(app.lines("got").len(), 1);

    // A db comes back elsewhere: app restarts with the new URL.
    let (db, db_child, db_started) = start_db(&store, "db-2.internal");
    app.wait_until("app restarted with the new URL", || {
        app.lines("got").len() == 2
    });
    assert_eq!(app.lines("got")[1], "postgres://db-2.internal:5432/app");

    send(&app_child, Signal::SIGTERM);
    app.finish(app_child, app_started)
        .success()
        .error_line(&["DATABASE_URL changed; restarting the command"]);
    send(&db_child, Signal::SIGTERM);
    db.finish(db_child, db_started).success();
}
