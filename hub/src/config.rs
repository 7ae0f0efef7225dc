//! The hub's configuration file: its shape, its defaults and every rule it must satisfy.
//!
//! Loading does not stop at the first mistake. Each section (and each `[[sites]]` entry) is
//! deserialised on its own and every semantic rule is checked, so one `check-config` run lists
//! everything an operator has to fix, each with its key and, where the file has it, its line.

use crate::access::Role;
use crate::supervision::geo::Area;
use crate::supervision::rules::SupervisionConfig;
use crate::webhook::WebhookConfig;
use argon2::password_hash::PasswordHash;
use qyt_proto::{SiteId, MAX_BATCH_BYTES};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    pub broker: BrokerConfig,
    pub store: StoreConfig,
    pub ingest: IngestConfig,
    pub http: HttpConfig,
    pub api: ApiConfig,
    pub supervision: SupervisionConfig,
    pub webhooks: WebhookConfig,
    pub sites: Vec<SiteConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// An external broker (`mqtt://host[:port]`). Absent: the hub runs its own, embedded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where the embedded broker listens for agents.
    pub listen: SocketAddr,
    /// Embedded broker only: let clients in without a username (they may still only use site
    /// topics). For a lab, never for a checkpoint network.
    pub allow_anonymous: bool,
    /// Largest MQTT packet accepted. Kept above `ingest.max_batch_bytes` so an oversize batch
    /// still reaches the hub and is rejected with a reason, not dropped by the broker unseen.
    pub max_packet_bytes: usize,
    /// The hub consumer's MQTT client id. Fixed, because its persistent session lives under it.
    pub client_id: String,
    /// External broker only: the hub's MQTT username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// External broker only: file holding the hub's MQTT password (kept out of this file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    pub keep_alive_s: u64,
    /// Embedded broker only: a TLS listener for agents beside the plain one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<BrokerTls>,
    /// External broker at an `mqtts://` URL: how the hub's consumer verifies it (and, for
    /// mutual TLS, the certificate it presents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_tls: Option<qyt_tls::TlsConfig>,
}

/// `[broker.tls]`: the embedded broker's TLS listener (MQTT over TLS, conventionally port 8883).
/// Agents then reach the hub encrypted, and their site passwords never cross the network in
/// clear; the plain `broker.listen` can stay on loopback for the hub's own consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerTls {
    /// Where the TLS listener binds, e.g. "0.0.0.0:8883". Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// PEM certificate chain of the broker, leaf first; agents verify it against their
    /// `uplink.tls.ca_file`.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificate(s). When set, every TLS client must present a certificate signed by
    /// one of them (mutual TLS), in addition to its site login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            url: None,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883),
            allow_anonymous: false,
            max_packet_bytes: 4 * MAX_BATCH_BYTES,
            client_id: "qyt-hub".into(),
            username: None,
            password_file: None,
            keep_alive_s: 30,
            tls: None,
            external_tls: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database file; a relative path is relative to the working directory.
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("var/hub/hub.db"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest encoded batch accepted; larger ones are rejected as `oversize`.
    pub max_batch_bytes: usize,
    /// Decoded batches waiting for the store. When full, the hub stops reading from the broker,
    /// which holds further messages (back-pressure instead of unbounded memory).
    pub queue_batches: usize,
    /// Upper bound of events written in one transaction when several batches are waiting.
    pub max_events_per_commit: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_batch_bytes: MAX_BATCH_BYTES,
            queue_batches: 64,
            max_events_per_commit: 20_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub tokens: Vec<ApiToken>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds the token; appears in logs, never the token itself.
    pub name: String,
    /// SHA-256 of the token, lowercase hex (`qyt-hub hash-token`).
    pub sha256: String,
    /// `admin`, `operator` or `enterprise:<id>`. Required; optional in the type only so that a
    /// missing role is reported with the fix instead of a bare parse error.
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub id: SiteId,
    /// Embedded broker: Argon2 PHC hash of the password the site's agent logs in with, its
    /// username being the site id (`qyt-hub hash-password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_password_hash: Option<String>,
    /// The site's premises, where transits may stop as long as they like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<Area>,
}

