//! TLS for the etcd store (docs/reference.md §12): what `etcds://` adds to a connection.
//!
//! The settings come from `ENVHARNESS_KV_CACERT` (else `SSL_CERT_FILE`, else the first system
//! bundle that exists), `ENVHARNESS_KV_CERT` with `ENVHARNESS_KV_KEY`, and
//! `ENVHARNESS_KV_SERVER_NAME`. The files are read when the store is opened (so an unreadable
//! one is an error before anything runs) and again for every new connection (so renewed
//! certificates are picked up without a restart); their contents never reach a message, and a
//! path appears only in an error about that file.
//!
//! The server's certificate is always verified by webpki (its chain to the CA, its validity
//! period, and the endpoint's HOST or the server name among its subject alternative names: a
//! DNS name, or an IP address for an IP endpoint). There is no way to turn that off: the only
//! verifier built here is rustls' own.
//!
//! Why a client-certificate resolver of our own: with TLS 1.3 a server that requires a client
//! certificate says so only after the client thinks the handshake is over (an alert at the
//! first read, or a bare close). The resolver notes that the server asked for one, so that such
//! a failure can be put in words when none is configured.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, RootCertStore,
    SignatureScheme,
};

use crate::error::Error;
use crate::os::{io_reason, lower_first, read_file_at_most};

/// Where the CA certificates are looked for when neither `ENVHARNESS_KV_CACERT` nor
/// `SSL_CERT_FILE` names them: Debian and Alpine, Fedora and RHEL, then macOS and the BSDs.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// More than any certificate bundle (Debian's holds about 150 CAs in 220 KB): a larger file
/// is the wrong file, and is not read into memory.
const PEM_LIMIT: usize = 4 * 1024 * 1024;

/// The words for the failure of a server that wants a client certificate when none is set.
pub const CLIENT_CERT_REQUIRED: &str =
    "the server requires a client certificate (set ENVHARNESS_KV_CERT and ENVHARNESS_KV_KEY)";

/// The words for a server that answers TLS with something else (plain HTTP).
pub const NOT_TLS: &str = "the server does not speak TLS: use etcd://";

/// A PEM file and what named it, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PemFile {
    /// The variable that named it, or "the system CA bundle".
    source: &'static str,
    path: PathBuf,
}

impl PemFile {
    /// `ENVHARNESS_KV_KEY (/run/secrets/etcd.key): REASON`: the variable and the file, never
    /// the content.
    fn fault(&self, reason: impl std::fmt::Display) -> String {
        format!("{} ({}): {reason}", self.source, self.path.display())
    }

    /// The file's bytes, at most [`PEM_LIMIT`] of them.
    fn read(&self) -> Result<Vec<u8>, String> {
        let content = std::fs::File::open(&self.path)
            .and_then(|file| read_file_at_most(file, PEM_LIMIT))
            .map_err(|err| self.fault(format!("cannot be read: {}", io_reason(&err))))?;
        content.ok_or_else(|| self.fault(format!("over {PEM_LIMIT} bytes: not a PEM file")))
    }

    /// Every certificate in the file; none is an error.
    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let content = self.read()?;
        let certificates = CertificateDer::pem_slice_iter(&content)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| self.fault("not a readable PEM file"))?;
        if certificates.is_empty() {
            return Err(self.fault("holds no certificate"));
        }
        Ok(certificates)
    }

    /// The first private key in the file (PKCS#8, PKCS#1 RSA or SEC1 EC).
    fn private_key(&self) -> Result<PrivateKeyDer<'static>, String> {
        let content = self.read()?;
        // The PEM parser's own errors may quote a line of the file: never shown.
        PrivateKeyDer::from_pem_slice(&content).map_err(|err| match err {
            rustls::pki_types::pem::Error::NoItemsFound => {
                self.fault("holds no private key (PKCS#8, RSA or EC, in PEM)")
            }
            _ => self.fault("not a readable PEM file"),
        })
    }
}

