//! Certificates for the TLS tests, made at test time with rcgen: a CA of the test's own, server
//! certificates for loopback (`127.0.0.1`, `::1`, `localhost`), and client certificates, as
//! PEM files in a temporary directory that goes with the [`Pki`].

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A CA and the files it issued.
pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    /// Certificates issued so far (file names stay apart).
    issued: std::sync::atomic::AtomicU32,
}

/// A certificate and its private key, as files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name`; its certificate is [`Pki::ca`].
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("envharness-pki.")
            .tempdir()
            .expect("creating the certificates' directory");
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("a CA certificate");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("writing the CA");
        Pki {
            dir,
            issuer: Issuer::new(params, key),
            issued: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The CA's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for loopback: `127.0.0.1`, `::1` and `localhost`.
    pub fn server(&self) -> Issued {
        self.server_for(&["127.0.0.1", "::1", "localhost"], false)
    }

    /// A server certificate for `names` (IP addresses become IP SANs), expired when `expired`.
    pub fn server_for(&self, names: &[&str], expired: bool) -> Issued {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server parameters");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "etcd test server");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            // etcd uses its server certificate as a client too (its gateway dials itself).
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        self.issue("server", params)
    }

    /// A client certificate, with the common name `cn` or none.
    pub fn client(&self, cn: Option<&str>) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue("client", params)
    }

    fn issue(&self, kind: &str, params: CertificateParams) -> Issued {
        let number = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let key = KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a certificate");
        let issued = Issued {
            cert: self.dir.path().join(format!("{kind}-{number}.pem")),
            key: self.dir.path().join(format!("{kind}-{number}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("writing a certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("writing a key");
        issued
    }
}
