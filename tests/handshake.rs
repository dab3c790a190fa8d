//! The Scratch dialect's handshake: what joins a room, what is refused and with which close code,
//! the upgrade request's headers, capacity limits, and the frame a joining client receives.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod common;

use common::*;

/// Connects, sends `frame` as the first message and returns the close code.
fn first_message_closes(server: &Server, frame: &str) -> u16 {
    let mut client = server.connect();
    client.send(frame);
    client.close_code()
}

/// Proves `client` is in `project`: another member's set reaches it.
fn assert_in_room(server: &Server, client: &mut Client, project: &str) {
    let mut other = server.join_synced(project, "prover");
    other.set("☁ proof", "42");
    assert_eq!(client.recv_containing("☁ proof"), relayed("☁ proof", "42"));
    other.ws.close(None).ok();
}

#[test]
fn gui_handshake_joins_a_new_room_that_sends_nothing() {
    let server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    a.expect_silence();
    assert_in_room(&server, &mut a, "1");
}

#[test]
fn handshake_keys_may_come_in_any_order_with_extra_keys() {
    let server = Server::start(&[]);
    let mut a = server.connect();
    a.send(
        "{\"token\":null,\"project_id\":\"7\",\"extra\":[1,{\"a\":2}],\"user\":\"alice\",\"method\":\"handshake\",\"n\":1.5}\n",
    );
    a.sync();
    a.expect_silence();
    assert_in_room(&server, &mut a, "7");
}

#[test]
fn a_handshake_and_sets_may_share_one_frame() {
    let server = Server::start(&[]);
    let mut b = server.join_synced("1", "bob");
    let mut a = server.connect();
    a.send(&format!(
        "{}{}\n",
        gui_handshake("1", "alice"),
        set_line("☁ a", "1")
    ));
    assert_eq!(b.recv(), relayed("☁ a", "1"));
    a.expect_silence();
}

#[test]
fn numeric_and_string_project_ids_share_a_room() {
    let server = Server::start(&[]);
    let mut a = server.connect();
    a.send("{\"method\":\"handshake\",\"user\":\"alice\",\"project_id\":123}\n");
    a.sync();
    let mut b = server.join_synced("123", "bob");
    b.set("☁ x", "1");
    assert_eq!(a.recv(), relayed("☁ x", "1"));
    a.set("☁ y", "2");
    assert_eq!(b.recv(), relayed("☁ y", "2"));
}

#[test]
fn invalid_project_ids_close_with_4000() {
    let server = Server::start(&[]);
    let too_long = "1".repeat(1000);
    let cases = [
        r#"{"method":"handshake","user":"alice","project_id":""}"#.to_owned(),
        r#"{"method":"handshake","user":"alice"}"#.to_owned(),
        r#"{"method":"handshake","user":"alice","project_id":null}"#.to_owned(),
        r#"{"method":"handshake","user":"alice","project_id":true}"#.to_owned(),
        r#"{"method":"handshake","user":"alice","project_id":{"id":"1"}}"#.to_owned(),
        r#"{"method":"handshake","user":"alice","project_id":["1"]}"#.to_owned(),
        gui_handshake(&too_long, "alice"),
    ];
    for case in &cases {
        assert_eq!(first_message_closes(&server, case), 4000, "{case}");
    }
    // Each was refused before joining anything.
    assert_eq!(
        server.metric("stratus_handshakes_refused_total{reason=\"invalid_room\"}"),
        cases.len() as u64
    );
}

#[test]
fn a_project_id_of_999_characters_is_accepted() {
    let server = Server::start(&[]);
    let id = "9".repeat(999);
    let mut a = server.join_synced(&id, "alice");
    a.expect_silence();
    assert_in_room(&server, &mut a, &id);
    // Characters, not bytes, are counted.
    let wide = "é".repeat(999);
    let mut b = server.join_synced(&wide, "bob");
    b.expect_silence();
    let too_wide = "é".repeat(1000);
    assert_eq!(
        first_message_closes(&server, &gui_handshake(&too_wide, "carol")),
        4000
    );
}

#[test]
fn blocked_projects_close_with_4004() {
    let server = Server::start(&["--blocked-projects", "5"]);
    assert_eq!(
        first_message_closes(&server, &gui_handshake("5", "alice")),
        4004
    );
    assert_eq!(
        first_message_closes(
            &server,
            "{\"method\":\"handshake\",\"user\":\"alice\",\"project_id\":5}\n"
        ),
        4004
    );
    let mut ok = server.join_synced("6", "alice");
    ok.expect_silence();
}

