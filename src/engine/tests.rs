use super::*;

fn encode(_format: Format, _room: &str, line: SetLine<'_>, out: &mut String) {
    out.push_str(line.name);
    out.push('=');
    out.push_str(line.value.text());
}

const F: Format = Format(0);

/// Takes the part of the engine's work that `pick` chooses, giving the rest back (as a driver
/// gives back what its backend could not take).
pub(super) fn take_part<T>(e: &mut Engine, want: Want, pick: impl FnOnce(&mut Work) -> T) -> T {
    let mut work = e.poll_work(want);
    let part = pick(&mut work);
    e.handle_unsent(work);
    part
}

/// The owed changes, as the next batch.
pub(super) fn next_batch(e: &mut Engine) -> Batch {
    let want = Want {
        batch: true,
        ..Want::default()
    };
    take_part(e, want, |w| std::mem::take(&mut w.batch))
}

/// Rooms joins wait for that the backend was not asked for yet.
pub(super) fn load_requests(e: &mut Engine) -> Vec<Box<str>> {
    take_part(e, Want::default(), |w| std::mem::take(&mut w.loads))
}

/// Rooms in memory to read again.
pub(super) fn reloads(e: &mut Engine) -> Vec<Box<str>> {
    take_part(e, Want::default(), |w| std::mem::take(&mut w.reloads))
}

/// Rooms that left memory.
pub(super) fn removed(e: &mut Engine) -> Vec<Box<str>> {
    take_part(e, Want::default(), |w| std::mem::take(&mut w.removed))
}

/// Member counts to report (`all`: a refresh).
pub(super) fn reports(e: &mut Engine, all: bool) -> Vec<(Box<str>, u32)> {
    let reports = if all { Reports::All } else { Reports::Changed };
    let want = Want {
        reports,
        ..Want::default()
    };
    take_part(e, want, |w| std::mem::take(&mut w.reports))
}

/// A room read from the backend at `version` (0 for the store).
pub(super) fn read(version: u64, variables: &[SavedVariable]) -> Read<'_> {
    Read {
        version,
        variables,
        history_seq: 0,
    }
}

fn engine() -> Engine {
    Engine::new(Limits::default(), encode)
}

fn join(engine: &mut Engine, room: &str, client: u64) -> RoomKey {
    engine
        .join(room, ClientId(client), F, None, Instant::now())
        .expect("join")
}

fn flushed(engine: &mut Engine) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    engine.flush(|_, client, frame| {
        out.push((client.0, frame.to_string()));
        true
    });
    out.sort();
    out
}

#[test]
fn a_set_reaches_every_other_member_once_and_never_the_writer() {
    let mut e = engine();
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    join(&mut e, "1", 3);
    assert_eq!(
        e.set(room, ClientId(1), "☁ a", ValueRef::Number("5"), true),
        SetOutcome::Applied
    );
    assert_eq!(
        flushed(&mut e),
        vec![(2, "☁ a=5".into()), (3, "☁ a=5".into())]
    );
    assert!(flushed(&mut e).is_empty());
}

#[test]
fn several_sets_in_a_tick_coalesce_to_the_latest_values_in_one_frame() {
    let mut e = engine();
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    for v in ["1", "2", "3"] {
        e.set(room, ClientId(1), "☁ a", ValueRef::Text(v), true);
    }
    e.set(room, ClientId(1), "☁ b", ValueRef::Text("9"), true);
    assert_eq!(flushed(&mut e), vec![(2, "☁ a=3\n☁ b=9".into())]);
}

#[test]
fn a_writer_gets_other_writers_changes_but_not_its_own() {
    let mut e = engine();
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    join(&mut e, "1", 3);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("1"), true);
    e.set(room, ClientId(2), "☁ b", ValueRef::Text("2"), true);
    assert_eq!(
        flushed(&mut e),
        vec![
            (1, "☁ b=2".into()),
            (2, "☁ a=1".into()),
            (3, "☁ a=1\n☁ b=2".into())
        ]
    );
}

#[test]
fn a_later_write_by_someone_else_is_sent_back_to_the_earlier_writer() {
    let mut e = engine();
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("1"), true);
    e.set(room, ClientId(2), "☁ a", ValueRef::Text("2"), true);
    assert_eq!(flushed(&mut e), vec![(1, "☁ a=2".into())]);
}

#[test]
fn a_blocked_member_catches_up_later_with_only_the_latest_values() {
    let mut e = engine();
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("1"), true);
    let mut offered = 0;
    e.flush(|_, _, _| {
        offered += 1;
        false
    });
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("2"), true);
    e.flush(|_, _, _| {
        offered += 1;
        false
    });
    assert_eq!(
        offered, 1,
        "no frame is built for a member that refused one"
    );
    assert!(
        !e.has_pending(),
        "a waiting member does not keep its room queued"
    );
    e.resume(room, ClientId(2));
    assert!(e.has_pending());
    assert_eq!(flushed(&mut e), vec![(2, "☁ a=2".into())]);
    assert!(!e.has_pending());
}

