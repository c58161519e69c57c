//! What a scale-run receiver counts: which group messages and broadcasts it got, how many
//! times, and how late.
//!
//! Every payload carries the usual send stamp (`crate::stamp`); its `step` field is a tag:
//!
//! - a group message: the process-wide message number `n`; the sender addresses local group
//!   `n % groups`, so a receiver of local group `g` knows `n` must satisfy `n % groups == g`
//!   (else the message was misrouted) and that it is that group's message `n / groups`;
//! - a broadcast: [`BROADCAST`] plus its sequence number `0..broadcasts`.
//!
//! So a receiver keeps one bit per group message and per broadcast it saw: a second arrival is
//! a duplicate, a missing bit at the end is a loss, and nothing needs a map or a lock. The
//! counters every receiver shares live in [`Totals`] (one process, one thread: plain `Cell`s).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::loadgen::new_histogram;
use crate::stamp::Stamp;

/// Tag bit of broadcasts; group message numbers stay below it.
pub const BROADCAST: u32 = 1 << 31;

/// The most sequence numbers a receiver tracks per kind; a tag beyond it is counted as
/// [`Totals::out_of_range`] (a corrupt stamp, not a reason to allocate).
pub const MAX_SEQ: u32 = 1 << 24;

/// A growable set of small integers.
#[derive(Debug, Default, Clone)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// Add `i`; `false` if it was already there.
    pub fn insert(&mut self, i: u32) -> bool {
        let (word, bit) = ((i / 64) as usize, i % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let fresh = self.words[word] & (1 << bit) == 0;
        self.words[word] |= 1 << bit;
        fresh
    }

    /// How many integers are in the set.
    pub fn len(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }
}

/// One receiver's own record.
#[derive(Debug, Default)]
pub struct Tally {
    /// Group message sequence numbers seen (per group).
    pub group: BitSet,
    /// Broadcast sequence numbers seen.
    pub broadcast: BitSet,
}

/// Counters shared by every receiver of the process.
pub struct Totals {
    /// Local groups (the sender's modulus).
    pub groups: u32,
    /// Wall-clock micros of the start (`u64::MAX` until known): stamps sent before it are
    /// counted as `early` (left over from something else), not as this run's traffic.
    pub start_micros: Cell<u64>,
    /// Group messages received (first arrivals).
    pub group_received: Cell<u64>,
    /// Group messages that arrived again at the same receiver.
    pub group_duplicates: Cell<u64>,
    /// Group messages for another group than the receiver's.
    pub misrouted: Cell<u64>,
    /// Broadcasts received (first arrivals).
    pub broadcast_received: Cell<u64>,
    /// Broadcasts that arrived again at the same receiver.
    pub broadcast_duplicates: Cell<u64>,
    /// Stamps whose sequence number is out of range.
    pub out_of_range: Cell<u64>,
    /// Stamped deliveries sent before the start.
    pub early: Cell<u64>,
    /// Wall-clock micros of the last delivery (0: none).
    pub last_delivery: Cell<u64>,
    /// Latency of group deliveries, microseconds.
    pub group_latency: RefCell<Histogram<u64>>,
    /// Latency of broadcast deliveries, microseconds.
    pub broadcast_latency: RefCell<Histogram<u64>>,
    /// Receivers that ended, by reason.
    pub closed: RefCell<BTreeMap<String, u64>>,
}

impl Totals {
    /// Counters for a process whose sender addresses `groups` local groups.
    pub fn new(groups: u32) -> Totals {
        Totals {
            groups: groups.max(1),
            start_micros: Cell::new(u64::MAX),
            group_received: Cell::new(0),
            group_duplicates: Cell::new(0),
            misrouted: Cell::new(0),
            broadcast_received: Cell::new(0),
            broadcast_duplicates: Cell::new(0),
            out_of_range: Cell::new(0),
            early: Cell::new(0),
            last_delivery: Cell::new(0),
            group_latency: RefCell::new(new_histogram()),
            broadcast_latency: RefCell::new(new_histogram()),
            closed: RefCell::new(BTreeMap::new()),
        }
    }

