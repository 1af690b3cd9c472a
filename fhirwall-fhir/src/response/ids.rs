//! Distinct ids (patients a resource references, members that carried them), bounded: a server
//! answer is hostile input too, and one resource holding hundreds of thousands of references
//! must cost neither quadratic time nor memory that grows with the body. A set is scanned while
//! small (the common case: one to three references) and hashed (SipHash, keyed per process)
//! beyond that; its buffers are kept across `clear` so that a long Bundle allocates for its
//! first entries only.

use std::collections::HashSet;

/// Past this many members a set is looked up by hash instead of by scanning.
const SCAN: usize = 16;

/// Ids held by all the sets of one check together; past it an insert is refused and the set
/// marked overflowed (see [`IdSet::overflowed`]). Far above any patient list a policy or a
/// request names, so an overflow always means more patients than a patient rule allows.
pub(super) const MAX_HELD: usize = super::MAX_PATIENTS;

/// How many ids a check's sets hold together (see [`MAX_HELD`]).
#[derive(Debug, Default)]
pub(super) struct Budget(usize);

#[derive(Debug, Default)]
pub(super) struct IdSet {
    /// The members are `slots[..len]`; the slots beyond keep their buffers for reuse.
    slots: Vec<String>,
    len: usize,
    /// Mirrors the members once there are more than [`SCAN`].
    index: HashSet<String>,
    overflowed: bool,
}

impl IdSet {
    pub(super) fn iter(&self) -> impl Iterator<Item = &str> {
        self.slots[..self.len].iter().map(String::as_str)
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        if self.len > SCAN {
            self.index.contains(id)
        } else {
            self.iter().any(|known| known == id)
        }
    }

    /// An insert was refused for want of budget: the set is not the whole truth.
    pub(super) fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub(super) fn mark_overflowed(&mut self) {
        self.overflowed = true;
    }

    /// Adds `id` unless it is there already or the budget is spent (then marks the set).
    pub(super) fn insert(&mut self, id: &str, budget: &mut Budget) {
        if self.contains(id) {
            return;
        }
        if budget.0 >= MAX_HELD {
            self.overflowed = true;
            return;
        }
        budget.0 += 1;
        match self.slots.get_mut(self.len) {
            Some(slot) => {
                slot.clear();
                slot.push_str(id);
            }
            None => self.slots.push(id.to_owned()),
        }
        self.len += 1;
        if self.len == SCAN + 1 {
            self.index.extend(self.slots[..self.len].iter().cloned());
        } else if self.len > SCAN + 1 {
            self.index.insert(id.to_owned());
        }
    }

    /// Empties the set and gives its share of the budget back. A set that grew large lets its
    /// buffers go, so that what a check keeps for reuse stays small.
    pub(super) fn clear(&mut self, budget: &mut Budget) {
        budget.0 -= self.len;
        self.len = 0;
        self.overflowed = false;
        if self.slots.len() > SCAN {
            *self = Self::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_ids_across_the_scan_and_hash_regimes() {
        let mut budget = Budget::default();
        let mut set = IdSet::default();
        for round in 0..2 {
            for i in 0..100 {
                set.insert(&format!("p{}", i % 40), &mut budget);
            }
            assert_eq!(set.iter().count(), 40, "round {round}");
            assert!(set.contains("p0") && set.contains("p39") && !set.contains("p40"));
            assert!(!set.overflowed());
            assert_eq!(budget.0, 40);
            set.clear(&mut budget);
            assert!(set.iter().next().is_none() && !set.contains("p0"));
            assert_eq!(budget.0, 0);
        }
    }

    #[test]
    fn the_budget_is_shared_and_an_insert_past_it_marks_the_set() {
        let mut budget = Budget::default();
        let mut first = IdSet::default();
        let mut second = IdSet::default();
        for i in 0..MAX_HELD - 1 {
            first.insert(&format!("p{i}"), &mut budget);
        }
        second.insert("q0", &mut budget);
        assert!(!second.overflowed());
        second.insert("q1", &mut budget);
        assert!(second.overflowed() && !second.contains("q1"));
        // An id already held costs nothing.
        first.insert("p0", &mut budget);
        assert!(!first.overflowed());
        first.clear(&mut budget);
        second.insert("q1", &mut budget);
        assert!(second.contains("q1"));
    }
}
