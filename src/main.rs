//! `cargo run --release`: the whole system on one machine, from the example configs — the hub
//! with its embedded broker, and an agent reading a simulated checkpoint — then declares a few
//! transits for the checkpoint's trucks, as a customs declaration system would, and tells where
//! to look. Ctrl-C stops both cleanly.

use anyhow::Context;
use qyt_agent::config::{Config as AgentConfig, SourceConfig};
use qyt_agent::sources::simulate::Checkpoint;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The bonded site the demo's transits are bound for. It is declared in config/hub.toml, but
/// its agent is not part of the demo: the operators' page shows it offline, and the transits
/// that leave the checkpoint never arrive, as after a real outage.
const DESTINATION: &str = "demo-site-02";
/// The enterprise of config/hub.toml's `demo-enterprise-token`.
const ENTERPRISE: &str = "demo-importer";
const OPERATOR_TOKEN: &str = "demo-operator-token";
/// Transits declared, one per simulated truck from the first.
const TRANSITS: usize = 6;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,mqtt5=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match std::env::args().nth(1).as_deref() {
        None | Some("demo") => demo().await,
        Some(other) => {
            anyhow::bail!("unknown command {other:?}; the only command is `demo` (the default)")
        }
    }
}

/// The example configs: `./config` when run from the repository root, else the source tree's.
fn config_dir() -> PathBuf {
    let here = PathBuf::from("config");
    if here.join("hub.toml").exists() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
    }
}

/// Declares transits through the API for the first trucks of the agent's simulated checkpoint
/// (the same plates, seals and e-locks its devices report). A transit kept from an earlier run
/// (state lives under ./var) is left as it is. Returns how many the hub holds.
async fn declare_transits(http: SocketAddr, agent: &AgentConfig) -> anyhow::Result<usize> {
    let Some(sim) = agent.sources.iter().find_map(|s| match s {
        SourceConfig::Simulate(c) => Some(c),
        _ => None,
    }) else {
        return Ok(0);
    };
    let origin = agent.site.to_string();
    let declarations: Vec<serde_json::Value> = Checkpoint::new(sim, sim.name.as_str().into())
        .trucks()
        .into_iter()
        .take(TRANSITS)
        .enumerate()
        .map(|(i, truck)| {
            serde_json::json!({
                "id": format!("DEMO-{:04}", i + 1),
                "enterprise": ENTERPRISE,
                "plate": truck.plate,
                "elock_id": truck.elock_id,
                "seal_ids": truck.seals,
                "origin": origin,
                "destination": DESTINATION,
                "max_duration_s": 1800,
            })
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        let url = format!("http://{http}/api/transits");
        for d in &declarations {
            let answer = ureq::post(&url)
                .header("Authorization", &format!("Bearer {OPERATOR_TOKEN}"))
                .config()
                .http_status_as_error(false)
                .build()
                .send_json(d)
                .with_context(|| format!("POST {url}"))?;
            match answer.status().as_u16() {
                // 409: declared by an earlier run of the demo.
                201 | 409 => {}
                status => {
                    let body = answer.into_body().read_to_string().unwrap_or_default();
                    anyhow::bail!("declaring {} answered {status}: {body}", d["id"]);
                }
            }
        }
        Ok(declarations.len())
    })
    .await
    .context("declaring task")?
}

async fn demo() -> anyhow::Result<()> {
    let dir = config_dir();
    let hub_config =
        qyt_hub::Config::load(&dir.join("hub.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let agent_config =
        qyt_agent::config::load(&dir.join("agent.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;

    let hub = qyt_hub::Hub::start(hub_config)
        .await
        .context("cannot start the hub (is another one running on the same ports?)")?;
    let http = hub.http_addr();
    let broker = hub.broker_addr();
    hub.ready().await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut hub_stop = stop_rx.clone();
    let hub_task = tokio::spawn(hub.run_until(async move {
        let _ = hub_stop.wait_for(|s| *s).await;
    }));
    let declared = declare_transits(http, &agent_config)
        .await
        .context("cannot declare the demo's transits")?;
    let mut agent_stop = stop_rx.clone();
    let site = agent_config.site.clone();
    let agent_task = tokio::spawn(qyt_agent::run::run(
        agent_config,
        async move {
            let _ = agent_stop.wait_for(|s| *s).await;
        },
        move |started| {
            let broker = broker
                .map(|b| b.to_string())
                .unwrap_or_else(|| "external".into());
            println!(
                "\nQuanYuTong demo is running: hub (embedded MQTT broker on {broker}) + agent for site {site} with a simulated checkpoint.\n\
                 {declared} transits of {ENTERPRISE} are declared from {site} to {DESTINATION} (whose agent is not running).\n\n  \
                 Operators' page:    http://{http}/  (sign in with {OPERATOR_TOKEN}, or demo-enterprise-token for the enterprise's view)\n  \
                 Sites and backlog:  curl -H 'Authorization: Bearer demo-operator-token' http://{http}/api/sites\n  \
                 Stored events:      curl -H 'Authorization: Bearer demo-operator-token' 'http://{http}/api/sites/{site}/events?after=0&limit=5'\n  \
                 Hub metrics:        curl http://{http}/metrics\n  \
                 Agent health:       curl http://{agent}/healthz\n  \
                 Agent metrics:      curl http://{agent}/metrics\n\n\
                 State lives under ./var (hub database, agent buffer). Ctrl-C stops both.\n",
                agent = started.http_addr
            );
        },
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot wait for Ctrl-C")?,
        _ = term.recv() => {}
    }
    let _ = stop_tx.send(true);
    agent_task
        .await
        .context("agent task")?
        .map_err(|e| anyhow::anyhow!("agent: {e}"))?;
    hub_task
        .await
        .context("hub task")?
        .map_err(|e| anyhow::anyhow!("hub: {e}"))?;
    Ok(())
}
