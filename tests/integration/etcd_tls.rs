//! The registry over TLS (docs/reference.md §12) on real etcd servers started with
//! `--cert-file --key-file --trusted-ca-file [--client-cert-auth]`, certificates made by the
//! test ([`crate::pki`]): every failure a user meets, with exit 125, the URL and the reason,
//! and never a key's content or a password in the output; a three-member cluster with a member
//! down; a CA file replaced under a running harness; user and password with a client
//! certificate; the one warning of a password in clear text.

use std::path::Path;
use std::time::{Duration, Instant};

use envharness::registry::etcd::{self, EtcdStore};
use envharness::registry::{Access, Store};

use crate::etcd::{key, serves_while_its_first_member_is_down};
use crate::etcd_server::{free_port, Etcd, ServerTls};
use crate::kv_stores::*;
use crate::pki::{Issued, Pki};
use crate::support::*;

/// A TLS etcd with the CA and server certificate of `pki`.
fn tls_etcd(pki: &Pki, client_cert_auth: bool) -> Option<Etcd> {
    Etcd::with_tls(ServerTls::from(pki, client_cert_auth))
}

/// `envharness kv ARGS` with only `env` (and the URL) in its environment.
fn kv(url: &str, env: &[(String, String)], args: &[&str]) -> Run {
    let t = Test::new();
    let mut command = t.external(BIN);
    command
        .env("ENVHARNESS_KV", url)
        .envs(env.iter().cloned())
        .arg("kv")
        .args(args);
    t.run_command(command)
}

/// The lines of a PEM key's body: none of them may appear in any output.
fn key_material(key: &Path) -> Vec<String> {
    std::fs::read_to_string(key)
        .expect("reading a key")
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .map(str::to_owned)
        .collect()
}

#[track_caller]
fn assert_no_key_material(run: &Run, keys: &[&Path]) {
    let output = format!("{}{}", run.stdout(), run.stderr);
    assert!(!output.contains("PRIVATE KEY"), "{output}");
    for key in keys {
        for line in key_material(key) {
            assert!(
                !output.contains(&line),
                "key material in the output: {output}"
            );
        }
    }
}

#[test]
fn a_client_certificate_admits_and_one_handshake_serves_a_call() {
    let pki = Pki::new("admit");
    let Some(etcd) = tls_etcd(&pki, true) else {
        return;
    };
    let client = pki.client(Some("envharness"));
    let env = tls_env(&pki.ca(), Some(&client));
    let url = etcd.url("admit");
    kv(&url, &env, &["put", "k", "over TLS"]).success();
    let run = kv(&url, &env, &["get", "k"]);
    run.success().stdout_is("over TLS");
    // Each new connection says so at -vv; a call makes one.
    let mut env_debug = env.clone();
    env_debug.push(("RUST_LOG".into(), "debug".into()));
    let run = kv(&url, &env_debug, &["list", "--keys"]);
    run.success().stdout_is("k\n");
    assert_eq!(
        run.stderr_lines_with("TLS handshake done").len(),
        1,
        "{}",
        run.stderr
    );
    // The server name may be given: certificates issued to a name, endpoints as IPs.
    let named = pki.server_for(&["etcd.example"], false);
    let Some(by_name) = Etcd::with_tls(ServerTls {
        cert: named.cert,
        key: named.key,
        ca: pki.ca(),
        client_cert_auth: true,
    }) else {
        return;
    };
    let url = by_name.url("named");
    let run = kv(&url, &env, &["get", "k"]);
    run.status(125).error_line(&[&format!(
        "envharness: {url}: TLS: certificate is not valid for 127.0.0.1"
    )]);
    let mut with_name = env.clone();
    with_name.push(("ENVHARNESS_KV_SERVER_NAME".into(), "etcd.example".into()));
    kv(&url, &with_name, &["put", "k", "v"]).success();
    assert_no_key_material(&run, &[&client.key]);
}

