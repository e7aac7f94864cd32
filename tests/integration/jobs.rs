//! `--jobs` (docs/reference.md §3.4): the scripts of a directory run several at once, and the
//! outcome is sequential mode's except that they cannot see one another's output. Concurrency is
//! shown with barriers (each script waits until all of them have started), not with timing, where
//! possible.

use std::time::Duration;

use crate::support::*;

/// A directory layout whose result does not depend on scripts seeing one another: `a.env` is
/// the slowest and both `.env` scripts set SHARED, so applying the results in finishing order
/// instead of lexical order would show.
fn layered(t: &Test) {
    t.file("base/BASE", "from-base\n");
    t.script(
        "env/a.env",
        "#!/bin/sh\nsleep 0.3\necho \"FIRST=$BASE-a\"\necho SHARED=a\n",
    );
    t.script(
        "env/b.env",
        "#!/bin/sh\necho SHARED=b\necho \"SECOND=$BASE-b\"\n",
    );
    t.script("env/C", "#!/bin/sh\nsleep 0.1\necho \"$BASE-c\"\n");
    t.file("env/D", "literal-d");
    t.script("env/E", "#!/bin/sh\necho \"$BASE-e\"\n");
}

// Byte order: upper case before lower case.
const LAYERED_PRINT: &str = "\
BASE='from-base'
C='from-base-c'
D='literal-d'
E='from-base-e'
FIRST='from-base-a'
SHARED='b'
SECOND='from-base-b'
";

#[test]
fn results_are_applied_in_lexical_order_as_in_sequential_mode() {
    let mut sequential = Test::new();
    layered(&sequential);
    sequential.args(&["-j", "1", "-e", "base", "-e", "env", "--print"]);
    sequential.run().success().stdout_is(LAYERED_PRINT);

    let mut parallel = Test::new();
    layered(&parallel);
    parallel.args(&["-j", "4", "-e", "base", "-e", "env", "--print"]);
    parallel
        .run()
        .success()
        .stdout_is(LAYERED_PRINT)
        // All at once: the slowest script's 0.3 s, not the sum.
        .faster_than(Duration::from_millis(1500));
}

#[test]
fn scripts_of_one_directory_do_not_see_one_another_with_jobs() {
    let setup = |t: &Test| {
        t.file("base/BASE", "base");
        t.script("env/A", "#!/bin/sh\necho a\n");
        t.script("env/B", "#!/bin/sh\necho \"${A:-unset} ${BASE:-unset}\"\n");
    };
    let mut sequential = Test::new();
    setup(&sequential);
    sequential.args(&["-e", "base", "-e", "env", "--print"]);
    sequential
        .run()
        .success()
        .printed_is(&[("BASE", "base"), ("A", "a"), ("B", "a base")]);

    let mut parallel = Test::new();
    setup(&parallel);
    parallel.args(&["-j", "2", "-e", "base", "-e", "env", "--print"]);
    parallel
        .run()
        .success()
        .printed_is(&[("BASE", "base"), ("A", "a"), ("B", "unset base")]);
}

#[test]
fn twenty_slow_scripts_with_j20_take_the_time_of_one() {
    let mut t = Test::new();
    let mut expected = Vec::new();
    for i in 0..20 {
        let name = format!("V{i:02}");
        t.script(
            &format!("env/{name}"),
            &format!("#!/bin/sh\nsleep 0.2\necho {name}\n"),
        );
        expected.push((name.clone(), name));
    }
    t.args(&["-j", "20", "-e", "env", "--print"]);
    let run = t.run();
    let expected: Vec<(&str, &str)> = expected
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // Sequentially this is at least 4 s.
    run.success()
        .printed_is(&expected)
        .faster_than(Duration::from_secs(2));
}