#[test]
fn joiners_share_one_rendering_of_the_room_and_catch_up_from_its_version() {
    let mut e = engine();
    let now = Instant::now();
    let room = join(&mut e, "1", 1);
    let large = "1".repeat(SHARE_STALE_BYTES);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text(&large), true);
    e.join("1", ClientId(2), F, None, now).expect("join");
    let first = e.snapshot_for(room, ClientId(2), F, now).expect("snapshot");
    e.set(room, ClientId(1), "☁ b", ValueRef::Text("2"), true);
    flushed(&mut e);
    e.join("1", ClientId(3), F, None, now).expect("join");
    let second = e.snapshot_for(room, ClientId(3), F, now).expect("snapshot");
    assert_eq!(
        first.as_str().as_ptr(),
        second.as_str().as_ptr(),
        "one rendering, shared"
    );
    assert_eq!(second.as_str(), format!("☁ a={large}"));
    // The joiner saw the rendering's version: the next flush brings what changed since.
    assert_eq!(flushed(&mut e), vec![(3, "☁ b=2".into())]);
    // A second later the rendering is dropped; the next joiner gets a fresh one.
    e.expire(now + SNAPSHOT_REUSE);
    e.join("1", ClientId(4), F, None, now).expect("join");
    let third = e
        .snapshot_for(room, ClientId(4), F, now + SNAPSHOT_REUSE)
        .expect("snapshot");
    assert_eq!(third.as_str(), format!("☁ a={large}\n☁ b=2"));
    assert!(flushed(&mut e).is_empty());
}

/// A room whose rendering is large enough to be shared after it changed, with members 1 to
/// `members`.
fn large_room(e: &mut Engine, members: u64) -> RoomKey {
    let room = join(e, "1", 1);
    for client in 2..=members {
        join(e, "1", client);
    }
    let large = "1".repeat(SHARE_STALE_BYTES);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text(&large), true);
    flushed(e);
    room
}

#[test]
fn a_full_state_reply_on_a_changed_large_room_shares_the_rendering_and_the_asker_catches_up() {
    let mut e = engine();
    let now = Instant::now();
    let room = large_room(&mut e, 3);
    let first = e.snapshot_for(room, ClientId(2), F, now).expect("render");
    e.set(room, ClientId(1), "☁ b", ValueRef::Text("2"), true);
    assert_eq!(
        flushed(&mut e),
        vec![(2, "☁ b=2".into()), (3, "☁ b=2".into())]
    );
    // Member 3 asks again (a `cloud.get`, a repeated `JOIN_ROOM`): the older rendering is shared.
    let second = e.snapshot_for(room, ClientId(3), F, now).expect("render");
    assert_eq!(first.as_str().as_ptr(), second.as_str().as_ptr());
    assert_eq!(e.stats.full_renders, 1);
    assert!(!second.as_str().contains("☁ b"));
    // It is marked as having seen that older version, and the room is dirty for it: the next
    // flush brings it what the rendering lacks, and only to it.
    assert!(e.has_pending());
    assert_eq!(flushed(&mut e), vec![(3, "☁ b=2".into())]);
    assert!(flushed(&mut e).is_empty());
}

#[test]
fn a_rendering_older_than_the_askers_own_write_is_followed_by_that_write() {
    let mut e = engine();
    let now = Instant::now();
    let room = large_room(&mut e, 3);
    e.snapshot_for(room, ClientId(2), F, now).expect("render");
    // Member 3 writes, then asks for the whole room before a flush: it is handed the shared
    // rendering, which shows the value from before its write.
    e.set(room, ClientId(3), "☁ c", ValueRef::Text("5"), true);
    let reply = e.snapshot_for(room, ClientId(3), F, now).expect("render");
    assert!(!reply.as_str().contains("☁ c"));
    // A writer is never sent its own values, except here: the reply took its write back.
    assert_eq!(
        flushed(&mut e),
        vec![
            (1, "☁ c=5".into()),
            (2, "☁ c=5".into()),
            (3, "☁ c=5".into())
        ]
    );
    // Once sent, its later writes are left out again.
    e.set(room, ClientId(3), "☁ c", ValueRef::Text("6"), true);
    assert_eq!(
        flushed(&mut e),
        vec![(1, "☁ c=6".into()), (2, "☁ c=6".into())]
    );
}

#[test]
fn a_member_refusing_frames_still_catches_up_from_an_older_rendering_once_it_drains() {
    let mut e = engine();
    let now = Instant::now();
    let room = large_room(&mut e, 2);
    e.snapshot_for(room, ClientId(1), F, now).expect("render");
    e.set(room, ClientId(1), "☁ b", ValueRef::Text("1"), true);
    // Member 2's socket is full: it waits.
    e.flush(|_, _, _| false);
    e.set(room, ClientId(1), "☁ b", ValueRef::Text("2"), true);
    let reply = e.snapshot_for(room, ClientId(2), F, now).expect("render");
    assert!(!reply.as_str().contains("☁ b"));
    assert!(flushed(&mut e).is_empty(), "it waits for its socket");
    e.resume(room, ClientId(2));
    assert_eq!(flushed(&mut e), vec![(2, "☁ b=2".into())]);
}