#[test]
fn projects_outside_the_allowed_list_close_with_4004() {
    let server = Server::start(&["--allowed-projects", "1,2"]);
    assert_eq!(
        first_message_closes(&server, &gui_handshake("3", "alice")),
        4004
    );
    assert_eq!(
        first_message_closes(&server, &gui_handshake("12", "alice")),
        4004
    );
    let mut one = server.join_synced("1", "alice");
    let mut two = server.join_synced("2", "bob");
    one.expect_silence();
    two.expect_silence();
}

#[test]
fn malformed_usernames_close_with_4002() {
    let server = Server::start(&[]);
    let long = "a".repeat(21);
    let cases = [
        gui_handshake("1", ""),
        gui_handshake("1", &long),
        gui_handshake("1", "a b"),
        gui_handshake("1", "a.b"),
        gui_handshake("1", "é"),
        gui_handshake("1", "name!"),
        "{\"method\":\"handshake\",\"project_id\":\"1\"}\n".to_owned(),
        "{\"method\":\"handshake\",\"user\":5,\"project_id\":\"1\"}\n".to_owned(),
        "{\"method\":\"handshake\",\"user\":null,\"project_id\":\"1\"}\n".to_owned(),
    ];
    for case in &cases {
        assert_eq!(first_message_closes(&server, case), 4002, "{case}");
    }
}

#[test]
fn usernames_of_1_to_20_letters_digits_underscores_and_dashes_are_accepted() {
    let server = Server::start(&[]);
    let twenty = "Ab3_-".repeat(4);
    for user in ["x", "player_1-X", "0", twenty.as_str()] {
        let mut client = server.join_synced("1", user);
        client.expect_silence();
    }
}

#[test]
fn the_default_filter_refuses_scratch_team_names_with_4002() {
    let server = Server::start(&[]);
    for user in [
        "ScratchCat",
        "Scratch_Team",
        "scratch-cat",
        "ADMIN",
        "TheScratchTeam",
    ] {
        assert_eq!(
            first_message_closes(&server, &gui_handshake("1", user)),
            4002,
            "{user}"
        );
    }
    let mut fan = server.join_synced("1", "ScratchFan");
    fan.expect_silence();
}

#[test]
fn a_username_filter_file_replaces_the_default_list() {
    let filter = temp_file("# custom list\n^bad\n");
    let server = Server::start(&["--username-filter", filter.to_str().expect("path")]);
    assert_eq!(
        first_message_closes(&server, &gui_handshake("1", "BadGuy")),
        4002
    );
    assert_eq!(
        first_message_closes(&server, &gui_handshake("1", "b_a_d")),
        4002
    );
    let mut good = server.join_synced("1", "GoodGuy");
    let mut cat = server.join_synced("1", "ScratchCat");
    good.expect_silence();
    cat.expect_silence();
    let _ = std::fs::remove_file(filter);
}

#[test]
fn an_empty_username_filter_file_allows_every_well_formed_name() {
    let filter = temp_file("");
    let server = Server::start(&["--username-filter", filter.to_str().expect("path")]);
    let mut cat = server.join_synced("1", "ScratchCat");
    let mut team = server.join_synced("1", "Scratch_Team");
    cat.expect_silence();
    team.set("☁ a", "1");
    assert_eq!(cat.recv(), relayed("☁ a", "1"));
    assert_eq!(
        first_message_closes(&server, &gui_handshake("1", "a b")),
        4002
    );
    let _ = std::fs::remove_file(filter);
}

#[test]
fn duplicate_usernames_are_allowed() {
    let server = Server::start(&[]);
    let mut first = server.join_synced("1", "alice");
    let mut second = server.join_synced("1", "alice");
    first.set("☁ a", "1");
    assert_eq!(second.recv(), relayed("☁ a", "1"));
    second.set("☁ b", "2");
    assert_eq!(first.recv(), relayed("☁ b", "2"));
}

#[test]
fn a_second_handshake_closes_with_4000() {
    let server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    a.handshake("1", "alice");
    assert_eq!(a.close_code(), 4000);
    let mut b = server.join_synced("1", "bob");
    b.handshake("2", "bob");
    assert_eq!(b.close_code(), 4000);
}

