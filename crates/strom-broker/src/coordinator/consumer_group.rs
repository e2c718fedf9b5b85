//! KIP-848 consumer groups (the consumer rebalance protocol, `group.protocol=consumer`):
//! ConsumerGroupHeartbeat and ConsumerGroupDescribe, with the assignment computed here.
//!
//! A consumer group lives in the same map as the classic groups (one group-id namespace,
//! one set of committed offsets): `Group::consumer` is `Some` for it. Three epochs, as Kafka:
//! the **group epoch** moves on every change of membership, of a subscription, or of the
//! partitions of the subscribed topics (a new topic matching a member's regex); the
//! **assignment epoch** is the group epoch the target assignment was computed at (here at
//! once, by the assignor the members ask for, `uniform` by default); each **member epoch**
//! is the assignment epoch the member has reconciled to.
//!
//! Reconciliation (Kafka's CurrentAssignmentBuilder), member by member at its heartbeat:
//! a member whose epoch is behind first gives up what its new target does not hold
//! (`UnrevokedPartitions`: its answer holds only the partitions it keeps, its epoch stays);
//! once its heartbeat's owned partitions no longer hold them it moves to the new epoch and
//! gets the partitions of its target that no other member still holds
//! (`UnreleasedPartitions` until the others have released them, then `Stable`). So a
//! partition never has two owners. A member that does not revoke within its rebalance
//! timeout, or does not heartbeat within `group.consumer.session.timeout.ms`, is removed
//! (fenced). Leave is epoch -1; a static member (`instance_id`) leaving with -2 keeps its
//! assignment for the session timeout, and its next incarnation (a new member id, the same
//! instance id) takes it over.
//!
//! Durable: every change writes the group's record (epochs) and the changed members'
//! records (subscription, epochs, state, current and target assignment) to the groups'
//! internal log before the heartbeat is answered; replayed at start.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::assignor::{self, Assignment, AssignorMember, ASSIGNORS};
use super::store::{Entry, StoredConsumerGroup, StoredConsumerMember};
use super::{Group, GroupCoordinator, GroupError, GroupState};

/// The heartbeat interval given to a member waiting for partitions to be released (ms).
const UNRELEASED_INTERVAL_MS: i32 = 200;

/// Leave of a static member that comes back (a dynamic member leaves with -1).
const STATIC_LEAVE_EPOCH: i32 = -2;

/// A member's reconciliation state (Kafka's `MemberState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MemberState {
    /// Holds its target.
    Stable,
    /// Must revoke partitions before it moves to the new epoch.
    UnrevokedPartitions,
    /// At the new epoch, waiting for partitions other members still hold.
    UnreleasedPartitions,
}

impl MemberState {
    fn code(self) -> u8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }
    pub(crate) fn from_code(c: u8) -> MemberState {
        match c {
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Stable,
        }
    }
}

/// A consumer group's state as ListGroups / ConsumerGroupDescribe name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerGroupState {
    /// No members.
    Empty,
    /// The target assignment is behind the group epoch.
    Assigning,
    /// Some member has not reached the target.
    Reconciling,
    /// Every member holds its target.
    Stable,
}

impl ConsumerGroupState {
    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct CMember {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) rack: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) topics: Vec<String>,
    pub(crate) regex: Option<String>,
    pub(crate) assignor: Option<String>,
    pub(crate) epoch: i32,
    pub(crate) previous_epoch: i32,
    pub(crate) state: MemberState,
    /// A static member that left with -2 (kept for its next incarnation).
    pub(crate) left_static: bool,
    pub(crate) assigned: Assignment,
    pub(crate) revoking: Assignment,
    pub(crate) target: Assignment,
    pub(crate) last_seen: Instant,
    pub(crate) revoke_deadline: Option<Instant>,
    /// A classic-protocol member (JoinGroup/SyncGroup/Heartbeat): its session timeout.
    pub(crate) classic_session_timeout_ms: i32,
    /// A classic-protocol member: the protocol (assignor name) it joined with.
    pub(crate) classic_protocol: Option<String>,
}

impl CMember {
    pub(crate) fn new(id: &str, instance_id: Option<String>, now: Instant) -> CMember {
        CMember {
            id: id.to_string(),
            instance_id,
            rack: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            topics: Vec::new(),
            regex: None,
            assignor: None,
            epoch: 0,
            previous_epoch: 0,
            state: MemberState::Stable,
            left_static: false,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            target: Assignment::new(),
            last_seen: now,
            revoke_deadline: None,
            classic_session_timeout_ms: 0,
            classic_protocol: None,
        }
    }

    pub(super) fn stored(&self) -> StoredConsumerMember {
        StoredConsumerMember {
            id: self.id.clone(),
            instance_id: self.instance_id.clone(),
            rack: self.rack.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            topics: self.topics.clone(),
            regex: self.regex.clone(),
            assignor: self.assignor.clone(),
            epoch: self.epoch,
            previous_epoch: self.previous_epoch,
            state: self.state.code(),
            left_static: self.left_static,
            assigned: self.assigned.clone(),
            revoking: self.revoking.clone(),
            target: self.target.clone(),
            classic_session_timeout_ms: self.classic_session_timeout_ms,
            classic_protocol: self.classic_protocol.clone(),
        }
    }

