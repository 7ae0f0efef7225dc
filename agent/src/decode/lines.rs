//! Line-oriented devices (e-seal readers and the like) that send one line per read: either
//! delimiter-separated fields (`CN2024001,L,87`) or one JSON object per line.
//!
//! Both go through the MQTT source's field mapping ([`mapping::map`]), so a line becomes any body
//! the mapping supports and value tables (`"L"` → `"sealed"`) work the same way: a delimited line
//! is first turned into a JSON object of its configured columns.
//!
//! Lines end at CR, LF or CRLF; blank lines are ignored. A line longer than the limit is
//! reported once and discarded up to its end. A partial line when the stream ends is reported
//! as truncated, never decoded: a seal number cut short by an unplugged reader would otherwise
//! become a valid read of the wrong seal.

use super::{Decoded, Output, Rejected};
use crate::sources::mapping::{self, TopicMapping};
use qyt_proto::EventClass;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// How a line is read (`[source.lines]` of a serial source), selected by `format`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum LineFormat {
    Delimited(DelimitedLines),
    Json(JsonLines),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DelimitedLines {
    /// The body each line becomes.
    #[serde(default = "default_kind")]
    pub kind: EventClass,
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Body field → column (0-based). Columns are trimmed; an empty column counts as absent.
    pub fields: BTreeMap<String, usize>,
    /// Column of the device's observation time (RFC 3339 or Unix seconds/milliseconds).
    #[serde(default)]
    pub observed_at: Option<usize>,
    /// Body field → (device value → value to use), as in the MQTT mapping.
    #[serde(default)]
    pub values: BTreeMap<String, BTreeMap<String, Value>>,
    /// Body field → fixed value.
    #[serde(default)]
    pub constants: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonLines {
    #[serde(default = "default_kind")]
    pub kind: EventClass,
    /// Payload path of the device's observation time.
    #[serde(default)]
    pub observed_at_field: Option<String>,
    /// Body field → payload path (dotted), as in the MQTT mapping.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(default)]
    pub values: BTreeMap<String, BTreeMap<String, Value>>,
    #[serde(default)]
    pub constants: BTreeMap<String, Value>,
}

fn default_kind() -> EventClass {
    EventClass::Seal
}
fn default_delimiter() -> String {
    ",".into()
}

/// The key a delimited line's time column gets in the object handed to the mapping; `$` keeps
/// it apart from every body field name.
const OBSERVED_AT_KEY: &str = "$observed_at";

impl LineFormat {
    pub fn kind(&self) -> EventClass {
        match self {
            LineFormat::Delimited(d) => d.kind,
            LineFormat::Json(j) => j.kind,
        }
    }

    /// Problems as (key relative to this table, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let kind = self.kind();
        if kind == EventClass::Gap {
            p.push((
                "kind".into(),
                "gap events are made by the agent, not by devices".into(),
            ));
        }
        let (fields, values, constants): (Vec<&String>, _, _) = match self {
            LineFormat::Delimited(d) => {
                if d.delimiter.is_empty() {
                    p.push(("delimiter".into(), "must not be empty".into()));
                }
                if d.kind == EventClass::Raw {
                    p.push((
                        "kind".into(),
                        "raw keeps a line whole: use format = \"json\"".into(),
                    ));
                } else if d.fields.is_empty() {
                    p.push(("fields".into(), "map at least one field to a column".into()));
                }
                (d.fields.keys().collect(), &d.values, &d.constants)
            }
            LineFormat::Json(j) => (j.fields.keys().collect(), &j.values, &j.constants),
        };
        let known = mapping::known_fields(kind);
        for f in fields
            .into_iter()
            .chain(constants.keys())
            .chain(values.keys())
        {
            if !known.contains(&f.as_str()) {
                p.push((
                    "fields".into(),
                    format!(
                        "{f:?} is not a field of a {} body; known: {}",
                        kind.as_str(),
                        known.join(", ")
                    ),
                ));
            }
        }
        p
    }
}

/// Stream decoder for one device's lines.
#[derive(Debug)]
pub struct LineDecoder {
    mapping: TopicMapping,
    /// Body field → column, for delimited lines; `None` for JSON lines.
    columns: Option<Columns>,
    max_line: usize,
    line: Vec<u8>,
    /// The current line passed `max_line` and was reported: the rest of it is dropped.
    overlong: bool,
}

#[derive(Debug)]
struct Columns {
    delimiter: String,
    fields: BTreeMap<String, usize>,
    observed_at: Option<usize>,
}

