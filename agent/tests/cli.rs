//! The `qyt-agent` binary as an integrator and a field engineer use it: `check-config` and
//! `decode`. (Its presence also makes `cargo test` build the binary that the workspace's
//! cross-process tests start.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_qyt-agent");

fn repo(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_config_accepts_the_shipped_config_and_redacts_secrets() {
    let out = Command::new(BIN)
        .args(["check-config", "--config", &repo("config/agent.toml")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("site = \"demo-gate-01\""), "{text}");
    assert!(text.contains("password = \"<redacted>\""), "{text}");
    assert!(!text.contains("demo-gate-01-password"), "{text}");
}

#[test]
fn check_config_lists_every_error_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "site = \"a b\"\n[buffer]\ndir = \"x\"\nengine = \"floppy\"\n[uplink]\nhost = \"h\"\n[[source]]\ntype = \"serial\"\nname = \"s\"\npath = \"/dev/ttyS0\"\nprotocol = \"lines\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("line 1: site"), "{err}");
    assert!(err.contains("buffer"), "{err}");
    assert!(err.contains("source[0]"), "{err}");
}

#[test]
fn decode_prints_events_on_stdout_and_rejections_on_stderr() {
    let out = Command::new(BIN)
        .args([
            "decode",
            "--protocol",
            "jt808",
            "--hex",
            &repo("../shared/testdata/jt808/frames.tsv"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events
        .iter()
        .any(|e| e["kind"] == "position" && e["observed_at"].as_str().unwrap().ends_with('Z')));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("rejected: bad_checksum"))
            .count(),
        1,
        "{stderr}"
    );

    let out = Command::new(BIN)
        .args([
            "decode",
            "--protocol",
            "nmea",
            &repo("../shared/testdata/nmea/sirfstarv-nmea.log"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let positions = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"kind\":\"position\""))
        .count();
    assert_eq!(positions, 59);
}
