//! The file store beside its neighbours (docs/reference.md §11.1): a directory that is not a
//! store is refused and left as it is, nothing inside a store is followed, a FIFO or a file
//! another member made unreadable is skipped with a warning; and the harness beside what shares
//! its store and its read log (§11.5): a watching supervisor that never blocks on the store's
//! files, a read log that cannot make it use unbounded memory, 20,000 keys that do not delay a
//! forwarded signal. Real binaries, real files.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::sys::stat::Mode;

use crate::kv_stores::*;
use crate::support::*;

/// The line a directory that is not a store draws, whole.
fn not_a_store(dir: &Path) -> String {
    format!(
        "envharness: {}: not an envharness store (it holds other files): use an empty directory\n",
        dir.display()
    )
}

/// Everything under `dir` (not following links): each path with its type, size, mode and
/// modification time, to show that nothing changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut found = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).expect("lstat");
        found.insert(
            path.clone(),
            format!(
                "{:?} {} {:o} {:?}",
                meta.file_type(),
                meta.len(),
                meta.mode(),
                meta.modified().ok()
            ),
        );
        if meta.is_dir() {
            found.extend(snapshot(&path));
        }
    }
    found
}

/// Writes `content` at `path` with its modification time two hours ago: a file a sweep of
/// "temporary files older than a minute" would take.
fn old_file(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir -p");
    while_not_forking(|| fs::write(path, content)).expect("writing a file");
    let file = fs::File::options()
        .write(true)
        .open(path)
        .expect("opening it");
    file.set_modified(SystemTime::now() - Duration::from_secs(7200))
        .expect("setting its mtime");
}

/// A value file as the store writes it (docs/reference.md §11.1: a header, then the value).
fn value_file(key: &str, lease: Option<&str>, value: &str) -> String {
    let lease = lease.map(|id| format!("lease {id}\n")).unwrap_or_default();
    format!(
        "envharness-kv 1\nkey {key}\n{lease}size {}\n\n{value}",
        value.len()
    )
}

#[test]
fn a_directory_holding_other_files_is_refused_and_nothing_in_it_changes() {
    let store = FileStore::new();
    let dir = store.path();
    // What a sweep would have taken: someone's old temporary files (one named as the store
    // names its own), a numeric name in leases/; and a file a `kv del` must not reach.
    old_file(&dir.join("tmp/session-1"), "someone's");
    old_file(&dir.join("tmp/417-3-000000000000001f"), "someone's too");
    old_file(&dir.join("leases/123"), "not a lease");
    old_file(&dir.join("passwd"), "root:x:0:0::/root:/bin/sh\n");
    fs::create_dir(dir.join("keys")).expect("mkdir");
    let before = snapshot(&dir);
    let c = Client::new(&store);
    for args in [
        &["put", "k", "v", "--ttl", "5"][..],
        &["put", "k", "v"],
        &["get", "k"],
        &["list"],
        &["del", "passwd"],
        &["get", "k", "--wait", "0.5"],
    ] {
        let run = c.run(args);
        run.status(125);
        assert_eq!(run.stderr, not_a_store(&dir), "kv {args:?}");
    }
    // The harness too: in exec mode it would publish there.
    let mut t = harness_on(&store, "i1");
    t.script("export/web", "#!/bin/sh\necho http://web\n")
        .dir("env");
    t.args(&["-x", "export", "-e", "env", "--", "touch", "ran"]);
    let run = t.run();
    run.status(125);
    assert_eq!(run.stderr, not_a_store(&dir));
    assert!(!t.exists("ran"));
    assert_eq!(snapshot(&dir), before, "the directory changed");
}

#[test]
fn the_root_directory_is_never_a_store() {
    // `file:///$REGISTRY` with the variable unset. Only reads are tried here: on a version
    // without the check, a put would sweep /tmp of the machine running the tests. What / holds
    // is compared by name: other processes of the machine change the entries' times.
    let before = names_in("/");
    let t = Test::new();
    for args in [&["get", "k"][..], &["list"]] {
        let mut command = t.external(BIN);
        command.args(["--kv", "file:///", "kv"]).args(args);
        let run = t.run_command(command);
        run.status(125);
        assert_eq!(run.stderr, not_a_store(Path::new("/")), "kv {args:?}");
    }
    assert_eq!(names_in("/"), before, "/ changed");
}