#[test]
fn every_tls_failure_is_125_naming_the_url_and_the_reason() {
    let pki = Pki::new("fail");
    let Some(etcd) = tls_etcd(&pki, true) else {
        return;
    };
    let url = etcd.url("fail");
    let client = pki.client(Some("envharness"));
    let other = Pki::new("other");
    let expired_pki = Pki::new("expired");
    let expired = expired_pki.server_for(&["127.0.0.1"], true);
    let Some(stale) = Etcd::with_tls(ServerTls {
        cert: expired.cert,
        key: expired.key,
        ca: expired_pki.ca(),
        client_cert_auth: false,
    }) else {
        return;
    };
    let exact = |url: &str, env: Vec<(String, String)>, reason: &str| {
        let started = Instant::now();
        let run = kv(url, &env, &["get", "k"]);
        run.status(125)
            .error_line(&[&format!("envharness: {url}: {reason}")])
            .faster_than(Duration::from_secs(5));
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert_no_key_material(&run, &[&client.key]);
        assert!(started.elapsed() < Duration::from_secs(5));
    };
    exact(
        &url,
        tls_env(&other.ca(), Some(&client)),
        "TLS: certificate not trusted (unknown issuer)",
    );
    exact(
        &stale.url("fail"),
        tls_env(&expired_pki.ca(), None),
        "TLS: certificate expired",
    );
    exact(
        &url,
        tls_env(&pki.ca(), None),
        "TLS: the server requires a client certificate (set ENVHARNESS_KV_CERT and ENVHARNESS_KV_KEY)",
    );
    // A client certificate the server does not trust.
    let stranger = other.client(Some("stranger"));
    let run = kv(&url, &tls_env(&pki.ca(), Some(&stranger)), &["get", "k"]);
    run.status(125).error_line(&[&format!(
        "envharness: {url}: TLS: the server refused the client certificate (bad certificate)"
    )]);
    assert_no_key_material(&run, &[&stranger.key]);
    // etcd:// to the TLS port: no HTTP answer, a ClientHello gets a TLS one.
    let plain = url.replacen("etcds://", "etcd://", 1);
    exact(&plain, Vec::new(), "the server speaks TLS: use etcds://");
    // etcds:// to a plain etcd.
    let Some(plain_etcd) = Etcd::start() else {
        return;
    };
    let wrong = plain_etcd.url("x").replacen("etcd://", "etcds://", 1);
    let run = kv(&wrong, &tls_env(&pki.ca(), None), &["get", "k"]);
    run.status(125).error_line(&[&format!(
        "envharness: {wrong}: TLS: the server does not speak TLS"
    )]);
    // The whole URL with several endpoints: the same refusal from each is said once.
    let two = format!("etcds://{},{}/fail", etcd.endpoint(), etcd.endpoint());
    exact(
        &two,
        tls_env(&other.ca(), Some(&client)),
        "TLS: certificate not trusted (unknown issuer)",
    );
}

