//! The `jt808_tcp` source: the platform end of JT/T 808 for vehicle terminals and GPS e-locks.
//! It listens on a TCP port, takes many terminal connections at once and runs a pure
//! [`Session`] per connection; the events of what a read brought are made durable in one
//! submission, and only then are the terminal's messages answered.
//!
//! Guarantee: a terminal gets 0x8001 "ok" for a report only once the report's events are
//! durable. A standard terminal keeps an unanswered report and sends it again (its store and
//! forward), so an agent that dies before answering loses nothing. When the buffer refuses
//! events (full of never-drop events) the answer is "failure" (result 1), for the same effect.
//! A report that is sent again after its events were stored (the answer was lost) is
//! recognised by its events' keys (phone, device time, what) for `dedup_window_s`, also across
//! restarts: the keys are stored with the events.
//!
//! Isolation: each connection is its own task with a bounded read buffer, a bounded session
//! and an idle timeout; a slow reader is dropped after a write timeout, a peer that sends
//! nothing readable is dropped after [`MAX_UNREADABLE_BYTES`]. None of them delays another
//! connection except through the shared group commit.

use super::dedup::{key_prefix, DedupWindow};
use super::{SourceContext, SourceError};
use crate::buffer::intake::{IntakeError, PendingEvent};
use crate::decode::jt808::frame::DEFAULT_MAX_FRAME_BYTES;
use crate::decode::jt808::{Exchange, Fed, ReassemblyLimits, Session, SessionConfig};
use crate::decode::Rejected;
use crate::uplink::backoff::Backoff;
use chrono::{DateTime, TimeDelta, Utc};
use qyt_proto::SourceState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, info_span, warn, Instrument, Span};

/// Bytes read at a time per connection: a few frames; what a read brings is one submission.
const READ_BUFFER: usize = 4096;
/// A terminal that does not take its replies within this time is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer that sent this much without one readable frame is not a terminal (a port scanner,
/// a misconfigured device): it is dropped rather than counted forever.
pub const MAX_UNREADABLE_BYTES: usize = 64 * 1024;

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Jt808TcpConfig {
    pub name: String,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Key of the auth codes given to registering terminals: codes are derived from it and the
    /// phone number, not stored, so every agent with the same secret accepts them. Changing it
    /// makes every terminal register again.
    pub auth_secret: String,
    /// Phone numbers allowed to register and authenticate (leading zeros ignored). Empty: any
    /// terminal that can reach the port gets a code, and authentication then only proves that
    /// a connection is the terminal that registered.
    #[serde(default)]
    pub terminals: Vec<String>,
    /// Read status bit 12 ("door locked") as the terminal's own seal (e-locks that report
    /// their shackle there). Off by default: vehicle terminals leave the bit at 0.
    #[serde(default)]
    pub seal_from_door_bit: bool,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (terminals send a heartbeat,
    /// by default every 60 s).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_s: u64,
    /// Longest frame (escaped) accepted; longer runs are discarded up to the next 0x7E.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Long (sub-packaged) messages a connection may have in reassembly at once.
    #[serde(default = "default_subpackage_max_messages")]
    pub subpackage_max_messages: usize,
    /// Bytes a connection may hold for them.
    #[serde(default = "default_subpackage_max_bytes")]
    pub subpackage_max_bytes: usize,
    /// How long a long message may take to arrive whole.
    #[serde(default = "default_subpackage_timeout")]
    pub subpackage_timeout_s: u64,
    /// How long the keys of stored events are remembered to recognise resent reports.
    #[serde(default = "default_dedup_window")]
    pub dedup_window_s: u64,
    /// Most remembered keys (oldest forgotten first); about two per report.
    #[serde(default = "default_dedup_max")]
    pub dedup_max_ids: usize,
}

impl std::fmt::Debug for Jt808TcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jt808TcpConfig")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("auth_secret", &"<redacted>")
            .field("terminals", &self.terminals)
            .field("seal_from_door_bit", &self.seal_from_door_bit)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout_s", &self.idle_timeout_s)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("subpackage_max_messages", &self.subpackage_max_messages)
            .field("subpackage_max_bytes", &self.subpackage_max_bytes)
            .field("subpackage_timeout_s", &self.subpackage_timeout_s)
            .field("dedup_window_s", &self.dedup_window_s)
            .field("dedup_max_ids", &self.dedup_max_ids)
            .finish()
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 6808))
}
fn default_max_connections() -> usize {
    2000
}
fn default_idle_timeout() -> u64 {
    180
}
fn default_max_frame_bytes() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}
fn default_subpackage_max_messages() -> usize {
    4
}
fn default_subpackage_max_bytes() -> usize {
    64 * 1024
}
fn default_subpackage_timeout() -> u64 {
    120
}
fn default_dedup_window() -> u64 {
    3600
}
fn default_dedup_max() -> usize {
    100_000
}

