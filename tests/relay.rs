//! Sets, creates, renames and deletes in the Scratch dialect: what reaches whom, what is
//! ignored, how values keep their type, and how a tick batches updates into one frame.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod common;

use std::time::Duration;

use common::*;

/// With `--tick-hz 1 --tick-burst 1`: returns right after a beat, so that what is sent next is
/// flushed together at the following beat, a second later. `from` sets, `to` receives.
fn just_after_a_tick(from: &mut Client, to: &mut Client) {
    // The first change after a quiet spell spends the room's one token and goes out at once;
    // the second waits for a beat.
    from.set("☁ sync", "0");
    assert_eq!(to.recv(), relayed("☁ sync", "0"));
    from.set("☁ sync", "1");
    assert_eq!(
        to.recv_within(Duration::from_secs(3)).expect("a tick"),
        relayed("☁ sync", "1")
    );
}

/// The initial frame a new member of room 1 receives, or `None` for an empty room.
fn newcomer_sees(server: &Server, user: &str) -> Option<String> {
    let mut c = server.join("1", user);
    let frame = c.recv_within(Duration::from_millis(500));
    c.expect_silence();
    frame
}

#[test]
fn a_set_reaches_every_other_member_but_not_the_sender() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    let mut c = server.join_synced("1", "carol");
    a.set("☁ score", "10");
    assert_eq!(b.recv(), relayed("☁ score", "10"));
    assert_eq!(c.recv(), relayed("☁ score", "10"));
    a.expect_silence();
    c.set("☁ score", "11");
    assert_eq!(a.recv(), relayed("☁ score", "11"));
    assert_eq!(b.recv(), relayed("☁ score", "11"));
    c.expect_silence();
}

#[test]
fn create_works_like_set() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.send("{\"method\":\"create\",\"user\":\"alice\",\"project_id\":\"1\",\"name\":\"☁ new\",\"value\":0}\n");
    assert_eq!(b.recv(), relayed("☁ new", "0"));
    a.send("{\"method\":\"create\",\"name\":\"☁ new\",\"value\":\"5\"}\n");
    assert_eq!(b.recv(), relayed("☁ new", "\"5\""));
    a.expect_silence();
}

#[test]
fn values_keep_their_json_type() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.packager_set("☁ v", "1000");
    assert_eq!(
        b.recv(),
        "{\"method\":\"set\",\"name\":\"☁ v\",\"value\":1000}"
    );
    a.packager_set("☁ v", "\"1000\"");
    assert_eq!(
        b.recv(),
        "{\"method\":\"set\",\"name\":\"☁ v\",\"value\":\"1000\"}"
    );
    a.set("☁ v", "-2.5");
    assert_eq!(b.recv(), relayed("☁ v", "-2.5"));
    a.set("☁ v", "\"-2.5\"");
    assert_eq!(b.recv(), relayed("☁ v", "\"-2.5\""));
    // A newcomer gets the stored type too.
    assert_eq!(
        newcomer_sees(&server, "carol").as_deref(),
        Some(relayed("☁ v", "\"-2.5\"").as_str())
    );
}

#[test]
fn invalid_names_are_ignored_and_the_connection_stays_open() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    let too_long = format!("☁ {}", "n".repeat(1023));
    for name in [
        "score",
        "☁ ",
        ":cloud: ",
        "☁score",
        ":cloud:x",
        "",
        too_long.as_str(),
    ] {
        a.set(name, "1");
    }
    a.send("{\"method\":\"set\",\"name\":5,\"value\":1}\n");
    a.send("{\"method\":\"set\",\"value\":1}\n");
    a.set("☁ ok", "2");
    assert_eq!(b.recv(), relayed("☁ ok", "2"));
    b.expect_silence();
    assert_eq!(
        newcomer_sees(&server, "carol").as_deref(),
        Some(relayed("☁ ok", "2").as_str())
    );
}

#[test]
fn a_name_of_1024_characters_is_accepted() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    let longest = format!("☁ {}", "n".repeat(1022));
    a.set(&longest, "1");
    assert_eq!(b.recv(), relayed(&longest, "1"));
    let cloud = format!(":cloud: {}", "m".repeat(1016));
    a.set(&cloud, "2");
    assert_eq!(b.recv(), relayed(&cloud, "2"));
    // Characters, not bytes, are counted.
    let wide = format!("☁ {}", "é".repeat(1022));
    a.set(&wide, "3");
    assert_eq!(b.recv(), relayed(&wide, "3"));
}

