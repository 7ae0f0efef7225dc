//! An e-seal reader at the lane: one line per read, `seal_id,state,battery` (e.g.
//! `CN2024000123,sealed,87`), CR LF — the default delimited line format of a `serial` source
//! with `protocol = "lines"` (`seal_id = 0`, `state = 1`; add `battery_pct = 2` to keep the
//! battery). States are the agent's own words, so no `values` table is needed.
//!
//! Trucks pass with one or two seals each; the reader reads each seal, now and then twice (a
//! second antenna). Most seals are intact: 2% are found opened, 0.5% tampered.

use super::{next_second, period_of, serve_serial, SerialDevice, SerialLabel};
use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct SealReaderArgs {
    #[command(flatten)]
    pub output: super::SerialOut,
    /// Reads per second.
    #[arg(long, value_name = "HZ", default_value_t = 0.5)]
    pub rate: f64,
    /// Stop after N reads (default: until Ctrl-C; 300 with --out).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// The same seed gives the same seals.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

const MAX_RATE_HZ: f64 = 50.0;
const OPENED_PER_MILLE: u32 = 20;
const TAMPERED_PER_MILLE: u32 = 5;
const REREAD_PER_MILLE: u32 = 100;

pub fn run(args: SealReaderArgs) -> anyhow::Result<()> {
    let period = period_of(args.rate, MAX_RATE_HZ)?;
    let label = SerialLabel {
        device: format!("e-seal reader (delimited lines, {} reads/s)", args.rate),
        protocol: "lines",
        unit: "reads",
    };
    let reader = SealReader::new(period, args.seed);
    serve_serial(
        &args.output,
        args.count,
        reader,
        next_second(Utc::now()),
        &label,
    )
}

/// One read, as the line states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealRead {
    pub seal_id: String,
    /// `sealed`, `opened` or `tampered`.
    pub state: &'static str,
    pub battery_pct: u8,
}

/// The reader, one line at a time.
#[derive(Debug, Clone)]
pub struct SealReader {
    rng: StdRng,
    period: Duration,
    next_seal: u32,
    /// Reads of the truck at the reader, in order.
    queue: VecDeque<SealRead>,
}

impl SealReader {
    pub fn new(period: Duration, seed: u64) -> SealReader {
        let mut rng = StdRng::seed_from_u64(seed);
        let next_seal = rng.random_range(100..900_000);
        SealReader {
            rng,
            period,
            next_seal,
            queue: VecDeque::new(),
        }
    }

    /// The next read and its line.
    pub fn read(&mut self) -> (SealRead, Vec<u8>) {
        if self.queue.is_empty() {
            self.truck_arrives();
        }
        let read = self.queue.pop_front().unwrap_or_else(|| self.seal());
        let line = format!("{},{},{}\r\n", read.seal_id, read.state, read.battery_pct);
        (read, line.into_bytes())
    }

    fn truck_arrives(&mut self) {
        for _ in 0..self.rng.random_range(1..=2) {
            let seal = self.seal();
            if self.rng.random_range(0..1000) < REREAD_PER_MILLE {
                self.queue.push_back(seal.clone());
            }
            self.queue.push_back(seal);
        }
    }

    fn seal(&mut self) -> SealRead {
        let seal_id = format!("CN2024{:06}", self.next_seal % 1_000_000);
        self.next_seal += 1;
        let roll = self.rng.random_range(0..1000);
        let state = if roll < TAMPERED_PER_MILLE {
            "tampered"
        } else if roll < TAMPERED_PER_MILLE + OPENED_PER_MILLE {
            "opened"
        } else {
            "sealed"
        };
        SealRead {
            seal_id,
            state,
            battery_pct: self.rng.random_range(40..=100),
        }
    }
}

impl SerialDevice for SealReader {
    fn period(&self) -> Duration {
        self.period
    }

    fn transmit(&mut self) -> Vec<u8> {
        self.read().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::lines::{LineDecoder, LineFormat};
    use qyt_proto::{Body, SealState};

    /// A decoded seal: id, state, battery.
    type Seal = (String, SealState, Option<f64>);

    /// `reads` lines decoded with `format`, each with the read it states.
    fn decode(format: &str, reads: usize) -> Vec<(SealRead, Seal)> {
        let format: LineFormat = toml::from_str(format).expect("format");
        let mut decoder = LineDecoder::new(&format, "reader-1", 256);
        let mut reader = SealReader::new(Duration::from_secs(1), 4);
        (0..reads)
            .map(|_| {
                let (read, line) = reader.read();
                let out = decoder.feed(&line);
                assert!(out.rejected.is_empty(), "{:?}", out.rejected);
                assert_eq!(out.events.len(), 1);
                let Body::Seal(s) = &out.events[0].body else {
                    panic!("not a seal: {:?}", out.events[0])
                };
                assert_eq!(s.device_id.as_deref(), Some("reader-1"));
                (read, (s.seal_id.0.clone(), s.state, s.battery_pct))
            })
            .collect()
    }

    fn state(s: &str) -> SealState {
        serde_json::from_value(serde_json::Value::String(s.into())).expect("a seal state")
    }

    #[test]
    fn lines_decode_with_the_default_line_format() {
        // As `qyt-agent decode --protocol lines` reads without --lines-format.
        let reads = decode(
            "format = \"delimited\"\n[fields]\nseal_id = 0\nstate = 1\n",
            2000,
        );
        for (read, seal) in &reads {
            assert_eq!(seal, &(read.seal_id.clone(), state(read.state), None));
        }
        let count = |s: &str| reads.iter().filter(|(r, _)| r.state == s).count();
        assert!(count("opened") > 10 && count("tampered") > 0 && count("sealed") > 1800);
        assert!(reads
            .iter()
            .all(|(r, _)| r.seal_id.len() == 12 && r.seal_id.starts_with("CN2024")));
    }

    #[test]
    fn the_battery_column_maps_too() {
        let reads = decode(
            "format = \"delimited\"\n[fields]\nseal_id = 0\nstate = 1\nbattery_pct = 2\n",
            200,
        );
        for (read, seal) in reads {
            let battery = Some(f64::from(read.battery_pct));
            assert_eq!(seal, (read.seal_id, state(read.state), battery));
        }
    }

    #[test]
    fn a_line_is_as_the_reader_sends_it() {
        let mut reader = SealReader::new(Duration::from_secs(2), 1);
        let (read, line) = reader.read();
        assert_eq!(
            String::from_utf8(line).expect("ascii"),
            format!("{},{},{}\r\n", read.seal_id, read.state, read.battery_pct)
        );
        assert_eq!(reader.period(), Duration::from_secs(2));
    }
}
