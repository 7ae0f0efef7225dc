//! Batches in, acks out: exactly-once storage, holes, gaps, and refusals that hurt nobody else.

use crate::harness::*;
use qyt_proto::{encode, Seq, SiteId, Topics};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet};

fn seqs(ack: &qyt_proto::Ack) -> (u64, Vec<[u64; 2]>) {
    (
        ack.contiguous.0,
        ack.missing.iter().map(|[a, b]| [a.0, b.0]).collect(),
    )
}

#[tokio::test]
async fn replayed_batch_is_stored_once_and_acked_again() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let mut agent = Agent::connect(hub.broker, "gate-a").await;

    agent.send(batch("gate-a", 1..=5)).await;
    let ack = agent.ack_where(|_| true).await;
    assert_eq!(seqs(&ack), (5, vec![]));

    // The agent missed that ack and sends the same batch again: same ack, nothing doubled.
    agent.send(batch("gate-a", 1..=5)).await;
    let again = agent.ack_where(|_| true).await;
    assert_eq!(again, ack);
    let site = hub.site("gate-a").await;
    assert_eq!(site["stored_events"], 5);
    assert_eq!(site["contiguous_seq"], 5);
    assert_eq!(hub.metric("qyt_hub_duplicates_ignored_total").await, 5);
    assert_eq!(hub.metric("qyt_hub_events_stored_total").await, 5);
    assert_eq!(hub.metric("qyt_hub_batches_ingested_total").await, 2);
    assert_eq!(hub.metric("qyt_hub_acks_sent_total").await, 2);
    hub.stop().await;
}

#[tokio::test]
async fn out_of_order_batch_reports_missing_and_a_gap_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let mut agent = Agent::connect(hub.broker, "gate-a").await;

    agent.send(batch("gate-a", 1..=3)).await;
    assert_eq!(seqs(&agent.ack_where(|_| true).await), (3, vec![]));
    agent.send(batch("gate-a", 7..=8)).await;
    assert_eq!(seqs(&agent.ack_where(|_| true).await), (3, vec![[4, 6]]));
    assert_eq!(
        hub.site("gate-a").await["missing"],
        serde_json::json!([[4, 6]])
    );

    // 4 arrives late; 5 and 6 were dropped by the agent, which says so with a gap event (seq 9).
    agent.send(batch("gate-a", [4])).await;
    assert_eq!(seqs(&agent.ack_where(|_| true).await), (4, vec![[5, 6]]));
    agent
        .send(batch_of("gate-a", vec![gap_event("gate-a", 9, [5, 6])]))
        .await;
    assert_eq!(seqs(&agent.ack_where(|_| true).await), (9, vec![]));

    let site = hub.site("gate-a").await;
    assert_eq!(site["contiguous_seq"], 9);
    assert_eq!(site["missing"], serde_json::json!([]));
    assert_eq!(site["stored_events"], 7);
    hub.stop().await;
}

