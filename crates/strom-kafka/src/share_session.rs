//! Share sessions (KIP-932): the Kafka door's protocol state between a share consumer's
//! ShareFetch / ShareAcknowledge requests.
//!
//! A session belongs to a (group, member) pair, as in Kafka, not to a connection: a client
//! may reconnect and go on. It holds the share-partitions the member fetches from (requests
//! carry only the changes: partitions to add, `forgotten_topics_data` to drop) and the epoch
//! the next request must carry:
//! - epoch 0 opens a session (replacing any the member had) and may not carry
//!   acknowledgements;
//! - epoch -1 closes it (a final ShareAcknowledge or ShareFetch; its acknowledgements are
//!   applied first);
//! - otherwise the epoch must be the session's next one (1 after the opening request,
//!   then +1 per request, wrapping from `i32::MAX` to 1), else INVALID_SHARE_SESSION_EPOCH;
//!   a request for a session that does not exist gets SHARE_SESSION_NOT_FOUND.
//!
//! Nothing here is durable: acquisitions and acknowledgements are the core's
//! (`strom_broker::share`), and a session lost in a restart is reopened by the client at
//! epoch 0 (that is what SHARE_SESSION_NOT_FOUND tells it). The number of sessions is
//! bounded ([`SESSIONS_MAX`]); beyond it, opening one is SHARE_SESSION_LIMIT_REACHED.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError as E;
use uuid::Uuid;

/// Sessions held at most (Kafka's `group.share.max.share.sessions` is 2000 per broker;
/// Strom's single node serves every member, so ten times that). Sessions unused for
/// [`SESSION_IDLE_MAX`] are dropped to make room.
pub(crate) const SESSIONS_MAX: usize = 20_000;

/// A session unused this long may be evicted when the cache is full (a member whose client
/// went away without closing it; its records' locks have long expired in the core).
pub(crate) const SESSION_IDLE_MAX: Duration = Duration::from_secs(120);

/// A share-partition: topic id and partition index.
pub(crate) type SharePartition = (Uuid, i32);

#[derive(Debug)]
struct Session {
    /// The epoch the next request must carry.
    next_epoch: i32,
    partitions: BTreeSet<SharePartition>,
    used: Instant,
}

/// What a request's epoch means for its session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Epoch 0: a new session (any earlier one of the member was replaced: `replaced`).
    Opened { replaced: bool },
    /// The expected epoch: the session goes on.
    Next,
    /// Epoch -1: the session is closed once this request is done.
    Closing,
}

/// How long a member's leave (ShareGroupHeartbeat epoch -1) waits for the member's share
/// session to close. A share consumer closes both at once, on two connections: its last
/// acknowledgements travel in the request that closes the session (behind a ShareFetch that
/// may wait up to its `max_wait_ms`, librdkafka's 500 ms), and a leave handled first would
/// release those records for redelivery and refuse the acknowledgements.
pub(crate) const LEAVE_GRACE: Duration = Duration::from_secs(2);

/// The share sessions of the door, by (group, member).
#[derive(Default)]
pub(crate) struct ShareSessions {
    inner: Mutex<HashMap<(String, String), Session>>,
    /// Woken whenever a session is closed.
    closed: tokio::sync::Notify,
}

