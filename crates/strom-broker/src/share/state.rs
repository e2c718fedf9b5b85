//! One share-partition's state machine, pure (no I/O, the clock passed in): the start offset
//! (SPSO), the in-flight window `[spso, end)` with one entry per offset, acquisition,
//! acknowledgement, release, lock expiry, the delivery count limit and the retry backoff.
//!
//! **Invariants:** every offset in `[spso, end)` has an entry (`recs[o - spso]`); the window
//! holds at most `Policy::max_locks` entries (acquisition of new offsets stops when full, so
//! memory does not grow with the backlog); the entry at `spso` is never acknowledged or
//! archived (the start moves past finished entries at once); a delivery count only grows.

use std::collections::VecDeque;
use std::sync::Arc;

use super::config::Policy;

/// Why a record goes to the dead-letter topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// A consumer REJECTed it.
    Rejected,
    /// It reached `share.delivery.count.limit`.
    DeliveryCountLimit,
}

impl DeadLetterReason {
    /// The value of the `_dlq.errors.disposition` header.
    pub fn name(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "CLIENT_REJECTED",
            DeadLetterReason::DeliveryCountLimit => "MAX_DELIVERY_ATTEMPTS_REACHED",
        }
    }
}

/// A record's state in the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RecState {
    /// May be acquired once `not_before_ms` (the retry backoff) has passed.
    Available { not_before_ms: i64 },
    /// Locked to a member until `until_ms`.
    Acquired { member: Arc<str>, until_ms: i64 },
    /// Accepted: never delivered again.
    Acknowledged,
    /// Finished without acceptance (rejected, delivery limit, a gap, a control record).
    Archived,
    /// To be appended to the dead-letter topic, then archived.
    DeadLetter(DeadLetterReason),
}

/// One offset of the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rec {
    pub(crate) state: RecState,
    pub(crate) delivery_count: u16,
}

impl Rec {
    fn done(&self) -> bool {
        matches!(self.state, RecState::Acknowledged | RecState::Archived)
    }
}

/// State codes as persisted (Kafka's: 0 available, 1 acquired, 2 acknowledged, 4 archived;
/// Strom's: 5 dead-letter pending after a reject, 6 after the delivery limit).
pub(crate) fn state_code(s: &RecState) -> u8 {
    match s {
        RecState::Available { .. } => 0,
        RecState::Acquired { .. } => 1,
        RecState::Acknowledged => 2,
        RecState::Archived => 4,
        RecState::DeadLetter(DeadLetterReason::Rejected) => 5,
        RecState::DeadLetter(DeadLetterReason::DeliveryCountLimit) => 6,
    }
}

/// The state a persisted code stands for at start-up: an acquired record is available again
/// (its lock died with the broker; its delivery count is kept).
pub(crate) fn state_from_code(code: u8) -> Option<RecState> {
    Some(match code {
        0 | 1 => RecState::Available { not_before_ms: 0 },
        2 => RecState::Acknowledged,
        4 => RecState::Archived,
        5 => RecState::DeadLetter(DeadLetterReason::Rejected),
        6 => RecState::DeadLetter(DeadLetterReason::DeliveryCountLimit),
        _ => return None,
    })
}

/// An acknowledgement type (Kafka's codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckType {
    /// 0: the offset is not a record (a gap): archived.
    Gap,
    /// 1: processed: never delivered again.
    Accept,
    /// 2: give it back: available again (after the backoff), or archived at the limit.
    Release,
    /// 3: unprocessable: archived (dead-lettered when a DLQ topic is set).
    Reject,
    /// 4: keep the lock: it is extended by the lock duration.
    Renew,
}

impl AckType {
    /// From Kafka's code.
    pub fn from_code(code: i8) -> Option<AckType> {
        Some(match code {
            0 => AckType::Gap,
            1 => AckType::Accept,
            2 => AckType::Release,
            3 => AckType::Reject,
            4 => AckType::Renew,
            _ => return None,
        })
    }

    /// Kafka's code.
    pub fn code(self) -> i8 {
        match self {
            AckType::Gap => 0,
            AckType::Accept => 1,
            AckType::Release => 2,
            AckType::Reject => 3,
            AckType::Renew => 4,
        }
    }
}