/// `count` scripts that each wait until all `count` have started: they can only succeed if
/// they all run at the same time. The wait is bounded, so a harness that runs fewer at once
/// fails instead of hanging.
fn barrier(t: &Test, count: usize) -> Vec<(String, String)> {
    t.dir("started");
    (0..count)
        .map(|i| {
            let name = format!("B{i}");
            t.script(
                &format!("env/{name}"),
                &format!(
                    "#!/bin/sh
touch started/{name}
n=0
while [ \"$(ls started | wc -l)\" -lt {count} ]; do
  n=$((n + 1))
  if [ $n -gt 150 ]; then echo '{name}: not everyone started' >&2; exit 9; fi
  sleep 0.01
done
echo {name}
"
                ),
            );
            (name.clone(), name)
        })
        .collect()
}

#[track_caller]
fn all_ran_at_once(t: &Test, expected: &[(String, String)]) {
    let expected: Vec<(&str, &str)> = expected
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    t.run().success().printed_is(&expected);
}

#[test]
fn j0_runs_every_script_at_once() {
    let mut t = Test::new();
    let expected = barrier(&t, 7);
    t.args(&["-j", "0", "-e", "env", "--print"]);
    all_ran_at_once(&t, &expected);
}

#[test]
fn envharness_jobs_sets_the_number_and_0_means_all() {
    let mut t = Test::new();
    let expected = barrier(&t, 5);
    t.env("ENVHARNESS_JOBS", "0")
        .args(&["-e", "env", "--print"]);
    all_ran_at_once(&t, &expected);

    let mut t = Test::new();
    let expected = barrier(&t, 3);
    t.env("ENVHARNESS_JOBS", "3")
        .args(&["-e", "env", "--print"]);
    all_ran_at_once(&t, &expected);
}

#[test]
fn fewer_jobs_than_scripts_never_runs_more_at_once() {
    let mut t = Test::new();
    barrier(&t, 3);
    t.args(&["-j", "2", "-e", "env", "--print"]);
    // Two of three can never see the third start: they give up (status 9) after 150 polls.
    t.run()
        .status(125)
        .error_line(&["env/B", "exited with status 9"])
        .stderr_has("not everyone started");
}

fn chatty(t: &Test) {
    t.script(
        "env/ALPHA",
        "#!/bin/sh\necho 'hello from alpha' >&2\necho a\n",
    );
    t.script(
        "env/BETA",
        "#!/bin/sh\necho 'hello from beta' >&2\nprintf 'no newline' >&2\necho b\n",
    );
}

#[test]
fn with_jobs_each_stderr_line_is_prefixed_with_the_script_name() {
    let mut t = Test::new();
    chatty(&t);
    t.args(&["-j", "2", "-e", "env", "--print"]);
    let run = t.run();
    run.success().printed_is(&[("ALPHA", "a"), ("BETA", "b")]);
    let lines: Vec<&str> = run.stderr.lines().collect();
    for expected in [
        "ALPHA| hello from alpha",
        "BETA| hello from beta",
        "BETA| no newline",
    ] {
        assert!(
            lines.contains(&expected),
            "stderr lacks the line {expected:?}:\n{}",
            run.stderr
        );
    }
}

#[test]
fn without_jobs_stderr_passes_through_unchanged() {
    let mut t = Test::new();
    chatty(&t);
    t.env("ENVHARNESS_JOBS", "8")
        .args(&["-j", "1", "-e", "env", "--print"]);
    let run = t.run();
    run.success()
        .printed_is(&[("ALPHA", "a"), ("BETA", "b")])
        .stderr_lacks("| ");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines.contains(&"hello from alpha") && lines.contains(&"hello from beta"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_failure_stops_the_running_siblings_and_is_reported() {
    let mut t = Test::new();
    t.script(
        "env/A_LONG",
        "#!/bin/sh
echo $$ > script.pid
sleep 30 &
echo $! > grandchild.pid
touch ready
wait
touch a-finished
echo a
",
    );
    let wait_for_a =
        "n=0\nwhile [ ! -e ready ]; do n=$((n + 1)); [ $n -gt 500 ] && exit 99; sleep 0.01; done\n";
    t.script(
        "env/B_FAILS",
        &format!("#!/bin/sh\n{wait_for_a}echo 'b is failing' >&2\nexit 4\n"),
    );
    t.script(
        "env/C_WOULD_FAIL",
        &format!("#!/bin/sh\n{wait_for_a}sleep 1\ntouch c-finished\nexit 5\n"),
    );
    t.script("later/D", "#!/bin/sh\ntouch d-ran\necho d\n");
    t.args(&[
        "-j",
        "3",
        "-e",
        "env",
        "-e",
        "later",
        "--",
        "touch",
        "command-ran",
    ]);
    let run = t.run();
    run.status(125)
        .error_line(&["env/B_FAILS", "exited with status 4"])
        .stderr_has("B_FAILS| b is failing")
        .stderr_lacks("exited with status 5")
        .faster_than(Duration::from_secs(2));
    for file in ["script.pid", "grandchild.pid"] {
        let pid = t.pid(file);
        assert!(
            gone_within(pid, Duration::from_secs(1)),
            "{file} ({pid}) still runs after a sibling failed\n{}",
            run.stderr
        );
    }
    for file in ["a-finished", "c-finished", "d-ran", "command-ran"] {
        assert!(!t.exists(file), "{file} exists: something ran on");
    }
}

#[test]
fn of_two_failures_the_lexically_first_is_reported() {
    let mut t = Test::new();
    nix::unistd::mkfifo(&t.path("fifo"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    // B fails first; A fails as soon as B has written to the FIFO, within B's pipe grace
    // (B's stdout is held open by a background process), so both have failed on their own
    // before either is collected.
    t.script("env/A_FAILS", "#!/bin/sh\nread go < fifo\nexit 3\n");
    t.script(
        "env/B_FAILS",
        "#!/bin/sh\nsleep 1 &\necho go > fifo\nexit 4\n",
    );
    t.args(&["-j", "2", "-e", "env", "--print"]);
    let run = t.run();
    run.status(125)
        .error_line(&["env/A_FAILS", "exited with status 3"])
        .stderr_lacks("exited with status 4")
        .faster_than(Duration::from_secs(2));
}

#[test]
fn with_jobs_a_timeout_still_applies_to_each_script() {
    let mut t = Test::new();
    t.script("env/FAST", "#!/bin/sh\necho fast\n");
    t.script("env/SLOW", "#!/bin/sh\nexec sleep 30\n");
    t.args(&["-j", "2", "--timeout", "0.3", "-e", "env", "--print"]);
    t.run()
        .status(125)
        .error_line(&["env/SLOW", "timed out after 0.3s"])
        .faster_than(Duration::from_secs(2));
}

#[test]
fn with_jobs_a_failing_script_is_retried_alone() {
    let mut t = Test::new();
    t.script(
        "env/FLAKY",
        "#!/bin/sh\necho try >> tries\n[ \"$(wc -l < tries)\" -ge 2 ] || exit 7\necho flaky\n",
    );
    t.script(
        "env/STEADY",
        "#!/bin/sh\necho run >> steady-runs\necho steady\n",
    );
    t.args(&[
        "-j",
        "2",
        "--retries",
        "2",
        "--retry-interval",
        "0.05",
        "-e",
        "env",
        "--print",
    ]);
    t.run()
        .success()
        .printed_is(&[("FLAKY", "flaky"), ("STEADY", "steady")])
        .error_line(&["env/FLAKY", "exited with status 7", "try 2 of 3"]);
    assert_eq!(t.read("tries"), "try\ntry\n");
    assert_eq!(t.read("steady-runs"), "run\n");
}

#[test]
fn with_jobs_a_background_process_holding_stdout_does_not_hang() {
    let mut t = Test::new();
    t.script(
        "env/STUCK",
        "#!/bin/sh\nsleep 30 &\necho $! > background.pid\necho value\n",
    );
    t.script("env/OTHER", "#!/bin/sh\necho other\n");
    t.args(&["-j", "2", "-e", "env", "--print"]);
    let run = t.run();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(t.pid("background.pid")),
        nix::sys::signal::Signal::SIGKILL,
    );
    run.success()
        .printed_is(&[("OTHER", "other"), ("STUCK", "value")])
        .error_line(&["env/STUCK", "kept stdout open"])
        .faster_than(Duration::from_secs(1));
}

#[test]
fn with_jobs_a_script_that_cannot_be_run_is_reported_like_in_sequential_mode() {
    for (body, reason) in [
        (NO_SHEBANG, "no #! line"),
        (CRLF, "Windows line endings"),
        (NO_INTERPRETER, "/nonexistent/sh"),
    ] {
        let mut t = Test::new();
        t.script("env/A", body);
        t.script("env/B", "#!/bin/sh\necho b\n");
        t.args(&["-j", "2", "-e", "env", "--", "touch", "command-ran"]);
        t.run().status(125).error_line(&["env/A", reason]);
        assert!(!t.exists("ran"), "{reason}: run through a shell");
        assert!(!t.exists("command-ran"));
    }
}

#[test]
fn with_jobs_a_stop_signal_reaches_every_running_script() {
    let mut t = Test::new();
    for name in ["A", "B"] {
        t.script(
            &format!("env/{name}"),
            &format!("#!/bin/sh\necho $$ > {name}.pid\ntouch {name}.ready\nexec sleep 30\n"),
        );
    }
    t.args(&["-j", "2", "-e", "env", "--", "touch", "command-ran"]);
    let (child, started) = t.spawn();
    t.wait_for("A.ready");
    t.wait_for("B.ready");
    send(&child, nix::sys::signal::Signal::SIGTERM);
    t.finish(child, started)
        .status(143)
        .faster_than(Duration::from_secs(3));
    for name in ["A", "B"] {
        let pid = t.pid(&format!("{name}.pid"));
        assert!(
            gone_within(pid, Duration::from_secs(2)),
            "script {name} survived"
        );
    }
    assert!(!t.exists("command-ran"));
}
