//! The peer baseline: a gateway Mosquitto bridged to a central Mosquitto, measured by the
//! shared script `peer_mosquitto_bridge.py` in the same run, so both sides see the same machine
//! under the same load.

use super::system::Proc;
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

pub const PYTHON: &str = "/usr/bin/python3";

/// The peer's figures beside ours, plus everything it reported.
#[derive(Debug, Serialize)]
pub struct PeerFigures {
    pub messages: u64,
    /// Messages per second arriving at the central broker's subscriber, end to end.
    pub e2e_msgs_per_s: f64,
    /// Messages per second PUBACKed by the gateway.
    pub publish_msgs_per_s: f64,
    /// The gateway broker's CPU per 100k messages (it is what the agent replaces).
    pub gateway_cpu_s_per_100k: f64,
    pub hub_cpu_s_per_100k: f64,
    pub gateway_vmhwm_idle_kib: u64,
    pub gateway_vmhwm_backlog_kib: u64,
    pub backlog_messages: u64,
    pub kill9_acked: u64,
    pub kill9_lost: u64,
    pub kill9_duplicates: u64,
    pub sigterm_lost: u64,
    pub wall_s: f64,
    pub report: Value,
}

pub struct PeerRun<'a> {
    pub script: &'a Path,
    pub messages: u64,
    pub outage_messages: u64,
    /// How long the script waits for a backlog after the restarts; it waits all of it when
    /// messages were lost, so `--quick` shortens it.
    pub outage_wait_s: u64,
}

impl PeerRun<'_> {
    pub fn run(&self, dir: &Path) -> Result<PeerFigures> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join("peer.json");
        let max_s = 120 + 2 * self.outage_wait_s;
        let args = [
            self.script
                .to_str()
                .context("non-UTF-8 script path")?
                .to_string(),
            "--n".into(),
            self.messages.to_string(),
            "--outage-n".into(),
            self.outage_messages.to_string(),
            "--outage-wait".into(),
            self.outage_wait_s.to_string(),
            "--max-seconds".into(),
            max_s.to_string(),
            "--json-out".into(),
            json.to_str().context("non-UTF-8 temp path")?.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let mut proc = Proc::spawn("peer", Path::new(PYTHON), &args, dir)?;
        // The script has its own watchdog at max_s; this one only guards against the script
        // itself hanging. SIGTERM lets it stop the brokers it started.
        while proc.is_running() {
            if started.elapsed() > Duration::from_secs(max_s + 30) {
                proc.terminate(Duration::from_secs(20))?;
                anyhow::bail!("the peer script ran over {} s", max_s + 30);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let text = std::fs::read_to_string(&json).with_context(|| {
            format!(
                "the peer script wrote no results; its log ends:\n{}",
                proc.log_tail()
            )
        })?;
        let report: Value = serde_json::from_str(&text)?;
        figures(report)
    }
}

fn figures(report: Value) -> Result<PeerFigures> {
    let num = |v: &Value, key: &str| -> Result<f64> {
        v[key]
            .as_f64()
            .with_context(|| format!("peer result without {key}"))
    };
    let t = &report["throughput"];
    let k = &report["outage_kill9"];
    let s = &report["outage_sigterm"];
    let messages = num(t, "n")?;
    Ok(PeerFigures {
        messages: messages as u64,
        e2e_msgs_per_s: num(t, "e2e_rate")?,
        publish_msgs_per_s: num(t, "publish_rate")?,
        gateway_cpu_s_per_100k: num(t, "gw_cpu_s")? / messages * 1e5,
        hub_cpu_s_per_100k: num(t, "hub_cpu_s")? / messages * 1e5,
        gateway_vmhwm_idle_kib: num(k, "gw_vmhwm_idle_kib")? as u64,
        gateway_vmhwm_backlog_kib: num(k, "gw_vmhwm_backlog_kib")? as u64,
        backlog_messages: num(k, "n")? as u64,
        kill9_acked: num(k, "acked")? as u64,
        kill9_lost: num(k, "lost")? as u64,
        kill9_duplicates: num(k, "duplicates")? as u64,
        sigterm_lost: num(s, "lost")? as u64,
        wall_s: num(&report, "wall_s")?,
        report,
    })
}