/// The names in `dir` itself, each with its type.
fn names_in(dir: &str) -> BTreeMap<PathBuf, String> {
    fs::read_dir(dir)
        .expect("listing")
        .flatten()
        .map(|entry| {
            let meta = fs::symlink_metadata(entry.path()).expect("lstat");
            (entry.path(), format!("{:?}", meta.file_type()))
        })
        .collect()
}

#[test]
fn empty_marked_and_earlier_stores_are_used_and_marked() {
    let mark = |dir: &Path| dir.join("envharness-store");
    // Empty but for a filesystem's lost+found.
    let store = FileStore::new();
    fs::create_dir_all(store.file("lost+found")).expect("mkdir");
    let c = Client::new(&store);
    c.run(&["put", "k", "v"]).success();
    c.run(&["get", "k"]).success().stdout_is("v");
    assert!(mark(&store.path()).is_file(), "not marked");
    assert!(store.file("lost+found").is_dir());
    // Marked: used whatever else it holds (an administrator's note).
    fs::write(store.file("README"), "the registry\n").expect("writing");
    c.run(&["put", "k", "w"]).success();
    c.run(&["get", "k"]).success().stdout_is("w");
    // An earlier version's store: keys/, leases/ and tmp/ only, a value in them.
    let store = FileStore::new();
    fs::create_dir_all(store.file("leases")).expect("mkdir");
    fs::create_dir_all(store.file("tmp")).expect("mkdir");
    fs::create_dir_all(store.file("keys")).expect("mkdir");
    fs::write(store.file("keys/db%a"), value_file("db/a", None, "one")).expect("writing");
    let c = Client::new(&store);
    c.run(&["get", "db"]).success().stdout_is("one");
    assert!(mark(&store.path()).is_file(), "not adopted");
    c.run(&["put", "db/b", "two", "--ttl", "30"]).success();
    c.run(&["list", "db/"]).success().stdout_is("one\ntwo\n");
    // One that is only partly there (keys/ alone) is completed.
    let store = FileStore::new();
    fs::create_dir_all(store.file("keys")).expect("mkdir");
    Client::new(&store).run(&["put", "k", "v"]).success();
    for sub in ["leases", "tmp"] {
        assert!(store.file(sub).is_dir(), "{sub}");
    }
}

#[test]
fn a_mark_that_is_a_link_marks_nothing() {
    let store = FileStore::new();
    fs::create_dir_all(store.path()).expect("mkdir");
    let elsewhere = store.path().with_file_name("elsewhere");
    fs::write(&elsewhere, "").expect("writing");
    symlink(&elsewhere, store.file("envharness-store")).expect("symlink");
    let before = snapshot(&store.path());
    let run = Client::new(&store).run(&["put", "k", "v"]);
    run.status(125);
    assert_eq!(run.stderr, not_a_store(&store.path()));
    assert_eq!(snapshot(&store.path()), before);
}

#[test]
fn linked_subdirectories_are_errors_naming_them_and_nothing_outside_changes() {
    for sub in ["keys", "leases", "tmp"] {
        let store = FileStore::new();
        let c = Client::new(&store);
        c.run(&["put", "a", "v"]).success();
        // What the store must never reach: files named like a key, a lease and a temporary
        // file, old enough for a sweep.
        let outside = store.path().with_file_name("outside");
        for name in ["passwd", "a", "123", "417-3-000000000000001f"] {
            old_file(&outside.join(name), "precious");
        }
        fs::remove_dir_all(store.file(sub)).expect("removing the subdirectory");
        symlink(&outside, store.file(sub)).expect("symlink");
        let before = snapshot(&outside);
        let named = store.file(sub).display().to_string();
        for args in [
            &["del", "passwd"][..],
            &["del", "a"],
            &["put", "x", "v", "--ttl", "5"],
            &["put", "a", "w"],
            &["get", "a"],
            &["list"],
        ] {
            c.run(args)
                .status(125)
                .error_line(&[&named, "a symbolic link"]);
        }
        assert_eq!(
            snapshot(&outside),
            before,
            "{sub} -> outside: outside changed"
        );
    }
}