#[test]
fn a_full_state_reply_showing_the_current_version_leaves_nothing_for_the_next_flush() {
    let mut e = engine();
    let now = Instant::now();
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("1"), true);
    let reply = e.snapshot_for(room, ClientId(2), F, now).expect("render");
    assert_eq!(reply.as_str(), "☁ a=1");
    assert!(
        flushed(&mut e).is_empty(),
        "the reply already showed the change"
    );
}

#[test]
fn a_small_room_renders_exactly_on_every_change() {
    let mut e = engine();
    let now = Instant::now();
    let room = join(&mut e, "1", 1);
    for i in 0..20 {
        let value = i.to_string();
        e.set(room, ClientId(1), "☁ a", ValueRef::Number(&value), true);
        let reply = e.snapshot_for(room, ClientId(1), F, now).expect("render");
        assert_eq!(reply.as_str(), format!("☁ a={i}"));
        // Asking again without a change shares the rendering.
        e.snapshot_for(room, ClientId(1), F, now).expect("render");
    }
    assert_eq!(e.stats.full_renders, 20);
}

#[test]
fn a_changing_large_room_renders_at_most_once_per_reuse_window_and_format() {
    for pace in [Duration::ZERO, PACE, Duration::from_secs(3)] {
        let mut e = engine();
        e.set_pace(pace, 1, Instant::now());
        let window = e.reuse_window();
        assert_eq!(window, SNAPSHOT_REUSE.max(pace));
        let t0 = Instant::now();
        let room = large_room(&mut e, 2);
        let step = Duration::from_millis(10);
        let steps = 1000u32;
        for i in 0..steps {
            let now = t0 + step * i;
            let value = i.to_string();
            e.set(room, ClientId(1), "☁ b", ValueRef::Number(&value), true);
            e.snapshot_for(room, ClientId(1), F, now).expect("render");
            e.snapshot_for(room, ClientId(2), Format(1), now)
                .expect("render");
            e.flush_due(now, |_, _, _| true);
            if i % 100 == 0 {
                e.expire(now);
            }
        }
        let windows = (step * steps).as_nanos().div_ceil(window.as_nanos()) as u64;
        assert!(
            e.stats.full_renders <= 2 * windows,
            "pace {pace:?}: {} renders in {windows} windows of {window:?} for 2000 requests",
            e.stats.full_renders
        );
        assert!(e.stats.full_renders >= 2 * (windows - 1));
    }
}

#[test]
fn renderings_only_blocked_connections_hold_count_against_the_state_budget() {
    let mut e = engine();
    let now = Instant::now();
    let room = large_room(&mut e, 2);
    let render = e.snapshot_for(room, ClientId(2), F, now).expect("render");
    // A connection that does not read keeps the unsent rest: a slice of the rendering.
    let unsent = bytes::Bytes::from(render.clone()).slice(100..);
    drop(render);
    let census = e.render_census();
    let held = census.find(&unsent).expect("found");
    assert!(!census.is_retired(held), "the room's cache still shares it");
    e.expire(now + SNAPSHOT_REUSE);
    let mut census = e.render_census();
    let held = census.find(&unsent).expect("found");
    assert_eq!(census.find(b"elsewhere"), None);
    assert_eq!(census.held_bytes(), 0, "nobody was found holding it yet");
    census.hold(held);
    assert!(census.is_retired(held));
    let bytes = census.held_bytes();
    assert_eq!(bytes, census.len(held));
    assert!(bytes > SHARE_STALE_BYTES);
    e.note_held_renders(bytes);
    assert_eq!(e.held_render_bytes(), bytes);
    // With the budget just above the room's state, the held bytes leave no space.
    e.limits.max_state_bytes = e.state_bytes() + bytes / 2;
    assert_eq!(
        e.set(room, ClientId(1), "☁ new", ValueRef::Number("1"), true),
        SetOutcome::Rejected(Rejection::TooManyVariables)
    );
    e.note_held_renders(0);
    assert_eq!(
        e.set(room, ClientId(1), "☁ new", ValueRef::Number("1"), true),
        SetOutcome::Applied
    );
    // Once the connection lets go, the next census forgets (and so frees) the rendering.
    assert_eq!(e.renders.tracked(), 1);
    drop(unsent);
    let census = e.render_census();
    assert_eq!(census.held_bytes(), 0);
    assert_eq!(e.renders.tracked(), 0);
}

#[test]
fn small_renderings_are_not_tracked() {
    let mut e = engine();
    let now = Instant::now();
    let room = join(&mut e, "1", 1);
    e.set(room, ClientId(1), "☁ a", ValueRef::Number("1"), true);
    let _reply = e.snapshot_for(room, ClientId(1), F, now).expect("render");
    assert_eq!(e.renders.tracked(), 0);
}

