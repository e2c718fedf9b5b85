//! Skipping aborted transactions while reading fetched batches, as Kafka's consumers do: for
//! a door that decodes records itself (HTTP, SSE, WebSocket) from a read_committed fetch.

use std::collections::HashSet;

use strom_log::BatchHeader;

use crate::broker::AbortedTxn;

/// Walks the batches of a read_committed fetch in offset order and says which to skip: a
/// transactional batch of a producer from the first offset of one of its aborted
/// transactions up to its next control batch (the ABORT marker). Control batches hold no
/// records and are skipped too.
#[derive(Debug, Default)]
pub struct AbortedFilter {
    /// The aborted transactions not reached yet, by first offset.
    pending: Vec<AbortedTxn>,
    next: usize,
    /// Producers inside an aborted transaction at the current batch.
    active: HashSet<i64>,
}

impl AbortedFilter {
    /// A filter over the fetch's `aborted` transactions (any order).
    pub fn new(aborted: &[AbortedTxn]) -> AbortedFilter {
        let mut pending = aborted.to_vec();
        pending.sort_unstable_by_key(|a| a.first_offset);
        AbortedFilter {
            pending,
            next: 0,
            active: HashSet::new(),
        }
    }

    /// Whether the batch `h` (the next in offset order) holds no record to return.
    pub fn skip(&mut self, h: &BatchHeader) -> bool {
        while let Some(a) = self.pending.get(self.next) {
            if a.first_offset > h.last_offset() {
                break;
            }
            self.active.insert(a.producer_id);
            self.next += 1;
        }
        if h.is_control() {
            self.active.remove(&h.producer_id);
            return true;
        }
        h.is_transactional() && self.active.contains(&h.producer_id)
    }
}
