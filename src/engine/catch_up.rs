//! Batches of a room's channel that arrive while the room is being read from Redis, kept as
//! state, not as a queue: the latest value of each variable with the version of the batch
//! that set it. When the read comes back at some version V, what came after V is applied on
//! top of it. So a busy room is installed from one read however many batches pass while the
//! read is under way, and memory stays bounded by the room's variables, not by its set rate.
//!
//! The channel delivers a room's batches in version order. A batch that does not follow the
//! one before (a version missing, Redis counting from 1 again) or that replaces the whole room
//! cannot be merged: the catch-up is then *broken* and only a new read helps.

use std::collections::HashMap;

use super::SavedVariable;

#[derive(Debug, Default)]
pub struct CatchUp {
    /// Versions of the first and the last batch seen (0: none yet).
    first: u64,
    last: u64,
    broken: bool,
    /// The highest local version among this node's own batches seen.
    own_published: u64,
    /// Each variable's latest value, with the version of the batch that brought it.
    variables: HashMap<Box<str>, (u64, SavedVariable)>,
}

/// What a read at some version becomes with the batches seen meanwhile.
#[derive(Debug, PartialEq)]
pub struct CaughtUp {
    /// The room's version once `newer` is applied over the read.
    pub version: u64,
    /// Variables batches after the read changed (latest values).
    pub newer: Vec<SavedVariable>,
    /// The highest local version of this node's own batches seen.
    pub own_published: u64,
}

impl CatchUp {
    /// Notes a batch that arrived on the room's channel.
    pub fn note(
        &mut self,
        version: u64,
        own_local_version: Option<u64>,
        replace_all: bool,
        variables: &[SavedVariable],
    ) {
        if self.broken {
            return;
        }
        if replace_all || (self.last != 0 && version != self.last + 1) {
            self.broken = true;
            self.variables = HashMap::new();
            return;
        }
        if self.first == 0 {
            self.first = version;
        }
        self.last = version;
        if let Some(local) = own_local_version {
            self.own_published = self.own_published.max(local);
        }
        for variable in variables {
            self.variables
                .insert(variable.name.clone(), (version, variable.clone()));
        }
    }

    /// The batches seen, applied over a read at `read_version`; `None` when they cannot be
    /// (one was missing or replaced the room, or versions between the read and the first
    /// batch seen were never seen): the room must be read again.
    pub fn over_read(self, read_version: u64) -> Option<CaughtUp> {
        if self.broken || (self.first != 0 && self.first > read_version.saturating_add(1)) {
            return None;
        }
        if self.last <= read_version {
            // Everything seen is in the read already.
            return Some(CaughtUp {
                version: read_version,
                newer: Vec::new(),
                own_published: self.own_published,
            });
        }
        let newer = self
            .variables
            .into_values()
            .filter(|(version, _)| *version > read_version)
            .map(|(_, variable)| variable)
            .collect();
        Some(CaughtUp {
            version: self.last,
            newer,
            own_published: self.own_published,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, value: &str) -> SavedVariable {
        SavedVariable {
            name: name.into(),
            value: value.into(),
            is_number: true,
        }
    }

    fn names(caught: &CaughtUp) -> Vec<(String, String)> {
        let mut names: Vec<_> = caught
            .newer
            .iter()
            .map(|v| (v.name.to_string(), v.value.clone()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn nothing_seen_keeps_the_read() {
        let caught = CatchUp::default().over_read(7).unwrap();
        assert_eq!(caught.version, 7);
        assert!(caught.newer.is_empty());
    }

    #[test]
    fn batches_after_the_read_are_applied_latest_value_only() {
        let mut catch_up = CatchUp::default();
        catch_up.note(5, None, false, &[var("☁ a", "1"), var("☁ b", "1")]);
        catch_up.note(6, None, false, &[var("☁ a", "2")]);
        catch_up.note(7, Some(40), false, &[var("☁ a", "3"), var("☁ c", "3")]);
        catch_up.note(8, None, false, &[var("☁ c", "4")]);
        let caught = catch_up.over_read(6).unwrap();
        assert_eq!(caught.version, 8);
        assert_eq!(caught.own_published, 40);
        // b was last set by batch 5, which the read at 6 holds.
        assert_eq!(
            names(&caught),
            vec![("☁ a".into(), "3".into()), ("☁ c".into(), "4".into())]
        );
    }

    #[test]
    fn a_read_newer_than_everything_seen_needs_nothing() {
        let mut catch_up = CatchUp::default();
        catch_up.note(3, None, false, &[var("☁ a", "1")]);
        let caught = catch_up.over_read(9).unwrap();
        assert_eq!(caught.version, 9);
        assert!(caught.newer.is_empty());
    }

    #[test]
    fn versions_missing_between_read_and_first_batch_need_a_new_read() {
        let mut catch_up = CatchUp::default();
        catch_up.note(9, None, false, &[var("☁ a", "1")]);
        assert_eq!(catch_up.over_read(7), None);
    }

    #[test]
    fn a_gap_between_batches_or_a_whole_room_breaks_the_catch_up() {
        let mut gap = CatchUp::default();
        gap.note(3, None, false, &[var("☁ a", "1")]);
        gap.note(5, None, false, &[var("☁ a", "2")]);
        gap.note(6, None, false, &[var("☁ a", "3")]);
        assert_eq!(gap.over_read(3), None);

        let mut restarted = CatchUp::default();
        restarted.note(8, None, false, &[var("☁ a", "1")]);
        restarted.note(1, None, false, &[var("☁ a", "2")]);
        assert_eq!(restarted.over_read(8), None);

        let mut whole = CatchUp::default();
        whole.note(3, None, true, &[var("☁ a", "1")]);
        assert_eq!(whole.over_read(3), None);
    }
}