/// A FIFO at `path`.
fn fifo(path: &Path) {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o644)).expect("mkfifo");
}

#[test]
fn a_fifo_or_a_link_named_like_a_key_is_skipped_with_one_warning() {
    let store = FileStore::new();
    let c = Client::new(&store);
    c.run(&["put", "db/a", "one"]).success();
    let keys = store.file("keys");
    fifo(&keys.join("db%b"));
    symlink(keys.join("db%b"), keys.join("db%c")).expect("symlink");
    // A link to a real value is not followed either.
    let elsewhere = store.path().with_file_name("value");
    fs::write(&elsewhere, value_file("db/d", None, "secret")).expect("writing");
    symlink(&elsewhere, keys.join("db%d")).expect("symlink");
    let warned = |run: &Run, name: &str, what: &str| {
        let lines = run.stderr_lines_with(&format!("keys/{name}:"));
        assert_eq!(lines.len(), 1, "one warning for {name}:\n{}", run.stderr);
        assert!(
            lines[0].starts_with("envharness: warning:") && lines[0].contains(what),
            "{}",
            lines[0]
        );
    };
    for (key, name, what) in [
        ("db/b", "db%b", "a FIFO"),
        ("db/c", "db%c", "a symbolic link"),
        ("db/d", "db%d", "a symbolic link"),
    ] {
        let run = c.run(&["get", key]);
        run.status(1).faster_than(Duration::from_secs(2));
        warned(&run, name, what);
    }
    let run = c.run(&["list", "db/"]);
    run.success()
        .stdout_is("one\n")
        .faster_than(Duration::from_secs(2));
    for (name, what) in [
        ("db%b", "a FIFO"),
        ("db%c", "a symbolic link"),
        ("db%d", "a symbolic link"),
    ] {
        warned(&run, name, what);
    }
    c.run(&["get", "db"])
        .success()
        .stdout_is("one")
        .faster_than(Duration::from_secs(2));
    // They stay: the store removes only what it wrote.
    assert!(fs::symlink_metadata(keys.join("db%b")).is_ok());
    assert!(elsewhere.exists());
}

/// The harness's scripts and command for [`a_watching_supervisor_goes_on_while_a_fifo_is_named_like_a_key`]
/// and the 20,000-key test: DATABASE_URL from `kv get db`, a command that records each start
/// (`ready-VALUE`, its pid in `pids`), SIGUSR1 (a line in `usr1`) and SIGTERM.
fn watching_app(store: &dyn KvStore) -> Test {
    let mut t = harness_on(store, "i1");
    t.script("env/DATABASE_URL", "#!/bin/sh\nexec envharness kv get db\n")
        .script("export/web", "#!/bin/sh\necho http://web-1\n")
        .script(
            "cmd",
            "#!/bin/sh\n\
             sleep 1000 & sleeper=$!\n\
             trap 'echo term >> terms; kill $sleeper; exit 0' TERM\n\
             trap 'echo usr1 >> usr1' USR1\n\
             echo $$ >> pids\n\
             touch \"ready-$DATABASE_URL\"\n\
             while kill -0 $sleeper 2>/dev/null; do wait $sleeper; done\n",
        );
    let cmd = t.p("cmd");
    t.args(&["--init", "--watch", "0", "-x", "export", "-e", "env", "--"])
        .args(&[cmd.as_str()]);
    t
}