#[test]
fn invalid_values_are_ignored_and_the_connection_stays_open() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.set("☁ v", "\"1\"");
    assert_eq!(b.recv(), relayed("☁ v", "\"1\""));
    let too_long = json_str(&"1".repeat(100_001));
    for value in [
        "\"abc\"",
        "\"1e5\"",
        "\" 1\"",
        "\"1 \"",
        "\".\"",
        "\"-\"",
        "\"1.2.3\"",
        "\"+1\"",
        "null",
        "true",
        "false",
        "{\"n\":1}",
        "[1]",
        too_long.as_str(),
    ] {
        a.set("☁ v", value);
        a.set("☁ fresh", value);
    }
    a.send("{\"method\":\"set\",\"name\":\"☁ v\"}\n");
    a.set("☁ w", "2");
    assert_eq!(b.recv(), relayed("☁ w", "2"));
    b.expect_silence();
    assert_eq!(
        newcomer_sees(&server, "carol").as_deref(),
        Some(lines(&[relayed("☁ v", "\"1\""), relayed("☁ w", "2")]).as_str())
    );
}

#[test]
fn edge_case_numeric_strings_are_relayed() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    let longest = json_str(&"7".repeat(100_000));
    for value in [
        "\"\"",
        "\"4.\"",
        "\".32\"",
        "\"-1.5\"",
        "\"-.5\"",
        "\"007\"",
        longest.as_str(),
    ] {
        a.set("☁ v", value);
        assert_eq!(b.recv(), relayed("☁ v", value), "{value}");
    }
}

#[test]
fn numbers_of_every_shape_are_relayed_as_numbers() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    for value in ["0", "-7", "1.5", "123456789012", "1e300"] {
        a.set("☁ v", value);
        let frame = b.recv();
        let parsed: serde_json::Value = serde_json::from_str(&frame).expect("JSON");
        let expected: serde_json::Value = serde_json::from_str(value).expect("JSON");
        assert!(parsed["value"].is_number(), "{frame}");
        assert_eq!(parsed["value"].as_f64(), expected.as_f64(), "{frame}");
    }
}

#[test]
fn numbers_beyond_64_bits_are_values_not_protocol_violations() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    for (i, value) in [
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "1e400",
        "-1.8e308",
    ]
    .into_iter()
    .enumerate()
    {
        a.set("☁ big", value);
        a.set("☁ n", &i.to_string());
        // The connection stays open: the next set arrives. A huge number may be relayed as a
        // number or ignored like any invalid value.
        let frame = b.recv_containing(&relayed("☁ n", &i.to_string()));
        for line in frame.lines().filter(|l| l.contains("☁ big")) {
            let parsed: serde_json::Value = serde_json::from_str(line).expect("JSON");
            assert!(parsed["value"].is_number(), "{value} came back as {line}");
        }
    }
}

#[test]
fn non_numeric_strings_are_relayed_with_allow_non_numeric() {
    let server = Server::start(&["--allow-non-numeric"]);
    let (mut a, mut b) = server.pair();
    a.set("☁ v", "\"hello\"");
    assert_eq!(b.recv(), relayed("☁ v", "\"hello\""));
    a.set("☁ v", "\"quote \\\" and \\\\ and \\n and ☁\"");
    assert_eq!(
        b.recv(),
        relayed("☁ v", "\"quote \\\" and \\\\ and \\n and ☁\"")
    );
    // Up to 100000 characters, however many bytes they take.
    let wide = json_str(&"é".repeat(100_000));
    a.set("☁ v", &wide);
    assert_eq!(b.recv(), relayed("☁ v", &wide));
    // Still not any JSON type, and still bounded in length.
    a.set("☁ v", "true");
    a.set("☁ v", &json_str(&"x".repeat(100_001)));
    a.set("☁ w", "1");
    assert_eq!(b.recv(), relayed("☁ w", "1"));
}

