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
    /// Decode a captured device stream (a file or stdin): one JSON event per line on stdout,
    /// one line per rejected frame (with its reason) on stderr.
    Decode {
        #[arg(long, value_enum)]
        protocol: qyt_agent::offline::Protocol,
        /// The input has one hex-encoded frame per line (e.g. a JT/T 808 frame list).
        #[arg(long)]
        hex: bool,
        /// Device id put into events that need one.
        #[arg(long, default_value = "capture")]
        device_id: String,
        /// For `--protocol lines`: a TOML file with the line format, as in `[source.lines]`.
        /// Default: delimited by commas, `seal_id,state`.
        #[arg(long)]
        lines_format: Option<PathBuf>,
        /// The capture; standard input when absent.
        file: Option<PathBuf>,
    },
    /// Drive a device protocol without hardware: a GNSS receiver, a weighbridge or an e-seal
    /// reader on a pseudo-terminal, JT/T 808 e-locks over TCP, lane cameras over MQTT.
    Simulate(qyt_agent::simulators::SimulateArgs),
}

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let check_only = match cli.command.unwrap_or(Command::Run) {
        Command::Run => false,
        Command::CheckConfig => true,
        Command::Simulate(args) => {
            return match qyt_agent::simulators::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("simulate failed: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Decode {
            protocol,
            hex,
            device_id,
            lines_format,
            file,
        } => {
            return match decode(protocol, hex, &device_id, lines_format, file) {
                Ok(counts) => {
                    eprintln!(
                        "decoded {} event(s), rejected {} frame(s)",
                        counts.events, counts.rejected
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("decode failed: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    };
    let config = match qyt_agent::config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        match toml::Value::try_from(&config)
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
        }
    } else {
        match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Caps glibc's malloc at one arena. By default glibc gives threads that meet in the allocator
/// arenas of their own (up to eight per core), and each arena keeps what was freed in it: while
/// draining a backlog, the uplink, intake and runtime threads doubled the agent's resident
/// memory that way (36 MiB against 18 MiB, measured by `qyt-bench`), at no gain in drain speed.
/// Gateways are small; `MALLOC_ARENA_MAX` in the environment still decides when set.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tuning parameter of the allocator, and runs before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

fn decode(
    protocol: qyt_agent::offline::Protocol,
    hex: bool,
    device_id: &str,
    lines_format: Option<PathBuf>,
    file: Option<PathBuf>,
) -> anyhow::Result<qyt_agent::offline::Counts> {
    let lines = match lines_format {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{} is not a valid line format", path.display()))?
        }
        None => toml::from_str("format = \"delimited\"\n[fields]\nseal_id = 0\nstate = 1\n")
            .context("built-in line format")?,
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let counts = match file {
        Some(path) => {
            let f = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            qyt_agent::offline::decode(protocol, hex, device_id, &lines, f, &mut out, &mut err)?
        }
        None => qyt_agent::offline::decode(
            protocol,
            hex,
            device_id,
            &lines,
            std::io::stdin().lock(),
            &mut out,
            &mut err,
        )?,
    };
    Ok(counts)
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
                    if k == "password" || k == "auth_secret" {
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
