//! The history book's rules: what is recorded, by whom and when, the cap and its drop count,
//! sequence numbers and `handle_saved`, the memory budget, and `--history 0`.

use super::history::merge_newest;
use super::*;

fn encode(_format: Format, _room: &str, line: SetLine<'_>, out: &mut String) {
    out.push_str(line.name);
    out.push('=');
    out.push_str(line.value.text());
}

const F: Format = Format(0);

fn engine_with(history: usize, backend: Backend) -> (Engine, Instant) {
    let limits = Limits {
        enable_rename: true,
        enable_delete: true,
        ..Limits::default()
    };
    let mut e = Engine::new(limits, encode);
    e.set_backend(backend);
    e.set_history(history);
    let t0 = Instant::now();
    e.set_clock(t0, 1_700_000_000_000);
    (e, t0)
}

/// Joins `client` as `shown` (loading the room empty first when there is a backend).
fn join(e: &mut Engine, room: &str, client: u64, shown: &str, now: Instant) -> RoomKey {
    let lower = shown.to_ascii_lowercase();
    let id = ClientId(client);
    match e.join_shown(room, id, &lower, shown, F, None, now) {
        Err(JoinError::Loading) => {
            let want = Want::default();
            let work = e.poll_work(want);
            assert_eq!(work.loads, vec![Box::<str>::from(room)]);
            let read = Read {
                version: 0,
                variables: &[],
                history_seq: 41,
            };
            e.handle_loaded(room, read, now);
            e.join_shown(room, id, &lower, shown, F, None, now)
                .expect("join")
        }
        other => other.expect("join"),
    }
}

fn summary(entries: &[HistoryEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {} @{}",
                e.seq,
                e.user,
                e.verb.as_str(),
                e.name,
                e.value,
                e.timestamp_ms
            )
        })
        .collect()
}

fn batch(e: &mut Engine) -> Batch {
    e.poll_work(Want {
        batch: true,
        ..Want::default()
    })
    .batch
}

#[test]
fn every_verb_is_recorded_with_its_user_and_time() {
    let (mut e, t0) = engine_with(10, Backend::Memory);
    let room = join(&mut e, "r", 1, "Griffpatch", t0);
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let a = "☁ a";
    e.set_at(room, ClientId(1), a, ValueRef::Number("1"), true, at(5));
    e.set_at(room, ClientId(1), a, ValueRef::Number("2"), true, at(6));
    e.rename_at(room, ClientId(1), a, "☁ b", at(7))
        .expect("rename");
    e.delete_at(room, ClientId(1), "☁ b", at(8))
        .expect("delete");
    // Refused changes are not recorded.
    e.set_at(room, ClientId(1), "bad", ValueRef::Number("1"), true, at(9));
    let base = 1_700_000_000_000u64;
    assert_eq!(
        summary(&e.history_in_memory(room)),
        vec![
            format!("4 Griffpatch del_var ☁ b  @{}", base + 8),
            format!("3 Griffpatch rename_var ☁ a ☁ b @{}", base + 7),
            format!("2 Griffpatch set_var ☁ a 2 @{}", base + 6),
            format!("1 Griffpatch create_var ☁ a 1 @{}", base + 5),
        ]
    );
}

#[test]
fn each_set_is_recorded_even_when_they_collapse_into_one_frame() {
    let (mut e, t0) = engine_with(10, Backend::Memory);
    let room = join(&mut e, "r", 1, "a", t0);
    join(&mut e, "r", 2, "b", t0);
    for v in ["1", "2", "3"] {
        e.set_at(room, ClientId(1), "☁ x", ValueRef::Number(v), true, t0);
    }
    let mut frames = 0;
    e.flush(|_, _, _| {
        frames += 1;
        true
    });
    assert_eq!(frames, 1, "the three sets went out as one frame");
    assert_eq!(e.history_len(room), 3);
}

#[test]
fn variables_keep_their_last_writer_and_time() {
    let (mut e, t0) = engine_with(0, Backend::Memory);
    let room = join(&mut e, "r", 1, "Alice", t0);
    join(&mut e, "r", 2, "Bob", t0);
    e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("1"), true, t0);
    let later = t0 + Duration::from_millis(250);
    e.set_at(room, ClientId(2), "☁ x", ValueRef::Number("2"), true, later);
    let saved = e.saved_variables(room);
    assert_eq!(saved.len(), 1);
    assert_eq!(&*saved[0].user, "Bob");
    assert_eq!(saved[0].changed_ms, 1_700_000_000_250);
}

