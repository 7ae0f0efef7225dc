//! The `simulate` source: a checkpoint with its lanes, trucks, seals and weighbridge, producing
//! realistic events at a configured rate — for the demo, for tests and for the benchmarks.
//!
//! Each simulated truck approaches the checkpoint reporting positions, passes a lane (plate
//! read in or out), has its seals read (almost always intact; `opened_per_mille` of reads find
//! a seal opened) and is weighed. Deterministic for a given `seed`.

use super::{SourceContext, SourceError};
use crate::buffer::intake::{IntakeError, PendingEvent};
use chrono::{Duration as ChronoDuration, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use qyt_proto::{
    Body, Direction, Fix, GatePassage, PositionReading, SealId, SealReading, SealState,
    SourceState, WeightReading,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateConfig {
    pub name: String,
    /// Events per second; 0 means as fast as the buffer takes them (for benchmarks).
    #[serde(default = "default_rate")]
    pub rate_per_s: f64,
    /// Stop after this many events (the source then idles); unlimited when absent.
    #[serde(default)]
    pub max_events: Option<u64>,
    #[serde(default = "default_trucks")]
    pub trucks: u32,
    #[serde(default = "default_lanes")]
    pub lanes: u32,
    /// Seal reads per thousand that find the seal opened.
    #[serde(default = "default_opened")]
    pub opened_per_mille: u32,
    /// Checkpoint location (degrees WGS84); trucks move within a few km of it.
    #[serde(default = "default_lat")]
    pub lat: f64,
    #[serde(default = "default_lon")]
    pub lon: f64,
    #[serde(default)]
    pub seed: u64,
    /// Events per submission and submissions in flight: what the group commit can batch.
    #[serde(default = "default_chunk")]
    pub chunk: usize,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_rate() -> f64 {
    20.0
}
fn default_trucks() -> u32 {
    40
}
fn default_lanes() -> u32 {
    4
}
fn default_opened() -> u32 {
    2
}
// Waigaoqiao bonded zone, Shanghai.
fn default_lat() -> f64 {
    31.3526
}
fn default_lon() -> f64 {
    121.5901
}
fn default_chunk() -> usize {
    256
}
fn default_concurrency() -> usize {
    4
}

impl SimulateConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if !(self.rate_per_s >= 0.0 && self.rate_per_s.is_finite()) {
            p.push((
                "rate_per_s".into(),
                "must be a number ≥ 0 (0 = as fast as possible)".into(),
            ));
        }
        if self.trucks == 0 || self.lanes == 0 {
            p.push((
                "trucks".into(),
                "trucks and lanes must be at least 1".into(),
            ));
        }
        if self.chunk == 0 || self.concurrency == 0 {
            p.push((
                "chunk".into(),
                "chunk and concurrency must be at least 1".into(),
            ));
        }
        if !(-90.0..=90.0).contains(&self.lat) || !(-180.0..=180.0).contains(&self.lon) {
            p.push(("lat".into(), "lat/lon must be degrees WGS84".into()));
        }
        p
    }
}

struct Truck {
    plate: String,
    seals: [SealId; 2],
    lat: f64,
    lon: f64,
    course: f64,
    speed_kmh: f64,
    cargo_kg: f64,
}

/// What a declaration system knows of a simulated truck: the demo declares transits for some.
#[derive(Debug, Clone, PartialEq)]
pub struct TruckPapers {
    pub plate: String,
    pub seals: [SealId; 2],
    /// The e-lock reporting its positions.
    pub elock_id: String,
}

/// The simulated checkpoint: a pure generator, independent of time and I/O.
pub struct Checkpoint {
    rng: StdRng,
    trucks: Vec<Truck>,
    lanes: u32,
    opened_per_mille: u32,
    source: std::sync::Arc<str>,
}

const PROVINCES: [&str; 8] = ["沪", "苏", "浙", "皖", "鲁", "粤", "闽", "赣"];

impl Checkpoint {
    pub fn new(cfg: &SimulateConfig, source: std::sync::Arc<str>) -> Checkpoint {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let trucks = (0..cfg.trucks)
            .map(|i| {
                let province = PROVINCES[rng.random_range(0..PROVINCES.len())];
                let letter = (b'A' + rng.random_range(0..8u8)) as char;
                Truck {
                    plate: format!("{province}{letter}{:05}", rng.random_range(0..100_000u32)),
                    seals: [
                        SealId(format!("CNSH{:08}", 2 * i + 1)),
                        SealId(format!("CNSH{:08}", 2 * i + 2)),
                    ],
                    lat: cfg.lat + rng.random_range(-0.03..0.03),
                    lon: cfg.lon + rng.random_range(-0.03..0.03),
                    course: rng.random_range(0.0..360.0),
                    speed_kmh: rng.random_range(0.0..60.0),
                    cargo_kg: rng.random_range(8_000.0..32_000.0f64).round(),
                }
            })
            .collect();
        Checkpoint {
            rng,
            trucks,
            lanes: cfg.lanes,
            opened_per_mille: cfg.opened_per_mille,
            source,
        }
    }

    /// The trucks of this checkpoint (the same for the same config and seed).
    pub fn trucks(&self) -> Vec<TruckPapers> {
        self.trucks
            .iter()
            .enumerate()
            .map(|(i, t)| TruckPapers {
                plate: t.plate.clone(),
                seals: t.seals.clone(),
                elock_id: elock_id(i),
            })
            .collect()
    }

    /// The next event: 60% positions, 15% gate passages, 15% seal reads, 10% weighings.
    pub fn next_event(&mut self) -> PendingEvent {
        let now = Utc::now();
        let t = self.rng.random_range(0..self.trucks.len());
        let roll = self.rng.random_range(0..100u32);
        let lane = (self.rng.random_range(0..self.lanes) + 1).to_string();
        let truck = &mut self.trucks[t];
        let body = if roll < 60 {
            // Dead-reckon a few seconds of driving, turning a little.
            truck.course = (truck.course + self.rng.random_range(-15.0..15.0) + 360.0) % 360.0;
            truck.speed_kmh = (truck.speed_kmh + self.rng.random_range(-5.0..5.0)).clamp(0.0, 80.0);
            let step_deg = truck.speed_kmh / 3600.0 * 5.0 / 111.0;
            truck.lat += step_deg * truck.course.to_radians().cos();
            truck.lon += step_deg * truck.course.to_radians().sin() / truck.lat.to_radians().cos();
            Body::Position(PositionReading {
                device_id: elock_id(t),
                lat: (truck.lat * 1e6).round() / 1e6,
                lon: (truck.lon * 1e6).round() / 1e6,
                speed_kmh: Some((truck.speed_kmh * 10.0).round() / 10.0),
                course: Some(truck.course.round()),
                fix: Fix::Fix3d,
                altitude_m: Some(4.0),
                satellites: Some(self.rng.random_range(6..14)),
                hdop: Some(0.9),
            })
        } else if roll < 75 {
            Body::Gate(GatePassage {
                lane: lane.clone(),
                direction: if self.rng.random_bool(0.5) {
                    Direction::In
                } else {
                    Direction::Out
                },
                plate: Some(truck.plate.clone()),
                confidence: Some(self.rng.random_range(0.85..0.999)),
                // Numbered, not timed, so a seed gives the same events whenever it runs.
                image_ref: Some(format!(
                    "lane-cam/{lane}/{:08}.jpg",
                    self.rng.random_range(0..100_000_000u32)
                )),
            })
        } else if roll < 90 {
            let opened = self.rng.random_range(0..1000) < self.opened_per_mille;
            Body::Seal(SealReading {
                seal_id: truck.seals[self.rng.random_range(0..2)].clone(),
                state: if opened {
                    SealState::Opened
                } else {
                    SealState::Sealed
                },
                battery_pct: Some(self.rng.random_range(40.0..100.0f64).round()),
                device_id: Some(format!("RDR-{lane}")),
            })
        } else {
            Body::Weight(WeightReading {
                kg: truck.cargo_kg + 14_500.0 + self.rng.random_range(-20.0..20.0f64).round(),
                stable: true,
                tare_kg: Some(14_500.0),
                device_id: Some("WB-1".into()),
            })
        };
        PendingEvent {
            // Devices report a moment before the agent hears of it.
            observed_at: now - ChronoDuration::milliseconds(self.rng.random_range(5..200)),
            received_at: now,
            source: self.source.clone(),
            body,
            dedup_key: None,
        }
    }
}

fn elock_id(truck: usize) -> String {
    format!("EL-{:04}", truck + 1)
}

pub async fn run(cfg: SimulateConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let mut gen = Checkpoint::new(&cfg, ctx.name.clone());
    let mut stop = ctx.shutdown.clone();
    let limit = cfg.max_events.unwrap_or(u64::MAX);
    let mut produced: u64 = 0;
    let mut in_flight = FuturesUnordered::new();
    let start = Instant::now();
    let mut refusals: u32 = 0;
    ctx.metrics.set_state(SourceState::Connected, None);
    info!(source = %ctx.name, rate_per_s = cfg.rate_per_s, "simulated checkpoint started");
    loop {
        // How many events are due by now at the configured rate.
        let due = if cfg.rate_per_s == 0.0 {
            limit
        } else {
            ((start.elapsed().as_secs_f64() * cfg.rate_per_s) as u64).min(limit)
        };
        if produced < due && in_flight.len() < cfg.concurrency {
            let n = ((due - produced) as usize).min(cfg.chunk);
            let batch: Vec<PendingEvent> = (0..n).map(|_| gen.next_event()).collect();
            produced += n as u64;
            ctx.metrics.received.fetch_add(n as u64, Relaxed);
            let intake = ctx.intake.clone();
            in_flight.push(async move { (n, intake.submit(batch).await) });
            continue;
        }
        let next_due = if cfg.rate_per_s == 0.0 || produced >= limit {
            None
        } else {
            Some(start + Duration::from_secs_f64((produced + 1) as f64 / cfg.rate_per_s))
        };
        tokio::select! {
            _ = stop.wait() => break,
            Some((n, result)) = in_flight.next(), if !in_flight.is_empty() => match result {
                Ok(_) => refusals = 0,
                Err(IntakeError::Full { .. }) => {
                    // A simulated device has nowhere to keep what the buffer refuses.
                    refusals = refusals.saturating_add(1);
                    if refusals == 1 {
                        warn!(source = %ctx.name, events = n, "buffer full: simulated events refused");
                    }
                }
                Err(IntakeError::Closed) => return Err(SourceError::IntakeClosed { source_name: ctx.name.to_string() }),
                Err(IntakeError::Storage(detail)) => return Err(SourceError::Storage { source_name: ctx.name.to_string(), detail }),
            },
            _ = sleep_until(next_due), if in_flight.len() < cfg.concurrency => {}
        }
    }
    // Let what was submitted be answered before reporting the source stopped.
    while in_flight.next().await.is_some() {}
    ctx.metrics.set_state(SourceState::Stopped, None);
    Ok(())
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SimulateConfig {
        toml::from_str("name = \"sim\"\nseed = 7\n").unwrap()
    }

    #[test]
    fn generator_is_deterministic_and_realistic() {
        let mut a = Checkpoint::new(&cfg(), "sim".into());
        let mut b = Checkpoint::new(&cfg(), "sim".into());
        let mut kinds = std::collections::BTreeMap::new();
        for _ in 0..2000 {
            let (x, y) = (a.next_event(), b.next_event());
            assert_eq!(x.body, y.body);
            assert!(x.observed_at <= x.received_at);
            if let Body::Position(p) = &x.body {
                assert!(
                    (p.lat - 31.35).abs() < 0.5 && (p.lon - 121.59).abs() < 0.5,
                    "{p:?}"
                );
            }
            *kinds.entry(x.body.class().as_str()).or_insert(0) += 1;
        }
        for k in ["position", "gate", "seal", "weight"] {
            assert!(kinds.get(k).copied().unwrap_or(0) > 100, "{kinds:?}");
        }
    }

    #[test]
    fn the_trucks_papers_name_what_their_devices_report() {
        let mut c = Checkpoint::new(&cfg(), "sim".into());
        let papers = c.trucks();
        assert_eq!(papers.len(), cfg().trucks as usize);
        assert_eq!(papers, Checkpoint::new(&cfg(), "sim".into()).trucks());
        let plates: Vec<&str> = papers.iter().map(|p| p.plate.as_str()).collect();
        let seals: Vec<&SealId> = papers.iter().flat_map(|p| &p.seals).collect();
        let elocks: Vec<&str> = papers.iter().map(|p| p.elock_id.as_str()).collect();
        for _ in 0..2000 {
            match c.next_event().body {
                Body::Gate(g) => assert!(plates.contains(&g.plate.unwrap().as_str())),
                Body::Seal(r) => assert!(seals.contains(&&r.seal_id)),
                Body::Position(p) => assert!(elocks.contains(&p.device_id.as_str())),
                _ => {}
            }
        }
    }
}
