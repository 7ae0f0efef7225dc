//! The HTTP API: authentication, errors, listing sites and paging through events.

use crate::harness::*;

#[tokio::test]
async fn api_needs_a_known_token_but_probes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;

    for token in [None, Some("wrong-token")] {
        let (status, body) = http_get(hub.http, "/api/sites", token).await;
        assert_eq!(status, 401, "{token:?}");
        assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
    }
    let (status, body) = http_get(hub.http, "/healthz", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let metrics = hub.metrics().await;
    assert!(metrics.contains("qyt_hub_sites_online 0"), "{metrics}");
    assert!(
        metrics.contains("# TYPE qyt_hub_commit_seconds histogram"),
        "{metrics}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn sites_are_listed_with_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let (status, sites) = hub.get("/api/sites").await;
    assert_eq!(status, 200);
    let names: Vec<_> = sites
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["site"].as_str().unwrap())
        .collect();
    assert_eq!(names, SITES);
    let fresh = &sites[0];
    assert_eq!(fresh["online"], false);
    assert!(fresh["last_seen"].is_null());
    assert_eq!(fresh["stored_events"], 0);
    assert_eq!(fresh["contiguous_seq"], 0);
    assert_eq!(fresh["missing"], serde_json::json!([]));
    assert_eq!(fresh["backlog"], 0);
    hub.stop().await;
}

#[tokio::test]
async fn events_page_in_seq_order_with_flat_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let mut agent = Agent::connect(hub.broker, "gate-a").await;
    agent.send(batch("gate-a", 1..=10)).await;
    agent.ack_where(|a| a.contiguous.0 == 10).await;

    let (status, page) = hub.get("/api/sites/gate-a/events?after=3&limit=4").await;
    assert_eq!(status, 200, "{page}");
    let seqs: Vec<_> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5, 6, 7]);
    let e = &page[0];
    assert_eq!(e["kind"], "seal");
    assert_eq!(e["seal_id"], "CN000004");
    assert_eq!(e["state"], "opened");
    assert_eq!(e["source"], "seal-reader-1");
    assert_eq!(e["observed_at"], "2023-11-14T22:13:24Z");
    assert!(
        e["received_at"].is_string() && e["ingested_at"].is_string(),
        "{e}"
    );

    let (_, rest) = hub.get("/api/sites/gate-a/events?after=7").await;
    assert_eq!(rest.as_array().unwrap().len(), 3);
    let (_, none) = hub.get("/api/sites/gate-b/events").await;
    assert_eq!(none, serde_json::json!([]));

    for bad in ["?limit=0", "?limit=100000", "?after=-1", "?after=x"] {
        let (status, body) = hub.get(&format!("/api/sites/gate-a/events{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string());
    }
    let (status, body) = hub.get("/api/sites/nowhere/events").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nowhere"));
    let (status, _) = http_get(hub.http, "/api/sites/gate-a/events", None).await;
    assert_eq!(status, 401);
    hub.stop().await;
}