/// What the variables say; [`Settings::connector`] reads the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    ca: PemFile,
    /// The client certificate (chain) and its key.
    client: Option<(PemFile, PemFile)>,
    /// `ENVHARNESS_KV_SERVER_NAME`: verified instead of each endpoint's HOST.
    server_name: Option<String>,
}

impl Settings {
    /// Reads the variables through `var` for the store at `url`: a client certificate without
    /// its key (or a key without one) and a server name that is not a DNS name are usage
    /// errors; no CA certificates at all is the store's error.
    pub fn from_env(url: &str, var: impl Fn(&str) -> Option<String>) -> Result<Settings, Error> {
        let named = |variable: &'static str| {
            var(variable)
                .filter(|value| !value.is_empty())
                .map(|path| PemFile {
                    source: variable,
                    path: PathBuf::from(path),
                })
        };
        let ca = named("ENVHARNESS_KV_CACERT")
            .or_else(|| named("SSL_CERT_FILE"))
            .or_else(system_bundle)
            .ok_or_else(|| Error::Store {
                url: url.to_owned(),
                reason: "no CA certificates: set ENVHARNESS_KV_CACERT".into(),
            })?;
        let client = match (named("ENVHARNESS_KV_CERT"), named("ENVHARNESS_KV_KEY")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Usage(
                    "ENVHARNESS_KV_CERT is set without ENVHARNESS_KV_KEY (the client certificate's private key)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::Usage(
                    "ENVHARNESS_KV_KEY is set without ENVHARNESS_KV_CERT (the client certificate)"
                        .into(),
                ))
            }
        };
        let server_name = var("ENVHARNESS_KV_SERVER_NAME").filter(|name| !name.is_empty());
        if let Some(name) = &server_name {
            if ServerName::try_from(name.as_str()).is_err() {
                return Err(Error::Usage(format!(
                    "ENVHARNESS_KV_SERVER_NAME {name:?}: not a DNS name or IP address"
                )));
            }
        }
        Ok(Settings {
            ca,
            client,
            server_name,
        })
    }

    /// Reads the files into a configuration for one new connection. Err is the reason, naming
    /// the variable and the file.
    pub fn connector(&self) -> Result<Connector, String> {
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(self.ca.certificates()?);
        if added == 0 {
            return Err(self.ca.fault("holds no CA certificate that can be used"));
        }
        let provider = ring();
        let key = match &self.client {
            None => None,
            Some((cert, key)) => Some(Arc::new(certified_key(cert, key, &provider)?)),
        };
        let resolver = Arc::new(ClientCert {
            key,
            asked: AtomicBool::new(false),
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|err| format!("TLS: {err}"))?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesClientCert>);
        Ok(Connector {
            config: Arc::new(config),
            resolver,
            server_name: self.server_name.clone(),
        })
    }
}

/// rustls' crypto from *ring*: it builds with a C compiler alone (musl-gcc for the static
/// binary) and adds about 0.9 MiB, where aws-lc, rustls' default, needs cmake and is larger.
/// rustls 0.23.48 marks it deprecated for lacking post-quantum key exchange, which etcd's Go
/// TLS does not require: X25519 and the NIST curves are negotiated as before.
///
/// The ClientHello carries a key share for P-256 first, not X25519: etcd 3.4 prefers the NIST
/// curves (P-521, P-384, P-256) and answers an X25519 share with a HelloRetryRequest for P-384,
/// an extra round trip and two P-384 operations, which ring does without assembly (measured:
/// three quarters of a `kv get`'s instructions). Every TLS 1.3 server takes P-256, and a
/// server that prefers X25519 still accepts the P-256 share offered.
#[allow(deprecated)]
fn ring() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![kx_group::SECP256R1, kx_group::X25519, kx_group::SECP384R1];
    Arc::new(provider)
}