    /// Count one stamp received at `now` (wall-clock micros) by a member of local group
    /// `group`, whose record is `tally`.
    pub fn record(&self, tally: &mut Tally, group: u32, stamp: Stamp, now: u64) {
        if stamp.sent_micros < self.start_micros.get() {
            self.early.set(self.early.get() + 1);
            return;
        }
        self.last_delivery.set(now);
        let latency = now.saturating_sub(stamp.sent_micros).max(1);
        if stamp.step & BROADCAST != 0 {
            let seq = stamp.step & !BROADCAST;
            if seq >= MAX_SEQ {
                bump(&self.out_of_range);
            } else if tally.broadcast.insert(seq) {
                bump(&self.broadcast_received);
                self.broadcast_latency
                    .borrow_mut()
                    .saturating_record(latency);
            } else {
                bump(&self.broadcast_duplicates);
            }
            return;
        }
        let n = stamp.step;
        if n % self.groups != group {
            bump(&self.misrouted);
            return;
        }
        let seq = n / self.groups;
        if seq >= MAX_SEQ {
            bump(&self.out_of_range);
        } else if tally.group.insert(seq) {
            bump(&self.group_received);
            self.group_latency.borrow_mut().saturating_record(latency);
        } else {
            bump(&self.group_duplicates);
        }
    }

    /// A receiver ended.
    pub fn closed(&self, reason: String) {
        *self.closed.borrow_mut().entry(reason).or_insert(0) += 1;
    }
}

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get() + 1);
}

/// A histogram as `[value, count]` pairs (value: the highest of its bucket, microseconds), so
/// the runner can merge the processes' histograms and take percentiles of the whole run.
pub fn buckets(histogram: &Histogram<u64>) -> Vec<[u64; 2]> {
    histogram
        .iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(step: u32) -> Stamp {
        Stamp {
            step,
            sent_micros: 1_000,
        }
    }

    #[test]
    fn bitset_counts_and_rejects_repeats() {
        let mut set = BitSet::default();
        assert!(set.is_empty());
        assert!(set.insert(0));
        assert!(set.insert(130));
        assert!(!set.insert(130));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn group_messages_are_checked_against_the_receivers_group() {
        let totals = Totals::new(4);
        let mut tally = Tally::default();
        totals.record(&mut tally, 1, stamp(1), 2_000);
        assert_eq!(totals.early.get(), 1, "not started yet");
        totals.start_micros.set(1_000);
        // Messages 1, 5, 9 go to group 1 (its sequence numbers 0, 1, 2); 2 goes to group 2.
        for n in [1, 5, 5, 9, 2] {
            totals.record(&mut tally, 1, stamp(n), 2_000);
        }
        assert_eq!(totals.group_received.get(), 3);
        assert_eq!(totals.group_duplicates.get(), 1);
        assert_eq!(totals.misrouted.get(), 1);
        assert_eq!(tally.group.len(), 3);
        assert_eq!(totals.group_latency.borrow().len(), 3);
        assert_eq!(totals.last_delivery.get(), 2_000);
    }

    #[test]
    fn broadcasts_are_counted_apart() {
        let totals = Totals::new(4);
        totals.start_micros.set(0);
        let mut tally = Tally::default();
        for seq in [0, 1, 1] {
            totals.record(&mut tally, 0, stamp(BROADCAST | seq), 1_500);
        }
        totals.record(&mut tally, 0, stamp(BROADCAST | MAX_SEQ), 1_500);
        assert_eq!(totals.broadcast_received.get(), 2);
        assert_eq!(totals.broadcast_duplicates.get(), 1);
        assert_eq!(totals.out_of_range.get(), 1);
        assert_eq!(totals.group_received.get(), 0);
        let buckets = buckets(&totals.broadcast_latency.borrow());
        assert_eq!(buckets.iter().map(|b| b[1]).sum::<u64>(), 2);
        assert!(buckets[0][0] >= 500 && buckets[0][0] < 501);
    }
}