#[test]
fn without_allow_non_numeric_text_values_are_ignored() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.set("☁ v", "\"hello\"");
    a.set("☁ w", "1");
    assert_eq!(b.recv(), relayed("☁ w", "1"));
}

#[test]
fn new_names_beyond_the_room_variable_limit_are_ignored() {
    let server = Server::start(&["--max-variables-per-room", "3"]);
    let (mut a, mut b) = server.pair();
    a.send(&lines(&[
        set_line("☁ a", "1"),
        set_line("☁ b", "2"),
        set_line("☁ c", "3"),
        set_line("☁ d", "4"),
    ]));
    assert_eq!(
        b.recv(),
        lines(&[
            relayed("☁ a", "1"),
            relayed("☁ b", "2"),
            relayed("☁ c", "3")
        ])
    );
    // Existing variables still change; the fourth name is still refused.
    a.set("☁ d", "5");
    a.set("☁ a", "6");
    assert_eq!(b.recv(), relayed("☁ a", "6"));
    assert_eq!(
        newcomer_sees(&server, "carol").as_deref(),
        Some(
            lines(&[
                relayed("☁ a", "6"),
                relayed("☁ b", "2"),
                relayed("☁ c", "3")
            ])
            .as_str()
        )
    );
}

#[test]
fn the_default_limit_is_128_variables_per_room() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    let sets: Vec<String> = (0..129)
        .map(|i| set_line(&format!("☁ v{i}"), &i.to_string()))
        .collect();
    a.send(&lines(&sets));
    let expected: Vec<String> = (0..128)
        .map(|i| relayed(&format!("☁ v{i}"), &i.to_string()))
        .collect();
    assert_eq!(b.recv(), lines(&expected));
    a.set("☁ v128", "1");
    a.set("☁ v0", "-1");
    assert_eq!(b.recv(), relayed("☁ v0", "-1"));
}

#[test]
fn a_large_room_state_reaches_a_newcomer_in_one_frame() {
    let server = Server::start(&["--byte-rate", "0"]);
    let (mut a, mut b) = server.pair();
    let values: Vec<String> = (0..40)
        .map(|i| json_str(&format!("{i}{}", "0".repeat(99_990))))
        .collect();
    for (i, value) in values.iter().enumerate() {
        a.set(&format!("☁ v{i}"), value);
    }
    assert!(b.recv_containing("☁ v39").contains(&values[39]));
    let expected: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, value)| relayed(&format!("☁ v{i}"), value))
        .collect();
    let mut c = server.join("1", "carol");
    let frame = c.recv();
    assert_eq!(frame.len(), lines(&expected).len());
    assert!(frame == lines(&expected), "the 4 MB initial frame differs");
    c.expect_silence();
}

#[test]
fn rooms_are_isolated() {
    let server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    let mut b = server.join_synced("2", "bob");
    let mut c = server.join_synced("1", "carol");
    a.set("☁ x", "1");
    assert_eq!(c.recv(), relayed("☁ x", "1"));
    b.expect_silence();
    b.set("☁ x", "2");
    a.expect_silence();
    c.expect_silence();
    let mut d = server.join("2", "dave");
    assert_eq!(d.recv(), relayed("☁ x", "2"));
    let mut e = server.join("3", "erin");
    e.expect_silence();
}

#[test]
fn user_and_project_id_on_sets_are_ignored() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    let mut other = server.join_synced("2", "olga");
    a.send(&gui_set("mallory", "2", "☁ x", "1"));
    assert_eq!(b.recv(), relayed("☁ x", "1"));
    a.send("{\"method\":\"set\",\"name\":\"☁ y\",\"value\":2,\"project_id\":2,\"user\":\"x y\"}");
    assert_eq!(b.recv(), relayed("☁ y", "2"));
    other.expect_silence();
}