    pub(crate) fn from_stored(s: StoredConsumerMember, now: Instant) -> CMember {
        CMember {
            id: s.id,
            instance_id: s.instance_id,
            rack: s.rack,
            client_id: s.client_id,
            client_host: s.client_host,
            rebalance_timeout_ms: s.rebalance_timeout_ms,
            topics: s.topics,
            regex: s.regex,
            assignor: s.assignor,
            epoch: s.epoch,
            previous_epoch: s.previous_epoch,
            state: MemberState::from_code(s.state),
            left_static: s.left_static,
            assigned: s.assigned,
            revoking: s.revoking,
            target: s.target,
            last_seen: now,
            // A member still revoking after a restart has its rebalance timeout again.
            revoke_deadline: (MemberState::from_code(s.state) == MemberState::UnrevokedPartitions)
                .then(|| now + Duration::from_millis(s.rebalance_timeout_ms.max(0) as u64)),
            classic_session_timeout_ms: s.classic_session_timeout_ms,
            classic_protocol: s.classic_protocol,
        }
    }

    /// What the member may hold now: its assigned and its not yet revoked partitions.
    fn owns(&self, topic: &str, p: i32) -> bool {
        self.assigned.get(topic).is_some_and(|s| s.contains(&p))
            || self.revoking.get(topic).is_some_and(|s| s.contains(&p))
    }
}

/// The consumer-protocol part of a group.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConsumerGroup {
    pub(crate) epoch: i32,
    pub(crate) assignment_epoch: i32,
    pub(crate) members: BTreeMap<String, CMember>,
    /// Partition counts of the subscribed topics at the last epoch (`None` after a replay:
    /// taken as they are at the first heartbeat, a new epoch only if the targets miss some).
    pub(crate) subscribed: Option<BTreeMap<String, i32>>,
    /// The assignor of the last target.
    pub(crate) assignor: String,
}

impl ConsumerGroup {
    pub(crate) fn stored(&self) -> StoredConsumerGroup {
        StoredConsumerGroup {
            epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor.clone(),
        }
    }

    /// Kafka's state of the group.
    pub(crate) fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.assignment_epoch < self.epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().any(|m| {
            !m.left_static
                && (m.epoch != self.assignment_epoch
                    || m.state != MemberState::Stable
                    || m.assigned != m.target)
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    fn by_instance(&self, instance: &str) -> Option<&CMember> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// Whether a member other than `me` holds the partition.
    fn held_by_other(&self, me: &str, topic: &str, p: i32) -> bool {
        self.members
            .values()
            .any(|m| m.id != me && m.owns(topic, p))
    }

    /// The topics a member subscribes to that exist: its names and its regex's matches.
    fn resolved(m: &CMember, topics: &BTreeMap<String, i32>) -> BTreeSet<String> {
        let re = m.regex.as_deref().and_then(|r| compile(r).ok());
        topics
            .keys()
            .filter(|t| m.topics.contains(t) || re.as_ref().is_some_and(|re| re.is_match(t)))
            .cloned()
            .collect()
    }

    /// The partition counts of every topic some member subscribes to.
    fn subscription_metadata(&self, topics: &BTreeMap<String, i32>) -> BTreeMap<String, i32> {
        let mut out = BTreeMap::new();
        for m in self.members.values() {
            for t in ConsumerGroup::resolved(m, topics) {
                out.insert(t.clone(), topics[&t]);
            }
        }
        out
    }

    /// The assignor most members ask for (the default when none does).
    fn preferred_assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for a in ASSIGNORS {
            let n = votes.get(a).copied().unwrap_or(0);
            if n > 0 && best.is_none_or(|(_, b)| n > b) {
                best = Some((a, n));
            }
        }
        best.map_or(ASSIGNORS[0], |(a, _)| a).to_string()
    }

    /// Bumps the group epoch (once) when the membership or a subscription `changed` or the
    /// subscribed topics' partitions did, then computes the target assignment when it is
    /// behind the group epoch.
    pub(crate) fn refresh(&mut self, topics: &BTreeMap<String, i32>, changed: bool) {
        let meta = self.subscription_metadata(topics);
        let moved = match &self.subscribed {
            Some(s) => *s != meta,
            // After a replay: a new epoch only if the targets miss a subscribed topic (or
            // hold one no longer subscribed), e.g. a topic created while the broker was down.
            None => {
                let targeted: BTreeSet<&String> = self
                    .members
                    .values()
                    .flat_map(|m| m.target.keys())
                    .collect();
                !self.members.is_empty() && targeted != meta.keys().collect()
            }
        };
        if changed || moved {
            self.epoch += 1;
        }
        self.subscribed = Some(meta);
        if self.assignment_epoch >= self.epoch {
            return;
        }
        let resolved: Vec<(String, BTreeSet<String>)> = self
            .members
            .values()
            .map(|m| (m.id.clone(), ConsumerGroup::resolved(m, topics)))
            .collect();
        let inputs: Vec<AssignorMember<'_>> = resolved
            .iter()
            .map(|(id, ts)| AssignorMember {
                id,
                topics: ts,
                current: &self.members[id].target,
            })
            .collect();
        let name = self.preferred_assignor();
        let subscribed = self.subscribed.clone().unwrap_or_default();
        let mut out = assignor::assign(&name, &inputs, &subscribed);
        for m in self.members.values_mut() {
            m.target = out.remove(&m.id).unwrap_or_default();
        }
        self.assignor = name;
        self.assignment_epoch = self.epoch;
    }

    /// Moves one member toward its target. `owned` is what its heartbeat says it holds.
    pub(crate) fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: Instant) {
        let epoch = self.assignment_epoch;
        let Some(m) = self.members.get(id) else {
            return;
        };
        if m.left_static {
            return;
        }
        let mut m = m.clone();
        if m.state == MemberState::UnrevokedPartitions {
            let revoked = owned.is_some_and(|o| {
                !m.revoking
                    .iter()
                    .any(|(t, ps)| o.get(t).is_some_and(|os| !os.is_disjoint(ps)))
            });
            if !revoked {
                self.members.insert(id.to_string(), m);
                return;
            }
            m.revoking.clear();
            m.revoke_deadline = None;
            m.state = MemberState::Stable;
        }
        if m.epoch != epoch {
            // What it holds that the target does not: revoke first, at the current epoch.
            let mut keep = Assignment::new();
            let mut revoke = Assignment::new();
            for (t, ps) in &m.assigned {
                for &p in ps {
                    let into = if m.target.get(t).is_some_and(|s| s.contains(&p)) {
                        &mut keep
                    } else {
                        &mut revoke
                    };
                    into.entry(t.clone()).or_default().insert(p);
                }
            }
            if !revoke.is_empty() {
                m.assigned = keep;
                m.revoking = revoke;
                m.state = MemberState::UnrevokedPartitions;
                m.revoke_deadline =
                    Some(now + Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64));
                self.members.insert(id.to_string(), m);
                return;
            }
            m.previous_epoch = m.epoch;
            m.epoch = epoch;
        }
        // At the target epoch: take what of the target nobody else holds.
        let mut assigned = Assignment::new();
        let mut missing = false;
        for (t, ps) in &m.target {
            for &p in ps {
                if self.held_by_other(id, t, p) {
                    missing = true;
                } else {
                    assigned.entry(t.clone()).or_default().insert(p);
                }
            }
        }
        m.assigned = assigned;
        m.state = if missing {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        self.members.insert(id.to_string(), m);
    }
}

