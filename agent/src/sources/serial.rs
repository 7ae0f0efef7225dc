//! The `serial` source: reads one device on a serial line (weighbridge indicator, e-seal reader,
//! GNSS receiver), decodes its bytes with the configured protocol and makes each reading
//! durable.
//!
//! A serial device cannot be asked to resend, so there is nothing to acknowledge: a reading is
//! durable or it is lost, and the source's job is to lose as little as possible and count what
//! it loses.
//!
//! - Unplugged devices: a read error or end of file (a USB adapter pulled out, a pty closed)
//!   closes the port; it is reopened by path with capped exponential backoff and jitter, the
//!   state going `retrying` meanwhile. A partial frame at the break is reported as truncated.
//!   Configure a stable path (`/dev/serial/by-id/…`): a USB adapter plugged back in may come
//!   back under another `ttyUSBn`.
//! - A full buffer: the intake refuses never-drop classes (seals by default) when the buffer is
//!   full. Readings then wait in memory, in order, up to `max_pending`, and are resubmitted
//!   with backoff; meanwhile the port is still read. Once `max_pending` readings wait, the
//!   source stops reading the port: with flow control the device holds its data, without it the
//!   kernel's tty buffer fills and further bytes are lost there, which shows up as garbled
//!   frames in the decode error counts. Readings still waiting when the agent stops are lost
//!   and logged with their number.
//! - Garbage: every rejected frame or line is counted by reason
//!   (`qyt_agent_decode_errors_total`), logged at debug with a hex sample, and at warn at most
//!   once per reason every [`WARN_EVERY`], so that a noisy line cannot flood the log.
//! - `received` counts what the decoder made of the bytes: readings plus rejections. Frames a
//!   decoder passes over by design (Toledo repeats and motion frames, NMEA sentences a position
//!   does not need) are not counted.

