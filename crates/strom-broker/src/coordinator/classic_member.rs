//! Classic-protocol members of a KIP-848 consumer group (Kafka 4's mixed groups, with its
//! default `group.consumer.migration.policy`): a JoinGroup into a consumer group joins it as a
//! member whose subscription is the one its JoinGroup metadata carries (decoded by the door).
//! Its assignment is the group's server-side one: JoinGroup answers at once with the member
//! epoch as generation (no leader: the broker assigns), SyncGroup hands out the partitions the
//! member may hold, and Heartbeat answers REBALANCE_IN_PROGRESS while the member's assignment
//! has to move (a new target epoch, partitions to give up or to receive), so that it rejoins:
//! the partitions its rejoin no longer claims count as revoked (an eager member claims none).

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::assignor::Assignment;
use super::consumer_group::{changes, CMember, ConsumerGroup, MemberState};
use super::store::StoredConsumerMember;
use super::{new_member_id, GroupCoordinator, GroupError, JoinResponse};

/// Reads the topics of a ConsumerProtocolSubscription.
pub type SubscriptionDecoder = std::sync::Arc<dyn Fn(&[u8]) -> Option<Vec<String>> + Send + Sync>;
/// Reads the partitions of a ConsumerProtocolAssignment.
pub type AssignmentDecoder = std::sync::Arc<dyn Fn(&[u8]) -> Option<Assignment> + Send + Sync>;

/// How the door reads classic consumer-protocol bytes (the core keeps them opaque): the
/// topics of a member's subscription metadata, the partitions of its assignment.
#[derive(Clone)]
pub struct ClassicCodec {
    /// ConsumerProtocolSubscription → subscribed topics.
    pub subscription: SubscriptionDecoder,
    /// ConsumerProtocolAssignment → partitions.
    pub assignment: AssignmentDecoder,
}

/// A classic JoinGroup into a consumer group.
#[derive(Clone, Debug)]
pub struct ClassicJoin {
    /// Group id.
    pub group_id: String,
    /// Member id; empty on a first join.
    pub member_id: String,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// The protocols (assignors) it supports, in preference order.
    pub protocols: Vec<String>,
    /// Its subscribed topics (from its subscription metadata).
    pub topics: Vec<String>,
    /// The partitions it still holds (ConsumerProtocolSubscription v1+ owned partitions).
    pub owned: Assignment,
    /// KIP-394: a first join gets MEMBER_ID_REQUIRED with its member id.
    pub require_known_member_id: bool,
}

impl GroupCoordinator {
    /// Tells the coordinator how to read classic consumer metadata and assignments (the
    /// online upgrade of a classic group to a consumer group needs its members' subscriptions).
    pub fn set_classic_codec(&self, codec: ClassicCodec) {
        *self.classic_codec.write() = Some(codec);
    }

    /// The partitions of a classic member's assignment bytes, read with the door's codec
    /// (`None` without one, or when they are not a ConsumerProtocolAssignment).
    pub fn decode_classic_assignment(&self, bytes: &[u8]) -> Option<Assignment> {
        let codec = self.classic_codec.read().clone()?;
        (codec.assignment)(bytes)
    }

    /// KIP-848 online upgrade: a Stable classic group whose members all use the consumer
    /// protocol type becomes a consumer group whose members are classic-protocol members
    /// holding what they hold (epoch = the generation). `None` (and nothing changed) when it
    /// cannot be upgraded: another state, another protocol type, metadata that does not decode.
    pub(super) fn upgrade_classic(&self, g: &mut super::Group) -> Option<ConsumerGroup> {
        let codec = self.classic_codec.read().clone()?;
        if g.state != super::GroupState::Stable || g.protocol_type != "consumer" {
            return None;
        }
        let now = Instant::now();
        let mut cg = ConsumerGroup {
            epoch: g.generation,
            assignment_epoch: g.generation,
            assignor: "uniform".into(),
            ..ConsumerGroup::default()
        };
        for m in &g.members {
            let topics = (codec.subscription)(&m.metadata(&g.protocol))?;
            let held = if m.assignment.is_empty() {
                Assignment::new()
            } else {
                (codec.assignment)(&m.assignment)?
            };
            let mut c = CMember::new(&m.id, m.instance_id.clone(), now);
            c.client_id = m.client_id.clone();
            c.client_host = m.client_host.clone();
            c.rebalance_timeout_ms = m.rebalance_timeout.as_millis() as i32;
            c.classic_session_timeout_ms = m.session_timeout.as_millis() as i32;
            c.classic_protocol = Some(g.protocol.clone());
            c.topics = topics;
            c.topics.sort();
            c.topics.dedup();
            c.epoch = g.generation;
            c.previous_epoch = g.generation;
            c.assigned = held.clone();
            c.target = held;
            c.last_seen = m.last_seen;
            cg.members.insert(m.id.clone(), c);
        }
        Some(cg)
    }