#[test]
fn memory_mode_keeps_the_latest_n_without_counting_drops() {
    let (mut e, t0) = engine_with(3, Backend::Memory);
    let room = join(&mut e, "r", 1, "u", t0);
    for v in 1..=5 {
        let v = v.to_string();
        e.set_at(room, ClientId(1), "☁ x", ValueRef::Number(&v), true, t0);
    }
    let values: Vec<String> = e
        .history_in_memory(room)
        .into_iter()
        .map(|e| e.value)
        .collect();
    assert_eq!(values, ["5", "4", "3"]);
    assert_eq!(e.history_dropped(), 0, "memory mode's cap is its history");
}

#[test]
fn with_a_backend_unsaved_entries_are_capped_and_drops_counted() {
    let (mut e, t0) = engine_with(3, Backend::Store);
    let room = join(&mut e, "r", 1, "u", t0);
    for v in 1..=5 {
        let v = v.to_string();
        e.set_at(room, ClientId(1), "☁ x", ValueRef::Number(&v), true, t0);
    }
    assert_eq!(e.history_len(room), 3);
    assert_eq!(e.history_dropped(), 2);
    // Sequence numbers continue from what the store had (41).
    let seqs: Vec<u64> = e.history_in_memory(room).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [46, 45, 44]);
}

#[test]
fn a_written_batch_drops_its_entries_and_a_failed_one_keeps_them() {
    let (mut e, t0) = engine_with(10, Backend::Store);
    let room = join(&mut e, "r", 1, "u", t0);
    e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("1"), true, t0);
    e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("2"), true, t0);
    let failed = batch(&mut e);
    assert_eq!(failed.rooms.len(), 1);
    assert_eq!(failed.rooms[0].history.len(), 2);
    assert_eq!(failed.rooms[0].history_seq, 43);
    e.handle_saved(&failed, false);
    assert_eq!(e.history_len(room), 2, "a failed batch keeps its entries");
    // A set while the next batch is out stays after that batch is written.
    let out = batch(&mut e);
    assert_eq!(out.rooms[0].history.len(), 2, "the next batch carries them");
    e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("3"), true, t0);
    let bytes_before = e.state_bytes();
    e.handle_saved(&out, true);
    assert!(
        e.state_bytes() < bytes_before,
        "stored entries free their budget"
    );
    let left = e.history_in_memory(room);
    assert_eq!(summary(&left).len(), 1);
    assert_eq!(left[0].value, "3");
    let next = batch(&mut e);
    assert_eq!(next.rooms[0].history.len(), 1);
    assert_eq!(next.rooms[0].history_seq, 44);
}

#[test]
fn entries_count_against_the_state_budget() {
    let (mut e, t0) = engine_with(1000, Backend::Memory);
    let room = join(&mut e, "r", 1, "u", t0);
    e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("1"), true, t0);
    let one_set = e.state_bytes();
    for _ in 0..10 {
        e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("1"), true, t0);
    }
    let entry = std::mem::size_of::<HistoryEntry>() + "☁ x".len() + 1;
    assert_eq!(e.state_bytes(), one_set + 10 * entry);

    // At the budget the room's oldest entries give way to newer ones (counted), values
    // still change.
    let (mut e, t0) = engine_with(1000, Backend::Memory);
    let room = join(&mut e, "r", 1, "u", t0);
    e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("1"), true, t0);
    e.limits.max_state_bytes = e.state_bytes() + 2 * entry;
    for v in ["2", "3", "4", "5"] {
        let outcome = e.set_at(room, ClientId(1), "☁ x", ValueRef::Number(v), true, t0);
        assert_eq!(outcome, SetOutcome::Applied);
    }
    let values: Vec<String> = e
        .history_in_memory(room)
        .into_iter()
        .map(|e| e.value)
        .collect();
    assert_eq!(values, ["5", "4", "3"]);
    assert_eq!(e.history_dropped(), 2);
    assert!(e.state_bytes() <= e.limits.max_state_bytes);
    assert_eq!(e.value("r", "☁ x"), Some(ValueRef::Number("5")));
    // A new variable takes the space of the room's history before it is refused.
    let big = "1".repeat(200);
    e.limits.max_state_bytes = e.state_bytes() + 150;
    let outcome = e.set_at(room, ClientId(1), "☁ y", ValueRef::Number(&big), true, t0);
    assert_eq!(outcome, SetOutcome::Applied);
    assert!(e.state_bytes() <= e.limits.max_state_bytes);
    assert!(e.history_len(room) < 3);
}

