//! Access: every route of the router against every kind of caller, and the admin's tokens.

use crate::harness::*;
use qyt_hub::api::{route_table, Access};
use serde_json::json;
use std::collections::BTreeMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Who each route admits, written out here on purpose: a change to the router's access rules
/// must change this table too.
fn policy() -> BTreeMap<(&'static str, &'static str), &'static str> {
    BTreeMap::from([
        (("GET", "/"), "open"),
        (("GET", "/healthz"), "open"),
        (("GET", "/metrics"), "open"),
        (("GET", "/api/openapi.json"), "open"),
        (("GET", "/api/sites"), "admin operator"),
        (("GET", "/api/sites/{site}/events"), "admin operator"),
        (("GET", "/api/admin/tokens"), "admin"),
        (("POST", "/api/admin/tokens"), "admin"),
        (("DELETE", "/api/admin/tokens/{id}"), "admin"),
        (("POST", "/api/transits"), "operator"),
        (("GET", "/api/transits"), "operator enterprise"),
        (("GET", "/api/transits/{id}"), "operator enterprise"),
        (("POST", "/api/transits/{id}/reseal"), "operator"),
        (("POST", "/api/transits/{id}/release"), "operator"),
        (("GET", "/api/alarms"), "operator enterprise"),
        (("GET", "/api/alarms/{id}"), "operator enterprise"),
        (("POST", "/api/alarms/{id}/acknowledge"), "operator"),
        (("POST", "/api/alarms/{id}/dispatch"), "operator"),
        (("POST", "/api/alarms/{id}/close"), "operator"),
        (("GET", "/api/audit"), "admin operator"),
        (("GET", "/api/stream"), "operator enterprise"),
        (("GET", "/api/webhook"), "enterprise"),
        (("PUT", "/api/webhook"), "enterprise"),
        (("DELETE", "/api/webhook"), "enterprise"),
        (("GET", "/api/webhook/deliveries"), "enterprise"),
    ])
}

