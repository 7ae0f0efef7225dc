//! JT/T 808 GPS e-locks on trucks driving around the checkpoint, connecting to a `jt808_tcp`
//! source as terminals do: register (0x0100) or, with `--secret`, authenticate at once with the
//! code the source derives (as terminals that registered before do); authenticate (0x0102);
//! then location reports (0x0200) with the e-lock's items (0xD5 lock, 0xDA rope and cover,
//! battery, odometer, signal, satellites), and heartbeats (0x0002) when there is nothing else
//! to send.
//!
//! Like a terminal, each one waits for the platform's reply (0x8100 / 0x8001) to each message,
//! and sends a report again, with the same serial number, when the reply does not come within
//! `--reply-timeout` or says failure (the platform's "keep it and send it again"): up to
//! [`RETRANSMISSIONS`] times, then the report counts as unconfirmed and, if the platform went
//! silent, the terminal reconnects. A refused authentication makes it register again, as the
//! standard says.
//!
//! A report's clock has whole seconds, and the agent recognises a resent report by its phone
//! and device time: a terminal's device time therefore advances at least one second per
//! report, even at shorter `--interval`s.

use super::{Truck, CHECKPOINT};
use crate::decode::jt808::frame::{Frame, Framer, Phone, Version, DEFAULT_MAX_FRAME_BYTES};
use crate::decode::jt808::message::{
    status, LocationFields, MSG_AUTHENTICATION, MSG_HEARTBEAT, MSG_LOCATION, MSG_REGISTRATION,
};
use crate::decode::jt808::{
    AuthCode, GeneralResult, RegistrationResult, Reply, ReplyBody, SimTerminal,
};
use crate::uplink::backoff::Backoff;
use anyhow::Context;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Jt808Args {
    /// The `jt808_tcp` source's address (its `listen`).
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: String,
    /// The source's `auth_secret`: terminals then authenticate at once with the code derived
    /// from it. Without it, every terminal registers first and uses the code the reply gives.
    #[arg(long)]
    pub secret: Option<String>,
    /// How many terminals connect at once.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub terminals: u32,
    /// Phone number (the terminal id) of the first terminal; the others count up from it. Put
    /// them in the source's `terminals` if it has a list.
    #[arg(long, value_name = "DIGITS", default_value = "13800000001")]
    pub first_phone: String,
    /// Seconds between a terminal's location reports.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub interval: f64,
    /// Reports per terminal; it then stops (default: until --duration or Ctrl-C).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Each e-lock opens after its N-th report (the agent then records the seal opened).
    #[arg(long, value_name = "N")]
    pub open_seal_after: Option<u64>,
    /// A heartbeat after this many seconds without any other message.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub heartbeat: f64,
    /// Seconds to wait for a reply before sending again (the standard's T).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub reply_timeout: f64,
    /// The same seed gives the same trucks.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Times a report is sent again before it counts as unconfirmed (JT/T 808's default).
pub const RETRANSMISSIONS: u32 = 3;
/// Failed connection attempts in a row (including connections closed before authentication)
/// after which a terminal gives up.
const MAX_CONNECT_FAILURES: u32 = 8;
const MAX_TERMINALS: u32 = 10_000;

pub fn run(args: Jt808Args) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let duration = seconds("--duration", args.duration)?;
    println!(
        "{} JT/T 808 terminal(s) {}..{} -> {}, a report every {} s{}",
        plan.phones.len(),
        plan.phones.first().map_or("", String::as_str),
        plan.phones.last().map_or("", String::as_str),
        plan.connect,
        args.interval,
        if plan.secret.is_some() {
            ", authenticating with codes derived from --secret"
        } else {
            ", registering first"
        }
    );
    let summaries = super::runtime()?.block_on(async {
        let (stop_tx, stop) = watch::channel(false);
        let stopper = tokio::spawn(async move {
            match duration {
                Some(d) => tokio::select! {
                    () = super::interrupted() => {}
                    () = tokio::time::sleep(d) => {}
                },
                None => super::interrupted().await,
            }
            let _ = stop_tx.send(true);
        });
        let summaries = run_terminals(plan, stop).await;
        stopper.abort();
        summaries
    });
    for s in &summaries {
        println!("{s}");
    }
    let failed = summaries.iter().filter(|s| s.error.is_some()).count();
    let unconfirmed: u64 = summaries.iter().map(|s| s.unconfirmed).sum();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} terminals failed (see above)",
            summaries.len()
        );
    }
    if unconfirmed > 0 {
        anyhow::bail!("{unconfirmed} reports were never confirmed by the platform (see above)");
    }
    Ok(())
}

