//! A GNSS receiver on a truck near the checkpoint, as a `serial` source with
//! `protocol = "nmea"` reads it: per fix RMC, VTG and GGA (or, with `--no-rmc`, GGA and ZDA, as
//! receivers set up for position and time only send), checksummed, CR LF, positions to 1e-5
//! minute (2 cm, as u-blox receivers give them).

use super::{next_second, period_of, serve_serial, SerialDevice, SerialLabel, Truck};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct NmeaArgs {
    #[command(flatten)]
    pub output: super::SerialOut,
    /// Fixes per second (receivers do 1 to 10).
    #[arg(long, value_name = "HZ", default_value_t = 1.0)]
    pub rate: f64,
    /// Stop after N fixes (default: until Ctrl-C; 300 with --out).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Talker id: GP (a GPS receiver) or GN (a multi-constellation one).
    #[arg(long, value_enum, ignore_case = true, default_value = "GP")]
    pub talker: Talker,
    /// Send GGA and ZDA instead of RMC, VTG and GGA.
    #[arg(long)]
    pub no_rmc: bool,
    /// The same seed gives the same drive.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Talker {
    #[value(name = "GP")]
    Gp,
    #[value(name = "GN")]
    Gn,
}

impl Talker {
    fn id(self) -> &'static str {
        match self {
            Talker::Gp => "GP",
            Talker::Gn => "GN",
        }
    }

    /// Satellites in use: a GPS-only receiver sees fewer than one using every constellation.
    fn satellites(self) -> std::ops::RangeInclusive<u8> {
        match self {
            Talker::Gp => 7..=12,
            Talker::Gn => 14..=24,
        }
    }
}

/// Fastest rate accepted: beyond 10 Hz, 9600 baud no longer carries a full cycle.
const MAX_RATE_HZ: f64 = 10.0;
const KNOT_KMH: f64 = 1.852;
/// Geoid separation around Shanghai, metres.
const GEOID_M: f64 = 9.8;

pub fn run(args: NmeaArgs) -> anyhow::Result<()> {
    let period = period_of(args.rate, MAX_RATE_HZ)?;
    let first = next_second(Utc::now());
    let receiver = GnssReceiver::new(first, period, args.talker, !args.no_rmc, args.seed);
    let sentences = if args.no_rmc {
        "GGA+ZDA"
    } else {
        "RMC+VTG+GGA"
    };
    let label = SerialLabel {
        device: format!(
            "GNSS receiver (NMEA 0183, {}{sentences}, {} Hz)",
            args.talker.id(),
            args.rate
        ),
        protocol: "nmea",
        unit: "fixes",
    };
    serve_serial(&args.output, args.count, receiver, first, &label)
}

/// A receiver's fix, as its sentences state it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GnssFix {
    pub at: DateTime<Utc>,
    /// Degrees, as encoded (to 1e-5 minute).
    pub lat: f64,
    pub lon: f64,
    pub speed_kmh: f64,
    pub course: f64,
    pub satellites: u8,
}

/// The receiver: one fix cycle per period, the first at `first`.
#[derive(Debug, Clone)]
pub struct GnssReceiver {
    truck: Truck,
    rng: StdRng,
    at: DateTime<Utc>,
    period: Duration,
    talker: Talker,
    rmc: bool,
    satellites: u8,
}

impl GnssReceiver {
    pub fn new(
        first: DateTime<Utc>,
        period: Duration,
        talker: Talker,
        rmc: bool,
        seed: u64,
    ) -> GnssReceiver {
        let mut rng = StdRng::seed_from_u64(seed);
        let truck = Truck::new(super::CHECKPOINT, &mut rng);
        let satellites = rng.random_range(talker.satellites());
        GnssReceiver {
            truck,
            rng,
            at: first,
            period,
            talker,
            rmc,
            satellites,
        }
    }

