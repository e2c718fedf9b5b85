//! Subscribe: follows partitions with the core's long-poll fetch and pushes each record as it
//! is appended; with a group, as a KIP-848 member of that consumer group (the coordinator
//! assigns its partitions, shared with the group's other members, Kafka consumers included),
//! committing the positions it pushed after each round.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strom_broker::coordinator::{ConsumerHeartbeat, GroupError, OffsetCommit};
use strom_broker::quota::QuotaKind;
use strom_broker::security::acl::{Operation, ResourceType};
use strom_broker::{AbortedTxn, BrokerError, FetchLimits, FetchSpec, Isolation};
use strom_log::LogError;
use tonic::{Code, Status};

use crate::pb::{self, SubscribeRequest};
use crate::{broker_status, invalid, status, Caller, Door, Out};

/// Stored bytes one round reads per partition at most.
const PARTITION_MAX_BYTES: usize = 1 << 20;
/// Stored bytes one round reads at most.
const ROUND_MAX_BYTES: usize = 4 << 20;
/// How long one round waits for records.
const ROUND_WAIT: Duration = Duration::from_secs(5);
/// A group member's session (it heartbeats far more often).
const REBALANCE_TIMEOUT_MS: i32 = 30_000;

/// Where to start following a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum From {
    Earliest,
    Latest,
    Offset(i64),
    Time(i64),
}

impl From {
    pub(crate) fn parse(s: &str) -> Result<From, Status> {
        let bad = || {
            invalid(format!(
                "from must be earliest, latest, offset:<n> or time:<ms>, not {s:?}"
            ))
        };
        Ok(match s {
            "" | "latest" => From::Latest,
            "earliest" => From::Earliest,
            s => match s.split_once(':') {
                Some(("offset", n)) => {
                    From::Offset(n.parse().ok().filter(|n| *n >= 0).ok_or_else(bad)?)
                }
                Some(("time", n)) => From::Time(n.parse().map_err(|_| bad())?),
                _ => return Err(bad()),
            },
        })
    }

    /// The offset of partition `p` of `topic` this names.
    fn offset(self, door: &Door, topic: &str, p: i32) -> Result<i64, BrokerError> {
        let part = door.broker.partition(topic, p)?;
        let log = part.log()?;
        Ok(match self {
            From::Earliest => log.log_start_offset(),
            From::Latest => log.log_end_offset(),
            From::Offset(n) => n,
            From::Time(ts) => match door.broker.list_offset(topic, p, ts)? {
                (o, _) if o >= 0 => o,
                _ => log.log_end_offset(),
            },
        })
    }
}

fn isolation(i: i32) -> Isolation {
    if i == pb::Isolation::ReadUncommitted as i32 {
        Isolation::ReadUncommitted
    } else {
        Isolation::ReadCommitted
    }
}

/// The existing topics `patterns` name that `caller` may read (a glob matches only those; a
/// topic named exactly that the caller may not read refuses the call); NOT_FOUND when none.
pub(crate) fn readable(
    door: &Door,
    caller: &Caller,
    patterns: &[String],
) -> Result<Vec<String>, Status> {
    if patterns.is_empty() {
        return Err(invalid("topics is empty"));
    }
    let mut out = Vec::new();
    for (name, named) in door.broker.topics_matching(patterns) {
        if caller.may(door, Operation::Read, ResourceType::Topic, &name) {
            out.push(name);
        } else if named {
            caller.allow(door, Operation::Read, ResourceType::Topic, &name)?;
        }
    }
    if out.is_empty() {
        return Err(status(
            Code::NotFound,
            "UNKNOWN_TOPIC_OR_PARTITION",
            format!("no topic matches {patterns:?}"),
        ));
    }
    Ok(out)
}

/// Checks a Subscribe and returns what to follow, before the stream starts (so that a bad
/// request is a status, not a stream that ends at once).
pub(crate) fn prepare(
    door: &Door,
    caller: &Caller,
    req: &SubscribeRequest,
) -> Result<Plan, Status> {
    let from = From::parse(&req.from)?;
    let topics = readable(door, caller, &req.topics)?;
    if let Some(group) = &req.group {
        if group.is_empty() {
            return Err(invalid("group is empty"));
        }
        if !matches!(from, From::Earliest | From::Latest) {
            return Err(invalid(
                "with a group, from is earliest or latest (where partitions without a committed offset start)",
            ));
        }
        caller.allow(door, Operation::Read, ResourceType::Group, group)?;
        return Ok(Plan::Group {
            group: group.clone(),
            topics,
            from,
        });
    }
    let mut cursors = BTreeMap::new();
    for t in &topics {
        let Some(topic) = door.broker.topic(t) else {
            continue;
        };
        for p in 0..topic.partitions().len() as i32 {
            // An offline partition is not followed: the stream serves the others.
            if let Ok(o) = from.offset(door, t, p) {
                cursors.insert((t.clone(), p), o);
            }
        }
    }
    Ok(Plan::Cursors(cursors))
}