#[test]
fn over_the_state_budget_empty_rooms_go_first_then_new_state_is_refused() {
    let mut e = Engine::new(
        Limits {
            max_state_bytes: 4200,
            ..Limits::default()
        },
        encode,
    );
    let now = Instant::now();
    let big = "1".repeat(1000);
    let old = e.join("old", ClientId(1), F, None, now).expect("join");
    e.set(old, ClientId(1), "☁ a", ValueRef::Number(&big), true);
    e.leave(old, ClientId(1), now);
    let newer = e.join("newer", ClientId(2), F, None, now).expect("join");
    e.set(newer, ClientId(2), "☁ a", ValueRef::Number(&big), true);
    e.leave(newer, ClientId(2), now + Duration::from_secs(1));
    let live = e.join("live", ClientId(3), F, None, now).expect("join");
    e.set(live, ClientId(3), "☁ a", ValueRef::Number(&big), true);
    assert_eq!(e.room_count(), 3);
    // The fourth value does not fit: the longest-empty room makes space.
    assert_eq!(
        e.set(live, ClientId(3), "☁ b", ValueRef::Number(&big), true),
        SetOutcome::Applied
    );
    assert!(
        e.value("old", "☁ a").is_none(),
        "the oldest empty room went"
    );
    assert!(e.value("newer", "☁ a").is_some());
    assert_eq!(
        e.set(live, ClientId(3), "☁ c", ValueRef::Number(&big), true),
        SetOutcome::Applied
    );
    assert!(e.value("newer", "☁ a").is_none());
    // Nothing empty is left: new variables and rooms are refused, existing ones still change.
    assert_eq!(
        e.set(live, ClientId(3), "☁ d", ValueRef::Number(&big), true),
        SetOutcome::Rejected(Rejection::TooManyVariables)
    );
    assert_eq!(
        e.set(live, ClientId(3), "☁ a", ValueRef::Number("2"), true),
        SetOutcome::Applied
    );
    assert!(e.state_bytes() <= 4200);
    assert_eq!(e.stats.rooms_evicted, 2);
    assert_eq!(e.stats.refused_for_memory, 1);
    // The count stays exact: with every room gone, nothing is left.
    e.leave(live, ClientId(3), now);
    e.expire(now + Duration::from_secs(7200));
    assert_eq!(e.room_count(), 0);
    assert_eq!(e.state_bytes(), 0);
}

#[test]
fn over_the_state_budget_new_rooms_are_refused() {
    let mut e = Engine::new(
        Limits {
            max_state_bytes: 1,
            ..Limits::default()
        },
        encode,
    );
    assert_eq!(
        e.join("1", ClientId(1), F, None, Instant::now()).err(),
        Some(JoinError::TooManyRooms)
    );
    assert_eq!(e.stats.refused_for_memory, 1);
}

#[test]
fn joining_sends_every_variable_at_once_and_a_new_room_sends_nothing() {
    let mut e = engine();
    let room = e
        .join("1", ClientId(1), F, None, Instant::now())
        .expect("join");
    assert!(e.snapshot(room, F).is_none());
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("1"), true);
    e.set(room, ClientId(1), "☁ b", ValueRef::Number("2"), true);
    let room = e
        .join("1", ClientId(2), F, None, Instant::now())
        .expect("join");
    assert_eq!(
        e.snapshot(room, F).map(|f| f.to_string()),
        Some("☁ a=1\n☁ b=2".into())
    );
    // The newcomer already has everything: the flush sends it nothing.
    assert_eq!(flushed(&mut e), vec![]);
}

#[test]
fn rooms_are_isolated() {
    let mut e = engine();
    let one = join(&mut e, "1", 1);
    join(&mut e, "2", 2);
    e.set(one, ClientId(1), "☁ a", ValueRef::Text("1"), true);
    assert!(flushed(&mut e).is_empty());
    assert_eq!(e.value("2", "☁ a"), None);
}

#[test]
fn invalid_sets_are_rejected_without_changing_state() {
    let mut e = engine();
    let room = join(&mut e, "1", 1);
    assert_eq!(
        e.set(room, ClientId(1), "a", ValueRef::Text("1"), true),
        SetOutcome::Rejected(Rejection::InvalidName)
    );
    assert_eq!(
        e.set(room, ClientId(1), "☁ a", ValueRef::Text("x"), true),
        SetOutcome::Rejected(Rejection::InvalidValue)
    );
    assert_eq!(
        e.set(room, ClientId(1), "☁ a", ValueRef::Text("1"), false),
        SetOutcome::Unknown
    );
    assert!(e.variables("1").is_empty());
    assert_eq!(e.stats.sets_rejected, 3);
}

#[test]
fn variables_per_room_are_limited() {
    let mut e = Engine::new(
        Limits {
            max_variables_per_room: 2,
            ..Limits::default()
        },
        encode,
    );
    let room = join(&mut e, "1", 1);
    for name in ["☁ a", "☁ b"] {
        assert_eq!(
            e.set(room, ClientId(1), name, ValueRef::Text("1"), true),
            SetOutcome::Applied
        );
    }
    assert_eq!(
        e.set(room, ClientId(1), "☁ c", ValueRef::Text("1"), true),
        SetOutcome::Rejected(Rejection::TooManyVariables)
    );
    // Existing variables can still change.
    assert_eq!(
        e.set(room, ClientId(1), "☁ a", ValueRef::Text("2"), true),
        SetOutcome::Applied
    );
}