/// Where the hub's MQTT consumer connects when the broker is external.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: over TLS, verified with `[broker.external_tls]`.
    pub tls: bool,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => {
                return Err(format!(
                    "{url:?} is not supported: write mqtt://host[:port], or mqtts://host[:port] for TLS"
                ))
            }
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal has colons of its own; only a colon after `]` starts a port.
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("{url:?} has port {p:?}: use a number from 1 to 65535"))?;
                (h, port)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') || port == 0 {
            return Err(format!("{url:?} names no broker: write mqtt://host[:port]"));
        }
        Ok(BrokerUrl {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted path of the offending key, e.g. `sites[1].id`.
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Everything wrong with a configuration, in file order.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has {} error(s):\n{}", .origin, .issues.len(), list(.issues))]
    Invalid {
        origin: String,
        issues: Vec<ConfigIssue>,
    },
}

fn list(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|issues| ConfigError::Invalid {
            origin: path.display().to_string(),
            issues,
        })
    }

    /// Parses and validates configuration text, returning every problem found.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigIssue>> {
        let (root, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            return Err(syntax
                .iter()
                .map(|e| ConfigIssue {
                    key: key_at(text, "(syntax)", e.span()),
                    line: e.span().map(|s| line_of(text, s.start)),
                    message: e.message().to_string(),
                })
                .collect());
        }
        let mut issues = Vec::new();
        let mut config = Config::default();
        for (key, value) in root.get_ref().iter() {
            let name = key.get_ref().as_ref();
            match name {
                "broker" => {
                    if let Some(v) = section(text, name, value, &mut issues) {
                        config.broker = v;
                    }
                }
                "store" => {
                    if let Some(v) = section(text, name, value, &mut issues) {
                        config.store = v;
                    }
                }
                "ingest" => {
                    if let Some(v) = section(text, name, value, &mut issues) {
                        config.ingest = v;
                    }
                }
                "http" => {
                    if let Some(v) = section(text, name, value, &mut issues) {
                        config.http = v;
                    }
                }
                "api" => {
                    if let Some(v) = section(text, name, value, &mut issues) {
                        config.api = v;
                    }
                }
                "supervision" => {
                    if let Some(v) = section(text, name, value, &mut issues) {
                        config.supervision = v;
                    }
                }
                "webhooks" => {
                    if let Some(v) = section(text, name, value, &mut issues) {
                        config.webhooks = v;
                    }
                }
                "sites" => match value.get_ref() {
                    DeValue::Array(entries) => {
                        for (i, entry) in entries.iter().enumerate() {
                            let key = format!("sites[{i}]");
                            config.sites.extend(section(text, &key, entry, &mut issues));
                        }
                    }
                    _ => issues.push(ConfigIssue {
                        key: "sites".into(),
                        line: Some(line_of(text, value.span().start)),
                        message: "must be a list of [[sites]] tables".into(),
                    }),
                },
                other => issues.push(ConfigIssue {
                    key: other.to_string(),
                    line: Some(line_of(text, key.span().start)),
                    message: "unknown section: expected broker, store, ingest, http, api, supervision, webhooks or sites"
                        .into(),
                }),
            }
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let mut issues = config.check();
        if issues.is_empty() {
            return Ok(config);
        }
        for issue in &mut issues {
            issue.line = locate(root.get_ref(), &issue.key).map(|at| line_of(text, at));
        }
        Err(issues)
    }

    /// Checks the rules a well-typed configuration must still satisfy. Also run by
    /// [`crate::Hub::start`], for configurations built in code.
    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut bad = |key: String, message: String| {
            issues.push(ConfigIssue {
                key,
                line: None,
                message,
            })
        };
        let b = &self.broker;
        let embedded = b.url.is_none();
        if let Some(url) = &b.url {
            match (BrokerUrl::parse(url), &b.external_tls) {
                (Err(e), _) => bad("broker.url".into(), e),
                (Ok(u), None) if u.tls => bad(
                    "broker.external_tls".into(),
                    format!(
                        "missing although broker.url {url:?} is mqtts://: add [broker.external_tls] \
                         with the ca_file that signed the broker's certificate"
                    ),
                ),
                (Ok(u), Some(_)) if !u.tls => bad(
                    "broker.external_tls".into(),
                    format!("only used with an mqtts:// broker.url, not {url:?}: remove it or use mqtts://"),
                ),
                (Ok(_), Some(t)) => {
                    if let Err(e) = qyt_tls::client_config(t) {
                        let key = match e.config_key() {
                            "" => "broker.external_tls".to_string(),
                            k => format!("broker.external_tls.{k}"),
                        };
                        bad(key, e.to_string());
                    }
                }
                (Ok(_), None) => {}
            }
        } else {
            if b.username.is_some() {
                bad(
                    "broker.username".into(),
                    "only used with an external broker (broker.url); the embedded broker \
                     gives the hub its own credentials: remove it"
                        .into(),
                );
            }
            if b.password_file.is_some() {
                bad(
                    "broker.password_file".into(),
                    "only used with an external broker (broker.url): remove it".into(),
                );
            }
            if b.listen == self.http.listen && b.listen.port() != 0 {
                bad(
                    "broker.listen".into(),
                    format!("{} is also http.listen: give each its own port", b.listen),
                );
            }
            if let Some(tls) = &b.tls {
                for (key, path) in [
                    ("broker.tls.cert_file", Some(&tls.cert_file)),
                    ("broker.tls.key_file", Some(&tls.key_file)),
                    ("broker.tls.client_ca_file", tls.client_ca_file.as_ref()),
                ] {
                    let Some(path) = path else { continue };
                    if let Err(e) = std::fs::File::open(path) {
                        bad(
                            key.into(),
                            format!(
                                "cannot read {}: {e}; check the path and that the hub may read it",
                                path.display()
                            ),
                        );
                    }
                }
                if tls.listen.port() != 0
                    && (tls.listen == b.listen || tls.listen == self.http.listen)
                {
                    bad(
                        "broker.tls.listen".into(),
                        format!(
                            "{} is also broker.listen or http.listen: give each its own port",
                            tls.listen
                        ),
                    );
                }
            }
        }
        if !embedded && b.tls.is_some() {
            bad(
                "broker.tls".into(),
                "only used with the embedded broker; an external broker's TLS is its own \
                 configuration: remove it or unset broker.url"
                    .into(),
            );
        }
        if b.password_file.is_some() && b.username.is_none() {
            bad(
                "broker.username".into(),
                "missing although broker.password_file is set: add the hub's MQTT username".into(),
            );
        }
        if b.client_id.is_empty() {
            bad(
                "broker.client_id".into(),
                "is empty: the hub needs a fixed client id for its persistent session".into(),
            );
        }
        if !(5..=65_535).contains(&b.keep_alive_s) {
            bad(
                "broker.keep_alive_s".into(),
                format!("is {}: use 5 to 65535 seconds", b.keep_alive_s),
            );
        }
        let i = &self.ingest;
        if i.max_batch_bytes < 1024 {
            bad(
                "ingest.max_batch_bytes".into(),
                format!("is {}: use at least 1024", i.max_batch_bytes),
            );
        }
        if b.max_packet_bytes <= i.max_batch_bytes {
            bad(
                "broker.max_packet_bytes".into(),
                format!(
                    "is {} but must exceed ingest.max_batch_bytes ({}), so oversize batches \
                     reach the hub and are counted",
                    b.max_packet_bytes, i.max_batch_bytes
                ),
            );
        }
        if i.queue_batches == 0 {
            bad("ingest.queue_batches".into(), "is 0: use at least 1".into());
        }
        if i.max_events_per_commit == 0 {
            bad(
                "ingest.max_events_per_commit".into(),
                "is 0: use at least 1".into(),
            );
        }
        if self.store.path.as_os_str().is_empty() {
            bad(
                "store.path".into(),
                "is empty: name the SQLite database file".into(),
            );
        }
        let mut names = HashSet::new();
        for (n, t) in self.api.tokens.iter().enumerate() {
            if t.name.trim().is_empty() {
                bad(
                    format!("api.tokens[{n}].name"),
                    "is empty: say who holds the token".into(),
                );
            } else if !names.insert(t.name.as_str()) {
                bad(
                    format!("api.tokens[{n}].name"),
                    format!("{:?} is used twice: names must be unique", t.name),
                );
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
                bad(
                    format!("api.tokens[{n}].sha256"),
                    "is not 64 hex digits: use the output of `qyt-hub hash-token`".into(),
                );
            }
            if t.role.is_none() {
                bad(
                    format!("api.tokens[{n}].role"),
                    "missing: add role = \"operator\" (or \"admin\", or \"enterprise:<id>\")"
                        .into(),
                );
            }
        }
        for (key, message) in self
            .supervision
            .check()
            .into_iter()
            .chain(self.webhooks.check())
        {
            bad(key, message);
        }
        if self.sites.is_empty() {
            bad(
                "sites".into(),
                "no site declared: add a [[sites]] table per agent, with its id".into(),
            );
        }
        let mut ids = HashSet::new();
        for (n, s) in self.sites.iter().enumerate() {
            if !ids.insert(&s.id) {
                bad(
                    format!("sites[{n}].id"),
                    format!("{:?} is declared twice", s.id.as_str()),
                );
            }
            if let Some(Err(e)) = s.area.as_ref().map(Area::check) {
                bad(format!("sites[{n}].area"), e);
            }
            match &s.mqtt_password_hash {
                Some(hash) => {
                    let argon = PasswordHash::new(hash)
                        .is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"));
                    if !argon {
                        bad(
                            format!("sites[{n}].mqtt_password_hash"),
                            "is not an Argon2 PHC string: use the output of `qyt-hub hash-password`"
                                .into(),
                        );
                    }
                }
                None if embedded && !b.allow_anonymous => bad(
                    format!("sites[{n}].mqtt_password_hash"),
                    format!(
                        "missing: site {:?} could not log in to the embedded broker; set it \
                         (`qyt-hub hash-password`) or set broker.allow_anonymous = true",
                        s.id.as_str()
                    ),
                ),
                None => {}
            }
        }
        issues
    }

    /// The configuration with every default filled in, as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config types always serialise to TOML")
    }
}

