//! The gateway's local MQTT broker for cross-process tests: a real Mosquitto process when the
//! machine has one (CI installs it), otherwise mqtt5's broker on a real socket inside the test
//! process, so `cargo test` on a fresh machine still runs every scenario against a real broker.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub enum GatewayBroker {
    Mosquitto {
        child: Child,
        addr: SocketAddr,
    },
    Embedded {
        shutdown: mqtt5::broker::BrokerShutdownHandle,
        addr: SocketAddr,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

pub fn mosquitto_path() -> Option<&'static str> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
}

/// When set (CI sets it), a missing Mosquitto fails the Mosquitto interop tests instead of
/// skipping them.
pub fn mosquitto_required() -> bool {
    std::env::var_os("QYT_REQUIRE_MOSQUITTO").is_some()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl GatewayBroker {
    /// Mosquitto with persistence in `dir` if installed, else the embedded broker.
    pub fn start(dir: &Path) -> GatewayBroker {
        match mosquitto_path() {
            Some(bin) => Self::mosquitto(bin, dir, free_port()),
            None => Self::embedded(),
        }
    }

    pub fn mosquitto(bin: &str, dir: &Path, port: u16) -> GatewayBroker {
        Self::mosquitto_with(bin, dir, port, "")
    }

    /// [`GatewayBroker::mosquitto`] with more configuration lines (e.g. a TLS listener).
    pub fn mosquitto_with(bin: &str, dir: &Path, port: u16, extra: &str) -> GatewayBroker {
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 autosave_interval 1\nmax_inflight_messages 1000\nmax_queued_messages 1000000\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n",
                dir.display()
            ),
        )
        .unwrap();
        // As root, mosquitto drops to its own user unless told otherwise; the test's temp dir
        // belongs to root, so keep root.
        let conf_text = std::fs::read_to_string(&conf).unwrap() + "user root\n" + extra;
        std::fs::write(&conf, conf_text).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mosquitto");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_port(addr, "mosquitto");
        GatewayBroker::Mosquitto { child, addr }
    }

    pub fn embedded() -> GatewayBroker {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut config = mqtt5::broker::BrokerConfig {
                    bind_addresses: vec!["127.0.0.1:0".parse().unwrap()],
                    ..Default::default()
                };
                config.auth_config.allow_anonymous = true;
                let mut broker = mqtt5::broker::MqttBroker::with_config(config)
                    .await
                    .expect("embedded broker");
                let addr = broker.local_addr().expect("bound");
                tx.send((broker.shutdown_handle(), addr)).unwrap();
                let _ = broker.run().await;
            });
        });
        let (shutdown, addr) = rx.recv().expect("embedded broker started");
        wait_for_port(addr, "embedded broker");
        GatewayBroker::Embedded {
            shutdown,
            addr,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            GatewayBroker::Mosquitto { addr, .. } | GatewayBroker::Embedded { addr, .. } => *addr,
        }
    }

    pub fn is_mosquitto(&self) -> bool {
        matches!(self, GatewayBroker::Mosquitto { .. })
    }
}

impl Drop for GatewayBroker {
    fn drop(&mut self) {
        match self {
            GatewayBroker::Mosquitto { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            GatewayBroker::Embedded {
                shutdown, thread, ..
            } => {
                shutdown.shutdown();
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}