#[test]
fn any_message_before_the_handshake_closes_with_4000() {
    let server = Server::start(&[]);
    for frame in [
        gui_set("alice", "1", "☁ a", "1"),
        "{\"method\":\"create\",\"name\":\"☁ a\",\"value\":1}".to_owned(),
        "{\"kind\":\"set\",\"variable\":\"☁ a\",\"value\":\"1\"}".to_owned(),
    ] {
        assert_eq!(first_message_closes(&server, &frame), 4000, "{frame}");
    }
}

#[test]
fn invalid_json_closes_with_4000() {
    let server = Server::start(&[]);
    for frame in [
        "{",
        "{\"method\":\"handshake\",\"user\":\"alice\",\"project_id\":\"1\"",
        "method=handshake",
        "{'method':'handshake'}",
    ] {
        assert_eq!(first_message_closes(&server, frame), 4000, "{frame}");
    }
    let mut joined = server.join_synced("1", "alice");
    joined.send("{\"method\":\"set\",\"name\":\"☁ a\",\"value\":}");
    assert_eq!(joined.close_code(), 4000);
}

#[test]
fn non_object_messages_close_with_4000() {
    let server = Server::start(&[]);
    for frame in ["[1]", "\"x\"", "5", "null", "[]"] {
        assert_eq!(first_message_closes(&server, frame), 4000, "{frame}");
        let mut joined = server.join_synced("1", "alice");
        joined.send(frame);
        assert_eq!(joined.close_code(), 4000, "{frame} after the handshake");
    }
}

#[test]
fn a_missing_or_unknown_method_closes_with_4000() {
    let server = Server::start(&[]);
    for frame in [
        "{}",
        "{\"method\":\"hello\",\"user\":\"alice\",\"project_id\":\"1\"}",
        "{\"method\":5,\"user\":\"alice\",\"project_id\":\"1\"}",
        "{\"user\":\"alice\",\"project_id\":\"1\"}",
    ] {
        assert_eq!(first_message_closes(&server, frame), 4000, "{frame}");
    }
    for frame in [
        "{\"name\":\"☁ a\",\"value\":1}",
        "{\"method\":\"sett\",\"name\":\"☁ a\",\"value\":1}",
        "{\"method\":null,\"name\":\"☁ a\",\"value\":1}",
        "{\"kind\":\"set\",\"variable\":\"☁ a\",\"value\":\"1\"}",
    ] {
        let mut joined = server.join_synced("1", "alice");
        joined.send(frame);
        assert_eq!(joined.close_code(), 4000, "{frame} after the handshake");
    }
}

#[test]
fn binary_frames_are_ignored() {
    let server = Server::start(&[]);
    let mut a = server.connect();
    a.send_binary(b"\x00\x01binary before the handshake");
    a.handshake("1", "alice");
    a.sync();
    let mut b = server.join_synced("1", "bob");
    a.send_binary(gui_set("alice", "1", "☁ a", "1").as_bytes());
    a.send_binary(&[0xff, 0xfe]);
    b.expect_silence();
    a.set("☁ b", "2");
    assert_eq!(b.recv(), relayed("☁ b", "2"));
    b.set("☁ c", "3");
    assert_eq!(a.recv(), relayed("☁ c", "3"));
}

#[test]
fn a_scratch_session_cookie_closes_with_4005() {
    let server = Server::start(&[]);
    for cookie in [
        "a=1; scratchsessionsid=abc",
        "scratchsessionsid=\"abc\"; b=2",
        "a=1; b=2; scratchsessionsid=abc; c=3",
    ] {
        let mut client = server.connect_with(&[("Cookie", cookie)]);
        assert_eq!(client.close_code(), 4005, "{cookie}");
    }
    let mut plain = server.connect_with(&[("Cookie", "a=1; scratchlanguage=en")]);
    plain.handshake("1", "alice");
    plain.sync();
    plain.expect_silence();
}