/// Whether the process is gone from the process table (reaped, not a zombie) within `limit`.
fn reaped_within(pid: i32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn a_watching_supervisor_goes_on_while_a_fifo_is_named_like_a_key() {
    let store = FileStore::new();
    let client = Client::new(&store);
    client.put("db/x", "one");
    let t = watching_app(&store);
    let (child, started) = t.spawn();
    t.wait_for("ready-one");
    t.wait_until("web/i1 published", || client.has("web/i1"));
    let first = t.pid("pids");
    // A FIFO and a link to it among the keys the scripts read, and one among the others:
    // the watch's thread and the registration's thread both read value files.
    let keys = store.file("keys");
    fifo(&keys.join("db%y"));
    symlink(keys.join("db%y"), keys.join("db%z")).expect("symlink");
    fifo(&keys.join("other"));
    client.put("db/x", "two");
    t.wait_for("ready-two");
    assert!(
        reaped_within(first, Duration::from_secs(2)),
        "the first command was not reaped"
    );
    assert!(client.has("web/i1"), "still published");
    let term = Instant::now();
    send(&child, Signal::SIGTERM);
    t.wait_for("terms");
    let forwarded = term.elapsed();
    let run = t.finish(child, started);
    run.success();
    assert!(
        forwarded < Duration::from_secs(1),
        "SIGTERM forwarded after {forwarded:?}"
    );
    assert!(!client.has("web/i1"), "withdrawn");
    for pid in t.lines("pids") {
        let pid: i32 = pid.parse().expect("a pid");
        assert!(reaped_within(pid, Duration::from_secs(2)), "{pid} left");
    }
}

/// Whether the tests may run commands as other users (they run as root, which permissions do
/// not stop); says why not.
fn can_switch_users() -> bool {
    if !fs::metadata("/proc/self").is_ok_and(|me| me.uid() == 0) {
        unavailable("ENVHARNESS_TEST_SYSTEM", "not root, so cannot switch users");
        return false;
    }
    let probe = output(Command::new("setpriv").args([
        "--reuid=64001",
        "--regid=64000",
        "--clear-groups",
        "true",
    ]));
    if !probe.as_ref().is_ok_and(|out| out.status.success()) {
        unavailable(
            "ENVHARNESS_TEST_SYSTEM",
            "setpriv cannot run a command as another user",
        );
        return false;
    }
    true
}

#[test]
fn a_value_another_member_made_unreadable_is_skipped_with_a_warning() {
    if !can_switch_users() {
        return;
    }
    // A store shared by the group 64000 (setgid, group-writable), made beforehand by root;
    // members 64001 and 64002.
    let store = FileStore::new();
    let t = Test::new();
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let top = store.path().parent().expect("a parent").to_owned();
    fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::create_dir(store.path()).expect("mkdir");
    std::os::unix::fs::chown(store.path(), None, Some(64000)).expect("chown");
    fs::set_permissions(store.path(), fs::Permissions::from_mode(0o2770)).expect("chmod");
    let as_member = |uid: u32, args: &[&str]| {
        let mut command = t.external("setpriv");
        command
            .args([
                &format!("--reuid={uid}"),
                "--regid=64000",
                "--clear-groups",
                BIN,
            ])
            .args(["--kv", &store.kv_url(), "kv"])
            .args(args);
        t.run_command(command)
    };
    as_member(64001, &["put", "svc/a", "first"]).success();
    as_member(64001, &["put", "svc/b", "second"]).success();
    // The first member makes its value its own alone.
    let private = store.file("keys/svc%a");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).expect("chmod");
    let warned = |run: &Run| {
        let lines = run.stderr_lines_with("keys/svc%a");
        assert_eq!(lines.len(), 1, "{}", run.stderr);
        assert!(
            lines[0].contains("warning") && lines[0].contains("Permission denied"),
            "{}",
            lines[0]
        );
    };
    let run = as_member(64002, &["list", "svc/"]);
    run.success().stdout_is("second\n");
    warned(&run);
    let run = as_member(64002, &["get", "svc"]);
    run.success().stdout_is("second");
    warned(&run);
    let run = as_member(64002, &["list", "--keys"]);
    run.success().stdout_is("svc/b\n");
    let run = as_member(64002, &["get", "svc/a"]);
    run.status(1);
    warned(&run);
    // Its owner still reads it.
    as_member(64001, &["get", "svc/a"])
        .success()
        .stdout_is("first");
}

