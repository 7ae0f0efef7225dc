//! Pure device-protocol decoders: bytes in, typed event bodies or typed rejections out. No I/O,
//! no clocks (a decoder that needs "now", e.g. to date a time-of-day, takes it as an argument),
//! no panics, bounded memory on any input. Source tasks (serial, TCP) do the I/O around them;
//! `qyt-agent decode` runs them over captured streams; fuzz targets feed them garbage.

pub mod jt808;
pub mod lines;
pub mod nmea;
pub mod toledo;

use chrono::{DateTime, Utc};
use qyt_proto::Body;

/// One reading decoded from a device's bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// When the device observed it (UTC), if the protocol says; else the source uses the time
    /// of reception.
    pub observed_at: Option<DateTime<Utc>>,
    pub body: Body,
}

/// A frame or line the decoder refused. `reason` is a stable, low-cardinality label for metrics
/// (`qyt_agent_decode_errors_total{source,reason}`); `detail` is for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub reason: &'static str,
    pub detail: String,
    /// The first bytes of what was refused (at most [`SAMPLE_LEN`]), for a debug log line.
    pub sample: Vec<u8>,
}

pub const SAMPLE_LEN: usize = 64;

impl Rejected {
    pub fn new(reason: &'static str, detail: impl Into<String>, bytes: &[u8]) -> Rejected {
        Rejected {
            reason,
            detail: detail.into(),
            sample: bytes[..bytes.len().min(SAMPLE_LEN)].to_vec(),
        }
    }
}

/// What feeding bytes to a stream decoder produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub events: Vec<Decoded>,
    pub rejected: Vec<Rejected>,
}