#[test]
fn a_missing_or_empty_user_agent_closes_with_4006_when_required() {
    let server = Server::start(&["--require-user-agent"]);
    let mut none = server.connect();
    assert_eq!(none.close_code(), 4006);
    let mut empty = server.connect_with(&[("User-Agent", "")]);
    assert_eq!(empty.close_code(), 4006);
    let mut a = server.connect_with(&[("User-Agent", "Mozilla/5.0 TurboWarp")]);
    a.handshake("1", "alice");
    a.sync();
    let mut b = server.connect_with(&[("User-Agent", "scratchattach")]);
    b.handshake("1", "bob");
    b.sync();
    a.set("☁ a", "1");
    assert_eq!(b.recv(), relayed("☁ a", "1"));
}

#[test]
fn no_user_agent_is_fine_by_default() {
    let server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    a.expect_silence();
}

#[test]
fn a_full_room_closes_with_4003() {
    let server = Server::start(&["--max-clients-per-room", "2"]);
    let mut a = server.join_synced("1", "alice");
    let mut b = server.join_synced("1", "bob");
    let mut c = server.join("1", "carol");
    assert_eq!(c.close_code(), 4003);
    // Other rooms are not affected, and the room's members stay.
    let mut d = server.join_synced("2", "dave");
    d.expect_silence();
    a.set("☁ a", "1");
    assert_eq!(b.recv(), relayed("☁ a", "1"));
    // A place frees up when a member leaves.
    b.close_with(1000);
    // Alice and dave are left.
    server.wait_until_metric(&open_series("scratch"), 2);
    let mut e = server.join_synced("1", "erin");
    assert_eq!(e.recv(), relayed("☁ a", "1"));
}

#[test]
fn too_many_rooms_closes_with_4003() {
    let server = Server::start(&["--max-rooms", "1"]);
    let mut a = server.join_synced("1", "alice");
    let mut b = server.join("2", "bob");
    assert_eq!(b.close_code(), 4003);
    // The existing room still takes members.
    let mut c = server.join_synced("1", "carol");
    a.set("☁ a", "1");
    assert_eq!(c.recv(), relayed("☁ a", "1"));
}

#[test]
fn the_longest_empty_room_makes_space_for_a_new_one() {
    let server = Server::start(&["--max-rooms", "1"]);
    server.leave_room_with_a_value("1");
    server.wait_until_metric(&open_series("scratch"), 0);
    let mut b = server.join_synced("2", "bob");
    b.expect_silence();
    // Room 1 was dropped with its variables; joining it again is refused while room 2 is busy.
    let mut c = server.join("1", "carol");
    assert_eq!(c.close_code(), 4003);
}

#[test]
fn connections_beyond_the_maximum_close_with_4003() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut a = server.join_synced("1", "alice");
    let mut b = server.connect();
    let mut c = server.connect();
    assert_eq!(c.close_code(), 4003);
    b.handshake("1", "bob");
    b.sync();
    a.set("☁ a", "1");
    assert_eq!(b.recv(), relayed("☁ a", "1"));
    // Slots free up once connections are gone. No client is told when the server has removed
    // theirs (and /metrics would need a slot itself), so newcomers try until one gets in.
    drop(c);
    a.close_with(1000);
    drop(a);
    let mut d = first_to_get_a_slot(&server, "1", "dave");
    assert_eq!(d.recv(), relayed("☁ a", "1"));
}

/// Joins `project` as `user`, again and again while the server is full (4003), until a join
/// takes; panics after [`PATIENCE`].
fn first_to_get_a_slot(server: &Server, project: &str, user: &str) -> Client {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut client = server.join(project, user);
        match client.try_sync() {
            Ok(()) => return client,
            Err(Ending::Closed(4003)) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still full after {PATIENCE:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(other) => panic!("expected to join or 4003, got {other:?}"),
        }
    }
}

#[test]
fn joining_a_room_with_variables_sends_exactly_one_frame_with_all_of_them() {
    let server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    let mut watcher = server.join_synced("1", "watcher");
    a.set("☁ a", "1");
    a.set("☁ b", "\"2\"");
    a.packager_set(":cloud: c", "3.5");
    a.set("☁ a", "4");
    watcher.recv_containing(":cloud: c");
    watcher.drain(std::time::Duration::from_millis(200));
    let mut newcomer = server.join("1", "newcomer");
    assert_eq!(
        newcomer.recv(),
        lines(&[
            relayed("☁ a", "4"),
            relayed("☁ b", "\"2\""),
            relayed(":cloud: c", "3.5"),
        ])
    );
    newcomer.expect_silence();
    // The joiner's arrival is not announced to the others either.
    a.expect_silence();
    watcher.expect_silence();
}