#[test]
fn rename_and_delete_are_ignored_by_default() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.set("☁ a", "1");
    assert_eq!(b.recv(), relayed("☁ a", "1"));
    a.send("{\"method\":\"rename\",\"user\":\"alice\",\"project_id\":\"1\",\"name\":\"☁ a\",\"new_name\":\"☁ b\"}\n");
    a.send("{\"method\":\"delete\",\"user\":\"alice\",\"project_id\":\"1\",\"name\":\"☁ a\"}\n");
    a.send("{\"method\":\"rename\",\"name\":\"☁ missing\",\"new_name\":\"bad\"}\n");
    a.send("{\"method\":\"delete\",\"name\":\"☁ missing\"}\n");
    a.set("☁ z", "2");
    assert_eq!(b.recv(), relayed("☁ z", "2"));
    assert_eq!(
        newcomer_sees(&server, "carol").as_deref(),
        Some(lines(&[relayed("☁ a", "1"), relayed("☁ z", "2")]).as_str())
    );
}

/// A GUI-shaped rename.
fn rename(client: &mut Client, name: &str, new_name: &str) {
    let text = format!(
        "{{\"method\":\"rename\",\"user\":{},\"project_id\":{},\"name\":{},\"new_name\":{}}}\n",
        json_str(&client.user),
        json_str(&client.project),
        json_str(name),
        json_str(new_name)
    );
    client.send(&text);
}

/// A GUI-shaped delete.
fn delete(client: &mut Client, name: &str) {
    let text = format!(
        "{{\"method\":\"delete\",\"user\":{},\"project_id\":{},\"name\":{}}}\n",
        json_str(&client.user),
        json_str(&client.project),
        json_str(name)
    );
    client.send(&text);
}

#[test]
fn rename_keeps_the_value_when_enabled() {
    let server = Server::start(&["--enable-rename"]);
    let (mut a, mut b) = server.pair();
    a.set("☁ a", "\"5\"");
    assert_eq!(b.recv(), relayed("☁ a", "\"5\""));
    a.set("☁ other", "1");
    assert_eq!(b.recv(), relayed("☁ other", "1"));
    rename(&mut a, "☁ a", "☁ b");
    assert_eq!(b.recv(), relayed("☁ b", "\"5\""));
    a.expect_silence();
    assert_eq!(
        newcomer_sees(&server, "carol").as_deref(),
        Some(lines(&[relayed("☁ b", "\"5\""), relayed("☁ other", "1")]).as_str())
    );
    // The new name is a normal variable, and the old name is free again.
    a.set("☁ b", "6");
    assert_eq!(b.recv(), relayed("☁ b", "6"));
    b.set("☁ a", "7");
    assert_eq!(a.recv(), relayed("☁ a", "7"));
}

#[test]
fn renaming_an_unknown_variable_closes_with_4000() {
    let server = Server::start(&["--enable-rename"]);
    let (mut a, mut b) = server.pair();
    a.set("☁ a", "1");
    assert_eq!(b.recv(), relayed("☁ a", "1"));
    rename(&mut a, "☁ missing", "☁ b");
    assert_eq!(a.close_code(), 4000);
    b.expect_silence();
}

#[test]
fn renaming_to_an_invalid_or_taken_name_closes_with_4000() {
    let server = Server::start(&["--enable-rename"]);
    let mut b = server.join_synced("1", "bob");
    let mut setter = server.join_synced("1", "setter");
    setter.send(&lines(&[set_line("☁ a", "1"), set_line("☁ b", "2")]));
    assert_eq!(b.recv(), lines(&[relayed("☁ a", "1"), relayed("☁ b", "2")]));
    let too_long = format!("☁ {}", "n".repeat(1023));
    for new_name in ["b", "☁ ", "", too_long.as_str(), "☁ b", "☁ a"] {
        let mut a = server.join("1", "alice");
        assert_eq!(a.recv(), lines(&[relayed("☁ a", "1"), relayed("☁ b", "2")]));
        rename(&mut a, "☁ a", new_name);
        assert_eq!(a.close_code(), 4000, "{new_name:?}");
    }
    let mut a = server.join("1", "alice");
    a.send("{\"method\":\"rename\",\"name\":\"☁ a\"}\n");
    assert_eq!(a.close_code(), 4000, "rename without new_name");
    b.expect_silence();
    assert_eq!(
        newcomer_sees(&server, "carol").as_deref(),
        Some(lines(&[relayed("☁ a", "1"), relayed("☁ b", "2")]).as_str())
    );
}