fn seconds(flag: &str, value: Option<f64>) -> anyhow::Result<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| format!("{flag} must be a number of seconds above 0 (got {s})"))
        })
        .transpose()
}

/// How the terminals run, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub connect: String,
    pub secret: Option<Vec<u8>>,
    pub phones: Vec<String>,
    pub interval: Duration,
    pub heartbeat: Duration,
    pub reply_timeout: Duration,
    pub count: Option<u64>,
    pub open_seal_after: Option<u64>,
    pub seed: u64,
}

impl Plan {
    fn from_args(a: &Jt808Args) -> anyhow::Result<Plan> {
        if !(1..=MAX_TERMINALS).contains(&a.terminals) {
            anyhow::bail!(
                "--terminals must be 1 to {MAX_TERMINALS} (got {})",
                a.terminals
            );
        }
        let digits = &a.first_phone;
        let first: u64 = Some(digits)
            .filter(|d| (1..=12).contains(&d.len()) && d.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .with_context(|| format!("--first-phone must be 1 to 12 digits (got {digits:?})"))?;
        let phones: Vec<String> = (0..u64::from(a.terminals))
            .map(|i| format!("{:0width$}", first + i, width = a.first_phone.len()))
            .collect();
        if phones.iter().any(|p| p.len() > 12) {
            anyhow::bail!(
                "--first-phone {} with {} terminals goes beyond 12 digits, the longest a 2013 header carries",
                a.first_phone,
                a.terminals
            );
        }
        let required = |flag: &str, v: f64| -> anyhow::Result<Duration> {
            seconds(flag, Some(v))?.context("a value is required")
        };
        Ok(Plan {
            connect: a.connect.clone(),
            secret: a.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            phones,
            interval: required("--interval", a.interval)?,
            heartbeat: required("--heartbeat", a.heartbeat)?,
            reply_timeout: required("--reply-timeout", a.reply_timeout)?,
            count: a.count,
            open_seal_after: a.open_seal_after,
            seed: a.seed,
        })
    }
}

// ---- The terminal (pure) ----

/// A message sent: what a reply names it by, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub msg_id: u16,
    pub serial: u16,
    pub bytes: Vec<u8>,
}

impl Message {
    fn answered_by(&self, reply: &ReplyBody) -> bool {
        match reply {
            ReplyBody::General {
                reply_serial,
                reply_id,
                ..
            } => *reply_serial == self.serial && *reply_id == self.msg_id,
            ReplyBody::Registration { reply_serial, .. } => {
                *reply_serial == self.serial && self.msg_id == MSG_REGISTRATION
            }
        }
    }
}

/// What a location report said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// The device time sent (whole seconds).
    pub at: DateTime<Utc>,
    /// Degrees, as encoded (to 1e-6).
    pub lat: f64,
    pub lon: f64,
    pub speed_kmh: f64,
    pub sealed: bool,
}

/// A truck's GPS e-lock: builds its messages, deterministic for a seed.
#[derive(Debug, Clone)]
pub struct ELock {
    sim: SimTerminal,
    /// The serial number of `sim`'s next frame: it numbers its frames from 0, one per frame.
    serial: u16,
    truck: Truck,
    rng: StdRng,
    plate: String,
    lock_id: [u8; 5],
    card: [u8; 5],
    battery_pct: f64,
    odometer_km: f64,
    reports: u64,
    open_after: Option<u64>,
    last_at: Option<DateTime<Utc>>,
}

impl ELock {
    /// `None` when `phone` is not 1 to 12 digits.
    pub fn new(phone: &str, seed: u64, open_after: Option<u64>) -> Option<ELock> {
        let mut rng = StdRng::seed_from_u64(seed);
        let truck = Truck::new(CHECKPOINT, &mut rng);
        // Only its framing, serials, registration and authentication are used: reports are
        // built here, from `truck`, with the e-lock's items.
        let sim = SimTerminal::new(phone, Version::V2013, 0.0, 0.0, seed)?;
        // The lock is named by its terminal's last ten digits, as e-lock vendors print them.
        let digits = format!("{phone:0>10}");
        let lock_id = bcd5(&digits[digits.len() - 10..]);
        let card = bcd5(&format!("{:010}", rng.random_range(0..10_000_000_000u64)));
        Some(ELock {
            sim,
            serial: 0,
            plate: super::plate(&mut rng),
            truck,
            lock_id,
            card,
            battery_pct: rng.random_range(70.0..100.0),
            odometer_km: rng.random_range(10_000.0..400_000.0f64).round(),
            rng,
            reports: 0,
            open_after,
            last_at: None,
        })
    }

