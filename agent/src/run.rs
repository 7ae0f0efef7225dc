//! Starts the agent's tasks from a validated config and stops them in order.

use crate::buffer::intake::Intake;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::sources::{self, Shutdown, SourceContext};
use crate::{buffer, http, uplink};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot open the buffer in {dir}: {source}")]
    Buffer {
        dir: String,
        #[source]
        source: buffer::BufferError,
    },
    #[error("cannot start the intake: {0}")]
    Intake(String),
    #[error("cannot listen on {addr} for /healthz and /metrics: {source}; change http.listen or stop what uses the port")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("source failed: {0}")]
    Source(#[from] sources::SourceError),
    #[error("uplink failed: {0}")]
    Uplink(String),
}

/// What a running agent tells whoever started it (tests, the demo launcher).
#[derive(Debug, Clone)]
pub struct Started {
    pub http_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
}

/// Runs the agent until `shutdown` resolves (or a task fails for good). `on_started` is called
/// once every task is running, with the bound HTTP address.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    on_started: impl FnOnce(Started),
) -> Result<(), AgentError> {
    let site = cfg.site.clone();
    let metrics = Metrics::new();

    let dir = cfg.buffer.dir.clone();
    let engine = cfg.buffer.engine;
    let opened = tokio::task::spawn_blocking(move || buffer::open(engine, &dir))
        .await
        .map_err(|e| AgentError::Intake(e.to_string()))?;
    let (buf, report) = opened.map_err(|source| AgentError::Buffer {
        dir: cfg.buffer.dir.display().to_string(),
        source,
    })?;
    if let (Some(first), Some(last)) = (report.corrupt.first(), report.corrupt.last()) {
        error!(
            site = %site,
            count = report.corrupt.len(),
            from = %first,
            to = %last,
            "damaged records found in the buffer; they are reported to the hub as a gap, the rest is kept"
        );
    }
    let stats = buf.stats();
    info!(site = %site, engine = ?engine, events = stats.events, next_seq = %buf.next_seq(), acked = %buf.acked(), "buffer opened");

    let (intake, intake_join) = Intake::start(
        buf.clone(),
        site.clone(),
        cfg.buffer.intake(cfg.longest_dedup_window_ms()),
        metrics.clone(),
        report,
    )
    .map_err(|e| AgentError::Intake(e.to_string()))?;

    let listener = http::bind(cfg.http.listen)
        .await
        .map_err(|source| AgentError::Http {
            addr: cfg.http.listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| AgentError::Http {
        addr: cfg.http.listen,
        source,
    })?;
    let (http_stop, mut http_signal) = Shutdown::new();
    let http_task = tokio::spawn(http::serve(listener, metrics.clone(), async move {
        http_signal.wait().await
    }));

    let (uplink_stop, mut uplink_signal) = Shutdown::new();
    let mut uplink_task = tokio::spawn(uplink::run(
        cfg.uplink.clone(),
        site.clone(),
        buf.clone(),
        intake.durable_watch(),
        metrics.clone(),
        async move { uplink_signal.wait().await },
    ));

    let (sources_stop, sources_signal) = Shutdown::new();
    let mut source_tasks = JoinSet::new();
    for s in cfg.sources.clone() {
        let ctx = SourceContext {
            site: site.clone(),
            name: s.name().into(),
            intake: intake.clone(),
            metrics: metrics.source(s.name()),
            shutdown: sources_signal.clone(),
        };
        source_tasks.spawn(sources::run(s, ctx));
    }
    // Only the sources hold the intake from here on, so it closes when they are done.
    drop(intake);

    notify_ready();
    let watchdog = tokio::spawn(watchdog());
    on_started(Started {
        http_addr,
        metrics: metrics.clone(),
    });
    info!(site = %site, http = %http_addr, sources = cfg.sources.len(), "agent running");

    let mut failure = None;
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => info!(site = %site, "stopping: no new input; finishing what was accepted"),
        Some(res) = source_tasks.join_next() => {
            failure = Some(match res {
                Ok(Ok(())) => AgentError::Intake("a source ended unexpectedly".into()),
                Ok(Err(e)) => AgentError::Source(e),
                Err(e) => AgentError::Intake(format!("a source task panicked: {e}")),
            });
        }
        res = &mut uplink_task => {
            failure = Some(AgentError::Uplink(match res {
                Ok(Ok(())) => "the uplink ended unexpectedly".into(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("the uplink task panicked: {e}"),
            }));
        }
    }

    let _ = sources_stop.send(true);
    while let Some(res) = source_tasks.join_next().await {
        if let Ok(Err(e)) = res {
            warn!(site = %site, error = %e, "source stopped with an error");
        }
    }
    // Every source has returned and dropped its intake handle: the writer commits what is
    // queued and ends.
    if let Err(e) = tokio::task::spawn_blocking(move || intake_join.join()).await {
        error!(site = %site, error = %e, "waiting for the intake writer failed");
    }
    let _ = uplink_stop.send(true);
    if !uplink_task.is_finished() {
        match tokio::time::timeout(Duration::from_secs(5), &mut uplink_task).await {
            Ok(_) => {}
            Err(_) => uplink_task.abort(),
        }
    }
    let _ = http_stop.send(true);
    let _ = http_task.await;
    watchdog.abort();
    match failure {
        Some(e) => Err(e),
        None => {
            info!(site = %site, "agent stopped cleanly");
            Ok(())
        }
    }
}

fn notify_ready() {
    // Outside systemd (no NOTIFY_SOCKET) this does nothing.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        warn!(error = %e, "could not notify systemd of readiness");
    }
}

/// Pings systemd's watchdog at half its interval while the runtime is alive.
async fn watchdog() {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        tick.tick().await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
    }
}
