//! TLS end to end with real processes. The hub's embedded broker: a qyt-agent uplinks through
//! its TLS listener, verifying the hub against a CA made here; with mutual TLS the agent
//! presents its certificate, and a client without one is turned away before it can say anything
//! in MQTT. An external broker: the hub consumes from Mosquitto over mutual TLS (`mqtts://`).
//! Certificates are made with rcgen; nothing is mocked.

mod common;

use common::broker::{free_port, mosquitto_path, mosquitto_required, GatewayBroker};
use common::process::wait_until;
use common::{Agent, Hub};
use qyt_tls::test_pki::{make_pki, TestPki as Pki};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A CA, a broker certificate for 127.0.0.1 and localhost, and a client certificate.
fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    make_pki(dir, &["127.0.0.1", "localhost"])
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
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
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

/// Mosquitto as the hub's external broker, with a TLS listener that requires client
/// certificates: the hub consumes over `mqtts://`, presenting its own; the agent publishes on
/// Mosquitto's plain loopback listener. Skipped without Mosquitto unless QYT_REQUIRE_MOSQUITTO.
#[test]
fn hub_consumes_from_an_external_broker_over_mutual_tls() {
    const EVENTS: u64 = 2_000;
    let Some(bin) = mosquitto_path() else {
        assert!(
            !mosquitto_required(),
            "QYT_REQUIRE_MOSQUITTO is set but mosquitto is not installed"
        );
        eprintln!("skipped: mosquitto is not installed (apt-get install mosquitto)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listener = format!(
        "listener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        tls.port(),
        pki.ca.display(),
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let broker =
        GatewayBroker::mosquitto_with(bin, &dir.path().join("broker"), free_port(), &listener);
    // Mosquitto opens every listener before the plain one answers, which mosquitto_with awaited.
    let hub = Hub::start_config(
        &dir.path().join("hub"),
        broker.addr(),
        &format!(
            "url = \"mqtts://{tls}\"\n\n[broker.external_tls]\nca_file = \"{}\"\n\
             client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    );
    let _agent = Agent::start(
        &dir.path().join("agent"),
        broker.addr(),
        true,
        "",
        &simulated(EVENTS),
    );
    wait_until(
        120,
        "every simulated event stored through the external broker",
        || (hub.stored() >= EVENTS).then_some(()),
    );
    assert_eq!(hub.stored(), EVENTS, "each event stored once");
}
