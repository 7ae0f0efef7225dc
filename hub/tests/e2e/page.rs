//! The operators' page at `/` in a real browser. This is the one test that uses a browser, and
//! nothing in it is mocked: Debian's Chromium, headless, driven over WebDriver by Debian's
//! chromedriver, loads the page from a real hub; fake agents publish through the real MQTT
//! ingest, so what the page shows live has come through the supervision engine and
//! `/api/stream`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (packages `chromium` and
//! `chromium-driver`). Without them the test says why and passes, unless
//! `QYT_REQUIRE_BROWSER=1` is set (CI sets it): then it fails.

use crate::harness::*;
use crate::scenarios::{declaration, seal, Scenario};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use qyt_proto::SealState;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Where the lead (or a failing run) finds the last screenshot.
const SCREENSHOT: &str = "/tmp/qyt-operators.png";
const FAILURE_SCREENSHOT: &str = "/tmp/qyt-operators-failure.png";

/// Why the browser cannot run here, if it cannot.
fn browser_missing() -> Option<String> {
    [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} is missing: apt-get install chromium chromium-driver"))
}

fn browser_required() -> bool {
    std::env::var_os("QYT_REQUIRE_BROWSER").is_some_and(|v| v == "1")
}

/// chromedriver in its own process group, with the Chromium it starts; dropping it kills the
/// group, so no browser outlives the test even when an assertion fails mid-way.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    async fn start() -> Chromedriver {
        // `--port=0` lets chromedriver pick a free port, which it prints: no window between
        // choosing a port and binding it for another process to take.
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            // Keeps reading to the end, so chromedriver never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let port = line
                    .strip_prefix("ChromeDriver was started successfully on port ")
                    .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok());
                if let Some(port) = port {
                    if let Some(tx) = port_tx.take() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        let mut driver = Chromedriver { child, port: 0 };
        driver.port = within("chromedriver to print its port", port_rx)
            .await
            .expect("chromedriver exited before listening: see its output above");
        let port = driver.port;
        eventually("chromedriver's /status to say ready", || async move {
            status_ready(port).await
        })
        .await;
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid (`process_group(0)`).
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Whether chromedriver answers `/status` with `ready: true` (within a second: it keeps the
/// connection open, so the answer is read until its body parses, not to the end).
async fn status_ready(port: u16) -> bool {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request = "GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n";
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            if let Some(body) = text.split_once("\r\n\r\n").map(|(_, b)| b) {
                if let Ok(v) = serde_json::from_str::<Value>(body) {
                    return Some(v["value"]["ready"] == true);
                }
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ask).await,
        Ok(Some(true))
    )
}

/// A headless Chromium session, and the chromedriver serving it.
struct Browser {
    client: Client,
    // Dropped after the client: the browser goes before its profile directory.
    _driver: Chromedriver,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let driver = Chromedriver::start().await;
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                // Without the background-networking flags Chromium hangs on an offline machine.
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1600,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let client = within(
            "chromedriver to start a Chromium session",
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{}", driver.port)),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot start a Chromium session through chromedriver: {e}"));
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        within(
            "the page to run a script",
            self.client.execute(script, args),
        )
        .await
        .unwrap_or_else(|e| panic!("script failed in the page: {e}\n{script}"))
    }

    /// Polls `script` every 50 ms until `done` holds of its value, for at most [`PATIENCE`];
    /// on failure leaves a screenshot at [`FAILURE_SCREENSHOT`].
    async fn wait(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = self.js(script, args.clone()).await;
            if done(&v) {
                return v;
            }
            if Instant::now() >= deadline {
                if let Ok(png) = self.client.screenshot().await {
                    let _ = std::fs::write(FAILURE_SCREENSHOT, png);
                }
                panic!(
                    "timed out waiting for {what}: last saw {v} (screenshot: {FAILURE_SCREENSHOT})"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the text of `css` to contain `text`, and returns the whole text.
    async fn text_contains(&self, css: &str, text: &str) -> String {
        let v = self
            .wait(
                &format!("{css} to say {text:?}"),
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(css)],
                |v| v.as_str().is_some_and(|s| s.contains(text)),
            )
            .await;
        v.as_str().unwrap().to_string()
    }

    /// Waits for `attr` of `css` to be `value`.
    async fn attr_is(&self, css: &str, attr: &str, value: &str) {
        self.wait(
            &format!("{css} to have {attr}={value:?}"),
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            vec![json!(css), json!(attr)],
            |v| v == value,
        )
        .await;
    }

    /// Whether an element matches `css` now.
    async fn has(&self, css: &str) -> bool {
        self.js(
            "return document.querySelector(arguments[0]) !== null;",
            vec![json!(css)],
        )
        .await
            == true
    }

    /// Clicks `css` as a user would, once it is there and visible.
    async fn click(&self, css: &str) {
        self.wait(
            &format!("{css} to be visible"),
            "const e = document.querySelector(arguments[0]); return !!e && e.offsetParent !== null && !e.disabled;",
            vec![json!(css)],
            |v| v == true,
        )
        .await;
        let e = self.client.find(Locator::Css(css)).await.unwrap();
        within("the click", e.click())
            .await
            .unwrap_or_else(|err| panic!("cannot click {css}: {err}"));
    }

    /// Replaces the text of the input `css` by typing `text`.
    async fn type_into(&self, css: &str, text: &str) {
        let e = self.client.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// Waits for the action dialog to be open, with `css` in it.
    async fn dialog(&self, css: &str) {
        self.wait(
            &format!("the action dialog with {css}"),
            "const d = document.getElementById('action-dialog');
             return d.open && d.querySelector(arguments[0]) !== null;",
            vec![json!(css)],
            |v| v == true,
        )
        .await;
    }

    async fn sign_in(&self, token: &str) {
        self.type_into("#token", token).await;
        self.click("#sign-in").await;
    }
}

fn alarm_row(id: u64) -> String {
    format!("#alarms tbody tr[data-alarm-id=\"{id}\"]")
}

fn transit_row(id: &str) -> String {
    format!("#transits tbody tr[data-transit-id=\"{id}\"]")
}

#[tokio::test]
async fn operators_page_signs_in_shows_live_alarms_and_works_them() {
    if let Some(why) = browser_missing() {
        assert!(!browser_required(), "QYT_REQUIRE_BROWSER=1 but {why}");
        eprintln!("skipped: {why} (CI installs it and sets QYT_REQUIRE_BROWSER=1)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::start(dir.path()).await;
    s.declare(declaration("T-300")).await;
    s.declare(json!({
        "id": "G-1", "enterprise": "globex", "plate": "京B1", "seal_ids": ["G1"],
        "origin": "gate-a", "destination": "gate-b", "max_duration_s": 600
    }))
    .await;
    s.depart().await;

    let b = Browser::start().await;
    b.client
        .goto(&format!("http://{}/", s.hub.http))
        .await
        .unwrap();

    // A wrong token: the hub's 401 message on the sign-in form, nothing else shown.
    b.sign_in("not-a-token").await;
    b.text_contains("#sign-in-error", "token not accepted")
        .await;
    assert!(b.has("#console[hidden]").await);

    // The operator: every transit, the sites, and the live stream.
    b.sign_in(TOKEN).await;
    b.attr_is(&transit_row("T-300"), "data-status", "in_transit")
        .await;
    assert!(b.has(&transit_row("G-1")).await, "operators see all");
    b.text_contains(
        &format!("{} td:nth-child(4)", transit_row("T-300")),
        "gate-a → gate-b",
    )
    .await;
    b.text_contains("#who", "operator").await;
    b.attr_is(
        "#sites tbody tr[data-site=\"gate-a\"]",
        "data-online",
        "true",
    )
    .await;
    b.attr_is("#live-status", "data-state", "live").await;
    assert_eq!(
        b.js("return sessionStorage.getItem('qyt.token');", vec![])
            .await,
        TOKEN
    );
    // Survives only as long as this page does: proves nothing below reloads it.
    b.js("window.qytSamePage = true; return null;", vec![])
        .await;

    // A seal opened on the road, through the real ingest: the alarm appears live.
    s.live("gate-c", vec![(900, seal("CN-S2", SealState::Opened))])
        .await;
    let alarms = s.alarms("?transit=T-300").await;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    let id = alarms[0]["id"].as_u64().unwrap();
    let row = alarm_row(id);
    b.attr_is(&row, "data-state", "open").await;
    b.attr_is(&row, "data-via", "stream").await;
    assert_eq!(
        b.js("return window.qytSamePage === true;", vec![]).await,
        true
    );
    b.text_contains(&format!("{row} [data-col=kind]"), "seal opened")
        .await;
    b.text_contains(&row, "critical").await;
    b.text_contains(&row, "T-300").await;
    b.text_contains(&row, "gate-c").await;

    // Acknowledge: in the page, in the API, in the audit log.
    b.click(&format!("{row} button[data-action=acknowledge]"))
        .await;
    b.attr_is(&row, "data-state", "acknowledged").await;
    let (status, a) = s
        .hub
        .call("GET", &format!("/api/alarms/{id}"), TOKEN, None)
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["state"], "acknowledged");
    assert_eq!(a["acknowledged"]["by"], "tests");
    let audit = audit_actions(&s.hub, id).await;
    assert_eq!(audit, ["alarm.acknowledge"]);

    // Dispatch to a named unit.
    b.click(&format!("{row} button[data-action=dispatch]"))
        .await;
    b.dialog("#dialog-unit").await;
    b.type_into("#dialog-unit", "patrol 7").await;
    b.click("#dialog-ok").await;
    b.attr_is(&row, "data-state", "dispatched").await;
    b.text_contains(&row, "patrol 7").await;
    assert!(!b.has("#action-dialog[open]").await);

    // Close: the hub refuses it without a comment, and the page shows the hub's reason.
    b.click(&format!("{row} button[data-action=close]")).await;
    b.dialog("option[value=false_alarm]").await;
    b.client
        .find(Locator::Css("#dialog-reason"))
        .await
        .unwrap()
        .select_by_value("false_alarm")
        .await
        .unwrap();
    b.click("#dialog-ok").await;
    b.text_contains("#dialog-error", "a comment is required")
        .await;
    b.type_into("#dialog-comment", "driver checked the seal: reader misread")
        .await;
    b.click("#dialog-ok").await;
    b.attr_is(&row, "data-state", "closed").await;
    let (_, a) = s
        .hub
        .call("GET", &format!("/api/alarms/{id}"), TOKEN, None)
        .await;
    assert_eq!(
        (
            a["state"].as_str(),
            a["close_reason"].as_str(),
            a["unit"].as_str()
        ),
        (Some("closed"), Some("false_alarm"), Some("patrol 7")),
        "{a}"
    );
    assert_eq!(
        audit_actions(&s.hub, id).await,
        ["alarm.acknowledge", "alarm.dispatch", "alarm.close"]
    );
    assert!(
        !b.has(&format!("{row} button[data-action]")).await,
        "a closed alarm offers no action"
    );

    // The transit's detail: its timeline with each entry's cause.
    b.click(&transit_row("T-300")).await;
    b.wait(
        "the timeline to show the alarm",
        "return document.querySelectorAll('#timeline tbody tr[data-kind=alarm]').length;",
        vec![],
        |v| v.as_u64() >= Some(1),
    )
    .await;
    let timeline = b
        .js(
            "return [...document.querySelectorAll('#timeline tbody tr[data-kind=status]')].map(
               (tr) => [tr.cells[3].textContent, tr.querySelector('[data-col=cause]').textContent]);",
            vec![],
        )
        .await;
    assert_eq!(
        timeline,
        json!([
            ["declared", "tests"],
            ["declared → sealed", "gate-a#2"],
            ["sealed → departed", "gate-a#4"],
            ["departed → in transit", "gate-c#1"],
        ])
    );
    b.wait(
        "the transit's alarms to list the closed one",
        "return document.querySelector(arguments[0]) !== null;",
        vec![json!(format!(
            "#detail-alarms tr[data-alarm-id=\"{id}\"] .st-closed"
        ))],
        |v| v == true,
    )
    .await;

    // Releasing a transit still on the road: the hub's 409 is shown, not swallowed.
    b.click("#detail-actions button[data-action=release]").await;
    b.dialog("#dialog-comment").await;
    b.click("#dialog-ok").await;
    b.text_contains(
        "#dialog-error",
        "only a verified (or arrived) transit can be released",
    )
    .await;
    b.click("#dialog-cancel").await;

    // The truck arrives with one seal read so far: the open detail follows it live, with the
    // arrival reconciliation.
    s.live(
        "gate-b",
        Scenario::arrival(3600, &[("CN-S1", SealState::Sealed)]),
    )
    .await;
    assert_eq!(s.transit("T-300", TOKEN).await["status"], "arrived");
    b.attr_is(&transit_row("T-300"), "data-status", "arrived")
        .await;
    b.wait(
        "the reconciliation: all matching but the seal not read yet",
        "return [...document.querySelectorAll('#reconciliation tbody tr')].map(
           (tr) => [tr.dataset.check, tr.lastChild.dataset.ok, tr.lastChild.textContent]);",
        vec![],
        |v| {
            *v == json!([
                ["plate", "true", "match"],
                ["seal", "true", "match"],
                ["seal", "false", "not read yet"],
                ["weight", "true", "match"],
                ["elapsed", "true", "match"]
            ])
        },
    )
    .await;
    assert_eq!(
        b.js("return window.qytSamePage === true;", vec![]).await,
        true
    );

    let png = b.client.screenshot().await.unwrap();
    std::fs::write(dir.path().join("operators.png"), &png).unwrap();
    std::fs::write(SCREENSHOT, &png).unwrap();

    // Signing out forgets the token.
    b.click("#sign-out").await;
    b.wait(
        "the sign-in form after signing out",
        "return !document.getElementById('sign-in-panel').hidden && sessionStorage.getItem('qyt.token');",
        vec![],
        |v| v.is_null(),
    )
    .await;

    // An enterprise: its own transit, not another's; its alarms live; no operator actions.
    b.sign_in(ACME_TOKEN).await;
    b.attr_is(&transit_row("T-300"), "data-status", "arrived")
        .await;
    b.text_contains("#who", "enterprise").await;
    b.attr_is("#live-status", "data-state", "live").await;
    assert!(
        !b.has(&transit_row("G-1")).await,
        "globex's transit shown to acme"
    );
    assert!(b.has("#sites-panel[hidden]").await, "sites are for staff");
    assert!(!b.has(&row).await, "enterprises do not see closed alarms");
    // The other seal, read opened at the destination.
    s.live("gate-b", vec![(3700, seal("CN-S2", SealState::Opened))])
        .await;
    let (_, theirs) = s.hub.call("GET", "/api/alarms", ACME_TOKEN, None).await;
    assert_eq!(theirs[0]["rule"], "seal_mismatch", "{theirs}");
    let second = theirs[0]["id"].as_u64().unwrap();
    b.attr_is(&alarm_row(second), "data-via", "stream").await;
    b.attr_is(&alarm_row(second), "data-state", "open").await;
    assert!(
        !b.has("#alarms button[data-action]").await,
        "an enterprise is offered operator actions"
    );
    b.click(&transit_row("T-300")).await;
    b.wait(
        "acme's view of the timeline",
        "return document.querySelectorAll('#timeline tbody tr').length;",
        vec![],
        |v| v.as_u64() >= Some(4),
    )
    .await;
    assert!(
        !b.has("#detail-actions").await,
        "an enterprise may not release"
    );

    b.client.clone().close().await.unwrap();
    s.stop().await;
}

/// The audit log's actions on alarm `id`, oldest first.
async fn audit_actions(hub: &TestHub, id: u64) -> Vec<String> {
    let (status, audit) = hub
        .call("GET", &format!("/api/audit?target=alarm:{id}"), TOKEN, None)
        .await;
    assert_eq!(status, 200, "{audit}");
    audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}
