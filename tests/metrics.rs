//! `/metrics` through the real binary: Prometheus text whose numbers move as traffic flows,
//! answered only to local clients unless `--metrics-listen` gives it a listener of its own.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// The value of the sample `name` (with its labels, as written) on the page, 0 if absent.
fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn metrics(server: &Server) -> String {
    let response = get(server, "/metrics");
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    response.body
}

/// Waits until `check` holds for a fresh page (the loop updates some figures a moment later).
fn eventually(server: &Server, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let page = metrics(server);
        if check(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "never true; last page:\n{page}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_numbers_move_as_traffic_flows() {
    let server = Server::start(&["--persist-interval", "50ms"]);
    let before = metrics(&server);
    assert!(before.contains("# TYPE stratus_connections_accepted_total counter"));
    assert!(sample(&before, "process_resident_memory_bytes") > 0.0);
    assert!(sample(&before, "process_open_fds") > 0.0);
    assert!(sample(&before, "process_start_time_seconds") > 1.7e9);

    let (mut a, mut b) = server.pair();
    for i in 0..5 {
        a.set("☁ x", &i.to_string());
        assert_eq!(b.recv(), relayed("☁ x", &i.to_string()));
    }
    a.set("not a cloud name", "1");
    let mut bad = server.connect();
    bad.send("this is not json");
    assert_eq!(bad.close_code(), 4000);

    let page = eventually(&server, |page| {
        sample(page, "stratus_store_batches_saved_total") >= 1.0
    });
    assert_eq!(sample(&page, "stratus_sets_applied_total"), 5.0, "{page}");
    assert_eq!(
        sample(&page, "stratus_sets_ignored_total{reason=\"invalid_name\"}"),
        1.0
    );
    assert_eq!(sample(&page, "stratus_sets_received_total"), 6.0);
    assert_eq!(
        sample(
            &page,
            "stratus_connections_open{dialect=\"scratch\",phase=\"open\"}"
        ),
        2.0
    );
    assert_eq!(sample(&page, "stratus_rooms"), 1.0);
    assert_eq!(sample(&page, "stratus_variables"), 1.0);
    assert!(sample(&page, "stratus_deliveries_total") >= 5.0);
    assert_eq!(
        sample(&page, "stratus_connections_closed_total{code=\"4000\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            "stratus_handshakes_refused_total{reason=\"invalid_json\"}"
        ),
        1.0
    );
    // The earlier scrape and this one are connections too.
    assert!(
        sample(&page, "stratus_connections_accepted_total")
            >= sample(&before, "stratus_connections_accepted_total") + 3.0
    );
    assert!(
        sample(&page, "stratus_bytes_written_total")
            > sample(&before, "stratus_bytes_written_total")
    );
    assert!(sample(&page, "stratus_flush_duration_seconds_count") >= 1.0);
    assert!(sample(&page, "stratus_loop_busy_seconds_count") >= 1.0);
    assert!(sample(&page, "stratus_store_variables_saved_total") >= 1.0);
}

#[test]
fn rate_limit_closes_are_counted() {
    let server = Server::start(&["--message-rate", "1", "--message-burst", "2"]);
    let mut flood = server.join_synced("1", "flood");
    for i in 0..5 {
        flood.set("☁ x", &i.to_string());
    }
    assert_eq!(flood.close_code(), 4004);
    let page = eventually(&server, |page| {
        sample(page, "stratus_rate_limit_closes_total") == 1.0
    });
    assert_eq!(
        sample(&page, "stratus_connections_closed_total{code=\"4004\"}"),
        1.0
    );
}

#[test]
fn only_local_clients_read_metrics_on_the_main_port() {
    let server = Server::start(&["--trust-proxy"]);
    let remote = http(
        &server,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.5\r\n\r\n",
    );
    assert_eq!(remote.status, 403);
    assert!(!remote.body.contains("stratus_"), "{}", remote.body);
    let local = http(
        &server,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n",
    );
    assert_eq!(local.status, 200);
    let head = http(&server, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn a_metrics_listener_answers_anyone_and_serves_no_websockets() {
    let server = Server::start(&["--metrics-listen", "127.0.0.1:0"]);
    let line = server.wait_for_log("metrics on http://");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .expect("address")
        .to_owned();
    let exchange = |request: &str| {
        let mut stream = TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("write");
        let mut raw = String::new();
        let _ = stream.read_to_string(&mut raw);
        HttpResponse::parse(&raw)
    };
    let page = exchange("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("stratus_connections_accepted_total"));
    let upgrade = exchange(&upgrade_request("/", ""));
    assert_ne!(upgrade.status, 101, "no WebSocket on the metrics listener");
    // The main port still serves clients.
    let (mut a, mut b) = server.pair();
    a.set("☁ x", "1");
    assert_eq!(b.recv(), relayed("☁ x", "1"));
}
