//! How far one site's sequence space is settled: the numbers behind every Ack.
//!
//! A seq is *settled* once its event is stored or a gap event has declared it dropped. The agent
//! may delete everything up to `contiguous`; `missing` names the holes the hub knows of (something
//! above them is stored), so the agent can resend exactly those.

use std::collections::BTreeMap;

/// Most holes named in one Ack or API answer. The agent resends the lowest first, and the next
/// ack names the next ones, so a bound keeps messages small without losing anything.
pub const MAX_MISSING_RANGES: usize = 1000;

/// Settled seqs of one site, as a number below which everything is settled plus the disjoint,
/// non-adjacent settled ranges above it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    contiguous: u64,
    /// Settled inclusive ranges above `contiguous + 1`, keyed by their first seq.
    above: BTreeMap<u64, u64>,
    highest_stored: u64,
}

impl Progress {
    /// Progress as persisted: everything up to `contiguous` settled, nothing known above yet.
    pub fn starting_at(contiguous: u64) -> Progress {
        Progress {
            contiguous,
            above: BTreeMap::new(),
            highest_stored: contiguous,
        }
    }

    /// Every seq from 1 to this one is settled.
    pub fn contiguous(&self) -> u64 {
        self.contiguous
    }

    /// The highest seq recorded as stored.
    pub fn highest(&self) -> u64 {
        self.highest_stored
    }

    /// Every settled range, lowest first, for persisting.
    pub fn ranges(&self) -> Vec<[u64; 2]> {
        let first = (self.contiguous > 0).then_some([1, self.contiguous]);
        first
            .into_iter()
            .chain(self.above.iter().map(|(&a, &b)| [a, b]))
            .collect()
    }

    /// Progress as [`Progress::ranges`] listed it, every range counted as stored.
    pub fn from_ranges(ranges: &[[u64; 2]]) -> Progress {
        let mut p = Progress::default();
        for &[from, to] in ranges {
            p.record_dropped(from, to);
            p.highest_stored = p.highest_stored.max(to);
        }
        p
    }

    /// Records stored events, given in ascending order.
    pub fn record_stored(&mut self, seqs: &[u64]) {
        let Some(&last) = seqs.last() else { return };
        self.highest_stored = self.highest_stored.max(last);
        // Batches are mostly consecutive seqs, so settle them as runs rather than one by one.
        let mut run_start = seqs[0];
        for pair in seqs.windows(2) {
            if pair[1] != pair[0] + 1 {
                self.settle(run_start, pair[0]);
                run_start = pair[1];
            }
        }
        self.settle(run_start, last);
    }

    /// Records seqs a gap event declared dropped: they will never arrive.
    pub fn record_dropped(&mut self, from: u64, to: u64) {
        if from <= to {
            self.settle(from, to);
        }
    }

    /// Unsettled ranges between `contiguous` and the highest stored seq, lowest first, at most
    /// `limit` of them.
    pub fn missing(&self, limit: usize) -> Vec<[u64; 2]> {
        let mut holes = Vec::new();
        let mut next = self.contiguous + 1;
        for (&start, &end) in &self.above {
            if start > self.highest_stored || holes.len() == limit {
                break;
            }
            if start > next {
                holes.push([next, start - 1]);
            }
            next = end + 1;
        }
        holes.truncate(limit);
        holes
    }

