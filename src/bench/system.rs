//! The system under test as real processes: `qyt-hub` and `qyt-agent` from the directory the
//! bench binary was built into, each with its own config and state in the run's temp dir, and
//! what the bench reads from them — their `/metrics`, the hub's API and `/proc`.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const SITE: &str = "demo-gate-01";
const SITE_PASSWORD: &str = "demo-gate-01-password";
const TOKEN: &str = "demo-operator-token";

/// Where `qyt-agent` and `qyt-hub` are: beside this binary, as `cargo build --workspace` puts
/// them, so the bench always measures the build it came with.
pub struct Bins {
    pub agent: PathBuf,
    pub hub: PathBuf,
}

impl Bins {
    pub fn beside_me() -> Result<Bins> {
        let exe = std::env::current_exe().context("locating qyt-bench")?;
        let dir = exe.parent().context("qyt-bench has no parent directory")?;
        let bins = Bins {
            agent: dir.join("qyt-agent"),
            hub: dir.join("qyt-hub"),
        };
        for b in [&bins.agent, &bins.hub] {
            if !b.exists() {
                bail!(
                    "{} is missing; build everything with `cargo build --release --workspace`",
                    b.display()
                );
            }
        }
        Ok(bins)
    }
}

pub fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Polls `f` every `every` until it yields a value; fails with `what` after `timeout`.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {:.0} s waiting for {what}",
                timeout.as_secs_f64()
            );
        }
        std::thread::sleep(every);
    }
}

/// One HTTP client for the whole run, with a timeout so that a hung process cannot hang the
/// bench.
fn http() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .build(),
        )
    })
}

