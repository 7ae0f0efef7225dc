//! Presence: retained status messages and the agent's last will.

use crate::harness::*;

#[tokio::test]
async fn status_and_last_will_show_in_sites() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let agent = Agent::connect(hub.broker, "gate-c").await;
    agent.online(42).await;
    eventually("gate-c to be online", || async {
        hub.site("gate-c").await["online"] == true
    })
    .await;
    let site = hub.site("gate-c").await;
    assert_eq!(site["backlog"], 42);
    assert_eq!(site["agent_version"], "test-agent 0.0");
    let seen = site["last_seen"].as_str().expect("last_seen set");
    chrono::DateTime::parse_from_rfc3339(seen).expect("last_seen is RFC 3339");
    assert_eq!(hub.metric("qyt_hub_sites_online").await, 1);

    // The agent dies without a word; the broker publishes its last will.
    agent.vanish();
    eventually("gate-c to be offline", || async {
        hub.site("gate-c").await["online"] == false
    })
    .await;
    let site = hub.site("gate-c").await;
    assert_eq!(
        site["backlog"], 42,
        "the will carries no figures; the last known backlog stays"
    );
    assert_eq!(site["last_seen"].as_str(), Some(seen));
    assert_eq!(hub.metric("qyt_hub_sites_online").await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn status_for_another_site_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.broker.allow_anonymous = true;
    let hub = TestHub::start(c).await;
    // Anonymous, so the broker lets it publish on gate-b's topic; the hub still checks the body.
    let mut liar = Agent::connect_as(hub.broker, "gate-a", None).await;
    let status = br#"{"v":1,"site":"gate-a","state":"online","buffered_events":9}"#;
    liar.send_to("qyt/v1/site/gate-b/status", status.to_vec(), false)
        .await;
    liar.puback(1).await;
    eventually("the status to be refused", || async {
        hub.metric("qyt_hub_status_rejected_total").await == 1
    })
    .await;
    assert_eq!(hub.site("gate-b").await["online"], false);
    hub.stop().await;
}