/// What a Subscribe follows.
pub(crate) enum Plan {
    /// These partitions from these offsets.
    Cursors(BTreeMap<(String, i32), i64>),
    /// What a group assigns.
    Group {
        group: String,
        topics: Vec<String>,
        from: From,
    },
}

/// Runs a Subscribe until the call ends, its deadline passes or the broker stops.
pub(crate) async fn run(
    door: Door,
    caller: Caller,
    plan: Plan,
    iso: i32,
    deadline: Option<Instant>,
    out: Out<pb::Record>,
) {
    let iso = isolation(iso);
    let end = match plan {
        Plan::Cursors(mut cursors) => {
            follow(&door, &caller, &mut cursors, iso, deadline, &out).await
        }
        Plan::Group {
            group,
            topics,
            from,
        } => {
            let mut m = Member::new(group, topics, from, &caller);
            let end = m.run(&door, &caller, iso, deadline, &out).await;
            m.leave(&door).await;
            end
        }
    };
    if let Err(s) = end {
        out.fail(s).await;
    }
}

/// Why a stream stops: `Ok` when the call went away, else the status it ends with.
type End = Result<(), Status>;

fn check_going(door: &Door, deadline: Option<Instant>, out: &Out<pb::Record>) -> Option<End> {
    if out.is_closed() {
        return Some(Ok(()));
    }
    if *door.shutdown.borrow() {
        return Some(Err(crate::shutting_down()));
    }
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Some(Err(status(
            Code::DeadlineExceeded,
            "REQUEST_TIMED_OUT",
            "the call's deadline passed",
        )));
    }
    None
}

fn wait_for(deadline: Option<Instant>, most: Duration) -> Duration {
    deadline.map_or(most, |d| {
        d.saturating_duration_since(Instant::now()).min(most)
    })
}

async fn follow(
    door: &Door,
    caller: &Caller,
    cursors: &mut BTreeMap<(String, i32), i64>,
    iso: Isolation,
    deadline: Option<Instant>,
    out: &Out<pb::Record>,
) -> End {
    loop {
        if let Some(end) = check_going(door, deadline, out) {
            return end;
        }
        let records = tokio::select! {
            r = round(door, cursors, iso, wait_for(deadline, ROUND_WAIT)) => r?,
            _ = out.closed() => return Ok(()),
        };
        let Some(bytes) = push(records, out).await else {
            return Ok(());
        };
        caller.quota_charge(door, QuotaKind::Fetch, bytes).await;
    }
}

/// Pushes one round's records; the stored bytes they came from, or `None` when the call is
/// over (ended by the client, or by `Out` for a reader that stopped reading).
async fn push(round: Round, out: &Out<pb::Record>) -> Option<usize> {
    for r in round.records {
        if !out.send(r).await {
            return None;
        }
    }
    Some(round.bytes)
}

/// One round's records, oldest first per partition.
struct Round {
    records: Vec<pb::Record>,
    bytes: usize,
}