#[tokio::test]
async fn malformed_batches_are_rejected_counted_and_harm_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.ingest.max_batch_bytes = 16 * 1024;
    // Anonymous clients can reach topics of undeclared sites, which a site login never can.
    c.broker.allow_anonymous = true;
    let hub = TestHub::start(c).await;
    let mut a = Agent::connect(hub.broker, "gate-a").await;
    let mut b = Agent::connect(hub.broker, "gate-b").await;

    let mut wrong_event_site = qyt_proto::Batch {
        v: 1,
        site: SiteId::new("gate-a").unwrap(),
        events: vec![seal_event("gate-a", 1), seal_event("gate-b", 2)],
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        (
            "malformed",
            b"{\"v\":1,\"site\":\"gate-a\",\"events\":[{".to_vec(),
        ),
        ("malformed", b"not json at all".to_vec()),
        (
            "unsupported_version",
            br#"{"v":2,"site":"gate-a","events":[]}"#.to_vec(),
        ),
        ("site_mismatch", batch("gate-b", 1..=2)),
        ("site_mismatch", encode(&wrong_event_site)),
        ("bad_seq", batch("gate-a", [3, 2])),
        ("bad_seq", batch("gate-a", [0, 1])),
        ("bad_seq", batch("gate-a", [4, 4])),
        ("oversize", batch("gate-a", 1..=200)),
    ];
    for (i, (_, payload)) in bad.iter().enumerate() {
        a.send(payload.clone()).await;
        // Interleave good traffic from another site: it must keep flowing.
        let seq = i as u64 + 1;
        b.send(batch("gate-b", [seq])).await;
        assert_eq!(seqs(&b.ack_where(|_| true).await), (seq, vec![]));
    }
    // A site that is not declared, reachable only anonymously.
    let ghost = Agent::connect_as(hub.broker, "ghost", None).await;
    ghost.send(batch("ghost", 1..=2)).await;

    // After all that, gate-a's next good batch is ingested as usual.
    wrong_event_site.events.truncate(1);
    a.send(encode(&wrong_event_site)).await;
    assert_eq!(seqs(&a.ack_where(|_| true).await), (1, vec![]));

    let expect = |reason: &str| bad.iter().filter(|(r, _)| *r == reason).count() as u64;
    for reason in [
        "malformed",
        "unsupported_version",
        "site_mismatch",
        "bad_seq",
        "oversize",
    ] {
        let series = format!("qyt_hub_batches_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(hub.metric(&series).await, expect(reason), "{reason}");
    }
    eventually("the undeclared site's batch to be counted", || async {
        hub.metric("qyt_hub_batches_rejected_total{reason=\"unknown_site\"}")
            .await
            == 1
    })
    .await;
    assert_eq!(hub.site("gate-a").await["stored_events"], 1);
    assert_eq!(hub.site("gate-b").await["stored_events"], bad.len());
    hub.stop().await;
}

#[tokio::test]
async fn broker_keeps_each_site_to_its_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let mut a = Agent::connect(hub.broker, "gate-a").await;

    // gate-a may not read gate-b's acks...
    let b_acks = Topics::acks(&SiteId::new("gate-b").unwrap());
    a.client
        .subscribe(b_acks, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    assert!(
        !a.suback().await,
        "gate-a was allowed to read gate-b's acks"
    );
    // ...nor publish as gate-b: the broker drops it, then handles gate-a's own batch after it.
    a.send_to("qyt/v1/site/gate-b/events", batch("gate-b", 1..=3), false)
        .await;
    a.puback(1).await;
    a.send(batch("gate-a", [1])).await;
    assert_eq!(seqs(&a.ack_where(|_| true).await), (1, vec![]));
    assert_eq!(hub.site("gate-b").await["stored_events"], 0);

    // A wrong password, or no login at all, is refused.
    for login in [Some(("gate-a", "wrong")), None] {
        let mut options = MqttOptions::new("intruder", "127.0.0.1", hub.broker.port());
        if let Some((u, p)) = login {
            options.set_credentials(u, p);
        }
        let (_client, mut eventloop) = AsyncClient::new(options, 8);
        let refused = within("the broker's answer", async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        return ack.code != ConnectReturnCode::Success
                    }
                    Ok(_) => {}
                    Err(_) => return true,
                }
            }
        })
        .await;
        assert!(refused, "login {login:?} was accepted");
    }
    hub.stop().await;
}

#[tokio::test]
async fn many_queued_batches_share_transactions_and_all_get_acked() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let mut agents = Vec::new();
    for site in SITES {
        agents.push(Agent::connect(hub.broker, site).await);
    }
    for n in 0..20u64 {
        for agent in &agents {
            agent
                .send(batch(agent.site.as_str(), n * 50 + 1..=n * 50 + 50))
                .await;
        }
    }
    for agent in &mut agents {
        let ack = agent.ack_where(|a| a.contiguous == Seq(1000)).await;
        assert!(ack.missing.is_empty());
    }
    for site in SITES {
        assert_eq!(hub.site(site).await["stored_events"], 1000);
    }
    assert_eq!(hub.metric("qyt_hub_batches_ingested_total").await, 60);
    // Supervision applied each stored event once, in chunks, whatever its wake-ups.
    hub.supervision.settle().await;
    assert_eq!(hub.metric("qyt_hub_supervised_events_total").await, 3000);
    hub.stop().await;
}
