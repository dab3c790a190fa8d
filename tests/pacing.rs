//! Pacing through the real binary with `--tick-hz 1` (one beat a second): a room spends the
//! tokens of its bucket (`--tick-burst`) at once, so a set in a quiet room leaves in the loop
//! iteration that read it; a room out of tokens waits for the next beat, which it shares with
//! every other waiting room, and its sets collapse into one frame with the latest values.
//!
//! "Leaves at once" is asserted by order, not by time. Once the writer's ping is answered, the
//! server has read the writer's set, and the loop iteration that read it has flushed it before
//! reading anything else. A ping the receiver sends after that is read in a later iteration, so
//! its pong must come after the set's frame; a set held for the beat comes after the pong.
//! "Together at one beat" is asserted the same way: a client in both rooms pings on receiving
//! the first room's frame, and the second room's frame must come before the pong.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod common;

use common::*;
use serde_json::{json, Value};
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

/// Returns right after a beat: carol sets in room 2 until a set is held back, then dave
/// receives it, which a beat sends. The next beat is a second away.
fn just_after_a_beat(c: &mut Client, d: &mut Client) {
    for i in 0..20 {
        let value = i.to_string();
        c.set("☁ sync", &value);
        read_by_server(c);
        ping(d);
        match next_text_or_pong(d) {
            Received::Text(_) => assert_eq!(next_text_or_pong(d), Received::Pong),
            Received::Pong => {
                let held = relayed("☁ sync", &value);
                assert_eq!(next_text_or_pong(d), Received::Text(held));
                return;
            }
        }
    }
    panic!("room 2 never ran out of tokens");
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
fn a_burst_beyond_the_tokens_arrives_as_one_frame_with_the_latest_values() {
    let server = Server::start(&["--tick-hz", "1", "--tick-burst", "1"]);
    let (mut a, mut b) = server.pair();
    let (mut c, mut d) = another_room(&server);
    just_after_a_beat(&mut c, &mut d);
    // The first set of the burst spends room 1's token and leaves at once.
    a.set("☁ x", "0");
    read_by_server(&mut a);
    sent_before_a_ping(&mut b, &relayed("☁ x", "0"));
    // The other 49 find no token: held back for the beat, then sent as one frame.
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
fn three_sets_leave_at_once_with_a_burst_of_three_and_the_next_wait_for_the_beat_as_one_frame() {
    let server = Server::start(&["--tick-hz", "1", "--tick-burst", "3"]);
    let (mut a, mut b) = server.pair();
    let (mut c, mut d) = another_room(&server);
    just_after_a_beat(&mut c, &mut d);
    // Room 1 has been quiet: its bucket is full, and each set leaves in its own frame in the
    // iteration that read it.
    for value in ["1", "2", "3"] {
        a.set("☁ x", value);
        read_by_server(&mut a);
        sent_before_a_ping(&mut b, &relayed("☁ x", value));
    }
    // Out of tokens: the fourth and fifth wait for the beat and go out as one frame.
    a.set("☁ x", "4");
    read_by_server(&mut a);
    a.set("☁ x", "5");
    read_by_server(&mut a);
    ping(&mut b);
    assert_eq!(next_text_or_pong(&mut b), Received::Pong, "held back");
    assert_eq!(
        next_text_or_pong(&mut b),
        Received::Text(relayed("☁ x", "5"))
    );
    ping(&mut b);
    assert_eq!(next_text_or_pong(&mut b), Received::Pong, "nothing more");
}

/// A MultiStudio connection, `user`, in each of `rooms`.
fn studio_in(server: &Server, user: &str, rooms: &[&str]) -> Client {
    let mut client = server.connect();
    client.send(&json!({"kind": "HELLO", "username": user}).to_string());
    assert_eq!(received(&mut client)["kind"], "HELLO");
    for room in rooms {
        client.send(&json!({"kind": "JOIN_ROOM", "room": room}).to_string());
        assert_eq!(received(&mut client)["kind"], "JOINED_ROOM");
    }
    client
}

fn received(client: &mut Client) -> Value {
    json_of(&client.recv())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn studio_set(room: &str, value: u32) -> String {
    json!({"kind": "SET", "room": room, "name": "☁ v", "value": value}).to_string()
}

#[test]
fn rooms_waiting_for_the_beat_flush_together_in_one_iteration() {
    let server = Server::start(&["--tick-hz", "1", "--tick-burst", "1"]);
    let mut w = studio_in(&server, "writer", &["one", "two"]);
    let mut r = studio_in(&server, "reader", &["one", "two"]);
    // Room one spends its token now, room two half a second later: paced each on its own,
    // they would flush half a second apart from then on.
    w.send(&studio_set("one", 0));
    assert_eq!(received(&mut r)["room"], "one");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Both rooms get a set in the same iteration (two messages in one write, read in one turn)
    // until neither has a token left: then nothing reaches the reader before the answer to its ping.
    let mut value = 0;
    loop {
        value += 1;
        assert!(value < 20, "the rooms never ran out of tokens");
        for room in ["one", "two"] {
            w.ws.write(Message::text(studio_set(room, value)))
                .expect("write");
        }
        w.ws.flush().expect("flush");
        read_by_server(&mut w);
        ping(&mut r);
        let mut flushed = 0;
        while let Received::Text(_) = next_text_or_pong(&mut r) {
            flushed += 1;
        }
        if flushed == 0 {
            break;
        }
    }
    // Both wait for the next beat. The reader pings on receiving the first room's frame: the
    // other room's frame, written in the same iteration, comes before the pong.
    let Received::Text(first) = next_text_or_pong(&mut r) else {
        panic!("a pong with nothing to answer");
    };
    ping(&mut r);
    let Received::Text(second) = next_text_or_pong(&mut r) else {
        panic!("the second room was not flushed at the same beat as {first}");
    };
    assert_eq!(next_text_or_pong(&mut r), Received::Pong);
    let mut rooms = [json_of(&first), json_of(&second)].map(|set| {
        assert_eq!(set["value"], value, "the latest value: {set}");
        set["room"].as_str().unwrap_or_default().to_owned()
    });
    rooms.sort();
    assert_eq!(rooms, ["one", "two"]);
    w.expect_silence();
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
