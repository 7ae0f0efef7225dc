//! The hub's embedded broker over TLS, end to end with real processes: a qyt-agent uplinks
//! through the TLS listener, verifying the hub against a CA made here; with mutual TLS the
//! agent presents its certificate, and a client without one is turned away before it can say
//! anything in MQTT. Certificates are made with rcgen; nothing is mocked.

mod common;

use common::broker::free_port;
use common::process::wait_until;
use common::{Agent, Hub};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, a hub certificate for 127.0.0.1 and localhost, and an agent certificate.
fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: &[&str]| {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(&["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = leaf(&["demo-gate-01.agents.test"]);
    let write = |name: &str, pem: &str| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("hub.pem", &server_cert),
        server_key: write("hub.key", &server_key),
        client_cert: write("agent.pem", &client_cert),
        client_key: write("agent.key", &client_key),
    }
}

/// The hub's `[broker.tls]`, requiring client certificates when `mutual`.
fn hub_tls(listen: SocketAddr, pki: &Pki, mutual: bool) -> String {
    let mut s = format!(
        "[broker.tls]\nlisten = \"{listen}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    if mutual {
        s.push_str(&format!("client_ca_file = \"{}\"\n", pki.ca.display()));
    }
    s
}

/// The agent's `[uplink.tls]`, presenting its certificate when `mutual`.
fn agent_tls(pki: &Pki, mutual: bool) -> String {
    let mut s = format!("\n[uplink.tls]\nca_file = \"{}\"\n", pki.ca.display());
    if mutual {
        s.push_str(&format!(
            "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            pki.client_cert.display(),
            pki.client_key.display()
        ));
    }
    s
}

fn simulated(events: u64) -> String {
    format!(
        "[[source]]\ntype = \"simulate\"\nname = \"sim\"\nrate_per_s = 0\nmax_events = {events}\nseed = 5\n"
    )
}

/// Starts a hub with a TLS listener and an agent uplinking through it; returns once the hub
/// has stored all `events` of the agent's simulated checkpoint.
fn uplink_over_tls(mutual: bool) -> (tempfile::TempDir, Hub, SocketAddr, Pki) {
    const EVENTS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let hub = Hub::start_with(&dir.path().join("hub"), None, &hub_tls(tls, &pki, mutual));
    let _agent = Agent::start_with_uplink(
        &dir.path().join("agent"),
        tls,
        false,
        "",
        &simulated(EVENTS),
        &agent_tls(&pki, mutual),
    );
    wait_until(120, "every simulated event stored through TLS", || {
        (hub.stored() >= EVENTS).then_some(())
    });
    assert_eq!(hub.stored(), EVENTS, "each event stored once");
    (dir, hub, tls, pki)
}

#[test]
fn agent_uplinks_through_the_hubs_tls_listener() {
    uplink_over_tls(false);
}

#[test]
fn mutual_tls_admits_the_agents_certificate_and_turns_away_a_client_without_one() {
    let (_dir, _hub, tls, pki) = uplink_over_tls(true);

    // A client that trusts the hub but has no certificate of its own: the hub ends the
    // handshake, so its MQTT CONNECT never gets a CONNACK.
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(tls).unwrap();
    // Bounds the test if the hub wrongly kept the connection open without answering.
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    // MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s, client id "intruder".
    let mut connect = vec![0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 8];
    connect.extend_from_slice(b"intruder");
    let wrote = stream.write_all(&connect).and_then(|_| stream.flush());
    let mut answer = [0u8; 4];
    let read = stream.read(&mut answer);
    assert!(
        wrote.is_err() || matches!(read, Err(_) | Ok(0)),
        "a client without a certificate got an answer: {read:?} {answer:?}"
    );
    if let Err(e) = &read {
        assert_ne!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "the hub neither answered nor closed: {e}"
        );
    }
}
