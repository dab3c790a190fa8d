//! The engine as one node of a cluster: batches in Redis order, own changes, reloads, member
//! counts. Redis itself is played by the test.

use super::tests::{load_requests, next_batch, read, reloads, removed, reports};
use super::*;

fn encode(_format: Format, _room: &str, line: SetLine<'_>, out: &mut String) {
    out.push_str(line.name);
    out.push('=');
    out.push_str(line.value.text());
}

const F: Format = Format(0);

fn node() -> Engine {
    let mut e = Engine::new(Limits::default(), encode);
    e.set_backend(Backend::Cluster);
    e
}

fn var(name: &str, value: &str) -> SavedVariable {
    SavedVariable {
        user: Default::default(),
        changed_ms: 0,
        name: name.into(),
        value: value.into(),
        is_number: true,
    }
}

/// Joins `client` to `room`, installing the room from "Redis" at `version` first if needed.
fn join_at(
    e: &mut Engine,
    room: &str,
    client: u64,
    version: u64,
    vars: &[SavedVariable],
) -> RoomKey {
    let now = Instant::now();
    match e.join(room, ClientId(client), F, None, now) {
        Ok(key) => key,
        Err(JoinError::Loading) => {
            load_requests(e);
            e.handle_loaded(room, read(version, vars), now);
            e.join(room, ClientId(client), F, None, now)
                .expect("join after load")
        }
        Err(other) => panic!("join: {other:?}"),
    }
}

fn remote<'a>(room: &'a str, version: u64, variables: &'a [SavedVariable]) -> RemoteChanges<'a> {
    RemoteChanges {
        room,
        version,
        own: false,
        local_version: 0,
        replace_all: false,
        variables,
    }
}

fn flushed(e: &mut Engine) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    e.flush(|_, client, frame| {
        out.push((client.0, frame.to_string()));
        true
    });
    out.sort();
    out
}

fn value(e: &Engine, room: &str, name: &str) -> Option<String> {
    e.value(room, name).map(|v| v.text().to_owned())
}

#[test]
fn a_join_waits_for_the_room_from_redis_and_sees_its_values() {
    let mut e = node();
    let now = Instant::now();
    assert_eq!(
        e.join("r", ClientId(1), F, None, now).err(),
        Some(JoinError::Loading)
    );
    assert_eq!(load_requests(&mut e), vec![Box::from("r")]);
    let waiters = e.handle_loaded("r", read(7, &[var("☁ a", "1")]), now);
    assert_eq!(waiters, vec![ClientId(1)]);
    let key = e.join("r", ClientId(1), F, None, now).expect("join");
    assert_eq!(
        e.snapshot(key, F).map(|f| f.to_string()),
        Some("☁ a=1".into())
    );
    assert!(!e.has_unsaved(), "what came from Redis is not sent back");
}

#[test]
fn batches_apply_in_version_order_and_reach_local_members() {
    let mut e = node();
    join_at(&mut e, "r", 1, 3, &[]);
    flushed(&mut e);
    assert_eq!(
        e.handle_remote(remote("r", 4, &[var("☁ a", "5")])),
        Remote::Applied
    );
    assert_eq!(flushed(&mut e), vec![(1, "☁ a=5".into())]);
    assert_eq!(
        e.handle_remote(remote("r", 4, &[var("☁ a", "6")])),
        Remote::Stale,
        "a version already applied"
    );
    assert_eq!(value(&e, "r", "☁ a").as_deref(), Some("5"));
    assert!(!e.has_unsaved(), "other nodes' changes are not sent back");
}

