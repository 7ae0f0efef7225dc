//! Measures end-to-end ingest: fake agents publish batches of ~200-byte seal events to an
//! in-process hub (embedded broker, SQLite in a temp dir, synchronous=FULL) and wait for the
//! acks; the rate counts events from the first publish until the last one is acked.
//!
//! `cargo run --release -p qyt-hub --example ingest_rate -- [agents] [events per agent] [batch]
//! [mqtt://external-broker]` (the external broker must accept anonymous clients).

use chrono::DateTime;
use qyt_hub::config::{BrokerUrl, SiteConfig};
use qyt_hub::{Config, Hub};
use qyt_proto::{
    decode_ack, encode, Batch, Body, Event, SealId, SealReading, SealState, Seq, SiteId, Topics,
    PROTOCOL_VERSION,
};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Batches an agent may have unacknowledged, as a real agent's send window.
const WINDOW: u64 = 16;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut number = |default: u64| -> anyhow::Result<u64> {
        Ok(args
            .next()
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let agents = number(2)?;
    let per_agent = number(200_000)?;
    let batch = number(500)?;
    let external = args.next();

    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.broker.listen = "127.0.0.1:0".parse()?;
    config.broker.url = external.clone();
    config.broker.allow_anonymous = true;
    config.http.listen = "127.0.0.1:0".parse()?;
    config.store.path = dir.path().join("hub.db");
    let sites: Vec<SiteId> = (0..agents)
        .map(|i| SiteId::new(format!("load-{i}")))
        .collect::<Result<_, _>>()?;
    config.sites = sites
        .iter()
        .map(|id| SiteConfig {
            id: id.clone(),
            mqtt_password_hash: None,
            area: None,
        })
        .collect();
    let hub = Hub::start(config).await?;
    let (host, port) = match &external {
        Some(url) => {
            let url = BrokerUrl::parse(url).map_err(anyhow::Error::msg)?;
            (url.host, url.port)
        }
        None => {
            let addr = hub.broker_addr().expect("embedded broker");
            (addr.ip().to_string(), addr.port())
        }
    };
    hub.ready().await;
    let (stop, stopped) = watch::channel(false);
    let hub_task = tokio::spawn(hub.run_until(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    }));

    let started = Instant::now();
    let mut agents_done = Vec::new();
    for site in sites {
        agents_done.push(tokio::spawn(agent(
            host.clone(),
            port,
            site,
            per_agent,
            batch,
        )));
    }
    for a in agents_done {
        a.await??;
    }
    let took = started.elapsed();
    let total = agents * per_agent;
    println!(
        "{total} events ({agents} agents x {per_agent}, batches of {batch}) stored and acked in {:.2} s: {:.0} events/s",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    stop.send_replace(true);
    hub_task.await??;
    Ok(())
}

async fn agent(
    host: String,
    port: u16,
    site: SiteId,
    events: u64,
    batch: u64,
) -> anyhow::Result<()> {
    let mut options = MqttOptions::new(format!("load-agent-{site}"), host, port);
    options.set_max_packet_size(8 << 20, 8 << 20);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let (acked_tx, mut acked) = watch::channel(0u64);
    client
        .subscribe(Topics::acks(&site), QoS::AtLeastOnce)
        .await?;
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let ack = decode_ack(&p.payload).expect("ack decodes");
                    acked_tx.send_replace(ack.contiguous.0);
                }
                Ok(_) => {}
                Err(e) => return Err::<(), _>(e),
            }
        }
    });
    let mut next = 1;
    while next <= events {
        let last = (next + batch - 1).min(events);
        // Keep at most WINDOW batches in flight, like an agent waiting for acks.
        let floor = last.saturating_sub(WINDOW * batch);
        acked.wait_for(|c| *c >= floor).await?;
        let payload = encode(&Batch {
            v: PROTOCOL_VERSION,
            site: site.clone(),
            events: (next..=last).map(|s| seal(&site, s)).collect(),
        });
        client
            .publish(Topics::events(&site), QoS::AtLeastOnce, false, payload)
            .await?;
        next = last + 1;
    }
    acked.wait_for(|c| *c >= events).await?;
    poller.abort();
    Ok(())
}

/// About 200 bytes encoded.
fn seal(site: &SiteId, seq: u64) -> Event {
    Event {
        site: site.clone(),
        seq: Seq(seq),
        observed_at: DateTime::from_timestamp(1_700_000_000 + seq as i64, 0).expect("valid time"),
        received_at: DateTime::from_timestamp(1_700_000_000 + seq as i64, 5_000_000)
            .expect("valid time"),
        source: "seal-reader-1".into(),
        body: Body::Seal(SealReading {
            seal_id: SealId(format!("CNSH{seq:010}")),
            state: SealState::Sealed,
            battery_pct: Some(87.5),
            device_id: Some("elock-07".into()),
        }),
    }
}