#[test]
fn at_the_cap_a_new_entry_still_fits_the_state_budget() {
    let (mut e, t0) = engine_with(2, Backend::Store);
    let room = join(&mut e, "r", 1, "u", t0);
    e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("1"), true, t0);
    e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("1"), true, t0);
    assert_eq!(e.history_len(room), 2, "at the cap");
    // Room for the value's growth, not for an entry of the same size as well.
    e.limits.max_state_bytes = e.state_bytes() + 6000;
    let big = "2".repeat(5000);
    let outcome = e.set_at(room, ClientId(1), "☁ x", ValueRef::Number(&big), true, t0);
    assert_eq!(outcome, SetOutcome::Applied);
    assert!(
        e.state_bytes() <= e.limits.max_state_bytes,
        "{} > {}",
        e.state_bytes(),
        e.limits.max_state_bytes
    );
    assert_eq!(
        e.history_dropped(),
        2,
        "the oldest at the cap, and the big one"
    );
}

#[test]
fn entries_count_the_capacity_of_their_buffers() {
    // The same sets with and without history: the difference is what the entries hold.
    let sets = |cap: usize| {
        let (mut e, t0) = engine_with(cap, Backend::Memory);
        let room = join(&mut e, "r", 1, "u", t0);
        let big = "3".repeat(10_000);
        for value in [&*big, "1", "1"] {
            e.set_at(room, ClientId(1), "☁ x", ValueRef::Number(value), true, t0);
        }
        (e, room)
    };
    let (without, _) = sets(0);
    let (with, room) = sets(1);
    let held: usize = with
        .history_newest(room)
        .map(|h| std::mem::size_of::<HistoryEntry>() + h.name.capacity() + h.value.capacity())
        .sum();
    assert_eq!(with.history_len(room), 1);
    assert_eq!(with.state_bytes(), without.state_bytes() + held);
    assert!(held < 1000, "the 10 kB buffer is not kept: {held}");
}

#[test]
fn entries_dropped_while_their_batch_is_out_count_only_if_it_fails() {
    for written in [true, false] {
        let (mut e, t0) = engine_with(2, Backend::Store);
        let room = join(&mut e, "r", 1, "u", t0);
        e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("1"), true, t0);
        let out = batch(&mut e);
        assert_eq!(out.rooms[0].history.len(), 1);
        for v in ["2", "3", "4"] {
            e.set_at(room, ClientId(1), "☁ x", ValueRef::Number(v), true, t0);
        }
        // The cap dropped the entry out (being written) and "2" (lost).
        assert_eq!(e.history_dropped(), 1);
        e.handle_saved(&out, written);
        let expected = if written { 1 } else { 2 };
        assert_eq!(e.history_dropped(), expected, "written: {written}");
    }
}

#[test]
fn a_new_variable_the_budget_refuses_leaves_the_history_alone() {
    let (mut e, t0) = engine_with(10, Backend::Memory);
    let room = join(&mut e, "r", 1, "u", t0);
    for v in ["1", "2", "3"] {
        e.set_at(room, ClientId(1), "☁ x", ValueRef::Number(v), true, t0);
    }
    e.limits.max_state_bytes = e.state_bytes() + 10;
    let big = "1".repeat(5000);
    let outcome = e.set_at(room, ClientId(1), "☁ y", ValueRef::Number(&big), true, t0);
    assert_eq!(outcome, SetOutcome::Rejected(Rejection::TooManyVariables));
    assert_eq!(
        e.history_len(room),
        3,
        "kept: giving it up would not have made room"
    );
    assert_eq!(e.history_dropped(), 0);
}

#[test]
fn the_clock_read_again_moves_timestamps_forward_never_back() {
    let (mut e, t0) = engine_with(10, Backend::Memory);
    let room = join(&mut e, "r", 1, "u", t0);
    let stamp = |e: &mut Engine, at: Instant, v: &str| {
        e.set_at(room, ClientId(1), "☁ x", ValueRef::Number(v), true, at);
        e.history_newest(room).next().map(|h| h.timestamp_ms)
    };
    assert_eq!(stamp(&mut e, t0, "1"), Some(1_700_000_000_000));
    // NTP set the clock a day later, 1 s after start.
    let t1 = t0 + Duration::from_secs(1);
    e.set_clock(t1, 1_700_086_400_000);
    assert_eq!(stamp(&mut e, t1, "2"), Some(1_700_086_400_000));
    // Stepped back by a minute: held at the latest until it catches up.
    let t2 = t1 + Duration::from_secs(1);
    e.set_clock(t2, 1_700_086_341_000);
    assert_eq!(stamp(&mut e, t2, "3"), Some(1_700_086_400_000));
    assert_eq!(
        stamp(&mut e, t2 + Duration::from_secs(60), "4"),
        Some(1_700_086_401_000)
    );
}

