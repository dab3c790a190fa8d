//! TLS (`wss://`) end to end: a rustls client against the real binary, certificates made at
//! test time with rcgen (a CA and leaves it signs), written to unique files under /tmp.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{
    read_until_eof, relayed, run_to_exit, unique_path, wait_until, Client, Server, Stream, PATIENCE,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type TlsClientStream = StreamOwned<ClientConnection, TcpStream>;

impl Stream for TlsClientStream {
    fn set_timeout(&self, timeout: Duration) {
        self.sock.set_read_timeout(Some(timeout)).expect("timeout");
    }
}

/// A test CA that signs leaf certificates for `localhost`.
struct Authority {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Authority {
    fn new() -> Authority {
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "stratus test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA");
        Authority { cert, key }
    }

    /// A leaf valid until `not_after` (year, month, day): (chain PEM, key PEM, leaf DER).
    fn leaf(&self, not_after: (i32, u8, u8)) -> (String, String, Vec<u8>) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("leaf");
        let chain = format!("{}{}", cert.pem(), self.cert.pem());
        (chain, key.serialize_pem(), cert.der().to_vec())
    }

    fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.cert.der().to_vec()))
            .expect("root");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

/// Certificate and key files for one test.
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn write(chain: &str, key: &str) -> Files {
        let files = Files {
            cert: unique_path("-cert.pem"),
            key: unique_path("-key.pem"),
        };
        files.replace(chain, key);
        files
    }

    fn replace(&self, chain: &str, key: &str) {
        std::fs::write(&self.cert, chain).expect("write cert");
        std::fs::write(&self.key, key).expect("write key");
    }

    fn args(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().expect("utf-8"),
            "--tls-key",
            self.key.to_str().expect("utf-8"),
        ]
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cert);
        let _ = std::fs::remove_file(&self.key);
    }
}

/// Starts a server with a plain `--listen` and a `--tls-listen`; returns it and the TLS address.
fn start_both(files: &Files, extra: &[&str]) -> (Server, SocketAddr) {
    let mut args = vec!["--tls-listen", "127.0.0.1:0"];
    args.extend(files.args());
    args.extend(extra);
    let server = Server::start(&args);
    let line = server.wait_for_log("listening for TLS on ");
    let tls_addr = line
        .split("listening for TLS on ")
        .nth(1)
        .and_then(|a| a.trim().parse().ok())
        .expect("TLS address");
    (server, tls_addr)
}

fn tls_stream(addr: SocketAddr, config: ClientConfig) -> TlsClientStream {
    let name = ServerName::try_from("localhost").expect("name");
    let conn = ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    StreamOwned::new(conn, tcp)
}

fn wss_connect(addr: SocketAddr, config: ClientConfig) -> Client<TlsClientStream> {
    let request = common::request_with("wss://localhost/", &[]);
    match tungstenite::client(request, tls_stream(addr, config)) {
        Ok((ws, _)) => Client::new(ws),
        Err(e) => panic!("wss upgrade failed: {e}"),
    }
}

/// Joins over TLS and returns once the join took effect.
fn wss_join(
    addr: SocketAddr,
    config: ClientConfig,
    project: &str,
    user: &str,
) -> Client<TlsClientStream> {
    let mut client = wss_connect(addr, config);
    client.handshake(project, user);
    client.sync();
    client
}

