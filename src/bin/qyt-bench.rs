//! `qyt-bench`: the system's figures, measured on real processes — `qyt-agent` and `qyt-hub`
//! from beside this binary, a real Mosquitto as the gateway broker, devices publishing over
//! MQTT — and set beside the peer baseline (Mosquitto bridged to Mosquitto) run on the same
//! machine in the same run.
//!
//! ```sh
//! cargo build --release --workspace && ./target/release/qyt-bench [--quick] [--skip-peer]
//! ```
//!
//! Prints each figure as it is measured, then a summary table against the targets and the peer,
//! then one `BENCH_JSON` line with every figure. Everything runs on loopback in a temp dir that
//! is removed at the end (unless `--keep`); every wait is bounded.

#[path = "../bench/mod.rs"]
mod bench;

use anyhow::{bail, Context, Result};
use bench::gateway::{mqtt_source, Device, Mosquitto, MOSQUITTO};
use bench::peer::{PeerFigures, PeerRun};
use bench::system::{simulate_source, wait_for, Agent, Bins, Hub};
use clap::Parser;
use qyt_agent::buffer::intake::{measure_ingest_rate, IntakeConfig};
use qyt_agent::buffer::Engine;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Benchmark of QuanYuTong on real processes, beside the Mosquitto-bridge peer.
#[derive(Parser, Debug)]
struct Args {
    /// Smaller counts everywhere: a smoke run of every step in a couple of minutes.
    #[arg(long)]
    quick: bool,
    /// Do not run the peer baseline.
    #[arg(long)]
    skip_peer: bool,
    /// Events per in-process ingest measurement [default: 200000; quick 20000].
    #[arg(long)]
    ingest_events: Option<u64>,
    /// Backlog filled while the hub is down, then drained [default: 1000000; quick 100000].
    #[arg(long)]
    backlog_events: Option<u64>,
    /// Events through agent and hub with the simulate source [default: 300000; quick 30000].
    #[arg(long)]
    e2e_events: Option<u64>,
    /// Device messages per MQTT throughput run [default: 200000; quick 20000].
    #[arg(long)]
    mqtt_messages: Option<u64>,
    /// Devices publishing at once in the MQTT throughput runs.
    #[arg(long, default_value_t = 2)]
    devices: u64,
    /// QoS 1 messages in flight per device.
    #[arg(long, default_value_t = 100)]
    window: u16,
    /// Paced publish rate for the latency figure (messages/s).
    #[arg(long, default_value_t = 1000)]
    latency_rate: u64,
    /// Duration of the paced publishing [default: 20; quick 5].
    #[arg(long)]
    latency_seconds: Option<u64>,
    /// Messages published while the hub is down before the agent is killed [default: 20000;
    /// quick 2000].
    #[arg(long)]
    crash_messages: Option<u64>,
    /// Messages in the peer's throughput run [default: 100000; quick 10000]; its outage run
    /// uses --crash-messages.
    #[arg(long)]
    peer_messages: Option<u64>,
    /// JT/T 808 terminals connected to one agent at once [default: 10000; quick 1000].
    #[arg(long)]
    jt808_terminals: Option<u64>,
    /// Seconds the JT/T 808 terminals are measured for, each reporting every 10 s [default: 30;
    /// quick 10].
    #[arg(long)]
    jt808_seconds: Option<u64>,
    /// Run only the JT/T 808 step (sizing a deployment of many terminals).
    #[arg(long)]
    jt808_only: bool,
    #[arg(long, default_value = "../shared/bench/peer_mosquitto_bridge.py")]
    peer_script: PathBuf,
    /// Keep the temp dir (configs, logs, databases) and print where it is.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Serialize)]
struct Sizes {
    ingest_events: u64,
    backlog_events: u64,
    e2e_events: u64,
    mqtt_messages: u64,
    devices: u64,
    window: u16,
    latency_rate: u64,
    latency_seconds: u64,
    crash_messages: u64,
    peer_messages: u64,
    peer_outage_wait_s: u64,
    jt808_terminals: u64,
    jt808_seconds: u64,
}

impl Sizes {
    fn from(a: &Args) -> Result<Sizes> {
        let pick =
            |v: Option<u64>, full: u64, quick: u64| v.unwrap_or(if a.quick { quick } else { full });
        let s = Sizes {
            ingest_events: pick(a.ingest_events, 200_000, 20_000),
            backlog_events: pick(a.backlog_events, 1_000_000, 100_000),
            e2e_events: pick(a.e2e_events, 300_000, 30_000),
            mqtt_messages: pick(a.mqtt_messages, 200_000, 20_000),
            devices: a.devices,
            window: a.window,
            latency_rate: a.latency_rate,
            latency_seconds: pick(a.latency_seconds, 20, 5),
            crash_messages: pick(a.crash_messages, 20_000, 2_000),
            peer_messages: pick(a.peer_messages, 100_000, 10_000),
            // The peer waits this long for a backlog it lost; 60 s is the script's default.
            peer_outage_wait_s: if a.quick { 10 } else { 60 },
            jt808_terminals: pick(a.jt808_terminals, 10_000, 1_000),
            jt808_seconds: pick(a.jt808_seconds, 30, 10),
        };
        if [
            s.ingest_events,
            s.backlog_events,
            s.e2e_events,
            s.mqtt_messages,
        ]
        .into_iter()
        .chain([
            s.devices,
            s.latency_rate,
            s.latency_seconds,
            s.crash_messages,
            s.jt808_terminals,
            s.jt808_seconds,
        ])
        .any(|v| v == 0)
            || s.window == 0
        {
            bail!("every size must be at least 1");
        }
        Ok(s)
    }
}

#[derive(Debug, Serialize)]
struct Env {
    cpus: usize,
    kernel: String,
    mosquitto: String,
    loadavg_at_start: String,
    loadavg_at_end: String,
    wall_s: f64,
}

#[derive(Debug, Serialize)]
struct IngestFigure {
    engine: &'static str,
    submitters: usize,
    events_per_submit: usize,
    events: u64,
    seconds: f64,
    events_per_s: f64,
    commits: u64,
    disk_bytes: u64,
}

#[derive(Debug, Serialize)]
struct BacklogFigures {
    events: u64,
    /// From starting the agent (simulate, rate 0, hub down) until `events` are durable.
    fill_s: f64,
    fill_events_per_s: f64,
    fill_agent_cpu_s_per_100k: f64,
    buffer_disk_bytes: u64,
    agent_vmhwm_full_kib: u64,
    agent_vmrss_full_kib: u64,
    /// From starting the hub until the agent's buffer is empty and the hub stored everything.
    drain_s: f64,
    drain_events_per_s: f64,
    hub_start_s: f64,
    drain_agent_cpu_s: f64,
    drain_hub_cpu_s: f64,
    agent_vmhwm_after_drain_kib: u64,
    agent_vmrss_after_drain_kib: u64,
    hub_vmhwm_kib: u64,
}

#[derive(Debug, Serialize)]
struct SimE2eFigures {
    events: u64,
    /// From starting the agent until the hub stored every event.
    seconds: f64,
    events_per_s: f64,
    agent_cpu_s_per_100k: f64,
    hub_cpu_s_per_100k: f64,
    agent_vmhwm_kib: u64,
    hub_vmhwm_kib: u64,
}

#[derive(Debug, Serialize)]
struct MqttFigures {
    hub_up: bool,
    messages: u64,
    devices: u64,
    window: u16,
    /// Until every device message was PUBACKed by the gateway broker.
    publish_s: f64,
    publish_msgs_per_s: f64,
    /// Until the agent made every message durable.
    durable_s: f64,
    durable_events_per_s: f64,
    /// Until the hub stored every message (hub up only).
    stored_s: Option<f64>,
    stored_events_per_s: Option<f64>,
    agent_cpu_s_per_100k: f64,
    broker_cpu_s_per_100k: f64,
    hub_cpu_s_per_100k: Option<f64>,
    /// How well the group commit batched the one-message submissions of the MQTT source.
    events_per_group_commit: f64,
    agent_vmhwm_kib: u64,
}

#[derive(Debug, Serialize)]
struct LatencyFigures {
    rate_per_s: u64,
    seconds: u64,
    events: usize,
    /// Device publish (`observed_at`) → hub commit (`ingested_at`).
    total: Percentiles,
    /// Device publish → the agent's reception (`received_at`): gateway broker and MQTT source.
    to_agent: Percentiles,
    /// The agent's reception → hub commit: group commit, uplink, hub's broker and store.
    agent_to_hub: Percentiles,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `ms` (not empty).
    fn of(mut ms: Vec<f64>) -> Percentiles {
        ms.sort_by(f64::total_cmp);
        let pct =
            |p: f64| ms[((p / 100.0 * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Percentiles {
            p50_ms: round(pct(50.0), 1),
            p90_ms: round(pct(90.0), 1),
            p99_ms: round(pct(99.0), 1),
            max_ms: round(pct(100.0), 1),
        }
    }
}

#[derive(Debug, Serialize)]
struct CrashFigures {
    messages: u64,
    acked_by_gateway: u64,
    reached_hub: u64,
    lost: u64,
    duplicates: u64,
    /// From starting the hub (after the agent's restart) until everything was stored.
    recovered_s: f64,
    agent_vmhwm_idle_kib: u64,
    agent_vmhwm_backlog_kib: u64,
    /// Agent CPU while taking the messages from the broker into the buffer (no uplink).
    source_agent_cpu_s_per_100k: f64,
}

#[derive(Debug, Serialize)]
struct Figures {
    sizes: Sizes,
    ingest_in_process: Vec<IngestFigure>,
    backlog: BacklogFigures,
    e2e_simulate: SimE2eFigures,
    mqtt_buffer: MqttFigures,
    mqtt_e2e: MqttFigures,
    latency: LatencyFigures,
    crash: CrashFigures,
    jt808: Jt808Figures,
    peer: Option<PeerFigures>,
    env: Env,
}

/// 8: JT/T 808 terminals held by one agent, each reporting every 10 s.
#[derive(Debug, Serialize)]
struct Jt808Figures {
    terminals: u64,
    seconds: u64,
    connections_held: u64,
    reports_per_s: f64,
    events_durable_per_s: f64,
    agent_cpu_s_per_s: f64,
    agent_vmhwm_kib: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qyt-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    raise_fd_limit();
    let sizes = Sizes::from(args)?;
    let bins = Bins::beside_me()?;
    if !Path::new(MOSQUITTO).exists() {
        bail!("{MOSQUITTO} is needed as the gateway broker (apt-get install mosquitto)");
    }
    let auth = hub_auth()?;
    let tmp = tempfile::Builder::new().prefix("qyt-bench-").tempdir()?;
    let root = tmp.path().to_path_buf();
    let loadavg_at_start = loadavg();
    println!(
        "qyt-bench{}: agent {}, hub {}, work dir {}, load average {loadavg_at_start}",
        if args.quick { " --quick" } else { "" },
        bins.agent.display(),
        bins.hub.display(),
        root.display()
    );

    if args.jt808_only {
        let f = jt808_terminals(&bins, &root.join("jt808"), &auth, &sizes)?;
        println!("BENCH_JSON {}", serde_json::to_string(&f)?);
        return Ok(());
    }
    let ingest_in_process = ingest_in_process(&root.join("ingest"), sizes.ingest_events)?;
    let backlog = backlog(&bins, &root.join("backlog"), &auth, sizes.backlog_events)?;
    let e2e_simulate = e2e_simulate(&bins, &root.join("e2e"), &auth, sizes.e2e_events)?;
    let (mqtt_buffer, mqtt_e2e, latency) = through_mqtt(&bins, &root.join("mqtt"), &auth, &sizes)?;
    let crash = crash_test(&bins, &root.join("crash"), &auth, &sizes)?;
    let jt808 = jt808_terminals(&bins, &root.join("jt808"), &auth, &sizes)?;
    let peer = if args.skip_peer {
        None
    } else {
        Some(peer(args, &sizes, &root.join("peer"))?)
    };

    let figures = Figures {
        sizes,
        ingest_in_process,
        backlog,
        e2e_simulate,
        mqtt_buffer,
        mqtt_e2e,
        latency,
        crash,
        jt808,
        peer,
        env: Env {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .into(),
            mosquitto: mosquitto_version(),
            loadavg_at_start,
            loadavg_at_end: loadavg(),
            wall_s: round(started.elapsed().as_secs_f64(), 1),
        },
    };
    summary(&figures);
    println!("BENCH_JSON {}", serde_json::to_string(&figures)?);
    if args.keep {
        println!("kept {}", tmp.keep().display());
    }
    Ok(())
}

/// The `[[api.tokens]]` and `[[sites]]` of the shipped hub config: the demo credentials the
/// bench's agents and API calls use.
fn hub_auth() -> Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/hub.toml");
    let shipped = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let start = shipped
        .find("[[api.tokens]]")
        .with_context(|| format!("{path} has no [[api.tokens]]"))?;
    Ok(shipped[start..].to_string())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mosquitto_version() -> String {
    std::process::Command::new(MOSQUITTO)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(String::from)
        })
        .unwrap_or_default()
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn per_100k(cpu_s: f64, events: u64) -> f64 {
    round(cpu_s / events as f64 * 1e5, 3)
}

fn rate(events: u64, d: Duration) -> f64 {
    (events as f64 / d.as_secs_f64()).round()
}

/// 1234567.8 → "1,234,568".
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// 1. Durable ingest through the intake in this process, both engines, in the two shapes the
///    sources submit in: the simulate source's chunks, and one event per submission with many
///    in flight as the MQTT source does.
fn ingest_in_process(dir: &Path, events: u64) -> Result<Vec<IngestFigure>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    for (engine, name) in [(Engine::Redb, "redb"), (Engine::Sled, "sled")] {
        for (submitters, per_submit) in [(4, 256), (64, 1)] {
            let d = dir.join(format!("{name}-{submitters}x{per_submit}"));
            let r = rt
                .block_on(measure_ingest_rate(
                    engine,
                    &d,
                    IntakeConfig::default(),
                    events,
                    submitters,
                    per_submit,
                ))
                .with_context(|| format!("in-process ingest, {name}"))?;
            println!(
                "[1] durable ingest in-process, {name}, {submitters} submitters x {per_submit} events: \
                 {} events/s ({} events, {:.2} s, {} group commits, {:.0} MB on disk)",
                thousands(r.events_per_s),
                r.events,
                r.seconds,
                r.commits,
                r.disk_bytes as f64 / 1e6
            );
            out.push(IngestFigure {
                engine: name,
                submitters,
                events_per_submit: per_submit,
                events: r.events,
                seconds: round(r.seconds, 3),
                events_per_s: r.events_per_s.round(),
                commits: r.commits,
                disk_bytes: r.disk_bytes,
            });
            std::fs::remove_dir_all(&d)?;
        }
    }
    Ok(out)
}

/// 4, 5 (and 1 as a process). The agent fills its buffer from the simulate source while its hub
/// is down, then the hub starts and the backlog drains.
fn backlog(bins: &Bins, dir: &Path, auth: &str, events: u64) -> Result<BacklogFigures> {
    let mut hub = Hub::configure(bins, &dir.join("hub"), auth)?;
    let mut agent = Agent::configure(
        bins,
        &dir.join("agent"),
        hub.broker,
        &simulate_source(events),
    )?;
    let fill_timeout = Duration::from_secs(60 + events / 5_000);
    let t0 = Instant::now();
    agent.start()?;
    wait_for(
        fill_timeout,
        Duration::from_millis(20),
        "the backlog to be durable",
        || {
            agent.proc()?;
            Ok((agent.durable()? >= events).then_some(()))
        },
    )?;
    let fill = t0.elapsed();
    let fill_cpu = agent.proc()?.cpu_seconds()?;
    let disk = agent.metric("qyt_agent_buffer_disk_bytes")? as u64;
    let (hwm_full, rss_full) = (
        agent.proc()?.status_kib("VmHWM")?,
        agent.proc()?.status_kib("VmRSS")?,
    );
    println!(
        "[1] durable ingest, qyt-agent process, simulate source, hub down: {} events/s \
         ({events} events in {:.2} s, agent {:.2} CPU-s per 100k, {:.0} MB on disk)",
        thousands(rate(events, fill)),
        fill.as_secs_f64(),
        per_100k(fill_cpu, events),
        disk as f64 / 1e6
    );
    println!(
        "[5] agent memory holding {events} events: VmHWM {}, VmRSS {}",
        mib(hwm_full),
        mib(rss_full)
    );

    let agent_cpu0 = agent.proc()?.cpu_seconds()?;
    let t1 = Instant::now();
    hub.start()?;
    let hub_start = t1.elapsed();
    wait_for(
        Duration::from_secs(60 + events / 5_000),
        Duration::from_millis(20),
        "the backlog to drain",
        || {
            agent.proc()?;
            Ok((agent.buffered()? == 0 && hub.stored()? >= events).then_some(()))
        },
    )?;
    let drain = t1.elapsed();
    let drain_agent_cpu = agent.proc()?.cpu_seconds()? - agent_cpu0;
    let drain_hub_cpu = hub.proc()?.cpu_seconds()?;
    let (hwm_after, rss_after) = (
        agent.proc()?.status_kib("VmHWM")?,
        agent.proc()?.status_kib("VmRSS")?,
    );
    let hub_hwm = hub.proc()?.status_kib("VmHWM")?;
    println!(
        "[4] drain of {events} events after the hub starts: {:.2} s ({} events/s; hub ready after {:.2} s; \
         agent {:.2} CPU-s, hub {:.2} CPU-s)",
        drain.as_secs_f64(),
        thousands(rate(events, drain)),
        hub_start.as_secs_f64(),
        drain_agent_cpu,
        drain_hub_cpu
    );
    println!(
        "[5] agent memory after the drain: VmHWM {} (peak of the whole run), VmRSS {}; hub VmHWM {}",
        mib(hwm_after),
        mib(rss_after),
        mib(hub_hwm)
    );
    agent.stop()?;
    hub.stop()?;
    Ok(BacklogFigures {
        events,
        fill_s: round(fill.as_secs_f64(), 3),
        fill_events_per_s: rate(events, fill),
        fill_agent_cpu_s_per_100k: per_100k(fill_cpu, events),
        buffer_disk_bytes: disk,
        agent_vmhwm_full_kib: hwm_full,
        agent_vmrss_full_kib: rss_full,
        drain_s: round(drain.as_secs_f64(), 3),
        drain_events_per_s: rate(events, drain),
        hub_start_s: round(hub_start.as_secs_f64(), 3),
        drain_agent_cpu_s: round(drain_agent_cpu, 2),
        drain_hub_cpu_s: round(drain_hub_cpu, 2),
        agent_vmhwm_after_drain_kib: hwm_after,
        agent_vmrss_after_drain_kib: rss_after,
        hub_vmhwm_kib: hub_hwm,
    })
}

/// 3. Agent (simulate source, as fast as possible) → hub's broker → hub's store and ack.
fn e2e_simulate(bins: &Bins, dir: &Path, auth: &str, events: u64) -> Result<SimE2eFigures> {
    let mut hub = Hub::configure(bins, &dir.join("hub"), auth)?;
    hub.start()?;
    let mut agent = Agent::configure(
        bins,
        &dir.join("agent"),
        hub.broker,
        &simulate_source(events),
    )?;
    let hub_cpu0 = hub.proc()?.cpu_seconds()?;
    let t0 = Instant::now();
    agent.start()?;
    wait_for(
        Duration::from_secs(60 + events / 5_000),
        Duration::from_millis(20),
        "the hub to store every simulated event",
        || {
            agent.proc()?;
            Ok((hub.stored()? >= events).then_some(()))
        },
    )?;
    let took = t0.elapsed();
    let agent_cpu = agent.proc()?.cpu_seconds()?;
    let hub_cpu = hub.proc()?.cpu_seconds()? - hub_cpu0;
    let f = SimE2eFigures {
        events,
        seconds: round(took.as_secs_f64(), 3),
        events_per_s: rate(events, took),
        agent_cpu_s_per_100k: per_100k(agent_cpu, events),
        hub_cpu_s_per_100k: per_100k(hub_cpu, events),
        agent_vmhwm_kib: agent.proc()?.status_kib("VmHWM")?,
        hub_vmhwm_kib: hub.proc()?.status_kib("VmHWM")?,
    };
    println!(
        "[3] end to end, simulate source → hub store and ack: {} events/s ({events} events in {:.2} s; \
         per 100k: agent {:.2} CPU-s, hub {:.2} CPU-s; VmHWM agent {}, hub {})",
        thousands(f.events_per_s),
        f.seconds,
        f.agent_cpu_s_per_100k,
        f.hub_cpu_s_per_100k,
        mib(f.agent_vmhwm_kib),
        mib(f.hub_vmhwm_kib)
    );
    agent.stop()?;
    hub.stop()?;
    Ok(f)
}

/// 2, 6: devices → gateway Mosquitto → agent's MQTT source → hub. One gateway, hub and agent
/// throughout: throughput into the buffer with the hub down, end to end with the hub up, then
/// the paced latency.
fn through_mqtt(
    bins: &Bins,
    dir: &Path,
    auth: &str,
    sizes: &Sizes,
) -> Result<(MqttFigures, MqttFigures, LatencyFigures)> {
    let gw = Mosquitto::start(&dir.join("gateway"))?;
    let mut hub = Hub::configure(bins, &dir.join("hub"), auth)?;
    let mut agent = Agent::configure(bins, &dir.join("agent"), hub.broker, &mqtt_source(gw.addr))?;
    agent.start()?;
    prime(&gw, &agent)?;

    let n = sizes.mqtt_messages;
    let buffer_only = mqtt_throughput(&gw, &mut agent, None, n, sizes, "a")?;
    print_mqtt(&buffer_only);

    hub.start()?;
    wait_for(
        Duration::from_secs(60 + n / 5_000),
        Duration::from_millis(20),
        "the MQTT backlog to drain to the hub",
        || {
            agent.proc()?;
            Ok((agent.buffered()? == 0).then_some(()))
        },
    )?;
    let e2e = mqtt_throughput(&gw, &mut agent, Some(&hub), n, sizes, "b")?;
    print_mqtt(&e2e);

    let latency = latency(&gw, &hub, sizes.latency_rate, sizes.latency_seconds)?;
    let show = |p: &Percentiles| {
        format!(
            "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
        )
    };
    println!(
        "[6] latency device publish → hub commit at {}/s for {} s ({} events): {}\n    \
         of which publish → agent reception: {}\n    agent reception → hub commit: {}",
        latency.rate_per_s,
        latency.seconds,
        latency.events,
        show(&latency.total),
        show(&latency.to_agent),
        show(&latency.agent_to_hub)
    );
    agent.stop()?;
    hub.stop()?;
    Ok((buffer_only, e2e, latency))
}

/// 7 (and 5 for the MQTT source): the kill -9 test, on a gateway, hub and agent of its own, so
/// that the agent's memory is that of a fresh agent holding just this backlog — not of one that
/// already passed hundreds of thousands of messages (whose ids it keeps for duplicate detection).
fn crash_test(bins: &Bins, dir: &Path, auth: &str, sizes: &Sizes) -> Result<CrashFigures> {
    let gw = Mosquitto::start(&dir.join("gateway"))?;
    let mut hub = Hub::configure(bins, &dir.join("hub"), auth)?;
    hub.start()?;
    let mut agent = Agent::configure(bins, &dir.join("agent"), hub.broker, &mqtt_source(gw.addr))?;
    agent.start()?;
    prime(&gw, &agent)?;
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(20),
        "the probes to reach the hub",
        || {
            agent.proc()?;
            Ok((agent.buffered()? == 0).then_some(()))
        },
    )?;
    let crash = crash(&gw, &mut agent, &mut hub, sizes)?;
    println!(
        "[7] kill -9 of the agent holding {} acknowledged messages (hub down): {} reached the hub, \
         {} lost, {} duplicates; all stored {:.2} s after the hub started",
        crash.acked_by_gateway, crash.reached_hub, crash.lost, crash.duplicates, crash.recovered_s
    );
    println!(
        "[5] agent memory, MQTT source: VmHWM idle {}, holding {} messages {}; \
         source → buffer {:.2} CPU-s per 100k",
        mib(crash.agent_vmhwm_idle_kib),
        crash.messages,
        mib(crash.agent_vmhwm_backlog_kib),
        crash.source_agent_cpu_s_per_100k
    );
    agent.stop()?;
    hub.stop()?;
    Ok(crash)
}

/// Publishes probes until the agent has made one durable: from then on its subscription exists
/// and the gateway keeps messages for it. Waits until the probes have settled so that none is
/// counted in the next measurement.
fn prime(gw: &Mosquitto, agent: &Agent) -> Result<()> {
    let mut probe = Device::connect(gw.addr, "probe", 10)?;
    let d0 = agent.durable()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while agent.durable()? == d0 {
        if Instant::now() > deadline {
            bail!("the agent never made a probe message durable");
        }
        probe.publish(&format!("probe-{i}"), deadline)?;
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    probe.wait_acked(deadline)?;
    let mut last = agent.durable()?;
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(300),
        "probes to settle",
        || {
            let now = agent.durable()?;
            Ok((std::mem::replace(&mut last, now) == now).then_some(()))
        },
    )
}

/// `devices` devices publish `n` messages between them, as fast as their windows allow, while
/// the agent's durable count (and the hub's stored count when `hub` is up) are watched.
fn mqtt_throughput(
    gw: &Mosquitto,
    agent: &mut Agent,
    hub: Option<&Hub>,
    n: u64,
    sizes: &Sizes,
    tag: &str,
) -> Result<MqttFigures> {
    let d0 = agent.durable()?;
    let commits0 = agent.metric("qyt_agent_group_commits_total")?;
    let s0 = hub.map(Hub::stored).transpose()?;
    let mut devices = (0..sizes.devices)
        .map(|i| Device::connect(gw.addr, &format!("{tag}{i}"), sizes.window))
        .collect::<Result<Vec<_>>>()?;
    let agent_cpu0 = agent.proc()?.cpu_seconds()?;
    let broker_cpu0 = gw.proc.cpu_seconds()?;
    let hub_cpu0 = hub.map(|h| h.proc()?.cpu_seconds()).transpose()?;
    let timeout = Duration::from_secs(60 + n / 2_000);
    let t0 = Instant::now();
    let agent_ref = &*agent;
    let (publish, durable, stored) = std::thread::scope(|s| -> Result<_> {
        let publishers: Vec<_> = devices
            .iter_mut()
            .enumerate()
            .map(|(i, d)| {
                let i = i as u64;
                let share = n / sizes.devices + u64::from(i < n % sizes.devices);
                let name = format!("{tag}{i}");
                s.spawn(move || -> Result<Duration> {
                    d.publish_all((0..share).map(|k| format!("{name}-{k}")), timeout)?;
                    Ok(t0.elapsed())
                })
            })
            .collect();
        let (mut durable, mut stored) = (None, None);
        let watched = wait_for(
            timeout,
            Duration::from_millis(20),
            "the MQTT run to complete",
            || {
                if durable.is_none() && agent_ref.durable()? >= d0 + n {
                    durable = Some(t0.elapsed());
                }
                if let (Some(h), Some(s0), None) = (hub, s0, stored) {
                    if h.stored()? >= s0 + n {
                        stored = Some(t0.elapsed());
                    }
                }
                Ok((durable.is_some() && (hub.is_none() || stored.is_some())).then_some(()))
            },
        );
        let mut publish = Duration::ZERO;
        for p in publishers {
            let took = p
                .join()
                .map_err(|_| anyhow::anyhow!("a publishing thread panicked"))??;
            publish = publish.max(took);
        }
        watched?;
        Ok((publish, durable.unwrap_or_default(), stored))
    })?;
    let agent_cpu = agent.proc()?.cpu_seconds()? - agent_cpu0;
    let broker_cpu = gw.proc.cpu_seconds()? - broker_cpu0;
    let commits = agent.metric("qyt_agent_group_commits_total")? - commits0;
    let hub_cpu = match (hub, hub_cpu0) {
        (Some(h), Some(c0)) => Some(h.proc()?.cpu_seconds()? - c0),
        _ => None,
    };
    Ok(MqttFigures {
        hub_up: hub.is_some(),
        messages: n,
        devices: sizes.devices,
        window: sizes.window,
        publish_s: round(publish.as_secs_f64(), 3),
        publish_msgs_per_s: rate(n, publish),
        durable_s: round(durable.as_secs_f64(), 3),
        durable_events_per_s: rate(n, durable),
        stored_s: stored.map(|d| round(d.as_secs_f64(), 3)),
        stored_events_per_s: stored.map(|d| rate(n, d)),
        agent_cpu_s_per_100k: per_100k(agent_cpu, n),
        broker_cpu_s_per_100k: per_100k(broker_cpu, n),
        hub_cpu_s_per_100k: hub_cpu.map(|c| per_100k(c, n)),
        events_per_group_commit: round(n as f64 / commits.max(1.0), 1),
        agent_vmhwm_kib: agent.proc()?.status_kib("VmHWM")?,
    })
}

fn print_mqtt(f: &MqttFigures) {
    match (f.stored_s, f.stored_events_per_s) {
        (Some(s), Some(r)) => println!(
            "[2] MQTT end to end, devices → gateway → agent → hub store: {} events/s stored at the hub \
             ({} messages in {s:.2} s; durable at the agent {} /s, {} per group commit; gateway \
             PUBACKed {} /s; per 100k: agent {:.2} CPU-s, gateway broker {:.2} CPU-s, hub {:.2} CPU-s)",
            thousands(r),
            f.messages,
            thousands(f.durable_events_per_s),
            f.events_per_group_commit,
            thousands(f.publish_msgs_per_s),
            f.agent_cpu_s_per_100k,
            f.broker_cpu_s_per_100k,
            f.hub_cpu_s_per_100k.unwrap_or_default()
        ),
        _ => println!(
            "[2] MQTT source → agent buffer, hub down: {} events/s durable ({} messages in {:.2} s, \
             {} per group commit; gateway PUBACKed {} /s; per 100k: agent {:.2} CPU-s, gateway broker \
             {:.2} CPU-s)",
            thousands(f.durable_events_per_s),
            f.messages,
            f.durable_s,
            f.events_per_group_commit,
            thousands(f.publish_msgs_per_s),
            f.agent_cpu_s_per_100k,
            f.broker_cpu_s_per_100k
        ),
    }
}

/// 6. One device publishes at a fixed rate, each message carrying its publish time; the hub's
///    API gives each stored event's `observed_at` (that time) and `ingested_at` (its commit).
fn latency(gw: &Mosquitto, hub: &Hub, per_s: u64, seconds: u64) -> Result<LatencyFigures> {
    let after = hub.contiguous()?;
    let s0 = hub.stored()?;
    let n = per_s * seconds;
    let mut device = Device::connect(gw.addr, "lat", 100)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds + 30);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / per_s as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        device.publish(&format!("lat-{i}"), deadline)?;
    }
    device.wait_acked(deadline)?;
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(50),
        "every paced message stored",
        || Ok((hub.stored()? >= s0 + n).then_some(())),
    )?;
    let time = |e: &serde_json::Value, key: &str| -> Result<f64> {
        let text = e[key]
            .as_str()
            .with_context(|| format!("event without {key}"))?;
        Ok(chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("{key} {text:?}"))?
            .timestamp_micros() as f64
            / 1000.0)
    };
    let mut stamps = Vec::new();
    for e in hub.events_after(after)? {
        if e["seal_id"].as_str().is_some_and(|s| s.starts_with("lat-")) {
            stamps.push([
                time(&e, "observed_at")?,
                time(&e, "received_at")?,
                time(&e, "ingested_at")?,
            ]);
        }
    }
    if stamps.is_empty() {
        bail!("no paced message found at the hub");
    }
    let span =
        |from: usize, to: usize| Percentiles::of(stamps.iter().map(|t| t[to] - t[from]).collect());
    Ok(LatencyFigures {
        rate_per_s: per_s,
        seconds,
        events: stamps.len(),
        total: span(0, 2),
        to_agent: span(0, 1),
        agent_to_hub: span(1, 2),
    })
}

