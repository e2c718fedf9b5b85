//! Bytes of answers waiting for their readers, bounded per connection and in total.
//!
//! A fetch or group poll reserves its body's bytes from the door's [`Budget`] (a semaphore
//! of bytes) before the body is built: the size comes from the batches available
//! ([`strom_broker::Broker::fetch_available`], which reads nothing), so a request that waits
//! for the budget holds no memory. The body is built into the reservation
//! ([`RecordsBody`] stops adding records when the next one would not fit), the reservation
//! shrinks to what was built, and the bytes become a [`Bytes`] that owns the permit: the
//! permit is given back when hyper has written (or dropped, with the connection) the last
//! byte. When the budget stays exhausted for [`BUDGET_WAIT`], the answer is 503
//! `server_busy` with `Retry-After`.
//!
//! Push queues (WebSocket) take their messages' bytes from the same budget and count them
//! against the connection's bound; a subscriber over either is closed with 1013.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::ApiError;

/// How long a request waits for the budget before it gets 503 `server_busy`: long enough
/// for a burst of answers to be written, short enough that a client is not held.
pub(crate) const BUDGET_WAIT: Duration = Duration::from_millis(500);

/// Seconds a client refused with `server_busy` is told to wait (`Retry-After`).
pub(crate) const BUSY_RETRY_AFTER_S: u64 = 1;

/// JSON bytes reserved per stored byte of an answer: base64 is 4/3 of the bytes, text about
/// 1, plus each record's offset, timestamp and field names. An answer that turns out larger
/// (binary text escaped, many tiny records) is cut before the record that does not fit, and
/// the client continues from `next_offset`.
pub(crate) const JSON_BYTES_PER_STORED_BYTE: usize = 2;

/// Reserved on top of every answer's estimate: the envelope and a few small records.
pub(crate) const ANSWER_OVERHEAD_BYTES: usize = 4096;

/// The most the semaphore can count (tokio takes `u32` permits at a time).
const BUDGET_BYTES_MAX: usize = u32::MAX as usize;

/// The door's budget of answer bytes.
pub(crate) struct Budget {
    sem: Arc<Semaphore>,
    total: usize,
    per_connection: usize,
}

impl Budget {
    /// `total` bytes for all connections, at most `per_connection` for one answer or one
    /// connection's push queue.
    pub(crate) fn new(total: usize, per_connection: usize) -> Budget {
        let total = total.clamp(1, BUDGET_BYTES_MAX);
        Budget {
            sem: Arc::new(Semaphore::new(total)),
            total,
            per_connection: per_connection.clamp(1, total),
        }
    }

    /// The budget of all connections together.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// The bound of one connection.
    pub(crate) fn per_connection(&self) -> usize {
        self.per_connection
    }

    /// Bytes reserved now.
    pub(crate) fn in_use(&self) -> usize {
        self.total - self.sem.available_permits().min(self.total)
    }

    /// The largest `max_bytes` of stored batches whose answer fits one connection's bound.
    pub(crate) fn max_stored_bytes(&self) -> usize {
        (self.per_connection.saturating_sub(ANSWER_OVERHEAD_BYTES) / JSON_BYTES_PER_STORED_BYTE)
            .max(1)
    }

    /// The reservation for an answer made of `stored` bytes of batches.
    pub(crate) fn estimate(&self, stored: usize) -> usize {
        stored
            .saturating_mul(JSON_BYTES_PER_STORED_BYTE)
            .saturating_add(ANSWER_OVERHEAD_BYTES)
            .min(self.per_connection)
    }

    /// Reserves `bytes` (at most the per-connection bound), waiting up to [`BUDGET_WAIT`];
    /// then 503 `server_busy`.
    pub(crate) async fn reserve(&self, bytes: usize) -> Result<Reservation, ApiError> {
        let n = bytes.clamp(1, self.per_connection) as u32;
        match tokio::time::timeout(BUDGET_WAIT, self.sem.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(Reservation { permit }),
            _ => Err(busy(self.total)),
        }
    }
}

/// The answer to a request when the budget is exhausted.
pub(crate) fn busy(total: usize) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_busy",
        format!(
            "answers waiting for slow readers hold the door's whole buffer \
             ({total} bytes, --http-buffer-bytes); retry in {BUSY_RETRY_AFTER_S} s"
        ),
    )
    .retry_after(BUSY_RETRY_AFTER_S)
}

/// Bytes taken from the [`Budget`]; given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl Reservation {
    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.permit.num_permits()
    }

    /// Gives back what is held above `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        let extra = self.bytes().saturating_sub(bytes.max(1));
        if extra > 0 {
            drop(self.permit.split(extra));
        }
    }

    /// Adds `more` to what is held.
    pub(crate) fn merge(&mut self, more: Reservation) {
        self.permit.merge(more.permit);
    }

    /// `data` as bytes that hold this reservation until their last slice is dropped (hyper
    /// drops it once written, or with the connection).
    pub(crate) fn into_bytes(mut self, mut data: Vec<u8>) -> Bytes {
        data.shrink_to_fit();
        self.shrink_to(data.capacity());
        Bytes::from_owner(Held { data, _held: self })
    }
}

