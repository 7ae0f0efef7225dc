//! `qyt-hub`: runs the hub, checks its configuration, hashes its secrets.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use qyt_hub::config::ConfigError;
use qyt_hub::{secret, systemd, Config, Hub};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tracing::info;
use tracing_subscriber::EnvFilter;

/// QuanYuTong hub: MQTT broker, exactly-once ingest into SQLite, HTTP API.
#[derive(Parser)]
#[command(name = "qyt-hub", version)]
struct Cli {
    /// Configuration file (TOML), e.g. /etc/qyt/hub.toml.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration; print it with every default filled in, or every error.
    CheckConfig,
    /// Print the SHA-256 of an API token read from stdin, for `[[api.tokens]] sha256`.
    HashToken,
    /// Print the Argon2 hash of a site's MQTT password read from stdin, for
    /// `[[sites]] mqtt_password_hash`.
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::CheckConfig) => config_path(cli.config).and_then(|p| check_config(&p)),
        Some(Command::HashToken) => {
            read_secret("token").map(|t| println!("{}", hex::encode(secret::token_digest(&t))))
        }
        Some(Command::HashPassword) => read_secret("password")
            .and_then(|p| Ok(secret::password_hash(&p)?))
            .map(|h| println!("{h}")),
        None => config_path(cli.config).and_then(|p| serve(&p)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qyt-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_path(path: Option<PathBuf>) -> Result<PathBuf> {
    path.context("no configuration given: pass --config FILE (see config/hub.toml)")
}

fn check_config(path: &Path) -> Result<()> {
    match Config::load(path) {
        Ok(config) => {
            println!("# {}: OK. Effective configuration:\n", path.display());
            print!("{}", config.to_toml());
            Ok(())
        }
        Err(ConfigError::Invalid { issues, .. }) => {
            for issue in &issues {
                match issue.line {
                    Some(line) => eprintln!(
                        "{}:{line}: {}: {}",
                        path.display(),
                        issue.key,
                        issue.message
                    ),
                    None => eprintln!("{}: {}: {}", path.display(), issue.key, issue.message),
                }
            }
            bail!("{} has {} error(s)", path.display(), issues.len())
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads a secret from stdin, without its trailing newline.
fn read_secret(what: &str) -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the {what} from stdin"))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        bail!("no {what} on stdin: pipe it in, e.g. `printf %s \"$SECRET\" | qyt-hub hash-{what}`");
    }
    Ok(secret.to_string())
}

fn serve(path: &Path) -> Result<()> {
    tracing_subscriber::fmt()
        // Colour codes only for a terminal; journald and log files get plain text.
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,mqtt5=warn")),
        )
        .init();
    let config = Config::load(path)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let hub = Hub::start(config).await?;
        let ready = hub.ready();
        tokio::spawn(async move {
            ready.await;
            info!("ready: broker, ingest and HTTP are up");
            systemd::ready();
        });
        if let Some(pings) = systemd::watchdog() {
            tokio::spawn(pings);
        }
        hub.run_until(async {
            terminated().await;
            systemd::stopping();
        })
        .await?;
        Ok(())
    })
}

/// Resolves on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}
