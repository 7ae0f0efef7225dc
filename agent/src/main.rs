//! `qyt-agent`: the checkpoint agent's command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "qyt-agent",
    version,
    about = "QuanYuTong checkpoint agent: devices → durable buffer → hub"
)]
struct Cli {
    /// The agent's config file (TOML); see config/agent.toml.
    #[arg(long, short, global = true, default_value = "/etc/qyt/agent.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Validate the config: print the effective config, or every error with its key and line.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match qyt_agent::config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => match toml::Value::try_from(&config)
            .map(redact)
            .and_then(|v| toml::to_string_pretty(&v).map_err(serde::ser::Error::custom))
        {
            Ok(text) => {
                print!("# effective config of {}\n{text}", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("config is valid but could not be printed: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(config: qyt_agent::config::Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async {
        qyt_agent::run::run(config, terminate(), |_| {}).await?;
        Ok(())
    })
}

/// Resolves on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn terminate() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The effective config is printed for a human to read (and paste into a ticket): secrets are
/// shown as redacted.
fn redact(mut v: toml::Value) -> toml::Value {
    fn walk(v: &mut toml::Value) {
        match v {
            toml::Value::Table(t) => {
                for (k, val) in t.iter_mut() {
                    if k == "password" {
                        *val = toml::Value::String("<redacted>".into());
                    } else {
                        walk(val);
                    }
                }
            }
            toml::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}