#[test]
fn full_rooms_and_too_many_rooms_are_refused() {
    let mut e = Engine::new(
        Limits {
            max_rooms: 1,
            max_clients_per_room: 1,
            ..Limits::default()
        },
        encode,
    );
    join(&mut e, "1", 1);
    let now = Instant::now();
    assert_eq!(
        e.join("1", ClientId(2), F, None, now).err(),
        Some(JoinError::RoomFull)
    );
    assert_eq!(
        e.join("2", ClientId(2), F, None, now).err(),
        Some(JoinError::TooManyRooms)
    );
}

#[test]
fn an_empty_room_is_evicted_to_make_space_for_a_new_one() {
    let mut e = Engine::new(
        Limits {
            max_rooms: 1,
            ..Limits::default()
        },
        encode,
    );
    let now = Instant::now();
    let room = join(&mut e, "1", 1);
    e.leave(room, ClientId(1), now);
    assert!(e.join("2", ClientId(2), F, None, now).is_ok());
    assert_eq!(e.room_count(), 1);
}

#[test]
fn empty_rooms_keep_variables_until_they_expire() {
    let mut e = engine();
    let start = Instant::now();
    let room = join(&mut e, "1", 1);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("7"), true);
    e.leave(room, ClientId(1), start);
    assert_eq!(e.expire(start + Duration::from_secs(3599)), 0);
    let again = e.join("1", ClientId(2), F, None, start).expect("join");
    assert_eq!(
        e.snapshot(again, F).map(|f| f.to_string()),
        Some("☁ a=7".into())
    );
    let room = RoomKey(room.0);
    e.leave(room, ClientId(2), start);
    assert_eq!(e.expire(start + Duration::from_secs(3600)), 1);
    assert_eq!(e.room_count(), 0);
}

#[test]
fn rename_keeps_the_value_and_tells_the_others() {
    let mut e = engine();
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("5"), true);
    flushed(&mut e);
    assert_eq!(e.rename(room, ClientId(1), "☁ a", "☁ b"), Ok(()));
    assert_eq!(e.value("1", "☁ b"), Some(ValueRef::Text("5")));
    assert_eq!(flushed(&mut e), vec![(2, "☁ b=5".into())]);
    assert_eq!(
        e.rename(room, ClientId(1), "☁ missing", "☁ c"),
        Err(EditError::UnknownVariable)
    );
    assert_eq!(
        e.rename(room, ClientId(1), "☁ b", "bad"),
        Err(EditError::InvalidName)
    );
    e.set(room, ClientId(1), "☁ c", ValueRef::Text("1"), true);
    assert_eq!(
        e.rename(room, ClientId(1), "☁ b", "☁ c"),
        Err(EditError::NameTaken)
    );
}

#[test]
fn delete_removes_the_variable() {
    let mut e = engine();
    let room = join(&mut e, "1", 1);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("5"), true);
    assert_eq!(e.delete(room, "☁ a"), Ok(()));
    assert_eq!(e.value("1", "☁ a"), None);
    assert_eq!(e.delete(room, "☁ a"), Err(EditError::UnknownVariable));
}

#[test]
fn declared_variables_seed_an_empty_room_and_must_match_afterwards() {
    let mut e = engine();
    let now = Instant::now();
    let declared = [("☁ a", ValueRef::Text("1")), ("☁ b", ValueRef::Text("2"))];
    let room = e
        .join("1", ClientId(1), F, Some(&declared), now)
        .expect("join");
    assert_eq!(
        e.snapshot(room, F).map(|f| f.to_string()),
        Some("☁ a=1\n☁ b=2".into())
    );
    let reordered = [("☁ b", ValueRef::Text("0")), ("☁ a", ValueRef::Text("0"))];
    let room = e
        .join("1", ClientId(2), F, Some(&reordered), now)
        .expect("join");
    // The room's values win over the newcomer's.
    assert_eq!(
        e.snapshot(room, F).map(|f| f.to_string()),
        Some("☁ a=1\n☁ b=2".into())
    );
    let fewer = [("☁ a", ValueRef::Text("0"))];
    assert_eq!(
        e.join("1", ClientId(3), F, Some(&fewer), now).err(),
        Some(JoinError::Incompatible)
    );
    let duplicated = [("☁ a", ValueRef::Text("0")), ("☁ a", ValueRef::Text("0"))];
    assert_eq!(
        e.join("1", ClientId(3), F, Some(&duplicated), now).err(),
        Some(JoinError::InvalidDeclaration)
    );
    let invalid = [("a", ValueRef::Text("0"))];
    assert_eq!(
        e.join("2", ClientId(3), F, Some(&invalid), now).err(),
        Some(JoinError::InvalidDeclaration)
    );
}