    pub fn phone(&self) -> Phone {
        self.sim.phone()
    }

    /// The seal id the agent gives the lock (its 0xD5 id, as hex digits).
    pub fn lock_id(&self) -> String {
        crate::decode::jt808::message::hex(&self.lock_id)
    }

    pub fn plate(&self) -> &str {
        &self.plate
    }

    /// Reports made so far.
    pub fn reports(&self) -> u64 {
        self.reports
    }

    pub fn registration(&mut self) -> Message {
        let bytes = self.sim.registration(&self.plate);
        self.sent(MSG_REGISTRATION, bytes)
    }

    pub fn authentication(&mut self, code: &str) -> Message {
        let bytes = self.sim.authentication(code);
        self.sent(MSG_AUTHENTICATION, bytes)
    }

    pub fn heartbeat(&mut self) -> Message {
        let bytes = self.sim.heartbeat();
        self.sent(MSG_HEARTBEAT, bytes)
    }

    /// The next location report, taken at `now` by the device's clock (see the module docs for
    /// why it may run ahead); the truck drives on from the last report's time.
    pub fn location(&mut self, now: DateTime<Utc>) -> (Report, Message) {
        let mut at = now.duration_trunc(TimeDelta::seconds(1)).unwrap_or(now);
        if let Some(last) = self.last_at {
            at = at.max(last + TimeDelta::seconds(1));
            let dt = (at - last).as_seconds_f64();
            self.truck.advance(dt, &mut self.rng);
            self.odometer_km += self.truck.speed_kmh() * dt / 3600.0;
            self.battery_pct = (self.battery_pct - dt / 7200.0).max(0.0);
        }
        self.last_at = Some(at);
        let sealed = self.open_after.is_none_or(|n| self.reports < n);
        self.reports += 1;
        let (lat, lon) = self.truck.position();
        let (lat, lon) = ((lat * 1e6).round() / 1e6, (lon * 1e6).round() / 1e6);
        let speed_kmh = self.truck.speed_kmh();
        let battery = self.battery_pct.round() as u8;
        let mut st = status::FIXED | status::ACC_ON;
        if sealed {
            st |= status::DOOR_LOCKED;
        }
        // 0xD5: one lock — id, card, battery, status word (bit 5: unlocked).
        let mut lock = vec![1u8];
        lock.extend_from_slice(&self.lock_id);
        lock.extend_from_slice(&self.card);
        lock.push(battery);
        let lock_status: u16 = if sealed { 0 } else { 1 << 5 };
        lock.extend_from_slice(&lock_status.to_be_bytes());
        // 0xDA: rope cut count, status (bit 2: moving).
        let mut device = 0u16.to_be_bytes().to_vec();
        device.push(if speed_kmh > 0.0 { 0x04 } else { 0 });
        let odometer = (self.odometer_km * 10.0).round() as u32;
        let fields = LocationFields {
            alarm: 0,
            status: st,
            lat,
            lon,
            altitude_m: 4,
            speed_kmh,
            course: self.truck.course().round() as u16 % 360,
            time: at,
            items: vec![
                (0x01, odometer.to_be_bytes().to_vec()),
                (0x30, vec![self.rng.random_range(15..31)]),
                (0x31, vec![self.rng.random_range(8..16)]),
                (0xD4, vec![battery]),
                (0xD5, lock),
                (0xDA, device),
            ],
        };
        let bytes = self.sim.frame(MSG_LOCATION, &fields.encode());
        let report = Report {
            at,
            lat,
            lon,
            speed_kmh,
            sealed,
        };
        (report, self.sent(MSG_LOCATION, bytes))
    }

    fn sent(&mut self, msg_id: u16, bytes: Vec<u8>) -> Message {
        let serial = self.serial;
        self.serial = self.serial.wrapping_add(1);
        Message {
            msg_id,
            serial,
            bytes,
        }
    }
}

/// Ten decimal digits as five BCD bytes.
fn bcd5(digits: &str) -> [u8; 5] {
    let d: Vec<u8> = digits
        .bytes()
        .map(|c| c.wrapping_sub(b'0') & 0x0F)
        .collect();
    std::array::from_fn(|i| {
        (d.get(2 * i).copied().unwrap_or(0) << 4) | d.get(2 * i + 1).copied().unwrap_or(0)
    })
}