/// Sum of the samples of Prometheus metric `name` (all label sets).
pub fn scrape(addr: SocketAddr, name: &str) -> Result<f64> {
    let text = http()
        .get(&format!("http://{addr}/metrics"))
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .with_context(|| format!("GET http://{addr}/metrics"))?;
    Ok(text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn healthy(addr: SocketAddr) -> bool {
    http()
        .get(&format!("http://{addr}/healthz"))
        .call()
        .is_ok_and(|r| r.status() == 200)
}

/// A child process logging to a file, killed when dropped (also when the bench fails halfway).
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[&str], dir: &Path) -> Result<Proc> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join(format!("{name}.log"));
        let out = File::options().create(true).append(true).open(&log)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info,mqtt5=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out));
        // If the bench itself is killed, its children must not stay behind holding ports and
        // temp files. Children are only ever spawned from the main thread, whose exit is what
        // the parent-death signal follows.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Proc {
            name: name.into(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> Result<i32> {
        let c = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        Ok(c.id() as i32)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; SIGKILL if it does not come.
    pub fn terminate(&mut self, within: Duration) -> Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = c.try_wait()? {
                if !status.success() {
                    bail!("{} exited with {status} after SIGTERM", self.name);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "{} did not exit within {} s of SIGTERM",
                    self.name,
                    within.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// utime + stime so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let pid = self.pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The command name may contain spaces and parentheses; the fields follow the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("malformed /proc/PID/stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks / hz)
    }

    /// A `/proc/PID/status` field in KiB, e.g. `VmHWM` (peak RSS) or `VmRSS`.
    pub fn status_kib(&self, field: &str) -> Result<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {field} in /proc/{pid}/status"))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Fails with the end of the process's log if it is no longer running.
    pub fn ensure_running(&mut self) -> Result<()> {
        if self.is_running() {
            Ok(())
        } else {
            bail!("{} exited; its log ends:\n{}", self.name, self.log_tail())
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A hub with its embedded broker, on ports chosen when configured so that an agent can be
/// pointed at it before it runs (a hub outage) and it comes back where the agent expects it.
/// Starts `program --config <dir>/<name>.toml` and waits until its `/healthz` answers.
fn start_service(name: &str, program: &Path, dir: &Path, http: SocketAddr) -> Result<Proc> {
    let config = dir.join(format!("{name}.toml"));
    let config = config.to_str().context("non-UTF-8 temp path")?;
    let mut proc = Proc::spawn(name, program, &["--config", config], dir)?;
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(10),
        &format!("the {name} to start"),
        || {
            proc.ensure_running()?;
            Ok(healthy(http).then_some(()))
        },
    )?;
    Ok(proc)
}

pub struct Hub {
    proc: Option<Proc>,
    pub broker: SocketAddr,
    pub http: SocketAddr,
    dir: PathBuf,
    program: PathBuf,
}

impl Hub {
    pub fn configure(bins: &Bins, dir: &Path, auth: &str) -> Result<Hub> {
        std::fs::create_dir_all(dir)?;
        let (broker, http) = (free_addr()?, free_addr()?);
        std::fs::write(
            dir.join("hub.toml"),
            format!(
                "[broker]\nlisten = \"{broker}\"\nallow_anonymous = false\n\n\
                 [store]\npath = \"{}\"\n\n[http]\nlisten = \"{http}\"\n\n{auth}",
                dir.join("hub.db").display()
            ),
        )?;
        Ok(Hub {
            proc: None,
            broker,
            http,
            dir: dir.to_path_buf(),
            program: bins.hub.clone(),
        })
    }

    /// Starts the hub and waits until its HTTP side answers.
    pub fn start(&mut self) -> Result<()> {
        self.proc = Some(start_service("hub", &self.program, &self.dir, self.http)?);
        Ok(())
    }

    pub fn stop(&mut self) -> Result<()> {
        match self.proc.take() {
            Some(mut p) => p.terminate(Duration::from_secs(30)),
            None => Ok(()),
        }
    }

    pub fn proc(&self) -> Result<&Proc> {
        self.proc.as_ref().context("the hub is not running")
    }

    fn get(&self, path: &str) -> Result<Value> {
        http()
            .get(&format!("http://{}{path}", self.http))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .and_then(|mut r| r.body_mut().read_json::<Value>())
            .with_context(|| format!("GET {path} from the hub"))
    }

    /// The site's entry in `/api/sites`: counters kept in the hub's store, so they survive
    /// restarts (the `/metrics` counters do not).
    pub fn site(&self) -> Result<Value> {
        let sites = self.get("/api/sites")?;
        sites
            .as_array()
            .and_then(|a| a.iter().find(|s| s["site"] == SITE))
            .cloned()
            .context("the bench's site is not listed by the hub")
    }

    pub fn stored(&self) -> Result<u64> {
        self.site()?["stored_events"]
            .as_u64()
            .context("stored_events is not a number")
    }

    /// The highest seq stored with nothing missing below it.
    pub fn contiguous(&self) -> Result<u64> {
        self.site()?["contiguous_seq"]
            .as_u64()
            .context("contiguous_seq is not a number")
    }

    /// Every stored event with seq above `after`, through the paged API.
    pub fn events_after(&self, mut after: u64) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        loop {
            let page = self.get(&format!(
                "/api/sites/{SITE}/events?after={after}&limit=1000"
            ))?;
            let page = page.as_array().context("events page is not an array")?;
            let Some(last) = page.last() else {
                return Ok(all);
            };
            after = last["seq"].as_u64().context("event without seq")?;
            all.extend(page.iter().cloned());
        }
    }
}

/// An agent for the bench's site with the given `[[source]]` tables; its uplink points at
/// `hub_broker`, whether a hub listens there yet or not.
pub struct Agent {
    proc: Option<Proc>,
    pub http: SocketAddr,
    dir: PathBuf,
    program: PathBuf,
}

impl Agent {
    pub fn configure(
        bins: &Bins,
        dir: &Path,
        hub_broker: SocketAddr,
        sources: &str,
    ) -> Result<Agent> {
        std::fs::create_dir_all(dir)?;
        let http = free_addr()?;
        // Buffer big enough that the 1M-event backlog never reaches the size bound (no
        // evictions to muddle the figures); reconnects capped at 500 ms so that a hub coming
        // back is found quickly, as a test would; everything else is the shipped default.
        std::fs::write(
            dir.join("agent.toml"),
            format!(
                "site = \"{SITE}\"\n\n[buffer]\ndir = \"{}\"\nmax_bytes = {}\n\n\
                 [uplink]\nhost = \"{}\"\nport = {}\nusername = \"{SITE}\"\npassword = \"{SITE_PASSWORD}\"\n\
                 reconnect_min_ms = 50\nreconnect_max_ms = 500\n\n[http]\nlisten = \"{http}\"\n\n{sources}",
                dir.join("buffer").display(),
                2u64 << 30,
                hub_broker.ip(),
                hub_broker.port(),
            ),
        )?;
        Ok(Agent {
            proc: None,
            http,
            dir: dir.to_path_buf(),
            program: bins.agent.clone(),
        })
    }

    /// Starts the agent and waits until its HTTP side answers.
    pub fn start(&mut self) -> Result<()> {
        self.proc = Some(start_service("agent", &self.program, &self.dir, self.http)?);
        Ok(())
    }

    pub fn stop(&mut self) -> Result<()> {
        match self.proc.take() {
            Some(mut p) => p.terminate(Duration::from_secs(30)),
            None => Ok(()),
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn proc(&mut self) -> Result<&mut Proc> {
        let p = self.proc.as_mut().context("the agent is not running")?;
        p.ensure_running()?;
        Ok(p)
    }

    pub fn metric(&self, name: &str) -> Result<f64> {
        scrape(self.http, name)
    }

    /// Events made durable by this agent process (the counter restarts with the process).
    pub fn durable(&self) -> Result<u64> {
        Ok(self.metric("qyt_agent_events_durable_total")? as u64)
    }

    /// Events in the buffer not yet acknowledged by the hub.
    pub fn buffered(&self) -> Result<u64> {
        Ok(self.metric("qyt_agent_buffer_events")? as u64)
    }
}

/// The `[[source]]` of a simulated checkpoint producing `events` as fast as the buffer takes
/// them.
pub fn simulate_source(events: u64) -> String {
    format!(
        "[[source]]\ntype = \"simulate\"\nname = \"sim\"\nrate_per_s = 0\nmax_events = {events}\nseed = 1\n"
    )
}
