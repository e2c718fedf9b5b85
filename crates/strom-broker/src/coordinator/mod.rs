//! The consumer group coordinator: Kafka's classic group protocol, transport-agnostic.
//!
//! Membership is a lease: a member that does not heartbeat within its session timeout is
//! removed and the group rebalances. A rebalance collects JoinGroup requests (answered all at
//! once when every known member has rejoined, at the rebalance timeout, and for a new group
//! not before `group.initial.rebalance.delay.ms`), bumps the generation, picks the protocol
//! every member supports (most preferred first), and hands the leader the members'
//! subscriptions; the leader's SyncGroup distributes the assignments. Protocol metadata and
//! assignments are opaque bytes: assignors run in the clients.
//!
//! Static members (`group.instance.id`) rejoining under a new member id replace their old
//! one without a rebalance when their metadata is unchanged; a stale member id of a known
//! instance is fenced. Committed offsets and group metadata are written to `store` (one
//! fdatasync per write) before they are acknowledged, and replayed at start.
//!
//! **Invariant:** all state lives under one mutex, never held across I/O or an await; waiters
//! (JoinGroup, SyncGroup) are oneshot channels answered when the state machine moves.

pub mod assignor;
mod classic_member;
mod consumer_group;
mod store;
mod txn_offsets;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use classic_member::{AssignmentDecoder, ClassicCodec, ClassicJoin, SubscriptionDecoder};
use consumer_group::{CMember, ConsumerGroup};
pub use consumer_group::{
    ConsumerGroupDescription, ConsumerGroupState, ConsumerHeartbeat, ConsumerHeartbeatOutcome,
    ConsumerMemberDescription, TopicsView,
};
pub use store::Committed;
use store::{Entry, Store, StoredGroup, StoredMember};

/// Kafka's errors of the group APIs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The principal may not use the group (the authorizer refused READ on it).
    #[error("not authorized to use the group")]
    AuthorizationFailed,
    /// The group is being unloaded (or the broker stops).
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// A rebalance is under way: rejoin.
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// The member id is not (or no longer) in the group.
    #[error("unknown member id")]
    UnknownMemberId,
    /// The generation is not the group's current one.
    #[error("illegal generation")]
    IllegalGeneration,
    /// Another member holds this group instance id.
    #[error("fenced instance id")]
    FencedInstanceId,
    /// First join of a dynamic member (KIP-394): rejoin with this member id.
    #[error("member id required")]
    MemberIdRequired(String),
    /// Protocol type or protocols do not match the group's.
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// Session timeout outside the broker's bounds.
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    /// Empty or invalid group id.
    #[error("invalid group id")]
    InvalidGroupId,
    /// No such group.
    #[error("group id not found")]
    GroupIdNotFound,
    /// The group still has members.
    #[error("the group is not empty")]
    NonEmptyGroup,
    /// Offsets of a topic the group's members consume.
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    /// The partition does not exist.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// Commit metadata above `offset.metadata.max.bytes`.
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    /// Writing the store failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// KIP-848: the member epoch is ahead of the member's (or of no use any more).
    #[error("fenced member epoch")]
    FencedMemberEpoch,
    /// KIP-848: an OffsetCommit/OffsetFetch with an older member epoch.
    #[error("stale member epoch")]
    StaleMemberEpoch,
    /// KIP-848: another live member holds this instance id.
    #[error("unreleased instance id")]
    UnreleasedInstanceId,
    /// KIP-848: no such server-side assignor.
    #[error("unsupported assignor {0}")]
    UnsupportedAssignor(String),
    /// KIP-848: the subscribed regex does not compile.
    #[error("invalid regular expression: {0}")]
    InvalidRegularExpression(String),
    /// A malformed request.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// Coordinator settings (Kafka's names).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 members): the interval, or with
    /// `consumer_heartbeat_adaptive` the longest one handed out.
    pub consumer_heartbeat_interval_ms: i32,
    /// Whether a KIP-848 group's interval scales with its size
    /// ([`GroupConfig::consumer_heartbeat_interval`]); off once the interval is set.
    pub consumer_heartbeat_adaptive: bool,
    /// `group.consumer.session.timeout.ms` (KIP-848 members).
    pub consumer_session_timeout_ms: i32,
    /// `offsets.topic.segment.bytes`: segment size of the groups' internal log (compacted
    /// by the log cleaner once sealed).
    pub offsets_topic_segment_bytes: u64,
}

/// An adaptive KIP-848 heartbeat interval: per member of the group (ms), and its floor.
const ADAPTIVE_INTERVAL_PER_MEMBER_MS: i64 = 10;
const ADAPTIVE_INTERVAL_MIN_MS: i64 = 500;

