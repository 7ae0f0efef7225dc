//! `qyt-agent simulate <device>`: the devices at the other end of the agent's sources, to drive
//! each protocol without hardware — for the demo, for trying a config, and for tests.
//!
//! Each device is a pure generator (a struct that makes the device's bytes from its own state,
//! deterministic for a seed) inside a thin I/O shell:
//! - serial devices ([`nmea`], [`toledo`], [`seal_reader`]) write to a pseudo-terminal whose
//!   device is reachable through a symlink (`--pty LINK`), which a `serial` source opens as it
//!   would open `/dev/ttyUSB0`; or, all at once, to a file (`--out FILE`) for `qyt-agent decode`;
//! - [`jt808`] terminals connect to a `jt808_tcp` source;
//! - [`gate`] plate cameras and gate loops publish JSON to the broker an `mqtt` source reads.

pub mod gate;
pub mod jt808;
pub mod nmea;
pub mod seal_reader;
pub mod toledo;

use anyhow::Context;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_serial::{SerialPort, SerialStream};

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    #[command(subcommand)]
    pub device: Device,
}

#[derive(clap::Subcommand, Debug)]
pub enum Device {
    /// A GNSS receiver on a truck near the checkpoint: NMEA 0183 on a serial line.
    Nmea(nmea::NmeaArgs),
    /// A weighbridge indicator's Toledo continuous output: trucks drive on, settle, drive off.
    Toledo(toledo::ToledoArgs),
    /// An e-seal reader sending one line per read (`CN2024000123,sealed,87`).
    SealReader(seal_reader::SealReaderArgs),
    /// JT/T 808 GPS e-locks connecting to a `jt808_tcp` source.
    Jt808(jt808::Jt808Args),
    /// Lane plate cameras and gate loops publishing JSON to an MQTT broker.
    Gate(gate::GateArgs),
}

/// Runs the simulator until its count or duration is reached, or Ctrl-C / SIGTERM.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    match args.device {
        Device::Nmea(a) => nmea::run(a),
        Device::Toledo(a) => toledo::run(a),
        Device::SealReader(a) => seal_reader::run(a),
        Device::Jt808(a) => jt808::run(a),
        Device::Gate(a) => gate::run(a),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

// ---- Serial devices ----

