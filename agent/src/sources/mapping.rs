//! Maps a device's JSON message to a typed event body, as configured per topic. Pure: bytes and
//! topic in, a body or a typed error out.
//!
//! A body field is taken from the payload path named in `fields` (dotted path, `a.b.0.c`), or
//! from a topic level (`$topic[N]`, 0-based), or from the payload key of the same name when no
//! mapping is given; `values` translates device vocabularies (e.g. `"locked"` → `"sealed"`);
//! `constants` fixes a field for every message on the topic (e.g. the lane of a camera).

use chrono::{DateTime, TimeZone, Utc};
use qyt_proto::{Body, EventClass};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicMapping {
    /// MQTT topic filter on the gateway's broker (wildcards allowed).
    pub filter: String,
    /// The event body this topic's messages become.
    pub kind: EventClass,
    /// Payload path of a field that identifies each device message (for duplicate detection).
    #[serde(default)]
    pub id_field: Option<String>,
    /// Payload path of the device's observation time: RFC 3339, or Unix seconds/milliseconds.
    /// Without it (or when absent in a message), the agent's reception time is used.
    #[serde(default)]
    pub observed_at_field: Option<String>,
    /// Body field → payload path or `$topic[N]`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Body field → (device value → value to use).
    #[serde(default)]
    pub values: BTreeMap<String, BTreeMap<String, Value>>,
    /// Body field → fixed value.
    #[serde(default)]
    pub constants: BTreeMap<String, Value>,
}

/// Why a device message could not be mapped. `reason()` is the metrics label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload is not a JSON object")]
    NotObject,
    #[error("required field {field} is missing (looked for {path:?})")]
    MissingField { field: String, path: String },
    #[error("the mapped fields do not make a valid {kind} body: {detail}")]
    InvalidBody { kind: &'static str, detail: String },
    #[error(
        "observation time {value} at {path:?} is neither RFC 3339 nor Unix seconds/milliseconds"
    )]
    BadTime { path: String, value: String },
    #[error("message id field {path:?} is missing")]
    MissingId { path: String },
}

impl MapError {
    pub fn reason(&self) -> &'static str {
        match self {
            MapError::NotJson(_) => "not_json",
            MapError::NotObject => "not_object",
            MapError::MissingField { .. } => "missing_field",
            MapError::InvalidBody { .. } => "invalid_body",
            MapError::BadTime { .. } => "bad_time",
            MapError::MissingId { .. } => "missing_id",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub body: Body,
    pub observed_at: Option<DateTime<Utc>>,
    pub message_id: Option<String>,
}

/// Body fields per kind: what the mapping looks for. Fields marked required make a clear
/// "missing" error instead of a serde message.
fn fields_of(kind: EventClass) -> &'static [(&'static str, Numeric, bool)] {
    use Numeric::*;
    match kind {
        EventClass::Seal => &[
            ("seal_id", Text, true),
            ("state", No, true),
            ("battery_pct", Number, false),
            ("device_id", Text, false),
        ],
        EventClass::Position => &[
            ("device_id", Text, true),
            ("lat", Number, true),
            ("lon", Number, true),
            ("speed_kmh", Number, false),
            ("course", Number, false),
            ("fix", No, true),
            ("altitude_m", Number, false),
            ("satellites", Number, false),
            ("hdop", Number, false),
        ],
        EventClass::Gate => &[
            ("lane", Text, true),
            ("direction", No, true),
            ("plate", Text, false),
            ("confidence", Number, false),
            ("image_ref", Text, false),
        ],
        EventClass::Weight => &[
            ("kg", Number, true),
            ("stable", No, true),
            ("tare_kg", Number, false),
            ("device_id", Text, false),
        ],
        EventClass::DeviceStatus => &[
            ("device_id", Text, true),
            ("online", No, false),
            ("battery_pct", Number, false),
            ("gnss_fix", No, false),
            ("detail", No, false),
        ],
        EventClass::Alarm => &[
            ("device_id", Text, true),
            ("alarms", No, true),
            ("raw", Number, false),
            ("lat", Number, false),
            ("lon", Number, false),
        ],
        EventClass::Raw | EventClass::Gap => &[],
    }
}

/// How a field's value is coerced: devices often send numbers as strings and ids as numbers.
#[derive(Clone, Copy)]
enum Numeric {
    Number,
    Text,
    No,
}

/// The body fields a kind accepts, for config validation.
pub fn known_fields(kind: EventClass) -> Vec<&'static str> {
    fields_of(kind).iter().map(|f| f.0).collect()
}

