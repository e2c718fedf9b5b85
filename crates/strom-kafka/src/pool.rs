//! `queued.max.request.bytes`: the request bytes all connections hold together.
//!
//! A connection reads a frame into a buffer that grows as its bytes arrive and takes budget
//! for the buffer's room before reading into it, so memory follows what clients really sent, not what they announced
//! (1,000 connections announcing 100 MB and sending 14 bytes hold 14 KB, not 100 GB). When
//! the budget is spent, connections that need more stop reading (TCP backpressure) until
//! handled requests give theirs back.
//!
//! Taking budget chunk by chunk could deadlock: frames that are all half read, each waiting
//! for budget held by the others. The way out is one overdraft: a frame that cannot get
//! budget may instead take the single overdraft slot and read the rest of itself without
//! budget. At most one frame is ever in overdraft, so memory stays below the budget plus one
//! largest frame (`socket.request.max.bytes`), and some frame always makes progress. A client
//! that stalls while holding budget or the overdraft is closed by the read timeout. Small
//! frames (up to 16 KiB, see `server::FRAME_UNPOOLED_MAX`) are read without the pool, so a
//! spent budget pauses large produce requests, never the small requests that keep clients
//! alive.

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};

/// The broker-wide budget of request bytes.
pub(crate) struct RequestPool {
    budget: Arc<Semaphore>,
    overdraft: Arc<Mutex<()>>,
    capacity: usize,
}

impl RequestPool {
    /// A pool of `capacity` bytes (at least 1).
    pub(crate) fn new(capacity: usize) -> RequestPool {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        RequestPool {
            budget: Arc::new(Semaphore::new(capacity)),
            overdraft: Arc::new(Mutex::new(())),
            capacity,
        }
    }

    /// Bytes of budget not held by any frame.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.budget.available_permits()
    }

    /// An empty hold, to be grown with [`Held::take`] as a frame is read.
    pub(crate) fn hold(&self) -> Held {
        Held {
            budget: self.budget.clone(),
            overdraft_lock: self.overdraft.clone(),
            capacity: self.capacity,
            bytes: 0,
            overdraft: None,
        }
    }
}

/// What one frame holds of the pool; given back when dropped.
pub(crate) struct Held {
    budget: Arc<Semaphore>,
    overdraft_lock: Arc<Mutex<()>>,
    capacity: usize,
    bytes: usize,
    overdraft: Option<OwnedMutexGuard<()>>,
}

impl Held {
    /// Takes `n` more bytes of budget, waiting while there are none; a frame in overdraft
    /// needs none. Cancel-safe: nothing is taken unless it returns.
    pub(crate) async fn take(&mut self, n: usize) {
        if self.overdraft.is_some() || n == 0 {
            return;
        }
        // A single frame never needs more than the whole budget.
        let n = n.min(self.capacity.saturating_sub(self.bytes));
        if n == 0 {
            return;
        }
        if let Ok(p) = self.budget.try_acquire_many(n as u32) {
            p.forget();
            self.bytes += n;
            return;
        }
        tokio::select! {
            p = self.budget.acquire_many(n as u32) => {
                // The semaphore is never closed.
                if let Ok(p) = p {
                    p.forget();
                    self.bytes += n;
                }
            }
            guard = self.overdraft_lock.clone().lock_owned() => self.overdraft = Some(guard),
        }
    }

    /// Takes budget until `total` bytes are held (or the frame is in overdraft).
    pub(crate) async fn cover(&mut self, total: usize) {
        if total > self.bytes {
            self.take(total - self.bytes).await;
        }
    }

    /// Bytes of budget held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.add_permits(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn budget_is_taken_and_given_back() {
        let pool = RequestPool::new(100);
        let mut a = pool.hold();
        a.take(60).await;
        assert_eq!((a.bytes(), pool.available()), (60, 40));
        drop(a);
        assert_eq!(pool.available(), 100);
        // A frame larger than the pool takes the whole pool, not more.
        let mut big = pool.hold();
        big.take(70).await;
        big.take(70).await;
        assert_eq!((big.bytes(), pool.available()), (100, 0));
    }

    #[tokio::test]
    async fn half_read_frames_cannot_deadlock_one_goes_into_overdraft() {
        let pool = Arc::new(RequestPool::new(100));
        let mut a = pool.hold();
        let mut b = pool.hold();
        a.take(50).await;
        b.take(50).await;
        // Both need more; neither can get budget. One gets the overdraft and finishes.
        let done = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                _ = a.take(10) => "a",
                _ = b.take(10) => "b",
            }
        })
        .await
        .expect("one frame makes progress");
        let (winner, other) = if done == "a" { (a, b) } else { (b, a) };
        assert!(winner.overdraft.is_some());
        // While the overdraft is taken, the other waits; once the winner is handled and
        // dropped, its budget lets the other go on.
        let mut other = other;
        let waiting = tokio::spawn(async move {
            other.take(10).await;
            other
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(winner);
        let other = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert!(other.bytes() == 60 || other.overdraft.is_some());
    }
}
