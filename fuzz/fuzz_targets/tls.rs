//! TLS bytes through the real connection state machine: `Conn<TlsStream<MemStream>>`, the
//! same stack the server runs for a `wss://` client, over an in-memory network whose schedule
//! (input in pieces, writes that block, time jumping past deadlines) comes from the input.
//!
//! The first byte picks the client: even, the rest of the input is the raw TCP stream (hostile
//! TLS records: a broken ClientHello, garbage after the handshake, plain HTTP); odd, a real
//! rustls client does the handshake and the rest of the input is its plaintext, prefixed (when
//! bit 1 is set) with a valid WebSocket upgrade so the bytes reach tungstenite and the
//! dialects through TLS. Checks: no panic; the server's output stays bounded; nothing is
//! written after the write half is shut; and a client with a valid upgrade whose connection
//! is still open once the network recovers has received the `101` — encrypted output held by
//! rustls under backpressure must go out on a later writable event.

#![no_main]

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use stratus::config::Config;
use stratus::dialect::{encode_set, Reconnects, Users};
use stratus::dialect::json::JsonParser;
use stratus::engine::{ClientId, Engine, Limits};
use stratus::metrics::Metrics;
use stratus::net::conn::{Conn, ConnSettings, LoopContext, Status};
use stratus::net::api::ApiState;
use stratus::net::per_ip::PerIp;
use stratus::net::tls::TlsStream;
use stratus::net::transport::HalfClose;
use stratus::net::write_budget::TurnBudget;
use stratus::policy::{Policy, UsernameFilter, DEFAULT_USERNAME_FILTER};

const STEPS: usize = 40;
const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[derive(Default)]
struct Net {
    /// Bytes that have reached the server and not been read yet.
    to_server: Vec<u8>,
    eof: bool,
    write_budget: usize,
    to_client: Vec<u8>,
    written: usize,
    half_closed: bool,
    writes_after_half_close: usize,
}

struct MemStream(Rc<RefCell<Net>>);

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut net = self.0.borrow_mut();
        if net.to_server.is_empty() {
            return if net.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(net.to_server.len());
        buf[..n].copy_from_slice(&net.to_server[..n]);
        net.to_server.drain(..n);
        Ok(n)
    }
}

impl Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut net = self.0.borrow_mut();
        if buf.is_empty() {
            return Ok(0);
        }
        if net.write_budget == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if net.half_closed {
            net.writes_after_half_close += 1;
        }
        let n = buf.len().min(net.write_budget);
        net.write_budget -= n;
        net.written += n;
        net.to_client.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HalfClose for MemStream {
    fn shutdown_write(&mut self) {
        self.0.borrow_mut().half_closed = true;
    }
}

struct Shared {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    policy: Policy,
    settings: ConnSettings,
    config: Config,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("certificate");
        let cert = CertificateDer::from(generated.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            generated.key_pair.serialize_der(),
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = RootCertStore::empty();
        roots.add(cert).expect("root");
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let config = Config::defaults();
        let policy = Policy {
            usernames: UsernameFilter::parse(DEFAULT_USERNAME_FILTER).expect("filter"),
            allowed_projects: None,
            blocked_projects: Default::default(),
            message_rate: config.message_rate,
            message_burst: config.message_burst,
            max_rooms_per_connection: config.max_rooms_per_connection,
            fault_rooms: Default::default(),
            relay_user: false,
            bans: Default::default(),
        };
        Shared {
            server: Arc::new(server),
            client: Arc::new(client),
            settings: ConnSettings::from_config(&config),
            policy,
            config,
        }
    })
}

/// xorshift64*, seeded from the input's last 8 bytes.
struct Rng(u64);