#[test]
fn members_with_the_same_view_share_one_frame() {
    let mut e = engine();
    let room = join(&mut e, "1", 0);
    for client in 1..100 {
        join(&mut e, "1", client);
    }
    e.set(room, ClientId(0), "☁ a", ValueRef::Text("1"), true);
    let mut pointers = Vec::new();
    e.flush(|_, _, frame| {
        pointers.push(frame.as_str().as_ptr());
        true
    });
    assert_eq!(pointers.len(), 99);
    pointers.dedup();
    assert_eq!(pointers.len(), 1, "every member got the same buffer");
}

fn persistent() -> Engine {
    let mut e = engine();
    e.set_backend(Backend::Store);
    e
}

/// Joins `client` to `room`, loading it (empty) first as the store would.
fn join_loaded(e: &mut Engine, room: &str, client: u64) -> RoomKey {
    let now = Instant::now();
    match e.join(room, ClientId(client), F, None, now) {
        Err(JoinError::Loading) => {
            assert_eq!(load_requests(e), vec![Box::<str>::from(room)]);
            assert_eq!(
                e.handle_loaded(room, read(0, &[]), now),
                vec![ClientId(client)]
            );
            e.join(room, ClientId(client), F, None, now).expect("join")
        }
        other => other.expect("join"),
    }
}

fn batch_text(batch: &Batch) -> Vec<String> {
    batch
        .rooms
        .iter()
        .flat_map(|r| {
            r.variables.iter().map(move |v| {
                format!(
                    "{}{}:{}={}",
                    if r.replace_all { "!" } else { "" },
                    r.room,
                    v.name,
                    v.value
                )
            })
        })
        .collect()
}

#[test]
fn a_batch_carries_only_the_latest_values_and_failures_are_owed_again() {
    let mut e = persistent();
    let room = join_loaded(&mut e, "1", 1);
    for v in ["1", "2", "3"] {
        e.set(room, ClientId(1), "☁ a", ValueRef::Text(v), true);
    }
    let batch = next_batch(&mut e);
    assert_eq!(batch_text(&batch), ["1:☁ a=3"]);
    assert!(!e.has_unsaved());
    e.set(room, ClientId(1), "☁ b", ValueRef::Text("9"), true);
    e.handle_saved(&batch, false);
    // The failed batch's room is owed again, with everything changed since it was durable.
    let retry = next_batch(&mut e);
    assert_eq!(batch_text(&retry), ["1:☁ a=3", "1:☁ b=9"]);
    e.handle_saved(&retry, true);
    assert!(!e.has_unsaved());
    assert!(next_batch(&mut e).is_empty());
}

#[test]
fn renames_and_deletes_rewrite_the_room() {
    let mut e = persistent();
    let room = join_loaded(&mut e, "1", 1);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("1"), true);
    e.set(room, ClientId(1), "☁ b", ValueRef::Text("2"), true);
    let first = next_batch(&mut e);
    e.handle_saved(&first, true);
    e.delete(room, "☁ a").expect("delete");
    assert_eq!(batch_text(&next_batch(&mut e)), ["!1:☁ b=2"]);
}

#[test]
fn an_empty_room_stays_in_memory_until_it_is_durable() {
    let mut e = persistent();
    let start = Instant::now();
    let room = join_loaded(&mut e, "1", 1);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("1"), true);
    e.leave(room, ClientId(1), start);
    let later = start + Duration::from_secs(7200);
    assert_eq!(e.expire(later), 0, "not saved yet");
    let batch = next_batch(&mut e);
    assert_eq!(e.expire(later), 0, "saving");
    e.handle_saved(&batch, true);
    assert_eq!(e.expire(later), 1);
}

#[test]
fn joins_wait_for_a_load_and_a_failed_load_is_refused_once() {
    let mut e = persistent();
    let now = Instant::now();
    assert_eq!(
        e.join("1", ClientId(1), F, None, now).err(),
        Some(JoinError::Loading)
    );
    assert_eq!(
        e.join("1", ClientId(2), F, None, now).err(),
        Some(JoinError::Loading)
    );
    assert_eq!(load_requests(&mut e).len(), 1, "asked once");
    assert!(load_requests(&mut e).is_empty());
    assert_eq!(e.handle_load_failed("1"), vec![ClientId(1), ClientId(2)]);
    assert_eq!(
        e.join("1", ClientId(1), F, None, now).err(),
        Some(JoinError::Unavailable)
    );
    assert_eq!(
        e.join("1", ClientId(2), F, None, now).err(),
        Some(JoinError::Unavailable),
        "every join that waited is refused"
    );
    assert_eq!(
        e.join("1", ClientId(2), F, None, now).err(),
        Some(JoinError::Loading),
        "the next join asks the store again"
    );
    let stored = [SavedVariable {
        user: Default::default(),
        changed_ms: 0,
        name: "☁ x".into(),
        value: "5".into(),
        is_number: true,
    }];
    assert_eq!(load_requests(&mut e).len(), 1);
    assert_eq!(
        e.handle_loaded("1", read(0, &stored), now),
        vec![ClientId(2)]
    );
    let room = e.join("1", ClientId(2), F, None, now).expect("join");
    assert_eq!(
        e.snapshot(room, F).map(|f| f.to_string()),
        Some("☁ x=5".into())
    );
    assert!(!e.has_unsaved(), "what was loaded is durable");
}