/// An RE2-syntax regex (the `regex` crate is RE2 syntax) matching whole topic names.
pub(crate) fn compile(re: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| e.to_string())
}

/// A ConsumerGroupHeartbeat.
#[derive(Clone, Debug, Default)]
pub struct ConsumerHeartbeat {
    /// Group id.
    pub group_id: String,
    /// Member id (the client generates it from v1; empty on a v0 join).
    pub member_id: String,
    /// Member epoch: 0 join, -1 leave, -2 static leave.
    pub member_epoch: i32,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// Rack.
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// `None`: unchanged; empty: none.
    pub subscribed_topic_regex: Option<String>,
    /// `None`: unchanged.
    pub server_assignor: Option<String>,
    /// What the member holds (`None`: unchanged).
    pub owned: Option<Assignment>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
}

/// Its answer.
#[derive(Clone, Debug)]
pub struct ConsumerHeartbeatOutcome {
    /// Member id.
    pub member_id: String,
    /// Member epoch.
    pub member_epoch: i32,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
    /// The partitions the member may hold, when they changed or it sent a full request.
    pub assignment: Option<Assignment>,
}

/// A member as ConsumerGroupDescribe shows it.
#[derive(Clone, Debug)]
pub struct ConsumerMemberDescription {
    /// Member id.
    pub member_id: String,
    /// Instance id.
    pub instance_id: Option<String>,
    /// Rack.
    pub rack: Option<String>,
    /// Member epoch.
    pub member_epoch: i32,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Subscribed topic names.
    pub topics: Vec<String>,
    /// Subscribed regex.
    pub regex: Option<String>,
    /// Current assignment.
    pub assignment: Assignment,
    /// Target assignment.
    pub target: Assignment,
    /// Whether it uses the classic protocol (JoinGroup/SyncGroup) in this consumer group.
    pub classic: bool,
}

/// A consumer group as ConsumerGroupDescribe shows it.
#[derive(Clone, Debug)]
pub struct ConsumerGroupDescription {
    /// State.
    pub state: ConsumerGroupState,
    /// Group epoch.
    pub group_epoch: i32,
    /// Assignment epoch.
    pub assignment_epoch: i32,
    /// The assignor of the target.
    pub assignor: String,
    /// Members.
    pub members: Vec<ConsumerMemberDescription>,
}

fn invalid(msg: impl Into<String>) -> GroupError {
    GroupError::InvalidRequest(msg.into())
}

