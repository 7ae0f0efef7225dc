//! `qyt-agent decode`: runs a protocol decoder over a captured byte stream, so an integrator can
//! check a new device's capture before deploying. Events go to `out` as JSON lines, flat:
//! `kind`, `observed_at` (RFC 3339 UTC) and the body's fields, exactly the body the agent would
//! buffer; each rejected frame goes to `err` as one line with its reason.

use crate::decode::jt808::{ReassemblyLimits, Session, SessionConfig};
use crate::decode::lines::{LineDecoder, LineFormat};
use crate::decode::nmea::NmeaDecoder;
use crate::decode::toledo::{ToledoDecoder, ToledoOptions};
use crate::decode::{Decoded, Output, Rejected};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::Value;
use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Nmea,
    Jt808,
    Toledo,
    Lines,
}

/// Longest line or frame accepted when decoding a capture (generous: captures are checked, not
/// protected against).
const MAX_FRAME: usize = 4096;

enum Decoder {
    Nmea(NmeaDecoder),
    Jt808(Box<Session>),
    Toledo(ToledoDecoder),
    Lines(LineDecoder),
}

impl Decoder {
    fn new(protocol: Protocol, device_id: &str, lines: &LineFormat) -> Decoder {
        match protocol {
            Protocol::Nmea => Decoder::Nmea(NmeaDecoder::new(device_id, MAX_FRAME)),
            Protocol::Jt808 => {
                Decoder::Jt808(Box::new(Session::for_capture(Arc::new(SessionConfig {
                    // A capture is decoded without authentication, so no key is needed.
                    auth_secret: Vec::new(),
                    terminals: Default::default(),
                    seal_from_door_bit: false,
                    max_frame_bytes: MAX_FRAME,
                    reassembly: ReassemblyLimits {
                        max_messages: 16,
                        max_bytes: 1 << 20,
                        max_age: TimeDelta::days(365),
                    },
                }))))
            }
            Protocol::Toledo => Decoder::Toledo(ToledoDecoder::new(
                Some(device_id.to_string()),
                &ToledoOptions::default(),
            )),
            Protocol::Lines => Decoder::Lines(LineDecoder::new(lines, device_id, MAX_FRAME)),
        }
    }

    fn feed(&mut self, bytes: &[u8], now: DateTime<Utc>) -> Output {
        match self {
            Decoder::Nmea(d) => d.feed(bytes, now),
            Decoder::Toledo(d) => d.feed(bytes),
            Decoder::Lines(d) => d.feed(bytes),
            Decoder::Jt808(s) => {
                let fed = s.feed(bytes, now);
                let mut out = Output::default();
                for x in fed.exchanges {
                    out.events.extend(x.events.into_iter().map(|k| k.decoded));
                    out.rejected.extend(x.rejected);
                }
                out.rejected.extend(fed.dropped);
                out
            }
        }
    }

    fn finish(&mut self, now: DateTime<Utc>) -> Output {
        match self {
            Decoder::Nmea(d) => d.finish(now),
            Decoder::Toledo(d) => d.finish(),
            Decoder::Lines(d) => d.finish(),
            Decoder::Jt808(_) => Output::default(),
        }
    }
}

/// What a run decoded, for the exit status and the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    pub rejected: u64,
}

/// Decodes `input`: a raw byte stream, or with `hex` one hex-encoded frame per line (the first
/// whitespace-separated token of each line; lines starting with `#` and lines whose first token
/// is not hex, such as a table header, are skipped).
pub fn decode(
    protocol: Protocol,
    hex: bool,
    device_id: &str,
    lines: &LineFormat,
    input: impl Read,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<Counts> {
    let mut decoder = Decoder::new(protocol, device_id, lines);
    let mut counts = Counts::default();
    let now = Utc::now();
    if hex {
        for line in io::BufReader::new(input).lines() {
            let line = line?;
            let token = line.split_whitespace().next().unwrap_or("");
            if token.starts_with('#') {
                continue;
            }
            let Some(bytes) = unhex(token) else { continue };
            emit(decoder.feed(&bytes, now), now, &mut counts, out, err)?;
        }
    } else {
        let mut input = input;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            emit(decoder.feed(&buf[..n], now), now, &mut counts, out, err)?;
        }
    }
    emit(decoder.finish(now), now, &mut counts, out, err)?;
    Ok(counts)
}