/// Offsets acquired together, with the delivery count they now have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcquiredRecords {
    /// First offset.
    pub first_offset: i64,
    /// Last offset (inclusive).
    pub last_offset: i64,
    /// The delivery count of every record of the range (1 on the first delivery).
    pub delivery_count: u16,
}

/// Why an acknowledgement is refused (nothing of it applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AckRefused {
    /// A record of it is not acquired by this member (or its lock expired, or the delivery
    /// count does not match).
    InvalidRecordState(String),
    /// The request itself is malformed.
    InvalidRequest(String),
}

/// One share-partition.
#[derive(Clone, Debug)]
pub(crate) struct SharePartition {
    pub(crate) spso: i64,
    pub(crate) recs: VecDeque<Rec>,
    /// Counters (metrics) since start.
    pub(crate) redeliveries: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) lock_expiries: u64,
    /// Offsets whose state changed since the last [`SharePartition::take_dirty`].
    dirty: Vec<i64>,
    start_moved: bool,
    /// The ticker need not look at this partition before then (the earliest lock expiry or
    /// backoff end; `i64::MIN` after a change): keeps idle partitions cheap.
    next_check_ms: i64,
    /// Whether a record may be waiting to be dead-lettered (false after a scan found none).
    may_dead_letter: bool,
}

/// A batch as acquisition sees it: offsets and whether it is a control batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchSpan {
    pub(crate) base: i64,
    pub(crate) last: i64,
    pub(crate) control: bool,
}

impl SharePartition {
    pub(crate) fn new(spso: i64) -> SharePartition {
        SharePartition {
            spso,
            recs: VecDeque::new(),
            redeliveries: 0,
            dead_lettered: 0,
            lock_expiries: 0,
            dirty: Vec::new(),
            start_moved: true,
            next_check_ms: i64::MIN,
            may_dead_letter: true,
        }
    }

    /// The end of the window: the next offset never acquired.
    pub(crate) fn end(&self) -> i64 {
        self.spso + self.recs.len() as i64
    }

    pub(crate) fn get(&self, offset: i64) -> Option<&Rec> {
        if offset < self.spso {
            return None;
        }
        self.recs.get((offset - self.spso) as usize)
    }

    fn get_mut(&mut self, offset: i64) -> Option<&mut Rec> {
        if offset < self.spso {
            return None;
        }
        self.recs.get_mut((offset - self.spso) as usize)
    }

    fn mark(&mut self, offset: i64) {
        self.dirty.push(offset);
        self.changed();
    }

    fn changed(&mut self) {
        self.next_check_ms = i64::MIN;
        self.may_dead_letter = true;
    }

    /// Whether the ticker must look at this partition now.
    pub(crate) fn due(&self, now_ms: i64) -> bool {
        now_ms >= self.next_check_ms
    }

    /// After the ticker looked: the next time anything can happen by itself here.
    pub(crate) fn schedule(&mut self, now_ms: i64) {
        self.next_check_ms = self
            .recs
            .iter()
            .filter_map(|r| match r.state {
                RecState::Acquired { until_ms, .. } => Some(until_ms),
                RecState::Available { not_before_ms } if not_before_ms > now_ms => {
                    Some(not_before_ms)
                }
                _ => None,
            })
            .min()
            .unwrap_or(i64::MAX);
    }

    /// Moves the start past finished entries.
    pub(crate) fn advance(&mut self) {
        while self.recs.front().is_some_and(Rec::done) {
            self.recs.pop_front();
            self.spso += 1;
            self.start_moved = true;
        }
    }

    /// Moves the start to `offset` (the log's start moved past records, or an admin reset
    /// forward): entries below it are dropped. Moving back clears the window.
    pub(crate) fn reset_start(&mut self, offset: i64) {
        if offset >= self.spso && offset <= self.end() {
            for _ in self.spso..offset {
                self.recs.pop_front();
            }
        } else {
            self.recs.clear();
        }
        self.spso = offset;
        self.start_moved = true;
        self.changed();
        self.dirty.retain(|&o| o >= offset);
        self.advance();
    }

    /// The first offset an acquisition could take now: an available, due record of the
    /// window, else the window's end if the window has room.
    pub(crate) fn acquirable_from(&self, now_ms: i64, max_locks: usize) -> Option<i64> {
        for (i, r) in self.recs.iter().enumerate() {
            if let RecState::Available { not_before_ms } = r.state {
                if not_before_ms <= now_ms {
                    return Some(self.spso + i as i64);
                }
            }
        }
        (self.recs.len() < max_locks).then(|| self.end())
    }