/// One long-poll round over `cursors` (advanced past what it returns).
async fn round(
    door: &Door,
    cursors: &mut BTreeMap<(String, i32), i64>,
    iso: Isolation,
    wait: Duration,
) -> Result<Round, Status> {
    let specs: Vec<FetchSpec> = cursors
        .iter()
        .map(|((t, p), o)| FetchSpec {
            topic: t.clone(),
            partition: *p,
            offset: *o,
            max_bytes: PARTITION_MAX_BYTES,
        })
        .collect();
    let mut out = Round {
        records: Vec::new(),
        bytes: 0,
    };
    if specs.is_empty() {
        tokio::time::sleep(wait).await;
        return Ok(out);
    }
    let limits = FetchLimits {
        max_bytes: ROUND_MAX_BYTES,
        min_bytes: 1,
        max_wait: wait,
    };
    let results = door.broker.fetch_isolated(&specs, limits, false, iso).await;
    for (spec, r) in specs.iter().zip(results) {
        let key = (spec.topic.clone(), spec.partition);
        let read = match r {
            Ok(r) => r,
            Err(BrokerError::Log(LogError::OffsetOutOfRange { start, .. })) => {
                // Retention moved past the cursor: continue from the oldest record kept.
                cursors.insert(key, start);
                continue;
            }
            // Offline until a restart, or deleted: stop following it, follow the others.
            Err(e)
                if e.is_offline() || matches!(e, BrokerError::UnknownTopicOrPartition { .. }) =>
            {
                cursors.remove(&key);
                continue;
            }
            Err(e) => return Err(broker_status(e)),
        };
        out.bytes += read.data.len();
        let next = decode(
            &spec.topic,
            spec.partition,
            &read.data,
            spec.offset,
            &read.aborted,
            &mut out.records,
        );
        if let Some(next) = next {
            cursors.insert(key, next);
        }
    }
    Ok(out)
}

/// Decodes stored batches into records from offset `from` on (appended to `out`); the batches
/// of `aborted` transactions, control batches and batches that cannot be read (logged) are
/// skipped. Returns where the next read starts, `None` if nothing was read.
pub(crate) fn decode(
    topic: &str,
    partition: i32,
    data: &Bytes,
    from: i64,
    aborted: &[AbortedTxn],
    out: &mut Vec<pb::Record>,
) -> Option<i64> {
    let mut next = None;
    let mut filter = strom_broker::AbortedFilter::new(aborted);
    for (h, batch) in strom_records::decode_batches(data) {
        let skip = filter.skip(&h);
        if h.last_offset() < from {
            continue;
        }
        next = Some(h.last_offset() + 1);
        if skip {
            continue;
        }
        match batch {
            Err(bad) => {
                tracing::warn!(topic, partition, offset = bad.offset, error = %bad.error,
                    "a stored batch cannot be read: skipped");
            }
            Ok(records) => out.extend(records.into_iter().filter(|r| r.offset >= from).map(|r| {
                pb::Record {
                    topic: topic.to_string(),
                    partition,
                    offset: r.offset,
                    timestamp_ms: r.timestamp,
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| pb::Header {
                            key: String::from_utf8_lossy(&k).into_owned(),
                            value: v.unwrap_or_default(),
                        })
                        .collect(),
                }
            })),
        }
    }
    next
}

// --- group members -------------------------------------------------------------------------

/// Partitions by topic, as the coordinator assigns them.
type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// A Subscribe with a group: a KIP-848 consumer-group member.
struct Member {
    group: String,
    topics: Vec<String>,
    from: From,
    member_id: String,
    epoch: i32,
    client_host: String,
    /// The partitions it holds, and where each continues.
    positions: BTreeMap<(String, i32), i64>,
    /// What it last told the coordinator it holds.
    reported: Option<Assignment>,
}

impl Member {
    fn new(group: String, topics: Vec<String>, from: From, caller: &Caller) -> Member {
        Member {
            group,
            topics,
            from,
            member_id: format!("strom-grpc-{}", crate::queue::random_hex()),
            epoch: 0,
            client_host: caller.host.to_string(),
            positions: BTreeMap::new(),
            reported: None,
        }
    }

    fn held(&self) -> Assignment {
        let mut a: Assignment = BTreeMap::new();
        for (t, p) in self.positions.keys() {
            a.entry(t.clone()).or_default().insert(*p);
        }
        a
    }