#[test]
fn a_gap_asks_for_the_room_again_and_the_read_catches_up() {
    let mut e = node();
    join_at(&mut e, "r", 1, 3, &[]);
    assert_eq!(
        e.handle_remote(remote("r", 6, &[var("☁ a", "6")])),
        Remote::Gap
    );
    assert_eq!(reloads(&mut e), vec![Box::from("r")]);
    assert_eq!(
        e.handle_remote(remote("r", 7, &[var("☁ a", "7"), var("☁ c", "7")])),
        Remote::Kept,
        "while reading, batches are kept for the read"
    );
    // Older than the first batch seen after the gap: versions 5 is in neither.
    e.handle_loaded("r", read(4, &[var("☁ a", "4")]), Instant::now());
    assert_eq!(
        reloads(&mut e),
        vec![Box::from("r")],
        "a read with versions missing after it is redone"
    );
    assert_eq!(
        e.handle_remote(remote("r", 8, &[var("☁ c", "8")])),
        Remote::Kept
    );
    // A read at 7: batch 8, seen meanwhile, is applied over it.
    e.handle_loaded(
        "r",
        read(7, &[var("☁ a", "7"), var("☁ b", "1")]),
        Instant::now(),
    );
    assert!(reloads(&mut e).is_empty());
    assert_eq!(value(&e, "r", "☁ a").as_deref(), Some("7"));
    assert_eq!(value(&e, "r", "☁ b").as_deref(), Some("1"));
    assert_eq!(value(&e, "r", "☁ c").as_deref(), Some("8"));
    assert_eq!(
        e.handle_remote(remote("r", 8, &[var("☁ c", "8")])),
        Remote::Stale
    );
    assert_eq!(
        e.handle_remote(remote("r", 9, &[var("☁ a", "9")])),
        Remote::Applied
    );
}

#[test]
fn a_busy_room_is_installed_from_one_read_however_many_batches_pass_meanwhile() {
    let mut e = node();
    let now = Instant::now();
    assert_eq!(
        e.join("r", ClientId(1), F, None, now).err(),
        Some(JoinError::Loading)
    );
    load_requests(&mut e);
    // Subscribed; batches 10..=20 pass before the read's answer, which Redis made at 14.
    for version in 10..=20 {
        let value = version.to_string();
        assert_eq!(
            e.handle_remote(remote("r", version, &[var("☁ a", &value)])),
            Remote::Kept
        );
    }
    let waiters = e.handle_loaded("r", read(14, &[var("☁ a", "14"), var("☁ b", "1")]), now);
    assert_eq!(waiters, vec![ClientId(1)], "no second read");
    assert!(load_requests(&mut e).is_empty());
    assert_eq!(value(&e, "r", "☁ a").as_deref(), Some("20"));
    assert_eq!(value(&e, "r", "☁ b").as_deref(), Some("1"));
    assert_eq!(
        e.handle_remote(remote("r", 21, &[var("☁ a", "21")])),
        Remote::Applied,
        "the room shows version 20"
    );
    assert!(!e.has_unsaved(), "nothing of it is sent back");
}

#[test]
fn a_load_whose_batches_cannot_be_applied_is_read_again() {
    let mut e = node();
    let now = Instant::now();
    let _ = e.join("r", ClientId(1), F, None, now);
    load_requests(&mut e);
    e.handle_remote(remote("r", 10, &[var("☁ a", "10")]));
    e.handle_remote(remote("r", 12, &[var("☁ a", "12")]));
    assert!(e.handle_loaded("r", read(10, &[]), now).is_empty());
    assert!(e.room_key("r").is_none());
    assert_eq!(
        load_requests(&mut e),
        vec![Box::from("r")],
        "asked for again"
    );
    let waiters = e.handle_loaded("r", read(12, &[var("☁ a", "12")]), now);
    assert_eq!(waiters, vec![ClientId(1)]);
    assert_eq!(value(&e, "r", "☁ a").as_deref(), Some("12"));
}

#[test]
fn a_reload_of_every_room_starts_a_new_epoch_and_keeps_only_the_new_subscriptions_batches() {
    let mut e = node();
    join_at(&mut e, "r", 1, 3, &[]);
    let before = e.resync_epoch();
    e.handle_remote(remote("r", 4, &[var("☁ a", "4")]));
    e.handle_resync();
    assert_ne!(e.resync_epoch(), before);
    assert_eq!(reloads(&mut e), vec![Box::from("r")]);
    assert_eq!(
        e.handle_remote(remote("r", 9, &[var("☁ a", "9")])),
        Remote::Kept
    );
    e.handle_loaded("r", read(8, &[var("☁ a", "8")]), Instant::now());
    assert_eq!(value(&e, "r", "☁ a").as_deref(), Some("9"));
    assert!(reloads(&mut e).is_empty());
}