/// 7. With the hub down, devices publish and the gateway PUBACKs; once the agent holds every
///    message durably it is killed with SIGKILL and restarted, then the hub starts. Counts what
///    reached the hub's store, and how often.
fn crash(gw: &Mosquitto, agent: &mut Agent, hub: &mut Hub, sizes: &Sizes) -> Result<CrashFigures> {
    let n = sizes.crash_messages;
    let idle_hwm = agent.proc()?.status_kib("VmHWM")?;
    let after = hub.contiguous()?;
    let s0 = hub.stored()?;
    hub.stop()?;

    let d0 = agent.durable()?;
    let cpu0 = agent.proc()?.cpu_seconds()?;
    let timeout = Duration::from_secs(60 + n / 2_000);
    let mut devices = (0..sizes.devices)
        .map(|i| Device::connect(gw.addr, &format!("crash{i}"), sizes.window))
        .collect::<Result<Vec<_>>>()?;
    std::thread::scope(|s| -> Result<()> {
        let publishers: Vec<_> = devices
            .iter_mut()
            .enumerate()
            .map(|(i, d)| {
                let i = i as u64;
                let share = n / sizes.devices + u64::from(i < n % sizes.devices);
                s.spawn(move || d.publish_all((0..share).map(|k| format!("crash{i}-{k}")), timeout))
            })
            .collect();
        for p in publishers {
            p.join()
                .map_err(|_| anyhow::anyhow!("a publishing thread panicked"))??;
        }
        Ok(())
    })?;
    let acked: u64 = devices
        .iter()
        .map(|d| d.acked.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    drop(devices);
    wait_for(
        timeout,
        Duration::from_millis(20),
        "the agent to hold every message durably",
        || {
            agent.proc()?;
            Ok((agent.durable()? >= d0 + n).then_some(()))
        },
    )?;
    let source_cpu = agent.proc()?.cpu_seconds()? - cpu0;
    let backlog_hwm = agent.proc()?.status_kib("VmHWM")?;

    agent.kill9();
    agent.start()?;
    let t0 = Instant::now();
    hub.start()?;
    // Bounded wait for the full count; if messages were lost it never comes, and what did
    // arrive is counted below.
    let deadline = t0 + Duration::from_secs(60);
    while Instant::now() < deadline && !(hub.stored()? >= s0 + n && agent.buffered()? == 0) {
        agent.proc()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    let recovered = t0.elapsed();
    let mut seen = std::collections::HashMap::<String, u64>::new();
    for e in hub.events_after(after)? {
        if let Some(id) = e["seal_id"].as_str().filter(|s| s.starts_with("crash")) {
            *seen.entry(id.to_string()).or_default() += 1;
        }
    }
    let unique = seen.len() as u64;
    let duplicates = seen.values().map(|c| c - 1).sum();
    Ok(CrashFigures {
        messages: n,
        acked_by_gateway: acked,
        reached_hub: unique,
        lost: n.saturating_sub(unique),
        duplicates,
        recovered_s: round(recovered.as_secs_f64(), 3),
        agent_vmhwm_idle_kib: idle_hwm,
        agent_vmhwm_backlog_kib: backlog_hwm,
        source_agent_cpu_s_per_100k: per_100k(source_cpu, n),
    })
}

/// 7. The peer, with the same message counts.
fn peer(args: &Args, sizes: &Sizes, dir: &Path) -> Result<PeerFigures> {
    if !Path::new(bench::peer::PYTHON).exists() || !args.peer_script.exists() {
        bail!(
            "the peer needs {} (with python3-paho-mqtt) and {}; or pass --skip-peer",
            bench::peer::PYTHON,
            args.peer_script.display()
        );
    }
    // The script runs in the peer's own directory: a path relative to ours would not resolve.
    let script = std::fs::canonicalize(&args.peer_script)
        .with_context(|| format!("cannot resolve {}", args.peer_script.display()))?;
    println!(
        "[7] peer: running {} (--n {}, --outage-n {}) …",
        script.display(),
        sizes.peer_messages,
        sizes.crash_messages
    );
    let p = PeerRun {
        script: &script,
        messages: sizes.peer_messages,
        outage_messages: sizes.crash_messages,
        outage_wait_s: sizes.peer_outage_wait_s,
    }
    .run(dir)?;
    println!(
        "[7] peer (Mosquitto bridge): {} msgs/s end to end ({} published/s), gateway {:.2} CPU-s per 100k \
         (central broker {:.2}); gateway VmHWM idle {}, with {} backlog {}; kill -9 of the gateway: \
         {} of {} acknowledged lost, {} duplicates; SIGTERM: {} lost ({:.0} s)",
        thousands(p.e2e_msgs_per_s),
        thousands(p.publish_msgs_per_s),
        p.gateway_cpu_s_per_100k,
        p.hub_cpu_s_per_100k,
        mib(p.gateway_vmhwm_idle_kib),
        p.backlog_messages,
        mib(p.gateway_vmhwm_backlog_kib),
        p.kill9_lost,
        p.kill9_acked,
        p.kill9_duplicates,
        p.sigterm_lost,
        p.wall_s
    );
    Ok(p)
}

/// The table: each figure, the peer's counterpart where it has one, the target and whether it
/// was met.
fn summary(f: &Figures) {
    let check = |ok: bool| if ok { "met" } else { "MISSED" };
    let peer = f.peer.as_ref();
    let dash = || "—".to_string();
    let mut rows: Vec<[String; 5]> = Vec::new();
    for i in &f.ingest_in_process {
        // The target is set for the simulate source, which submits in chunks; one event per
        // submission is how the MQTT source submits, shown for context.
        let chunked = i.events_per_submit > 1;
        rows.push([
            format!(
                "1 durable ingest, in-process {} ({}x{}), ev/s",
                i.engine, i.submitters, i.events_per_submit
            ),
            thousands(i.events_per_s),
            dash(),
            if chunked { "≥ 100,000" } else { "(context)" }.into(),
            if chunked {
                check(i.events_per_s >= 1e5).into()
            } else {
                dash()
            },
        ]);
    }
    let b = &f.backlog;
    rows.push([
        "1 durable ingest, qyt-agent process (simulate), ev/s".into(),
        thousands(b.fill_events_per_s),
        dash(),
        "≥ 100,000".into(),
        check(b.fill_events_per_s >= 1e5).into(),
    ]);
    let m = &f.mqtt_buffer;
    rows.push([
        "2 MQTT → agent buffer (hub down), ev/s durable".into(),
        thousands(m.durable_events_per_s),
        peer.map_or_else(dash, |p| {
            format!(
                "{} (gw PUBACK, not durable)",
                thousands(p.publish_msgs_per_s)
            )
        }),
        dash(),
        dash(),
    ]);
    rows.push([
        "2 agent CPU-s per 100k, MQTT → buffer".into(),
        format!("{:.2}", m.agent_cpu_s_per_100k),
        dash(),
        "≤ 1".into(),
        check(m.agent_cpu_s_per_100k <= 1.0).into(),
    ]);
    let e = &f.mqtt_e2e;
    rows.push([
        "2 MQTT end to end (stored at hub), msgs/s".into(),
        thousands(e.stored_events_per_s.unwrap_or_default()),
        peer.map_or_else(dash, |p| thousands(p.e2e_msgs_per_s)),
        dash(),
        dash(),
    ]);
    rows.push([
        "2 agent CPU-s per 100k, MQTT end to end".into(),
        format!("{:.2}", e.agent_cpu_s_per_100k),
        peer.map_or_else(dash, |p| {
            format!("{:.2} (gateway broker)", p.gateway_cpu_s_per_100k)
        }),
        "≤ 1".into(),
        check(e.agent_cpu_s_per_100k <= 1.0).into(),
    ]);
    rows.push([
        "2 gateway broker CPU-s per 100k (context)".into(),
        format!("{:.2}", e.broker_cpu_s_per_100k),
        peer.map_or_else(dash, |p| format!("{:.2}", p.gateway_cpu_s_per_100k)),
        dash(),
        dash(),
    ]);
    rows.push([
        "2 hub CPU-s per 100k, MQTT end to end".into(),
        format!("{:.2}", e.hub_cpu_s_per_100k.unwrap_or_default()),
        peer.map_or_else(dash, |p| {
            format!("{:.2} (central broker)", p.hub_cpu_s_per_100k)
        }),
        dash(),
        dash(),
    ]);
    let s = &f.e2e_simulate;
    rows.push([
        "3 end to end, simulate → hub store + ack, ev/s".into(),
        thousands(s.events_per_s),
        dash(),
        "≥ 50,000".into(),
        check(s.events_per_s >= 5e4).into(),
    ]);
    rows.push([
        format!("4 drain of a {} backlog, s", thousands(b.events as f64)),
        format!("{:.2}", b.drain_s),
        dash(),
        "≤ 20".into(),
        check(b.drain_s <= 20.0).into(),
    ]);
    let twenty_mb = 20e6 / 1024.0;
    rows.push([
        format!("5 agent VmHWM with {} backlog", thousands(b.events as f64)),
        mib(b.agent_vmhwm_full_kib),
        dash(),
        "≤ 20 MB".into(),
        check((b.agent_vmhwm_full_kib as f64) <= twenty_mb).into(),
    ]);
    rows.push([
        "5 agent VmHWM after the drain (run's peak)".into(),
        mib(b.agent_vmhwm_after_drain_kib),
        dash(),
        "≤ 20 MB".into(),
        check((b.agent_vmhwm_after_drain_kib as f64) <= twenty_mb).into(),
    ]);
    let c = &f.crash;
    rows.push([
        "5 agent VmHWM idle (MQTT source) / gateway idle".into(),
        mib(c.agent_vmhwm_idle_kib),
        peer.map_or_else(dash, |p| mib(p.gateway_vmhwm_idle_kib)),
        dash(),
        dash(),
    ]);
    rows.push([
        format!(
            "5 VmHWM holding {} MQTT messages",
            thousands(c.messages as f64)
        ),
        mib(c.agent_vmhwm_backlog_kib),
        peer.map_or_else(dash, |p| {
            format!(
                "{} ({})",
                mib(p.gateway_vmhwm_backlog_kib),
                thousands(p.backlog_messages as f64)
            )
        }),
        dash(),
        dash(),
    ]);
    let l = &f.latency;
    rows.push([
        format!(
            "6 latency publish → hub commit at {}/s, p50 / p99 ms",
            l.rate_per_s
        ),
        format!("{:.1} / {:.1}", l.total.p50_ms, l.total.p99_ms),
        dash(),
        "p99 ≤ 50".into(),
        check(l.total.p99_ms <= 50.0).into(),
    ]);
    rows.push([
        "7 acknowledged messages lost after kill -9".into(),
        format!("{} of {}", c.lost, c.acked_by_gateway),
        peer.map_or_else(dash, |p| format!("{} of {}", p.kill9_lost, p.kill9_acked)),
        "0".into(),
        check(c.lost == 0).into(),
    ]);
    rows.push([
        "7 duplicates stored after kill -9".into(),
        c.duplicates.to_string(),
        peer.map_or_else(dash, |p| p.kill9_duplicates.to_string()),
        "0".into(),
        check(c.duplicates == 0).into(),
    ]);

    let j = &f.jt808;
    rows.push([
        "8 JT/T 808 terminals held (report every 10 s), reports/s, agent RSS".to_string(),
        format!(
            "{} held, {:.0}/s, {}",
            j.connections_held,
            j.reports_per_s,
            mib(j.agent_vmhwm_kib)
        ),
        dash(),
        format!("{} held", j.terminals),
        check(j.connections_held >= j.terminals).into(),
    ]);

    let header = ["figure", "qyt", "peer", "target", ""].map(String::from);
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: &[String; 5]| {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    println!();
    line(&header);
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in &rows {
        line(r);
    }
    println!(
        "\n{} CPUs, load average at start {} and end {}, wall time {:.1} s",
        f.env.cpus, f.env.loadavg_at_start, f.env.loadavg_at_end, f.env.wall_s
    );
}

/// The agent and the simulator each hold one socket per terminal: allow as many files as the
/// hard limit does (children inherit it).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Sockets the process holds open (its file descriptors that are sockets).
fn open_fds(pid: i32) -> Result<u64> {
    let mut n = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let target = std::fs::read_link(fd?.path()).unwrap_or_default();
        n += u64::from(target.to_string_lossy().starts_with("socket:"));
    }
    Ok(n)
}

/// 8: `qyt-agent simulate jt808` connects the terminals to an agent's `jt808_tcp` source; once
/// all are connected, the agent is measured over a window: sockets held, reports received and
/// events made durable per second, CPU and peak RSS.
fn jt808_terminals(bins: &Bins, dir: &Path, auth: &str, sizes: &Sizes) -> Result<Jt808Figures> {
    const SECRET: &str = "bench-secret-0123456789abcdef";
    let terminals = sizes.jt808_terminals;
    let mut hub = Hub::configure(bins, &dir.join("hub"), auth)?;
    hub.start()?;
    let listen = bench::system::free_addr()?;
    let source = format!(
        "[[source]]\ntype = \"jt808_tcp\"\nname = \"elocks\"\nlisten = \"{listen}\"\n\
         auth_secret = \"{SECRET}\"\nmax_connections = {}\n",
        terminals + 1000
    );
    let mut agent = Agent::configure(bins, &dir.join("agent"), hub.broker, &source)?;
    agent.start()?;
    let pid = agent.proc()?.pid()?;
    // After one scrape, so the bench's own kept-alive HTTP connection is in the baseline.
    agent.durable()?;
    let baseline = open_fds(pid)?;
    let duration = (sizes.jt808_seconds + 120).to_string();
    let (listen_s, terminals_s) = (listen.to_string(), terminals.to_string());
    let mut sim = bench::system::Proc::spawn(
        "jt808-sim",
        &bins.agent,
        &[
            "simulate",
            "jt808",
            "--connect",
            &listen_s,
            "--secret",
            SECRET,
            "--terminals",
            &terminals_s,
            "--interval",
            "10",
            "--duration",
            &duration,
        ],
        dir,
    )?;
    // Until every terminal is connected, or the count has stopped growing for 10 s (terminals
    // that could not connect give up after a few tries; what was held is then reported).
    let (mut best, mut grew) = (0, Instant::now());
    wait_for(
        Duration::from_secs(180),
        Duration::from_millis(200),
        "the simulated terminals to connect",
        || {
            sim.ensure_running()?;
            let held = open_fds(pid)?.saturating_sub(baseline);
            if held > best {
                (best, grew) = (held, Instant::now());
            }
            Ok(
                (held >= terminals || (best > 0 && grew.elapsed() > Duration::from_secs(10)))
                    .then_some(()),
            )
        },
    )?;
    let received0 = agent.metric("qyt_agent_events_received_total")?;
    let durable0 = agent.durable()?;
    let cpu0 = agent.proc()?.cpu_seconds()?;
    let t0 = Instant::now();
    // A measuring window, not a synchronisation: the terminals report on their own clock.
    std::thread::sleep(Duration::from_secs(sizes.jt808_seconds));
    let took = t0.elapsed().as_secs_f64();
    let held = open_fds(pid)?.saturating_sub(baseline);
    let f = Jt808Figures {
        terminals,
        seconds: sizes.jt808_seconds,
        connections_held: held,
        reports_per_s: round(
            (agent.metric("qyt_agent_events_received_total")? - received0) / took,
            0,
        ),
        events_durable_per_s: round((agent.durable()? - durable0) as f64 / took, 0),
        agent_cpu_s_per_s: round((agent.proc()?.cpu_seconds()? - cpu0) / took, 3),
        agent_vmhwm_kib: agent.proc()?.status_kib("VmHWM")?,
    };
    println!(
        "[8] JT/T 808: {held} of {terminals} terminals held by one agent, reporting every 10 s: \
         {:.0} reports/s received, {:.0} events/s durable, agent {:.2} CPU-s per s, VmHWM {}",
        f.reports_per_s,
        f.events_durable_per_s,
        f.agent_cpu_s_per_s,
        mib(f.agent_vmhwm_kib)
    );
    sim.kill9();
    agent.stop()?;
    hub.stop()?;
    Ok(f)
}
