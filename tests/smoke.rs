//! The quickest end-to-end check: two clients in one room, one set relayed.
mod common;

use common::*;

#[test]
fn two_clients_relay_a_set() {
    let server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    let mut b = server.join_synced("1", "bob");
    a.packager_set("☁ x", "5");
    assert_eq!(b.recv(), relayed("☁ x", "5"));
    a.expect_silence();
}
