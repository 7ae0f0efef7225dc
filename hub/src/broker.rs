//! The embedded MQTT broker (mqtt5), so that one binary is the whole hub.
//!
//! Agents log in with their site id as username. The ACL lets a site publish only to its own
//! events and status topics and read only its own acks; the hub's consumer logs in as
//! [`HUB_USER`] with a password drawn at start-up, which never leaves the process.

use crate::config::{BrokerTls, Config};
use crate::secret::{random_password_hash, HashError};
use mqtt5::broker::config::{StorageBackend, StorageConfig, TlsConfig};
use mqtt5::broker::{
    AclManager, AclRule, BrokerConfig, BrokerShutdownHandle, ComprehensiveAuthProvider, MqttBroker,
    PasswordAuthProvider, Permission,
};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// The hub consumer's username. `@` cannot occur in a site id, so no site can take this name.
pub const HUB_USER: &str = "qyt@hub";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded MQTT broker cannot start on {listen}: {source} (is broker.listen free?)")]
    Start {
        listen: SocketAddr,
        #[source]
        source: mqtt5::MqttError,
    },
    #[error("embedded MQTT broker cannot start its TLS listener on {listen}: {detail} (check broker.tls: the PEM files and that the address is free)")]
    Tls { listen: SocketAddr, detail: String },
    #[error("cannot set up the hub's internal broker login: {0}")]
    Hash(#[from] HashError),
    #[error("embedded MQTT broker stopped: {0}")]
    Stopped(#[source] mqtt5::MqttError),
}

/// A bound, not yet running broker; dropping it releases the port.
pub struct Embedded {
    broker: MqttBroker,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
}

impl Embedded {
    /// Binds the listener and sets up authentication; `hub_password` is what the consumer uses.
    pub async fn bind(config: &Config, hub_password: &str) -> Result<Embedded, BrokerError> {
        let listen = config.broker.listen;
        let broker_config = BrokerConfig {
            bind_addresses: vec![listen],
            max_packet_size: config.broker.max_packet_bytes,
            // Sessions and retained status live in memory: durability is the agents' buffers
            // and the hub's database, never the broker.
            storage_config: StorageConfig::default().with_backend(StorageBackend::Memory),
            sys_topics_enabled: false,
            tls_config: match &config.broker.tls {
                Some(t) => Some(tls_config(t)?),
                None => None,
            },
            ..BrokerConfig::default()
        };
        let broker = MqttBroker::with_config(broker_config)
            .await
            .map_err(|source| BrokerError::Start { listen, source })?
            .with_auth_provider(Arc::new(auth(config, hub_password).await?));
        let addr = broker.local_addr().ok_or_else(|| BrokerError::Start {
            listen,
            source: mqtt5::MqttError::Configuration("no TCP listener was bound".into()),
        })?;
        let tls_addr =
            match &config.broker.tls {
                // mqtt5 only warns when a TLS address cannot be bound and goes on without it; a hub
                // whose agents are configured for TLS must not start half-deaf.
                Some(t) => Some(broker.tls_local_addr().ok_or_else(|| {
                    BrokerError::Tls {
                listen: t.listen,
                detail: "the address could not be bound (in use, or not an address of this host)"
                    .into(),
            }
                })?),
                None => None,
            };
        Ok(Embedded {
            broker,
            addr,
            tls_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the TLS listener is bound, when `broker.tls` is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The shutdown handle and the future that runs the broker until it is used.
    pub fn run(
        mut self,
    ) -> (
        BrokerShutdownHandle,
        impl Future<Output = Result<(), BrokerError>> + Send,
    ) {
        let shutdown = self.broker.shutdown_handle();
        (shutdown, async move {
            self.broker.run().await.map_err(BrokerError::Stopped)
        })
    }
}

/// Checks the PEM files of `[broker.tls]` so that a bad one is named with what is wrong with
/// it (mqtt5 would read them too, with a less precise error), then builds mqtt5's TLS config.
fn tls_config(t: &BrokerTls) -> Result<TlsConfig, BrokerError> {
    let fail = |detail: String| BrokerError::Tls {
        listen: t.listen,
        detail,
    };
    let fail = |e: qyt_tls::TlsError| fail(e.to_string());
    qyt_tls::certificates("broker.tls.cert_file", &t.cert_file).map_err(fail)?;
    qyt_tls::private_key("broker.tls.key_file", &t.key_file).map_err(fail)?;
    if let Some(ca) = &t.client_ca_file {
        qyt_tls::certificates("broker.tls.client_ca_file", ca).map_err(fail)?;
    }
    let mut c = TlsConfig::new(t.cert_file.clone(), t.key_file.clone())
        .with_bind_address(t.listen)
        .with_require_client_cert(t.client_ca_file.is_some());
    c.ca_file = t.client_ca_file.clone();
    Ok(c)
}

async fn auth(
    config: &Config,
    hub_password: &str,
) -> Result<ComprehensiveAuthProvider, BrokerError> {
    let passwords = PasswordAuthProvider::new().with_anonymous(config.broker.allow_anonymous);
    passwords.add_user_with_hash(HUB_USER, random_password_hash(hub_password)?);
    for site in &config.sites {
        if let Some(hash) = &site.mqtt_password_hash {
            passwords.add_user_with_hash(site.id.as_str(), hash.clone());
        }
    }
    let acl = AclManager::new();
    let own = |leaf: &str| format!("qyt/v1/site/%u/{leaf}");
    let any = |leaf: &str| format!("qyt/v1/site/+/{leaf}");
    // `*` with `%u` expands to the connecting username, i.e. the site id.
    acl.add_rule(AclRule::new("*", own("events"), Permission::Write))
        .await;
    acl.add_rule(AclRule::new("*", own("status"), Permission::Write))
        .await;
    acl.add_rule(AclRule::new("*", own("acks"), Permission::Read))
        .await;
    acl.add_rule(AclRule::new(HUB_USER, any("events"), Permission::Read))
        .await;
    acl.add_rule(AclRule::new(HUB_USER, any("status"), Permission::Read))
        .await;
    acl.add_rule(AclRule::new(HUB_USER, any("acks"), Permission::Write))
        .await;
    if config.broker.allow_anonymous {
        // Without a username the broker cannot tell sites apart; the ingest's checks that topic,
        // batch and event agree on the site are then the only guard.
        acl.add_rule(AclRule::new("anonymous", any("events"), Permission::Write))
            .await;
        acl.add_rule(AclRule::new("anonymous", any("status"), Permission::Write))
            .await;
        acl.add_rule(AclRule::new("anonymous", any("acks"), Permission::Read))
            .await;
    }
    Ok(ComprehensiveAuthProvider::with_providers(passwords, acl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerTls;

    #[tokio::test]
    async fn a_bad_tls_file_is_named_and_nothing_starts() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("hub.pem");
        let key = dir.path().join("hub.key");
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        std::fs::write(&key, "").unwrap();
        let mut config = Config::default();
        config.broker.listen = "127.0.0.1:0".parse().unwrap();
        config.broker.tls = Some(BrokerTls {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_file: cert,
            key_file: key,
            client_ca_file: None,
        });
        let err = match Embedded::bind(&config, "pw").await {
            Ok(_) => panic!("a broker started with a broken certificate file"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("broker.tls.cert_file"), "{err}");
    }
}
