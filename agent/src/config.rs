//! The agent's configuration file (TOML), loaded whole and validated whole: every problem is
//! reported with its key and line, and nothing starts unless all of it is right.

use crate::buffer::intake::{IntakeConfig, MIN_MAX_BYTES};
use crate::buffer::Engine;
use crate::sources::jt808_tcp::Jt808TcpConfig;
use crate::sources::mqtt::MqttSourceConfig;
use crate::sources::serial::SerialSourceConfig;
use crate::sources::simulate::SimulateConfig;
use crate::uplink::UplinkConfig;
use qyt_proto::{EventClass, SiteId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub site: SiteId,
    pub buffer: BufferConfig,
    pub uplink: UplinkConfig,
    pub http: HttpConfig,
    #[serde(rename = "source")]
    pub sources: Vec<SourceConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    #[serde(default)]
    pub engine: Engine,
    /// Directory of the buffer's files (created if missing).
    pub dir: PathBuf,
    /// Bound on the bytes the buffer occupies on disk.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Classes that are never dropped when the buffer is full: they are refused at intake
    /// instead, so the device (or its broker) keeps them.
    #[serde(default = "default_never_drop")]
    pub never_drop: Vec<EventClass>,
    /// Longest time an accepted event may wait for its group commit.
    #[serde(default = "default_commit_delay_ms")]
    pub commit_delay_ms: u64,
    /// Most events in one group commit.
    #[serde(default = "default_max_commit_events")]
    pub max_commit_events: usize,
}

// The defaults are the intake's own.
fn default_max_bytes() -> u64 {
    IntakeConfig::default().max_bytes
}
fn default_never_drop() -> Vec<EventClass> {
    IntakeConfig::default().never_drop
}
fn default_commit_delay_ms() -> u64 {
    IntakeConfig::default().commit_delay_ms
}
fn default_max_commit_events() -> usize {
    IntakeConfig::default().max_commit_events
}

impl BufferConfig {
    /// `dedup_window_ms` is the longest duplicate window of the sources: device message ids
    /// are kept at least that long, so that a restart does not forget ids still in a window.
    pub fn intake(&self, dedup_window_ms: u64) -> IntakeConfig {
        let defaults = IntakeConfig::default();
        IntakeConfig {
            max_bytes: self.max_bytes,
            never_drop: self.never_drop.clone(),
            commit_delay_ms: self.commit_delay_ms,
            max_commit_events: self.max_commit_events,
            dedup_retain_ms: defaults.dedup_retain_ms.max(dedup_window_ms),
        }
    }
}

