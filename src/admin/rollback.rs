//! Rolling a room back to time `T`: from its variables now and its history, newest first,
//! the changes that make it as it was at `T`. Pure: the loop gathers the entries (memory and
//! the backend) and applies the result as one operator's change.
//!
//! The entries after `T` are undone newest first: a create removes the variable, a rename
//! gives it its old name back, a set or a delete leaves its value at `T` to be found in the
//! newest entry at or before `T` for that name. History must reach back to `T` (hold an entry
//! at or before it), otherwise some change after `T` may be missing; and a variable whose value
//! at `T` no entry tells (set before the history begins) makes the rollback impossible too.

use std::collections::BTreeMap;

use crate::engine::{HistoryEntry, Verb};

/// One change of a rollback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Set `name` to this value's text (as history recorded it).
    Set {
        name: String,
        value: String,
    },
    Delete {
        name: String,
    },
}

/// Why a room cannot be rolled back to the time asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackError {
    /// No entry is as old as `T`: history does not reach back that far. Carries the oldest
    /// entry's time, if any.
    NotReached { oldest_ms: Option<u64> },
    /// The value of this variable at `T` is older than the history.
    Unknown { name: String },
}

impl RollbackError {
    /// The text of the 409 answer.
    pub fn describe(&self) -> String {
        match self {
            RollbackError::NotReached {
                oldest_ms: Some(ms),
            } => {
                format!("history does not reach back to that time: its oldest entry is at {ms}")
            }
            RollbackError::NotReached { oldest_ms: None } => {
                "history does not reach back to that time: the room has none".to_owned()
            }
            RollbackError::Unknown { name } => {
                format!("the value of {name:?} at that time is older than the history kept")
            }
        }
    }
}

/// What a variable was at `T`, as far as the entries undone so far tell.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Then {
    /// This value (it was not changed after `T`, or an entry told it).
    Value(String),
    /// It did not exist.
    Absent,
    /// It existed; its value is in an entry at or before `T`.
    Unknown,
}