#[test]
fn values_from_the_cluster_are_kept_beyond_this_nodes_limits() {
    let limits = Limits {
        max_variables_per_room: 2,
        ..Limits::default()
    };
    let mut e = Engine::new(limits, encode);
    e.set_backend(Backend::Cluster);
    let key = join_at(&mut e, "r", 1, 1, &[var("☁ a", "1")]);
    assert_eq!(
        e.set(key, ClientId(1), "☁ b", ValueRef::Number("2"), true),
        SetOutcome::Applied
    );
    // Another node created ☁ c when it knew of a only: both nodes must end up with all three.
    e.handle_remote(remote("r", 2, &[var("☁ c", "3")]));
    assert_eq!(value(&e, "r", "☁ c").as_deref(), Some("3"));
    let text = SavedVariable {
        user: Default::default(),
        changed_ms: 0,
        name: "☁ d".into(),
        value: "hello".into(),
        is_number: false,
    };
    e.handle_remote(remote("r", 3, std::slice::from_ref(&text)));
    assert_eq!(
        value(&e, "r", "☁ d").as_deref(),
        Some("hello"),
        "a node that allows text set it"
    );
    assert_ne!(
        e.set(key, ClientId(1), "☁ e", ValueRef::Number("5"), true),
        SetOutcome::Applied,
        "this node's clients still meet the limit"
    );
}

#[test]
fn joins_waiting_for_a_read_are_refused_when_redis_goes_out() {
    let mut e = node();
    let now = Instant::now();
    join_at(&mut e, "here", 1, 1, &[]);
    let _ = e.join("r", ClientId(2), F, None, now);
    load_requests(&mut e);
    assert_eq!(e.handle_outage(), vec![ClientId(2)]);
    assert_eq!(
        e.join("r", ClientId(2), F, None, now).err(),
        Some(JoinError::Unavailable)
    );
    assert!(e.room_key("here").is_some(), "rooms in memory stay");
}

#[test]
fn a_local_change_not_yet_published_is_not_overwritten_by_earlier_batches() {
    let mut e = node();
    let key = join_at(&mut e, "r", 1, 3, &[var("☁ a", "0")]);
    join_at(&mut e, "r", 2, 3, &[]);
    e.set(key, ClientId(1), "☁ a", ValueRef::Number("1"), true);
    let batch = next_batch(&mut e);
    assert_eq!(batch.rooms.len(), 1);
    let local = batch.rooms[0].local_version();
    // Another node's batch, ordered by Redis before ours: ours is later and wins.
    e.handle_remote(remote("r", 4, &[var("☁ a", "2")]));
    assert_eq!(value(&e, "r", "☁ a").as_deref(), Some("1"));
    // Our own batch comes back at version 5; then a later one of the other node applies.
    let own = [var("☁ a", "1")];
    let echo = RemoteChanges {
        own: true,
        local_version: local,
        ..remote("r", 5, &own)
    };
    assert_eq!(e.handle_remote(echo), Remote::Applied);
    e.handle_saved(&batch, true);
    assert_eq!(value(&e, "r", "☁ a").as_deref(), Some("1"));
    e.handle_remote(remote("r", 6, &[var("☁ a", "3")]));
    assert_eq!(value(&e, "r", "☁ a").as_deref(), Some("3"));
    assert_eq!(
        flushed(&mut e),
        vec![(1, "☁ a=3".into()), (2, "☁ a=3".into())]
    );
}

#[test]
fn a_failed_batch_is_sent_again_without_the_clusters_values() {
    let mut e = node();
    let key = join_at(&mut e, "r", 1, 1, &[]);
    e.set(key, ClientId(1), "☁ mine", ValueRef::Number("1"), true);
    e.handle_remote(remote("r", 2, &[var("☁ theirs", "2")]));
    let batch = next_batch(&mut e);
    e.handle_saved(&batch, false);
    let again = next_batch(&mut e);
    let names: Vec<&str> = again.rooms[0].variables.iter().map(|v| &*v.name).collect();
    assert_eq!(names, vec!["☁ mine"]);
}

#[test]
fn replace_all_removes_variables_the_cluster_no_longer_has() {
    let mut e = node();
    join_at(&mut e, "r", 1, 1, &[var("☁ a", "1"), var("☁ b", "2")]);
    let only_b = [var("☁ b", "2")];
    let replace = RemoteChanges {
        replace_all: true,
        ..remote("r", 2, &only_b)
    };
    assert_eq!(e.handle_remote(replace), Remote::Applied);
    assert_eq!(value(&e, "r", "☁ a"), None);
    assert_eq!(value(&e, "r", "☁ b").as_deref(), Some("2"));
}

