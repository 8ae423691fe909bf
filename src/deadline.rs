//! The deadline heap: a min-heap of `(Instant, op)` with lazy deletion.
//!
//! Go's gaio keeps an index back-pointer in each request to remove it from the heap on
//! completion. Here a completed request simply stays in the heap until it reaches the top, where
//! the liveness check (slab key plus the op's unique id) skips it; the heap is compacted when
//! dead entries outnumber live ones, so long deadlines on fast ops cannot grow it without bound.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) at: Instant,
    /// The op's unique id, to tell a live entry from a reused slab key.
    pub(crate) id: u64,
    /// The op's key in the loop's slab.
    pub(crate) key: usize,
}

#[derive(Default)]
pub(crate) struct DeadlineHeap {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl DeadlineHeap {
    pub(crate) fn push(&mut self, e: Entry) {
        self.heap.push(Reverse(e));
    }

    /// The earliest deadline, live or not (an early wake-up on a dead one is harmless).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|r| r.0.at)
    }

    /// Pops the earliest entry whose deadline is at or before `now`, skipping dead entries.
    pub(crate) fn pop_expired(
        &mut self,
        now: Instant,
        live: impl Fn(&Entry) -> bool,
    ) -> Option<Entry> {
        while let Some(Reverse(top)) = self.heap.peek() {
            if !live(top) {
                self.heap.pop();
                continue;
            }
            if top.at > now {
                return None;
            }
            return self.heap.pop().map(|r| r.0);
        }
        None
    }

    /// Drops dead entries when they are the majority. `live_count` is how many ops with a
    /// deadline are pending.
    pub(crate) fn compact(&mut self, live_count: usize, live: impl Fn(&Entry) -> bool) {
        if self.heap.len() > 1024 && self.heap.len() > 2 * live_count {
            self.heap.retain(|r| live(&r.0));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // Go's TestTimedHeapOrderAndIndex: entries pushed out of order come out in ascending order.
    #[test]
    fn order() {
        let base = Instant::now();
        let mut h = DeadlineHeap::default();
        for (i, s) in [10u64, 5, 7].into_iter().enumerate() {
            h.push(Entry {
                at: base + Duration::from_secs(s),
                id: i as u64,
                key: i,
            });
        }
        let far = base + Duration::from_secs(100);
        let got: Vec<u64> = std::iter::from_fn(|| h.pop_expired(far, |_| true))
            .map(|e| (e.at - base).as_secs())
            .collect();
        assert_eq!(got, vec![5, 7, 10]);
    }

    // Go's TestTimedHeapSwapUpdatesIndex checks the back-pointer a removal needs; here removal is
    // lazy, so the equivalent property is that a dead entry is skipped and never returned.
    #[test]
    fn dead_entries_are_skipped() {
        let now = Instant::now();
        let mut h = DeadlineHeap::default();
        h.push(Entry {
            at: now,
            id: 1,
            key: 0,
        });
        h.push(Entry {
            at: now,
            id: 2,
            key: 1,
        });
        let e = h.pop_expired(now, |e| e.id != 1).unwrap();
        assert_eq!(e.id, 2);
        assert!(h.pop_expired(now, |e| e.id != 1).is_none());
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn not_yet_expired_stays() {
        let now = Instant::now();
        let mut h = DeadlineHeap::default();
        h.push(Entry {
            at: now + Duration::from_secs(1),
            id: 1,
            key: 0,
        });
        assert!(h.pop_expired(now, |_| true).is_none());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn compaction_drops_dead() {
        let now = Instant::now();
        let mut h = DeadlineHeap::default();
        for i in 0..2000 {
            h.push(Entry {
                at: now,
                id: i,
                key: i as usize,
            });
        }
        h.compact(10, |e| e.id < 10);
        assert_eq!(h.len(), 10);
    }
}
