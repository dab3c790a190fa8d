//! The Redis link over TLS (`rediss://`) with a password, against a real `redis-server` that
//! only speaks TLS. Its certificate is signed by a CA made here, which the link trusts through
//! `SSL_CERT_FILE` (read by rustls-native-certs). Alone in its own test binary because it sets
//! that environment variable for the whole process.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use stratus::cluster::{Cluster, ClusterSettings, Event, Round};
use stratus::dialect::encode_set;
use stratus::engine::{Batch, Engine, Limits, RoomChanges, SavedVariable};
use stratus::net::{drain, BackendLink};

const PATIENCE: Duration = Duration::from_secs(30);

/// A TLS-only redis-server; killed when dropped.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a CA and a certificate it signs for 127.0.0.1 into `dir`; returns (ca, cert, key).
fn certificates(dir: &std::path::Path) -> [String; 3] {
    let mut ca = rcgen::CertificateParams::new(Vec::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "stratus test CA");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = ca.self_signed(&ca_key).expect("CA");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).expect("leaf");
    let files = [
        ("ca.pem", ca.pem()),
        ("cert.pem", leaf.pem()),
        ("key.pem", leaf_key.serialize_pem()),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write pem");
        path.to_str().expect("utf-8 path").to_owned()
    })
}

fn start_tls_redis(dir: &std::path::Path, [ca, cert, key]: &[String; 3]) -> TlsRedis {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(std::env::var("REDIS_SERVER").unwrap_or("redis-server".into()))
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--dir", dir.to_str().expect("dir")])
        .args(["--tls-cert-file", cert, "--tls-key-file", key])
        .args(["--tls-ca-cert-file", ca, "--tls-auth-clients", "no"])
        .args([
            "--requirepass",
            "s3cret",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let redis = TlsRedis { child, port };
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server (TLS) did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    redis
}

#[test]
fn a_rediss_url_with_a_password_saves_publishes_and_loads() {
    if !common::redis::available() {
        return;
    }
    let dir = common::unique_path("-redis-tls");
    std::fs::create_dir_all(&dir).expect("dir");
    let files = certificates(&dir);
    // Set before any thread of ours reads the environment.
    std::env::set_var("SSL_CERT_FILE", &files[0]);
    let redis = start_tls_redis(&dir, &files);

    let poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
    let settings = ClusterSettings {
        url: format!("rediss://:s3cret@127.0.0.1:{}/0", redis.port),
        node_id: "tls-node".into(),
        retention: None,
        history: 1000,
    };
    let mut cluster = Cluster::start(settings, waker).expect("start");
    let mut poll = poll;
    let mut seen = Vec::new();
    let mut wait_for = |cluster: &mut Cluster, wanted: &dyn Fn(&Event) -> bool| {
        let deadline = Instant::now() + PATIENCE;
        let mut events = Events::with_capacity(4);
        loop {
            seen.extend(cluster.take_events());
            if seen.iter().any(wanted) {
                return;
            }
            assert!(Instant::now() < deadline, "waited in vain; saw {seen:?}");
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll");
        }
    };
    assert!(cluster.subscribe("secure".into()));
    wait_for(&mut cluster, &|e| matches!(e, Event::Subscribed(_)));
    let variable = SavedVariable {
        user: Default::default(),
        changed_ms: 0,
        name: "☁ s".into(),
        value: "42".into(),
        is_number: true,
    };
    let round = Round {
        batch: Batch {
            rooms: vec![RoomChanges::upserting(
                "secure".into(),
                vec![variable.clone()],
            )],
        },
        loads: vec!["secure".into()],
        ..Round::default()
    };
    cluster.send_round(round).expect("round taken");
    wait_for(&mut cluster, &|e| matches!(e, Event::Message(_)));
    wait_for(&mut cluster, &|e| matches!(e, Event::RoundDone(_)));
    let Some(Event::RoundDone(result)) = seen.iter().find(|e| matches!(e, Event::RoundDone(_)))
    else {
        unreachable!()
    };
    assert!(result.saved);
    assert_eq!(result.loaded[0].variables, std::slice::from_ref(&variable));
    let Some(Event::Message(batch)) = seen.iter().find(|e| matches!(e, Event::Message(_))) else {
        unreachable!()
    };
    assert_eq!(batch.variables, [variable]);
    assert!(!seen.iter().any(|e| matches!(e, Event::Outage)), "{seen:?}");
    let mut engine = Engine::new(Limits::default(), encode_set);
    assert_eq!(
        drain(BackendLink::Cluster(cluster), &mut engine, PATIENCE),
        0
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