/// Only the status of the answer: the head is enough, and the live stream never ends.
async fn status_of(
    hub: &TestHub,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(hub.http).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    within("the response head", async {
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
    })
    .await;
    let head = String::from_utf8_lossy(&head);
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

pub fn declaration(id: &str, enterprise: &str, plate: &str, seals: &[&str]) -> serde_json::Value {
    json!({
        "id": id,
        "enterprise": enterprise,
        "plate": plate,
        "elock_id": format!("lock-{id}"),
        "seal_ids": seals,
        "origin": "gate-a",
        "destination": "gate-b",
        "max_duration_s": 14400,
    })
}

#[tokio::test]
async fn every_route_answers_401_403_or_serves_exactly_its_roles() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let (status, body) = hub
        .call(
            "POST",
            "/api/transits",
            TOKEN,
            Some(declaration("T-ACME-1", "acme", "沪A00001", &["S1"])),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let table = route_table();
    let documented: BTreeMap<(String, String), String> = table
        .iter()
        .map(|r| {
            let who = match r.access {
                Access::Open => "open".to_string(),
                Access::Roles(roles) => roles
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            ((r.method.to_string(), r.path.to_string()), who)
        })
        .collect();
    let expected: BTreeMap<(String, String), String> = policy()
        .into_iter()
        .map(|((m, p), w)| ((m.to_string(), p.to_string()), w.to_string()))
        .collect();
    assert_eq!(documented, expected, "the router's access rules changed");

    let callers = [
        ("nobody", None),
        ("bogus", Some("not-a-token")),
        ("admin", Some(ADMIN_TOKEN)),
        ("operator", Some(TOKEN)),
        ("enterprise", Some(ACME_TOKEN)),
    ];
    for route in &table {
        let path = route.path.replace("{site}", "gate-a").replace(
            "{id}",
            if route.path.contains("transits") {
                "T-ACME-1"
            } else {
                "999999"
            },
        );
        // A body the handler will refuse if it gets that far: the guard must answer first.
        let body = (route.method != "GET").then(|| json!({"unexpected": true}));
        for (who, token) in callers {
            let status = status_of(&hub, route.method.as_str(), &path, token, body.as_ref()).await;
            let what = format!("{} {path} as {who}", route.method);
            match route.access {
                Access::Open => assert!(status < 400, "{what}: {status}"),
                Access::Roles(roles) => match token {
                    None | Some("not-a-token") => assert_eq!(status, 401, "{what}"),
                    Some(_) if roles.iter().any(|r| r.as_str() == who) => {
                        assert!(![401, 403].contains(&status), "{what}: {status}")
                    }
                    Some(_) => assert_eq!(status, 403, "{what}"),
                },
            }
        }
    }

    // Another enterprise's transit does not exist for it; its own does.
    assert_eq!(
        status_of(
            &hub,
            "GET",
            "/api/transits/T-ACME-1",
            Some(ACME_TOKEN),
            None
        )
        .await,
        200
    );
    assert_eq!(
        status_of(
            &hub,
            "GET",
            "/api/transits/T-ACME-1",
            Some(GLOBEX_TOKEN),
            None
        )
        .await,
        404
    );
    let (_, list) = hub.call("GET", "/api/transits", GLOBEX_TOKEN, None).await;
    assert_eq!(list, json!([]));
    let (_, list) = hub
        .call("GET", "/api/transits?enterprise=acme", GLOBEX_TOKEN, None)
        .await;
    assert_eq!(
        list,
        json!([]),
        "an enterprise cannot ask for another's transits"
    );
    let (_, list) = hub.call("GET", "/api/transits", ACME_TOKEN, None).await;
    assert_eq!(list[0]["id"], "T-ACME-1");
    hub.stop().await;
}

#[tokio::test]
async fn admins_issue_list_and_revoke_tokens_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let (status, issued) = hub
        .call(
            "POST",
            "/api/admin/tokens",
            ADMIN_TOKEN,
            Some(json!({"name": "acme-portal", "role": "enterprise:acme"})),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let token = issued["token"].as_str().unwrap().to_string();
    let id = issued["id"].as_str().unwrap().to_string();
    assert_eq!(issued["role"], "enterprise:acme");

    // It works at once, with its role.
    let (status, _) = hub.call("GET", "/api/transits", &token, None).await;
    assert_eq!(status, 200);
    let (status, _) = hub.call("GET", "/api/sites", &token, None).await;
    assert_eq!(status, 403);

    // Listed without its value; only a digest is in the database.
    let (status, list) = hub
        .call("GET", "/api/admin/tokens", ADMIN_TOKEN, None)
        .await;
    assert_eq!(status, 200);
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tests", "admin", "acme", "globex", "acme-portal"]);
    assert!(!list.to_string().contains(&token));
    let db = rusqlite::Connection::open(dir.path().join("hub.db")).unwrap();
    let stored: String = db
        .query_row("SELECT sha256 FROM api_tokens WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, hex::encode(qyt_hub::secret::token_digest(&token)));

    // Refusals say why.
    for (body, expect) in [
        (json!({"name": "acme-portal", "role": "operator"}), 409),
        (json!({"name": "x", "role": "root"}), 400),
        (json!({"name": " ", "role": "operator"}), 400),
        (json!({"role": "operator"}), 400),
    ] {
        let (status, answer) = hub
            .call("POST", "/api/admin/tokens", ADMIN_TOKEN, Some(body.clone()))
            .await;
        assert_eq!(status, expect, "{body}: {answer}");
        assert!(answer["error"].is_string());
    }
    let (status, answer) = hub
        .call("DELETE", "/api/admin/tokens/config-0", ADMIN_TOKEN, None)
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("hub.toml"));
    let (status, _) = hub
        .call("DELETE", "/api/admin/tokens/tok-nothing", ADMIN_TOKEN, None)
        .await;
    assert_eq!(status, 404);

    // Revoked: refused at once, and listed as revoked.
    let (status, revoked) = hub
        .call(
            "DELETE",
            &format!("/api/admin/tokens/{id}"),
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["revoked_by"], "admin");
    let (status, _) = hub.call("GET", "/api/transits", &token, None).await;
    assert_eq!(status, 401);
    let (status, _) = hub
        .call(
            "DELETE",
            &format!("/api/admin/tokens/{id}"),
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(status, 409);

    // Both actions are in the audit log.
    let (_, audit) = hub
        .call(
            "GET",
            "/api/audit?target=token:".to_string().as_str(),
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(audit, json!([]));
    let (_, audit) = hub
        .call(
            "GET",
            &format!("/api/audit?target=token:{id}"),
            ADMIN_TOKEN,
            None,
        )
        .await;
    let actions: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["token.create", "token.revoke"]);
    assert_eq!(audit[1]["from_state"], "active");
    assert_eq!(audit[1]["actor"], "admin");
    hub.stop().await;

    // Issued tokens survive a restart; revoked ones stay revoked.
    let hub = TestHub::start(config(dir.path())).await;
    let (status, _) = hub.call("GET", "/api/transits", &token, None).await;
    assert_eq!(status, 401);
    let (_, again) = hub
        .call(
            "POST",
            "/api/admin/tokens",
            ADMIN_TOKEN,
            Some(json!({"name": "ops-2", "role": "operator"})),
        )
        .await;
    hub.stop().await;
    let hub = TestHub::start(config(dir.path())).await;
    let (status, _) = hub
        .call("GET", "/api/sites", again["token"].as_str().unwrap(), None)
        .await;
    assert_eq!(status, 200);
    hub.stop().await;
}
