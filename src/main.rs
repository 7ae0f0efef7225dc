//! `cargo run --release`: the whole system on one machine, from the example configs — the hub
//! with its embedded broker, and an agent reading a simulated checkpoint — then tells where to
//! look. Ctrl-C stops both cleanly.

use anyhow::Context;
use std::path::{Path, PathBuf};

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
                "\nQuanYuTong demo is running: hub (embedded MQTT broker on {broker}) + agent for site {site} with a simulated checkpoint.\n\n  \
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