use super::{SourceContext, SourceError};
use crate::buffer::intake::{IntakeError, PendingEvent};
use crate::decode::lines::{LineDecoder, LineFormat};
use crate::decode::nmea::NmeaDecoder;
use crate::decode::toledo::{ToledoDecoder, ToledoOptions};
use crate::decode::{Output, Rejected};
use crate::uplink::backoff::Backoff;
use chrono::{DateTime, Utc};
use qyt_proto::SourceState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tracing::{debug, error, info, warn};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSourceConfig {
    pub name: String,
    /// Device path, e.g. `/dev/ttyUSB0`; better a stable one such as `/dev/serial/by-id/…`.
    pub path: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// 5 to 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default)]
    pub parity: Parity,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    #[serde(default)]
    pub flow_control: FlowControl,
    pub protocol: Protocol,
    /// The device id put in readings; default the source's name.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Longest line accepted (`nmea`, `lines`); Toledo frames have a fixed length.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// Options of `protocol = "toledo"`.
    #[serde(default)]
    pub toledo: Option<ToledoOptions>,
    /// How lines are read, for `protocol = "lines"` (required there).
    #[serde(default)]
    pub lines: Option<LineFormat>,
    /// Readings held in memory while the buffer refuses them; beyond, the port is not read.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// NMEA 0183 sentences from a GNSS receiver.
    Nmea,
    /// Toledo continuous output from a weighbridge indicator.
    Toledo,
    /// One reading per line, read as `[source.lines]` says.
    Lines,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Odd,
    Even,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_max_frame() -> usize {
    1024
}
fn default_max_pending() -> usize {
    10_000
}
fn default_reconnect_min_ms() -> u64 {
    200
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}

/// Bounds of `max_frame`: below, an NMEA sentence (82 bytes) may not fit; above, a device
/// without line ends could hold that much memory per source.
const MAX_FRAME_RANGE: std::ops::RangeInclusive<usize> = 16..=65_536;
/// Most readings per submission.
const MAX_BATCH: usize = 256;
const READ_CHUNK: usize = 4096;
/// Rejections of one reason are logged at warn at most this often (all are counted).
pub const WARN_EVERY: Duration = Duration::from_secs(10);

impl SerialSourceConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.path.is_empty() {
            p.push(("path".into(), "must not be empty".into()));
        }
        if self.baud == 0 {
            p.push(("baud".into(), "must be at least 1".into()));
        }
        if !(5..=8).contains(&self.data_bits) {
            p.push(("data_bits".into(), "must be 5, 6, 7 or 8".into()));
        }
        if !(1..=2).contains(&self.stop_bits) {
            p.push(("stop_bits".into(), "must be 1 or 2".into()));
        }
        if !MAX_FRAME_RANGE.contains(&self.max_frame) {
            p.push((
                "max_frame".into(),
                format!(
                    "must be between {} and {} bytes",
                    MAX_FRAME_RANGE.start(),
                    MAX_FRAME_RANGE.end()
                ),
            ));
        }
        if self.max_pending == 0 {
            p.push(("max_pending".into(), "must be at least 1".into()));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            p.push((
                "reconnect_min_ms".into(),
                "must be at least 1 and at most reconnect_max_ms".into(),
            ));
        }
        if self.device_id.as_deref() == Some("") {
            p.push(("device_id".into(), "must not be empty".into()));
        }
        match (&self.lines, self.protocol) {
            (None, Protocol::Lines) => p.push((
                "lines".into(),
                "protocol = \"lines\" needs a [source.lines] table".into(),
            )),
            (Some(_), Protocol::Nmea | Protocol::Toledo) => {
                p.push(("lines".into(), "only used with protocol = \"lines\"".into()))
            }
            (Some(l), Protocol::Lines) => p.extend(
                l.validate()
                    .into_iter()
                    .map(|(k, m)| (format!("lines.{k}"), m)),
            ),
            (None, _) => {}
        }
        if self.toledo.is_some() && self.protocol != Protocol::Toledo {
            p.push((
                "toledo".into(),
                "only used with protocol = \"toledo\"".into(),
            ));
        }
        p
    }

    fn device_id(&self) -> String {
        self.device_id.clone().unwrap_or_else(|| self.name.clone())
    }
}

/// The configured protocol's stream decoder; a new one for every opening of the port, since
/// what was buffered before a break belongs to no frame after it.
enum Decoder {
    Nmea(NmeaDecoder),
    Toledo(ToledoDecoder),
    Lines(LineDecoder),
}

impl Decoder {
    /// `None` for `protocol = "lines"` without its format, which `validate` refuses.
    fn new(cfg: &SerialSourceConfig) -> Option<Decoder> {
        let device_id = cfg.device_id();
        Some(match cfg.protocol {
            Protocol::Nmea => Decoder::Nmea(NmeaDecoder::new(device_id, cfg.max_frame)),
            Protocol::Toledo => Decoder::Toledo(ToledoDecoder::new(
                Some(device_id),
                &cfg.toledo.clone().unwrap_or_default(),
            )),
            Protocol::Lines => Decoder::Lines(LineDecoder::new(
                cfg.lines.as_ref()?,
                &device_id,
                cfg.max_frame,
            )),
        })
    }

    fn feed(&mut self, bytes: &[u8], now: DateTime<Utc>) -> Output {
        match self {
            Decoder::Nmea(d) => d.feed(bytes, now),
            Decoder::Toledo(d) => d.feed(bytes),
            Decoder::Lines(d) => d.feed(bytes),
        }
    }

    fn finish(&mut self, now: DateTime<Utc>) -> Output {
        match self {
            Decoder::Nmea(d) => d.finish(now),
            Decoder::Toledo(d) => d.finish(),
            Decoder::Lines(d) => d.finish(),
        }
    }
}