impl GroupConfig {
    /// The heartbeat interval handed to the members of a KIP-848 group of `members`.
    ///
    /// There is no push in KIP-848: a member learns that it must revoke partitions (for a
    /// member that just joined) at its next heartbeat, so the interval is the rebalance's
    /// latency. Unless it was set, it is 10 ms per member, at least 500 ms and at most
    /// `group.consumer.heartbeat.interval.ms` (Kafka's 5 s): a small group rebalances in
    /// well under a second, and a group costs the coordinator at most ~100 heartbeats/s
    /// however large it grows (from 500 members on, Kafka's interval).
    pub fn consumer_heartbeat_interval(&self, members: usize) -> i32 {
        let max = self.consumer_heartbeat_interval_ms;
        if !self.consumer_heartbeat_adaptive {
            return max;
        }
        let scaled = (members as i64).saturating_mul(ADAPTIVE_INTERVAL_PER_MEMBER_MS);
        scaled.max(ADAPTIVE_INTERVAL_MIN_MS).min(max as i64) as i32
    }
}

/// Kafka's `offsets.topic.segment.bytes` default: 100 MiB.
pub const OFFSETS_TOPIC_SEGMENT_BYTES_DEFAULT: u64 = 104_857_600;

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 1000,
            max_session_timeout_ms: 1_800_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offset_metadata_max_bytes: 4096,
            consumer_heartbeat_interval_ms: 5000,
            consumer_heartbeat_adaptive: true,
            consumer_session_timeout_ms: 45_000,
            offsets_topic_segment_bytes: OFFSETS_TOPIC_SEGMENT_BYTES_DEFAULT,
        }
    }
}

/// A group's state, named as Kafka names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Collecting joins.
    PreparingRebalance,
    /// Waiting for the leader's assignments.
    CompletingRebalance,
    /// Members hold their assignments.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// Kafka's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// Group id.
    pub group_id: String,
    /// Member id; empty on a first join.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// Client id (for describe).
    pub client_id: String,
    /// Client host (for describe).
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Protocol type ("consumer").
    pub protocol_type: String,
    /// Supported protocols (assignors) in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// KIP-394: a first join gets MEMBER_ID_REQUIRED with its member id.
    pub require_known_member_id: bool,
}

/// A JoinGroup answer.
#[derive(Clone, Debug, Default)]
pub struct JoinResponse {
    /// The new generation.
    pub generation: i32,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol.
    pub protocol_name: String,
    /// Leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader: every member's id, instance id and metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// KIP-814: a static leader rejoining keeps the current assignment.
    pub skip_assignment: bool,
}

/// A member as described.
#[derive(Clone, Debug)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Current assignment.
    pub assignment: Bytes,
}