// ---- The terminals on the network ----

/// What one terminal did: its summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub phone: String,
    pub connections: u32,
    /// It registered (at first, or because its authentication was refused).
    pub registered: bool,
    pub reports: u64,
    pub confirmed: u64,
    /// Sends beyond the first of a report.
    pub resent: u64,
    /// Reports given up after [`RETRANSMISSIONS`].
    pub unconfirmed: u64,
    pub heartbeats: u64,
    /// The lock and the report from which it was open.
    pub opened: Option<(String, u64)>,
    pub error: Option<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "terminal {}: {} reports, {} confirmed, {} resent, {} unconfirmed, {} heartbeats, {} connection(s){}",
            self.phone,
            self.reports,
            self.confirmed,
            self.resent,
            self.unconfirmed,
            self.heartbeats,
            self.connections,
            if self.registered { ", registered" } else { "" }
        )?;
        if let Some((lock, report)) = &self.opened {
            write!(f, "; e-lock {lock} opened at report {report}")?;
        }
        if let Some(e) = &self.error {
            write!(f, "; FAILED: {e}")?;
        }
        Ok(())
    }
}

/// Runs every terminal of `plan` until each is done (its count reached, or given up) or `stop`
/// turns true; one summary per terminal, in order.
pub async fn run_terminals(plan: Plan, stop: watch::Receiver<bool>) -> Vec<Summary> {
    let plan = Arc::new(plan);
    let tasks: Vec<_> = (0..plan.phones.len())
        .map(|i| tokio::spawn(terminal(plan.clone(), i, stop.clone())))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.into_iter().enumerate() {
        out.push(t.await.unwrap_or_else(|e| Summary {
            phone: plan.phones[i].clone(),
            error: Some(format!("the terminal's task failed: {e}")),
            ..Summary::default()
        }));
    }
    out
}

/// Why a connection ended.
enum End {
    /// Done, or stopped.
    Finished,
    /// Connection lost or the platform went silent: connect again.
    Reconnect,
}

/// A report waiting for its confirmation, kept across connections.
struct Pending {
    message: Message,
    sends: u32,
}

struct State {
    summary: Summary,
    /// The auth code in use; `None`: register to get one.
    code: Option<String>,
    pending: Option<Pending>,
    stop: watch::Receiver<bool>,
}

impl State {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    fn count_reached(&self, plan: &Plan, lock: &ELock) -> bool {
        plan.count.is_some_and(|n| lock.reports() >= n)
    }
}