#[test]
fn a_wss_client_and_a_plain_client_share_a_room() {
    let ca = Authority::new();
    let (chain, key, _) = ca.leaf((2090, 1, 1));
    let files = Files::write(&chain, &key);
    let (server, tls_addr) = start_both(&files, &[]);

    let tls13 = ca.client_config(&[&rustls::version::TLS13]);
    let mut secure = wss_join(tls_addr, tls13, "77", "secure");
    let conn = &secure.ws.get_ref().conn;
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let mut plain = server.join_synced("77", "plain");

    plain.set("☁ score", "12");
    assert_eq!(secure.recv(), relayed("☁ score", "12"));
    secure.set("☁ score", "13");
    assert_eq!(plain.recv(), relayed("☁ score", "13"));

    // TLS 1.2 clients get in too, and see the room's values on joining.
    let tls12 = ca.client_config(&[&rustls::version::TLS12]);
    let mut older = wss_join(tls_addr, tls12, "77", "older");
    assert_eq!(
        older.ws.get_ref().conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(older.recv(), relayed("☁ score", "13"));
    older.set("☁ score", "14");
    assert_eq!(plain.recv(), relayed("☁ score", "14"));
    assert_eq!(secure.recv(), relayed("☁ score", "14"));

    // A large value crosses several TLS records and arrives whole.
    let big = format!("\"{}\"", "7".repeat(60_000));
    plain.set("☁ score", &big);
    assert_eq!(secure.recv(), relayed("☁ score", &big));
    secure.close_with(1000);
}

#[test]
fn a_garbage_or_expired_certificate_stops_the_start_with_a_clear_error() {
    let ca = Authority::new();
    let (_, key, _) = ca.leaf((2090, 1, 1));
    let garbage = Files::write("this is not a certificate\n", &key);
    let (status, output) =
        run_to_exit(&[&garbage.args()[..], &["--listen", "127.0.0.1:0"]].concat());
    assert!(!status.success());
    assert!(output.contains("no certificate in"), "{output}");

    let (chain, key, _) = ca.leaf((2021, 6, 1));
    let expired = Files::write(&chain, &key);
    let (status, output) =
        run_to_exit(&[&expired.args()[..], &["--listen", "127.0.0.1:0"]].concat());
    assert!(!status.success());
    assert!(output.contains("expired at 2021-06-01"), "{output}");

    let (chain, _, _) = ca.leaf((2090, 1, 1));
    let (_, other_key, _) = ca.leaf((2090, 1, 1));
    let mismatched = Files::write(&chain, &other_key);
    let (status, output) =
        run_to_exit(&[&mismatched.args()[..], &["--listen", "127.0.0.1:0"]].concat());
    assert!(!status.success());
    assert!(output.contains("do not fit together"), "{output}");

    let cert_only = ["--tls-cert", expired.args()[1], "--listen", "127.0.0.1:0"];
    let (status, output) = run_to_exit(&cert_only);
    assert!(!status.success());
    assert!(output.contains("give both or neither"), "{output}");
}

#[test]
fn plain_http_on_the_tls_port_gets_an_alert_and_a_close() {
    let ca = Authority::new();
    let (chain, key, _) = ca.leaf((2090, 1, 1));
    let files = Files::write(&chain, &key);
    let (_server, tls_addr) = start_both(&files, &[]);
    let mut tcp = TcpStream::connect(tls_addr).expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let (bytes, ended) = read_until_eof(&mut tcp, PATIENCE);
    assert!(ended, "the server must close, not wait");
    // A TLS alert record (content type 21), never an HTTP answer in clear.
    assert!(bytes.is_empty() || bytes[0] == 21, "{bytes:?}");
}

#[test]
fn a_client_that_never_finishes_the_tls_handshake_is_closed_at_the_deadline() {
    let ca = Authority::new();
    let (chain, key, _) = ca.leaf((2090, 1, 1));
    let files = Files::write(&chain, &key);
    let (server, tls_addr) = start_both(&files, &["--handshake-timeout", "1"]);
    // One opens TCP and says nothing; the other sends half a ClientHello record header.
    let mut silent = TcpStream::connect(tls_addr).expect("connect");
    let mut partial = TcpStream::connect(tls_addr).expect("connect");
    partial.write_all(&[22, 3, 1, 2, 0]).expect("write");
    for stream in [&mut silent, &mut partial] {
        let (_, ended) = read_until_eof(stream, PATIENCE);
        assert!(ended, "a stalled TLS handshake must be closed");
    }
    server.wait_for_log("no request in time");
}

/// The `tls` fuzz target's `regression-fatal-alert-after-close-notify` over a real socket: the
/// deadline closes a handshake one byte into a record with close_notify; the rest of a record
/// rustls refuses arrives while the connection drains. It must reach no further than the
/// socket (rustls would send a second terminal alert, and a debug build panicked on that).
#[test]
fn a_bad_record_after_the_servers_close_notify_is_only_drained() {
    let ca = Authority::new();
    let (chain, key, _) = ca.leaf((2090, 1, 1));
    let files = Files::write(&chain, &key);
    let (mut server, tls_addr) = start_both(&files, &["--handshake-timeout", "1"]);
    let mut stalled = TcpStream::connect(tls_addr).expect("connect");
    stalled.write_all(&[0x14]).expect("write");
    let (bytes, ended) = read_until_eof(&mut stalled, PATIENCE);
    assert!(ended, "a stalled TLS handshake must be closed");
    // close_notify: an alert record (content type 21), warning level, description 0.
    assert_eq!(bytes.first(), Some(&21), "{bytes:?}");
    // A change_cipher_spec header whose version rustls refuses, then more of the same.
    stalled.write_all(&[0x14; 20]).expect("write");
    stalled
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut next = wss_join(
        tls_addr,
        ca.client_config(&[&rustls::version::TLS13]),
        "5",
        "next",
    );
    next.set("☁ v", "1");
    assert!(
        server.is_running(),
        "the server must survive the drained record"
    );
}

/// The byte limit charges what a TLS client sends over the wire, not only the plaintext it
/// carries: small messages each in their own record cost about 4 times their plaintext, and
/// padding or empty records would cost nothing at all otherwise.
#[test]
fn the_byte_limit_charges_tls_records_not_only_their_plaintext() {
    let ca = Authority::new();
    let (chain, key, _) = ca.leaf((2090, 1, 1));
    let files = Files::write(&chain, &key);
    let (_server, tls_addr) = start_both(&files, &["--byte-rate", "100", "--byte-burst", "3000"]);
    let tls13 = ca.client_config(&[&rustls::version::TLS13]);
    let mut client = wss_join(tls_addr, tls13, "6", "pinger");
    // 200 empty pings: 1 200 bytes of plaintext (6 each, masked), well within the burst;
    // 28 bytes each on the wire (record header, content type, tag), 5 600 in all.
    for _ in 0..200 {
        client
            .ws
            .send(tungstenite::Message::Ping(Default::default()))
            .expect("ping");
    }
    assert_eq!(client.close_code(), 4004);
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_and_keeps_open_ones() {
    let ca = Authority::new();
    let (chain, key, first_der) = ca.leaf((2090, 1, 1));
    let files = Files::write(&chain, &key);
    let (server, tls_addr) = start_both(&files, &[]);
    let config = || ca.client_config(&[&rustls::version::TLS13, &rustls::version::TLS12]);

    let mut early = wss_join(tls_addr, config(), "5", "early");
    assert_eq!(peer_leaf(&early), first_der);

    let (chain, key, second_der) = ca.leaf((2091, 1, 1));
    files.replace(&chain, &key);
    server.signal(libc::SIGHUP);
    wait_until("new connections get the new certificate", || {
        peer_leaf(&wss_connect(tls_addr, config())) == second_der
    });
    // The operator is told.
    server.wait_for_log("SIGHUP: reloaded the TLS certificate");
    let mut late = wss_join(tls_addr, config(), "5", "late");
    assert_eq!(peer_leaf(&late), second_der);
    late.set("☁ v", "1");
    assert_eq!(early.recv(), relayed("☁ v", "1"));

    // A broken pair is refused and the last good one stays.
    files.replace("garbage", &key);
    server.signal(libc::SIGHUP);
    // The operator is told; nothing else shows that the broken pair was read and refused.
    server.wait_for_log("SIGHUP: keeping the previous TLS certificate");
    let third = wss_join(tls_addr, config(), "5", "third");
    assert_eq!(peer_leaf(&third), second_der);
    early.set("☁ v", "2");
    assert_eq!(late.recv(), relayed("☁ v", "2"));
}

#[test]
fn sighup_without_tls_only_logs() {
    let mut server = Server::start(&[]);
    let mut client = server.join_synced("9", "stays");
    server.signal(libc::SIGHUP);
    server.wait_for_log("SIGHUP: log files reopened");
    assert!(server.is_running());
    let mut other = server.join_synced("9", "other");
    other.set("☁ v", "3");
    assert_eq!(client.recv(), relayed("☁ v", "3"));
}

fn peer_leaf(client: &Client<TlsClientStream>) -> Vec<u8> {
    client
        .ws
        .get_ref()
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
        .expect("peer certificate")
}

#[test]
fn with_a_certificate_and_one_listen_address_that_address_speaks_only_tls() {
    use std::io::{BufRead, BufReader};
    let ca = Authority::new();
    let (chain, key, _) = ca.leaf((2090, 1, 1));
    let files = Files::write(&chain, &key);
    let mut child = common::stratus_command()
        .args(["--listen", "127.0.0.1:0"])
        .args(files.args())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start stratus");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let line = lines
        .find(|l| l.contains("listening"))
        .expect("an address line");
    let addr: SocketAddr = line
        .split("listening for TLS on ")
        .nth(1)
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a TLS listener: {line}"));
    // Keep reading the log so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    let mut client = wss_connect(addr, ca.client_config(&[&rustls::version::TLS13]));
    client.handshake("3", "only");
    client.set("☁ v", "1");
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let plain = tungstenite::client(common::request_with(&format!("ws://{addr}/"), &[]), tcp);
    assert!(plain.is_err(), "plain ws on the TLS address must fail");
    let _ = child.kill();
    let _ = child.wait();
}