impl ShareSessions {
    /// Checks `epoch` for the session of (`group`, `member`) and moves the session to its
    /// next epoch; an error code if the epoch is wrong or the session is missing (the
    /// session is then unchanged).
    pub(crate) fn begin(&self, group: &str, member: &str, epoch: i32) -> Result<Turn, i16> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (group.to_string(), member.to_string());
        let now = Instant::now();
        match epoch {
            0 => {
                let replaced = map.remove(&key).is_some();
                if map.len() >= SESSIONS_MAX {
                    map.retain(|_, s| now.duration_since(s.used) < SESSION_IDLE_MAX);
                    if map.len() >= SESSIONS_MAX {
                        return Err(E::ShareSessionLimitReached.code());
                    }
                }
                map.insert(
                    key,
                    Session {
                        next_epoch: 1,
                        partitions: BTreeSet::new(),
                        used: now,
                    },
                );
                Ok(Turn::Opened { replaced })
            }
            -1 => match map.get_mut(&key) {
                None => Err(E::ShareSessionNotFound.code()),
                Some(s) => {
                    s.used = now;
                    Ok(Turn::Closing)
                }
            },
            e => match map.get_mut(&key) {
                None => Err(E::ShareSessionNotFound.code()),
                Some(s) if s.next_epoch != e => Err(E::InvalidShareSessionEpoch.code()),
                Some(s) => {
                    s.next_epoch = if e == i32::MAX { 1 } else { e + 1 };
                    s.used = now;
                    Ok(Turn::Next)
                }
            },
        }
    }

    /// Adds and drops partitions of the session; returns its partitions after that (empty
    /// if the session is gone).
    pub(crate) fn update(
        &self,
        group: &str,
        member: &str,
        add: impl IntoIterator<Item = SharePartition>,
        forget: impl IntoIterator<Item = SharePartition>,
    ) -> Vec<SharePartition> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = map.get_mut(&(group.to_string(), member.to_string())) else {
            return Vec::new();
        };
        s.partitions.extend(add);
        for p in forget {
            s.partitions.remove(&p);
        }
        s.partitions.iter().copied().collect()
    }

    /// Drops a partition from every session that holds it (its topic is gone).
    pub(crate) fn drop_partition(&self, group: &str, member: &str, p: SharePartition) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get_mut(&(group.to_string(), member.to_string())) {
            s.partitions.remove(&p);
        }
    }

    /// Removes the session of (`group`, `member`), if any; whether there was one.
    pub(crate) fn close(&self, group: &str, member: &str) -> bool {
        let removed = {
            let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&(group.to_string(), member.to_string()))
                .is_some()
        };
        if removed {
            self.closed.notify_waiters();
        }
        removed
    }

    fn exists(&self, group: &str, member: &str) -> bool {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.contains_key(&(group.to_string(), member.to_string()))
    }

    /// Waits until (`group`, `member`) has no session, at most `grace`.
    pub(crate) async fn closed(&self, group: &str, member: &str, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let woken = self.closed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if !self.exists(group, member) {
                return;
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Sessions held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_FOUND: i16 = 122;
    const BAD_EPOCH: i16 = 123;

    #[test]
    fn epochs_open_advance_wrap_and_close() {
        let s = ShareSessions::default();
        assert_eq!(s.begin("g", "m", 1), Err(NOT_FOUND));
        assert_eq!(s.begin("g", "m", -1), Err(NOT_FOUND));
        assert_eq!(s.begin("g", "m", 0), Ok(Turn::Opened { replaced: false }));
        assert_eq!(s.begin("g", "m", 2), Err(BAD_EPOCH));
        assert_eq!(s.begin("g", "m", 1), Ok(Turn::Next));
        // A refused epoch does not move the session.
        assert_eq!(s.begin("g", "m", 1), Err(BAD_EPOCH));
        assert_eq!(s.begin("g", "m", 2), Ok(Turn::Next));
        assert_eq!(s.begin("g", "m", 0), Ok(Turn::Opened { replaced: true }));
        assert_eq!(s.begin("g", "m", 1), Ok(Turn::Next));
        assert_eq!(s.begin("g", "m", -1), Ok(Turn::Closing));
        assert!(s.close("g", "m"));
        assert_eq!(s.begin("g", "m", 2), Err(NOT_FOUND));
        // Sessions are per member.
        assert_eq!(s.begin("g", "a", 0), Ok(Turn::Opened { replaced: false }));
        assert_eq!(s.begin("g", "b", 1), Err(NOT_FOUND));
        // i32::MAX is followed by 1.
        {
            let mut map = s.inner.lock().expect("lock");
            map.get_mut(&("g".to_string(), "a".to_string()))
                .expect("session")
                .next_epoch = i32::MAX;
        }
        assert_eq!(s.begin("g", "a", i32::MAX), Ok(Turn::Next));
        assert_eq!(s.begin("g", "a", 1), Ok(Turn::Next));
        assert_eq!(s.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_leave_waits_for_the_session_to_close_within_the_grace() {
        let s = std::sync::Arc::new(ShareSessions::default());
        // No session: no wait.
        let t = tokio::time::Instant::now();
        s.closed("g", "m", LEAVE_GRACE).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
        // A session closed meanwhile ends the wait.
        s.begin("g", "m", 0).expect("open");
        let closer = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            closer.close("g", "m");
        });
        let t = tokio::time::Instant::now();
        s.closed("g", "m", LEAVE_GRACE).await;
        assert_eq!(t.elapsed(), Duration::from_millis(300));
        // One that stays open: the grace.
        s.begin("g", "m", 0).expect("open");
        let t = tokio::time::Instant::now();
        s.closed("g", "m", LEAVE_GRACE).await;
        assert_eq!(t.elapsed(), LEAVE_GRACE);
    }

    #[test]
    fn a_session_remembers_its_partitions() {
        let s = ShareSessions::default();
        let t = Uuid::from_u128(7);
        let u = Uuid::from_u128(9);
        assert!(
            s.update("g", "m", [(t, 0)], []).is_empty(),
            "no session yet"
        );
        s.begin("g", "m", 0).expect("open");
        assert_eq!(
            s.update("g", "m", [(t, 0), (t, 1)], []),
            vec![(t, 0), (t, 1)]
        );
        assert_eq!(s.update("g", "m", [(u, 0)], [(t, 0)]), vec![(t, 1), (u, 0)]);
        s.drop_partition("g", "m", (u, 0));
        assert_eq!(s.update("g", "m", [], []), vec![(t, 1)]);
        s.begin("g", "m", 0).expect("reopen");
        assert!(
            s.update("g", "m", [], []).is_empty(),
            "a new session starts empty"
        );
    }
}