#[test]
fn a_read_log_over_its_limit_re_runs_on_any_change_in_bounded_memory() {
    let store = FileStore::new();
    let client = Client::new(&store);
    client.put("db/x", "one");
    let mut t = harness_on(&store, "i1");
    // Three million distinct lookups appended to the log by the first run, as any process of
    // the user could: held in memory, they would take far more than the limit below.
    t.script(
        "env/DATABASE_URL",
        "#!/bin/sh\n\
         echo run >> discoveries\n\
         if [ ! -f flooded ]; then\n\
           touch flooded\n\
           seq 3000000 | sed 's/.*/list\tp&\t-/' >> \"$ENVHARNESS_KV_READS\"\n\
         fi\n\
         exec envharness kv get db\n",
    )
    .script(
        "cmd",
        "#!/bin/sh\nsleep 1000 & sleeper=$!\ntrap 'kill $sleeper; exit 0' TERM\ntouch ready\n\
         while kill -0 $sleeper 2>/dev/null; do wait $sleeper; done\n",
    )
    .dir("export");
    let cmd = t.p("cmd");
    t.args(&["--init", "--watch", "0", "-x", "export", "-e", "env", "--"])
        .args(&[cmd.as_str()]);
    let started = Instant::now();
    let child = spawn(&mut t.command_with_memory_limit(256 << 20)).expect("spawning envharness");
    t.wait_for("ready");
    t.wait_for_stderr("any change in the registry now re-runs discovery");
    assert_eq!(t.lines("discoveries").len(), 1);
    // A key no script read: with the log over its limit, any change counts.
    client.put("unrelated", "x");
    t.wait_until("a second discovery", || t.lines("discoveries").len() == 2);
    let run = t.terminate(child, started);
    run.success();
}

#[test]
fn usr1_reaches_a_watching_command_promptly_while_20000_keys_exist_and_puts_happen() {
    let store = FileStore::new();
    let client = Client::new(&store);
    client.put("db/x", "one");
    // 20,000 keys under one lease, written as the store writes them.
    client
        .run(&["put", "holder", "x", "--ttl", "600"])
        .success();
    let lease = fs::read_dir(store.file("leases"))
        .expect("listing leases/")
        .flatten()
        .next()
        .expect("a lease")
        .file_name()
        .into_string()
        .expect("a lease id");
    let keys = store.file("keys");
    while_not_forking(|| {
        for n in 0..20_000 {
            let key = format!("svc/{n:05}");
            fs::write(
                keys.join(key.replace('/', "%")),
                value_file(&key, Some(&lease), "x"),
            )
            .expect("writing a key");
        }
    });
    let t = watching_app(&store);
    let (child, started) = t.spawn();
    t.wait_for("ready-one");
    // Unrelated puts, one after the other, all along.
    let cpu_before = cpu_time(child.id());
    let done = std::sync::atomic::AtomicBool::new(false);
    let puts = std::sync::atomic::AtomicU32::new(0);
    let mut delays = Vec::new();
    thread::scope(|scope| {
        scope.spawn(|| {
            let writer = Client::new(&store);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let n = puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                writer
                    .run(&["put", &format!("other/{}", n % 50), "v"])
                    .success();
            }
        });
        for round in 1..=20 {
            thread::sleep(Duration::from_millis(50));
            let sent = Instant::now();
            send(&child, Signal::SIGUSR1);
            t.wait_until("USR1 received", || t.lines("usr1").len() >= round);
            delays.push(sent.elapsed());
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // What the harness spent on them (all its threads): an unrelated put is not its business.
    let cpu = cpu_time(child.id()) - cpu_before;
    let puts = puts.into_inner();
    let run = t.terminate(child, started);
    run.success();
    delays.sort();
    eprintln!("USR1 delays with 20,000 keys: {delays:?}; {cpu:?} of CPU for {puts} puts");
    assert!(
        cpu < Duration::from_millis(2) * puts.max(50),
        "{cpu:?} of the harness's CPU for {puts} unrelated puts"
    );
    // The median says the signal is not held up behind the store; the worst gets slack for
    // a shared test machine.
    assert!(
        delays[delays.len() / 2] < Duration::from_millis(30),
        "{delays:?}"
    );
    assert!(
        delays[delays.len() - 1] < Duration::from_millis(300),
        "{delays:?}"
    );
}

/// The CPU time the process has used so far, all its threads (utime and stime of
/// /proc/PID/stat, in clock ticks).
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/PID/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    // After the command's name, state is field 3; utime is 14 and stime 15 (proc(5)).
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
    let per_second = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(ticks as f64 / per_second.max(1) as f64)
}