/// Where a serial device's stream goes: exactly one of the two.
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct SerialOut {
    /// Create a pseudo-terminal and make LINK a symlink to its device (e.g. /tmp/gnss0); a
    /// `serial` source with `path = LINK` reads it as it would read a real port.
    #[arg(long, value_name = "LINK")]
    pub pty: Option<PathBuf>,
    /// Write the stream to FILE instead, all at once (a capture for `qyt-agent decode`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Transmissions written to `--out FILE` when no `--count` is given: a file needs an end.
const DEFAULT_FILE_COUNT: u64 = 300;

/// How long a finished pty simulator waits for its reader to take the last bytes: a pty's
/// buffered bytes are lost when the simulator closes it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// A serial device's output, one transmission (a sentence cycle, a frame, a line) at a time.
pub trait SerialDevice {
    /// Time between two transmissions.
    fn period(&self) -> Duration;
    /// The next transmission's bytes.
    fn transmit(&mut self) -> Vec<u8>;
}

/// How a serial device is described to the user.
pub struct SerialLabel {
    /// E.g. "GNSS receiver (NMEA 0183, 1 Hz)".
    pub device: String,
    /// The `protocol` of the serial source that reads it.
    pub protocol: &'static str,
    /// What one transmission is, in the plural: "fixes", "frames", "reads".
    pub unit: &'static str,
}

/// Sends `device`'s stream as `out` says: `count` transmissions (without one: until stopped on
/// a pty, [`DEFAULT_FILE_COUNT`] into a file), the first at `first`.
fn serve_serial<D: SerialDevice>(
    out: &SerialOut,
    count: Option<u64>,
    device: D,
    first: DateTime<Utc>,
    label: &SerialLabel,
) -> anyhow::Result<()> {
    match (&out.pty, &out.out) {
        (None, Some(file)) => {
            let n = count.unwrap_or(DEFAULT_FILE_COUNT);
            write_file(file, device, n)?;
            println!(
                "{}: {n} {} written to {}",
                label.device,
                label.unit,
                file.display()
            );
            Ok(())
        }
        (Some(link), None) => runtime()?.block_on(async {
            let mut pty = Pty::open(link)?;
            println!(
                "{} on {} -> {}",
                label.device,
                link.display(),
                pty.device().display()
            );
            println!(
                "read it with a serial source: path = {:?}, protocol = {:?}",
                link.display().to_string(),
                label.protocol
            );
            let report = serve_pty(&mut pty, device, first, count, interrupted()).await?;
            print!("{}: {} {} sent", label.device, report.sent, label.unit);
            if report.unread > 0 {
                print!(
                    "; {} bytes were still unread when it closed (is anything reading {}?)",
                    report.unread,
                    link.display()
                );
            }
            println!();
            Ok(())
        }),
        _ => anyhow::bail!("give either --pty LINK or --out FILE"),
    }
}

fn write_file<D: SerialDevice>(path: &Path, mut device: D, count: u64) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| {
        format!(
            "cannot create {} (does its directory exist?)",
            path.display()
        )
    })?;
    let mut w = std::io::BufWriter::new(file);
    for _ in 0..count {
        w.write_all(&device.transmit())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A pseudo-terminal whose device is reachable through a symlink; the symlink is removed when
/// this is dropped (unless it was repointed meanwhile).
pub struct Pty {
    master: SerialStream,
    /// Held open so that the device side exists while no reader has it open (and so that the
    /// bytes waiting for a reader can be counted).
    slave: SerialStream,
    device: PathBuf,
    link: PathBuf,
}

impl Pty {
    /// Needs a tokio runtime (the pty is registered with its reactor).
    pub fn open(link: &Path) -> anyhow::Result<Pty> {
        let (master, slave) =
            SerialStream::pair().context("cannot create a pseudo-terminal pair")?;
        let device = PathBuf::from(
            slave
                .name()
                .context("the pseudo-terminal has no device path")?,
        );
        point_symlink(link, &device)?;
        Ok(Pty {
            master,
            slave,
            device,
            link: link.to_path_buf(),
        })
    }

    /// The pty's device, e.g. `/dev/pts/3`.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Bytes written that no reader has taken yet.
    fn unread(&self) -> usize {
        self.slave.bytes_to_read().map_or(0, |n| n as usize)
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if std::fs::read_link(&self.link).is_ok_and(|target| target == self.device) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

/// Makes `link` a symlink to `target`, replacing an existing symlink (a previous run's) in one
/// step, so a source polling the path never sees it missing.
fn point_symlink(link: &Path, target: &Path) -> anyhow::Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(link) {
        if !meta.file_type().is_symlink() {
            anyhow::bail!(
                "{} exists and is not a symlink; remove it or choose another --pty path",
                link.display()
            );
        }
    }
    let mut tmp = link.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .and_then(|()| std::fs::rename(&tmp, link))
        .with_context(|| {
            format!(
                "cannot create the symlink {} (does its directory exist, and may we write there?)",
                link.display()
            )
        })
}

/// What a pty simulator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtyReport {
    pub sent: u64,
    /// Bytes no reader had taken when it stopped.
    pub unread: usize,
}

/// Writes `device`'s transmissions to `pty` at its pace, the first at `first` (wall clock), until
/// `count` are sent or `stop` resolves. While nobody reads the pty its buffer fills and the
/// writes wait, as a device with flow control would. After the last one it waits (at most
/// [`DRAIN_TIMEOUT`]) for the reader to take what is buffered.
pub async fn serve_pty<D: SerialDevice>(
    pty: &mut Pty,
    mut device: D,
    first: DateTime<Utc>,
    count: Option<u64>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<PtyReport> {
    tokio::pin!(stop);
    let wait = (first - Utc::now()).to_std().unwrap_or_default();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + wait, device.period());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    while count.is_none_or(|n| sent < n) {
        tokio::select! {
            () = &mut stop => return Ok(PtyReport { sent, unread: pty.unread() }),
            _ = ticks.tick() => {}
        }
        let bytes = device.transmit();
        tokio::select! {
            () = &mut stop => return Ok(PtyReport { sent, unread: pty.unread() }),
            written = AsyncWriteExt::write_all(&mut pty.master, &bytes) => written
                .with_context(|| format!("cannot write to the pseudo-terminal {}", pty.device.display()))?,
        }
        sent += 1;
    }
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    // A poll before the first look: the last write's bytes reach the reader's side of the pty a
    // moment after the write returns.
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(DRAIN_POLL) => {}
        }
        if pty.unread() == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    Ok(PtyReport {
        sent,
        unread: pty.unread(),
    })
}