#[test]
fn unreadable_or_empty_files_are_125_before_anything_runs_naming_the_variable_and_the_file() {
    let pki = Pki::new("files");
    let client = pki.client(None);
    let t = Test::new();
    t.file("empty.pem", "")
        .file("garbage.pem", "not a certificate\n");
    let empty = t.p("empty.pem");
    let garbage = t.p("garbage.pem");
    let missing = t.p("missing.pem");
    // Nobody listens: the files are read before any connection.
    let url = format!("etcds://127.0.0.1:{}/files", free_port());
    let ca = pki.ca().to_string_lossy().into_owned();
    let cert = client.cert.to_string_lossy().into_owned();
    let key = client.key.to_string_lossy().into_owned();
    let var = |name: &str, value: &str| (name.to_owned(), value.to_owned());
    for (env, reason) in [
        (
            vec![var("ENVHARNESS_KV_CACERT", &missing)],
            format!("ENVHARNESS_KV_CACERT ({missing}): cannot be read: no such file or directory"),
        ),
        (
            vec![var("ENVHARNESS_KV_CACERT", &empty)],
            format!("ENVHARNESS_KV_CACERT ({empty}): holds no certificate"),
        ),
        (
            vec![var("SSL_CERT_FILE", &garbage)],
            format!("SSL_CERT_FILE ({garbage}): holds no certificate"),
        ),
        (
            vec![
                var("ENVHARNESS_KV_CACERT", &ca),
                var("ENVHARNESS_KV_CERT", &empty),
                var("ENVHARNESS_KV_KEY", &key),
            ],
            format!("ENVHARNESS_KV_CERT ({empty}): holds no certificate"),
        ),
        (
            vec![
                var("ENVHARNESS_KV_CACERT", &ca),
                var("ENVHARNESS_KV_CERT", &cert),
                var("ENVHARNESS_KV_KEY", &cert),
            ],
            format!("ENVHARNESS_KV_KEY ({cert}): holds no private key"),
        ),
        (
            vec![
                var("ENVHARNESS_KV_CACERT", &ca),
                var("ENVHARNESS_KV_CERT", &cert),
                var("ENVHARNESS_KV_KEY", &missing),
            ],
            format!("ENVHARNESS_KV_KEY ({missing}): cannot be read"),
        ),
    ] {
        let run = kv(&url, &env, &["get", "k"]);
        run.status(125)
            .error_line(&[&format!("envharness: {url}: {reason}")]);
        assert_no_key_material(&run, &[&client.key]);
        // The harness: before the export phase runs, in exec mode and under --init.
        for init in [false, true] {
            let mut h2 = Test::new();
            h2.script("export/web", "#!/bin/sh\ntouch ran\necho http://web\n")
                .dir("env");
            h2.args(&["--kv", &url, "-x", "export", "-e", "env"]);
            if init {
                h2.args(&["--init"]);
            }
            h2.args(&["--", "true"]);
            for (name, value) in &env {
                h2.env(name, value);
            }
            let run = h2.run();
            run.status(125)
                .error_line(&[&format!("envharness: {url}: {reason}")]);
            assert!(!h2.exists("ran"), "the export phase ran");
            assert_no_key_material(&run, &[&client.key]);
        }
    }
    // A certificate without its key is a usage error.
    let run = kv(
        &url,
        &[
            var("ENVHARNESS_KV_CACERT", &ca),
            var("ENVHARNESS_KV_CERT", &cert),
        ],
        &["get", "k"],
    );
    run.status(125)
        .error_line(&["ENVHARNESS_KV_CERT is set without ENVHARNESS_KV_KEY"]);
    // And a key without its certificate.
    let run = kv(
        &url,
        &[
            var("ENVHARNESS_KV_CACERT", &ca),
            var("ENVHARNESS_KV_KEY", &key),
        ],
        &["get", "k"],
    );
    run.status(125)
        .error_line(&["ENVHARNESS_KV_KEY is set without ENVHARNESS_KV_CERT"]);
}

#[test]
fn no_ca_certificates_anywhere_is_125_before_anything_runs() {
    if !can_unshare_mounts() {
        return;
    }
    let t = Test::new();
    t.script("export/web", "#!/bin/sh\ntouch ran\necho http://web\n")
        .dir("env");
    let url = format!("etcds://127.0.0.1:{}/none", free_port());
    // In a mount namespace of its own, empty directories hide every system bundle the
    // harness looks for, and neither variable is set: there is nothing to trust.
    let script = format!(
        "for dir in /etc/ssl /etc/pki; do\n\
         \t[ ! -d $dir ] || mount -t tmpfs none $dir || exit 99\n\
         done\n\
         '{BIN}' kv get k; echo \"kv $?\"\n\
         '{BIN}' -x export -e env -- true; echo \"exec $?\"\n\
         '{BIN}' --init -x export -e env -- true; echo \"init $?\"\n"
    );
    let mut command = t.external("unshare");
    command
        .env("ENVHARNESS_KV", &url)
        .args(["-r", "-m", "sh", "-c", &script]);
    let run = t.run_command(command);
    run.success().stdout_is("kv 125\nexec 125\ninit 125\n");
    let expected = format!("envharness: {url}: no CA certificates: set ENVHARNESS_KV_CACERT");
    assert_eq!(
        run.stderr.lines().filter(|line| *line == expected).count(),
        3,
        "{}",
        run.stderr
    );
    assert!(!t.exists("ran"), "the export phase ran");
}