/// The partition counts of every topic (the regexes and assignors' view).
pub type TopicsView = std::sync::Arc<dyn Fn() -> BTreeMap<String, i32> + Send + Sync>;

impl GroupCoordinator {
    /// Tells the coordinator the topics (names and partition counts, internal ones left out).
    pub fn set_topics(&self, topics: TopicsView) {
        *self.topics.write() = Some(topics);
    }

    pub(super) fn topic_counts(&self) -> BTreeMap<String, i32> {
        self.topics.read().as_ref().map(|f| f()).unwrap_or_default()
    }

    /// Whether `group_id` is a KIP-848 consumer group.
    pub fn is_consumer_group(&self, group_id: &str) -> bool {
        self.groups
            .lock()
            .get(group_id)
            .is_some_and(|g| g.consumer.is_some())
    }

    /// Whether `group_id` is a KIP-848 consumer group with members (a classic JoinGroup
    /// joins it as a classic member; an empty one becomes a classic group instead).
    pub fn is_active_consumer_group(&self, group_id: &str) -> bool {
        self.groups
            .lock()
            .get(group_id)
            .and_then(|g| g.consumer.as_ref())
            .is_some_and(|c| !c.members.is_empty())
    }

    /// ConsumerGroupHeartbeat: join (epoch 0), heartbeat, leave (-1, static -2).
    pub async fn consumer_heartbeat(
        &self,
        hb: ConsumerHeartbeat,
    ) -> Result<ConsumerHeartbeatOutcome, GroupError> {
        validate(&hb)?;
        if self.is_foreign(&hb.group_id) {
            return Err(GroupError::GroupIdNotFound);
        }
        let topics = self.topic_counts();
        let now = Instant::now();
        let group_id = hb.group_id.clone();
        let (outcome, entries) = {
            let mut groups = self.groups.lock();
            // Only a join creates a group (a join into an empty group, once `validate`
            // passed, is always accepted).
            if hb.member_epoch != 0 && !groups.contains_key(&group_id) {
                return Err(GroupError::UnknownMemberId);
            }
            let g = groups.entry(group_id.clone()).or_insert_with(Group::new);
            let mut upgraded = None;
            if g.consumer.is_none() && !g.members.is_empty() {
                // Kafka's online upgrade: a join into a Stable classic group of consumers.
                if hb.member_epoch != 0 {
                    return Err(GroupError::UnknownMemberId);
                }
                let cg = self.upgrade_classic(g).ok_or(GroupError::GroupIdNotFound)?;
                upgraded = Some(super::store::Entry::Group {
                    group: group_id.clone(),
                    value: Some(super::store::StoredGroup {
                        generation: g.generation,
                        protocol_type: "consumer".into(),
                        protocol: String::new(),
                        leader: String::new(),
                        members: Vec::new(),
                    }),
                });
                tracing::info!(group = %group_id, members = cg.members.len(), "classic group upgraded to a consumer group");
                g.members.clear();
                g.pending.clear();
                g.consumer = Some(cg);
                g.protocol.clear();
                g.leader.clear();
            }
            if g.consumer.is_none() {
                if !g.members.is_empty() || g.state != GroupState::Empty {
                    return Err(GroupError::GroupIdNotFound);
                }
                if hb.member_epoch != 0 {
                    return Err(GroupError::UnknownMemberId);
                }
                // An empty classic group (committed offsets only) becomes a consumer group.
                g.consumer = Some(ConsumerGroup::default());
                g.protocol_type = "consumer".into();
                g.protocol.clear();
            }
            let cg = g.consumer.as_mut().expect("set");
            let before_group = cg.stored();
            let before: BTreeMap<String, StoredConsumerMember> = if upgraded.is_some() {
                // Every upgraded member is written.
                BTreeMap::new()
            } else {
                cg.members
                    .iter()
                    .map(|(k, m)| (k.clone(), m.stored()))
                    .collect()
            };
            // Sized by the group as it is before this heartbeat (a joiner counts once in).
            let joining = usize::from(!cg.members.contains_key(&hb.member_id));
            let interval = self
                .config
                .consumer_heartbeat_interval(cg.members.len() + joining);
            let outcome = heartbeat_locked(cg, hb, &topics, interval, now)?;
            // Mirror into the classic fields other paths read (retention, listing).
            g.generation = cg.epoch;
            g.state = if cg.members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            };
            if cg.members.is_empty() {
                g.empty_since_ms = strom_log::now_ms();
            }
            let entries: Vec<Entry> = upgraded
                .into_iter()
                .chain(changes(&group_id, cg, &before_group, &before))
                .collect();
            (outcome, entries)
        };
        if !entries.is_empty() {
            let _w = self.write_lock.lock().await;
            self.write(entries).await?;
        }
        Ok(outcome)
    }

    /// Session and rebalance timeouts of the consumer groups (from `run`).
    pub(super) fn expire_consumer_members(
        &self,
        id: &str,
        g: &mut Group,
        now: Instant,
    ) -> Vec<Entry> {
        let session = Duration::from_millis(self.config.consumer_session_timeout_ms.max(0) as u64);
        let Some(cg) = g.consumer.as_mut() else {
            return Vec::new();
        };
        let gone: Vec<String> = cg
            .members
            .values()
            .filter(|m| {
                let session = if m.classic_protocol.is_some() {
                    Duration::from_millis(m.classic_session_timeout_ms.max(0) as u64)
                } else {
                    session
                };
                now.duration_since(m.last_seen) > session
                    || m.revoke_deadline.is_some_and(|d| now >= d)
            })
            .map(|m| m.id.clone())
            .collect();
        if gone.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for m in &gone {
            tracing::info!(group = %id, member = %m, "consumer group member fenced (session or rebalance timeout)");
            cg.members.remove(m);
            out.push(Entry::ConsumerMember {
                group: id.to_string(),
                member: m.clone(),
                value: None,
            });
        }
        let topics = self.topic_counts();
        cg.refresh(&topics, true);
        for m in cg.members.values() {
            out.push(Entry::ConsumerMember {
                group: id.to_string(),
                member: m.id.clone(),
                value: Some(Box::new(m.stored())),
            });
        }
        out.push(Entry::ConsumerGroup {
            group: id.to_string(),
            value: Some(cg.stored()),
        });
        g.generation = cg.epoch;
        if cg.members.is_empty() {
            g.state = GroupState::Empty;
            g.empty_since_ms = strom_log::now_ms();
        }
        out
    }

    /// ConsumerGroupDescribe of one group; GROUP_ID_NOT_FOUND when it is not a consumer
    /// group.
    pub fn describe_consumer_group(
        &self,
        group_id: &str,
    ) -> Result<ConsumerGroupDescription, GroupError> {
        let groups = self.groups.lock();
        let cg = groups
            .get(group_id)
            .and_then(|g| g.consumer.as_ref())
            .ok_or(GroupError::GroupIdNotFound)?;
        Ok(ConsumerGroupDescription {
            state: cg.state(),
            group_epoch: cg.epoch,
            assignment_epoch: cg.assignment_epoch,
            assignor: if cg.assignor.is_empty() {
                ASSIGNORS[0].to_string()
            } else {
                cg.assignor.clone()
            },
            members: cg
                .members
                .values()
                .map(|m| ConsumerMemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack: m.rack.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    topics: m.topics.clone(),
                    regex: m.regex.clone(),
                    assignment: m.assigned.clone(),
                    target: m.target.clone(),
                    classic: m.classic_protocol.is_some(),
                })
                .collect(),
        })
    }

    /// The consumer group's state for ListGroups, if `group_id` is one.
    pub(super) fn consumer_state(g: &Group) -> Option<ConsumerGroupState> {
        g.consumer.as_ref().map(|c| c.state())
    }

    /// OffsetFetch by a member (v9: member id and epoch): STALE_MEMBER_EPOCH when the epoch
    /// is not the member's, UNKNOWN_MEMBER_ID when it is not a member.
    pub fn check_fetch_member(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
    ) -> Result<(), GroupError> {
        if member_id.is_empty() && member_epoch < 0 {
            return Ok(());
        }
        let groups = self.groups.lock();
        let Some(cg) = groups.get(group_id).and_then(|g| g.consumer.as_ref()) else {
            return Ok(());
        };
        let m = cg
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if m.epoch != member_epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }
}