fn emit(
    o: Output,
    now: DateTime<Utc>,
    counts: &mut Counts,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<()> {
    for d in o.events {
        counts.events += 1;
        writeln!(out, "{}", event_json(&d, now))?;
    }
    for r in o.rejected {
        counts.rejected += 1;
        writeln!(err, "{}", rejection_line(&r))?;
    }
    Ok(())
}

/// The event as one flat JSON object. Without a device time the agent would stamp the time of
/// reception, and so does this.
pub fn event_json(d: &Decoded, now: DateTime<Utc>) -> Value {
    let mut body = serde_json::to_value(&d.body).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut body {
        let at = d
            .observed_at
            .unwrap_or(now)
            .to_rfc3339_opts(SecondsFormat::AutoSi, true);
        map.insert("observed_at".into(), Value::String(at));
    }
    body
}

fn rejection_line(r: &Rejected) -> String {
    let sample: String = r.sample.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "rejected: {}: {} [{} sample bytes: {sample}]",
        r.reason,
        r.detail,
        r.sample.len()
    )
}

fn unhex(token: &str) -> Option<Vec<u8>> {
    if token.is_empty() || !token.len().is_multiple_of(2) {
        return None;
    }
    (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(protocol: Protocol, hex: bool, input: &[u8]) -> (Vec<Value>, Vec<String>, Counts) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let lines: LineFormat =
            toml::from_str("format = \"delimited\"\n[fields]\nseal_id = 0\nstate = 1\n").unwrap();
        let counts = decode(protocol, hex, "dev-1", &lines, input, &mut out, &mut err).unwrap();
        let events = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let rejected = String::from_utf8(err)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        (events, rejected, counts)
    }

    #[test]
    fn jt808_testdata_frames_decode_and_the_bad_one_is_rejected() {
        let tsv = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/jt808/frames.tsv"
        ))
        .unwrap();
        let (events, rejected, _) = run(Protocol::Jt808, true, &tsv);
        let positions: Vec<&Value> = events.iter().filter(|e| e["kind"] == "position").collect();
        assert!(!positions.is_empty());
        // Row 3 of the testdata: lat 22.375883, lon 113.562653, device time in Beijing time.
        let p = positions
            .iter()
            .find(|p| (p["lat"].as_f64().unwrap() - 22.375883).abs() < 1e-6)
            .unwrap();
        assert!((p["lon"].as_f64().unwrap() - 113.562653).abs() < 1e-6);
        assert!(p["observed_at"].as_str().unwrap().ends_with('Z'), "{p}");
        assert_eq!(
            rejected.iter().filter(|r| r.contains("checksum")).count(),
            1,
            "{rejected:?}"
        );
    }

    #[test]
    fn nmea_capture_yields_dated_positions_with_signed_degrees() {
        let log = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/nmea/bu353s4.log"
        ))
        .unwrap();
        let (events, rejected, counts) = run(Protocol::Nmea, false, &log);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(counts.events as usize, events.len());
        let first = &events[0];
        assert_eq!(first["kind"], "position");
        assert_eq!(first["observed_at"], "2014-12-31T03:07:19Z");
        assert!(
            (first["lat"].as_f64().unwrap() + 37.784788333).abs() < 1e-6,
            "{first}"
        );
        assert!(first["speed_kmh"].as_f64().is_some() && first["course"].as_f64().is_some());
    }

    #[test]
    fn lines_and_garbage() {
        let (events, rejected, _) =
            run(Protocol::Lines, false, b"CN001,sealed\n\nCN002,exploded\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["seal_id"], "CN001");
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        let (events, rejected, _) = run(Protocol::Toledo, false, &[0xff; 300]);
        assert!(events.is_empty() && !rejected.is_empty());
    }
}
