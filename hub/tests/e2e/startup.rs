//! A hub that cannot start leaves nothing half-running.

use crate::harness::*;
use qyt_hub::{Hub, HubError};

#[tokio::test]
async fn failed_start_releases_everything_it_bound() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let broker_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = config(dir.path());
    c.broker.listen = broker_port;
    c.http.listen = taken.local_addr().unwrap();
    let err = Hub::start(c).await.err().expect("the HTTP port is taken");
    assert!(matches!(err, HubError::HttpBind { .. }), "{err}");
    assert!(err.to_string().contains("http.listen"), "{err}");
    // The broker had bound its port before HTTP failed; it must have let it go.
    std::net::TcpListener::bind(broker_port).expect("broker port released");
}

#[tokio::test]
async fn invalid_config_is_refused_with_every_issue() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.sites.clear();
    c.ingest.queue_batches = 0;
    let err = Hub::start(c).await.err().expect("config is invalid");
    let HubError::Config(issues) = err else {
        panic!("{err}")
    };
    let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["ingest.queue_batches", "sites"]);
    assert!(
        !dir.path().join("hub.db").exists(),
        "nothing is created for a bad config"
    );
}
