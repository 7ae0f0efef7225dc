//! A restarted hub carries on from its database.

use crate::harness::*;

#[tokio::test]
async fn restart_on_the_same_database_keeps_every_site_state() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let mut agent = Agent::connect(hub.broker, "gate-a").await;
    agent.send(batch("gate-a", 1..=3)).await;
    agent.ack_where(|a| a.contiguous.0 == 3).await;
    // 6 arrives, 7 was dropped (the gap event 8 says so): 4 and 5 are missing.
    let events = vec![seal_event("gate-a", 6), gap_event("gate-a", 8, [7])];
    agent.send(batch_of("gate-a", events)).await;
    let before = agent.ack_where(|_| true).await;
    assert_eq!(before.contiguous.0, 3);
    assert_eq!(
        before
            .missing
            .iter()
            .map(|r| r.map(|s| s.0))
            .collect::<Vec<_>>(),
        [[4, 5]]
    );
    agent.online(5).await;
    eventually("gate-a online", || async {
        hub.site("gate-a").await["online"] == true
    })
    .await;
    let state_before = hub.site("gate-a").await;
    agent.vanish();
    hub.stop().await;

    let hub = TestHub::start(config(dir.path())).await;
    let site = hub.site("gate-a").await;
    for key in [
        "stored_events",
        "contiguous_seq",
        "missing",
        "last_seen",
        "backlog",
    ] {
        assert_eq!(site[key], state_before[key], "{key}");
    }
    assert_eq!(
        site["online"], false,
        "presence is not assumed across a restart"
    );

    // The agent resends the hole; the restored state knows 6..=8 are settled.
    let mut agent = Agent::connect(hub.broker, "gate-a").await;
    agent.send(batch("gate-a", 4..=5)).await;
    let ack = agent.ack_where(|_| true).await;
    assert_eq!((ack.contiguous.0, ack.missing.len()), (8, 0));
    assert_eq!(hub.site("gate-a").await["stored_events"], 7);
    hub.stop().await;
}
