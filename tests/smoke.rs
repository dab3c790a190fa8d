mod common;

use common::*;

#[test]
fn two_clients_relay_a_set() {
    let server = Server::start(&[]);
    let mut a = join(&server, "1", "alice");
    let mut b = join(&server, "1", "bob");
    server.wait_for_log("\"bob\" 1] joined");
    set(&mut a, "☁ x", "5");
    assert_eq!(recv(&mut b), r#"{"method":"set","name":"☁ x","value":5}"#);
    expect_silence(&mut a);
}