    /// The next cycle's fix and sentences; the truck then drives on for one period.
    pub fn cycle(&mut self) -> (GnssFix, Vec<u8>) {
        // The time field has hundredths of a second.
        let at = self
            .at
            .duration_trunc(TimeDelta::milliseconds(10))
            .unwrap_or(self.at);
        let (lat, lon) = self.truck.position();
        let (lat_text, lat_hemi, lat) = coordinate(lat, 2, 'N', 'S');
        let (lon_text, lon_hemi, lon) = coordinate(lon, 3, 'E', 'W');
        let position = format!("{lat_text},{lat_hemi},{lon_text},{lon_hemi}");
        let speed_kmh = self.truck.speed_kmh();
        // Rounded as printed, so that 359.96° is sent as 0.0 rather than 360.0.
        let course = ((self.truck.course() * 10.0).round() / 10.0).rem_euclid(360.0);
        let knots = speed_kmh / KNOT_KMH;
        if self.rng.random_bool(0.05) {
            let range = self.talker.satellites();
            let step: i16 = if self.rng.random_bool(0.5) { 1 } else { -1 };
            let n = (i16::from(self.satellites) + step)
                .clamp(i16::from(*range.start()), i16::from(*range.end()));
            self.satellites = u8::try_from(n).unwrap_or(*range.start());
        }
        let hdop = 0.5 + 6.0 / f64::from(self.satellites) + self.rng.random_range(0.0..0.1);
        let altitude = 4.0 + self.rng.random_range(-0.5..0.5);
        let time = format!(
            "{}.{:02}",
            at.format("%H%M%S"),
            at.timestamp_subsec_millis() / 10
        );
        let t = self.talker.id();
        let gga = sentence(&format!(
            "{t}GGA,{time},{position},1,{:02},{hdop:.1},{altitude:.1},M,{GEOID_M:.1},M,,",
            self.satellites
        ));
        let mut out = String::new();
        if self.rmc {
            out.push_str(&sentence(&format!(
                "{t}RMC,{time},A,{position},{knots:.1},{course:.1},{},,,A",
                at.format("%d%m%y")
            )));
            out.push_str(&sentence(&format!(
                "{t}VTG,{course:.1},T,,M,{knots:.1},N,{speed_kmh:.1},K,A"
            )));
            out.push_str(&gga);
        } else {
            out.push_str(&gga);
            out.push_str(&sentence(&format!(
                "{t}ZDA,{time},{},00,00",
                at.format("%d,%m,%Y")
            )));
        }
        let fix = GnssFix {
            at,
            lat,
            lon,
            speed_kmh,
            course,
            satellites: self.satellites,
        };
        self.truck.advance(self.period.as_secs_f64(), &mut self.rng);
        self.at += TimeDelta::from_std(self.period).unwrap_or(TimeDelta::seconds(1));
        (fix, out.into_bytes())
    }
}

impl SerialDevice for GnssReceiver {
    fn period(&self) -> Duration {
        self.period
    }

    fn transmit(&mut self) -> Vec<u8> {
        self.cycle().1
    }
}

/// `$body*hh` CR LF, `hh` the XOR of the body's bytes.
fn sentence(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |s, b| s ^ b);
    format!("${body}*{sum:02X}\r\n")
}