async fn terminal(plan: Arc<Plan>, index: usize, stop: watch::Receiver<bool>) -> Summary {
    let phone = plan.phones[index].clone();
    let summary = Summary {
        phone: phone.clone(),
        ..Summary::default()
    };
    let Some(mut lock) = ELock::new(
        &phone,
        plan.seed.wrapping_add(index as u64),
        plan.open_seal_after,
    ) else {
        return Summary {
            error: Some(format!("{phone:?} is not a phone number of 1 to 12 digits")),
            ..summary
        };
    };
    let code = plan
        .secret
        .as_ref()
        .map(|s| AuthCode::derive(s, &lock.phone()).as_str().to_string());
    let mut state = State {
        summary,
        code,
        pending: None,
        stop,
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut failures = 0u32;
    let mut rng = StdRng::seed_from_u64(plan.seed ^ index as u64);
    loop {
        if state.stopped() || (state.count_reached(&plan, &lock) && state.pending.is_none()) {
            break;
        }
        let connected = tokio::select! {
            _ = state.stop.wait_for(|s| *s) => break,
            c = TcpStream::connect(&plan.connect) => c,
        };
        let failure = match connected {
            Err(e) => format!(
                "cannot connect to {}: {e} (is the jt808_tcp source listening there?)",
                plan.connect
            ),
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                state.summary.connections += 1;
                let mut conn = Conn::new(stream);
                match connection(&plan, &mut lock, &mut conn, &mut state).await {
                    Ok((End::Finished, _)) => break,
                    Ok((End::Reconnect, authenticated)) => {
                        if authenticated {
                            failures = 0;
                            backoff.reset();
                        }
                        "the platform closed the connection or stopped answering".to_string()
                    }
                    Err(fatal) => {
                        state.summary.error = Some(fatal);
                        break;
                    }
                }
            }
        };
        failures += 1;
        if failures >= MAX_CONNECT_FAILURES {
            state.summary.error = Some(format!(
                "{failure}; gave up after {failures} attempts in a row"
            ));
            break;
        }
        let delay = backoff.next_delay(&mut rng);
        tokio::select! {
            _ = state.stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    state.summary
}

/// What a request got.
enum Outcome {
    Answered(ReplyBody),
    Timeout,
    Closed,
    Stopped,
}

/// One connection: authentication, then reports and heartbeats. `Ok((end, authenticated))`;
/// `Err` when the terminal cannot go on at all.
async fn connection(
    plan: &Plan,
    lock: &mut ELock,
    conn: &mut Conn,
    state: &mut State,
) -> Result<(End, bool), String> {
    let mut registered_now = false;
    loop {
        let code = match state.code.clone() {
            Some(code) => code,
            None => {
                let m = lock.registration();
                match request(conn, &m, plan.reply_timeout, &mut state.stop).await {
                    Outcome::Answered(ReplyBody::Registration {
                        result: RegistrationResult::Ok,
                        auth_code: Some(code),
                        ..
                    }) => {
                        state.summary.registered = true;
                        registered_now = true;
                        state.code = Some(code.as_str().to_string());
                        code.as_str().to_string()
                    }
                    Outcome::Answered(ReplyBody::Registration { result, .. }) => {
                        return Err(format!(
                            "registration refused: {result:?} (is the phone in the source's `terminals`?)"
                        ))
                    }
                    Outcome::Answered(_) | Outcome::Timeout | Outcome::Closed => {
                        return Ok((End::Reconnect, false))
                    }
                    Outcome::Stopped => return Ok((End::Finished, false)),
                }
            }
        };
        let m = lock.authentication(&code);
        match request(conn, &m, plan.reply_timeout, &mut state.stop).await {
            Outcome::Answered(ReplyBody::General {
                result: GeneralResult::Ok,
                ..
            }) => break,
            Outcome::Answered(_) if registered_now => {
                return Err("the platform refused the auth code it had just issued".into())
            }
            // A code the platform does not accept (another secret): register for a new one.
            Outcome::Answered(_) => state.code = None,
            Outcome::Timeout | Outcome::Closed => return Ok((End::Reconnect, false)),
            Outcome::Stopped => return Ok((End::Finished, false)),
        }
    }

    let mut next_report = Instant::now();
    let mut last_sent = Instant::now();
    loop {
        if let Some(mut p) = state.pending.take() {
            let timeout = plan.reply_timeout;
            if p.sends > 0 {
                state.summary.resent += 1;
            }
            p.sends += 1;
            last_sent = Instant::now();
            let outcome = request(conn, &p.message, timeout, &mut state.stop).await;
            let silent = match outcome {
                Outcome::Answered(ReplyBody::General {
                    result: GeneralResult::Ok,
                    ..
                }) => {
                    state.summary.confirmed += 1;
                    continue;
                }
                Outcome::Stopped => {
                    state.pending = Some(p);
                    return Ok((End::Finished, true));
                }
                Outcome::Closed => {
                    state.pending = Some(p);
                    return Ok((End::Reconnect, true));
                }
                Outcome::Timeout => true,
                // Failure (the platform could not store it) or another refusal.
                Outcome::Answered(_) => false,
            };
            if p.sends > RETRANSMISSIONS {
                state.summary.unconfirmed += 1;
                if silent {
                    return Ok((End::Reconnect, true));
                }
                continue;
            }
            state.pending = Some(p);
            if !silent {
                // Resend after a while, not at once: the platform said it cannot store it now.
                tokio::select! {
                    _ = state.stop.wait_for(|s| *s) => return Ok((End::Finished, true)),
                    () = tokio::time::sleep(timeout) => {}
                }
            }
            continue;
        }
        if state.count_reached(plan, lock) {
            return Ok((End::Finished, true));
        }
        let heartbeat_at = last_sent + plan.heartbeat;
        let due = tokio::select! {
            _ = state.stop.wait_for(|s| *s) => return Ok((End::Finished, true)),
            () = tokio::time::sleep_until(next_report) => Due::Report,
            () = tokio::time::sleep_until(heartbeat_at) => Due::Heartbeat,
            reply = conn.reply() => match reply {
                // A late answer to an earlier send; nothing waits for it.
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return Ok((End::Reconnect, true)),
            },
        };
        match due {
            Due::Report => {
                let (report, message) = lock.location(Utc::now());
                if !report.sealed && state.summary.opened.is_none() {
                    state.summary.opened = Some((lock.lock_id(), lock.reports()));
                }
                state.summary.reports += 1;
                state.pending = Some(Pending { message, sends: 0 });
                next_report = (next_report + plan.interval).max(Instant::now());
            }
            Due::Heartbeat => {
                let m = lock.heartbeat();
                last_sent = Instant::now();
                match request(conn, &m, plan.reply_timeout, &mut state.stop).await {
                    Outcome::Answered(_) => state.summary.heartbeats += 1,
                    Outcome::Stopped => return Ok((End::Finished, true)),
                    Outcome::Timeout | Outcome::Closed => return Ok((End::Reconnect, true)),
                }
            }
        }
    }
}

/// What an idle terminal does next.
enum Due {
    Report,
    Heartbeat,
}

/// Sends `m` and waits for its reply, at most `timeout`; replies to earlier sends are skipped.
async fn request(
    conn: &mut Conn,
    m: &Message,
    timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    if conn.stream.write_all(&m.bytes).await.is_err() {
        return Outcome::Closed;
    }
    let deadline = Instant::now() + timeout;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Outcome::Stopped,
            () = tokio::time::sleep_until(deadline) => return Outcome::Timeout,
            reply = conn.reply() => match reply {
                Ok(Some(r)) if m.answered_by(&r.body) => return Outcome::Answered(r.body),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Outcome::Closed,
            },
        }
    }
}