#[test]
fn redis_that_lost_the_room_gets_this_nodes_state_back_whole() {
    let mut e = node();
    join_at(&mut e, "r", 1, 9, &[var("☁ a", "1")]);
    e.handle_resync();
    assert_eq!(reloads(&mut e), vec![Box::from("r")]);
    e.handle_loaded("r", read(0, &[]), Instant::now());
    assert_eq!(value(&e, "r", "☁ a").as_deref(), Some("1"), "kept");
    let batch = next_batch(&mut e);
    assert_eq!(batch.rooms.len(), 1);
    assert!(batch.rooms[0].replace_all);
    assert_eq!(batch.rooms[0].variables.len(), 1);
}

#[test]
fn room_limits_count_members_on_other_nodes() {
    let mut e = Engine::new(
        Limits {
            max_clients_per_room: 2,
            ..Limits::default()
        },
        encode,
    );
    e.set_backend(Backend::Cluster);
    join_at(&mut e, "r", 1, 1, &[]);
    assert_eq!(reports(&mut e, false), vec![(Box::from("r"), 1)]);
    assert!(reports(&mut e, false).is_empty(), "reported once");
    e.handle_member_totals(&[("r".into(), 2)]);
    assert_eq!(
        e.join("r", ClientId(2), F, None, Instant::now()).err(),
        Some(JoinError::RoomFull)
    );
    assert_eq!(
        reports(&mut e, false),
        vec![(Box::from("r"), 1)],
        "a refusal for members elsewhere asks Redis to count again"
    );
    e.handle_member_totals(&[("r".into(), 1)]);
    assert!(e.join("r", ClientId(2), F, None, Instant::now()).is_ok());
}

#[test]
fn failed_member_reports_are_sent_again() {
    let mut e = node();
    join_at(&mut e, "r", 1, 1, &[]);
    let unsent = reports(&mut e, false);
    e.handle_unsent(Work {
        reports: unsent,
        ..Work::default()
    });
    assert_eq!(reports(&mut e, false), vec![(Box::from("r"), 1)]);
}

#[test]
fn a_room_leaving_memory_is_named_for_unsubscribing() {
    let mut e = Engine::new(
        Limits {
            empty_room_ttl: Duration::ZERO,
            ..Limits::default()
        },
        encode,
    );
    e.set_backend(Backend::Cluster);
    let key = join_at(&mut e, "r", 1, 1, &[]);
    e.handle_remote(remote("r", 2, &[var("☁ a", "1")]));
    e.leave(key, ClientId(1), Instant::now());
    assert_eq!(
        e.expire(Instant::now()),
        1,
        "only other nodes' changes: nothing owed"
    );
    assert_eq!(removed(&mut e), vec![Box::from("r")]);
}

#[test]
fn a_room_created_again_in_redis_is_read_again() {
    let mut e = node();
    join_at(&mut e, "r", 1, 5, &[var("☁ a", "1")]);
    assert_eq!(
        e.handle_remote(remote("r", 1, &[var("☁ b", "2")])),
        Remote::Gap
    );
    assert_eq!(reloads(&mut e), vec![Box::from("r")]);
    e.handle_loaded("r", read(1, &[var("☁ b", "2")]), Instant::now());
    let batch = next_batch(&mut e);
    assert!(
        batch.rooms[0].replace_all,
        "Redis gets this node's state back whole"
    );
    let names: Vec<&str> = batch.rooms[0].variables.iter().map(|v| &*v.name).collect();
    assert_eq!(names, vec!["☁ a", "☁ b"], "with what Redis had meanwhile");
}

