//! Enterprise webhooks against a real HTTP receiver on an ephemeral port: signed, in order,
//! retried with backoff, logged, given up after the configured attempts.

use crate::harness::*;
use crate::scenarios::{declaration, seal, Scenario};
use hmac::{Hmac, KeyInit, Mac};
use qyt_proto::SealState;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRET: &str = "acme-webhook-secret-0001";

struct Received {
    headers: BTreeMap<String, String>,
    body: String,
}

/// A minimal HTTP server: records each request, answers with the next queued status (200 when
/// the queue is empty).
async fn receiver() -> (
    SocketAddr,
    Arc<Mutex<VecDeque<u16>>>,
    mpsc::UnboundedReceiver<Received>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answers = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = mpsc::unbounded_channel();
    let queue = answers.clone();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let (head, body) = loop {
                let n = conn.read(&mut buf).await.unwrap();
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break (head.to_string(), body.to_string());
                    }
                }
                assert!(n > 0, "request cut short");
            };
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect();
            let _ = tx.send(Received { headers, body });
            let status = queue.lock().unwrap().pop_front().unwrap_or(200);
            let answer =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    (addr, answers, rx)
}

fn verify(r: &Received) -> Value {
    let ts = &r.headers["x-qyt-timestamp"];
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.{}", r.body).as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(r.headers["x-qyt-signature"], expected, "signature");
    assert_eq!(r.headers["content-type"], "application/json");
    serde_json::from_str(&r.body).unwrap()
}

async fn next(received: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    within("a webhook request", received.recv()).await.unwrap()
}

async fn deliveries(s: &Scenario) -> Vec<Value> {
    let (status, list) = s
        .hub
        .call("GET", "/api/webhook/deliveries", ACME_TOKEN, None)
        .await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

#[tokio::test]
async fn status_changes_are_posted_signed_in_order_with_retries_and_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.webhooks.max_attempts = 3;
    let mut s = Scenario::start_with(c).await;
    let (addr, answers, mut received) = receiver().await;
    let url = format!("http://{addr}/hooks/qyt");

    for (body, expect) in [
        (json!({"url": "ftp://x", "secret": SECRET}), 400),
        (json!({"url": url, "secret": "short"}), 400),
        (json!({"url": url}), 400),
    ] {
        let (status, e) = s
            .hub
            .call("PUT", "/api/webhook", ACME_TOKEN, Some(body))
            .await;
        assert_eq!(status, expect, "{e}");
    }
    let (status, _) = s.hub.call("GET", "/api/webhook", ACME_TOKEN, None).await;
    assert_eq!(status, 404);
    let (status, hook) = s
        .hub
        .call(
            "PUT",
            "/api/webhook",
            ACME_TOKEN,
            Some(json!({"url": url, "secret": SECRET})),
        )
        .await;
    assert_eq!(status, 200, "{hook}");
    let (_, shown) = s.hub.call("GET", "/api/webhook", ACME_TOKEN, None).await;
    assert_eq!(shown["url"], url.as_str());
    assert!(!shown.to_string().contains(SECRET));

    // The first delivery fails twice, then goes through; the next one waits its turn. The
    // worker runs too (woken by each change); `deliver_due` returns once every delivery due at
    // the clock's time has been attempted, by whichever of the two.
    answers.lock().unwrap().extend([500, 503]);
    s.declare(declaration("T-900")).await;
    s.hub.webhooks.deliver_due().await;
    let first = next(&mut received).await;
    let payload = verify(&first);
    assert_eq!(payload["status"], "declared");
    assert_eq!(payload["transit"], "T-900");
    let log = deliveries(&s).await;
    assert_eq!(
        (log[0]["state"].as_str(), log[0]["attempts"].as_u64()),
        (Some("pending"), Some(1))
    );
    assert_eq!(log[0]["log"][0]["http_status"], 500);

    // Sealed at t0 + 2 s: queued behind the declared one, whose retry is due at t0 + 5 s.
    s.live(
        "gate-a",
        vec![
            (1, seal("CN-S1", SealState::Sealed)),
            (2, seal("CN-S2", SealState::Sealed)),
        ],
    )
    .await;
    s.hub.webhooks.deliver_due().await;
    assert!(received.try_recv().is_err(), "nothing due before t0 + 5 s");
    s.clock(5);
    s.hub.webhooks.deliver_due().await;
    let second = next(&mut received).await;
    assert_eq!(
        second.headers["x-qyt-delivery"], first.headers["x-qyt-delivery"],
        "a retry, not a new delivery"
    );
    s.clock(14);
    s.hub.webhooks.deliver_due().await;
    assert!(received.try_recv().is_err(), "the second wait is 10 s");
    s.clock(15);
    s.hub.webhooks.deliver_due().await;
    assert_eq!(verify(&next(&mut received).await)["status"], "declared");
    s.hub.webhooks.deliver_due().await;
    let sealed = verify(&next(&mut received).await);
    assert_eq!(
        (sealed["from"].as_str(), sealed["status"].as_str()),
        (Some("declared"), Some("sealed"))
    );
    assert_eq!(
        sealed["cause"],
        json!({"type": "event", "site": "gate-a", "seq": 2})
    );

    let log = deliveries(&s).await;
    let states: Vec<_> = log
        .iter()
        .map(|d| {
            (
                d["status"].as_str().unwrap(),
                d["state"].as_str().unwrap(),
                d["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("sealed", "delivered", 1), ("declared", "delivered", 3)]
    );
    let codes: Vec<_> = log[1]["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["http_status"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [500, 503, 200]);

    // A receiver that never answers well: given up after max_attempts.
    answers.lock().unwrap().extend([500, 500, 500]);
    s.declare(json!({
        "id": "T-901", "enterprise": "acme", "plate": "沪C1", "seal_ids": ["Z1"],
        "origin": "gate-a", "destination": "gate-b", "max_duration_s": 600
    }))
    .await;
    for at in [100, 105, 115] {
        s.clock(at);
        s.hub.webhooks.deliver_due().await;
    }
    let log = deliveries(&s).await;
    assert_eq!(
        (log[0]["transit"].as_str(), log[0]["state"].as_str()),
        (Some("T-901"), Some("gave_up"))
    );

    // Another enterprise without a webhook gets no deliveries; removing it stops them.
    let (_, none) = s
        .hub
        .call("GET", "/api/webhook/deliveries", GLOBEX_TOKEN, None)
        .await;
    assert_eq!(none, json!([]));
    let (status, _) = s.hub.call("DELETE", "/api/webhook", ACME_TOKEN, None).await;
    assert_eq!(status, 200);
    let (status, _) = s.hub.call("DELETE", "/api/webhook", ACME_TOKEN, None).await;
    assert_eq!(status, 404);
    let (_, audit) = s
        .hub
        .call("GET", "/api/audit?target=webhook:acme", TOKEN, None)
        .await;
    let actions: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["webhook.set", "webhook.delete"]);
    s.stop().await;
}