    /// JoinGroup of a classic member into the consumer group `j.group_id`.
    pub async fn consumer_classic_join(&self, j: ClassicJoin) -> Result<JoinResponse, GroupError> {
        if j.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if j.session_timeout_ms < self.config.min_session_timeout_ms
            || j.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        let topics = self.topic_counts();
        let now = Instant::now();
        let (resp, entries) = {
            let mut groups = self.groups.lock();
            let g = groups
                .get_mut(&j.group_id)
                .ok_or(GroupError::GroupIdNotFound)?;
            let cg = g
                .consumer
                .as_mut()
                .ok_or(GroupError::InconsistentGroupProtocol)?;
            let before_group = cg.stored();
            let before: BTreeMap<String, StoredConsumerMember> = cg
                .members
                .iter()
                .map(|(k, m)| (k.clone(), m.stored()))
                .collect();
            let member_id = if j.member_id.is_empty() {
                let id = new_member_id(&j.client_id);
                if j.require_known_member_id && j.instance_id.is_none() {
                    return Err(GroupError::MemberIdRequired(id));
                }
                id
            } else {
                j.member_id.clone()
            };
            // A static member's new incarnation takes over its instance's member.
            let previous = j.instance_id.as_deref().and_then(|inst| {
                cg.members
                    .values()
                    .find(|m| m.instance_id.as_deref() == Some(inst) && m.id != member_id)
                    .map(|m| m.id.clone())
            });
            let mut changed = false;
            let mut m = match previous.and_then(|old| cg.members.remove(&old)) {
                Some(mut old) => {
                    old.id = member_id.clone();
                    old.left_static = false;
                    old
                }
                None => match cg.members.remove(&member_id) {
                    Some(old) => old,
                    None => {
                        changed = true;
                        CMember::new(&member_id, j.instance_id.clone(), now)
                    }
                },
            };
            let mut ts = j.topics.clone();
            ts.sort();
            ts.dedup();
            if ts != m.topics {
                m.topics = ts;
                changed = true;
            }
            m.client_id = j.client_id.clone();
            m.client_host = j.client_host.clone();
            m.rebalance_timeout_ms = j.rebalance_timeout_ms.max(j.session_timeout_ms);
            m.classic_session_timeout_ms = j.session_timeout_ms;
            m.classic_protocol = Some(j.protocols[0].clone());
            m.last_seen = now;
            // What it no longer claims it has given up.
            m.assigned = intersect(&m.assigned, &j.owned);
            m.revoking = intersect(&m.revoking, &j.owned);
            if m.revoking.is_empty() && m.state == MemberState::UnrevokedPartitions {
                m.state = MemberState::Stable;
                m.revoke_deadline = None;
            }
            cg.members.insert(member_id.clone(), m);
            cg.refresh(&topics, changed);
            let owned = j.owned.clone();
            cg.reconcile(&member_id, Some(&owned), now);
            // Revocations it has already made (not claimed) let it move on at once.
            cg.reconcile(&member_id, Some(&owned), now);
            let m = &cg.members[&member_id];
            let resp = JoinResponse {
                generation: m.epoch,
                protocol_type: "consumer".into(),
                protocol_name: m.classic_protocol.clone().unwrap_or_default(),
                leader: String::new(),
                member_id: member_id.clone(),
                members: Vec::new(),
                skip_assignment: false,
            };
            let entries = changes(&j.group_id, cg, &before_group, &before);
            g.generation = cg.epoch;
            g.state = super::GroupState::Stable;
            (resp, entries)
        };
        if !entries.is_empty() {
            let _w = self.write_lock.lock().await;
            self.write(entries).await?;
        }
        Ok(resp)
    }