#[test]
fn delete_removes_a_variable_when_enabled() {
    let server = Server::start(&["--enable-delete"]);
    let (mut a, mut b) = server.pair();
    a.send(&lines(&[set_line("☁ a", "1"), set_line("☁ b", "2")]));
    assert_eq!(b.recv(), lines(&[relayed("☁ a", "1"), relayed("☁ b", "2")]));
    delete(&mut a, "☁ a");
    a.set("☁ z", "3");
    assert!(!b.recv_containing("☁ z").contains("☁ a"));
    assert_eq!(
        newcomer_sees(&server, "carol").as_deref(),
        Some(lines(&[relayed("☁ b", "2"), relayed("☁ z", "3")]).as_str())
    );
    // A deleted name can be set again, creating a new variable.
    a.set("☁ a", "4");
    assert_eq!(b.recv(), relayed("☁ a", "4"));
}

#[test]
fn deleting_an_unknown_variable_closes_with_4000() {
    let server = Server::start(&["--enable-delete"]);
    let (mut a, mut b) = server.pair();
    delete(&mut a, "☁ missing");
    assert_eq!(a.close_code(), 4000);
    let mut c = server.join("1", "carol");
    c.send("{\"method\":\"delete\"}\n");
    assert_eq!(c.close_code(), 4000, "delete without a name");
    b.expect_silence();
}

#[test]
fn sets_in_one_frame_arrive_as_one_frame_with_the_latest_values() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.send(
        &(lines(&[
            gui_set("alice", "1", "☁ a", "1").trim_end().to_owned(),
            gui_set("alice", "1", "☁ a", "2").trim_end().to_owned(),
            gui_set("alice", "1", "☁ b", "3").trim_end().to_owned(),
        ]) + "\n"),
    );
    assert_eq!(b.recv(), lines(&[relayed("☁ a", "2"), relayed("☁ b", "3")]));
    b.expect_silence();
    a.expect_silence();
}

#[test]
fn back_to_back_frames_within_a_tick_arrive_as_one_frame() {
    // One tick a second: frames sent right after a tick are all flushed at the next one.
    let server = Server::start(&["--tick-hz", "1", "--tick-burst", "1"]);
    let (mut a, mut b) = server.pair();
    just_after_a_tick(&mut a, &mut b);
    for i in 1..=20 {
        a.set("☁ a", &i.to_string());
        a.packager_set("☁ b", &(i * 10).to_string());
    }
    assert_eq!(
        b.recv_within(Duration::from_secs(3))
            .expect("one batched frame"),
        lines(&[relayed("☁ a", "20"), relayed("☁ b", "200")])
    );
    b.expect_silence();
}

#[test]
fn members_that_wrote_some_of_the_changes_get_only_the_others() {
    let server = Server::start(&["--tick-hz", "1", "--tick-burst", "1"]);
    let (mut a, mut b) = server.pair();
    let mut c = server.join_synced("1", "carol");
    just_after_a_tick(&mut a, &mut b);
    assert_eq!(c.recv(), relayed("☁ sync", "0"));
    assert_eq!(c.recv(), relayed("☁ sync", "1"));
    a.set("☁ a", "1");
    b.set("☁ b", "2");
    assert_eq!(
        a.recv_within(Duration::from_secs(3)).expect("frame"),
        relayed("☁ b", "2")
    );
    assert_eq!(
        b.recv_within(Duration::from_secs(3)).expect("frame"),
        relayed("☁ a", "1")
    );
    assert_eq!(
        c.recv_within(Duration::from_secs(3)).expect("frame"),
        lines(&[relayed("☁ a", "1"), relayed("☁ b", "2")])
    );
}

#[test]
fn a_member_joining_between_ticks_gets_pending_changes_once() {
    let server = Server::start(&["--tick-hz", "1", "--tick-burst", "1"]);
    let (mut a, mut b) = server.pair();
    just_after_a_tick(&mut a, &mut b);
    // Not flushed until the next tick, a second from now; the joiner sees it at once.
    a.set("☁ x", "1");
    let mut c = server.join("1", "carol");
    assert_eq!(
        c.recv(),
        lines(&[relayed("☁ sync", "1"), relayed("☁ x", "1")])
    );
    assert_eq!(
        b.recv_within(Duration::from_secs(3)).expect("tick"),
        relayed("☁ x", "1")
    );
    // The tick that brings bob the change has nothing for carol.
    assert_eq!(c.recv_within(Duration::from_millis(500)), None);
}

