//! Dedup by message id: per partition, the `strom.msg.id`s stored within
//! `strom.dedup.window.ms`, each with the offset it was stored at.
//!
//! The window lives in memory and is rebuilt from the log, never written anywhere else: the
//! ids are in the stored records' headers. It is loaded the first time a record with a
//! reserved header reaches its partition after a start: the time index gives the first
//! batch whose max timestamp is within the window, and only from there on is read (batches
//! without a `strom.` header are skipped after the validator's walk, their records not
//! decoded). An id's time is its record's timestamp when rebuilt, the broker's clock when
//! stored.
//!
//! Bound: at most [`DEDUP_IDS_MAX`] ids of at most [`crate::reserved::MSG_ID_BYTES_MAX`]
//! bytes per partition (about 100 MB at worst, a few MB for short ids); past it the oldest
//! id is forgotten early (counted in `strom_dedup_evicted_total`).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use strom_log::Log;

use crate::reserved::MSG_ID_HEADER;

/// Ids remembered per partition at most.
pub const DEDUP_IDS_MAX: usize = 200_000;
/// Bytes read from the log at a time while rebuilding.
const REBUILD_READ_BYTES: usize = 1 << 20;

/// One partition's window.
#[derive(Debug, Default)]
pub(crate) struct DedupWindow {
    ids: HashMap<Bytes, (i64, i64)>,
    order: VecDeque<(i64, Bytes)>,
    /// Ids forgotten before their time because of [`DEDUP_IDS_MAX`].
    pub(crate) evicted: u64,
}

impl DedupWindow {
    /// Rebuilds the window of `log` at `now_ms`.
    pub(crate) fn load(log: &Log, window_ms: i64, now_ms: i64) -> strom_log::Result<DedupWindow> {
        let mut w = DedupWindow::default();
        let since = now_ms.saturating_sub(window_ms);
        let Some(hit) = log.find_by_timestamp(since)? else {
            return Ok(w);
        };
        let mut offset = hit.base_offset.max(log.log_start_offset());
        let end = log.log_end_offset();
        while offset < end {
            let read = log.read(offset, REBUILD_READ_BYTES)?;
            if read.data.is_empty() {
                break;
            }
            for (pos, h) in strom_records::headers(&read.data) {
                offset = h.last_offset() + 1;
                let whole = &read.data[pos..pos + h.total_len()];
                // Only batches with a `strom.` header can hold an id.
                match strom_records::validate(whole, usize::MAX) {
                    Ok(s) if s.reserved_headers => {}
                    _ => continue,
                }
                let whole = read.data.slice(pos..pos + h.total_len());
                let Ok(records) = strom_records::records(&whole) else {
                    continue;
                };
                for r in records.flatten() {
                    if r.timestamp < since {
                        continue;
                    }
                    if let Some((_, Some(id))) = r
                        .headers
                        .iter()
                        .rev()
                        .find(|(k, _)| k.as_ref() == MSG_ID_HEADER)
                    {
                        w.insert(id.clone(), r.offset, r.timestamp);
                    }
                }
            }
        }
        Ok(w)
    }

    /// Forgets ids older than the window.
    pub(crate) fn expire(&mut self, window_ms: i64, now_ms: i64) {
        let since = now_ms.saturating_sub(window_ms);
        while let Some((t, _)) = self.order.front() {
            if *t >= since {
                break;
            }
            let (t, id) = self.order.pop_front().expect("front");
            if self.ids.get(&id).is_some_and(|&(_, seen)| seen == t) {
                self.ids.remove(&id);
            }
        }
    }

    /// The offset `id` was stored at, if within the window (call [`DedupWindow::expire`]
    /// first).
    pub(crate) fn get(&self, id: &[u8]) -> Option<i64> {
        self.ids.get(id).map(|&(offset, _)| offset)
    }

    /// Remembers `id` stored at `offset` at `time_ms`.
    pub(crate) fn insert(&mut self, id: Bytes, offset: i64, time_ms: i64) {
        if self.ids.len() >= DEDUP_IDS_MAX && !self.ids.contains_key(&id) {
            if let Some((t, old)) = self.order.pop_front() {
                if self.ids.get(&old).is_some_and(|&(_, seen)| seen == t) {
                    self.ids.remove(&old);
                    self.evicted += 1;
                }
            }
        }
        self.ids.insert(id.clone(), (offset, time_ms));
        self.order.push_back((time_ms, id));
    }

    /// Ids remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_expires_and_is_bounded() {
        let mut w = DedupWindow::default();
        w.insert(Bytes::from_static(b"a"), 5, 1_000);
        w.insert(Bytes::from_static(b"b"), 6, 2_000);
        w.expire(1_500, 2_600);
        assert_eq!(w.get(b"a"), None);
        assert_eq!(w.get(b"b"), Some(6));
        for i in 0..DEDUP_IDS_MAX as i64 + 10 {
            w.insert(Bytes::from(i.to_string()), i, 3_000);
        }
        assert_eq!(w.len(), DEDUP_IDS_MAX);
        assert!(w.evicted >= 10);
        assert_eq!(w.get(b"b"), None, "the oldest went first");
    }
}
