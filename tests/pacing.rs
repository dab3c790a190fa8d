//! Per-room pacing, through the real binary with `--tick-hz 1` (at most one frame per second
//! from a room): a set in a quiet room leaves in the loop iteration that read it instead of
//! waiting for a tick, and sets within the pace collapse into one frame with the latest values.
//!
//! "Leaves at once" is asserted by order, not by time. Once the writer's ping is answered, the
//! server has read the writer's set, and the loop iteration that read it has flushed it before
//! reading anything else. A ping the receiver sends after that is read in a later iteration, so
//! its pong must come after the set's frame. With a global one-second tick the pong would come
//! first: another room's set makes that tick fire just before (an idle server with a global tick
//! also sends the first change at once).
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod common;

use common::*;
use tungstenite::Message;

/// What a client can receive, pings from the server left out.
#[derive(Debug, PartialEq)]
enum Received {
    Text(String),
    Pong,
}

fn next_text_or_pong(client: &mut Client) -> Received {
    client.ws.get_ref().set_timeout(PATIENCE);
    loop {
        match client.ws.read() {
            Ok(Message::Text(text)) => return Received::Text(text.to_string()),
            Ok(Message::Pong(_)) => return Received::Pong,
            Ok(Message::Ping(_)) => continue,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn ping(client: &mut Client) {
    client
        .ws
        .send(Message::Ping(b"order".to_vec().into()))
        .expect("ping");
}

/// Returns once the server has read everything `writer` sent (it answers the ping after them).
fn read_by_server(writer: &mut Client) {
    ping(writer);
    assert_eq!(next_text_or_pong(writer), Received::Pong);
}

/// Asserts that what `to` receives next is `frame`, sent before the server read a ping sent now.
fn sent_before_a_ping(to: &mut Client, frame: &str) {
    ping(to);
    assert_eq!(next_text_or_pong(to), Received::Text(frame.to_owned()));
    assert_eq!(next_text_or_pong(to), Received::Pong);
}

/// Two members of room "2", carol and dave, whose sets keep a global tick's phase moving.
fn another_room(server: &Server) -> (Client, Client) {
    let c = server.join_synced("2", "carol");
    let d = server.join_synced("2", "dave");
    (c, d)
}

/// Carol sets `value` in room 2 and dave receives it, whenever room 2 flushes.
fn other_room_flushes(c: &mut Client, d: &mut Client, value: &str) {
    c.set("☁ other", value);
    assert_eq!(d.recv(), relayed("☁ other", value));
}

#[test]
fn two_sets_a_second_apart_each_leave_at_once_in_their_own_frame() {
    let server = Server::start(&["--tick-hz", "1"]);
    let (mut a, mut b) = server.pair();
    let (mut c, mut d) = another_room(&server);
    other_room_flushes(&mut c, &mut d, "1");
    a.set("☁ x", "1");
    read_by_server(&mut a);
    sent_before_a_ping(&mut b, &relayed("☁ x", "1"));
    // Room 2 changes within its pace and flushes at its end, room 1 stays quiet.
    std::thread::sleep(std::time::Duration::from_millis(600));
    other_room_flushes(&mut c, &mut d, "2");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // More than a second after its first set, room 1's next set leaves at once too.
    a.set("☁ x", "2");
    read_by_server(&mut a);
    sent_before_a_ping(&mut b, &relayed("☁ x", "2"));
}

#[test]
fn a_burst_within_the_pace_arrives_as_one_frame_with_the_latest_values() {
    let server = Server::start(&["--tick-hz", "1"]);
    let (mut a, mut b) = server.pair();
    let (mut c, mut d) = another_room(&server);
    other_room_flushes(&mut c, &mut d, "1");
    // The first set of the burst finds the room quiet and leaves at once.
    a.set("☁ x", "0");
    read_by_server(&mut a);
    sent_before_a_ping(&mut b, &relayed("☁ x", "0"));
    // The other 49 arrive within the pace: held back, then sent as one frame.
    for i in 1..50 {
        let name = if i % 2 == 1 { "☁ x" } else { "☁ y" };
        a.set(name, &i.to_string());
    }
    read_by_server(&mut a);
    ping(&mut b);
    assert_eq!(next_text_or_pong(&mut b), Received::Pong, "held back");
    assert_eq!(
        next_text_or_pong(&mut b),
        Received::Text(lines(&[relayed("☁ x", "49"), relayed("☁ y", "48")]))
    );
    ping(&mut b);
    assert_eq!(next_text_or_pong(&mut b), Received::Pong, "nothing more");
    a.expect_silence();
}

#[test]
fn a_room_flushing_does_not_hold_back_another_rooms_set() {
    let server = Server::start(&["--tick-hz", "1"]);
    let (mut a, mut b) = server.pair();
    let (mut c, mut d) = another_room(&server);
    a.set("☁ x", "1");
    read_by_server(&mut a);
    sent_before_a_ping(&mut b, &relayed("☁ x", "1"));
    // Room 1 has just flushed; room 2 has its own pace and is quiet.
    c.set("☁ x", "2");
    read_by_server(&mut c);
    sent_before_a_ping(&mut d, &relayed("☁ x", "2"));
    b.expect_silence();
}