/// The first system bundle that exists.
fn system_bundle() -> Option<PemFile> {
    SYSTEM_BUNDLES
        .iter()
        .map(Path::new)
        .find(|path| path.exists())
        .map(|path| PemFile {
            source: "the system CA bundle",
            path: path.to_owned(),
        })
}

/// The client certificate chain with its private key, checked to belong together.
fn certified_key(
    cert: &PemFile,
    key: &PemFile,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = cert.certificates()?;
    let private_key = key.private_key()?;
    CertifiedKey::from_der(chain, private_key, provider).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => key.fault(format!(
            "the key does not belong to the certificate in {}",
            cert.source
        )),
        _ => key.fault("a private key that cannot be used (PKCS#8, RSA or EC expected)"),
    })
}

/// Hands out the client certificate, if any, and notes that the server asked for one.
#[derive(Debug)]
struct ClientCert {
    key: Option<Arc<CertifiedKey>>,
    asked: AtomicBool,
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// The TLS configuration of one new connection, read from the files.
pub struct Connector {
    config: Arc<ClientConfig>,
    resolver: Arc<ClientCert>,
    server_name: Option<String>,
}

impl Connector {
    /// A client session to `host` (an endpoint's HOST): it verifies the server name given in
    /// ENVHARNESS_KV_SERVER_NAME, else HOST (a DNS name, or an IP address in an IP SAN).
    pub fn session(&self, host: &str) -> Result<(ClientConnection, Verdict), String> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| format!("TLS: {name:?} is not a DNS name or IP address"))?;
        let session = ClientConnection::new(Arc::clone(&self.config), server_name)
            .map_err(|err| format!("TLS: {err}"))?;
        Ok((
            session,
            Verdict {
                resolver: Arc::clone(&self.resolver),
                name: name.to_owned(),
            },
        ))
    }
}

/// Puts a connection's TLS failures in words: it knows the name that was verified and whether
/// the server asked for a client certificate.
pub struct Verdict {
    resolver: Arc<ClientCert>,
    name: String,
}

impl Verdict {
    /// Whether a failure after the handshake (an alert, a close) is the server refusing a
    /// client that sent no certificate: it asked for one, and none is configured.
    pub fn wanted_a_certificate(&self) -> bool {
        self.resolver.key.is_none() && self.resolver.asked.load(Ordering::Relaxed)
    }

    /// A TLS failure as the words after `TLS: `.
    pub fn words(&self, err: &rustls::Error) -> String {
        match err {
            rustls::Error::InvalidCertificate(error) => self.certificate(error),
            rustls::Error::AlertReceived(alert) => self.alert(*alert),
            // Bytes that are not TLS records: an HTTP server answering our ClientHello.
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                NOT_TLS.into()
            }
            rustls::Error::PeerIncompatible(_) => {
                "the server offers no TLS version or cipher suite in common (TLS 1.2 or 1.3 needed)"
                    .into()
            }
            other => lower_first(&other.to_string()),
        }
    }

    fn certificate(&self, error: &CertificateError) -> String {
        match error {
            CertificateError::UnknownIssuer => "certificate not trusted (unknown issuer)".into(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate is not valid for {}", self.name)
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not valid yet".into()
            }
            CertificateError::Revoked => "certificate revoked".into(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "certificate is not for a server (its extended key usage)".into()
            }
            other => format!("certificate refused ({})", lower_first(&other.to_string())),
        }
    }

    fn alert(&self, alert: AlertDescription) -> String {
        let refused = matches!(
            alert,
            AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::HandshakeFailure
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied
        );
        if refused && self.wanted_a_certificate() {
            return CLIENT_CERT_REQUIRED.into();
        }
        match alert {
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied
                if self.resolver.key.is_some() =>
            {
                format!(
                    "the server refused the client certificate ({})",
                    alert_words(alert)
                )
            }
            other => format!("the server ended the handshake ({})", alert_words(other)),
        }
    }
}

