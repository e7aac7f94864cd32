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

/// The README's recipe for the example on a host without containers (the block after
/// `<!-- discovery without containers -->`): `envharness` on PATH (`make install`), the store
/// in ENVHARNESS_KV, db's line and app's in the background, then `kill %1` and `kill %2`. Each envharness line is run as
/// written, in a directory where `examples/` is the repository's, with the store of the test
/// instead of the block's /tmp one, and empty directories where the lines leave the default
/// /environment and /export (whatever this machine has there).
#[test]
fn the_readme_recipe_without_containers_runs() {
    let block = readme_block("discovery without containers");
    let mut lines: Vec<String> = Vec::new();
    let mut continued = false;
    for line in block.lines() {
        match lines.last_mut() {
            Some(last) if continued => last.push_str(line.trim_start()),
            _ => lines.push(line.to_owned()),
        }
        continued = line.ends_with('\\');
        if continued {
            let last = lines.last_mut().expect("a line");
            last.truncate(last.len() - 1);
        }
    }
    let [install, export, db_line, app_line] = lines.as_slice() else {
        panic!("the recipe is four commands: {lines:?}");
    };
    assert_eq!(install, "make install");
    assert_eq!(
        export,
        "export ENVHARNESS_KV=file:///tmp/envharness-registry"
    );
    let db_line = db_line
        .strip_suffix(" &")
        .expect("db runs in the background");
    let app_line = app_line
        .strip_suffix(" &")
        .expect("app runs in the background");

    let store = FileStore::new();
    let service = |line: &str| {
        let words = shell_words::split(line).expect("a command line");
        let mut t = Test::new();
        t.symlink("bin/envharness", BIN)
            .symlink("examples", &example("..")[..])
            .dir("empty");
        let path = format!("{}:{PATH}", t.p("bin"));
        let empty = t.p("empty");
        t.env("PATH", path)
            .env("ENVHARNESS_KV", store.kv_url())
            .env("ENVHARNESS_ENVIRONMENT", &empty)
            .env("ENVHARNESS_EXPORT", &empty);
        let mut words = words.into_iter();
        for word in words.by_ref() {
            match word.split_once('=') {
                Some((name, value)) => {
                    t.env(name, value);
                }
                None => {
                    assert_eq!(word, "envharness", "{line}");
                    break;
                }
            }
        }
        t.args(&words.collect::<Vec<_>>());
        t
    };
    let db = service(db_line);
    let (db_child, db_started) = db.spawn();
    let app = service(app_line);
    let (app_child, app_started) = app.spawn();
    app.wait_for_text(".stdout", "app: using postgres://db-1.internal:5432/app\n");

    // `kill %1`: db withdraws its key, whatever its instance's name.
    send(&db_child, Signal::SIGTERM);
    db.finish(db_child, db_started).status(143);
    let list = Client::new(&store).run(&["list", "DATABASE_URL/"]);
    list.success().stdout_is("");
    // app keeps running; `kill %2` reaches its command, which dies of it.
    assert!(alive(app_child.id() as i32), "app stopped with db");
    send(&app_child, Signal::SIGTERM);
    app.finish(app_child, app_started)
        .status(143)
        .stdout_is("app: using postgres://db-1.internal:5432/app\n");
}