/// Shortest secret accepted: auth codes are only as hard to forge as the secret is to guess.
const MIN_SECRET_LEN: usize = 16;

impl Jt808TcpConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.auth_secret.len() < MIN_SECRET_LEN {
            p.push((
                "auth_secret".into(),
                format!("must be at least {MIN_SECRET_LEN} characters (random, kept secret)"),
            ));
        }
        for (i, t) in self.terminals.iter().enumerate() {
            if t.is_empty() || t.len() > 20 || !t.bytes().all(|c| c.is_ascii_digit()) {
                p.push((
                    format!("terminals[{i}]"),
                    format!("{t:?} is not a phone number (1 to 20 digits)"),
                ));
            }
        }
        if self.max_connections == 0 {
            p.push(("max_connections".into(), "must be at least 1".into()));
        }
        if self.idle_timeout_s == 0 {
            p.push(("idle_timeout_s".into(), "must be at least 1 second".into()));
        }
        if self.max_frame_bytes < 32 {
            p.push((
                "max_frame_bytes".into(),
                format!("must be at least 32 (a frame with a 2019 header takes 19; the default {DEFAULT_MAX_FRAME_BYTES} fits the longest valid frame)"),
            ));
        }
        if self.subpackage_max_messages == 0 {
            p.push((
                "subpackage_max_messages".into(),
                "must be at least 1".into(),
            ));
        }
        if self.subpackage_max_bytes < 1024 {
            p.push((
                "subpackage_max_bytes".into(),
                "must be at least 1024 (one sub-package carries up to 1023 bytes)".into(),
            ));
        }
        if self.subpackage_timeout_s == 0 {
            p.push((
                "subpackage_timeout_s".into(),
                "must be at least 1 second".into(),
            ));
        }
        p
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            auth_secret: self.auth_secret.as_bytes().to_vec(),
            terminals: self
                .terminals
                .iter()
                .map(|t| {
                    let n = t.trim_start_matches('0');
                    if n.is_empty() { "0" } else { n }.to_string()
                })
                .collect::<BTreeSet<_>>(),
            seal_from_door_bit: self.seal_from_door_bit,
            max_frame_bytes: self.max_frame_bytes,
            reassembly: ReassemblyLimits {
                max_messages: self.subpackage_max_messages,
                max_bytes: self.subpackage_max_bytes,
                max_age: TimeDelta::seconds(self.subpackage_timeout_s.min(i64::MAX as u64) as i64),
            },
        }
    }
}

/// What every connection of the source shares.
struct Shared {
    session: Arc<SessionConfig>,
    idle_timeout: Duration,
    /// Keys of stored events (prefixed with the source name), to recognise resent reports
    /// whichever connection they come on. Locked only briefly, never across an await.
    dedup: Mutex<DedupWindow>,
    dedup_prefix: String,
}

