//! Recognises redeliveries of a device message that was already accepted: brokers redeliver
//! QoS 1 messages whose PUBACK they did not get (for instance when the agent crashed between
//! making an event durable and acknowledging it), and devices retry on their own.

use std::collections::{HashMap, VecDeque};

/// The start of every device message key of `source`: the buffer keeps the keys of all
/// sources together, so each begins with its source's name.
pub fn key_prefix(source: &str) -> String {
    format!("{source}\u{0}")
}

/// Ids accepted within a sliding time window, bounded in memory: past `max_entries` the oldest
/// ids are forgotten first, so a flood of unique ids cannot grow it without bound.
#[derive(Debug)]
pub struct DedupWindow {
    window_ms: i64,
    max_entries: usize,
    seen: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl DedupWindow {
    pub fn new(window_ms: i64, max_entries: usize) -> DedupWindow {
        DedupWindow {
            window_ms,
            max_entries: max_entries.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `id` was accepted within the window before `now_ms`.
    pub fn contains(&mut self, id: &str, now_ms: i64) -> bool {
        self.expire(now_ms);
        self.seen.contains_key(id)
    }

    /// Records `id` as accepted at `at_ms`.
    pub fn insert(&mut self, id: String, at_ms: i64) {
        self.expire(at_ms);
        if self.seen.insert(id.clone(), at_ms).is_none() {
            self.order.push_back((at_ms, id));
        }
        while self.order.len() > self.max_entries {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now_ms: i64) {
        while let Some((t, _)) = self.order.front() {
            if now_ms - *t < self.window_ms {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.seen.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_window_and_forgets_after() {
        let mut d = DedupWindow::new(1000, 100);
        d.insert("a".into(), 0);
        assert!(d.contains("a", 999));
        assert!(!d.contains("b", 999));
        assert!(!d.contains("a", 1000));
        assert!(d.is_empty());
    }

    #[test]
    fn bounded_by_entries() {
        let mut d = DedupWindow::new(i64::MAX, 3);
        for i in 0..10 {
            d.insert(i.to_string(), i);
        }
        assert_eq!(d.len(), 3);
        assert!(d.contains("9", 10) && !d.contains("6", 10));
    }
}