/// A group as described.
#[derive(Clone, Debug)]
pub struct GroupDescription {
    /// State.
    pub state: GroupState,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol.
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

/// An offset to commit.
#[derive(Clone, Debug)]
pub struct OffsetCommit {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Leader epoch (-1 unknown).
    pub leader_epoch: i32,
    /// Metadata string.
    pub metadata: Option<String>,
}

type JoinTx = oneshot::Sender<Result<JoinResponse, GroupError>>;
type SyncTx = oneshot::Sender<Result<Bytes, GroupError>>;

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join: Option<JoinTx>,
    sync: Option<SyncTx>,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: String,
    /// In join order (the first is leader when a new leader is needed).
    members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// A new group's first rebalance does not complete before this.
    delay_until: Option<Instant>,
    offsets: BTreeMap<(String, i32), Committed>,
    /// When the group last became empty (for offsets retention).
    empty_since_ms: i64,
    /// A KIP-848 consumer group's state (`None`: a classic group).
    consumer: Option<ConsumerGroup>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: Vec::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            delay_until: None,
            offsets: BTreeMap::new(),
            empty_since_ms: strom_log::now_ms(),
            consumer: None,
        }
    }

    fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn by_instance(&self, instance: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// Checks a member id / instance id pair (Kafka's fencing rules).
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(inst) = instance_id {
            if let Some(m) = self.by_instance(inst) {
                if m.id != member_id {
                    return Err(GroupError::FencedInstanceId);
                }
            }
        }
        match self.member(member_id) {
            None => Err(GroupError::UnknownMemberId),
            Some(m) if m.instance_id.is_some() && m.instance_id.as_deref() != instance_id => {
                Err(GroupError::FencedInstanceId)
            }
            Some(_) => Ok(()),
        }
    }

    /// Whether a joining member's protocols fit the group.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type == protocol_type
            && protocols.iter().any(|(name, _)| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// The protocol every member supports, by the members' votes (first preference wins).
    fn select_protocol(&self) -> String {
        let candidates: Vec<&String> = self.members[0]
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in &self.members {
            if let Some(first) = m
                .protocols
                .iter()
                .map(|(n, _)| n)
                .find(|n| candidates.contains(n))
            {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == first) {
                    v.0 += 1;
                }
            }
        }
        // Most votes; ties go to the first member's preference order.
        let mut best: Option<(usize, &String)> = None;
        for v in votes {
            if best.is_none_or(|b| v.0 > b.0) {
                best = Some(v);
            }
        }
        best.map(|(_, n)| n.clone()).unwrap_or_default()
    }

    fn response_for(&self, member_id: &str) -> JoinResponse {
        let is_leader = member_id == self.leader;
        JoinResponse {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .iter()
                    .map(|m| {
                        (
                            m.id.clone(),
                            m.instance_id.clone(),
                            m.metadata(&self.protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    fn stored(&self) -> StoredGroup {
        StoredGroup {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|m| StoredMember {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    metadata: m.metadata(&self.protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// Whether a partition exists (the coordinator does not know topics).
pub type PartitionExists = Arc<dyn Fn(&str, i32) -> bool + Send + Sync>;

/// The group coordinator of this broker.
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: Mutex<HashMap<String, Group>>,
    store: Arc<Store>,
    /// Serialises store writes with their in-memory effect, so memory follows log order.
    write_lock: tokio::sync::Mutex<()>,
    exists: PartitionExists,
    rebalances: std::sync::atomic::AtomicU64,
    /// Group ids another coordinator owns (share groups): JoinGroup refuses them.
    foreign: parking_lot::RwLock<Option<ForeignGroups>>,
    /// The topics and their partition counts (KIP-848 assignors and regexes).
    topics: parking_lot::RwLock<Option<TopicsView>>,
    /// The door's decoding of classic consumer metadata (KIP-848 online upgrade).
    classic_codec: parking_lot::RwLock<Option<ClassicCodec>>,
}

/// Whether a group id belongs to another kind of group (the share coordinator's).
pub type ForeignGroups = Arc<dyn Fn(&str) -> bool + Send + Sync>;

fn new_member_id(client_id: &str) -> String {
    let id = crate::topic::random_id().unwrap_or_else(|_| {
        let t = strom_log::now_ms() as u128;
        t.to_be_bytes()
    });
    let c: String = client_id.chars().take(64).collect();
    format!(
        "{}-{}",
        if c.is_empty() { "member" } else { &c },
        crate::topic::hex(&id)
    )
}

impl GroupCoordinator {
    /// Opens the coordinator, replaying the committed offsets and groups of `data_dir`.
    pub fn open(
        data_dir: &Path,
        config: GroupConfig,
        exists: PartitionExists,
    ) -> std::io::Result<Arc<GroupCoordinator>> {
        let store = Store::open(data_dir, config.offsets_topic_segment_bytes)?;
        let mut groups: HashMap<String, Group> = HashMap::new();
        let now = Instant::now();
        for e in store.replay()? {
            match e {
                Entry::Offset {
                    group,
                    topic,
                    partition,
                    value,
                } => {
                    let g = groups.entry(group).or_insert_with(Group::new);
                    match value {
                        Some(c) => {
                            g.offsets.insert((topic, partition), c);
                        }
                        None => {
                            g.offsets.remove(&(topic, partition));
                        }
                    }
                }
                Entry::Group { group, value: None } => {
                    groups.remove(&group);
                }
                Entry::Group {
                    group,
                    value: Some(sg),
                } => {
                    let g = groups.entry(group).or_insert_with(Group::new);
                    g.generation = sg.generation;
                    g.protocol_type = sg.protocol_type;
                    g.protocol = sg.protocol.clone();
                    g.leader = sg.leader;
                    g.members = sg
                        .members
                        .into_iter()
                        .map(|m| Member {
                            id: m.id,
                            instance_id: m.instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout: Duration::from_millis(
                                m.session_timeout_ms.max(0) as u64
                            ),
                            rebalance_timeout: Duration::from_millis(
                                m.rebalance_timeout_ms.max(0) as u64
                            ),
                            protocols: vec![(sg.protocol.clone(), m.metadata)],
                            assignment: m.assignment,
                            last_seen: now,
                            join: None,
                            sync: None,
                        })
                        .collect();
                    g.state = if g.members.is_empty() {
                        GroupState::Empty
                    } else {
                        GroupState::Stable
                    };
                }
                Entry::ConsumerGroup { group, value } => {
                    let g = groups.entry(group).or_insert_with(Group::new);
                    match value {
                        Some(sg) => {
                            let cg = g.consumer.get_or_insert_with(ConsumerGroup::default);
                            cg.epoch = sg.epoch;
                            cg.assignment_epoch = sg.assignment_epoch;
                            cg.assignor = sg.assignor;
                        }
                        None => g.consumer = None,
                    }
                }
                Entry::ConsumerMember {
                    group,
                    member,
                    value,
                } => {
                    let g = groups.entry(group).or_insert_with(Group::new);
                    let cg = g.consumer.get_or_insert_with(ConsumerGroup::default);
                    match value {
                        Some(m) => {
                            cg.members.insert(member, CMember::from_stored(*m, now));
                        }
                        None => {
                            cg.members.remove(&member);
                        }
                    }
                }
            }
        }
        for g in groups.values_mut() {
            if let Some(cg) = &g.consumer {
                g.protocol_type = "consumer".into();
                g.generation = cg.epoch;
                g.state = if cg.members.is_empty() {
                    GroupState::Empty
                } else {
                    GroupState::Stable
                };
            }
        }
        tracing::info!(groups = groups.len(), "consumer groups loaded");
        Ok(Arc::new(GroupCoordinator {
            config,
            groups: Mutex::new(groups),
            store: Arc::new(store),
            write_lock: tokio::sync::Mutex::new(()),
            exists,
            rebalances: std::sync::atomic::AtomicU64::new(0),
            foreign: parking_lot::RwLock::new(None),
            topics: parking_lot::RwLock::new(None),
            classic_codec: parking_lot::RwLock::new(None),
        }))
    }

    /// Tells the coordinator which group ids are another kind of group's (share groups share
    /// the group-id namespace): JoinGroup of one is INCONSISTENT_GROUP_PROTOCOL, as Kafka.
    pub fn set_foreign_groups(&self, foreign: ForeignGroups) {
        *self.foreign.write() = Some(foreign);
    }

    fn is_foreign(&self, group_id: &str) -> bool {
        self.foreign.read().as_ref().is_some_and(|f| f(group_id))
    }

    /// Whether a classic group (members or only committed offsets) has this id.
    pub fn exists(&self, group_id: &str) -> bool {
        self.groups.lock().contains_key(group_id)
    }

    /// Rebalances completed since start.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The settings.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    // --- membership --------------------------------------------------------------------------

    /// JoinGroup: returns when the rebalance this join takes part in completes.
    pub async fn join(&self, req: JoinRequest) -> Result<JoinResponse, GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if self.is_foreign(&req.group_id) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        self.classic_join_of_consumer_group(&req.group_id).await?;
        let rx = {
            let mut groups = self.groups.lock();
            let g = groups
                .entry(req.group_id.clone())
                .or_insert_with(Group::new);
            if g.consumer.is_some() {
                return Err(GroupError::InconsistentGroupProtocol);
            }
            let rx = self.join_locked(g, req)?;
            self.try_complete_join(g);
            rx
        };
        match rx {
            JoinWait::Now(r) => Ok(r),
            JoinWait::Later(rx) => rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable)),
        }
    }

    fn join_locked(&self, g: &mut Group, req: JoinRequest) -> Result<JoinWait, GroupError> {
        let now = Instant::now();
        if g.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if !g.supports(&req.protocol_type, &req.protocols) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let session = Duration::from_millis(req.session_timeout_ms as u64);
        let rebalance =
            Duration::from_millis(req.rebalance_timeout_ms.max(req.session_timeout_ms) as u64);
        if req.member_id.is_empty() {
            let new_id = new_member_id(&req.client_id);
            if let Some(inst) = req.instance_id.as_deref() {
                if let Some(old_id) = g.by_instance(inst).map(|m| m.id.clone()) {
                    return Ok(self.static_rejoin(g, &old_id, new_id, req, session, rebalance));
                }
            } else if req.require_known_member_id {
                g.pending.insert(new_id.clone(), now + session);
                return Err(GroupError::MemberIdRequired(new_id));
            }
            return Ok(self.add_member(g, new_id, req, session, rebalance));
        }
        if g.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return Ok(self.add_member(g, id, req, session, rebalance));
        }
        g.check_member(&req.member_id, req.instance_id.as_deref())?;
        let leader = g.leader.clone();
        let state = g.state;
        let m = g.member_mut(&req.member_id).expect("checked");
        let unchanged = m.protocols == req.protocols;
        m.last_seen = now;
        m.session_timeout = session;
        m.rebalance_timeout = rebalance;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        match state {
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged
                    && (state == GroupState::CompletingRebalance || req.member_id != leader) =>
            {
                // Same metadata: nothing to rebalance, answer with the current generation.
                Ok(JoinWait::Now(g.response_for(&req.member_id)))
            }
            _ => {
                m.protocols = req.protocols;
                let (tx, rx) = oneshot::channel();
                if let Some(old) = m.join.replace(tx) {
                    let _ = old.send(Err(GroupError::RebalanceInProgress));
                }
                if state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(g);
                }
                Ok(JoinWait::Later(rx))
            }
        }
    }

    fn add_member(
        &self,
        g: &mut Group,
        id: String,
        req: JoinRequest,
        session: Duration,
        rebalance: Duration,
    ) -> JoinWait {
        let (tx, rx) = oneshot::channel();
        let was_empty = g.members.is_empty();
        if was_empty {
            g.protocol_type = req.protocol_type.clone();
        }
        g.members.push(Member {
            id,
            instance_id: req.instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocols: req.protocols,
            assignment: Bytes::new(),
            last_seen: Instant::now(),
            join: Some(tx),
            sync: None,
        });
        if g.state == GroupState::PreparingRebalance {
            // A new group's initial delay grows with each member that arrives, up to the
            // rebalance timeout (Kafka's InitialDelayedJoin).
            if let (Some(until), Some(deadline)) = (g.delay_until, g.rebalance_deadline) {
                let delay = Duration::from_millis(self.config.initial_rebalance_delay_ms);
                g.delay_until = Some((Instant::now() + delay).min(deadline).max(until));
            }
            let max = g
                .members
                .iter()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default();
            let deadline = Instant::now() + max;
            g.rebalance_deadline = Some(g.rebalance_deadline.map_or(deadline, |d| d.max(deadline)));
        } else {
            self.prepare_rebalance(g);
        }
        JoinWait::Later(rx)
    }

    fn static_rejoin(
        &self,
        g: &mut Group,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
        session: Duration,
        rebalance: Duration,
    ) -> JoinWait {
        let state = g.state;
        let was_leader = g.leader == old_id;
        let m = g.member_mut(old_id).expect("found by instance");
        if let Some(old) = m.join.take() {
            let _ = old.send(Err(GroupError::FencedInstanceId));
        }
        if let Some(old) = m.sync.take() {
            let _ = old.send(Err(GroupError::FencedInstanceId));
        }
        let unchanged = m.protocols == req.protocols;
        m.id = new_id.clone();
        m.session_timeout = session;
        m.rebalance_timeout = rebalance;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.last_seen = Instant::now();
        if was_leader {
            g.leader = new_id.clone();
        }
        if state == GroupState::Stable && unchanged {
            // KIP-345: same instance, same subscription: keep the assignment, no rebalance.
            let mut r = g.response_for(&new_id);
            if was_leader {
                r.skip_assignment = true;
            }
            return JoinWait::Now(r);
        }
        let m = g.member_mut(&new_id).expect("renamed");
        m.protocols = req.protocols;
        let (tx, rx) = oneshot::channel();
        m.join = Some(tx);
        if state != GroupState::PreparingRebalance {
            self.prepare_rebalance(g);
        }
        JoinWait::Later(rx)
    }

    fn prepare_rebalance(&self, g: &mut Group) {
        let now = Instant::now();
        if g.state == GroupState::CompletingRebalance {
            for m in &mut g.members {
                if let Some(tx) = m.sync.take() {
                    let _ = tx.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        let initial = g.state == GroupState::Empty;
        g.state = GroupState::PreparingRebalance;
        let max = g
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        g.rebalance_deadline = Some(now + max);
        g.delay_until = initial
            .then(|| now + Duration::from_millis(self.config.initial_rebalance_delay_ms).min(max));
    }

    /// Completes the join phase when every member has rejoined (or at the deadline).
    fn try_complete_join(&self, g: &mut Group) -> bool {
        if g.state != GroupState::PreparingRebalance {
            return false;
        }
        let now = Instant::now();
        if g.delay_until.is_some_and(|d| now < d) {
            return false;
        }
        let all_joined = g.members.iter().all(|m| m.join.is_some());
        if !all_joined && g.rebalance_deadline.is_some_and(|d| now < d) {
            return false;
        }
        // Members that did not rejoin in time leave.
        g.members.retain(|m| m.join.is_some());
        g.generation += 1;
        self.rebalances
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        g.delay_until = None;
        g.rebalance_deadline = None;
        for m in &mut g.members {
            m.assignment = Bytes::new();
            m.last_seen = now;
        }
        if g.members.is_empty() {
            g.state = GroupState::Empty;
            g.protocol.clear();
            g.leader.clear();
            g.empty_since_ms = strom_log::now_ms();
            return true;
        }
        g.protocol = g.select_protocol();
        if g.member(&g.leader.clone()).is_none() {
            g.leader = g.members[0].id.clone();
        }
        g.state = GroupState::CompletingRebalance;
        let responses: Vec<(usize, JoinResponse)> = (0..g.members.len())
            .map(|i| (i, g.response_for(&g.members[i].id)))
            .collect();
        for (i, r) in responses {
            if let Some(tx) = g.members[i].join.take() {
                let _ = tx.send(Ok(r));
            }
        }
        tracing::info!(generation = g.generation, members = g.members.len(), protocol = %g.protocol, "group rebalanced");
        true
    }

    /// SyncGroup: the leader sends the assignments; everyone gets their own.
    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol: Option<(&str, &str)>,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<(String, String, Bytes), GroupError> {
        let (rx, persist) = {
            let mut groups = self.groups.lock();
            let g = groups
                .get_mut(group_id)
                .ok_or(GroupError::UnknownMemberId)?;
            g.check_member(member_id, instance_id)?;
            if generation != g.generation {
                return Err(GroupError::IllegalGeneration);
            }
            if let Some((ptype, pname)) = protocol {
                if (!ptype.is_empty() && ptype != g.protocol_type)
                    || (!pname.is_empty() && pname != g.protocol)
                {
                    return Err(GroupError::InconsistentGroupProtocol);
                }
            }
            let names = (g.protocol_type.clone(), g.protocol.clone());
            match g.state {
                GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
                GroupState::PreparingRebalance => return Err(GroupError::RebalanceInProgress),
                GroupState::Stable => {
                    let m = g.member(member_id).expect("checked");
                    return Ok((names.0, names.1, m.assignment.clone()));
                }
                GroupState::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            let now = Instant::now();
            let m = g.member_mut(member_id).expect("checked");
            m.sync = Some(tx);
            m.last_seen = now;
            let mut persist = None;
            if member_id == g.leader {
                for (id, a) in assignments {
                    if let Some(m) = g.member_mut(&id) {
                        m.assignment = a;
                    }
                }
                g.state = GroupState::Stable;
                for m in &mut g.members {
                    m.last_seen = now;
                    if let Some(tx) = m.sync.take() {
                        let _ = tx.send(Ok(m.assignment.clone()));
                    }
                }
                persist = Some(Entry::Group {
                    group: group_id.to_string(),
                    value: Some(g.stored()),
                });
            }
            ((names, rx), persist)
        };
        if let Some(e) = persist {
            let _w = self.write_lock.lock().await;
            self.write(vec![e]).await?;
        }
        let (names, rx) = rx;
        let assignment = rx.await.unwrap_or(Err(GroupError::RebalanceInProgress))?;
        Ok((names.0, names.1, assignment))
    }

    /// Heartbeat: renews the member's lease.
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        let mut groups = self.groups.lock();
        let g = groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if let Some(cg) = g.consumer.as_mut() {
            return self.consumer_classic_heartbeat(cg, generation, member_id);
        }
        g.check_member(member_id, instance_id)?;
        match g.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                g.member_mut(member_id).expect("checked").last_seen = Instant::now();
                Err(GroupError::RebalanceInProgress)
            }
            _ if generation != g.generation => Err(GroupError::IllegalGeneration),
            _ => {
                g.member_mut(member_id).expect("checked").last_seen = Instant::now();
                Ok(())
            }
        }
    }

    /// LeaveGroup for several members (by member id, or by instance id when the member id is
    /// empty). One result per member.
    pub async fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Result<String, GroupError>> {
        if self.is_consumer_group(group_id) {
            return self.consumer_classic_leave(group_id, members).await;
        }
        let (results, persist) = {
            let mut groups = self.groups.lock();
            let Some(g) = groups.get_mut(group_id) else {
                return members
                    .iter()
                    .map(|_| Err(GroupError::UnknownMemberId))
                    .collect();
            };
            let mut results = Vec::with_capacity(members.len());
            let mut removed = false;
            for (id, inst) in members {
                let id = if id.is_empty() {
                    match inst.as_deref().and_then(|i| g.by_instance(i)) {
                        Some(m) => m.id.clone(),
                        None => {
                            results.push(Err(GroupError::UnknownMemberId));
                            continue;
                        }
                    }
                } else {
                    id.clone()
                };
                if let Err(e) = g.check_member(&id, inst.as_deref()) {
                    results.push(Err(e));
                    continue;
                }
                self.remove_member(g, &id, GroupError::UnknownMemberId);
                removed = true;
                results.push(Ok(id));
            }
            let persist = removed.then(|| {
                self.after_removal(g);
                Entry::Group {
                    group: group_id.to_string(),
                    value: Some(g.stored()),
                }
            });
            (results, persist)
        };
        if let Some(e) = persist {
            let _w = self.write_lock.lock().await;
            if let Err(err) = self.write(vec![e]).await {
                tracing::warn!(error = %err, "could not persist a group after a leave");
            }
        }
        results
    }

    fn remove_member(&self, g: &mut Group, id: &str, why: GroupError) {
        if let Some(i) = g.members.iter().position(|m| m.id == id) {
            let m = g.members.remove(i);
            if let Some(tx) = m.join {
                let _ = tx.send(Err(why.clone()));
            }
            if let Some(tx) = m.sync {
                let _ = tx.send(Err(why));
            }
        }
    }

    fn after_removal(&self, g: &mut Group) {
        match g.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(g);
                // With no initial delay: the remaining members rejoin, or the group empties.
                g.delay_until = None;
            }
            _ => {}
        }
        self.try_complete_join(g);
    }

    /// Periodic work: session expiry, rebalance deadlines, pending member expiry, offsets
    /// retention. Runs until the coordinator is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_retention = Instant::now();
        loop {
            tick.tick().await;
            let mut persist = Vec::new();
            {
                let now = Instant::now();
                let mut groups = self.groups.lock();
                for (id, g) in groups.iter_mut() {
                    if g.consumer.is_some() {
                        persist.extend(self.expire_consumer_members(id, g, now));
                        continue;
                    }
                    g.pending.retain(|_, until| *until > now);
                    let expired: Vec<String> = g
                        .members
                        .iter()
                        .filter(|m| {
                            m.join.is_none() && now.duration_since(m.last_seen) > m.session_timeout
                        })
                        .map(|m| m.id.clone())
                        .collect();
                    let had_members = !g.members.is_empty();
                    for m in &expired {
                        tracing::info!(group = %id, member = %m, "session expired, member removed");
                        self.remove_member(g, m, GroupError::UnknownMemberId);
                    }
                    let changed = if !expired.is_empty() {
                        self.after_removal(g);
                        true
                    } else {
                        self.try_complete_join(g)
                    };
                    if changed && (had_members || !g.members.is_empty()) {
                        persist.push(Entry::Group {
                            group: id.clone(),
                            value: Some(g.stored()),
                        });
                    }
                }
                let every = (self.config.offsets_retention_ms / 4).clamp(100, 60_000) as u64;
                if now.duration_since(last_retention) >= Duration::from_millis(every) {
                    last_retention = now;
                    persist.extend(self.expire_offsets(&mut groups));
                }
            }
            if !persist.is_empty() {
                let _w = self.write_lock.lock().await;
                if let Err(e) = self.write(persist).await {
                    tracing::warn!(error = %e, "could not persist group changes");
                }
            }
        }
    }

    fn expire_offsets(&self, groups: &mut HashMap<String, Group>) -> Vec<Entry> {
        let now = strom_log::now_ms();
        let keep = self.config.offsets_retention_ms;
        let mut out = Vec::new();
        for (id, g) in groups.iter_mut() {
            if g.state != GroupState::Empty || now - g.empty_since_ms < keep {
                continue;
            }
            let old: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, c)| now - c.timestamp >= keep)
                .map(|(k, _)| k.clone())
                .collect();
            for (topic, partition) in old {
                g.offsets.remove(&(topic.clone(), partition));
                out.push(Entry::Offset {
                    group: id.clone(),
                    topic,
                    partition,
                    value: None,
                });
            }
        }
        groups.retain(|_, g| {
            !(g.state == GroupState::Empty
                && g.offsets.is_empty()
                && g.generation == 0
                && g.consumer.is_none())
        });
        out
    }

    async fn write(&self, entries: Vec<Entry>) -> Result<(), GroupError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.write(&entries))
            .await
            .map_err(|e| GroupError::Storage(e.to_string()))?
            .map_err(|e| GroupError::Storage(e.to_string()))
    }

    // --- offsets -------------------------------------------------------------------------------

    /// Writes offset `entries` of `group_id` to the store (durably), then makes them the
    /// group's committed offsets: what OffsetCommit and a committed transaction both do.
    async fn store_offsets(&self, group_id: &str, entries: Vec<Entry>) -> Result<(), GroupError> {
        let _w = self.write_lock.lock().await;
        self.write(entries.clone()).await?;
        let mut groups = self.groups.lock();
        let g = groups
            .entry(group_id.to_string())
            .or_insert_with(Group::new);
        for e in entries {
            if let Entry::Offset {
                topic,
                partition,
                value: Some(c),
                ..
            } = e
            {
                g.offsets.insert((topic, partition), c);
            }
        }
        Ok(())
    }

    /// OffsetCommit. `generation` -1 with an empty member id is a commit of a group used only
    /// to store offsets (allowed while the group has no members). Per-partition results.
    pub async fn commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: Vec<OffsetCommit>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        {
            let mut groups = self.groups.lock();
            let g = groups
                .entry(group_id.to_string())
                .or_insert_with(Group::new);
            if g.state == GroupState::Dead {
                return Err(GroupError::CoordinatorNotAvailable);
            }
            if let Some(cg) = &g.consumer {
                consumer_group::validate_commit(cg, member_id, generation)?;
            } else if !(generation < 0 && g.state == GroupState::Empty) {
                g.check_member(member_id, instance_id)?;
                if generation != g.generation {
                    return Err(GroupError::IllegalGeneration);
                }
                if g.state == GroupState::CompletingRebalance {
                    return Err(GroupError::RebalanceInProgress);
                }
                if let Some(m) = g.member_mut(member_id) {
                    m.last_seen = Instant::now();
                }
            }
        }
        let now = strom_log::now_ms();
        let mut results = Vec::with_capacity(offsets.len());
        let mut entries = Vec::new();
        for o in offsets {
            if o.metadata
                .as_ref()
                .is_some_and(|m| m.len() > self.config.offset_metadata_max_bytes)
            {
                results.push(Err(GroupError::OffsetMetadataTooLarge));
            } else if !(self.exists)(&o.topic, o.partition) {
                results.push(Err(GroupError::UnknownTopicOrPartition));
            } else {
                results.push(Ok(()));
                entries.push(Entry::Offset {
                    group: group_id.to_string(),
                    topic: o.topic,
                    partition: o.partition,
                    value: Some(Committed {
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: o.metadata,
                        timestamp: now,
                    }),
                });
            }
        }
        self.store_offsets(group_id, entries).await?;
        Ok(results)
    }

    /// OffsetFetch: the committed offsets of the given partitions (all when `None`).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Vec<(String, i32, Option<Committed>)> {
        let groups = self.groups.lock();
        let g = groups.get(group_id);
        match partitions {
            Some(ps) => ps
                .into_iter()
                .map(|(t, p)| {
                    let c = g.and_then(|g| g.offsets.get(&(t.clone(), p)).cloned());
                    (t, p, c)
                })
                .collect(),
            None => g
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), c)| (t.clone(), *p, Some(c.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    // --- admin ---------------------------------------------------------------------------------

    /// DescribeGroups of one group (`Dead` with no members when unknown, as Kafka answers).
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.groups.lock();
        match groups.get(group_id) {
            None => GroupDescription {
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
            Some(g) => GroupDescription {
                state: g.state,
                protocol_type: g.protocol_type.clone(),
                protocol: g.protocol.clone(),
                members: g
                    .members
                    .iter()
                    .map(|m| MemberDescription {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: m.metadata(&g.protocol),
                        assignment: if g.state == GroupState::Stable {
                            m.assignment.clone()
                        } else {
                            Bytes::new()
                        },
                    })
                    .collect(),
            },
        }
    }

    /// ListGroups: `(group id, protocol type, state)`.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups = self.groups.lock();
        let mut out: Vec<_> = groups
            .iter()
            .map(|(id, g)| (id.clone(), g.protocol_type.clone(), g.state))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// ListGroups with each group's type: `(group id, protocol type, state name, type)`,
    /// type "classic" or "consumer" (KIP-848; states Empty, Assigning, Reconciling, Stable).
    pub fn list_typed(&self) -> Vec<(String, String, &'static str, &'static str)> {
        let groups = self.groups.lock();
        let mut out: Vec<_> = groups
            .iter()
            .map(|(id, g)| match GroupCoordinator::consumer_state(g) {
                Some(s) => (id.clone(), "consumer".to_string(), s.name(), "consumer"),
                None => (
                    id.clone(),
                    g.protocol_type.clone(),
                    g.state.name(),
                    "classic",
                ),
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A classic JoinGroup of an empty consumer group turns it back into a classic group (as
    /// Kafka's online downgrade of an empty group); one with members is not joined here.
    async fn classic_join_of_consumer_group(&self, group_id: &str) -> Result<(), GroupError> {
        let entry = {
            let mut groups = self.groups.lock();
            let Some(g) = groups.get_mut(group_id) else {
                return Ok(());
            };
            match &g.consumer {
                None => return Ok(()),
                // Joined as a classic member by the door (`consumer_classic_join`).
                Some(cg) if !cg.members.is_empty() => {
                    return Err(GroupError::InconsistentGroupProtocol)
                }
                Some(_) => {}
            }
            g.consumer = None;
            g.generation = 0;
            g.protocol_type.clear();
            Entry::ConsumerGroup {
                group: group_id.to_string(),
                value: None,
            }
        };
        let _w = self.write_lock.lock().await;
        self.write(vec![entry]).await
    }

    /// DeleteGroups of one group: only an empty group can go; its offsets go with it.
    pub async fn delete(&self, group_id: &str) -> Result<(), GroupError> {
        let entries = {
            let mut groups = self.groups.lock();
            let g = groups.get(group_id).ok_or(GroupError::GroupIdNotFound)?;
            if !g.members.is_empty() || g.consumer.as_ref().is_some_and(|c| !c.members.is_empty()) {
                return Err(GroupError::NonEmptyGroup);
            }
            let mut entries: Vec<Entry> = g
                .offsets
                .keys()
                .map(|(t, p)| Entry::Offset {
                    group: group_id.to_string(),
                    topic: t.clone(),
                    partition: *p,
                    value: None,
                })
                .collect();
            if g.consumer.is_some() {
                entries.push(Entry::ConsumerGroup {
                    group: group_id.to_string(),
                    value: None,
                });
            }
            entries.push(Entry::Group {
                group: group_id.to_string(),
                value: None,
            });
            groups.remove(group_id);
            entries
        };
        let _w = self.write_lock.lock().await;
        self.write(entries).await
    }

    /// OffsetDelete: removes committed offsets of a group with no active members.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let (results, entries) = {
            let mut groups = self.groups.lock();
            let g = groups
                .get_mut(group_id)
                .ok_or(GroupError::GroupIdNotFound)?;
            let busy =
                !g.members.is_empty() || g.consumer.as_ref().is_some_and(|c| !c.members.is_empty());
            let mut results = Vec::new();
            let mut entries = Vec::new();
            for (t, p) in partitions {
                if busy {
                    results.push(Err(GroupError::GroupSubscribedToTopic));
                    continue;
                }
                g.offsets.remove(&(t.clone(), p));
                entries.push(Entry::Offset {
                    group: group_id.to_string(),
                    topic: t,
                    partition: p,
                    value: None,
                });
                results.push(Ok(()));
            }
            (results, entries)
        };
        let _w = self.write_lock.lock().await;
        self.write(entries).await?;
        Ok(results)
    }

    /// Flushes and closes the store.
    pub fn close(&self) {
        self.store.close();
    }

    /// The internal log of committed offsets and group metadata (`.strom/groups/`), for
    /// the log cleaner ([`crate::Broker::add_compacted_log`]).
    pub fn store_log(&self) -> Arc<strom_log::Log> {
        self.store.log()
    }
}

enum JoinWait {
    Now(JoinResponse),
    Later(oneshot::Receiver<Result<JoinResponse, GroupError>>),
}

#[cfg(test)]
mod tests;
