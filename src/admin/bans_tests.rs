#![allow(clippy::unwrap_used)]
use super::*;

fn user_ban(id: u64, name: &str, until_ms: u64) -> Change {
    Change::Ban(Ban {
        id,
        who: Banned::User(name.to_owned()),
        until_ms,
        reason: String::new(),
        by: "op".to_owned(),
    })
}

fn address_ban(id: u64, address: &str, until_ms: u64) -> Change {
    Change::Ban(Ban {
        id,
        who: Banned::Address(Network::parse(address).unwrap()),
        until_ms,
        reason: "r".to_owned(),
        by: "op".to_owned(),
    })
}

fn block(project: &str, until_ms: Option<u64>) -> Change {
    Change::Block(Block {
        project: project.to_owned(),
        until_ms,
        by: "op".to_owned(),
    })
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn user_names_are_banned_in_any_case_until_lifted() {
    let mut book = Bans::default();
    assert!(!book.refuses_user("Bob"));
    book.apply(user_ban(1, "Bob", 10)).unwrap();
    book.apply(user_ban(2, "bob", 10)).unwrap();
    assert!(book.refuses_user("bob") && book.refuses_user("BOB"));
    assert!(!book.refuses_user("bobby"));
    assert_eq!(book.lift(1).map(|b| b.id), Some(1));
    assert!(book.refuses_user("bOb"), "the other ban still holds");
    book.apply(Change::Lift(2)).unwrap();
    assert!(!book.refuses_user("bob"));
    assert_eq!(book.lift(2), None);
}

#[test]
fn addresses_and_networks_are_banned() {
    let mut book = Bans::default();
    book.apply(address_ban(1, "192.0.2.7", 10)).unwrap();
    book.apply(address_ban(2, "10.0.0.0/8", 10)).unwrap();
    book.apply(address_ban(3, "2001:db8::/32", 10)).unwrap();
    assert!(book.refuses_address(ip("192.0.2.7")));
    assert!(book.refuses_address(ip("::ffff:192.0.2.7")), "IPv4-mapped");
    assert!(!book.refuses_address(ip("192.0.2.8")));
    assert!(book.refuses_address(ip("10.200.1.1")));
    assert!(book.refuses_address(ip("::ffff:10.0.0.1")));
    assert!(!book.refuses_address(ip("11.0.0.1")));
    assert!(book.refuses_address(ip("2001:db8:1::5")));
    assert!(!book.refuses_address(ip("2001:db9::5")));
    book.lift(2);
    assert!(!book.refuses_address(ip("10.200.1.1")));
    book.lift(1);
    assert!(!book.refuses_address(ip("192.0.2.7")));
}

#[test]
fn expired_entries_go_at_housekeeping() {
    let mut book = Bans::default();
    book.apply(user_ban(1, "bob", 100)).unwrap();
    book.apply(address_ban(2, "10.0.0.0/8", 200)).unwrap();
    book.apply(block("p1", Some(100))).unwrap();
    book.apply(block("p2", None)).unwrap();
    assert_eq!(book.expire(99), 0);
    assert_eq!(book.expire(100), 2, "the user ban and p1's block");
    assert!(!book.refuses_user("bob") && !book.blocks_project("p1"));
    assert!(book.refuses_address(ip("10.1.1.1")) && book.blocks_project("p2"));
    assert_eq!(book.expire(u64::MAX), 1, "blocks without a time stay");
    assert!(book.blocks_project("p2") && !book.refuses_address(ip("10.1.1.1")));
}

#[test]
fn the_book_is_bounded_but_replacing_is_always_taken() {
    let mut book = Bans::default();
    for id in 0..MAX_BANS as u64 {
        book.apply(user_ban(id, &format!("u{id}"), 10)).unwrap();
    }
    assert_eq!(book.apply(user_ban(u64::MAX, "one-more", 10)), Err(Full));
    assert!(!book.refuses_user("one-more"));
    book.apply(user_ban(5, "renamed", 10)).unwrap();
    assert!(book.refuses_user("renamed") && !book.refuses_user("u5"));
    assert_eq!(book.bans().count(), MAX_BANS);
    for n in 0..MAX_BLOCKS {
        book.apply(block(&n.to_string(), None)).unwrap();
    }
    assert_eq!(book.apply(block("x", None)), Err(Full));
    book.apply(block("7", Some(5))).unwrap();
    assert_eq!(book.block("7").and_then(|b| b.until_ms), Some(5));
}

#[test]
fn ids_grow_from_the_clock_and_never_repeat() {
    let mut book = Bans::default();
    book.set_id_salt(1234);
    assert_eq!(book.next_id(5), 5234);
    book.apply(user_ban(9_000, "a", 10)).unwrap();
    assert_eq!(book.next_id(5), 9_001, "after the last id given");
    assert!(book.next_id(1_733_400_000_000) < 1 << 53);
}

#[test]
fn replacing_the_book_keeps_only_what_the_backend_holds() {
    let mut book = Bans::default();
    book.apply(user_ban(1, "old", 10)).unwrap();
    let Change::Ban(ban) = user_ban(2, "new", 10) else {
        unreachable!()
    };
    let Change::Block(blocked) = block("p", None) else {
        unreachable!()
    };
    assert_eq!(book.replace_all(vec![ban], vec![blocked]), 0);
    assert!(!book.refuses_user("old") && book.refuses_user("NEW"));
    assert!(book.blocks_project("p"));
}

#[test]
fn json_round_trip() {
    let Change::Ban(ban) = address_ban(3, "2001:db8::/32", 99) else {
        unreachable!()
    };
    let json = ban.to_json();
    assert_eq!(json["address"], "2001:db8::/32");
    assert!(json["user"].is_null());
    assert_eq!(Ban::from_json(&json), Some(ban));
    let Change::Block(blocked) = block("p", None) else {
        unreachable!()
    };
    assert!(blocked.to_json()["until"].is_null());
    assert_eq!(Block::from_json(&blocked.to_json()), Some(blocked));
}

#[test]
fn unsound_bans_and_blocks_from_a_backend_are_refused() {
    let ban = |id: u64, user: &str, reason: &str, by: &str| json!({"id": id, "user": user, "address": null, "until": 5, "reason": reason, "by": by});
    assert!(Ban::from_json(&ban(7, "bob", "r", "op")).is_some());
    assert!(Ban::from_json(&ban(MAX_BAN_ID, "bob", "r", "op")).is_some());
    // An id JavaScript cannot hold, or 0; a name the API would refuse; lengths beyond its.
    assert!(Ban::from_json(&ban(1 << 60, "bob", "r", "op")).is_none());
    assert!(Ban::from_json(&ban(MAX_BAN_ID + 1, "bob", "r", "op")).is_none());
    assert!(Ban::from_json(&ban(0, "bob", "r", "op")).is_none());
    assert!(Ban::from_json(&ban(7, "bob\n[x] admin", "r", "op")).is_none());
    assert!(Ban::from_json(&ban(7, "bob", &"r".repeat(201), "op")).is_none());
    assert!(Ban::from_json(&ban(7, "bob", "r", &"o".repeat(65))).is_none());
    let block = |project: &str, by: &str| json!({"project": project, "until": null, "by": by});
    assert!(Block::from_json(&block("p", "op")).is_some());
    assert!(Block::from_json(&block("", "op")).is_none());
    assert!(Block::from_json(&block(&"p".repeat(1000), "op")).is_none());
    assert!(Block::from_json(&block("p", &"o".repeat(65))).is_none());
}

#[test]
fn an_id_beyond_the_bound_does_not_push_new_ids_past_it() {
    let mut bans = Bans::default();
    bans.apply(user_ban(1 << 60, "bob", u64::MAX)).unwrap();
    assert!(bans.next_id(1_700_000_000_000) <= MAX_BAN_ID);
}