pub async fn run(cfg: SerialSourceConfig, ctx: SourceContext) -> Result<(), SourceError> {
    if Decoder::new(&cfg).is_none() {
        let problem = "protocol = \"lines\" without a [source.lines] table".to_string();
        error!(source = %ctx.name, "{problem}; the source does not start");
        ctx.metrics.set_state(SourceState::Stopped, Some(problem));
        return Ok(());
    }
    let (tx, rx) = mpsc::channel(cfg.max_pending.max(1));
    let reader = read_port(cfg, ctx.clone(), tx);
    let submitter = submit(ctx, rx);
    tokio::pin!(reader, submitter);
    // The reader ends at shutdown, dropping its sender; the submitter then stores what is still
    // queued and ends. A fatal intake error ends the submitter first, and the reader with it.
    tokio::select! {
        result = &mut submitter => return result,
        () = &mut reader => {}
    }
    submitter.await
}

/// Why reading a port stopped.
enum Stop {
    /// The agent is stopping, or the submitter has ended.
    Done,
    /// The port failed; reopen it.
    Failed(String),
}

async fn read_port(cfg: SerialSourceConfig, ctx: SourceContext, tx: mpsc::Sender<PendingEvent>) {
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = Backoff::new(
        Duration::from_millis(cfg.reconnect_min_ms),
        Duration::from_millis(cfg.reconnect_max_ms),
    );
    let mut warnings = Warnings::default();
    loop {
        if ctx.shutdown.is_set() {
            return;
        }
        let failure = match open(&cfg) {
            Err(e) => format!("cannot open {}: {e}", cfg.path),
            Ok(port) => {
                info!(source = %ctx.name, path = %cfg.path, "serial port open");
                ctx.metrics.set_state(SourceState::Connected, None);
                let Some(decoder) = Decoder::new(&cfg) else {
                    return;
                };
                let mut reading = Reading {
                    ctx: &ctx,
                    tx: &tx,
                    decoder,
                    warnings: &mut warnings,
                };
                match reading.pump(port, &mut backoff).await {
                    Stop::Done => return,
                    Stop::Failed(e) => e,
                }
            }
        };
        let delay = backoff.next_delay(&mut rand::rng());
        warn!(source = %ctx.name, path = %cfg.path, error = %failure, retry_in_ms = delay.as_millis() as u64, "serial port unavailable");
        ctx.metrics.set_state(SourceState::Retrying, Some(failure));
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn open(cfg: &SerialSourceConfig) -> Result<SerialStream, tokio_serial::Error> {
    let data_bits = match cfg.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let parity = match cfg.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::Even => tokio_serial::Parity::Even,
    };
    let stop_bits = match cfg.stop_bits {
        2 => tokio_serial::StopBits::Two,
        _ => tokio_serial::StopBits::One,
    };
    let flow_control = match cfg.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Software => tokio_serial::FlowControl::Software,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
    };
    // Exclusive (the builder's default): a second reader of the same port would take bytes
    // out of the middle of this one's frames.
    tokio_serial::new(&cfg.path, cfg.baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(flow_control)
        .open_native_async()
}

/// One opening of the port.
struct Reading<'a> {
    ctx: &'a SourceContext,
    tx: &'a mpsc::Sender<PendingEvent>,
    decoder: Decoder,
    warnings: &'a mut Warnings,
}