pub fn map(topic: &str, payload: &[u8], m: &TopicMapping) -> Result<Mapped, MapError> {
    let doc: Value =
        serde_json::from_slice(payload).map_err(|e| MapError::NotJson(e.to_string()))?;
    let message_id = match &m.id_field {
        Some(path) => Some(
            lookup(&doc, path)
                .filter(|v| !v.is_null())
                .map(scalar_text)
                .ok_or_else(|| MapError::MissingId { path: path.clone() })?,
        ),
        None => None,
    };
    let observed_at = match &m.observed_at_field {
        Some(path) => match lookup(&doc, path) {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_time(v).ok_or_else(|| MapError::BadTime {
                path: path.clone(),
                value: v.to_string(),
            })?),
        },
        None => None,
    };

    let body = if m.kind == EventClass::Raw {
        Body::Raw { payload: doc }
    } else {
        if !doc.is_object() {
            return Err(MapError::NotObject);
        }
        let mut obj = Map::new();
        for &(field, numeric, required) in fields_of(m.kind) {
            let path = m.fields.get(field).map(String::as_str).unwrap_or(field);
            let found = if let Some(c) = m.constants.get(field) {
                Some(c.clone())
            } else if let Some(level) = topic_level(path) {
                topic
                    .split('/')
                    .nth(level)
                    .map(|s| Value::String(s.to_string()))
            } else {
                lookup(&doc, path).filter(|v| !v.is_null()).cloned()
            };
            let Some(mut v) = found else {
                if required {
                    return Err(MapError::MissingField {
                        field: field.to_string(),
                        path: path.to_string(),
                    });
                }
                continue;
            };
            if let Some(table) = m.values.get(field) {
                if let Some(mapped) = table.get(&scalar_text(&v)) {
                    v = mapped.clone();
                }
            }
            obj.insert(field.to_string(), coerce(v, numeric));
        }
        obj.insert("kind".into(), Value::String(m.kind.as_str().to_string()));
        serde_json::from_value(Value::Object(obj)).map_err(|e| MapError::InvalidBody {
            kind: m.kind.as_str(),
            detail: e.to_string(),
        })?
    };
    Ok(Mapped {
        body,
        observed_at,
        message_id,
    })
}

fn topic_level(path: &str) -> Option<usize> {
    path.strip_prefix("$topic[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, part| match v {
        Value::Object(o) => o.get(part),
        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn coerce(v: Value, numeric: Numeric) -> Value {
    match (numeric, v) {
        (Numeric::Number, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(n) => serde_json::Number::from_f64(n)
                .map(Value::Number)
                .unwrap_or(Value::String(s)),
            Err(_) => Value::String(s),
        },
        (Numeric::Text, Value::Number(n)) => Value::String(n.to_string()),
        (_, v) => v,
    }
}

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .or_else(|| s.parse::<f64>().ok().and_then(epoch)),
        Value::Number(n) => n.as_f64().and_then(epoch),
        _ => None,
    }
}

/// Unix time in seconds or milliseconds: values past 10^11 (the year 5138 in seconds) are
/// milliseconds, which is how devices that send either can be told apart.
fn epoch(x: f64) -> Option<DateTime<Utc>> {
    if !x.is_finite() || x < 0.0 {
        return None;
    }
    let ms = if x > 1e11 { x } else { x * 1000.0 };
    Utc.timestamp_millis_opt(ms as i64).single()
}

#[cfg(test)]
mod tests {
    use super::*;
    use qyt_proto::{Direction, SealState};

    fn mapping(toml_src: &str) -> TopicMapping {
        toml::from_str(toml_src).unwrap()
    }

    #[test]
    fn maps_a_vendor_seal_message() {
        let m = mapping(
            r#"
filter = "locks/+/event"
kind = "seal"
id_field = "msg.id"
observed_at_field = "ts"
[fields]
seal_id = "lockNo"
state = "st"
battery_pct = "bat"
device_id = "$topic[1]"
[values.state]
"0" = "sealed"
"1" = "opened"
"#,
        );
        let out = map(
            "locks/EL-9/event",
            br#"{"lockNo":"CN2024001","st":1,"bat":"87.5","ts":1700000000123,"msg":{"id":42}}"#,
            &m,
        )
        .unwrap();
        let Body::Seal(s) = out.body else { panic!() };
        assert_eq!(s.seal_id.0, "CN2024001");
        assert_eq!(s.state, SealState::Opened);
        assert_eq!(s.battery_pct, Some(87.5));
        assert_eq!(s.device_id.as_deref(), Some("EL-9"));
        assert_eq!(out.message_id.as_deref(), Some("42"));
        assert_eq!(
            out.observed_at.unwrap().timestamp_millis(),
            1_700_000_000_123
        );
    }

    #[test]
    fn same_named_fields_and_constants_need_no_mapping() {
        let m = mapping("filter = \"cam/#\"\nkind = \"gate\"\n[constants]\nlane = \"3\"\n");
        let out = map(
            "cam/1",
            br#"{"direction":"in","plate":"\u82cfE12345","confidence":0.97}"#,
            &m,
        )
        .unwrap();
        let Body::Gate(g) = out.body else { panic!() };
        assert_eq!((g.lane.as_str(), g.direction), ("3", Direction::In));
        assert_eq!(out.observed_at, None);
    }

    #[test]
    fn errors_are_typed() {
        let m = mapping("filter = \"x\"\nkind = \"seal\"\nid_field = \"id\"\n");
        let reason = |p: &[u8]| map("x", p, &m).unwrap_err().reason();
        assert_eq!(reason(b"{not json"), "not_json");
        assert_eq!(reason(br#"{"seal_id":"a","state":"sealed"}"#), "missing_id");
        assert_eq!(reason(br#"{"id":1,"state":"sealed"}"#), "missing_field");
        assert_eq!(
            reason(br#"{"id":1,"seal_id":"a","state":"exploded"}"#),
            "invalid_body"
        );
        assert_eq!(reason(br#"[1,2]"#), "missing_id");
        let m = mapping("filter = \"x\"\nkind = \"seal\"\nobserved_at_field = \"t\"\n");
        assert_eq!(
            map("x", br#"{"t":"yesterday"}"#, &m).unwrap_err().reason(),
            "bad_time"
        );
    }

    #[test]
    fn raw_keeps_the_whole_payload() {
        let m = mapping("filter = \"x\"\nkind = \"raw\"\n");
        let out = map("x", br#"[1,{"a":2}]"#, &m).unwrap();
        assert_eq!(
            out.body,
            Body::Raw {
                payload: serde_json::json!([1, {"a": 2}])
            }
        );
    }
}