    fn settle(&mut self, from: u64, to: u64) {
        if to <= self.contiguous {
            return;
        }
        let mut lo = from.max(self.contiguous + 1);
        let mut hi = to;
        // A range starting at or before `lo` may overlap or touch the new one: absorb it.
        if let Some((&s, &e)) = self.above.range(..=lo).next_back() {
            if e.saturating_add(1) >= lo {
                lo = s;
                hi = hi.max(e);
                self.above.remove(&s);
            }
        }
        // So may any range starting inside it or right after it.
        while let Some((&s, &e)) = self.above.range(lo..=hi.saturating_add(1)).next() {
            hi = hi.max(e);
            self.above.remove(&s);
        }
        if lo == self.contiguous + 1 {
            self.contiguous = hi;
        } else {
            self.above.insert(lo, hi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_batches_advance_contiguous() {
        let mut p = Progress::default();
        p.record_stored(&[1, 2, 3]);
        p.record_stored(&[4, 5]);
        assert_eq!(p.contiguous(), 5);
        assert!(p.missing(10).is_empty());
    }

    #[test]
    fn out_of_order_batch_reports_the_hole() {
        let mut p = Progress::default();
        p.record_stored(&[1, 2, 3]);
        p.record_stored(&[7, 8]);
        p.record_stored(&[11]);
        assert_eq!(p.contiguous(), 3);
        assert_eq!(p.missing(10), vec![[4, 6], [9, 10]]);
        assert_eq!(p.missing(1), vec![[4, 6]]);
        p.record_stored(&[4, 5, 6]);
        assert_eq!(p.contiguous(), 8);
        assert_eq!(p.missing(10), vec![[9, 10]]);
        p.record_stored(&[9, 10]);
        assert_eq!(p.contiguous(), 11);
        assert!(p.missing(10).is_empty());
    }

    #[test]
    fn seqs_within_a_batch_may_skip() {
        let mut p = Progress::default();
        p.record_stored(&[1, 2, 5, 6, 9]);
        assert_eq!(p.contiguous(), 2);
        assert_eq!(p.missing(10), vec![[3, 4], [7, 8]]);
    }

    #[test]
    fn duplicates_change_nothing() {
        let mut p = Progress::default();
        p.record_stored(&[1, 2, 3, 6]);
        let before = p.clone();
        p.record_stored(&[2, 3]);
        p.record_stored(&[6]);
        assert_eq!(p, before);
    }

    #[test]
    fn gap_closes_a_hole() {
        let mut p = Progress::default();
        p.record_stored(&[1, 2]);
        // Seqs 3..=5 were dropped by the agent; the gap event itself is seq 6.
        p.record_stored(&[6]);
        assert_eq!(p.missing(10), vec![[3, 5]]);
        p.record_dropped(3, 5);
        assert_eq!(p.contiguous(), 6);
        assert!(p.missing(10).is_empty());
    }

    #[test]
    fn gap_declared_before_the_events_around_it_arrive() {
        let mut p = Progress::default();
        p.record_dropped(2, 4);
        p.record_stored(&[5]);
        assert_eq!(p.contiguous(), 0);
        assert_eq!(p.missing(10), vec![[1, 1]]);
        p.record_stored(&[1]);
        assert_eq!(p.contiguous(), 5);
    }

    #[test]
    fn gap_beyond_highest_stored_is_not_missing_and_overlaps_merge() {
        let mut p = Progress::default();
        p.record_stored(&[1]);
        p.record_dropped(10, 20);
        p.record_dropped(15, 25);
        p.record_dropped(26, 26);
        assert!(p.missing(10).is_empty());
        p.record_stored(&[30]);
        assert_eq!(p.missing(10), vec![[2, 9], [27, 29]]);
        p.record_dropped(2, 9);
        p.record_dropped(27, 29);
        assert_eq!(p.contiguous(), 30);
    }

    #[test]
    fn ranges_below_contiguous_are_ignored() {
        let mut p = Progress::starting_at(100);
        p.record_dropped(5, 50);
        p.record_stored(&[3, 99, 100]);
        assert_eq!(p, Progress::starting_at(100));
        p.record_dropped(90, 105);
        assert_eq!(p.contiguous(), 105);
    }

    #[test]
    fn ranges_round_trip() {
        let mut p = Progress::default();
        p.record_stored(&[1, 2, 3, 7, 8, 11]);
        assert_eq!(p.ranges(), vec![[1, 3], [7, 8], [11, 11]]);
        let q = Progress::from_ranges(&p.ranges());
        assert_eq!(q.missing(10), p.missing(10));
        assert_eq!((q.contiguous(), q.highest()), (3, 11));
        assert!(Progress::default().ranges().is_empty());
    }

    #[test]
    fn restored_progress_rebuilds_holes() {
        let mut p = Progress::starting_at(10);
        p.record_stored(&[12, 13]);
        p.record_dropped(15, 15);
        p.record_stored(&[17]);
        assert_eq!(p.missing(10), vec![[11, 11], [14, 14], [16, 16]]);
    }
}