impl LineDecoder {
    /// `device_id` fills the body's `device_id` (when the kind has one) unless the format maps
    /// or fixes it: the reader on the line is the device that reported the read.
    pub fn new(format: &LineFormat, device_id: &str, max_line: usize) -> LineDecoder {
        let (mut mapping, columns) = match format {
            LineFormat::Delimited(d) => (
                TopicMapping {
                    filter: String::new(),
                    kind: d.kind,
                    id_field: None,
                    observed_at_field: d.observed_at.map(|_| OBSERVED_AT_KEY.to_string()),
                    // Each field sits under its own name in the object built from the columns.
                    fields: BTreeMap::new(),
                    values: d.values.clone(),
                    constants: d.constants.clone(),
                },
                Some(Columns {
                    delimiter: d.delimiter.clone(),
                    fields: d.fields.clone(),
                    observed_at: d.observed_at,
                }),
            ),
            LineFormat::Json(j) => (
                TopicMapping {
                    filter: String::new(),
                    kind: j.kind,
                    id_field: None,
                    observed_at_field: j.observed_at_field.clone(),
                    fields: j.fields.clone(),
                    values: j.values.clone(),
                    constants: j.constants.clone(),
                },
                None,
            ),
        };
        let mapped_device = mapping.fields.contains_key("device_id")
            || mapping.constants.contains_key("device_id")
            || columns
                .as_ref()
                .is_some_and(|c| c.fields.contains_key("device_id"));
        if !mapped_device && mapping::known_fields(mapping.kind).contains(&"device_id") {
            mapping
                .constants
                .insert("device_id".into(), Value::String(device_id.to_string()));
        }
        LineDecoder {
            mapping,
            columns,
            max_line: max_line.max(1),
            line: Vec::new(),
            overlong: false,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Output {
        let mut out = Output::default();
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                self.end_line(&mut out);
            } else if self.overlong {
                // Dropping the rest of a line already reported.
            } else if self.line.len() >= self.max_line {
                out.rejected.push(Rejected::new(
                    "line_too_long",
                    format!("line longer than {} bytes discarded", self.max_line),
                    &self.line,
                ));
                self.line.clear();
                self.overlong = true;
            } else {
                self.line.push(b);
            }
        }
        out
    }

    /// The stream ended: a partial line is reported as truncated, not decoded.
    pub fn finish(&mut self) -> Output {
        let mut out = Output::default();
        if !self.line.is_empty() && !is_blank(&self.line) {
            out.rejected.push(Rejected::new(
                "truncated",
                "stream ended inside a line",
                &self.line,
            ));
        }
        self.line.clear();
        self.overlong = false;
        out
    }

    fn end_line(&mut self, out: &mut Output) {
        let line = std::mem::take(&mut self.line);
        if !self.overlong && !is_blank(&line) {
            match self.decode(&line) {
                Ok(d) => out.events.push(d),
                Err(r) => out.rejected.push(r),
            }
        }
        self.overlong = false;
        // Keep the allocation (bounded by `max_line`) for the next line.
        self.line = line;
        self.line.clear();
    }

    fn decode(&self, line: &[u8]) -> Result<Decoded, Rejected> {
        let mapped = match &self.columns {
            None => mapping::map("", line, &self.mapping),
            Some(c) => {
                let text = std::str::from_utf8(line)
                    .map_err(|e| Rejected::new("not_utf8", e.to_string(), line))?;
                let cols: Vec<&str> = text.split(c.delimiter.as_str()).map(str::trim).collect();
                let mut obj = Map::new();
                let named = c
                    .fields
                    .iter()
                    .map(|(f, i)| (f.as_str(), *i))
                    .chain(c.observed_at.map(|i| (OBSERVED_AT_KEY, i)));
                for (field, i) in named {
                    if let Some(v) = cols.get(i).filter(|v| !v.is_empty()) {
                        obj.insert(field.to_string(), Value::String((*v).to_string()));
                    }
                }
                let json = Value::Object(obj).to_string();
                mapping::map("", json.as_bytes(), &self.mapping)
            }
        };
        mapped
            .map(|m| Decoded {
                observed_at: m.observed_at,
                body: m.body,
            })
            .map_err(|e| Rejected::new(e.reason(), e.to_string(), line))
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use qyt_proto::{Body, SealState};

    fn format(src: &str) -> LineFormat {
        toml::from_str(src).unwrap()
    }

    fn delimited() -> LineFormat {
        format(
            r#"
format = "delimited"
delimiter = ";"
observed_at = 3
[fields]
seal_id = 0
state = 1
battery_pct = 2
[values.state]
L = "sealed"
O = "opened"
T = "tampered"
"#,
        )
    }

    fn seals(out: &Output) -> Vec<(String, SealState, Option<f64>, Option<String>)> {
        out.events
            .iter()
            .map(|e| match &e.body {
                Body::Seal(s) => (
                    s.seal_id.0.clone(),
                    s.state,
                    s.battery_pct,
                    s.device_id.clone(),
                ),
                other => panic!("not a seal: {other:?}"),
            })
            .collect()
    }

    fn reasons(out: &Output) -> Vec<&'static str> {
        out.rejected.iter().map(|r| r.reason).collect()
    }