impl Config {
    /// The longest duplicate window of the configured sources, in milliseconds (0 if none).
    pub fn longest_dedup_window_ms(&self) -> u64 {
        self.sources
            .iter()
            .filter_map(|s| match s {
                SourceConfig::Mqtt(c) => Some(c.dedup_window_s.saturating_mul(1000)),
                SourceConfig::Jt808Tcp(c) => Some(c.dedup_window_s.saturating_mul(1000)),
                SourceConfig::Simulate(_) | SourceConfig::Serial(_) => None,
            })
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/healthz` and `/metrics`. Loopback by default: they are for the gateway's own
    /// monitoring, not for the network.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100))
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
        }
    }
}

/// One `[[source]]` table. `type` selects the kind; `name` appears in events, metrics and logs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    Mqtt(MqttSourceConfig),
    Simulate(SimulateConfig),
    Serial(SerialSourceConfig),
    Jt808Tcp(Jt808TcpConfig),
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Mqtt(c) => &c.name,
            SourceConfig::Simulate(c) => &c.name,
            SourceConfig::Serial(c) => &c.name,
            SourceConfig::Jt808Tcp(c) => &c.name,
        }
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `source[1].port`; empty for the whole file.
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_empty() {
            "(file)"
        } else {
            &self.key
        };
        match self.line {
            Some(l) => write!(f, "line {l}: {key}: {}", self.message),
            None => write!(f, "{key}: {}", self.message),
        }
    }
}

/// All problems found in one file.
#[derive(Debug)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} has {} error(s):",
            self.path.display(),
            self.errors.len()
        )?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        path: path.to_path_buf(),
        errors,
    };
    let src = std::fs::read_to_string(path).map_err(|e| {
        fail(vec![ConfigError {
            key: String::new(),
            line: None,
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    parse(&src).map_err(fail)
}

/// Parses and validates a whole config. Each section is deserialised on its own so that one
/// bad section does not hide the errors of the others.
pub fn parse(src: &str) -> Result<Config, Vec<ConfigError>> {
    let doc = DeTable::parse(src).map_err(|e| vec![toml_error(src, None, &e, "")])?;
    let root = doc.get_ref();
    let mut errors = Vec::new();
    let known = ["site", "buffer", "uplink", "http", "source"];
    for (k, v) in root.iter() {
        if !known.contains(&k.get_ref().as_ref()) {
            errors.push(ConfigError {
                key: k.get_ref().to_string(),
                line: Some(line_at(src, v.span().start)),
                message: format!("unknown key; expected one of: {}", known.join(", ")),
            });
        }
    }

    let site: Option<SiteId> = section(src, root, "site", &mut errors);
    let buffer: Option<BufferConfig> = section(src, root, "buffer", &mut errors);
    let uplink: Option<UplinkConfig> = section(src, root, "uplink", &mut errors);
    let http: HttpConfig = if root.contains_key("http") {
        section(src, root, "http", &mut errors).unwrap_or_default()
    } else {
        HttpConfig::default()
    };
    let mut sources = Vec::new();
    match root.get("source").map(|v| (v.span(), v.get_ref())) {
        None => errors.push(ConfigError {
            key: "source".into(),
            line: None,
            message: "no [[source]] table: the agent would have nothing to read".into(),
        }),
        Some((_, DeValue::Array(items))) => {
            for (i, item) in items.iter().enumerate() {
                let key = format!("source[{i}]");
                match SourceConfig::deserialize(toml::de::ValueDeserializer::from(item.clone())) {
                    Ok(s) => sources.push(s),
                    Err(e) => errors.push(toml_error(src, Some(root), &e, &key)),
                }
            }
        }
        Some((span, _)) => errors.push(ConfigError {
            key: "source".into(),
            line: Some(line_at(src, span.start)),
            message: "must be an array of tables: write each source as [[source]]".into(),
        }),
    }

    // Semantic checks, each naming its key.
    let mut check = |key: String, message: String| {
        let line = line_of(src, root, &key);
        errors.push(ConfigError { key, line, message });
    };
    if let Some(b) = &buffer {
        if b.max_bytes < MIN_MAX_BYTES {
            check(
                "buffer.max_bytes".into(),
                format!(
                    "{} is below the minimum of {MIN_MAX_BYTES} bytes",
                    b.max_bytes
                ),
            );
        }
        if b.max_commit_events == 0 {
            check(
                "buffer.max_commit_events".into(),
                "must be at least 1".into(),
            );
        }
        if b.never_drop.contains(&EventClass::Gap) {
            check(
                "buffer.never_drop".into(),
                "gap is always kept; remove it from the list".into(),
            );
        }
    }
    if let Some(u) = &uplink {
        if let Err(problems) = u.validate() {
            for (k, m) in problems {
                check(format!("uplink.{k}"), m);
            }
        }
    }
    let mut names = BTreeSet::new();
    for (i, s) in sources.iter().enumerate() {
        if !names.insert(s.name().to_string()) {
            check(
                format!("source[{i}].name"),
                format!(
                    "{:?} is used by another source; names must be unique",
                    s.name()
                ),
            );
        }
        let problems = match s {
            SourceConfig::Mqtt(c) => c.validate(),
            SourceConfig::Simulate(c) => c.validate(),
            SourceConfig::Serial(c) => c.validate(),
            SourceConfig::Jt808Tcp(c) => c.validate(),
        };
        for (k, m) in problems {
            check(format!("source[{i}].{k}"), m);
        }
    }

    match (site, buffer, uplink) {
        (Some(site), Some(buffer), Some(uplink)) if errors.is_empty() => Ok(Config {
            site,
            buffer,
            uplink,
            http,
            sources,
        }),
        _ => Err(errors),
    }
}

/// Deserialises one top-level section, recording a missing section or its errors.
fn section<T: for<'de> Deserialize<'de>>(
    src: &str,
    root: &DeTable<'_>,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let Some(v) = root.get(key) else {
        errors.push(ConfigError {
            key: key.into(),
            line: None,
            message: "required but missing".into(),
        });
        return None;
    };
    match T::deserialize(toml::de::ValueDeserializer::from(v.clone())) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(toml_error(src, Some(root), &e, key));
            None
        }
    }
}

/// A deserialisation error, placed at the span toml gives or, for errors raised by a type's
/// own validation (which carry no span), at the key's line.
fn toml_error(
    src: &str,
    root: Option<&DeTable<'_>>,
    e: &toml::de::Error,
    key: &str,
) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        line: e
            .span()
            .map(|s| line_at(src, s.start))
            .or_else(|| root.and_then(|r| line_of(src, r, key))),
        message: e.message().trim().to_string(),
    }
}

fn line_at(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// The line of a dotted key path like `source[1].topic[0].filter`, as deep as it resolves.
fn line_of(src: &str, root: &DeTable<'_>, path: &str) -> Option<usize> {
    let mut table = root;
    let mut found: Option<&Spanned<DeValue<'_>>> = None;
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(mut v) = table.get(name) else { break };
        if let (Some(i), DeValue::Array(items)) = (index, v.get_ref()) {
            match items.get(i) {
                Some(item) => v = item,
                None => break,
            }
        }
        found = Some(v);
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found.map(|v| line_at(src, v.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
site = "gate-01"
[buffer]
dir = "/tmp/x"
[uplink]
host = "127.0.0.1"
[[source]]
type = "simulate"
name = "sim"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.site.as_str(), "gate-01");
        assert_eq!(c.buffer.engine, Engine::Redb);
        assert_eq!(
            c.buffer.never_drop,
            vec![EventClass::Seal, EventClass::Gate, EventClass::Alarm]
        );
        assert_eq!(c.http.listen, default_http_listen());
        assert_eq!(c.sources.len(), 1);
    }

    #[test]
    fn every_error_is_reported_with_key_and_line() {
        let src = r#"
site = "bad/site"
colour = "blue"
[buffer]
dir = "/tmp/x"
max_bytes = 10
[uplink]
host = "127.0.0.1"
[[source]]
type = "simulate"
name = "sim"
[[source]]
type = "simulate"
name = "sim"
[[source]]
type = "telepathy"
name = "x"
"#;
        let errs = parse(src).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let has =
            |key: &str, line: usize| errs.iter().any(|e| e.key == key && e.line == Some(line));
        assert!(has("site", 2), "{text:#?}");
        assert!(has("colour", 3), "{text:#?}");
        assert!(has("buffer.max_bytes", 6), "{text:#?}");
        assert!(has("source[1].name", 14), "{text:#?}");
        assert!(errs.iter().any(|e| e.key == "source[2]"), "{text:#?}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let errs = parse("site = \"a\"\n[buffer\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(2), "{:?}", errs[0]);
    }

    #[test]
    fn missing_sections_are_named() {
        let errs = parse("site = \"a\"\n").unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert!(
            keys.contains(&"buffer") && keys.contains(&"uplink") && keys.contains(&"source"),
            "{keys:?}"
        );
    }

    #[test]
    fn shipped_example_configs_are_valid() {
        for name in ["agent.toml", "agent-devices.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../config")
                .join(name);
            match load(&path) {
                Ok(c) if name == "agent-devices.toml" => assert_eq!(c.sources.len(), 5),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
}