    /// One heartbeat; applies a new assignment (revoking partitions the member may no longer
    /// hold, starting the new ones at their committed offsets). Returns the interval to the
    /// next one.
    async fn heartbeat(&mut self, door: &Door) -> Result<Duration, Status> {
        let joining = self.epoch == 0;
        let held = self.held();
        let owned = (joining || self.reported.as_ref() != Some(&held)).then_some(held);
        let hb = ConsumerHeartbeat {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: if joining { REBALANCE_TIMEOUT_MS } else { -1 },
            subscribed_topic_names: joining.then(|| self.topics.clone()),
            subscribed_topic_regex: None,
            server_assignor: None,
            owned: owned.clone(),
            client_id: "strom-grpc".into(),
            client_host: self.client_host.clone(),
        };
        let o = match door.groups.consumer_heartbeat(hb).await {
            Ok(o) => o,
            Err(GroupError::UnknownMemberId | GroupError::FencedMemberEpoch) => {
                // Fenced (a session that expired): join again, holding nothing.
                self.epoch = 0;
                self.positions.clear();
                self.reported = None;
                return Ok(Duration::ZERO);
            }
            Err(e) => return Err(group_status(e)),
        };
        self.member_id = o.member_id;
        self.epoch = o.member_epoch;
        if owned.is_some() {
            self.reported = owned;
        }
        if let Some(target) = o.assignment {
            let wanted: BTreeSet<(String, i32)> = target
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                .collect();
            self.positions.retain(|k, _| wanted.contains(k));
            let new: Vec<(String, i32)> = wanted
                .into_iter()
                .filter(|k| !self.positions.contains_key(k))
                .collect();
            let committed = door.groups.fetch_offsets(&self.group, Some(new));
            for (t, p, c) in committed {
                let start = match c {
                    Some(c) => c.offset,
                    None => self.from.offset(door, &t, p).unwrap_or(0),
                };
                self.positions.insert((t, p), start);
            }
            if self.reported.as_ref() != Some(&self.held()) {
                // Tell the coordinator at once what it holds now (revocations complete).
                return Ok(Duration::ZERO);
            }
        }
        Ok(Duration::from_millis(
            o.heartbeat_interval_ms.max(100) as u64
        ))
    }

    async fn run(
        &mut self,
        door: &Door,
        caller: &Caller,
        iso: Isolation,
        deadline: Option<Instant>,
        out: &Out<pb::Record>,
    ) -> End {
        let mut next_beat = Instant::now();
        loop {
            if let Some(end) = check_going(door, deadline, out) {
                return end;
            }
            if Instant::now() >= next_beat {
                next_beat = Instant::now() + self.heartbeat(door).await?;
                continue;
            }
            let wait = wait_for(
                deadline,
                next_beat.saturating_duration_since(Instant::now()),
            );
            let before = self.positions.clone();
            let records = tokio::select! {
                r = round(door, &mut self.positions, iso, wait) => r?,
                _ = out.closed() => return Ok(()),
            };
            let Some(bytes) = push(records, out).await else {
                return Ok(());
            };
            caller.quota_charge(door, QuotaKind::Fetch, bytes).await;
            // Commit what moved (pushed, or skipped past).
            let commits: Vec<OffsetCommit> = self
                .positions
                .iter()
                .filter(|(k, o)| before.get(*k) != Some(*o))
                .map(|((topic, partition), offset)| OffsetCommit {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    leader_epoch: -1,
                    metadata: None,
                })
                .collect();
            if !commits.is_empty() {
                if let Err(e) = door
                    .groups
                    .commit(&self.group, self.epoch, &self.member_id, None, commits)
                    .await
                {
                    tracing::debug!(group = %self.group, error = %e, "gRPC member commit refused; heartbeating");
                    next_beat = Instant::now();
                }
            }
        }
    }

    async fn leave(&self, door: &Door) {
        if self.epoch <= 0 {
            return;
        }
        let hb = ConsumerHeartbeat {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: -1,
            rebalance_timeout_ms: -1,
            client_id: "strom-grpc".into(),
            client_host: self.client_host.clone(),
            ..ConsumerHeartbeat::default()
        };
        let _ = door.groups.consumer_heartbeat(hb).await;
    }
}

pub(crate) fn group_status(e: GroupError) -> Status {
    let code = match e {
        GroupError::InvalidGroupId | GroupError::InvalidRequest(_) => Code::InvalidArgument,
        GroupError::GroupIdNotFound | GroupError::UnknownTopicOrPartition => Code::NotFound,
        GroupError::UnknownMemberId | GroupError::FencedMemberEpoch => Code::FailedPrecondition,
        GroupError::CoordinatorNotAvailable => Code::Unavailable,
        _ => Code::Aborted,
    };
    status(code, "GROUP_ERROR", e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse() {
        assert_eq!(From::parse("").unwrap(), From::Latest);
        assert_eq!(From::parse("earliest").unwrap(), From::Earliest);
        assert_eq!(From::parse("offset:42").unwrap(), From::Offset(42));
        assert_eq!(
            From::parse("time:1700000000000").unwrap(),
            From::Time(1_700_000_000_000)
        );
        for bad in ["offset:-1", "offset:x", "begin", "time:", "latest:1"] {
            assert_eq!(
                From::parse(bad).unwrap_err().code(),
                Code::InvalidArgument,
                "{bad}"
            );
        }
    }
}