/// OffsetCommit into a consumer group (Kafka's ConsumerGroup.validateOffsetCommit): epoch
/// -1 commits only into an empty group; a member's epoch above its own is FENCED_MEMBER_EPOCH,
/// below STALE_MEMBER_EPOCH.
pub(crate) fn validate_commit(
    cg: &ConsumerGroup,
    member_id: &str,
    member_epoch: i32,
) -> Result<(), GroupError> {
    if member_epoch < 0 && cg.members.is_empty() {
        return Ok(());
    }
    let m = cg
        .members
        .get(member_id)
        .ok_or(GroupError::UnknownMemberId)?;
    if m.classic_protocol.is_some() {
        // A classic member commits with its generation (its member epoch).
        return if member_epoch == m.epoch {
            Ok(())
        } else {
            Err(GroupError::IllegalGeneration)
        };
    }
    match member_epoch.cmp(&m.epoch) {
        std::cmp::Ordering::Greater => Err(GroupError::FencedMemberEpoch),
        std::cmp::Ordering::Less => Err(GroupError::StaleMemberEpoch),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// The records of what changed in the group: its members' (written, or tombstones for
/// the ones gone) and its epochs'.
pub(super) fn changes(
    group: &str,
    cg: &ConsumerGroup,
    before_group: &StoredConsumerGroup,
    before: &BTreeMap<String, StoredConsumerMember>,
) -> Vec<Entry> {
    let mut out = Vec::new();
    for (id, m) in &cg.members {
        let now = m.stored();
        if before.get(id) != Some(&now) {
            out.push(Entry::ConsumerMember {
                group: group.to_string(),
                member: id.clone(),
                value: Some(Box::new(now)),
            });
        }
    }
    for id in before.keys().filter(|k| !cg.members.contains_key(*k)) {
        out.push(Entry::ConsumerMember {
            group: group.to_string(),
            member: id.clone(),
            value: None,
        });
    }
    if cg.stored() != *before_group || before.is_empty() {
        out.push(Entry::ConsumerGroup {
            group: group.to_string(),
            value: Some(cg.stored()),
        });
    }
    out
}

fn validate(hb: &ConsumerHeartbeat) -> Result<(), GroupError> {
    if hb.group_id.is_empty() {
        return Err(GroupError::InvalidGroupId);
    }
    if hb.member_epoch < STATIC_LEAVE_EPOCH {
        return Err(invalid(format!(
            "member epoch {} is not valid",
            hb.member_epoch
        )));
    }
    if hb.member_epoch == STATIC_LEAVE_EPOCH && hb.instance_id.is_none() {
        return Err(invalid(
            "member epoch -2 is for static members (instance id)",
        ));
    }
    if hb.member_epoch != 0 && hb.member_id.is_empty() {
        return Err(invalid("the member id must be set"));
    }
    if hb.member_epoch == 0 {
        if hb.rebalance_timeout_ms <= 0 {
            return Err(invalid(
                "RebalanceTimeoutMs must be provided in the first request",
            ));
        }
        if hb.owned.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(invalid("TopicPartitions must be empty when joining"));
        }
        if hb.subscribed_topic_names.is_none() && hb.subscribed_topic_regex.is_none() {
            return Err(invalid(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in the first request",
            ));
        }
    }
    if let Some(a) = hb.server_assignor.as_deref() {
        if !ASSIGNORS.contains(&a) {
            return Err(GroupError::UnsupportedAssignor(a.to_string()));
        }
    }
    if let Some(re) = hb.subscribed_topic_regex.as_deref() {
        if !re.is_empty() {
            compile(re).map_err(GroupError::InvalidRegularExpression)?;
        }
    }
    Ok(())
}

fn heartbeat_locked(
    cg: &mut ConsumerGroup,
    hb: ConsumerHeartbeat,
    topics: &BTreeMap<String, i32>,
    interval: i32,
    now: Instant,
) -> Result<ConsumerHeartbeatOutcome, GroupError> {
    let member_id = if hb.member_id.is_empty() {
        super::new_member_id(&hb.client_id)
    } else {
        hb.member_id.clone()
    };
    // --- leave ---
    if hb.member_epoch < 0 {
        let m = match hb.instance_id.as_deref() {
            Some(inst) => cg.by_instance(inst).map(|m| m.id.clone()),
            None => cg.members.get(&member_id).map(|m| m.id.clone()),
        };
        let Some(id) = m else {
            return Err(GroupError::UnknownMemberId);
        };
        if id != member_id {
            return Err(GroupError::FencedInstanceId);
        }
        if hb.member_epoch == STATIC_LEAVE_EPOCH {
            // Kept (with its assignment) for its next incarnation, until the session ends.
            if let Some(m) = cg.members.get_mut(&id) {
                m.left_static = true;
                m.last_seen = now;
            }
        } else {
            cg.members.remove(&id);
            cg.refresh(topics, true);
        }
        return Ok(ConsumerHeartbeatOutcome {
            member_id,
            member_epoch: hb.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        });
    }
    let full = hb.member_epoch == 0
        || (hb.rebalance_timeout_ms != -1
            && hb.subscribed_topic_names.is_some()
            && hb.owned.is_some());
    // --- join / find the member ---
    if hb.member_epoch == 0 {
        let replaced = match hb.instance_id.as_deref() {
            Some(inst) => match cg.by_instance(inst) {
                Some(old) if old.id == member_id => None,
                Some(old) if old.left_static => Some(old.id.clone()),
                Some(_) => return Err(GroupError::UnreleasedInstanceId),
                None => None,
            },
            None => None,
        };
        let m = match replaced.and_then(|old| cg.members.remove(&old)) {
            // The static member's next incarnation: its assignment and epoch carry over.
            Some(mut old) => {
                old.id = member_id.clone();
                old.left_static = false;
                old
            }
            None => match cg.members.remove(&member_id) {
                // A rejoin under the same id: it holds nothing any more.
                Some(mut old) => {
                    old.epoch = 0;
                    old.previous_epoch = 0;
                    old.assigned.clear();
                    old.revoking.clear();
                    old.state = MemberState::Stable;
                    old.revoke_deadline = None;
                    old
                }
                None => CMember::new(&member_id, hb.instance_id.clone(), now),
            },
        };
        cg.members.insert(member_id.clone(), m);
    } else {
        let m = cg
            .members
            .get(&member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if m.left_static {
            return Err(GroupError::UnknownMemberId);
        }
        // The instance id is sent when it is new (null: unchanged).
        if hb.instance_id.is_some() && m.instance_id != hb.instance_id {
            return Err(GroupError::FencedInstanceId);
        }
        if hb.member_epoch > m.epoch {
            return Err(GroupError::FencedMemberEpoch);
        }
        if hb.member_epoch < m.epoch {
            // A lost answer: the previous epoch is still good if it holds what it was given.
            let same = hb.owned.as_ref().is_some_and(|o| {
                let o: Assignment = o
                    .iter()
                    .filter(|(_, ps)| !ps.is_empty())
                    .map(|(t, ps)| (t.clone(), ps.clone()))
                    .collect();
                o == m.assigned
            });
            if !(hb.member_epoch == m.previous_epoch && same) {
                return Err(GroupError::FencedMemberEpoch);
            }
        }
    }
    // --- update the member ---
    let m = cg.members.get_mut(&member_id).expect("present");
    // A new member changes the group.
    let mut changed = hb.member_epoch == 0;
    if let Some(ts) = hb.subscribed_topic_names {
        let mut ts = ts;
        ts.sort();
        ts.dedup();
        if ts != m.topics {
            m.topics = ts;
            changed = true;
        }
    }
    if let Some(re) = hb.subscribed_topic_regex {
        let re = (!re.is_empty()).then_some(re);
        if re != m.regex {
            m.regex = re;
            changed = true;
        }
    }
    if let Some(a) = hb.server_assignor {
        if m.assignor.as_deref() != Some(&a) {
            m.assignor = Some(a);
            changed = true;
        }
    }
    if hb.rebalance_timeout_ms > 0 {
        m.rebalance_timeout_ms = hb.rebalance_timeout_ms;
    }
    if hb.rack_id.is_some() {
        m.rack = hb.rack_id;
    }
    if hb.instance_id.is_some() {
        m.instance_id = hb.instance_id;
    }
    m.client_id = hb.client_id;
    m.client_host = hb.client_host;
    m.last_seen = now;
    let before = m.assigned.clone();
    cg.refresh(topics, changed);
    cg.reconcile(&member_id, hb.owned.as_ref(), now);
    let m = &cg.members[&member_id];
    let send = full || m.assigned != before || hb.member_epoch != m.epoch;
    // A member waiting for partitions others still hold asks again soon, not a whole
    // interval later: they are its as soon as their owners have revoked them.
    let interval = if m.state == MemberState::UnreleasedPartitions {
        interval.min(UNRELEASED_INTERVAL_MS)
    } else {
        interval
    };
    Ok(ConsumerHeartbeatOutcome {
        member_id: member_id.clone(),
        member_epoch: m.epoch,
        heartbeat_interval_ms: interval,
        assignment: send.then(|| m.assigned.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> BTreeMap<String, i32> {
        [("t".to_string(), 4), ("other".to_string(), 2)]
            .into_iter()
            .collect()
    }

    fn join(cg: &mut ConsumerGroup, id: &str, now: Instant) -> ConsumerHeartbeatOutcome {
        heartbeat_locked(
            cg,
            ConsumerHeartbeat {
                group_id: "g".into(),
                member_id: id.into(),
                member_epoch: 0,
                rebalance_timeout_ms: 1000,
                subscribed_topic_names: Some(vec!["t".into()]),
                owned: Some(Assignment::new()),
                ..Default::default()
            },
            &topics(),
            5000,
            now,
        )
        .unwrap()
    }

    fn beat(
        cg: &mut ConsumerGroup,
        id: &str,
        epoch: i32,
        owned: &Assignment,
        now: Instant,
    ) -> Result<ConsumerHeartbeatOutcome, GroupError> {
        heartbeat_locked(
            cg,
            ConsumerHeartbeat {
                group_id: "g".into(),
                member_id: id.into(),
                member_epoch: epoch,
                rebalance_timeout_ms: -1,
                owned: Some(owned.clone()),
                ..Default::default()
            },
            &topics(),
            5000,
            now,
        )
    }

    fn n(a: &Assignment) -> usize {
        a.values().map(|p| p.len()).sum()
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_revoked_it() {
        let now = Instant::now();
        let mut cg = ConsumerGroup::default();
        let a = join(&mut cg, "a", now);
        assert_eq!(a.member_epoch, 1);
        let a_owned = a.assignment.unwrap();
        assert_eq!(n(&a_owned), 4);
        assert_eq!(cg.state(), ConsumerGroupState::Stable);

        let b = join(&mut cg, "b", now);
        assert_eq!(b.member_epoch, 2);
        // b is at the new epoch but a still holds everything: b gets nothing yet, and is
        // asked back soon.
        assert_eq!(n(b.assignment.as_ref().unwrap()), 0);
        assert_eq!(b.heartbeat_interval_ms, UNRELEASED_INTERVAL_MS);
        assert_eq!(a.heartbeat_interval_ms, 5000);
        assert_eq!(cg.state(), ConsumerGroupState::Reconciling);

        // a learns it must give up two partitions; its epoch stays until it did.
        let a2 = beat(&mut cg, "a", 1, &a_owned, now).unwrap();
        assert_eq!(a2.member_epoch, 1);
        let kept = a2.assignment.unwrap();
        assert_eq!(n(&kept), 2);
        // Still owned by a (not revoked yet): b still waits.
        let b2 = beat(&mut cg, "b", 2, &Assignment::new(), now).unwrap();
        assert!(b2.assignment.is_none_or(|x| n(&x) == 0));
        // a revokes: it moves to epoch 2, then b gets the two released partitions.
        let a3 = beat(&mut cg, "a", 1, &kept, now).unwrap();
        assert_eq!(a3.member_epoch, 2);
        let b3 = beat(&mut cg, "b", 2, &Assignment::new(), now).unwrap();
        let got = b3.assignment.unwrap();
        assert_eq!(n(&got), 2);
        for (t, ps) in &got {
            assert!(kept.get(t).is_none_or(|k| k.is_disjoint(ps)));
        }
        assert_eq!(cg.state(), ConsumerGroupState::Stable);
    }

    #[test]
    fn epochs_are_checked_as_kafka_checks_them() {
        let now = Instant::now();
        let mut cg = ConsumerGroup::default();
        let a = join(&mut cg, "a", now);
        let owned = a.assignment.unwrap();
        assert_eq!(
            beat(&mut cg, "a", 5, &owned, now).unwrap_err(),
            GroupError::FencedMemberEpoch
        );
        assert_eq!(
            beat(&mut cg, "nobody", 1, &owned, now).unwrap_err(),
            GroupError::UnknownMemberId
        );
        assert!(validate_commit(&cg, "a", 1).is_ok());
        assert_eq!(
            validate_commit(&cg, "a", 0).unwrap_err(),
            GroupError::StaleMemberEpoch
        );
        assert_eq!(
            validate_commit(&cg, "a", 9).unwrap_err(),
            GroupError::FencedMemberEpoch
        );
    }

    #[test]
    fn a_static_member_comes_back_with_its_assignment() {
        let now = Instant::now();
        let mut cg = ConsumerGroup::default();
        let hb = |id: &str, epoch: i32| ConsumerHeartbeat {
            group_id: "g".into(),
            member_id: id.into(),
            member_epoch: epoch,
            instance_id: Some("i1".into()),
            rebalance_timeout_ms: 1000,
            subscribed_topic_names: Some(vec!["t".into()]),
            owned: Some(Assignment::new()),
            ..Default::default()
        };
        let first = heartbeat_locked(&mut cg, hb("a", 0), &topics(), 5000, now).unwrap();
        let given = first.assignment.unwrap();
        // Another incarnation while the first is alive: refused.
        assert_eq!(
            heartbeat_locked(&mut cg, hb("a2", 0), &topics(), 5000, now).unwrap_err(),
            GroupError::UnreleasedInstanceId
        );
        heartbeat_locked(&mut cg, hb("a", -2), &topics(), 5000, now).unwrap();
        let epoch = cg.epoch;
        let again = heartbeat_locked(&mut cg, hb("a2", 0), &topics(), 5000, now).unwrap();
        assert_eq!(again.assignment.unwrap(), given);
        assert!(!cg.members.contains_key("a"));
        assert_eq!(cg.members.len(), 1);
        assert!(cg.epoch > epoch - 1);
    }

    #[test]
    fn a_regex_picks_up_a_new_topic() {
        let now = Instant::now();
        let mut cg = ConsumerGroup::default();
        let mut ts = topics();
        let out = heartbeat_locked(
            &mut cg,
            ConsumerHeartbeat {
                group_id: "g".into(),
                member_id: "a".into(),
                rebalance_timeout_ms: 1000,
                subscribed_topic_regex: Some("pre.*".into()),
                ..Default::default()
            },
            &ts,
            5000,
            now,
        )
        .unwrap();
        assert_eq!(n(out.assignment.as_ref().unwrap()), 0);
        ts.insert("prefix-1".into(), 3);
        ts.insert("xprefix".into(), 3);
        let again = heartbeat_locked(
            &mut cg,
            ConsumerHeartbeat {
                group_id: "g".into(),
                member_id: "a".into(),
                member_epoch: out.member_epoch,
                rebalance_timeout_ms: -1,
                ..Default::default()
            },
            &ts,
            5000,
            now,
        )
        .unwrap();
        let a = again.assignment.unwrap();
        assert_eq!(a.keys().collect::<Vec<_>>(), vec!["prefix-1"]);
        assert_eq!(n(&a), 3);
    }

    #[test]
    fn bad_input_is_refused() {
        let base = ConsumerHeartbeat {
            group_id: "g".into(),
            member_id: "a".into(),
            rebalance_timeout_ms: 1000,
            subscribed_topic_names: Some(vec!["t".into()]),
            ..Default::default()
        };
        let mut bad = base.clone();
        bad.server_assignor = Some("sticky".into());
        assert!(matches!(
            validate(&bad),
            Err(GroupError::UnsupportedAssignor(_))
        ));
        let mut bad = base.clone();
        bad.subscribed_topic_regex = Some("(".into());
        assert!(matches!(
            validate(&bad),
            Err(GroupError::InvalidRegularExpression(_))
        ));
        let mut bad = base;
        bad.member_epoch = -3;
        assert!(matches!(validate(&bad), Err(GroupError::InvalidRequest(_))));
    }
}