/// The changes that bring `current` (name, value text) back to how it was at `to_ms`, given
/// the room's history `newest_first` (by sequence number). Only what differs is changed:
/// variables created after `T` are deleted, those changed are set back, those deleted after
/// `T` are made again.
pub fn rollback<'e>(
    current: &[(&str, &str)],
    newest_first: impl IntoIterator<Item = &'e HistoryEntry>,
    to_ms: u64,
) -> Result<Vec<Change>, RollbackError> {
    let mut then: BTreeMap<String, Then> = current
        .iter()
        .map(|(name, value)| ((*name).to_owned(), Then::Value((*value).to_owned())))
        .collect();
    let mut entries = newest_first.into_iter().peekable();
    let mut oldest_ms = None;
    // Undo every entry after `T`, newest first.
    while let Some(entry) = entries.next_if(|e| e.timestamp_ms > to_ms) {
        oldest_ms = Some(entry.timestamp_ms);
        match entry.verb {
            Verb::Create => {
                then.insert(entry.name.clone(), Then::Absent);
            }
            Verb::Set | Verb::Delete => {
                then.insert(entry.name.clone(), Then::Unknown);
            }
            Verb::Rename => {
                let moved = then.remove(&entry.value).unwrap_or(Then::Unknown);
                then.insert(entry.value.clone(), Then::Absent);
                then.insert(entry.name.clone(), moved);
            }
        }
    }
    if entries.peek().is_none() {
        return Err(RollbackError::NotReached { oldest_ms });
    }
    // The newest entry at or before `T` of each variable left unknown tells its value: each
    // is looked for under a name (its own, or the one it had before a rename at or before
    // `T`) and, once found, is the value of the name it had at `T`.
    let mut unknown: Vec<(String, String)> = then
        .iter()
        .filter(|(_, t)| **t == Then::Unknown)
        .map(|(name, _)| (name.clone(), name.clone()))
        .collect();
    for entry in entries {
        if unknown.is_empty() {
            break;
        }
        let found = match entry.verb {
            Verb::Set | Verb::Create => Then::Value(entry.value.clone()),
            // Deleted, or renamed away: absent under this name from then until `T`.
            Verb::Delete | Verb::Rename => Then::Absent,
        };
        if let Some(i) = unknown.iter().position(|(lookup, _)| *lookup == entry.name) {
            let (_, name) = unknown.swap_remove(i);
            then.insert(name, found);
        }
        if entry.verb == Verb::Rename {
            // Its value at the rename is that of the old name then: look for that.
            if let Some((lookup, _)) = unknown.iter_mut().find(|(l, _)| *l == entry.value) {
                lookup.clone_from(&entry.name);
            }
        }
    }
    if let Some((_, name)) = unknown.into_iter().next() {
        return Err(RollbackError::Unknown { name });
    }
    let mut changes = Vec::new();
    for (name, state) in then {
        let now = current.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        match (state, now) {
            (Then::Value(value), Some(now)) if value == now => {}
            (Then::Value(value), _) => changes.push(Change::Set { name, value }),
            (Then::Absent, Some(_)) => changes.push(Change::Delete { name }),
            (Then::Absent, None) | (Then::Unknown, _) => {}
        }
    }
    // Deletes first: a variable made again must find room under the variable limit.
    changes.sort_by_key(|c| matches!(c, Change::Set { .. }));
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Entries oldest first, as (ms, verb, name, value); returned newest first.
    fn history(entries: &[(u64, Verb, &str, &str)]) -> Vec<HistoryEntry> {
        let mut out: Vec<HistoryEntry> = entries
            .iter()
            .enumerate()
            .map(|(i, &(ms, verb, name, value))| HistoryEntry {
                user: Arc::from("alice"),
                verb,
                name: name.to_owned(),
                value: value.to_owned(),
                timestamp_ms: ms,
                seq: i as u64 + 1,
            })
            .collect();
        out.reverse();
        out
    }

    fn set(name: &str, value: &str) -> Change {
        Change::Set {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    fn delete(name: &str) -> Change {
        Change::Delete {
            name: name.to_owned(),
        }
    }

    #[test]
    fn values_go_back_to_the_newest_entry_at_or_before_the_time() {
        let entries = history(&[
            (10, Verb::Create, "☁ a", "1"),
            (20, Verb::Set, "☁ a", "2"),
            (30, Verb::Set, "☁ a", "3"),
            (40, Verb::Set, "☁ a", "4"),
            (50, Verb::Create, "☁ b", "9"),
        ]);
        let current = [("☁ a", "4"), ("☁ b", "9")];
        // Before three sets: back to 1, and the later variable goes.
        assert_eq!(
            rollback(&current, &entries, 15),
            Ok(vec![delete("☁ b"), set("☁ a", "1")])
        );
        assert_eq!(
            rollback(&current, &entries, 30),
            Ok(vec![delete("☁ b"), set("☁ a", "3")])
        );
        // At the newest entry's time: nothing to do.
        assert_eq!(rollback(&current, &entries, 50), Ok(vec![]));
        assert_eq!(rollback(&current, &entries, 99), Ok(vec![]));
    }

    #[test]
    fn history_must_reach_back_to_the_time() {
        let entries = history(&[(10, Verb::Create, "☁ a", "1"), (20, Verb::Set, "☁ a", "2")]);
        assert_eq!(
            rollback(&[("☁ a", "2")], &entries, 5),
            Err(RollbackError::NotReached {
                oldest_ms: Some(10)
            })
        );
        assert_eq!(
            rollback(&[("☁ a", "2")], &[], 5),
            Err(RollbackError::NotReached { oldest_ms: None })
        );
        // A value set before the history begins is not known.
        let entries = history(&[(10, Verb::Set, "☁ x", "1"), (20, Verb::Set, "☁ a", "2")]);
        assert_eq!(
            rollback(&[("☁ a", "2"), ("☁ x", "1")], &entries, 15),
            Err(RollbackError::Unknown {
                name: "☁ a".to_owned()
            })
        );
        // A variable untouched since is kept as it is.
        assert_eq!(
            rollback(&[("☁ a", "2"), ("☁ x", "1"), ("☁ y", "7")], &entries, 20),
            Ok(vec![])
        );
    }

    #[test]
    fn deletes_and_renames_are_undone() {
        let entries = history(&[
            (10, Verb::Create, "☁ a", "1"),
            (11, Verb::Create, "☁ old", "5"),
            (20, Verb::Delete, "☁ a", ""),
            (30, Verb::Rename, "☁ old", "☁ new"),
            (40, Verb::Set, "☁ new", "6"),
        ]);
        let current = [("☁ new", "6")];
        assert_eq!(
            rollback(&current, &entries, 15),
            Ok(vec![delete("☁ new"), set("☁ a", "1"), set("☁ old", "5")])
        );
        // A rename at or before the time: the value is followed to the old name.
        let entries = history(&[
            (10, Verb::Create, "☁ old", "5"),
            (20, Verb::Rename, "☁ old", "☁ new"),
            (30, Verb::Set, "☁ new", "6"),
        ]);
        assert_eq!(
            rollback(&[("☁ new", "6")], &entries, 25),
            Ok(vec![set("☁ new", "5")])
        );
        // A name renamed away before the time was absent then.
        let entries = history(&[
            (10, Verb::Create, "☁ old", "5"),
            (20, Verb::Rename, "☁ old", "☁ new"),
            (30, Verb::Create, "☁ old", "1"),
        ]);
        assert_eq!(
            rollback(&[("☁ new", "5"), ("☁ old", "1")], &entries, 25),
            Ok(vec![delete("☁ old")])
        );
    }
}