#[test]
fn history_zero_records_nothing() {
    let (mut e, t0) = engine_with(0, Backend::Store);
    let room = join(&mut e, "r", 1, "u", t0);
    let before = e.state_bytes();
    e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("1"), true, t0);
    e.set_at(room, ClientId(1), "☁ x", ValueRef::Number("2"), true, t0);
    e.rename_at(room, ClientId(1), "☁ x", "☁ y", t0)
        .expect("rename");
    e.delete_at(room, ClientId(1), "☁ y", t0).expect("delete");
    assert_eq!(e.history_len(room), 0);
    assert_eq!(e.history_dropped(), 0);
    let out = batch(&mut e);
    assert!(out
        .rooms
        .iter()
        .all(|r| r.history.is_empty() && r.history_seq == 0));
    assert_eq!(e.state_bytes(), before);
}

#[test]
fn a_legacy_declaration_seeding_a_room_is_recorded_as_creates() {
    let (mut e, t0) = engine_with(10, Backend::Memory);
    let declared = [("☁ a", ValueRef::Number("1"))];
    let room = e
        .join_shown("r", ClientId(1), "x", "X", F, Some(&declared), t0)
        .expect("join");
    assert_eq!(
        summary(&e.history_in_memory(room)),
        vec!["1 X create_var ☁ a 1 @1700000000000"]
    );
}

fn entry(seq: u64, ms: u64) -> HistoryEntry {
    HistoryEntry {
        user: "u".into(),
        verb: Verb::Set,
        name: "☁ x".into(),
        value: seq.to_string(),
        timestamp_ms: ms,
        seq,
    }
}

#[test]
fn merging_unsaved_and_stored_pages_without_gap_or_duplicate() {
    // Stored 1..=5, unsaved 6..=8 (newest first both).
    let stored: Vec<HistoryEntry> = (1..=5).rev().map(|s| entry(s, 100 + s)).collect();
    let unsaved: Vec<HistoryEntry> = (6..=8).rev().map(|s| entry(s, 100 + s)).collect();
    let seqs = |v: Vec<&HistoryEntry>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(merge_newest(&unsaved, &stored, 0, 3)), [8, 7, 6]);
    assert_eq!(seqs(merge_newest(&unsaved, &stored, 2, 3)), [6, 5, 4]);
    assert_eq!(seqs(merge_newest(&unsaved, &stored, 6, 5)), [2, 1]);
    assert_eq!(
        seqs(merge_newest(&unsaved, &stored, 9, 5)),
        Vec::<u64>::new()
    );
    // A save processed after the read: the entry is both stored and unsaved, kept once.
    let overlap: Vec<HistoryEntry> = (5..=8).rev().map(|s| entry(s, 100 + s)).collect();
    assert_eq!(
        seqs(merge_newest(&overlap, &stored, 0, 10)),
        [8, 7, 6, 5, 4, 3, 2, 1]
    );
}

#[test]
fn merging_orders_by_sequence_number_when_the_clock_stepped_back() {
    // The wall clock stepped back after entry 3: 4 and 5 carry older times than 3.
    let stored: Vec<HistoryEntry> = [(3, 300), (2, 200), (1, 100)]
        .into_iter()
        .map(|(s, ms)| entry(s, ms))
        .collect();
    let unsaved: Vec<HistoryEntry> = [(5, 160), (4, 150)]
        .into_iter()
        .map(|(s, ms)| entry(s, ms))
        .collect();
    let seqs = |v: Vec<&HistoryEntry>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(merge_newest(&unsaved, &stored, 0, 2)), [5, 4]);
    assert_eq!(seqs(merge_newest(&unsaved, &stored, 2, 2)), [3, 2]);
    assert_eq!(seqs(merge_newest(&unsaved, &stored, 0, 9)), [5, 4, 3, 2, 1]);
}