    #[test]
    fn delimited_seal_reads() {
        let mut d = LineDecoder::new(&delimited(), "reader-1", 256);
        let out = d.feed(
            b"CN2024001;L;87.5;1700000000\r\n\r\n  \nCN2024002 ; O ;;\nCN2024003;T\rCN2024004;X\n",
        );
        assert_eq!(
            seals(&out),
            vec![
                (
                    "CN2024001".into(),
                    SealState::Sealed,
                    Some(87.5),
                    Some("reader-1".into())
                ),
                (
                    "CN2024002".into(),
                    SealState::Opened,
                    None,
                    Some("reader-1".into())
                ),
                (
                    "CN2024003".into(),
                    SealState::Tampered,
                    None,
                    Some("reader-1".into())
                ),
            ]
        );
        assert_eq!(
            out.events[0].observed_at.unwrap().timestamp(),
            1_700_000_000
        );
        assert_eq!(out.events[1].observed_at, None);
        assert_eq!(reasons(&out), vec!["invalid_body"]);
        assert_eq!(out.rejected[0].sample, b"CN2024004;X");
    }

    #[test]
    fn missing_columns_and_bad_bytes_are_rejected() {
        let mut d = LineDecoder::new(&delimited(), "r", 256);
        let out = d.feed(b"CN1\n\xff\xfe;L\n");
        assert_eq!(reasons(&out), vec!["missing_field", "not_utf8"]);
        assert!(out.events.is_empty());
    }

    #[test]
    fn json_lines_reuse_the_mapping() {
        let f = format(
            r#"
format = "json"
observed_at_field = "ts"
[fields]
seal_id = "lock.no"
state = "st"
device_id = "reader"
[values.state]
"0" = "sealed"
"1" = "opened"
"#,
        );
        let mut d = LineDecoder::new(&f, "ignored", 256);
        let out = d.feed(
            b"{\"lock\":{\"no\":\"CN9\"},\"st\":1,\"reader\":\"R7\",\"ts\":\"2024-05-01T08:00:00Z\"}\n{oops}\n",
        );
        assert_eq!(
            seals(&out),
            vec![("CN9".into(), SealState::Opened, None, Some("R7".into()))]
        );
        assert!(out.events[0].observed_at.is_some());
        assert_eq!(reasons(&out), vec!["not_json"]);
    }

    #[test]
    fn other_kinds_are_configurable() {
        let f = format(
            r#"
format = "delimited"
kind = "weight"
[fields]
kg = 0
stable = 1
[values.stable]
S = true
M = false
"#,
        );
        let mut d = LineDecoder::new(&f, "wb", 64);
        let out = d.feed(b"32540,S\n");
        let Body::Weight(w) = &out.events[0].body else {
            panic!("{out:?}")
        };
        assert_eq!(
            (w.kg, w.stable, w.device_id.as_deref()),
            (32540.0, true, Some("wb"))
        );
    }

    #[test]
    fn overlong_lines_are_discarded_once() {
        let mut d = LineDecoder::new(&delimited(), "r", 16);
        let mut stream = vec![b'A'; 100];
        stream.extend(b"\nCN1;L\n");
        let out = d.feed(&stream);
        assert_eq!(reasons(&out), vec!["line_too_long"]);
        assert_eq!(seals(&out).len(), 1);
        // Exactly the limit is fine.
        let out = d.feed(b"CN0123456789;L;1\n");
        assert_eq!(seals(&out).len(), 1, "{:?}", out.rejected);
    }

    #[test]
    fn partial_line_at_end_is_truncated() {
        let mut d = LineDecoder::new(&delimited(), "r", 64);
        assert!(d.feed(b"CN20;L").events.is_empty());
        assert_eq!(reasons(&d.finish()), vec!["truncated"]);
        assert_eq!(seals(&d.feed(b"CN21;L\n")).len(), 1);
        assert!(d.finish().rejected.is_empty());
    }

    #[test]
    fn validation_names_the_key() {
        let f = format("format = \"delimited\"\ndelimiter = \"\"\n[fields]\nplate = 0\n");
        let keys: Vec<String> = f.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["delimiter", "fields"]);
        assert!(delimited().validate().is_empty());
        let gap = format("format = \"json\"\nkind = \"gap\"\n");
        assert_eq!(gap.validate()[0].0, "kind");
        assert!(toml::from_str::<LineFormat>("format = \"json\"\nbogus = 1\n").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            cut in 1usize..64,
        ) {
            let mut whole = LineDecoder::new(&delimited(), "r", 32);
            let expected = whole.feed(&data);
            let mut d = LineDecoder::new(&delimited(), "r", 32);
            let mut got = Output::default();
            for chunk in data.chunks(cut) {
                let o = d.feed(chunk);
                prop_assert!(d.line.len() <= 32);
                got.events.extend(o.events);
                got.rejected.extend(o.rejected);
            }
            prop_assert_eq!(&got, &expected);
            prop_assert!(got.events.len() + got.rejected.len() <= data.len());
        }
    }
}