    /// SyncGroup of a classic member of a consumer group: the protocol name and the
    /// partitions it may hold (the door encodes them as a ConsumerProtocolAssignment).
    pub fn consumer_classic_sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
    ) -> Result<(String, Assignment), GroupError> {
        let mut groups = self.groups.lock();
        let cg = consumer_of(&mut groups, group_id)?;
        let m = classic_member(cg, member_id)?;
        if generation != m.epoch {
            return Err(GroupError::IllegalGeneration);
        }
        m.last_seen = Instant::now();
        Ok((
            m.classic_protocol.clone().unwrap_or_default(),
            m.assigned.clone(),
        ))
    }

    /// Heartbeat of a classic member of a consumer group: REBALANCE_IN_PROGRESS while its
    /// assignment has to move.
    pub(super) fn consumer_classic_heartbeat(
        &self,
        cg: &mut ConsumerGroup,
        generation: i32,
        member_id: &str,
    ) -> Result<(), GroupError> {
        let topics = self.topic_counts();
        cg.refresh(&topics, false);
        let target = cg.assignment_epoch;
        let m = classic_member(cg, member_id)?;
        if generation != m.epoch {
            return Err(GroupError::IllegalGeneration);
        }
        m.last_seen = Instant::now();
        let moving = m.epoch != target || m.state != MemberState::Stable || m.assigned != m.target;
        if moving {
            Err(GroupError::RebalanceInProgress)
        } else {
            Ok(())
        }
    }
}

fn consumer_of<'a>(
    groups: &'a mut std::collections::HashMap<String, super::Group>,
    group_id: &str,
) -> Result<&'a mut ConsumerGroup, GroupError> {
    groups
        .get_mut(group_id)
        .and_then(|g| g.consumer.as_mut())
        .ok_or(GroupError::UnknownMemberId)
}

fn classic_member<'a>(cg: &'a mut ConsumerGroup, id: &str) -> Result<&'a mut CMember, GroupError> {
    cg.members
        .get_mut(id)
        .filter(|m| m.classic_protocol.is_some())
        .ok_or(GroupError::UnknownMemberId)
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let keep: std::collections::BTreeSet<i32> = b
                .get(t)
                .map(|o| ps.intersection(o).copied().collect())
                .unwrap_or_default();
            (!keep.is_empty()).then(|| (t.clone(), keep))
        })
        .collect()
}

impl GroupCoordinator {
    /// LeaveGroup of classic members of a consumer group (by member id, or by instance id
    /// when the member id is empty).
    pub(super) async fn consumer_classic_leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Result<String, GroupError>> {
        let topics = self.topic_counts();
        let (results, entries) = {
            let mut groups = self.groups.lock();
            let Some(g) = groups.get_mut(group_id) else {
                return members
                    .iter()
                    .map(|_| Err(GroupError::UnknownMemberId))
                    .collect();
            };
            let Some(cg) = g.consumer.as_mut() else {
                return members
                    .iter()
                    .map(|_| Err(GroupError::UnknownMemberId))
                    .collect();
            };
            let before_group = cg.stored();
            let before: BTreeMap<String, StoredConsumerMember> = cg
                .members
                .iter()
                .map(|(k, m)| (k.clone(), m.stored()))
                .collect();
            let mut results = Vec::new();
            let mut removed = false;
            for (id, inst) in members {
                let found = cg
                    .members
                    .values()
                    .find(|m| {
                        if id.is_empty() {
                            inst.is_some() && m.instance_id == *inst
                        } else {
                            m.id == *id
                        }
                    })
                    .map(|m| (m.id.clone(), m.instance_id.clone()));
                match found {
                    None => results.push(Err(GroupError::UnknownMemberId)),
                    Some((_, Some(mine))) if inst.as_ref().is_some_and(|i| *i != mine) => {
                        results.push(Err(GroupError::FencedInstanceId))
                    }
                    Some((mid, _)) => {
                        cg.members.remove(&mid);
                        removed = true;
                        results.push(Ok(mid));
                    }
                }
            }
            if removed {
                cg.refresh(&topics, true);
            }
            let entries = changes(group_id, cg, &before_group, &before);
            g.generation = cg.epoch;
            if cg.members.is_empty() {
                g.state = super::GroupState::Empty;
                g.empty_since_ms = strom_log::now_ms();
            }
            (results, entries)
        };
        if !entries.is_empty() {
            let _w = self.write_lock.lock().await;
            if let Err(e) = self.write(entries).await {
                tracing::warn!(error = %e, "could not persist a consumer group after a leave");
            }
        }
        results
    }
}