/// An alert's name in words: `UnknownCA` → `unknown ca`.
fn alert_words(alert: AlertDescription) -> String {
    let name = format!("{alert:?}");
    let mut words = String::new();
    for (at, c) in name.char_indices() {
        if c.is_ascii_uppercase()
            && at > 0
            && !name[..at].ends_with(|p: char| p.is_ascii_uppercase())
        {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

/// The first flight of a TLS client (a ClientHello) to `host`, to learn whether a server that
/// gave a plain HTTP request no answer speaks TLS. Nothing is verified with it: the reply's
/// first bytes are all that is looked at.
pub fn client_hello(host: &str) -> Option<Vec<u8>> {
    let config = ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .ok()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid DNS name"));
    let mut session = ClientConnection::new(Arc::new(config), name).ok()?;
    let mut hello = Vec::new();
    while session.wants_write() {
        session.write_tls(&mut hello).ok()?;
    }
    Some(hello)
}

/// Whether `reply` starts like a TLS server's answer: a handshake or an alert record of
/// TLS 1.x (`16 03 ..` or `15 03 ..`).
pub fn is_tls_reply(reply: &[u8]) -> bool {
    matches!(reply, [0x15 | 0x16, 0x03, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_read_as_words() {
        assert_eq!(alert_words(AlertDescription::UnknownCA), "unknown ca");
        assert_eq!(
            alert_words(AlertDescription::CertificateRequired),
            "certificate required"
        );
        assert_eq!(
            alert_words(AlertDescription::HandshakeFailure),
            "handshake failure"
        );
    }

    #[test]
    fn a_client_hello_is_a_tls_handshake_record() {
        let hello = client_hello("127.0.0.1").expect("a hello");
        assert!(is_tls_reply(&hello), "{:?}", &hello[..5]);
        assert!(!is_tls_reply(b"HTTP/1.1 400 Bad Request"));
        assert!(!is_tls_reply(b""));
    }

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, Error> {
        Settings::from_env("etcds://h:1", |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_ca_is_the_variable_else_ssl_cert_file_else_the_system_bundle() {
        let ca = |s: Settings| (s.ca.source, s.ca.path);
        assert_eq!(
            ca(settings(&[("ENVHARNESS_KV_CACERT", "/a"), ("SSL_CERT_FILE", "/b")]).unwrap()),
            ("ENVHARNESS_KV_CACERT", PathBuf::from("/a"))
        );
        assert_eq!(
            ca(settings(&[("ENVHARNESS_KV_CACERT", ""), ("SSL_CERT_FILE", "/b")]).unwrap()),
            ("SSL_CERT_FILE", PathBuf::from("/b"))
        );
        match (settings(&[]), system_bundle()) {
            (Ok(found), Some(bundle)) => assert_eq!(found.ca, bundle),
            (Err(err), None) => assert_eq!(
                err.to_string(),
                "etcds://h:1: no CA certificates: set ENVHARNESS_KV_CACERT"
            ),
            (found, bundle) => panic!("{found:?} {bundle:?}"),
        }
    }

    #[test]
    fn a_certificate_without_its_key_is_a_usage_error() {
        for vars in [
            &[("ENVHARNESS_KV_CACERT", "/a"), ("ENVHARNESS_KV_CERT", "/c")][..],
            &[("ENVHARNESS_KV_CACERT", "/a"), ("ENVHARNESS_KV_KEY", "/k")],
        ] {
            let err = settings(vars).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{err:?}");
        }
        let err = settings(&[
            ("ENVHARNESS_KV_CACERT", "/a"),
            ("ENVHARNESS_KV_SERVER_NAME", "not a name"),
        ])
        .unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err:?}");
    }

    /// Runs `openssl ARGS` (Debian's, which `make deps` installs); false where it is missing.
    fn openssl(args: &[&str]) -> bool {
        match std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
        {
            Ok(status) => {
                assert!(status.success(), "openssl {args:?}: {status}");
                true
            }
            Err(_) => {
                eprintln!("skipping: openssl is not installed");
                false
            }
        }
    }

    #[test]
    fn client_keys_may_be_pkcs8_pkcs1_or_sec1() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(
            path("ca.pem"),
            ca_params.self_signed(&ca_key).unwrap().pem(),
        )
        .unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let certify = |key: &rcgen::KeyPair, name: &str| {
            let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            let cert = params.signed_by(key, &issuer).unwrap();
            std::fs::write(path(name), cert.pem()).unwrap();
        };
        // EC: PKCS#8 as rcgen writes it, and SEC1 ("EC PRIVATE KEY") as openssl converts it.
        let ec = rcgen::KeyPair::generate().unwrap();
        std::fs::write(path("ec8.key"), ec.serialize_pem()).unwrap();
        certify(&ec, "ec.pem");
        if !openssl(&["ec", "-in", &path("ec8.key"), "-out", &path("sec1.key")]) {
            return;
        }
        // RSA: PKCS#1 ("RSA PRIVATE KEY").
        openssl(&["genrsa", "-traditional", "-out", &path("rsa1.key"), "2048"]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &path("rsa1.key"),
            "-out",
            &path("rsa8.key"),
        ]);
        let rsa = rcgen::KeyPair::from_pem_and_sign_algo(
            &std::fs::read_to_string(path("rsa8.key")).unwrap(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap();
        certify(&rsa, "rsa.pem");
        for (cert, key, marker) in [
            ("ec.pem", "ec8.key", "BEGIN PRIVATE KEY"),
            ("ec.pem", "sec1.key", "BEGIN EC PRIVATE KEY"),
            ("rsa.pem", "rsa1.key", "BEGIN RSA PRIVATE KEY"),
        ] {
            let text = std::fs::read_to_string(path(key)).unwrap();
            assert!(text.contains(marker), "{key}: {text:.40}");
            let settings = settings(&[
                ("ENVHARNESS_KV_CACERT", &path("ca.pem")),
                ("ENVHARNESS_KV_CERT", &path(cert)),
                ("ENVHARNESS_KV_KEY", &path(key)),
            ])
            .unwrap();
            let connector = settings
                .connector()
                .unwrap_or_else(|err| panic!("{key}: {err}"));
            assert!(connector.resolver.key.is_some());
        }
        // A key of another certificate is refused, naming both variables.
        let settings = settings(&[
            ("ENVHARNESS_KV_CACERT", &path("ca.pem")),
            ("ENVHARNESS_KV_CERT", &path("rsa.pem")),
            ("ENVHARNESS_KV_KEY", &path("sec1.key")),
        ])
        .unwrap();
        let err = settings.connector().err().unwrap();
        assert_eq!(
            err,
            format!(
                "ENVHARNESS_KV_KEY ({}): the key does not belong to the certificate in ENVHARNESS_KV_CERT",
                path("sec1.key")
            )
        );
    }

    #[test]
    fn unreadable_and_empty_files_are_named_with_their_variable() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let garbage = dir.path().join("key.pem");
        std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nsecret!!\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let text = |path: &Path| path.display().to_string();
        let reason = |vars: &[(&str, &str)]| settings(vars).unwrap().connector().err().unwrap();
        assert_eq!(
            reason(&[("ENVHARNESS_KV_CACERT", &text(&missing))]),
            format!(
                "ENVHARNESS_KV_CACERT ({}): cannot be read: no such file or directory",
                missing.display()
            )
        );
        assert_eq!(
            reason(&[("ENVHARNESS_KV_CACERT", &text(&empty))]),
            format!(
                "ENVHARNESS_KV_CACERT ({}): holds no certificate",
                empty.display()
            )
        );
        let message = reason(&[
            ("ENVHARNESS_KV_CACERT", &text(&empty)),
            ("ENVHARNESS_KV_CERT", &text(&empty)),
            ("ENVHARNESS_KV_KEY", &text(&garbage)),
        ]);
        assert!(message.starts_with("ENVHARNESS_KV_CACERT"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
}