const PACE: Duration = Duration::from_millis(100);

/// An engine paced at `PACE` with rooms holding `burst` tokens, and its beat 0: beats fall at
/// `t0 + k × PACE`.
fn paced_engine(burst: u32) -> (Engine, Instant) {
    let mut e = engine();
    let t0 = Instant::now();
    e.set_pace(PACE, burst, t0);
    (e, t0)
}

fn flushed_at(engine: &mut Engine, now: Instant) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    engine.flush_due(now, |_, client, frame| {
        out.push((client.0, frame.to_string()));
        true
    });
    out.sort();
    out
}

fn set(e: &mut Engine, room: RoomKey, client: u64, name: &str, value: &str) {
    e.set(room, ClientId(client), name, ValueRef::Text(value), true);
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_change_in_a_quiet_room_flushes_at_once_and_nothing_waits() {
    let (mut e, t0) = paced_engine(1);
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    set(&mut e, room, 1, "☁ a", "1");
    assert_eq!(flushed_at(&mut e, t0), vec![(2, "☁ a=1".into())]);
    assert_eq!(
        e.poll_timeout(),
        None,
        "nothing pending, nothing to wake for"
    );
    assert!(!e.has_pending());
    // A beat later the room has a token again: the next change leaves at once too.
    set(&mut e, room, 1, "☁ a", "2");
    assert_eq!(flushed_at(&mut e, t0 + PACE), vec![(2, "☁ a=2".into())]);
    assert_eq!(e.poll_timeout(), None);
}

#[test]
fn a_room_spends_its_burst_at_once_then_waits_for_the_beat_with_the_latest_values() {
    let (mut e, t0) = paced_engine(3);
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    for i in 1..=3 {
        set(&mut e, room, 1, "☁ a", &i.to_string());
        let now = t0 + ms(10 + i);
        assert_eq!(flushed_at(&mut e, now), vec![(2, format!("☁ a={i}"))]);
        assert_eq!(e.poll_timeout(), None, "set {i} left at once");
    }
    for i in 4..=50 {
        set(&mut e, room, 1, "☁ a", &i.to_string());
        set(&mut e, room, 1, "☁ b", &(i * 2).to_string());
        assert!(flushed_at(&mut e, t0 + ms(10 + i)).is_empty(), "set {i}");
        assert_eq!(e.poll_timeout(), Some(t0 + PACE), "the next beat");
    }
    assert!(flushed_at(&mut e, t0 + PACE - Duration::from_nanos(1)).is_empty());
    assert_eq!(
        flushed_at(&mut e, t0 + PACE),
        vec![(2, "☁ a=50\n☁ b=100".into())]
    );
    assert!(!e.has_pending());
    assert_eq!(e.poll_timeout(), None);
}

#[test]
fn the_bucket_gains_one_token_a_beat_up_to_the_burst() {
    let (mut e, t0) = paced_engine(3);
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    // How many of `sets` changes, each in its own iteration at `at`, leave at once.
    let at_once = |e: &mut Engine, at: Instant, sets: u32| -> u32 {
        let mut sent = 0;
        for i in 0..sets {
            set(e, room, 1, "☁ a", &i.to_string());
            if !flushed_at(e, at).is_empty() {
                sent += 1;
            }
        }
        // Leave nothing waiting for the next round.
        flushed_at(e, at + PACE);
        sent
    };
    assert_eq!(at_once(&mut e, t0, 10), 3, "a new room has the whole burst");
    // The flush at the beat t0 + PACE spent that beat's token; two more beats give two.
    assert_eq!(at_once(&mut e, t0 + 3 * PACE + ms(1), 10), 2);
    // Quiet for ten beats: the bucket holds the burst, not ten.
    assert_eq!(at_once(&mut e, t0 + 14 * PACE + ms(1), 10), 3);
}

#[test]
fn a_room_out_of_tokens_flushes_at_the_next_beat_not_a_pace_after_its_last_flush() {
    let (mut e, t0) = paced_engine(1);
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    set(&mut e, room, 1, "☁ a", "1");
    assert_eq!(flushed_at(&mut e, t0 + ms(70)).len(), 1);
    set(&mut e, room, 1, "☁ a", "2");
    assert!(flushed_at(&mut e, t0 + ms(80)).is_empty());
    assert_eq!(
        e.poll_timeout(),
        Some(t0 + PACE),
        "the grid, not t0 + 170 ms"
    );
    assert_eq!(flushed_at(&mut e, t0 + PACE), vec![(2, "☁ a=2".into())]);
    // Woken 3 ms late, the room spent the beat's token; the next beat keeps the grid's phase.
    set(&mut e, room, 1, "☁ a", "3");
    let late = t0 + PACE + ms(3);
    assert!(flushed_at(&mut e, late).is_empty());
    assert_eq!(e.poll_timeout(), Some(t0 + 2 * PACE));
    set(&mut e, room, 1, "☁ a", "4");
    assert_eq!(
        flushed_at(&mut e, t0 + 2 * PACE + ms(3)),
        vec![(2, "☁ a=4".into())]
    );
}

#[test]
fn rooms_waiting_for_the_beat_flush_together_in_one_call() {
    let (mut e, t0) = paced_engine(1);
    let one = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    let two = join(&mut e, "2", 3);
    join(&mut e, "2", 4);
    // Each room spends its token at a moment of its own.
    set(&mut e, one, 1, "☁ a", "1");
    assert_eq!(flushed_at(&mut e, t0 + ms(10)), vec![(2, "☁ a=1".into())]);
    set(&mut e, two, 3, "☁ a", "1");
    assert_eq!(
        flushed_at(&mut e, t0 + ms(60)),
        vec![(4, "☁ a=1".into())],
        "room 2 was quiet"
    );
    set(&mut e, one, 1, "☁ a", "2");
    set(&mut e, two, 3, "☁ a", "2");
    assert!(flushed_at(&mut e, t0 + ms(70)).is_empty());
    assert_eq!(e.poll_timeout(), Some(t0 + PACE), "one wake-up for both");
    assert_eq!(
        flushed_at(&mut e, t0 + PACE),
        vec![(2, "☁ a=2".into()), (4, "☁ a=2".into())]
    );
    assert_eq!(e.poll_timeout(), None);
    assert!(!e.has_pending());
}

#[test]
fn a_blocked_member_waits_without_cost_until_its_connection_drains() {
    let (mut e, t0) = paced_engine(4);
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("1"), true);
    let mut offered = 0;
    e.flush_due(t0, |_, _, _| {
        offered += 1;
        false
    });
    assert_eq!(offered, 1);
    assert!(!e.has_pending(), "a waiting member keeps nothing pending");
    assert_eq!(e.poll_timeout(), None, "and sets no timer");
    // New changes are not built for it while it waits.
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("2"), true);
    for ms in 1..300 {
        e.flush_due(t0 + Duration::from_millis(ms), |_, _, _| {
            panic!("nothing is built for a waiting member")
        });
    }
    // Its connection drained: it gets the latest values.
    e.resume(room, ClientId(2));
    assert_eq!(flushed_at(&mut e, t0 + PACE * 5), vec![(2, "☁ a=2".into())]);
    assert!(!e.has_pending());
}

