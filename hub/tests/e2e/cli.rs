//! The `qyt-hub` binary: check-config, the hash helpers, and a clean exit on SIGTERM.

use crate::harness::*;
use qyt_hub::Config;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_qyt-hub");

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/hub.toml")
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn shipped_config_is_valid_and_its_demo_token_matches() {
    let path = shipped_config();
    let out = run(&["check-config", "--config", path.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("id = \"demo-gate-01\""), "{printed}");
    assert!(printed.contains("listen = \"127.0.0.1:8080\""), "{printed}");

    // The demo tokens documented in the file's comments, with their roles.
    let config = Config::load(&path).unwrap();
    for (n, (plain, role)) in [
        ("demo-operator-token", "operator"),
        ("demo-admin-token", "admin"),
        ("demo-enterprise-token", "enterprise:demo-importer"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = run(&["hash-token"], &format!("{plain}\n"));
        assert!(out.status.success());
        assert_eq!(text(&out.stdout).trim(), config.api.tokens[n].sha256);
        assert_eq!(
            config.api.tokens[n].role.as_ref().unwrap().to_string(),
            role
        );
    }
}

#[test]
fn check_config_lists_every_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[http]\nlisten = \"nowhere\"\n\n[broker]\nurl = \"http://x\"\n\n[[sites]]\nid = \"a b\"\n",
    )
    .unwrap();
    let out = run(&["check-config", "--config", path.to_str().unwrap()], "");
    assert!(!out.status.success());
    let errors = text(&out.stderr);
    let file = path.display().to_string();
    assert!(
        errors.contains(&format!("{file}:2: http.listen:")),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{file}:8: sites[0].id:")),
        "{errors}"
    );

    let missing = run(&["check-config"], "");
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("--config"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn hash_password_prints_a_verifiable_argon2_hash() {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let out = run(&["hash-password"], "s3cret\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hash = text(&out.stdout);
    let parsed = PasswordHash::new(hash.trim()).unwrap();
    assert!(argon2::Argon2::default()
        .verify_password(b"s3cret", &parsed)
        .is_ok());
    let empty = run(&["hash-password"], "\n");
    assert!(!empty.status.success());
}

#[test]
fn sigterm_stops_the_service_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let path = dir.path().join("hub.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Log lines arrive on a thread, so the wait for "ready" is bounded by a timeout.
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("the hub logs that it is ready");
        if line.contains("ready: broker, ingest and HTTP are up") {
            break;
        }
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || done_tx.send(child.wait()));
    let status = done.recv_timeout(PATIENCE).expect("the hub exits").unwrap();
    assert!(status.success(), "{status}");
    let log: Vec<String> = lines.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("hub stopped")), "{log:#?}");
    assert!(dir.path().join("hub.db").exists());
}