impl Shared {
    fn dedup(&self) -> std::sync::MutexGuard<'_, DedupWindow> {
        // A panic while holding it cannot leave the window inconsistent in a way that matters
        // (at worst a key is missing): keep going.
        self.dedup.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub async fn run(cfg: Jt808TcpConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let mut stop = ctx.shutdown.clone();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let listener = loop {
        match TcpListener::bind(cfg.listen).await {
            Ok(l) => break l,
            Err(e) => {
                let delay = backoff.next_delay(&mut rand::rng());
                warn!(source = %ctx.name, listen = %cfg.listen, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot listen for JT/T 808 terminals");
                ctx.metrics.set_state(
                    SourceState::Retrying,
                    Some(format!("listen on {}: {e}", cfg.listen)),
                );
                tokio::select! {
                    _ = stop.wait() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    serve(listener, cfg, ctx).await
}

/// Accepts terminals on `listener` until shutdown, then waits for the open connections to
/// finish the exchange they are in. A storage failure or a closed intake in any connection
/// ends the source (and with it every connection).
pub(crate) async fn serve(
    listener: TcpListener,
    cfg: Jt808TcpConfig,
    ctx: SourceContext,
) -> Result<(), SourceError> {
    let mut dedup = DedupWindow::new(cfg.dedup_window_s as i64 * 1000, cfg.dedup_max_ids);
    let dedup_prefix = key_prefix(&ctx.name);
    let preloaded = ctx
        .preload_dedup(&mut dedup, &dedup_prefix, cfg.dedup_window_s)
        .await?;
    if preloaded > 0 {
        info!(source = %ctx.name, keys = preloaded, "remembering the reports stored before this start");
    }
    let shared = Arc::new(Shared {
        session: Arc::new(cfg.session_config()),
        idle_timeout: Duration::from_secs(cfg.idle_timeout_s),
        dedup: Mutex::new(dedup),
        dedup_prefix,
    });
    let local = listener.local_addr().ok();
    info!(source = %ctx.name, listen = ?local, max_connections = cfg.max_connections, "listening for JT/T 808 terminals");
    ctx.metrics.set_state(SourceState::Connected, None);

    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let mut connections: JoinSet<Result<(), SourceError>> = JoinSet::new();
    let mut stop = ctx.shutdown.clone();
    loop {
        tokio::select! {
            _ = stop.wait() => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                finished(done)?;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        // Closed at once: the terminal retries later, and the connections that
                        // are in keep their share.
                        ctx.metrics.decode_error("too_many_connections");
                        warn!(source = %ctx.name, %peer, max = cfg.max_connections, "connection refused: max_connections reached");
                        continue;
                    };
                    let span = info_span!("jt808", source = %ctx.name, %peer, phone = tracing::field::Empty);
                    connections.spawn(
                        connection(stream, permit, shared.clone(), ctx.clone()).instrument(span),
                    );
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    warn!(source = %ctx.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    while let Some(done) = connections.join_next().await {
        finished(done)?;
    }
    Ok(())
}

fn finished(
    done: Result<Result<(), SourceError>, tokio::task::JoinError>,
) -> Result<(), SourceError> {
    match done {
        Ok(result) => result,
        Err(e) => {
            // A connection task that panicked lost only its own connection; its terminal's
            // unanswered messages come again.
            warn!(error = %e, "a JT/T 808 connection task failed");
            Ok(())
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    mut ctx: SourceContext,
) -> Result<(), SourceError> {
    // Replies are small and each one releases a terminal's retransmission timer.
    let _ = stream.set_nodelay(true);
    debug!("terminal connected");
    let mut session = Session::new(shared.session.clone());
    let mut buf = vec![0u8; READ_BUFFER];
    let mut unreadable = 0usize;
    let mut warned: BTreeSet<&'static str> = BTreeSet::new();
    let mut phone_known = false;
    loop {
        let read = tokio::select! {
            _ = ctx.shutdown.wait() => break,
            r = tokio::time::timeout(shared.idle_timeout, stream.read(&mut buf)) => r,
        };
        let n = match read {
            Err(_) => {
                debug!(
                    idle_s = shared.idle_timeout.as_secs(),
                    "idle terminal disconnected"
                );
                break;
            }
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                debug!(error = %e, "read failed");
                break;
            }
        };
        let now = Utc::now();
        let checkpoint = session.checkpoint();
        let fed = session.feed(&buf[..n], now);
        if !phone_known {
            if let Some(phone) = session.terminal() {
                Span::current().record("phone", tracing::field::display(phone));
                info!("terminal authenticated");
                phone_known = true;
            }
        }
        count(&ctx, &fed, &mut warned);
        if fed.exchanges.iter().any(|e| e.header.is_some()) {
            unreadable = 0;
        } else {
            unreadable = unreadable.saturating_add(n);
            if unreadable > MAX_UNREADABLE_BYTES {
                warn!(
                    bytes = unreadable,
                    "peer sends nothing readable as JT/T 808; disconnected"
                );
                break;
            }
        }
        let stored = store(&shared, &ctx, &fed.exchanges, now).await?;
        if !stored {
            session.restore(checkpoint);
        }
        let mut out = Vec::new();
        for e in &fed.exchanges {
            let reply = match (&e.reply, stored || e.events.is_empty()) {
                (Some(r), true) => Some(r.clone()),
                (Some(r), false) => r.refused(),
                (None, _) => None,
            };
            if let Some(r) = reply {
                out.extend(session.encode(&r));
            }
        }
        if !out.is_empty() {
            match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!(error = %e, "write failed");
                    break;
                }
                Err(_) => {
                    warn!(
                        timeout_s = WRITE_TIMEOUT.as_secs(),
                        "terminal does not take its replies; disconnected"
                    );
                    break;
                }
            }
        }
    }
    debug!("terminal disconnected");
    Ok(())
}

/// Counts what a read brought: one received message per frame, and every refusal by reason.
/// Each reason is logged as a warning once per connection, then at debug level.
fn count(ctx: &SourceContext, fed: &Fed, warned: &mut BTreeSet<&'static str>) {
    ctx.metrics
        .received
        .fetch_add(fed.exchanges.len() as u64, Relaxed);
    let rejected = fed
        .exchanges
        .iter()
        .filter_map(|e| e.rejected.as_ref())
        .chain(&fed.dropped);
    for r in rejected {
        ctx.metrics.decode_error(r.reason);
        log_rejection(r, warned);
    }
}

fn log_rejection(r: &Rejected, warned: &mut BTreeSet<&'static str>) {
    if warned.insert(r.reason) {
        warn!(reason = r.reason, detail = %r.detail, "terminal message rejected (further ones for this reason on this connection at debug level)");
    }
    debug!(reason = r.reason, detail = %r.detail, sample = %crate::decode::jt808::message::hex(&r.sample), "rejected");
}

/// Makes the events of `exchanges` durable in one submission, leaving out the ones already
/// stored (resent reports). `Ok(false)` when the buffer refused them: their messages are to be
/// answered with failure. Errors are fatal for the source.
async fn store(
    shared: &Shared,
    ctx: &SourceContext,
    exchanges: &[Exchange],
    now: DateTime<Utc>,
) -> Result<bool, SourceError> {
    let now_ms = now.timestamp_millis();
    let mut events = Vec::new();
    {
        let mut dedup = shared.dedup();
        for k in exchanges.iter().flat_map(|e| &e.events) {
            let key = k
                .dedup_key
                .as_ref()
                .map(|key| format!("{}{key}", shared.dedup_prefix));
            if let Some(key) = &key {
                if dedup.contains(key, now_ms) {
                    ctx.metrics.duplicates.fetch_add(1, Relaxed);
                    debug!(key = %key, "event of a resent report already stored; left out");
                    continue;
                }
            }
            events.push(PendingEvent {
                observed_at: k.decoded.observed_at.unwrap_or(now),
                received_at: now,
                source: ctx.name.clone(),
                body: k.decoded.body.clone(),
                dedup_key: key,
            });
        }
    }
    if events.is_empty() {
        return Ok(true);
    }
    let keys: Vec<String> = events.iter().filter_map(|e| e.dedup_key.clone()).collect();
    match ctx.intake.submit(events).await {
        Ok(_) => {
            let mut dedup = shared.dedup();
            for key in keys {
                dedup.insert(key, now_ms);
            }
            Ok(true)
        }
        Err(IntakeError::Full { class }) => {
            warn!(
                class = class.as_str(),
                "buffer full: answering the terminal with failure so that it keeps its data"
            );
            Ok(false)
        }
        Err(IntakeError::Closed) => Err(SourceError::IntakeClosed {
            source_name: ctx.name.to_string(),
        }),
        Err(IntakeError::Storage(detail)) => Err(SourceError::Storage {
            source_name: ctx.name.to_string(),
            detail,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::intake::{Intake, IntakeConfig, IntakeJoin, MIN_MAX_BYTES};
    use crate::buffer::{Engine, IntakeStore};
    use crate::decode::jt808::{
        simulate_terminal_frames, AuthCode, Frame, Framer, GeneralResult, Phone,
        RegistrationResult, Reply, ReplyBody, SimTerminal, Version,
    };
    use crate::metrics::{Metrics, SourceMetrics};
    use crate::sources::Shutdown;
    use qyt_proto::{Body, Event, EventClass, SealId, SealReading, SealState, Seq, SiteId};
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    const SECRET: &str = "test-secret-0123456789";
    const FRAMES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/jt808/frames.tsv"
    );

    /// Frame `i` (from 0) of the recorded frames.
    fn frame_row(i: usize) -> Vec<u8> {
        let text = std::fs::read_to_string(FRAMES).unwrap_or_else(|e| panic!("{FRAMES}: {e}"));
        let line = text.lines().nth(i + 1).expect("row");
        let hex = line.split('\t').next().expect("hex");
        (0..hex.len())
            .step_by(2)
            .map(|j| u8::from_str_radix(&hex[j..j + 2], 16).expect("hex"))
            .collect()
    }

    fn config() -> Jt808TcpConfig {
        toml::from_str(&format!("name = \"jt808\"\nauth_secret = \"{SECRET}\"\n"))
            .expect("minimal config")
    }

    /// A source serving on 127.0.0.1 over a redb buffer in a temporary directory.
    struct Harness {
        _dir: tempfile::TempDir,
        buffer: Arc<dyn IntakeStore>,
        intake: Intake,
        join: IntakeJoin,
        metrics: Arc<SourceMetrics>,
        all_metrics: Arc<Metrics>,
        addr: SocketAddr,
        stop: watch::Sender<bool>,
        task: JoinHandle<Result<(), SourceError>>,
    }

    impl Harness {
        async fn start(cfg: Jt808TcpConfig, intake_cfg: IntakeConfig) -> Harness {
            let dir = tempfile::tempdir().expect("tempdir");
            let (buffer, report) = crate::buffer::open(Engine::Redb, dir.path()).expect("open");
            let metrics = Metrics::new();
            let site = SiteId::new("gate-1").expect("site");
            let (intake, join) = Intake::start(
                buffer.clone(),
                site.clone(),
                intake_cfg,
                metrics.clone(),
                report,
            )
            .expect("intake");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (stop, shutdown) = Shutdown::new();
            let source = metrics.source(&cfg.name);
            let ctx = SourceContext {
                site,
                name: Arc::from(cfg.name.as_str()),
                intake: intake.clone(),
                metrics: source.clone(),
                shutdown,
            };
            let task = tokio::spawn(serve(listener, cfg, ctx));
            Harness {
                _dir: dir,
                buffer,
                intake,
                join,
                metrics: source,
                all_metrics: metrics,
                addr,
                stop,
                task,
            }
        }

        fn events(&self) -> Vec<Event> {
            self.buffer
                .read_from(Seq::ZERO, usize::MAX, usize::MAX)
                .expect("read")
                .into_iter()
                .map(|r| serde_json::from_slice(&r.payload).expect("event"))
                .collect()
        }

        fn positions(&self) -> Vec<(String, f64, f64)> {
            self.events()
                .into_iter()
                .filter_map(|e| match e.body {
                    Body::Position(p) => Some((p.device_id, p.lat, p.lon)),
                    _ => None,
                })
                .collect()
        }

        /// Decode errors by reason, as `/metrics` shows them.
        fn errors(&self) -> std::collections::BTreeMap<String, u64> {
            let prefix = "qyt_agent_decode_errors_total{source=\"jt808\",reason=\"";
            self.all_metrics
                .render(0)
                .lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .filter_map(|l| l.split_once("\"} "))
                .map(|(reason, n)| (reason.to_string(), n.parse().expect("count")))
                .collect()
        }

        async fn stop(self) {
            self.stop.send_replace(true);
            let r = tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .expect("the source stops")
                .expect("joined");
            assert!(r.is_ok(), "{r:?}");
            drop(self.intake);
            tokio::task::spawn_blocking(move || self.join.join())
                .await
                .expect("writer joined");
        }
    }

    /// The terminal side of a connection.
    struct Client {
        stream: TcpStream,
        framer: Framer,
        pending: std::collections::VecDeque<Frame>,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> Client {
            Client {
                stream: TcpStream::connect(addr).await.expect("connect"),
                framer: Framer::new(DEFAULT_MAX_FRAME_BYTES),
                pending: Default::default(),
            }
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).await.expect("send");
        }

        /// The next platform reply, or `None` when the platform closed the connection.
        async fn reply(&mut self) -> Option<Reply> {
            let mut buf = [0u8; 512];
            loop {
                if let Some(f) = self.pending.pop_front() {
                    return Some(Reply::parse(&f).expect("a platform reply"));
                }
                let n = tokio::time::timeout(Duration::from_secs(20), self.stream.read(&mut buf))
                    .await
                    .expect("a reply in time")
                    .ok()?;
                if n == 0 {
                    return None;
                }
                for cut in self.framer.push(&buf[..n]) {
                    let f = Frame::decode(&cut.expect("delimited")).expect("valid frame");
                    self.pending.push_back(f);
                }
            }
        }

        async fn general(&mut self) -> (u16, u16, GeneralResult) {
            match self.reply().await.map(|r| r.body) {
                Some(ReplyBody::General {
                    reply_serial,
                    reply_id,
                    result,
                }) => (reply_serial, reply_id, result),
                other => panic!("expected 0x8001, got {other:?}"),
            }
        }

        /// Registers and authenticates the simulated terminal.
        async fn login(&mut self, t: &mut SimTerminal) {
            self.send(&t.registration("沪A12345")).await;
            let Some(ReplyBody::Registration {
                result: RegistrationResult::Ok,
                auth_code: Some(code),
                ..
            }) = self.reply().await.map(|r| r.body)
            else {
                panic!("registration refused")
            };
            self.send(&t.authentication(code.as_str())).await;
            assert_eq!(self.general().await.2, GeneralResult::Ok);
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_760_000_000, 0).expect("valid")
    }

    #[tokio::test]
    async fn registration_authentication_location_then_a_durable_event_and_the_reply() {
        let h = Harness::start(config(), IntakeConfig::default()).await;
        let mut c = Client::connect(h.addr).await;
        // The recorded registration of terminal 013511221122 (serial 5).
        c.send(&frame_row(4)).await;
        let reply = c.reply().await.expect("0x8100");
        let ReplyBody::Registration {
            reply_serial: 5,
            result: RegistrationResult::Ok,
            auth_code: Some(code),
        } = reply.body
        else {
            panic!("{reply:?}")
        };
        assert_eq!(code, AuthCode::derive(SECRET.as_bytes(), &reply.phone));
        let mut t = SimTerminal::new("13511221122", Version::V2013, 31.2, 121.5, 3).expect("t");
        t.frame(0, &[]); // serials 0 and 1 are taken below by auth and location
        c.send(&t.authentication(code.as_str())).await;
        assert_eq!(c.general().await, (1, 0x0102, GeneralResult::Ok));
        let location = t.location(t0());
        c.send(&location).await;
        assert_eq!(c.general().await, (2, 0x0200, GeneralResult::Ok));
        // The reply came: the event is already durable.
        let (lat, lon) = t.position();
        assert_eq!(h.positions(), [("013511221122".to_string(), lat, lon)]);
        let classes: Vec<EventClass> = h.events().iter().map(|e| e.body.class()).collect();
        assert_eq!(
            classes,
            [
                EventClass::DeviceStatus, // the registration, with the plate
                EventClass::Position,
                EventClass::DeviceStatus,
                EventClass::Alarm
            ]
        );
        let Body::DeviceStatus(reg) = &h.events()[0].body else {
            panic!()
        };
        assert_eq!(reg.detail["plate"], "苏BA6860");
        // The same report again (its reply lost): answered, not stored twice.
        c.send(&location).await;
        assert_eq!(c.general().await, (2, 0x0200, GeneralResult::Ok));
        assert_eq!(h.events().len(), 4);
        // Position and status recognised; the alarm state is unchanged, so not emitted again.
        assert_eq!(h.metrics.duplicates.load(Relaxed), 2);
        let keys = h.intake.recent_dedup_keys(0).await.expect("keys");
        assert_eq!(
            keys.len(),
            3,
            "position, status, alarm keys stored with the events"
        );
        assert!(keys
            .iter()
            .all(|k| k.key.starts_with("jt808\u{0}jt808:013511221122:")));
        assert_eq!(h.metrics.received.load(Relaxed), 4);
        assert!(h.errors().is_empty());
        h.stop().await;
    }

    #[tokio::test]
    async fn a_location_before_authentication_is_not_believed() {
        let h = Harness::start(config(), IntakeConfig::default()).await;
        let mut c = Client::connect(h.addr).await;
        c.send(&frame_row(1)).await; // a recorded location report, serial 0x0013
        assert_eq!(c.general().await, (0x0013, 0x0200, GeneralResult::Failure));
        // Nor with a code another platform issued.
        c.send(&frame_row(4)).await;
        c.reply().await.expect("0x8100");
        c.send(&frame_row(5)).await;
        assert_eq!(c.general().await, (6, 0x0102, GeneralResult::Failure));
        assert!(h
            .events()
            .iter()
            .all(|e| !matches!(e.body, Body::Position(_))));
        let errors = h.errors();
        assert_eq!(errors.get("unauthenticated"), Some(&1));
        assert_eq!(errors.get("auth_failed"), Some(&1));
        h.stop().await;
    }

    #[tokio::test]
    async fn a_bad_checksum_frame_is_counted_and_the_connection_goes_on() {
        let h = Harness::start(config(), IntakeConfig::default()).await;
        let mut c = Client::connect(h.addr).await;
        let mut t = SimTerminal::new("13511221122", Version::V2013, 31.2, 121.5, 4).expect("t");
        c.login(&mut t).await;
        // The recorded frame whose checksum and length disagree, then a good report, in one
        // write: only the good one is answered.
        let mut both = frame_row(6);
        both.extend_from_slice(&t.location(t0()));
        c.send(&both).await;
        assert_eq!(c.general().await, (2, 0x0200, GeneralResult::Ok));
        assert_eq!(h.positions().len(), 1);
        assert_eq!(h.errors().get("bad_checksum"), Some(&1));
        // And the connection is still good.
        c.send(&t.heartbeat()).await;
        assert_eq!(c.general().await, (3, 0x0002, GeneralResult::Ok));
        h.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hundred_terminals_at_once() {
        let h = Harness::start(config(), IntakeConfig::default()).await;
        let addr = h.addr;
        let clients: Vec<_> = (0..200u64)
            .map(|i| {
                tokio::spawn(async move {
                    let phone = format!("1380000{i:04}");
                    let code = AuthCode::derive(
                        SECRET.as_bytes(),
                        &Phone::from_digits(&phone, Version::V2013).expect("phone"),
                    );
                    let frames = simulate_terminal_frames(&phone, code.as_str(), t0(), 3, 30, i)
                        .expect("frames");
                    let mut c = Client::connect(addr).await;
                    for f in &frames {
                        c.send(f).await;
                        let ok = match c.reply().await.map(|r| r.body) {
                            Some(ReplyBody::Registration { result, .. }) => {
                                result == RegistrationResult::Ok
                            }
                            Some(ReplyBody::General { result, .. }) => result == GeneralResult::Ok,
                            None => false,
                        };
                        assert!(ok, "terminal {phone}");
                    }
                    c
                })
            })
            .collect();
        let mut open = Vec::new();
        for c in clients {
            open.push(c.await.expect("client"));
        }
        let positions = h.positions();
        assert_eq!(positions.len(), 600);
        let devices: BTreeSet<String> = positions.into_iter().map(|p| p.0).collect();
        assert_eq!(devices.len(), 200);
        assert!(h.errors().is_empty());
        drop(open);
        h.stop().await;
    }

    #[tokio::test]
    async fn a_full_buffer_is_answered_with_failure_so_the_terminal_keeps_the_report() {
        let intake_cfg = IntakeConfig {
            max_bytes: MIN_MAX_BYTES,
            ..IntakeConfig::default()
        };
        let mut cfg = config();
        cfg.seal_from_door_bit = true;
        let h = Harness::start(cfg, intake_cfg).await;
        // Fill the buffer with never-drop seal readings until it refuses them.
        let big = |i: usize| PendingEvent {
            observed_at: t0(),
            received_at: t0(),
            source: Arc::from("filler"),
            body: Body::Seal(SealReading {
                seal_id: SealId(format!("CN{i:08}")),
                state: SealState::Sealed,
                battery_pct: None,
                device_id: Some("x".repeat(900)),
            }),
            dedup_key: None,
        };
        let mut i = 0;
        while h
            .intake
            .submit((0..50).map(|j| big(i * 50 + j)).collect())
            .await
            .is_ok()
        {
            i += 1;
            assert!(i < 10_000, "the buffer never filled");
        }
        let mut c = Client::connect(h.addr).await;
        let mut t = SimTerminal::new("13511221122", Version::V2013, 31.2, 121.5, 5).expect("t");
        c.send(&t.registration("沪A12345")).await;
        // The registration's status event is refused too: its reply is withheld.
        let code = AuthCode::derive(SECRET.as_bytes(), &t.phone());
        c.send(&t.authentication(code.as_str())).await;
        assert_eq!(c.general().await, (1, 0x0102, GeneralResult::Ok));
        // A report with a seal (never dropped) is refused: answered "failure".
        c.send(&t.location(t0())).await;
        assert_eq!(c.general().await, (2, 0x0200, GeneralResult::Failure));
        assert!(h.positions().is_empty());
        assert_eq!(h.metrics.decode_errors_total(), 0);
        h.stop().await;
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_and_idle_ones_are_closed() {
        let mut cfg = config();
        cfg.max_connections = 2;
        cfg.idle_timeout_s = 1;
        let h = Harness::start(cfg, IntakeConfig::default()).await;
        let mut a = Client::connect(h.addr).await;
        let mut b = Client::connect(h.addr).await;
        let mut t = SimTerminal::new("13511221122", Version::V2013, 31.2, 121.5, 6).expect("t");
        a.login(&mut t).await;
        let mut third = Client::connect(h.addr).await;
        assert!(third.reply().await.is_none(), "closed at once");
        assert_eq!(h.errors().get("too_many_connections"), Some(&1));
        // `b` never says anything: closed after the idle timeout, which frees a place.
        assert!(b.reply().await.is_none());
        let mut d = Client::connect(h.addr).await;
        let mut u = SimTerminal::new("13511221123", Version::V2013, 31.2, 121.5, 7).expect("t");
        d.login(&mut u).await;
        h.stop().await;
    }

    #[tokio::test]
    async fn a_peer_sending_garbage_is_dropped_without_affecting_a_terminal() {
        let h = Harness::start(config(), IntakeConfig::default()).await;
        let mut good = Client::connect(h.addr).await;
        let mut t = SimTerminal::new("13511221122", Version::V2013, 31.2, 121.5, 8).expect("t");
        good.login(&mut t).await;
        let mut junk = Client::connect(h.addr).await;
        let noise: Vec<u8> = (0..MAX_UNREADABLE_BYTES + 8192)
            .map(|i| (i % 97) as u8 | 0x80)
            .collect();
        // The platform may close while we are still writing: ignore write errors.
        let _ = junk.stream.write_all(&noise).await;
        assert!(junk.reply().await.is_none(), "dropped");
        good.send(&t.location(t0())).await;
        assert_eq!(good.general().await.2, GeneralResult::Ok);
        assert_eq!(h.positions().len(), 1);
        h.stop().await;
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = config();
        assert_eq!(c.listen, default_listen());
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert!(
            !format!("{c:?}").contains(SECRET),
            "the secret is not in Debug output"
        );
        let bad: Jt808TcpConfig = toml::from_str(
            "name = \"x\"\nauth_secret = \"short\"\nterminals = [\"13a\"]\nmax_connections = 0\nsubpackage_max_bytes = 10\n",
        )
        .expect("parses");
        let keys: Vec<String> = bad.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "auth_secret",
                "terminals[0]",
                "max_connections",
                "subpackage_max_bytes"
            ]
        );
        assert!(
            toml::from_str::<Jt808TcpConfig>(
                "name = \"x\"\nauth_secret = \"0123456789abcdef\"\nport = 1\n"
            )
            .is_err(),
            "unknown keys refused"
        );
        let s = Jt808TcpConfig {
            terminals: vec!["013511221122".into(), "000".into()],
            ..config()
        }
        .session_config();
        assert_eq!(
            s.terminals,
            BTreeSet::from(["13511221122".into(), "0".into()])
        );
    }
}