/// The store of `url` as the library opens it, with the TLS variables `env`.
fn tls_store(url: &str, env: &[(String, String)]) -> EtcdStore {
    let access = Access::from_env(url, |name| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.into())
    })
    .expect("TLS settings and files");
    etcd::open(url, access).expect("a valid URL")
}

#[test]
fn a_three_member_tls_cluster_serves_while_a_member_is_down() {
    let pki = Pki::new("cluster");
    let Some(mut members) = Etcd::tls_cluster(3, ServerTls::from(&pki, true)) else {
        return;
    };
    let client = pki.client(Some("envharness"));
    let env = tls_env(&pki.ca(), Some(&client));
    let (mut s, lease, _watch, mut writer) =
        serves_while_its_first_member_is_down(&mut members, "etcds", |url| tls_store(url, &env));
    // Keep-alives go on, on the member now in use.
    for _ in 0..3 {
        assert!(s.keep_alive(lease).unwrap());
    }
    members[0].restart();
    s.put(&key("k"), b"2", None).unwrap();
    assert_eq!(writer.get(&key("k")).unwrap().as_deref(), Some(&b"2"[..]));
}

#[test]
fn a_harness_whose_ca_file_is_replaced_by_one_that_does_not_match_cannot_publish_and_says_why() {
    let pki = Pki::new("renew");
    let Some(mut etcd) = tls_etcd(&pki, true) else {
        return;
    };
    let client = pki.client(Some("envharness"));
    let t = Test::new();
    t.file("ca.pem", std::fs::read(pki.ca()).expect("the CA"));
    let harness_ca = t.path("ca.pem");
    let store = UrlWithEnv(etcd.url("renew"), tls_env(&harness_ca, Some(&client)));
    let (h, child, started) = publishing_under_init(
        &store,
        "#!/bin/sh\ntrap 'exit 0' TERM\ntouch ready\nwhile :; do sleep 0.05; done\n",
    );
    let other = Pki::new("stranger");
    std::fs::copy(other.ca(), &harness_ca).expect("replacing the CA file");
    // The kept connection still serves; a restart of etcd makes the harness connect again,
    // which reads the CA file again.
    etcd.restart();
    h.wait_for_stderr("TLS: certificate not trusted (unknown issuer)");
    let stderr = h.stderr_so_far();
    assert!(stderr.contains(&etcd.url("renew")), "{stderr}");
    assert!(stderr.contains("cannot publish"), "{stderr}");
    // The right CA again: published again.
    std::fs::copy(pki.ca(), &harness_ca).expect("restoring the CA file");
    h.wait_for_stderr("the store is back");
    h.terminate(child, started).success();
}

#[test]
fn a_supervising_harness_makes_one_handshake_for_its_renewals() {
    let pki = Pki::new("renewals");
    let Some(etcd) = tls_etcd(&pki, true) else {
        return;
    };
    let client = pki.client(Some("envharness"));
    let store = UrlWithEnv(etcd.url("renewals"), tls_env(&pki.ca(), Some(&client)));
    let mut t = harness_on(&store, "i1");
    t.dir("env")
        .script("export/db", "#!/bin/sh\necho postgres://db-1:5432/app\n")
        .script(
            "cmd",
            "#!/bin/sh\ntrap 'exit 0' TERM\ntouch ready\nwhile :; do sleep 0.05; done\n",
        );
    let cmd = t.p("cmd");
    t.env("RUST_LOG", "debug").args(&[
        "--init",
        "--ttl",
        "2",
        "-x",
        "export",
        "-e",
        "env",
        "--",
        cmd.as_str(),
    ]);
    let (child, started) = t.spawn();
    t.wait_for("ready");
    // Renewals every 2/3 s: at least four of them.
    std::thread::sleep(Duration::from_millis(3000));
    let run = t.terminate(child, started);
    run.success();
    let renewals = run.stderr_lines_with("lease renewed").len();
    let handshakes = run.stderr_lines_with("TLS handshake done").len();
    assert!(renewals >= 3, "{renewals} renewals\n{}", run.stderr);
    assert_eq!(handshakes, 1, "{}", run.stderr);
}