impl Rng {
    fn seeded(data: &[u8]) -> Rng {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in &data[data.len().saturating_sub(8)..] {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(hash | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let shared = shared();
    let mut rng = Rng::seeded(data);
    let config = &shared.config;
    let mut engine = Engine::new(
        Limits {
            max_rooms: config.max_rooms,
            max_clients_per_room: config.max_clients_per_room,
            max_variables_per_room: config.max_variables_per_room,
            empty_room_ttl: Duration::from_secs(config.empty_room_ttl),
            allow_non_numeric: false,
            max_state_bytes: config.max_state_memory,
            ..Limits::default()
        },
        encode_set,
    );
    let mut parser = JsonParser::default();
    let mut users = Users::new(0);
    let mut reconnects = Reconnects::new(Duration::from_secs(config.reconnect_window), 64);
    let mut metrics = Metrics::default();
    let mut per_ip = PerIp::default();
    let mut api = ApiState::default();
    let mut scratch = vec![0u8; 16 * 1024];
    let turn = TurnBudget::new();
    let mut now = Instant::now();
    // Each context is one turn of the loop, with the whole write budget.
    macro_rules! ctx {
        () => {{
            turn.start_turn();
            LoopContext {
                engine: &mut engine,
                policy: &shared.policy,
                parser: &mut parser,
                users: &mut users,
                reconnects: &mut reconnects,
                metrics: &mut metrics,
                per_ip: &mut per_ip,
                settings: &shared.settings,
                now,
                over_capacity: false,
                scratch: &mut scratch,
                write_budget: &turn,
                api: &mut api,
            }
        }};
    }

    // What the client will send: raw bytes, or plaintext through a real TLS client.
    let with_upgrade = mode & 3 == 3;
    let mut client = (mode & 1 == 1).then(|| {
        let name = ServerName::try_from("localhost").expect("name");
        let mut client = ClientConnection::new(shared.client.clone(), name).expect("client");
        client.set_buffer_limit(None);
        if with_upgrade {
            client.writer().write_all(UPGRADE).expect("buffered");
        }
        client.writer().write_all(rest).expect("buffered");
        client
    });
    let mut raw = if client.is_none() { rest.to_vec() } else { Vec::new() };
    let mut client_plaintext = Vec::new();
    let mut client_failed = false;

    let net = Rc::new(RefCell::new(Net::default()));
    let stream = TlsStream::new(MemStream(net.clone()), shared.server.clone()).expect("tls");
    let ip: IpAddr = [192, 0, 2, 9].into();
    let mut conn = Conn::new(stream, ClientId(1), Some(ip), &ctx!());
    let mut status = Status::Open;

    for step in 0..=STEPS {
        let recovered = step == STEPS;
        // The client's bytes travel to the server in pieces.
        let chunk = if recovered {
            usize::MAX
        } else {
            rng.pick(&[1, 5, 100, 517, 4096, usize::MAX])
        };
        if let Some(client) = &mut client {
            let mut wire = Vec::new();
            while client.wants_write() {
                if client.write_tls(&mut wire).is_err() {
                    break;
                }
            }
            raw.extend_from_slice(&wire);
        }
        let moved = chunk.min(raw.len());
        {
            let mut n = net.borrow_mut();
            n.to_server.extend(raw.drain(..moved));
            n.write_budget = if recovered {
                usize::MAX
            } else {
                rng.pick(&[0, 0, 7, 200, 5000, usize::MAX])
            };
        }
        status = conn.on_event(true, recovered || rng.next() % 3 != 0, &mut ctx!());
        // The client reads what the server wrote.
        let output = std::mem::take(&mut net.borrow_mut().to_client);
        if let Some(client) = &mut client {
            if !client_failed {
                let mut input = &output[..];
                while !input.is_empty() {
                    if client.read_tls(&mut input).is_err() || client.process_new_packets().is_err()
                    {
                        client_failed = true;
                        break;
                    }
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = client.reader().read(&mut buf) {
                        if n == 0 || client_plaintext.len() > 64 * 1024 {
                            break;
                        }
                        client_plaintext.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
        if status == Status::Done {
            break;
        }
        if !recovered && rng.next() % 4 == 0 {
            now += rng.pick(&[
                Duration::from_millis(100),
                Duration::from_secs(3),
                Duration::from_secs(11),
            ]);
            status = conn.on_timer(&mut ctx!());
            if status == Status::Done {
                break;
            }
        }
    }
    if with_upgrade && status != Status::Done && conn.is_open() && !client_failed {
        assert!(
            client_plaintext.starts_with(b"HTTP/1.1 101"),
            "an open TLS connection got no 101: {:?}",
            String::from_utf8_lossy(&client_plaintext[..client_plaintext.len().min(64)])
        );
    }
    // The client goes away; deadlines pass; the connection must end.
    net.borrow_mut().eof = true;
    net.borrow_mut().write_budget = usize::MAX;
    for _ in 0..4 {
        if conn.on_event(true, true, &mut ctx!()) == Status::Done {
            break;
        }
        now += Duration::from_secs(31);
        if conn.on_timer(&mut ctx!()) == Status::Done {
            break;
        }
    }
    conn.release(&mut ctx!());
    let n = net.borrow();
    let bound = 64 * 1024 + 4 * data.len();
    assert!(n.written <= bound, "wrote {} for {} in", n.written, data.len());
    assert_eq!(n.writes_after_half_close, 0, "nothing written after shutdown");
});