/// The next whole second: where receivers put their first fix, and where a stream starts.
fn next_second(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(TimeDelta::seconds(1)).unwrap_or(now) + TimeDelta::seconds(1)
}

/// A rate in Hz as the period between transmissions, within what the device can do.
fn period_of(rate_hz: f64, max_hz: f64) -> anyhow::Result<Duration> {
    if !(rate_hz > 0.0 && rate_hz <= max_hz) {
        anyhow::bail!("--rate must be more than 0 and at most {max_hz} Hz (got {rate_hz})");
    }
    Ok(Duration::from_secs_f64(1.0 / rate_hz))
}

// ---- What the devices share ----

/// The checkpoint the simulated trucks drive around: Waigaoqiao bonded zone, Shanghai, like the
/// `simulate` source.
pub const CHECKPOINT: (f64, f64) = (31.3526, 121.5901);

const M_PER_DEG_LAT: f64 = 111_320.0;
/// Braking and accelerating, m/s².
const TRUCK_ACCEL: f64 = 1.0;

/// A truck driving around a checkpoint: to the gate, a stop there, out to a point 0.8–2 km away,
/// a short stop, back to the gate, and so on. Straight lines, smooth speeds: positions a receiver
/// could report, deterministic for the random generator it is given.
#[derive(Debug, Clone)]
pub struct Truck {
    gate: (f64, f64),
    lat: f64,
    lon: f64,
    course: f64,
    speed_kmh: f64,
    cruise_kmh: f64,
    target: (f64, f64),
    to_gate: bool,
    /// Seconds left to stand still at the target reached.
    dwell_s: f64,
}

impl Truck {
    /// A truck somewhere out from `gate`, heading for it.
    pub fn new(gate: (f64, f64), rng: &mut StdRng) -> Truck {
        let start = around(
            gate,
            rng.random_range(500.0..2000.0),
            rng.random_range(0.0..360.0),
        );
        Truck {
            gate,
            lat: start.0,
            lon: start.1,
            course: bearing(start, gate),
            speed_kmh: 0.0,
            cruise_kmh: rng.random_range(35.0..50.0),
            target: gate,
            to_gate: true,
            dwell_s: 0.0,
        }
    }

    pub fn position(&self) -> (f64, f64) {
        (self.lat, self.lon)
    }

    pub fn speed_kmh(&self) -> f64 {
        self.speed_kmh
    }

    /// Degrees clockwise from north; kept while standing.
    pub fn course(&self) -> f64 {
        self.course
    }

    /// Drives on for `dt` seconds.
    pub fn advance(&mut self, dt: f64, rng: &mut StdRng) {
        let mut left = dt.max(0.0);
        // Each step ends at a stop or at the end of `dt`, so a long `dt` can hold several legs.
        while left > 0.0 {
            if self.dwell_s > 0.0 {
                let wait = self.dwell_s.min(left);
                self.dwell_s -= wait;
                left -= wait;
                if self.dwell_s <= 0.0 {
                    self.next_leg(rng);
                }
                continue;
            }
            let distance = metres((self.lat, self.lon), self.target);
            self.course = bearing((self.lat, self.lon), self.target);
            // Fast enough to stop exactly at the target: v² = 2ad.
            let brake_kmh = (2.0 * TRUCK_ACCEL * distance).sqrt() * 3.6;
            let want = self.cruise_kmh.min(brake_kmh);
            let step = left.min(1.0);
            self.speed_kmh = if want > self.speed_kmh {
                (self.speed_kmh + TRUCK_ACCEL * 3.6 * step).min(want)
            } else {
                want
            };
            let travel = self.speed_kmh / 3.6 * step;
            left -= step;
            if travel >= distance || distance < 0.5 {
                (self.lat, self.lon) = self.target;
                self.speed_kmh = 0.0;
                self.dwell_s = if self.to_gate {
                    rng.random_range(20.0..40.0)
                } else {
                    rng.random_range(5.0..15.0)
                };
            } else {
                (self.lat, self.lon) = around((self.lat, self.lon), travel, self.course);
            }
        }
    }

