//! The embedded MQTT broker (mqtt5), so that one binary is the whole hub.
//!
//! Agents log in with their site id as username. The ACL lets a site publish only to its own
//! events and status topics and read only its own acks; the hub's consumer logs in as
//! [`HUB_USER`] with a password drawn at start-up, which never leaves the process.

use crate::config::Config;
use crate::secret::{random_password_hash, HashError};
use mqtt5::broker::config::{StorageBackend, StorageConfig};
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
    #[error("cannot set up the hub's internal broker login: {0}")]
    Hash(#[from] HashError),
    #[error("embedded MQTT broker stopped: {0}")]
    Stopped(#[source] mqtt5::MqttError),
}

/// A bound, not yet running broker; dropping it releases the port.
pub struct Embedded {
    broker: MqttBroker,
    addr: SocketAddr,
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
        Ok(Embedded { broker, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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
