//! Batches of a room's channel that arrive while the room is being read from Redis, kept as
//! state, not as a queue: the latest value of each variable with the version of the batch
//! that set it. When the read comes back at some version V, what came after V is applied on
//! top of it. So a busy room is installed from one read however many batches pass while the
//! read is under way, and memory stays bounded by the room's variables, not by its set rate.
//!
//! The channel delivers a room's batches in version order. A batch whose version jumps
//! forward (batches of an earlier subscription to the room, then the current one's) starts the
//! merge afresh from it: the read must then reach the batch before it. A version that goes
//! back (Redis counting from 1 again) cannot be merged: the catch-up is then *broken* and only
//! a new read helps. A batch that replaces the whole room (a rename
//! or a delete) starts the merge afresh: if it is newer than the read, the room becomes that
//! batch plus what followed it.

use std::collections::HashMap;

use super::SavedVariable;

#[derive(Debug, Default)]
pub struct CatchUp {
    /// Versions of the first and the last batch seen (0: none yet).
    first: u64,
    last: u64,
    broken: bool,
    /// The version of the last batch seen that replaced the whole room (0: none).
    replaced_at: u64,
    /// The last of this node's own batches seen: its version in Redis and the local version
    /// it was collected at.
    last_own: Option<(u64, u64)>,
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
    /// `newer` is the whole room (a batch after the read replaced it).
    pub replace_all: bool,
    /// The local version up to which this node's changes are in Redis by a batch after the
    /// read (0: none; those before it are in the read, or of an earlier stay of the room).
    pub own_published: u64,
}

impl CaughtUp {
    /// A read at `version` with nothing seen after it.
    pub fn nothing_after(version: u64) -> Self {
        CaughtUp {
            version,
            newer: Vec::new(),
            replace_all: false,
            own_published: 0,
        }
    }
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
        if self.last != 0 && version <= self.last {
            self.broken = true;
            self.variables = HashMap::new();
            return;
        }
        if self.last != 0 && self.last.checked_add(1) != Some(version) {
            // What came before the jump says nothing about the versions in between.
            *self = CatchUp::default();
        }
        if self.first == 0 {
            self.first = version;
        }
        self.last = version;
        if let Some(local) = own_local_version {
            self.last_own = Some((version, local));
        }
        if replace_all {
            self.replaced_at = version;
            self.variables.clear();
        }
        for variable in variables {
            self.variables
                .insert(variable.name.clone(), (version, variable.clone()));
        }
    }

    /// The batches seen, applied over a read at `read_version`; `None` when they cannot be
    /// (one was missing or Redis counted from 1 again, or versions between the read and the
    /// first batch seen were never seen): the room must be read again.
    pub fn over_read(self, read_version: u64) -> Option<CaughtUp> {
        if self.broken || (self.first != 0 && self.first > read_version.saturating_add(1)) {
            return None;
        }
        let own_published = match self.last_own {
            Some((version, local)) if version > read_version => local,
            _ => 0,
        };
        if self.last <= read_version {
            // Everything seen is in the read already.
            return Some(CaughtUp {
                own_published,
                ..CaughtUp::nothing_after(read_version)
            });
        }
        // After a replacement newer than the read, the map holds the whole room.
        let replace_all = self.replaced_at > read_version;
        let newer = self
            .variables
            .into_values()
            .filter(|(version, _)| *version > read_version)
            .map(|(_, variable)| variable)
            .collect();
        Some(CaughtUp {
            version: self.last,
            newer,
            replace_all,
            own_published,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, value: &str) -> SavedVariable {
        SavedVariable {
            user: Default::default(),
            changed_ms: 0,
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
        assert!(!caught.replace_all);
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
    fn own_batches_the_read_holds_publish_nothing() {
        let mut catch_up = CatchUp::default();
        // An echo of an earlier stay of the room (local version 80), then one of this stay.
        catch_up.note(5, Some(80), false, &[var("☁ a", "1")]);
        assert_eq!(catch_up.over_read(6).unwrap().own_published, 0);
        let mut catch_up = CatchUp::default();
        catch_up.note(5, Some(80), false, &[var("☁ a", "1")]);
        catch_up.note(6, None, false, &[var("☁ a", "2")]);
        catch_up.note(7, Some(12), false, &[var("☁ a", "3")]);
        assert_eq!(catch_up.over_read(6).unwrap().own_published, 12);
    }

    #[test]
    fn a_replacement_after_the_read_makes_the_room_that_batch_and_what_followed() {
        let mut catch_up = CatchUp::default();
        catch_up.note(4, None, false, &[var("☁ a", "1")]);
        catch_up.note(5, None, true, &[var("☁ b", "1"), var("☁ c", "1")]);
        catch_up.note(6, None, false, &[var("☁ c", "2")]);
        let caught = catch_up.over_read(4).unwrap();
        assert!(caught.replace_all);
        assert_eq!(caught.version, 6);
        assert_eq!(
            names(&caught),
            vec![("☁ b".into(), "1".into()), ("☁ c".into(), "2".into())]
        );
    }

    #[test]
    fn a_replacement_the_read_holds_needs_only_what_followed() {
        let mut catch_up = CatchUp::default();
        catch_up.note(5, Some(9), true, &[var("☁ b", "1"), var("☁ c", "1")]);
        catch_up.note(6, None, false, &[var("☁ c", "2")]);
        let caught = catch_up.over_read(5).unwrap();
        assert!(!caught.replace_all);
        assert_eq!(names(&caught), vec![("☁ c".into(), "2".into())]);
        let mut catch_up = CatchUp::default();
        catch_up.note(5, Some(9), true, &[var("☁ b", "1")]);
        let caught = catch_up.over_read(5).unwrap();
        assert!(!caught.replace_all && caught.newer.is_empty());
    }

    #[test]
    fn a_version_at_the_end_of_the_range_breaks_without_overflow() {
        let mut catch_up = CatchUp::default();
        catch_up.note(u64::MAX, None, false, &[var("☁ a", "1")]);
        catch_up.note(3, None, false, &[var("☁ a", "2")]);
        assert_eq!(catch_up.over_read(2), None);
    }

    #[test]
    fn a_jump_forward_starts_afresh_and_a_restart_breaks_the_catch_up() {
        let mut gap = CatchUp::default();
        gap.note(3, Some(70), false, &[var("☁ a", "1"), var("☁ b", "1")]);
        gap.note(5, None, false, &[var("☁ a", "2")]);
        gap.note(6, None, false, &[var("☁ a", "3")]);
        let mut too_old = CatchUp::default();
        too_old.note(3, None, false, &[var("☁ a", "1")]);
        too_old.note(5, None, false, &[var("☁ a", "2")]);
        assert_eq!(too_old.over_read(3), None, "version 4 is in neither");
        let caught = gap.over_read(4).unwrap();
        assert_eq!(caught.version, 6);
        assert_eq!(caught.own_published, 0);
        assert_eq!(names(&caught), vec![("☁ a".into(), "3".into())]);

        let mut restarted = CatchUp::default();
        restarted.note(8, None, false, &[var("☁ a", "1")]);
        restarted.note(1, None, false, &[var("☁ a", "2")]);
        assert_eq!(restarted.over_read(8), None);
    }
}
