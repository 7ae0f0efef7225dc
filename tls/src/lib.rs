//! TLS to an MQTT broker, shared by the agent's uplink (to the hub's broker) and the hub's
//! consumer (to an external broker), so both verify brokers the same way: a rustls client config
//! with the ring provider chosen explicitly (the build carries no other provider, and nothing
//! here relies on a process-wide default), trusting only the CA in `ca_file`, optionally
//! presenting a client certificate.
//!
//! With the `test-pki` feature, [`test_pki`] makes a CA and certificates for tests.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A TLS client table (`[uplink.tls]` of the agent, `[broker.external_tls]` of the hub): connect
/// with TLS, verifying the broker against `ca_file`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) that signed the broker's certificate. Only these are
    /// trusted, not the system's roots.
    pub ca_file: PathBuf,
    /// PEM certificate chain presented to the broker (mutual TLS); needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// The name the broker's certificate must carry, when it differs from the host connected to
    /// (for example when connecting by IP address to a broker whose certificate names its DNS
    /// name).
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}; check that the file exists and this service may read it", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {} is not valid PEM ({detail}); it must hold `-----BEGIN CERTIFICATE-----` blocks", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{what} {} holds no certificate; it must hold at least one `-----BEGIN CERTIFICATE-----` block", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("CA file {}: certificate #{index} cannot be used as a trust root: {detail}", path.display())]
    BadRoot {
        path: PathBuf,
        index: usize,
        detail: String,
    },
    #[error("{what} {} holds no usable private key ({detail}); it must be a PEM PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key", path.display())]
    NoKey {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("client_cert_file and client_key_file go together: set both (mutual TLS) or neither")]
    ClientAuthPair,
    #[error("server_name {name:?} is not a valid DNS name or IP address")]
    ServerName { name: String },
    #[error("the client certificate and key cannot be used: {0}; check that they belong together and the key type is supported (RSA, ECDSA P-256/P-384, Ed25519)")]
    ClientAuth(#[source] rustls::Error),
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

impl TlsError {
    /// The key of the TLS table the problem belongs to (empty: the table as a whole), for
    /// `check-config`.
    pub fn config_key(&self) -> &'static str {
        match self {
            TlsError::Read { what, .. }
            | TlsError::Pem { what, .. }
            | TlsError::NoCertificate { what, .. } => {
                if *what == CA {
                    "ca_file"
                } else {
                    "client_cert_file"
                }
            }
            TlsError::BadRoot { .. } | TlsError::Setup(_) => "ca_file",
            TlsError::NoKey { .. } | TlsError::ClientAuth(_) => "client_key_file",
            TlsError::ClientAuthPair => "",
            TlsError::ServerName { .. } => "server_name",
        }
    }
}

const CA: &str = "CA file";
const CLIENT_CERT: &str = "client certificate file";

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of the PEM file at `path` (at least one), `what` naming it in errors.
pub fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The private key of the PEM file at `path`, `what` naming it in errors.
pub fn private_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoKey {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Builds the client config for `cfg`, reading every file it names.
pub fn client_config(cfg: &TlsConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(CA, &cfg.ca_file)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::BadRoot {
            path: cfg.ca_file.clone(),
            index: i + 1,
            detail: e.to_string(),
        })?;
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match &cfg.server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|_| TlsError::ServerName { name: name.clone() })?;
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FixedServerName { inner, name }))
        }
    };
    let config = match (&cfg.client_cert_file, &cfg.client_key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certificates(CLIENT_CERT, cert)?;
            let key_der = private_key("client key file", key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(TlsError::ClientAuth)?
        }
        _ => return Err(TlsError::ClientAuthPair),
    };
    Ok(Arc::new(config))
}

/// Verifies the broker's certificate against a configured name instead of the host connected
/// to. rumqttc always verifies against the host it dials, so this is how `server_name` takes effect;
/// everything else (chain, validity, signatures) is the stock WebPKI verification.
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(any(test, feature = "test-pki"))]
pub mod test_pki {
    use std::path::{Path, PathBuf};

    /// A CA, a server certificate for `server_names` and a client certificate, written as PEM
    /// files into `dir`.
    pub struct TestPki {
        pub ca: PathBuf,
        pub server_cert: PathBuf,
        pub server_key: PathBuf,
        pub client_cert: PathBuf,
        pub client_key: PathBuf,
    }

    pub fn make_pki(dir: &Path, server_names: &[&str]) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        // Each certificate gets its own subject: with rcgen's default, one for all, OpenSSL
        // (Mosquitto) takes a leaf for self-signed and refuses it.
        let named = |names: Vec<String>, common_name: &str| {
            let mut params = CertificateParams::new(names).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = named(vec![], "QuanYuTong test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let common_name = names[0].clone();
            let cert = named(names, &common_name).signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(server_names.iter().map(|n| n.to_string()).collect());
        let (client_cert, client_key) = leaf(vec!["agent.test".into()]);
        let write = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        TestPki {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_pki::make_pki;
    use super::*;

    fn cfg(ca: &Path) -> TlsConfig {
        TlsConfig {
            ca_file: ca.to_path_buf(),
            client_cert_file: None,
            client_key_file: None,
            server_name: None,
        }
    }

    #[test]
    fn builds_with_and_without_client_auth() {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), &["127.0.0.1"]);
        client_config(&cfg(&pki.ca)).unwrap();
        let mutual = TlsConfig {
            client_cert_file: Some(pki.client_cert.clone()),
            client_key_file: Some(pki.client_key.clone()),
            server_name: Some("broker.test".into()),
            ..cfg(&pki.ca)
        };
        client_config(&mutual).unwrap();
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), &["127.0.0.1"]);
        let missing = dir.path().join("nope.pem");
        let err = client_config(&cfg(&missing)).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(
            err.to_string().contains("nope.pem") && err.to_string().contains("CA file"),
            "{err}"
        );
        assert_eq!(err.config_key(), "ca_file");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, b"this is not a certificate\n").unwrap();
        let err = client_config(&cfg(&garbage)).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, b"-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let err = client_config(&cfg(&broken)).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");

        let bad_der = dir.path().join("bad-der.pem");
        std::fs::write(
            &bad_der,
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = client_config(&cfg(&bad_der)).unwrap_err();
        assert!(matches!(err, TlsError::BadRoot { index: 1, .. }), "{err}");

        let half = TlsConfig {
            client_cert_file: Some(pki.client_cert.clone()),
            ..cfg(&pki.ca)
        };
        assert!(matches!(
            client_config(&half).unwrap_err(),
            TlsError::ClientAuthPair
        ));

        let wrong_key = TlsConfig {
            client_cert_file: Some(pki.client_cert.clone()),
            client_key_file: Some(pki.ca.clone()),
            ..cfg(&pki.ca)
        };
        let err = client_config(&wrong_key).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
        assert_eq!(err.config_key(), "client_key_file");

        let mismatched = TlsConfig {
            client_cert_file: Some(pki.client_cert.clone()),
            client_key_file: Some(pki.server_key.clone()),
            ..cfg(&pki.ca)
        };
        let err = client_config(&mismatched).unwrap_err();
        assert!(matches!(err, TlsError::ClientAuth(_)), "{err}");

        let bad_name = TlsConfig {
            server_name: Some("not a name!".into()),
            ..cfg(&pki.ca)
        };
        assert!(matches!(
            client_config(&bad_name).unwrap_err(),
            TlsError::ServerName { .. }
        ));
    }
}