#[test]
fn with_auth_a_client_certificate_needs_no_common_name_and_one_with_a_common_name_is_explained() {
    let pki = Pki::new("auth");
    let Some(etcd) = tls_etcd(&pki, true) else {
        return;
    };
    let password = "tls-auth-secret-1";
    etcd.enable_auth(password);
    let url = etcd.url("auth");
    let login = |client: &Issued| {
        let mut env = tls_env(&pki.ca(), Some(client));
        env.push(("ENVHARNESS_KV_USER".into(), "root".into()));
        env.push(("ENVHARNESS_KV_PASSWORD".into(), password.into()));
        env
    };
    let nameless = pki.client(None);
    let env = login(&nameless);
    kv(&url, &env, &["put", "k", "with a password"]).success();
    let run = kv(&url, &env, &["get", "k"]);
    run.success()
        .stdout_is("with a password")
        .stderr_lacks(password);
    let named = pki.client(Some("root"));
    let run = kv(&url, &login(&named), &["get", "k"]);
    run.status(125)
        .error_line(&[
            &format!("envharness: {url}: "),
            "common name",
            "use a client certificate without a common name",
        ])
        .stderr_lacks(password);
    assert_no_key_material(&run, &[&named.key, &nameless.key]);
}

#[test]
fn a_password_in_clear_text_to_a_remote_etcd_draws_one_warning() {
    // 0.0.0.0 is not a loopback address, and nothing listens: refused at once.
    let url = format!("etcd://0.0.0.0:{}/clear", free_port());
    let login = vec![
        ("ENVHARNESS_KV_USER".to_owned(), "root".to_owned()),
        (
            "ENVHARNESS_KV_PASSWORD".to_owned(),
            "clear-secret".to_owned(),
        ),
    ];
    let warning = "crosses the network in clear text";
    let run = kv(&url, &login, &["get", "k"]);
    run.status(125).stderr_lacks("clear-secret");
    assert_eq!(run.stderr_lines_with(warning).len(), 1, "{}", run.stderr);
    assert!(
        run.stderr_lines_with(warning)[0].contains(&url),
        "{}",
        run.stderr
    );
    // Under a harness (ENVHARNESS_INSTANCE): the harness said it already.
    let mut quiet = login.clone();
    quiet.push(("ENVHARNESS_INSTANCE".into(), "i1".into()));
    let run = kv(&url, &quiet, &["get", "k"]);
    assert!(run.stderr_lines_with(warning).is_empty(), "{}", run.stderr);
    // Loopback, TLS, or no password: no warning.
    for (url, env) in [
        (
            format!("etcd://127.0.0.1:{}/clear", free_port()),
            login.clone(),
        ),
        (
            format!("etcd://localhost:{}/clear", free_port()),
            login.clone(),
        ),
        (format!("etcd://0.0.0.0:{}/clear", free_port()), Vec::new()),
    ] {
        let run = kv(&url, &env, &["get", "k"]);
        assert!(
            run.stderr_lines_with(warning).is_empty(),
            "{url}: {}",
            run.stderr
        );
    }
    // A harness whose scripts call `kv` warns once in all.
    let mut t = Test::new();
    t.symlink("bin/envharness", BIN);
    t.script(
        "env/A",
        "#!/bin/sh\nenvharness kv get k; envharness kv get j; echo a\n",
    );
    let path = format!("{}:{PATH}", t.p("bin"));
    t.env("PATH", path);
    for (name, value) in &login {
        t.env(name, value);
    }
    t.args(&["--kv", &url, "-e", "env", "--print"]);
    let run = t.run();
    run.success().stderr_lacks("clear-secret");
    assert_eq!(run.stderr_lines_with(warning).len(), 1, "{}", run.stderr);
}