#[test]
fn tick_hz_0_sends_at_once() {
    let server = Server::start(&["--tick-hz", "0"]);
    let (mut a, mut b) = server.pair();
    a.send(&lines(&[
        set_line("☁ a", "1"),
        set_line("☁ a", "2"),
        set_line("☁ b", "3"),
    ]));
    assert_eq!(b.recv(), lines(&[relayed("☁ a", "2"), relayed("☁ b", "3")]));
    for i in 0..5 {
        a.set("☁ a", &i.to_string());
        assert_eq!(b.recv(), relayed("☁ a", &i.to_string()));
    }
    b.set("☁ c", "9");
    assert_eq!(a.recv(), relayed("☁ c", "9"));
}

#[test]
fn scratchattach_frames_with_two_escaped_objects_apply_both() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.send(
        "{\"method\": \"set\", \"name\": \"\\u2601 a\", \"value\": \"1\", \"user\": \"alice\", \"project_id\": \"1\"}\n{\"method\": \"set\", \"name\": \"\\u2601 b\", \"value\": \"2\", \"user\": \"alice\", \"project_id\": \"1\"}\n",
    );
    assert_eq!(
        b.recv(),
        lines(&[relayed("☁ a", "\"1\""), relayed("☁ b", "\"2\"")])
    );
    a.send("{\"method\": \"set\", \"name\": \"\\u2601 a\", \"value\": \"3\"}\r\n\r\n");
    assert_eq!(b.recv(), relayed("☁ a", "\"3\""));
}

#[test]
fn a_bad_object_in_a_frame_closes_after_the_objects_before_it_apply() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.send(&(set_line("☁ a", "1") + "\n{oops}\n" + &set_line("☁ b", "2")));
    assert_eq!(a.close_code(), 4000);
    assert_eq!(b.recv(), relayed("☁ a", "1"));
    b.expect_silence();
}

/// What Bob (Scratch) and a legacy client of room 1 read when Alice sets `☁ x` to 5, after
/// the legacy client created it: Bob's join frame, Bob's update, the legacy client's update.
fn writers_as_read(args: &[&str]) -> (serde_json::Value, serde_json::Value, String) {
    let server = Server::start(args);
    let mut legacy = server.legacy_join("1", "OldTimer", r#"{"☁ x": "0"}"#);
    legacy.sync();
    assert_eq!(legacy.recv(), legacy_relayed("☁ x", "0"), "its join frame");
    let mut alice = server.join_synced("1", "Alice");
    let mut bob = server.join("1", "Bob");
    let joined: serde_json::Value = serde_json::from_str(&bob.recv()).expect("json");
    bob.sync();
    alice.recv(); // Alice's own join frame
    alice.set("☁ x", "5");
    let update: serde_json::Value = serde_json::from_str(&bob.recv()).expect("json");
    let legacy_update = legacy.recv();
    // The writer is not sent its own value, with or without its name.
    alice.expect_silence();
    (joined, update, legacy_update)
}

#[test]
fn relay_user_names_the_writer_and_time_in_scratch_sets_and_only_there() {
    let (joined, update, legacy_update) = writers_as_read(&["--relay-user"]);
    assert_eq!(update["method"], "set");
    assert_eq!(update["name"], "☁ x");
    assert_eq!(update["value"], 5);
    assert_eq!(update["user"], "Alice");
    let set_at = update["timestamp"].as_u64().expect("a number of ms");
    assert!(set_at > 1_600_000_000_000, "{update}");
    // The join's full-state reply names each variable's last writer too.
    assert_eq!(joined["user"], "OldTimer");
    assert!(
        joined["timestamp"].as_u64().expect("ms") <= set_at,
        "{joined}"
    );
    // Other dialects read what they always did.
    assert_eq!(legacy_update, legacy_relayed("☁ x", "5"));

    // Off by default: Scratch's own shape.
    let (joined, update, legacy_update) = writers_as_read(&[]);
    assert_eq!(update.to_string(), relayed("☁ x", "5"));
    assert_eq!(joined.to_string(), relayed("☁ x", "\"0\""));
    assert_eq!(legacy_update, legacy_relayed("☁ x", "5"));
}