#[test]
fn a_declaration_is_sent_as_seeds_and_gives_way_to_the_clusters_values() {
    let mut e = node();
    let now = Instant::now();
    let declared = [
        ("☁ x", ValueRef::Number("0")),
        ("☁ y", ValueRef::Number("0")),
    ];
    assert_eq!(
        e.join("r", ClientId(1), F, Some(&declared), now).err(),
        Some(JoinError::Loading)
    );
    load_requests(&mut e);
    e.handle_loaded("r", read(0, &[]), now);
    let key = e
        .join("r", ClientId(1), F, Some(&declared), now)
        .expect("join");
    e.set(key, ClientId(1), "☁ y", ValueRef::Number("7"), true);
    let batch = next_batch(&mut e);
    let names = |vars: &[SavedVariable]| -> Vec<String> {
        vars.iter().map(|v| v.name.to_string()).collect()
    };
    assert_eq!(names(&batch.rooms[0].seeds), vec!["☁ x"]);
    assert_eq!(
        names(&batch.rooms[0].variables),
        vec!["☁ y"],
        "a set is no seed"
    );
    // Another node declared first and set x: its batch wins over the seed, not over the set.
    e.handle_remote(remote("r", 1, &[var("☁ x", "5"), var("☁ y", "1")]));
    assert_eq!(value(&e, "r", "☁ x").as_deref(), Some("5"));
    assert_eq!(value(&e, "r", "☁ y").as_deref(), Some("7"));
}

#[test]
fn a_read_nobody_waits_for_installs_nothing_and_leaves_the_channel() {
    let mut e = node();
    assert!(e
        .handle_loaded("gone", read(3, &[var("☁ a", "1")]), Instant::now())
        .is_empty());
    assert!(
        e.room_key("gone").is_none(),
        "a room without its channel would go stale"
    );
    assert_eq!(removed(&mut e), vec![Box::from("gone")]);
}

#[test]
fn a_second_read_older_than_the_channel_is_ignored() {
    let mut e = node();
    join_at(&mut e, "r", 1, 3, &[var("☁ a", "1")]);
    e.handle_remote(remote("r", 4, &[var("☁ a", "4")]));
    e.handle_loaded("r", read(3, &[var("☁ a", "1")]), Instant::now());
    assert_eq!(value(&e, "r", "☁ a").as_deref(), Some("4"));
    assert!(!e.has_unsaved(), "no rewrite of the whole room");
}

#[test]
fn a_room_renamed_during_its_read_is_read_once() {
    // A rename (or delete) goes to Redis as the whole room; its echo may arrive while the room
    // is being read, and the read may be from before it or after it.
    for read_holds_the_rename in [true, false] {
        let mut e = node();
        let key = join_at(&mut e, "r", 1, 3, &[var("☁ a", "1")]);
        e.handle_resync();
        assert_eq!(reloads(&mut e), vec![Box::from("r")]);
        assert!(e.rename(key, ClientId(1), "☁ a", "☁ b").is_ok());
        let batch = next_batch(&mut e);
        let changes = &batch.rooms[0];
        assert!(changes.replace_all);
        let echo = RemoteChanges {
            own: true,
            local_version: changes.local_version(),
            replace_all: true,
            ..remote("r", 4, &changes.variables)
        };
        assert_eq!(e.handle_remote(echo), Remote::Kept);
        e.handle_saved(&batch, true);
        if read_holds_the_rename {
            e.handle_loaded("r", read(4, &[var("☁ b", "1")]), Instant::now());
        } else {
            e.handle_loaded("r", read(3, &[var("☁ a", "1")]), Instant::now());
        }
        assert!(reloads(&mut e).is_empty(), "no second read");
        assert_eq!(value(&e, "r", "☁ a"), None, "{read_holds_the_rename}");
        assert_eq!(value(&e, "r", "☁ b").as_deref(), Some("1"));
        assert_eq!(
            e.handle_remote(remote("r", 5, &[var("☁ z", "9")])),
            Remote::Applied,
            "the room follows its channel again"
        );
        assert!(!e.has_unsaved());
    }
}

#[test]
fn other_nodes_writers_are_kept_also_when_they_write_the_same_value() {
    let mut e = node();
    let key = join_at(&mut e, "r", 1, 3, &[]);
    flushed(&mut e);
    let written = |user: &str, ms: u64| SavedVariable {
        user: user.into(),
        changed_ms: ms,
        ..var("☁ a", "5")
    };
    e.handle_remote(remote("r", 4, &[written("Alice", 10)]));
    e.handle_remote(remote("r", 5, &[written("Bob", 20)]));
    let saved = e.saved_variables(key);
    assert_eq!(
        saved
            .iter()
            .map(|v| (&*v.user, v.changed_ms))
            .collect::<Vec<_>>(),
        [("Bob", 20)]
    );
    assert_eq!(
        flushed(&mut e),
        vec![(1, "☁ a=5".into())],
        "one value, sent once"
    );
}