/// Deserialises one section, recording a problem instead of failing.
fn section<T: DeserializeOwned>(
    text: &str,
    name: &str,
    value: &Spanned<DeValue<'_>>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    T::deserialize(ValueDeserializer::from(value.clone()))
        .map_err(|e| {
            issues.push(ConfigIssue {
                key: key_at(text, name, e.span()),
                line: Some(line_of(text, e.span().unwrap_or(value.span()).start)),
                message: e.message().to_string(),
            })
        })
        .ok()
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// The key an error points at: the section, plus the `key = ...` written on that line if any.
fn key_at(text: &str, section: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return section.to_string();
    };
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() && !k.trim_start().starts_with('[') => {
            format!("{section}.{}", k.trim())
        }
        _ => section.to_string(),
    }
}

/// Byte offset of a dotted key such as `sites[1].mqtt_password_hash` in the parsed document.
fn locate(root: &DeTable<'_>, key: &str) -> Option<usize> {
    let mut at: Option<&Spanned<DeValue<'_>>> = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let table = match at {
            None => root,
            Some(v) => v.get_ref().as_table()?,
        };
        let mut next = table.get(name);
        if let (Some(i), Some(v)) = (index, next) {
            next = v.get_ref().get(i);
        }
        match next {
            Some(v) => at = Some(v),
            // The key itself is absent (a missing setting): point at its enclosing table.
            None => return at.map(|v| v.span().start),
        }
    }
    at.map(|v| v.span().start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str =
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$0SNIbJtbDvOG8+ZGC8ztgh0aJbOUmmwjd4WJA6kvOvg";

    fn minimal() -> String {
        format!("[[sites]]\nid = \"gate-1\"\nmqtt_password_hash = \"{HASH}\"\n")
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(&minimal()).unwrap();
        assert_eq!(c.broker.listen.port(), 1883);
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.ingest.max_batch_bytes, MAX_BATCH_BYTES);
        assert_eq!(c.sites[0].id.as_str(), "gate-1");
        let again = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(again.to_toml(), c.to_toml());
    }

    #[test]
    fn every_section_error_is_reported_with_key_and_line() {
        let text =
            "[http]\nlisten = 8080\n\n[broker]\nlisten = \"127.0.0.1:1883\"\nkeepalive = 3\n\n\
                    [[sites]]\nid = \"bad/site\"\n\n[[sites]]\nid = \"ok\"\n\n[extra]\n";
        let issues = Config::parse(text).unwrap_err();
        let keys: Vec<_> = issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert!(keys.contains(&("http.listen", Some(2))), "{issues:?}");
        assert!(keys.contains(&("broker.keepalive", Some(6))), "{issues:?}");
        assert!(keys.contains(&("sites[0].id", Some(9))), "{issues:?}");
        assert!(keys.contains(&("extra", Some(14))), "{issues:?}");
    }

    #[test]
    fn semantic_errors_are_all_listed_with_lines() {
        let text = format!(
            "{}\n[[sites]]\nid = \"gate-1\"\n\n[ingest]\nmax_batch_bytes = 10\n\n[[api.tokens]]\nname = \"ops\"\nsha256 = \"abc\"\n",
            minimal()
        );
        let issues = Config::parse(&text).unwrap_err();
        let keys: Vec<_> = issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert!(keys.contains(&("sites[1].id", Some(6))), "{issues:?}");
        assert!(
            keys.contains(&("sites[1].mqtt_password_hash", Some(5))),
            "{issues:?}"
        );
        assert!(
            keys.contains(&("ingest.max_batch_bytes", Some(9))),
            "{issues:?}"
        );
        assert!(
            keys.contains(&("api.tokens[0].sha256", Some(13))),
            "{issues:?}"
        );
    }

    #[test]
    fn broker_tls_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("hub.pem");
        std::fs::write(&cert, "not checked here").unwrap();
        let text = format!(
            "{}
[broker]
listen = \"127.0.0.1:1883\"

[broker.tls]
listen = \"127.0.0.1:1883\"
             cert_file = \"{}\"
key_file = \"{}\"
",
            minimal(),
            cert.display(),
            dir.path().join("missing.key").display()
        );
        let issues = Config::parse(&text).unwrap_err();
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["broker.tls.key_file", "broker.tls.listen"],
            "{issues:?}"
        );

        let text = format!(
            "{}
[broker]
url = \"mqtt://broker.lan\"

[broker.tls]
listen = \"127.0.0.1:8883\"
             cert_file = \"{}\"
key_file = \"{}\"
",
            minimal(),
            cert.display(),
            cert.display()
        );
        let issues = Config::parse(&text).unwrap_err();
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["broker.tls"], "{issues:?}");

        // An external broker over TLS needs its CA; a readable file that is no CA is named.
        let text = format!("{}\n[broker]\nurl = \"mqtts://broker.lan\"\n", minimal());
        let issues = Config::parse(&text).unwrap_err();
        assert_eq!(issues[0].key, "broker.external_tls", "{issues:?}");
        let text = format!(
            "{}\n[broker]\nurl = \"mqtts://broker.lan\"\n\n[broker.external_tls]\nca_file = \"{}\"\n",
            minimal(),
            cert.display()
        );
        let issues = Config::parse(&text).unwrap_err();
        assert_eq!(issues[0].key, "broker.external_tls.ca_file", "{issues:?}");
        let text = format!(
            "{}\n[broker]\nurl = \"mqtt://broker.lan\"\n\n[broker.external_tls]\nca_file = \"{}\"\n",
            minimal(),
            cert.display()
        );
        let issues = Config::parse(&text).unwrap_err();
        assert_eq!(issues[0].key, "broker.external_tls", "{issues:?}");
    }

    #[test]
    fn supervision_webhooks_and_roles_are_checked() {
        let text = format!(
            "{}\n[supervision]\ntick_s = 0\n\n[supervision.severity]\nlong_stop = \"major\"\n\n\
             [webhooks]\nbackoff_base_s = 60\nbackoff_max_s = 10\n\n\
             [[api.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\n",
            minimal(),
            "a".repeat(64)
        );
        let issues = Config::parse(&text).unwrap_err();
        let keys: Vec<_> = issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert!(
            keys.contains(&("supervision.tick_s", Some(6))),
            "{issues:?}"
        );
        assert!(
            keys.contains(&("webhooks.backoff_max_s", Some(13))),
            "{issues:?}"
        );
        let role = issues
            .iter()
            .find(|i| i.key == "api.tokens[0].role")
            .unwrap();
        assert!(role.message.contains("role = \"operator\""), "{role}");
        let ok = text
            .replace("tick_s = 0", "tick_s = 2")
            .replace("backoff_max_s = 10", "backoff_max_s = 600")
            .replace("sha256", "role = \"enterprise:acme\"\nsha256");
        let c = Config::parse(&ok).unwrap();
        use crate::supervision::rules::{Rule, Severity};
        assert_eq!(c.supervision.severity(Rule::LongStop), Severity::Major);
        assert_eq!(
            c.api.tokens[0].role.as_ref().unwrap().to_string(),
            "enterprise:acme"
        );
        let bad_rule = ok.replace("long_stop = ", "long_stops = ");
        let issues = Config::parse(&bad_rule).unwrap_err();
        assert!(issues[0].key.starts_with("supervision"), "{issues:?}");
    }

    #[test]
    fn syntax_errors_carry_lines() {
        let issues = Config::parse("[http]\nlisten = \"x\nfoo").unwrap_err();
        assert!(issues.iter().all(|i| i.line.is_some()), "{issues:?}");
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerUrl::parse("mqtt://10.0.0.1").unwrap(),
            BrokerUrl {
                host: "10.0.0.1".into(),
                port: 1883,
                tls: false
            }
        );
        let secure = BrokerUrl::parse("mqtts://broker.lan").unwrap();
        assert_eq!((secure.port, secure.tls), (8883, true));
        assert_eq!(BrokerUrl::parse("mqtt://[::1]:1884").unwrap().port, 1884);
        assert_eq!(
            BrokerUrl::parse("mqtt://broker.lan:8883/").unwrap().host,
            "broker.lan"
        );
        for bad in [
            "ws://x",
            "mqtt://",
            "mqtt://x:0",
            "mqtt://x:port",
            "tcp://x:1",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