/// `ddmm.mmmmm` (`dddmm.mmmmm` with `width` 3), its hemisphere letter, and the signed degrees
/// the text stands for.
fn coordinate(degrees: f64, width: usize, positive: char, negative: char) -> (String, char, f64) {
    const UNITS_PER_DEGREE: u64 = 60 * 100_000;
    // Integer units of 1e-5 minute: rounding can then never print a minute of 60.
    let units = (degrees.abs() * UNITS_PER_DEGREE as f64).round() as u64;
    let (whole, minutes) = (units / UNITS_PER_DEGREE, units % UNITS_PER_DEGREE);
    let text = format!(
        "{whole:0width$}{:02}.{:05}",
        minutes / 100_000,
        minutes % 100_000
    );
    let value = units as f64 / UNITS_PER_DEGREE as f64;
    if degrees < 0.0 {
        (text, negative, -value)
    } else {
        (text, positive, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::nmea::NmeaDecoder;
    use crate::decode::Output;
    use qyt_proto::{Body, PositionReading};
    use tokio::io::AsyncReadExt;
    use tokio_serial::SerialPortBuilderExt;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    fn positions(out: &Output) -> Vec<(Option<DateTime<Utc>>, PositionReading)> {
        out.events
            .iter()
            .filter_map(|e| match &e.body {
                Body::Position(p) => Some((e.observed_at, p.clone())),
                _ => None,
            })
            .collect()
    }

    /// Decodes `cycles` cycles of `receiver` and checks every position against its fix.
    fn check(mut receiver: GnssReceiver, cycles: usize, with_speed: bool) {
        let mut decoder = NmeaDecoder::new("gnss-1", 1024);
        let now = at("2000-01-01T00:00:00Z");
        let mut out = Output::default();
        let mut fixes = Vec::new();
        for _ in 0..cycles {
            let (fix, bytes) = receiver.cycle();
            let text = String::from_utf8(bytes.clone()).expect("ascii");
            assert!(
                text.ends_with("\r\n") && text.matches('$').count() >= 2,
                "{text}"
            );
            fixes.push(fix);
            let o = decoder.feed(&bytes, now);
            out.events.extend(o.events);
            out.rejected.extend(o.rejected);
        }
        out.events.extend(decoder.finish(now).events);
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        let got = positions(&out);
        assert_eq!(got.len(), cycles);
        for ((observed_at, p), fix) in got.iter().zip(&fixes) {
            assert_eq!(*observed_at, Some(fix.at), "{p:?}");
            assert_eq!(p.device_id, "gnss-1");
            assert!((p.lat - fix.lat).abs() < 1e-9 && (p.lon - fix.lon).abs() < 1e-9);
            assert_eq!(p.fix, qyt_proto::Fix::Fix3d);
            assert_eq!(p.satellites, Some(fix.satellites));
            if with_speed {
                let speed = p.speed_kmh.expect("speed");
                assert!((speed - fix.speed_kmh).abs() < 0.1, "{speed} vs {fix:?}");
                assert!((p.course.expect("course") - fix.course).abs() < 1e-9);
            } else {
                assert_eq!(p.speed_kmh, None);
            }
        }
        // Near the checkpoint, and the truck moved.
        assert!(fixes
            .iter()
            .all(|f| (f.lat - super::super::CHECKPOINT.0).abs() < 0.03));
        assert!(fixes.first().map(|f| (f.lat, f.lon)) != fixes.last().map(|f| (f.lat, f.lon)));
    }

    #[test]
    fn rmc_vtg_gga_cycles_decode_to_the_positions_and_times_sent_across_midnight() {
        let first = at("2025-03-01T23:59:50Z");
        let r = GnssReceiver::new(first, Duration::from_secs(1), Talker::Gp, true, 7);
        check(r, 30, true);
    }

    #[test]
    fn gga_zda_cycles_at_5_hz_from_a_multi_constellation_receiver() {
        let first = at("2025-03-01T10:00:00Z");
        let mut r = GnssReceiver::new(first, Duration::from_millis(200), Talker::Gn, false, 8);
        let (fix, bytes) = r.cycle();
        let text = String::from_utf8(bytes).expect("ascii");
        assert!(
            text.starts_with("$GNGGA,100000.00,")
                && text.contains("$GNZDA,100000.00,01,03,2025,00,00*"),
            "{text}"
        );
        assert!(fix.satellites >= 14);
        assert_eq!(r.cycle().0.at, at("2025-03-01T10:00:00.2Z"));
        check(
            GnssReceiver::new(first, Duration::from_millis(200), Talker::Gn, false, 8),
            50,
            false,
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let first = at("2025-03-01T10:00:00Z");
        let mut a = GnssReceiver::new(first, Duration::from_secs(1), Talker::Gp, true, 1);
        let mut b = GnssReceiver::new(first, Duration::from_secs(1), Talker::Gp, true, 1);
        let mut c = GnssReceiver::new(first, Duration::from_secs(1), Talker::Gp, true, 2);
        let (x, y, z) = (a.transmit(), b.transmit(), c.transmit());
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn coordinates_are_degrees_and_minutes_with_hemispheres() {
        assert_eq!(
            coordinate(31.5, 2, 'N', 'S'),
            ("3130.00000".into(), 'N', 31.5)
        );
        assert_eq!(
            coordinate(-8.25, 3, 'E', 'W'),
            ("00815.00000".into(), 'W', -8.25)
        );
        // 59.999999 minutes round up to the next degree, never to a minute of 60.
        assert_eq!(coordinate(1.0 - 1e-9, 2, 'N', 'S').0, "0100.00000");
        // The standard's own example sentence.
        let gga = "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,";
        assert_eq!(sentence(gga), format!("${gga}*47\r\n"));
    }

    /// The simulator on a real pty, read by path as the serial source reads a port.
    #[tokio::test]
    async fn the_pty_simulator_is_read_through_its_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("gnss0");
        let first = Utc::now();
        let period = Duration::from_millis(100);
        let device = GnssReceiver::new(first, period, Talker::Gp, true, 5);
        let mut expected = device.clone();
        let mut pty = super::super::Pty::open(&link).expect("pty");
        assert_eq!(std::fs::read_link(&link).expect("link"), pty.device());
        let sim = tokio::spawn(async move {
            let report =
                super::super::serve_pty(&mut pty, device, first, Some(6), std::future::pending())
                    .await;
            drop(pty);
            report
        });
        let mut port = tokio_serial::new(link.to_str().expect("utf-8"), 9600)
            .open_native_async()
            .expect("the link opens as a serial port");
        let mut decoder = NmeaDecoder::new("gnss-1", 1024);
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // Until the simulator, done, closes its end.
        loop {
            let read = tokio::time::timeout_at(deadline, port.read(&mut buf))
                .await
                .expect("the simulator sends and ends within the deadline");
            let now = Utc::now();
            let (out, end) = match read {
                Ok(n) if n > 0 => (decoder.feed(&buf[..n], now), false),
                _ => (decoder.finish(now), true),
            };
            assert!(out.rejected.is_empty(), "{:?}", out.rejected);
            got.extend(positions(&out));
            if end {
                break;
            }
        }
        // The last cycle's bytes may still be on their way when the simulator closes.
        assert!((5..=6).contains(&got.len()), "{got:?}");
        for (observed_at, p) in &got {
            let (fix, _) = expected.cycle();
            assert_eq!(*observed_at, Some(fix.at));
            assert!((p.lat - fix.lat).abs() < 1e-9 && (p.lon - fix.lon).abs() < 1e-9);
        }
        let report = sim.await.expect("joined").expect("served");
        assert_eq!(report.sent, 6);
        drop(port);
        assert!(!link.exists(), "the link goes with the simulator");
    }
}
