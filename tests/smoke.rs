//! The quickest end-to-end check: two clients in one room, one set relayed.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
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