    fn next_leg(&mut self, rng: &mut StdRng) {
        self.to_gate = !self.to_gate;
        self.target = if self.to_gate {
            self.gate
        } else {
            around(
                self.gate,
                rng.random_range(800.0..2000.0),
                rng.random_range(0.0..360.0),
            )
        };
    }
}

/// Metres between two nearby points (flat earth: the trucks stay within a few km).
fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
    let dy = (b.0 - a.0) * M_PER_DEG_LAT;
    let dx = (b.1 - a.1) * M_PER_DEG_LAT * a.0.to_radians().cos();
    dx.hypot(dy)
}

/// Degrees clockwise from north, from `a` towards `b`.
fn bearing(a: (f64, f64), b: (f64, f64)) -> f64 {
    let dy = b.0 - a.0;
    let dx = (b.1 - a.1) * a.0.to_radians().cos();
    dx.atan2(dy).to_degrees().rem_euclid(360.0)
}

/// The point `m` metres from `p` in direction `course`.
fn around(p: (f64, f64), m: f64, course: f64) -> (f64, f64) {
    let rad = course.to_radians();
    let lat = p.0 + m * rad.cos() / M_PER_DEG_LAT;
    let lon = p.1 + m * rad.sin() / (M_PER_DEG_LAT * p.0.to_radians().cos());
    (lat, lon)
}

const PROVINCES: [&str; 8] = ["沪", "苏", "浙", "皖", "鲁", "粤", "闽", "赣"];
/// Plate letters: I and O are not used on Chinese plates.
const PLATE_LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";

/// A Chinese truck plate, e.g. `沪A12345`.
fn plate(rng: &mut StdRng) -> String {
    let province = PROVINCES[rng.random_range(0..PROVINCES.len())];
    let letter = PLATE_LETTERS[rng.random_range(0..8)] as char;
    format!("{province}{letter}{:05}", rng.random_range(0..100_000u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_truck_shuttles_between_the_gate_and_the_country_at_truck_speeds() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut t = Truck::new(CHECKPOINT, &mut rng);
        let (mut at_gate, mut moving, mut stopped) = (0, 0, 0);
        let mut last = t.position();
        for _ in 0..3600 {
            t.advance(1.0, &mut rng);
            let p = t.position();
            assert!(metres(p, CHECKPOINT) < 2100.0, "{p:?}");
            assert!((0.0..=50.0).contains(&t.speed_kmh()));
            // A second's travel is at most what the reported speed allows.
            assert!(metres(last, p) <= 50.0 / 3.6 + 1e-6);
            if metres(p, CHECKPOINT) < 1.0 && t.speed_kmh() == 0.0 {
                at_gate += 1;
            }
            if t.speed_kmh() > 0.0 {
                moving += 1;
            } else {
                stopped += 1;
            }
            last = p;
        }
        assert!(
            at_gate > 60 && moving > 1800 && stopped > 100,
            "{at_gate} {moving} {stopped}"
        );
    }

    #[test]
    fn geometry_agrees_with_itself() {
        let p = around(CHECKPOINT, 1000.0, 60.0);
        assert!((metres(CHECKPOINT, p) - 1000.0).abs() < 1.0);
        assert!((bearing(CHECKPOINT, p) - 60.0).abs() < 0.1);
    }

    #[test]
    fn a_symlink_is_repointed_but_nothing_else_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("dev0");
        point_symlink(&link, Path::new("/dev/null")).expect("created");
        point_symlink(&link, Path::new("/dev/zero")).expect("repointed");
        assert_eq!(
            std::fs::read_link(&link).expect("link"),
            Path::new("/dev/zero")
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("file");
        let e = point_symlink(&file, Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("not a symlink"), "{e}");
        let e = point_symlink(&dir.path().join("no/such/dir"), Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("does its directory exist"), "{e}");
    }
}