/// A buffer that owns its reservation.
struct Held {
    data: Vec<u8>,
    _held: Reservation,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// A JSON answer `{"records":[...], ...}` built within a byte bound: a record that would take
/// it past the bound is left out (unless it is the first), so the caller knows which records
/// went out.
pub(crate) struct RecordsBody {
    buf: Vec<u8>,
    bound: usize,
    count: usize,
}

impl RecordsBody {
    /// An answer of at most `bound` bytes (the first record excepted).
    pub(crate) fn new(bound: usize) -> RecordsBody {
        let mut buf = Vec::with_capacity(bound.min(1 << 16));
        buf.extend_from_slice(b"{\"records\":[");
        RecordsBody {
            buf,
            bound,
            count: 0,
        }
    }

    /// Adds `record` if it fits (or is the first); false when it was left out.
    pub(crate) fn push(&mut self, record: &Value) -> bool {
        let before = self.buf.len();
        if self.count > 0 {
            self.buf.push(b',');
        }
        serde_json::to_writer(&mut self.buf, record).expect("a Value serialises");
        // Room for the closing fields (a few numbers and names).
        if self.count > 0 && self.buf.len() + 256 > self.bound {
            self.buf.truncate(before);
            return false;
        }
        self.count += 1;
        true
    }

    /// Records added.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Closes the array and adds `fields` (each value serialised) to the object.
    pub(crate) fn finish(mut self, fields: &[(&str, Value)]) -> Vec<u8> {
        self.buf.push(b']');
        for (name, v) in fields {
            self.buf.push(b',');
            serde_json::to_writer(&mut self.buf, name).expect("a str serialises");
            self.buf.push(b':');
            serde_json::to_writer(&mut self.buf, v).expect("a Value serialises");
        }
        self.buf.push(b'}');
        self.buf
    }
}

/// Bytes queued for one push connection, counted against its bound; each queued message
/// holds a [`Queued`] until it has been sent.
#[derive(Clone, Default)]
pub(crate) struct QueuedBytes(Arc<AtomicUsize>);

impl QueuedBytes {
    /// Counts `n` more bytes if that keeps the total within `bound`.
    pub(crate) fn add(&self, n: usize, bound: usize) -> Option<Queued> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = cur.checked_add(n).filter(|t| *t <= bound)?;
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Queued {
                        count: self.clone(),
                        n,
                    })
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Bytes queued now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// `n` bytes of a [`QueuedBytes`], given back on drop.
pub(crate) struct Queued {
    count: QueuedBytes,
    n: usize,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.count.0.fetch_sub(self.n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn reservations_come_back_when_their_bytes_are_dropped() {
        let b = Budget::new(10_000, 8_000);
        assert_eq!(b.estimate(100), 200 + ANSWER_OVERHEAD_BYTES);
        assert_eq!(b.estimate(1 << 30), 8_000);
        assert_eq!(b.max_stored_bytes(), (8_000 - ANSWER_OVERHEAD_BYTES) / 2);
        let mut r = b.reserve(4_000).await.unwrap();
        assert_eq!(b.in_use(), 4_000);
        r.shrink_to(1_000);
        assert_eq!(b.in_use(), 1_000);
        let bytes = r.into_bytes(vec![7u8; 500]);
        assert!(b.in_use() >= 500 && b.in_use() <= 1_000);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert!(b.in_use() >= 500, "a slice still holds the buffer");
        drop(slice);
        assert_eq!(b.in_use(), 0);
    }

    #[tokio::test]
    async fn an_exhausted_budget_answers_server_busy() {
        let b = Budget::new(5_000, 5_000);
        let held = b.reserve(5_000).await.unwrap();
        let e = b.reserve(10).await.unwrap_err();
        assert_eq!(e.code(), "server_busy");
        drop(held);
        assert!(b.reserve(10).await.is_ok());
    }

    #[test]
    fn records_body_stops_before_the_bound() {
        let rec = json!({"offset": 1, "value": "x".repeat(100)});
        let mut body = RecordsBody::new(400);
        assert!(body.push(&rec));
        assert!(!body.push(&rec), "a second record would pass the bound");
        assert_eq!(body.len(), 1);
        let out = body.finish(&[("next_offset", json!(2))]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["records"].as_array().unwrap().len(), 1);
        assert_eq!(v["next_offset"], 2);
        // The first record is always taken, however large.
        let mut small = RecordsBody::new(10);
        assert!(small.push(&rec));
    }

    #[test]
    fn queued_bytes_respect_their_bound() {
        let q = QueuedBytes::default();
        let a = q.add(60, 100).unwrap();
        assert!(q.add(50, 100).is_none());
        let b = q.add(40, 100).unwrap();
        assert_eq!(q.get(), 100);
        drop(a);
        drop(b);
        assert_eq!(q.get(), 0);
    }
}