/// The terminal's end of a TCP connection.
struct Conn {
    stream: TcpStream,
    framer: Framer,
    replies: VecDeque<Reply>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            framer: Framer::new(DEFAULT_MAX_FRAME_BYTES),
            replies: VecDeque::new(),
            buf: vec![0; 4096],
        }
    }

    /// The next platform reply; `None` when the platform closed the connection. Cancel safe:
    /// what a read brought is kept before anything else is awaited. Frames that are not
    /// replies (platform commands this terminal does not implement) are skipped.
    async fn reply(&mut self) -> std::io::Result<Option<Reply>> {
        loop {
            if let Some(r) = self.replies.pop_front() {
                return Ok(Some(r));
            }
            let n = self.stream.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            let replies = self
                .framer
                .push(&self.buf[..n])
                .into_iter()
                .filter_map(|cut| Frame::decode(&cut.ok()?).ok())
                .filter_map(|f| Reply::parse(&f));
            self.replies.extend(replies);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::intake::{Intake, IntakeConfig};
    use crate::buffer::Engine;
    use crate::decode::jt808::ReassemblyLimits;
    use crate::decode::jt808::{Session, SessionConfig};
    use crate::metrics::Metrics;
    use crate::sources::jt808_tcp::{serve, Jt808TcpConfig};
    use crate::sources::{Shutdown, SourceContext};
    use qyt_proto::{Body, Event, SealState, Seq, SiteId};
    use std::collections::BTreeMap;
    use tokio::net::TcpListener;

    const SECRET: &str = "simulator-secret-0123456789";

    fn session() -> Session {
        Session::new(Arc::new(SessionConfig {
            auth_secret: SECRET.as_bytes().to_vec(),
            terminals: Default::default(),
            seal_from_door_bit: false,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            reassembly: ReassemblyLimits {
                max_messages: 4,
                max_bytes: 65536,
                max_age: TimeDelta::seconds(120),
            },
        }))
    }

    /// Feeds `m` to the session: its events, and the reply it answers `m` with.
    fn exchange(s: &mut Session, m: &Message, now: DateTime<Utc>) -> (Vec<Body>, ReplyBody) {
        let fed = s.feed(&m.bytes, now);
        assert_eq!(fed.exchanges.len(), 1);
        let x = &fed.exchanges[0];
        assert_eq!(x.rejected, None);
        let header = x.header.expect("a frame");
        assert_eq!((header.msg_id, header.serial), (m.msg_id, m.serial));
        let reply = x.reply.clone().expect("answered");
        assert!(m.answered_by(&reply.body));
        let events = x.events.iter().map(|k| k.decoded.body.clone()).collect();
        (events, reply.body)
    }

    #[test]
    fn a_terminals_messages_are_accepted_by_the_platform_session() {
        let t0 = DateTime::parse_from_rfc3339("2025-05-01T08:00:00Z")
            .expect("t")
            .to_utc();
        let mut lock = ELock::new("13800000001", 9, Some(3)).expect("phone");
        let mut s = session();
        let (events, reply) = exchange(&mut s, &lock.registration(), t0);
        let ReplyBody::Registration {
            result: RegistrationResult::Ok,
            auth_code: Some(code),
            ..
        } = reply
        else {
            panic!("{reply:?}")
        };
        assert_eq!(code, AuthCode::derive(SECRET.as_bytes(), &lock.phone()));
        let Body::DeviceStatus(reg) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(reg.detail["plate"], lock.plate());
        let (_, reply) = exchange(&mut s, &lock.authentication(code.as_str()), t0);
        assert!(matches!(
            reply,
            ReplyBody::General {
                result: GeneralResult::Ok,
                ..
            }
        ));
        let mut seals = Vec::new();
        let mut last: Option<Report> = None;
        for i in 0..6 {
            // Two reports in one second: the second is dated a second later.
            let now = t0 + TimeDelta::milliseconds(500 * i);
            let (report, m) = lock.location(now);
            assert!(last.is_none_or(|l| report.at == l.at + TimeDelta::seconds(1)));
            last = Some(report);
            let (events, reply) = exchange(&mut s, &m, now);
            assert!(matches!(
                reply,
                ReplyBody::General {
                    result: GeneralResult::Ok,
                    ..
                }
            ));
            assert_eq!(report.sealed, i < 3);
            for e in events {
                match e {
                    Body::Position(p) => {
                        assert_eq!(p.device_id, "013800000001");
                        assert!(
                            (p.lat - report.lat).abs() < 1e-9 && (p.lon - report.lon).abs() < 1e-9
                        );
                        assert!((p.speed_kmh.expect("speed") - report.speed_kmh).abs() < 0.051);
                    }
                    Body::Seal(seal) => seals.push((seal.seal_id.0, seal.state, i)),
                    Body::DeviceStatus(st) => assert!(st.battery_pct.is_some()),
                    Body::Alarm(a) => assert!(a.alarms.is_empty(), "{a:?}"),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(
            seals,
            [
                ("3800000001".to_string(), SealState::Sealed, 0),
                ("3800000001".to_string(), SealState::Opened, 3)
            ]
        );
        assert_eq!(lock.lock_id(), "3800000001");
        let (_, reply) = exchange(&mut s, &lock.heartbeat(), t0);
        assert!(matches!(
            reply,
            ReplyBody::General {
                result: GeneralResult::Ok,
                ..
            }
        ));
    }

    fn plan(addr: std::net::SocketAddr, secret: Option<&str>, terminals: u64) -> Plan {
        Plan {
            connect: addr.to_string(),
            secret: secret.map(|s| s.as_bytes().to_vec()),
            phones: (0..terminals)
                .map(|i| format!("1380000{:04}", i + 1))
                .collect(),
            interval: Duration::from_millis(20),
            heartbeat: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(10),
            count: Some(4),
            open_seal_after: Some(2),
            seed: 3,
        }
    }

    /// The simulator against the real `jt808_tcp` source over a redb intake in a tempdir.
    #[tokio::test]
    async fn terminals_against_the_real_source_store_their_reports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (buffer, report) = crate::buffer::open(Engine::Redb, dir.path()).expect("open");
        let metrics = Metrics::new();
        let site = SiteId::new("gate-1").expect("site");
        let (intake, join) = Intake::start(
            buffer.clone(),
            site.clone(),
            IntakeConfig::default(),
            metrics.clone(),
            report,
        )
        .expect("intake");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cfg: Jt808TcpConfig =
            toml::from_str(&format!("name = \"jt808\"\nauth_secret = \"{SECRET}\"\n"))
                .expect("cfg");
        let (stop_source, shutdown) = Shutdown::new();
        let ctx = SourceContext {
            site,
            name: Arc::from("jt808"),
            intake: intake.clone(),
            metrics: metrics.source("jt808"),
            shutdown,
        };
        let source = tokio::spawn(serve(listener, cfg, ctx));

        let (_keep, stop) = watch::channel(false);
        // Two terminals that register, then one that authenticates with its derived code, and
        // one with a wrong secret, which registers when its code is refused.
        let mut summaries = run_terminals(plan(addr, None, 2), stop.clone()).await;
        let mut direct = plan(addr, Some(SECRET), 1);
        direct.phones = vec!["13800000003".into()];
        summaries.extend(run_terminals(direct, stop.clone()).await);
        let mut wrong = plan(addr, Some("not-the-secret"), 1);
        wrong.phones = vec!["13800000004".into()];
        summaries.extend(run_terminals(wrong, stop).await);
        for (s, registered) in summaries.iter().zip([true, true, false, true]) {
            assert_eq!(
                (
                    s.reports,
                    s.confirmed,
                    s.unconfirmed,
                    s.registered,
                    &s.error
                ),
                (4, 4, 0, registered, &None),
                "{s}"
            );
            assert_eq!(s.opened.as_ref().map(|o| o.1), Some(3), "{s}");
        }

        let events: Vec<Event> = buffer
            .read_from(Seq::ZERO, usize::MAX, usize::MAX)
            .expect("read")
            .into_iter()
            .map(|r| serde_json::from_slice(&r.payload).expect("event"))
            .collect();
        let mut positions: BTreeMap<String, usize> = BTreeMap::new();
        let mut seals = Vec::new();
        for e in &events {
            match &e.body {
                Body::Position(p) => *positions.entry(p.device_id.clone()).or_default() += 1,
                Body::Seal(s) => seals.push((s.seal_id.0.clone(), s.state)),
                _ => {}
            }
        }
        assert_eq!(positions.len(), 4);
        assert!(positions.values().all(|&n| n == 4), "{positions:?}");
        seals.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(seals.len(), 8, "{seals:?}");
        for pair in seals.chunks(2) {
            let states: Vec<SealState> = pair.iter().map(|s| s.1).collect();
            assert!(states.contains(&SealState::Sealed) && states.contains(&SealState::Opened));
        }
        let line = summaries[0].to_string();
        assert!(
            line.starts_with("terminal 13800000001: 4 reports, 4 confirmed, 0 resent"),
            "{line}"
        );
        assert!(
            line.ends_with("e-lock 3800000001 opened at report 3"),
            "{line}"
        );

        stop_source.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), source)
            .await
            .expect("the source stops")
            .expect("joined")
            .expect("no source error");
        drop(intake);
        tokio::task::spawn_blocking(move || join.join())
            .await
            .expect("intake joins");
    }

    /// A platform that answers the first report "failure" and ignores the second send of the
    /// second report: both are sent again, with their serial numbers, and confirmed.
    #[tokio::test]
    async fn reports_are_resent_after_a_failure_or_no_reply() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let platform = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut s = session();
            let mut buf = vec![0u8; 4096];
            let mut locations = Vec::new();
            loop {
                let n = stream.read(&mut buf).await.expect("read");
                if n == 0 {
                    return locations;
                }
                for x in s.feed(&buf[..n], Utc::now()).exchanges {
                    let (Some(h), Some(mut reply)) = (x.header, x.reply) else {
                        continue;
                    };
                    if h.msg_id == MSG_LOCATION {
                        locations.push(h.serial);
                        match locations.len() {
                            1 => reply = reply.refused().expect("a general reply"),
                            3 => continue,
                            _ => {}
                        }
                    }
                    let wire = s.encode(&reply);
                    stream.write_all(&wire).await.expect("write");
                }
            }
        });
        let mut p = plan(addr, Some(SECRET), 1);
        p.count = Some(2);
        p.open_seal_after = None;
        p.reply_timeout = Duration::from_millis(200);
        let (_keep, stop) = watch::channel(false);
        let summaries = run_terminals(p, stop).await;
        let s = &summaries[0];
        assert_eq!(
            (
                s.reports,
                s.confirmed,
                s.resent,
                s.unconfirmed,
                s.connections
            ),
            (2, 2, 2, 0, 1),
            "{s}"
        );
        // auth = serial 0; report 1 = serial 1, twice; report 2 = serial 2, twice.
        assert_eq!(platform.await.expect("platform"), [1, 1, 2, 2]);
    }

    #[test]
    fn arguments_are_checked() {
        let args = |extra: &[&str]| {
            use clap::Parser;
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                a: Jt808Args,
            }
            let mut argv = vec!["x", "--connect", "127.0.0.1:6808"];
            argv.extend_from_slice(extra);
            Plan::from_args(&Cli::parse_from(argv).a)
        };
        let p = args(&["--terminals", "3", "--first-phone", "013800000098"]).expect("valid");
        assert_eq!(p.phones, ["013800000098", "013800000099", "013800000100"]);
        assert_eq!(p.interval, Duration::from_secs(5));
        let err = |extra: &[&str]| args(extra).unwrap_err().to_string();
        assert!(err(&["--interval", "0"]).contains("--interval must be"));
        assert!(err(&["--first-phone", "12a"]).contains("1 to 12 digits"));
        assert!(err(&["--first-phone", "999999999999", "--terminals", "2"]).contains("12 digits"));
        assert!(err(&["--terminals", "0"]).contains("--terminals"));
    }
}