    /// The earliest time an available record's backoff ends (for wake-ups).
    pub(crate) fn next_due_ms(&self, now_ms: i64) -> Option<i64> {
        self.recs
            .iter()
            .filter_map(|r| match r.state {
                RecState::Available { not_before_ms } if not_before_ms > now_ms => {
                    Some(not_before_ms)
                }
                _ => None,
            })
            .min()
    }

    /// Acquires for `member` the acquirable offsets of `batches` (read from the log from
    /// [`SharePartition::acquirable_from`] on), at most `max_records`, extending the window
    /// up to `policy.max_locks`. Offsets missing between batches and control records are
    /// archived as they enter the window.
    pub(crate) fn acquire(
        &mut self,
        batches: &[BatchSpan],
        member: &Arc<str>,
        now_ms: i64,
        policy: &Policy,
        max_records: usize,
    ) -> Vec<AcquiredRecords> {
        let until_ms = now_ms.saturating_add(policy.lock_ms);
        let mut out: Vec<AcquiredRecords> = Vec::new();
        let mut taken = 0usize;
        let push = |out: &mut Vec<AcquiredRecords>, o: i64, dc: u16| match out.last_mut() {
            Some(l) if l.last_offset + 1 == o && l.delivery_count == dc => l.last_offset = o,
            _ => out.push(AcquiredRecords {
                first_offset: o,
                last_offset: o,
                delivery_count: dc,
            }),
        };
        'batches: for b in batches {
            for o in b.base.max(self.spso)..=b.last {
                if taken >= max_records {
                    break 'batches;
                }
                if o < self.end() {
                    if b.control {
                        continue;
                    }
                    let rec = self.get_mut(o).expect("in the window");
                    if let RecState::Available { not_before_ms } = rec.state {
                        if not_before_ms <= now_ms {
                            rec.delivery_count = rec.delivery_count.saturating_add(1);
                            let dc = rec.delivery_count;
                            rec.state = RecState::Acquired {
                                member: member.clone(),
                                until_ms,
                            };
                            if dc > 1 {
                                self.redeliveries += 1;
                            }
                            self.mark(o);
                            push(&mut out, o, dc);
                            taken += 1;
                        }
                    }
                    continue;
                }
                // New offsets: first fill a hole before this batch, then take it.
                while self.end() < o && self.recs.len() < policy.max_locks {
                    let e = self.end();
                    self.recs.push_back(Rec {
                        state: RecState::Archived,
                        delivery_count: 0,
                    });
                    self.mark(e);
                }
                if self.recs.len() >= policy.max_locks {
                    break 'batches;
                }
                if b.control {
                    self.recs.push_back(Rec {
                        state: RecState::Archived,
                        delivery_count: 0,
                    });
                } else {
                    self.recs.push_back(Rec {
                        state: RecState::Acquired {
                            member: member.clone(),
                            until_ms,
                        },
                        delivery_count: 1,
                    });
                    push(&mut out, o, 1);
                    taken += 1;
                }
                self.mark(o);
            }
        }
        self.advance();
        out
    }

    /// Checks an acknowledgement of `[first, last]` by `member` without changing anything.
    /// `types` has one entry for the whole range or one per offset; `delivery_count`, when
    /// given, must be every record's current count (a receipt of an older delivery is stale).
    pub(crate) fn check_ack(
        &self,
        member: &str,
        first: i64,
        last: i64,
        types: &[AckType],
        delivery_count: Option<u16>,
        now_ms: i64,
    ) -> Result<(), AckRefused> {
        if first > last || first < 0 {
            return Err(AckRefused::InvalidRequest(format!(
                "bad range [{first}, {last}]"
            )));
        }
        let n = (last - first + 1) as u64;
        if types.is_empty() || (types.len() != 1 && types.len() as u64 != n) {
            return Err(AckRefused::InvalidRequest(format!(
                "{} acknowledge types for {n} offsets",
                types.len()
            )));
        }
        for o in first..=last {
            let r = self.get(o).ok_or_else(|| {
                AckRefused::InvalidRecordState(format!("offset {o} is not in flight"))
            })?;
            match &r.state {
                RecState::Acquired {
                    member: m,
                    until_ms,
                } if &**m == member => {
                    if *until_ms <= now_ms {
                        return Err(AckRefused::InvalidRecordState(format!(
                            "the acquisition lock of offset {o} expired"
                        )));
                    }
                    if delivery_count.is_some_and(|dc| dc != r.delivery_count) {
                        return Err(AckRefused::InvalidRecordState(format!(
                            "offset {o} was delivered again since (delivery count {})",
                            r.delivery_count
                        )));
                    }
                }
                RecState::Acquired { .. } => {
                    return Err(AckRefused::InvalidRecordState(format!(
                        "offset {o} is acquired by another member"
                    )))
                }
                _ => {
                    return Err(AckRefused::InvalidRecordState(format!(
                        "offset {o} is not acquired"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Applies a checked acknowledgement.
    pub(crate) fn apply_ack(
        &mut self,
        first: i64,
        last: i64,
        types: &[AckType],
        now_ms: i64,
        policy: &Policy,
        jitter: &mut impl FnMut(i64) -> i64,
    ) {
        for o in first..=last {
            let t = if types.len() == 1 {
                types[0]
            } else {
                types[(o - first) as usize]
            };
            let dead_letter = policy.dead_letter.is_some();
            let Some(rec) = self.get_mut(o) else { continue };
            match t {
                AckType::Accept => rec.state = RecState::Acknowledged,
                AckType::Gap => rec.state = RecState::Archived,
                AckType::Reject => {
                    rec.state = if dead_letter {
                        RecState::DeadLetter(DeadLetterReason::Rejected)
                    } else {
                        RecState::Archived
                    }
                }
                AckType::Renew => {
                    if let RecState::Acquired { until_ms, .. } = &mut rec.state {
                        *until_ms = now_ms.saturating_add(policy.lock_ms);
                    }
                    continue;
                }
                AckType::Release => give_back(rec, now_ms, policy, jitter),
            }
            self.mark(o);
        }
        self.advance();
    }

    /// Gives back what `member` holds (it left or its session expired).
    pub(crate) fn release_member(
        &mut self,
        member: &str,
        now_ms: i64,
        policy: &Policy,
        jitter: &mut impl FnMut(i64) -> i64,
    ) {
        let spso = self.spso;
        let mut changed = Vec::new();
        for (i, rec) in self.recs.iter_mut().enumerate() {
            if matches!(&rec.state, RecState::Acquired { member: m, .. } if &**m == member) {
                give_back(rec, now_ms, policy, jitter);
                changed.push(spso + i as i64);
            }
        }
        if !changed.is_empty() {
            self.changed();
        }
        self.dirty.extend(changed);
        self.advance();
    }

    /// Releases records whose lock expired; returns how many.
    pub(crate) fn expire_locks(
        &mut self,
        now_ms: i64,
        policy: &Policy,
        jitter: &mut impl FnMut(i64) -> i64,
    ) -> usize {
        let spso = self.spso;
        let mut changed = Vec::new();
        for (i, rec) in self.recs.iter_mut().enumerate() {
            if matches!(rec.state, RecState::Acquired { until_ms, .. } if until_ms <= now_ms) {
                give_back(rec, now_ms, policy, jitter);
                changed.push(spso + i as i64);
            }
        }
        let n = changed.len();
        self.lock_expiries += n as u64;
        if !changed.is_empty() {
            self.changed();
        }
        self.dirty.extend(changed);
        self.advance();
        n
    }

    /// Dead-letter candidates: `(offset, delivery count, reason)`.
    pub(crate) fn dead_letters(&mut self, max: usize) -> Vec<(i64, u16, DeadLetterReason)> {
        if !self.may_dead_letter {
            return Vec::new();
        }
        let found: Vec<_> = self
            .recs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r.state {
                RecState::DeadLetter(why) => Some((self.spso + i as i64, r.delivery_count, why)),
                _ => None,
            })
            .take(max)
            .collect();
        self.may_dead_letter = !found.is_empty();
        found
    }

    /// A dead-lettered record (now in the DLQ topic, or no DLQ topic any more) is archived.
    pub(crate) fn archive_dead_letter(&mut self, offset: i64, counted: bool) {
        if let Some(r) = self.get_mut(offset) {
            if matches!(r.state, RecState::DeadLetter(_)) {
                r.state = RecState::Archived;
                if counted {
                    self.dead_lettered += 1;
                }
                self.mark(offset);
            }
        }
        self.advance();
    }

    /// What changed since the last call, as runs of `(first, last, state code, delivery
    /// count)`, and whether the start moved. Offsets now below the start are left out.
    pub(crate) fn take_dirty(&mut self) -> (Vec<(i64, i64, u8, u16)>, bool) {
        let mut d = std::mem::take(&mut self.dirty);
        d.sort_unstable();
        d.dedup();
        let mut runs: Vec<(i64, i64, u8, u16)> = Vec::new();
        for o in d {
            let Some(r) = self.get(o) else { continue };
            let (code, dc) = (state_code(&r.state), r.delivery_count);
            match runs.last_mut() {
                Some(l) if l.1 + 1 == o && l.2 == code && l.3 == dc => l.1 = o,
                _ => runs.push((o, o, code, dc)),
            }
        }
        let moved = std::mem::replace(&mut self.start_moved, false);
        (runs, moved)
    }

    /// The whole window as runs (a snapshot).
    pub(crate) fn runs(&self) -> Vec<(i64, i64, u8, u16)> {
        let mut runs: Vec<(i64, i64, u8, u16)> = Vec::new();
        for (i, r) in self.recs.iter().enumerate() {
            let o = self.spso + i as i64;
            let (code, dc) = (state_code(&r.state), r.delivery_count);
            match runs.last_mut() {
                Some(l) if l.1 + 1 == o && l.2 == code && l.3 == dc => l.1 = o,
                _ => runs.push((o, o, code, dc)),
            }
        }
        runs
    }

    /// Replays persisted runs: the window grows to cover them; acquired records come back
    /// available.
    pub(crate) fn load_runs(&mut self, spso: i64, runs: &[(i64, i64, u8, u16)], snapshot: bool) {
        if snapshot {
            self.recs.clear();
            self.spso = spso;
        } else if spso > self.spso {
            self.reset_start(spso);
        }
        for &(first, last, code, dc) in runs {
            let Some(state) = state_from_code(code) else {
                continue;
            };
            if last < self.spso || last - first > 1_000_000 {
                continue;
            }
            while self.end() <= last {
                self.recs.push_back(Rec {
                    state: RecState::Available { not_before_ms: 0 },
                    delivery_count: 0,
                });
            }
            for o in first.max(self.spso)..=last {
                let r = self.get_mut(o).expect("grown");
                r.state = state.clone();
                r.delivery_count = dc;
            }
        }
        self.dirty.clear();
        self.advance();
        self.start_moved = false;
        self.changed();
    }

    /// Counts: (in flight, acquired, available).
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let mut acquired = 0;
        let mut available = 0;
        for r in &self.recs {
            match r.state {
                RecState::Acquired { .. } => acquired += 1,
                RecState::Available { .. } => available += 1,
                _ => {}
            }
        }
        (self.recs.len(), acquired, available)
    }

    /// Records acquired by `member` with a live lock.
    pub(crate) fn held_by(&self, member: &str, now_ms: i64) -> usize {
        self.recs
            .iter()
            .filter(|r| {
                matches!(&r.state, RecState::Acquired { member: m, until_ms } if &**m == member && *until_ms > now_ms)
            })
            .count()
    }

    /// Records of the window that are finished (acknowledged or archived), for lag.
    pub(crate) fn finished(&self) -> usize {
        self.recs.iter().filter(|r| r.done()).count()
    }
}

/// A released or lock-expired record: available again after the backoff, or at the delivery
/// limit archived (dead-lettered when a DLQ topic is set).
fn give_back(rec: &mut Rec, now_ms: i64, policy: &Policy, jitter: &mut impl FnMut(i64) -> i64) {
    if rec.delivery_count >= policy.delivery_limit {
        rec.state = if policy.dead_letter.is_some() {
            RecState::DeadLetter(DeadLetterReason::DeliveryCountLimit)
        } else {
            RecState::Archived
        };
    } else {
        let b = policy.backoff(rec.delivery_count);
        let not_before_ms = if b > 0 {
            now_ms.saturating_add(b).saturating_add(jitter(b))
        } else {
            0
        };
        rec.state = RecState::Available { not_before_ms };
    }
}
