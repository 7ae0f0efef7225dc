//! systemd notifications: ready, stopping and watchdog pings. Each does nothing when the hub is
//! not started by systemd (no `NOTIFY_SOCKET`), so the same binary runs anywhere.

use sd_notify::NotifyState;
use std::future::Future;
use std::time::Duration;
use tracing::warn;

/// Tells systemd the hub is up (`READY=1`): broker, ingest and HTTP all running.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// Tells systemd the hub is shutting down (`STOPPING=1`).
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// When systemd asked for watchdog pings (`WatchdogSec=`), a future that sends them at half the
/// interval. It runs on the hub's runtime, so a wedged runtime stops the pings and gets the
/// service restarted.
pub fn watchdog() -> Option<impl Future<Output = ()> + Send> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) {
        return None;
    }
    let period = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    Some(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            notify(&[NotifyState::Watchdog]);
        }
    })
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        warn!(error = %e, "cannot notify systemd");
    }
}