impl Reading<'_> {
    async fn pump(&mut self, mut port: SerialStream, backoff: &mut Backoff) -> Stop {
        let mut shutdown = self.ctx.shutdown.clone();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            // `read` is cancel safe: stopping while waiting loses no byte already read.
            let read = tokio::select! {
                _ = shutdown.wait() => return Stop::Done,
                r = port.read(&mut buf) => r,
            };
            let now = Utc::now();
            let (out, failure) = match read {
                Ok(0) => (
                    self.decoder.finish(now),
                    Some("the device hung up (end of file)".to_string()),
                ),
                Ok(n) => {
                    // Only bytes prove the device is back: a port that opens and fails at once
                    // keeps backing off.
                    backoff.reset();
                    (self.decoder.feed(&buf[..n], now), None)
                }
                Err(e) => (self.decoder.finish(now), Some(format!("read failed: {e}"))),
            };
            if !self.deliver(out, now).await {
                return Stop::Done;
            }
            if let Some(f) = failure {
                return Stop::Failed(f);
            }
        }
    }

    /// Counts and logs rejections and queues the readings; false once the submitter has ended.
    async fn deliver(&mut self, out: Output, now: DateTime<Utc>) -> bool {
        let m = &self.ctx.metrics;
        m.received
            .fetch_add((out.events.len() + out.rejected.len()) as u64, Relaxed);
        for r in &out.rejected {
            m.decode_error(r.reason);
            self.warnings.rejected(&self.ctx.name, r);
        }
        for d in out.events {
            let ev = PendingEvent {
                observed_at: d.observed_at.unwrap_or(now),
                received_at: now,
                source: self.ctx.name.clone(),
                body: d.body,
                // A serial device never resends, so there are no redeliveries to recognise.
                dedup_key: None,
            };
            if self.tx.send(ev).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Submits queued readings in order, in batches, until the reader has ended and the queue is
/// empty; while the buffer refuses them, retries with backoff.
async fn submit(
    ctx: SourceContext,
    mut rx: mpsc::Receiver<PendingEvent>,
) -> Result<(), SourceError> {
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut refusals: u32 = 0;
    let mut batch: Vec<PendingEvent> = Vec::new();
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(ev) => batch.push(ev),
                None => return Ok(()),
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        match ctx.intake.submit(batch.clone()).await {
            Ok(_) => {
                batch.clear();
                if refusals > 0 {
                    info!(source = %ctx.name, refusals, "buffer has room again; held readings stored");
                    refusals = 0;
                    backoff.reset();
                }
            }
            Err(IntakeError::Full { class }) => {
                refusals = refusals.saturating_add(1);
                if ctx.shutdown.is_set() {
                    rx.close();
                    let mut lost = batch.len();
                    while rx.try_recv().is_ok() {
                        lost += 1;
                    }
                    warn!(source = %ctx.name, lost, "stopping with the buffer full: held readings were not stored");
                    return Ok(());
                }
                if refusals == 1 {
                    warn!(source = %ctx.name, class = class.as_str(), "buffer full: holding readings in memory (the port is no longer read once max_pending are held)");
                }
                let delay = backoff.next_delay(&mut rand::rng());
                tokio::select! {
                    _ = shutdown.wait() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(IntakeError::Closed) => {
                return Err(SourceError::IntakeClosed {
                    source_name: ctx.name.to_string(),
                })
            }
            Err(IntakeError::Storage(detail)) => {
                return Err(SourceError::Storage {
                    source_name: ctx.name.to_string(),
                    detail,
                })
            }
        }
    }
}

/// Per-reason warn-log limiter: when each reason was last logged, and how many were not since.
#[derive(Default)]
struct Warnings {
    last: BTreeMap<&'static str, (Instant, u64)>,
}

impl Warnings {
    fn rejected(&mut self, source: &str, r: &Rejected) {
        debug!(source, reason = r.reason, sample = %hex(&r.sample), "rejected device bytes");
        let now = Instant::now();
        if let Some((at, quiet)) = self.last.get_mut(r.reason) {
            if now.duration_since(*at) < WARN_EVERY {
                *quiet += 1;
                return;
            }
        }
        let not_logged = self.last.insert(r.reason, (now, 0)).map_or(0, |(_, q)| q);
        warn!(source, reason = r.reason, detail = %r.detail, not_logged, "device data rejected");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::intake::{Intake, IntakeConfig, IntakeJoin};
    use crate::buffer::{Engine, IntakeStore};
    use crate::metrics::{Metrics, SourceMetrics};
    use crate::sources::Shutdown;
    use qyt_proto::{Body, Event, SealState, Seq, SiteId};
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::FromRawFd;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    /// A real pseudo-terminal: the test is the device on the master side; the source opens the
    /// slave by path, as it would open `/dev/ttyUSB0`.
    struct Pty {
        master: File,
        /// Held so that the slave side exists before the source opens it.
        _slave: File,
        path: PathBuf,
    }

    fn pty() -> Pty {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the given ints; the null name, termios and
        // window size pointers are documented as allowed.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        let path = std::fs::read_link(format!("/proc/self/fd/{slave}")).expect("slave path");
        // SAFETY: both descriptors were just opened by openpty and are owned by nothing else.
        let (master, slave) = unsafe { (File::from_raw_fd(master), File::from_raw_fd(slave)) };
        Pty {
            master,
            _slave: slave,
            path,
        }
    }

    /// Points `link` at the pty's slave, replacing whatever it pointed at.
    fn plug(link: &Path, pty: &Pty) {
        let tmp = link.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&pty.path, &tmp).expect("symlink");
        std::fs::rename(&tmp, link).expect("repoint symlink");
    }

    struct Harness {
        _dir: tempfile::TempDir,
        link: PathBuf,
        buffer: Arc<dyn IntakeStore>,
        metrics: Arc<Metrics>,
        source: Arc<SourceMetrics>,
        stop: tokio::sync::watch::Sender<bool>,
        task: tokio::task::JoinHandle<Result<(), SourceError>>,
        join: IntakeJoin,
    }

    /// A real intake over redb in a tempdir and the source running with `cfg_toml` (its `path`
    /// is the symlink `link` in the tempdir).
    fn start(cfg_toml: &str) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("ttyDEV");
        let (buffer, report) =
            crate::buffer::open(Engine::Redb, &dir.path().join("buffer")).expect("open buffer");
        let metrics = Metrics::new();
        let (intake, join): (Intake, IntakeJoin) = Intake::start(
            buffer.clone(),
            SiteId::new("test-site").expect("site"),
            IntakeConfig::default(),
            metrics.clone(),
            report,
        )
        .expect("intake");
        let cfg: SerialSourceConfig = toml::from_str(&format!(
            "name = \"dev\"\npath = {:?}\nreconnect_min_ms = 20\nreconnect_max_ms = 200\n{cfg_toml}",
            link.to_str().expect("utf-8 path")
        ))
        .expect("config");
        assert_eq!(cfg.validate(), vec![]);
        let (stop, shutdown) = Shutdown::new();
        let source = metrics.source("dev");
        let ctx = SourceContext {
            site: SiteId::new("test-site").expect("site"),
            name: Arc::from("dev"),
            intake,
            metrics: source.clone(),
            shutdown,
        };
        let task = tokio::spawn(run(cfg, ctx));
        Harness {
            _dir: dir,
            link,
            buffer,
            metrics,
            source,
            stop,
            task,
            join,
        }
    }

    impl Harness {
        fn events(&self) -> Vec<Event> {
            self.buffer
                .read_from(Seq::ZERO, usize::MAX, usize::MAX)
                .expect("read buffer")
                .into_iter()
                .map(|r| serde_json::from_slice(&r.payload).expect("an event"))
                .collect()
        }

        async fn wait_events(&self, n: usize) -> Vec<Event> {
            wait(&format!("{n} events"), || self.events().len() >= n).await;
            self.events()
        }

        async fn wait_state(&self, state: SourceState) {
            wait(&format!("state {state:?}"), || {
                self.source.health().state == state
            })
            .await;
        }

        fn decode_errors(&self, reason: &str) -> u64 {
            let text = self.metrics.render(0);
            let prefix =
                format!("qyt_agent_decode_errors_total{{source=\"dev\",reason=\"{reason}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .map_or(0, |n| n.parse().expect("a count"))
        }

        async fn stop(self) {
            self.stop.send(true).expect("stop");
            let result = tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .expect("source stops")
                .expect("source task");
            assert!(result.is_ok(), "{result:?}");
            tokio::task::spawn_blocking(move || self.join.join())
                .await
                .expect("intake joins");
        }
    }

    async fn wait(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn toledo_frame(weight: &str, motion: bool) -> Vec<u8> {
        // A: no decimal point, increment x2; B: gross, kg (plus motion); C: plain.
        let b = if motion { 0x38 } else { 0x30 };
        let mut f = vec![0x02, 0x32, b, 0x20];
        f.extend_from_slice(weight.as_bytes());
        f.extend_from_slice(b"000000\r");
        f
    }

    fn kgs(events: &[Event]) -> Vec<f64> {
        events
            .iter()
            .map(|e| match &e.body {
                Body::Weight(w) => {
                    assert_eq!(w.device_id.as_deref(), Some("dev"));
                    w.kg
                }
                other => panic!("not a weight: {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn weighbridge_over_a_pty_survives_unplugging() {
        let h = start("protocol = \"toledo\"\n[toledo]\nchecksum = \"off\"\n");
        let mut dev = pty();
        plug(&h.link, &dev);
        h.wait_state(SourceState::Connected).await;

        // 20 identical stable frames, a truck driving on, 20 stable frames of the loaded scale.
        let mut stream = Vec::new();
        for _ in 0..20 {
            stream.extend(toledo_frame("000000", false));
        }
        for w in ["012000", "031000"] {
            stream.extend(toledo_frame(w, true));
        }
        for _ in 0..20 {
            stream.extend(toledo_frame("032540", false));
        }
        dev.master.write_all(&stream).expect("write");
        let events = h.wait_events(2).await;
        assert_eq!(kgs(&events), vec![0.0, 32540.0]);
        assert_eq!(events[0].source, "dev");

        // A garbled run (wrong baud rate for a moment) is discarded and counted.
        let mut noise: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 251) as u8 | 0x80).collect();
        noise.retain(|b| b & 0x7F != 0x02);
        dev.master.write_all(&noise).expect("write");
        dev.master
            .write_all(&toledo_frame("015000", false))
            .expect("write");
        let events = h.wait_events(3).await;
        assert_eq!(kgs(&events)[2], 15000.0);
        assert!(h.decode_errors("garbage") >= 1);

        // Unplugged: the device goes away and its path with it.
        drop(dev);
        std::fs::remove_file(&h.link).expect("unlink");
        h.wait_state(SourceState::Retrying).await;
        assert!(h.source.health().last_error.is_some());

        // Plugged back in: a new device at the same path.
        let mut dev = pty();
        plug(&h.link, &dev);
        h.wait_state(SourceState::Connected).await;
        dev.master
            .write_all(&toledo_frame("020000", false))
            .expect("write");
        let events = h.wait_events(4).await;
        assert_eq!(kgs(&events), vec![0.0, 32540.0, 15000.0, 20000.0]);
        // Nothing else trickles in: identical frames stay one event.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(h.events().len(), 4);
        drop(dev);
        h.stop().await;
    }

    #[tokio::test]
    async fn seal_reader_lines_over_a_pty() {
        let h = start(
            r#"protocol = "lines"
max_frame = 64
[lines]
format = "delimited"
[lines.fields]
seal_id = 0
state = 1
battery_pct = 2
[lines.values.state]
L = "sealed"
O = "opened"
"#,
        );
        let mut dev = pty();
        plug(&h.link, &dev);
        h.wait_state(SourceState::Connected).await;
        let mut stream = b"CN2024001,L,87\r\n\r\n".to_vec();
        stream.extend(vec![b'#'; 500]);
        stream.extend(b"\r\nCN2024002,O\r\nCN2024003,??\r\n");
        dev.master.write_all(&stream).expect("write");
        let events = h.wait_events(2).await;
        let seals: Vec<(String, SealState, Option<String>)> = events
            .iter()
            .map(|e| match &e.body {
                Body::Seal(s) => (s.seal_id.0.clone(), s.state, s.device_id.clone()),
                other => panic!("not a seal: {other:?}"),
            })
            .collect();
        assert_eq!(
            seals,
            vec![
                ("CN2024001".into(), SealState::Sealed, Some("dev".into())),
                ("CN2024002".into(), SealState::Opened, Some("dev".into())),
            ]
        );
        wait("two rejections", || h.source.health().decode_errors == 2).await;
        assert_eq!(h.decode_errors("line_too_long"), 1);
        assert_eq!(h.decode_errors("invalid_body"), 1);
        assert_eq!(h.source.health().received, 4);
        drop(dev);
        h.stop().await;
    }

    fn nmea(body: &str) -> Vec<u8> {
        let sum = body.bytes().fold(0u8, |s, b| s ^ b);
        format!("${body}*{sum:02X}\r\n").into_bytes()
    }

    #[tokio::test]
    async fn gnss_receiver_over_a_pty() {
        let h = start("protocol = \"nmea\"\ndevice_id = \"gnss-7\"\n");
        let mut dev = pty();
        plug(&h.link, &dev);
        h.wait_state(SourceState::Connected).await;
        let mut stream = Vec::new();
        for t in ["123519", "123520", "123521"] {
            stream.extend(nmea(&format!(
                "GPRMC,{t},A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"
            )));
            stream.extend(nmea(&format!(
                "GPGGA,{t},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
            )));
        }
        dev.master.write_all(&stream).expect("write");
        // The last cycle stays open until a sentence with another time (or the end) closes it.
        let events = h.wait_events(2).await;
        let positions: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.body {
                Body::Position(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(positions.len(), 2, "{events:?}");
        for p in positions {
            assert_eq!(p.device_id, "gnss-7");
            assert!((p.lat - 48.1173).abs() < 1e-4 && (p.lon - 11.5166).abs() < 1e-3);
        }
        drop(dev);
        h.stop().await;
    }

    #[test]
    fn config_defaults_and_validation() {
        let cfg: SerialSourceConfig =
            toml::from_str("name = \"wb1\"\npath = \"/dev/ttyUSB0\"\nprotocol = \"toledo\"\n")
                .expect("parses");
        assert_eq!(
            (
                cfg.baud,
                cfg.data_bits,
                cfg.parity,
                cfg.stop_bits,
                cfg.flow_control
            ),
            (9600, 8, Parity::None, 1, FlowControl::None)
        );
        assert_eq!(cfg.device_id(), "wb1");
        assert!(cfg.validate().is_empty());

        let bad: SerialSourceConfig = toml::from_str(
            r#"name = "x"
path = ""
baud = 0
data_bits = 9
stop_bits = 3
protocol = "lines"
max_frame = 4
max_pending = 0
reconnect_min_ms = 500
reconnect_max_ms = 100
device_id = ""
[toledo]
checksum = "on"
"#,
        )
        .expect("parses");
        let keys: Vec<String> = bad.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                "path",
                "baud",
                "data_bits",
                "stop_bits",
                "max_frame",
                "max_pending",
                "reconnect_min_ms",
                "device_id",
                "lines",
                "toledo"
            ]
        );
        let nested: SerialSourceConfig = toml::from_str(
            "name = \"s\"\npath = \"/dev/ttyS1\"\nprotocol = \"lines\"\n[lines]\nformat = \"delimited\"\nkind = \"gap\"\n[lines.fields]\nseal_id = 0\n",
        )
        .expect("parses");
        let keys: Vec<String> = nested.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["lines.kind", "lines.fields"]);
        assert!(toml::from_str::<SerialSourceConfig>(
            "name = \"s\"\npath = \"p\"\nprotocol = \"toledo\"\nspeed = 1\n"
        )
        .is_err());
    }
}