#[test]
fn a_resumed_member_is_sent_within_the_rooms_budget() {
    let (mut e, t0) = paced_engine(1);
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    join(&mut e, "1", 3);
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("1"), true);
    e.flush_due(t0, |_, client, _| client != ClientId(3));
    e.set(room, ClientId(1), "☁ a", ValueRef::Text("2"), true);
    e.resume(room, ClientId(3));
    // The room's one token went into the last flush: nobody gets a second frame yet.
    assert!(flushed_at(&mut e, t0 + PACE / 2).is_empty());
    assert_eq!(
        flushed_at(&mut e, t0 + PACE),
        vec![(2, "☁ a=2".into()), (3, "☁ a=2".into())]
    );
}

#[test]
fn without_a_pace_every_change_flushes_at_the_next_call() {
    let mut e = engine();
    let t0 = Instant::now();
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    for i in 0..5 {
        e.set(
            room,
            ClientId(1),
            "☁ a",
            ValueRef::Text(&i.to_string()),
            true,
        );
        assert_eq!(flushed_at(&mut e, t0), vec![(2, format!("☁ a={i}"))]);
        assert_eq!(e.poll_timeout(), None);
    }
}

#[test]
fn a_room_removed_while_waiting_leaves_no_wake_up_and_its_slot_starts_afresh() {
    let mut e = Engine::new(
        Limits {
            empty_room_ttl: Duration::ZERO,
            ..Limits::default()
        },
        encode,
    );
    let t0 = Instant::now();
    e.set_pace(PACE, 2, t0);
    let room = join(&mut e, "1", 1);
    join(&mut e, "1", 2);
    for value in ["1", "2", "3"] {
        set(&mut e, room, 1, "☁ a", value);
        flushed_at(&mut e, t0);
    }
    assert_eq!(e.poll_timeout(), Some(t0 + PACE), "room 1 waits");
    e.leave(room, ClientId(1), t0);
    e.leave(room, ClientId(2), t0);
    assert_eq!(e.expire(t0), 1);
    assert!(!e.has_pending());
    assert_eq!(e.poll_timeout(), None, "nothing waits any more");
    // Room 2 takes the slot with a full bucket of its own.
    let other = join(&mut e, "2", 3);
    assert_eq!(other, room, "the same slot");
    join(&mut e, "2", 4);
    for value in ["1", "2"] {
        set(&mut e, other, 3, "☁ b", value);
        assert_eq!(flushed_at(&mut e, t0), vec![(4, format!("☁ b={value}"))]);
    }
    set(&mut e, other, 3, "☁ b", "3");
    assert!(flushed_at(&mut e, t0).is_empty());
    assert_eq!(flushed_at(&mut e, t0 + PACE), vec![(4, "☁ b=3".into())]);
}
