//! A broker's life in a cluster: it registers under an etcd lease (lease loss = broker dead),
//! reads the cluster's metadata and keeps it current with a watch, applies each partition's
//! assignment to the core (leader, follower or neither) and runs the follower fetchers, has
//! its leaders propose ISR changes, and campaigns for the controller's role; the controller
//! elects a new leader from the ISR when a leader's broker dies (unclean election is off
//! unless the topic sets `unclean.leader.election.enable`: a partition whose in-sync
//! replicas are all dead stays offline until one comes back).
//!
//! A broker that cannot refresh its lease for the session timeout is **fenced**: it stops
//! leading at once (its partitions refuse produces with NOT_LEADER_OR_FOLLOWER), whether or
//! not etcd has expired the lease yet, so that a broker cut off from etcd never acknowledges
//! a write after the controller may have moved its leadership. It then registers again with
//! a new lease and comes back as a follower.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use strom_broker::cluster::{
    AdminFuture, AdminFutureOf, ClusterHandle, ClusterMetadata, Election, NewTopic,
};
use strom_broker::replica::Transition;
use strom_broker::{Broker, BrokerError, ConfigOp, TopicConfig};

use crate::etcd::{CmpOp, Compare, Etcd, EtcdError, EventKind, LeaderKey, TxnOp};
use crate::fetcher::Fetchers;
use crate::meta::{self, BrokerRecord, Keys, PartitionRecord, Raw, TopicRecord};

/// How long an admin request waits for an unreachable etcd.
const ADMIN_RETRY: Duration = Duration::from_secs(15);

/// How long a starting broker keeps trying to reach etcd.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Producer ids taken from the cluster's counter at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// How a broker joins a cluster (`strom serve --node-id ... --cluster-etcd ...`).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This broker's id.
    pub node_id: i32,
    /// etcd's client URLs.
    pub endpoints: Vec<String>,
    /// The cluster's name (its etcd prefix `/strom/<name>/`).
    pub cluster_name: String,
    /// The Kafka host other brokers and clients reach this one at.
    pub host: String,
    /// The Kafka port.
    pub port: i32,
    /// `--rack`.
    pub rack: Option<String>,
    /// The lease TTL: a broker not heard from for this long is dead.
    pub session_timeout: Duration,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag: Duration,
    /// Replicas of a topic created without a replication factor.
    pub default_replication_factor: i16,
}

/// What can stop a broker from joining.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// etcd refused or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] EtcdError),
    /// Another live broker holds this node id.
    #[error("node id {0} is registered by another live broker")]
    NodeIdTaken(i32),
    /// A record in etcd that does not parse.
    #[error("cluster metadata: {0}")]
    Metadata(String),
}

pub(crate) struct Inner {
    pub(crate) broker: Arc<Broker>,
    pub(crate) etcd: Etcd,
    pub(crate) cfg: ClusterConfig,
    keys: Keys,
    raw: RwLock<Raw>,
    meta: RwLock<Arc<ClusterMetadata>>,
    /// The etcd revision this broker has applied (admin requests wait for theirs).
    applied: tokio::sync::watch::Sender<i64>,
    lease: AtomicI64,
    /// Set while this broker's lease may have expired: it leads nothing.
    fenced: AtomicBool,
    /// Set by [`Node::leave`]: the broker is shutting down and never registers again.
    leaving: AtomicBool,
    /// When the lease was last refreshed, in ms since `started`.
    last_refresh_ms: AtomicI64,
    started: Instant,
    /// The topics seen in etcd, so that one gone from it is a deletion.
    seen: Mutex<HashSet<String>>,
    pub(crate) fetchers: Fetchers,
    /// Serialises reconciliations (the watch's and the fencing's).
    reconciling: tokio::sync::Mutex<()>,
}

/// A broker's membership of a cluster; the doors' [`ClusterHandle`].
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

fn json_err(e: serde_json::Error) -> ClusterError {
    ClusterError::Metadata(e.to_string())
}

fn cluster_err(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Cluster(e.to_string())
}

impl Node {
    /// Joins the cluster: registers this broker, reads the metadata, applies it, and starts
    /// the watch, the lease keeper, the controller's campaign and the ISR proposals. The
    /// broker is in cluster mode when this returns.
    pub async fn start(broker: Arc<Broker>, cfg: ClusterConfig) -> Result<Node, ClusterError> {
        let keys = Keys::new(&cfg.cluster_name);
        let ttl = ttl_secs(cfg.session_timeout);
        // etcd may be starting too: keep trying for a while before giving up.
        let deadline = Instant::now() + JOIN_TIMEOUT;
        let (etcd, lease) = loop {
            let attempt = async {
                let etcd = Etcd::connect(&cfg.endpoints).await?;
                let lease = etcd.lease_grant(ttl).await?;
                Ok::<_, EtcdError>((etcd, lease))
            };
            match attempt.await {
                Ok(ok) => break ok,
                Err(e) if Instant::now() < deadline => {
                    tracing::info!(error = %e, "etcd not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        // The cluster id: the first broker's.
        let id_key = keys.cluster_id();
        let r = etcd
            .txn(
                vec![Compare::create_revision(id_key.as_bytes(), CmpOp::Equal, 0)],
                vec![TxnOp::put(id_key.as_bytes(), broker.cluster_id(), 0)],
                vec![TxnOp::get(id_key.as_bytes())],
            )
            .await?;
        let cluster_id = if r.succeeded {
            broker.cluster_id().to_string()
        } else {
            r.gets
                .into_iter()
                .next()
                .flatten()
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                .unwrap_or_default()
        };
        let (applied, _) = tokio::sync::watch::channel(0);
        let inner = Arc::new(Inner {
            fetchers: Fetchers::default(),
            broker: broker.clone(),
            etcd,
            keys,
            raw: RwLock::new(Raw {
                cluster_id,
                controller: -1,
                ..Raw::default()
            }),
            meta: RwLock::new(Arc::new(ClusterMetadata::default())),
            applied,
            lease: AtomicI64::new(lease),
            fenced: AtomicBool::new(false),
            last_refresh_ms: AtomicI64::new(0),
            leaving: AtomicBool::new(false),
            started: Instant::now(),
            seen: Mutex::new(HashSet::new()),
            reconciling: tokio::sync::Mutex::new(()),
            cfg,
        });
        inner.register(lease).await?;
        let node = Node {
            inner: inner.clone(),
        };
        broker.set_cluster(Arc::new(node.clone()));
        inner.refill_producer_ids().await?;
        let revision = inner.load().await?;
        inner.reconcile().await;
        tracing::info!(
            node_id = inner.cfg.node_id,
            cluster = %inner.cfg.cluster_name,
            brokers = inner.meta.read().brokers.len(),
            topics = inner.meta.read().topics.len(),
            "joined the cluster"
        );
        tokio::spawn(inner.clone().watch(revision + 1));
        tokio::spawn(inner.clone().keep_lease());
        tokio::spawn(inner.clone().campaign());
        tokio::spawn(inner.clone().propose_isr());
        tokio::spawn(inner.clone().keep_producer_ids());
        Ok(node)
    }

    /// The metadata as this broker last applied it.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.inner.meta.read().clone()
    }

    /// Leaves the cluster: revokes the lease (the controller moves this broker's
    /// leaderships at once instead of after the session timeout) and stops the fetchers.
    pub async fn leave(&self) {
        // Lead nothing from now on (produces during the drain get NOT_LEADER_OR_FOLLOWER and
        // go to the new leader), and do not register again.
        self.inner.leaving.store(true, Ordering::Release);
        self.inner.fence("shutting down").await;
        self.inner.fetchers.stop_all();
        let lease = self.inner.lease.load(Ordering::Acquire);
        if let Err(e) = self.inner.etcd.lease_revoke(lease).await {
            tracing::warn!(error = %e, "could not revoke the broker's lease");
        }
    }
}

/// The lease TTL in whole seconds (etcd's unit), at least 2.
fn ttl_secs(d: Duration) -> i64 {
    (d.as_millis().div_ceil(1000) as i64).max(2)
}

impl Inner {
    fn me(&self) -> i32 {
        self.cfg.node_id
    }

    /// Registers `brokers/<id>` under `lease`. A registration left by this broker's previous
    /// life (killed before its lease expired) is waited out, up to twice the session timeout.
    async fn register(&self, lease: i64) -> Result<(), ClusterError> {
        let key = self.keys.broker(self.me());
        let record = BrokerRecord {
            id: self.me(),
            host: self.cfg.host.clone(),
            port: self.cfg.port,
            rack: self.cfg.rack.clone(),
        };
        let value = serde_json::to_vec(&record).map_err(json_err)?;
        let deadline = Instant::now() + 2 * self.cfg.session_timeout + Duration::from_secs(2);
        let mut logged = false;
        loop {
            let r = self
                .etcd
                .txn(
                    vec![Compare::create_revision(key.as_bytes(), CmpOp::Equal, 0)],
                    vec![TxnOp::put(key.as_bytes(), value.clone(), lease)],
                    vec![TxnOp::get(key.as_bytes())],
                )
                .await?;
            if r.succeeded {
                return Ok(());
            }
            let held = r.gets.into_iter().next().flatten();
            if held.as_ref().is_some_and(|kv| kv.lease == lease) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NodeIdTaken(self.me()));
            }
            if !logged {
                tracing::info!(
                    node_id = self.me(),
                    "node id still registered (a previous run's lease): waiting for it to expire"
                );
                logged = true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Reads every key of the cluster into `raw`; returns the revision read at.
    async fn load(&self) -> Result<i64, ClusterError> {
        let (kvs, revision) = self.etcd.get_prefix(self.keys.root().as_bytes()).await?;
        let mut raw = Raw {
            cluster_id: self.raw.read().cluster_id.clone(),
            controller: -1,
            revision,
            ..Raw::default()
        };
        for kv in &kvs {
            raw.apply(&self.keys, EventKind::Put, kv);
        }
        // The snapshot's revision, not its newest key's.
        raw.revision = revision;
        raw.controller = self.read_controller().await;
        *self.raw.write() = raw;
        Ok(revision)
    }

    async fn read_controller(&self) -> i32 {
        match self.etcd.leader(self.keys.controller().as_bytes()).await {
            Ok(Some(kv)) => String::from_utf8_lossy(&kv.value).parse().unwrap_or(-1),
            Ok(None) => -1,
            Err(e) => {
                tracing::debug!(error = %e, "controller unknown");
                -1
            }
        }
    }

    /// Follows every change of the cluster's keys from `revision`, applying each batch.
    async fn watch(self: Arc<Self>, mut revision: i64) {
        let root = self.keys.root().to_string();
        loop {
            let mut watcher = match self.etcd.watch_prefix(root.as_bytes(), revision).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the cluster's metadata; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                let events = match watcher.next().await {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::warn!(error = %e, "metadata watch ended; reloading");
                        match self.load().await {
                            Ok(r) => revision = r + 1,
                            Err(e) => {
                                tracing::warn!(error = %e, "reloading the metadata failed");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                        self.reconcile().await;
                        break;
                    }
                };
                let mut controller_moved = false;
                {
                    let mut raw = self.raw.write();
                    for e in events {
                        revision = revision.max(e.kv.mod_revision + 1);
                        controller_moved |= raw.apply(&self.keys, e.kind, &e.kv);
                    }
                }
                if controller_moved {
                    let c = self.read_controller().await;
                    self.raw.write().controller = c;
                }
                self.reconcile().await;
            }
        }
    }

    /// Applies `raw` to the core: local copies of the topics, each partition's role, the
    /// fetchers; then publishes the metadata to the doors.
    pub(crate) async fn reconcile(self: &Arc<Self>) {
        let _one = self.reconciling.lock().await;
        let raw = self.raw.read().clone();
        let fenced = self.fenced.load(Ordering::Acquire);
        let me = self.me();
        let mut snapshot = raw.metadata();
        if fenced {
            // What this broker led it leads no more, and it cannot learn who does: it names
            // the replica the controller elects (the first other in-sync one), so that clients
            // ask that broker, which knows (or says NOT_LEADER_OR_FOLLOWER with the truth).
            for t in snapshot.topics.values_mut() {
                for a in &mut t.partitions {
                    if a.leader == me {
                        a.leader = a
                            .replicas
                            .iter()
                            .copied()
                            .find(|r| *r != me && a.isr.contains(r))
                            .unwrap_or(-1);
                    }
                }
            }
        }
        let meta = Arc::new(snapshot);
        let broker = &self.broker;
        let mut seen = self.seen.lock().clone();
        for (name, (rec, _)) in &raw.topics {
            let Some(id) = meta::unhex(&rec.id) else {
                continue;
            };
            let n = rec.partitions.len() as i32;
            match broker.topic(name) {
                Some(t) if t.id() == id => {
                    if let Err(e) = broker.apply_topic_overrides(name, &rec.configs) {
                        tracing::error!(topic = %name, error = %e, "applying the cluster's configs failed");
                    }
                    if (t.partitions().len() as i32) < n {
                        if let Err(e) = broker.create_partitions(name, n, false) {
                            tracing::error!(topic = %name, error = %e, "adding partitions failed");
                        }
                    }
                }
                existing => {
                    if existing.is_some() {
                        // Another topic of that name (deleted and created again elsewhere).
                        if let Err(e) = broker.delete_topic(name) {
                            tracing::error!(topic = %name, error = %e, "dropping an older copy failed");
                            continue;
                        }
                    }
                    let configs: Vec<(String, String)> = rec.configs.clone().into_iter().collect();
                    if let Err(e) = broker.create_topic_with_id(name, id, n, configs) {
                        tracing::error!(topic = %name, error = %e, "creating the local copy failed");
                        continue;
                    }
                }
            }
            seen.insert(name.clone());
            for (i, p) in rec.partitions.iter().enumerate() {
                let mut a = meta::assignment(p);
                if fenced && a.leader == me {
                    a.leader = -1;
                }
                let i = i as i32;
                match broker.apply_assignment(name, i, &a) {
                    Ok(Transition::BecameFollower { leader }) => {
                        self.fetchers
                            .follow(self, leader, name, i, a.leader_epoch, true);
                    }
                    Ok(Transition::BecameLeader | Transition::Stopped) => {
                        self.fetchers.unfollow(name, i);
                    }
                    Ok(Transition::Unchanged | Transition::Updated) => {
                        if a.leader != me && a.replicas.contains(&me) {
                            self.fetchers
                                .follow(self, a.leader, name, i, a.leader_epoch, false);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(topic = %name, partition = i, error = %e, "assignment not applied")
                    }
                }
            }
        }
        let gone: Vec<String> = seen
            .iter()
            .filter(|n| !raw.topics.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            seen.remove(&name);
            for i in 0..broker
                .topic(&name)
                .map_or(0, |t| t.partitions().len() as i32)
            {
                self.fetchers.unfollow(&name, i);
            }
            match broker.delete_topic(&name) {
                Ok(()) | Err(BrokerError::UnknownTopicOrPartition { .. }) => {}
                Err(e) => {
                    tracing::error!(topic = %name, error = %e, "deleting the local copy failed")
                }
            }
        }
        *self.seen.lock() = seen;
        *self.meta.write() = meta;
        self.applied.send_replace(raw.revision);
    }

    /// Keeps the lease alive; fences this broker when it cannot for the session timeout,
    /// then registers again under a new lease.
    async fn keep_lease(self: Arc<Self>) {
        let period = (self.cfg.session_timeout / 4).max(Duration::from_millis(250));
        tokio::spawn(self.clone().watchdog());
        loop {
            let lease = self.lease.load(Ordering::Acquire);
            let keeper = tokio::time::timeout(period, self.etcd.lease_keepalive(lease)).await;
            let mut keeper = match keeper {
                Ok(Ok(k)) => {
                    self.lease_refreshed().await;
                    Some(k)
                }
                Ok(Err(EtcdError::LeaseExpired)) => None,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "lease keep-alive failed");
                    tokio::time::sleep(period).await;
                    continue;
                }
                Err(_) => continue,
            };
            while let Some(k) = keeper.as_mut() {
                tokio::time::sleep(period).await;
                match tokio::time::timeout(period, k.keep_alive()).await {
                    Ok(Ok(_)) => self.lease_refreshed().await,
                    Ok(Err(EtcdError::LeaseExpired)) => keeper = None,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "lease keep-alive failed");
                        break;
                    }
                    Err(_) => break,
                }
            }
            if self.leaving.load(Ordering::Acquire) {
                return;
            }
            if keeper.is_none() && self.lease.load(Ordering::Acquire) == lease {
                // The lease is gone: etcd counts this broker dead. Lead nothing, then join
                // again under a new lease.
                self.fence("lease expired").await;
                if let Err(e) = self.rejoin().await {
                    tracing::warn!(error = %e, "registering again failed; retrying");
                    tokio::time::sleep(period).await;
                }
            }
        }
    }

    /// A keep-alive answered: the lease holds. A broker fenced meanwhile (etcd unreachable
    /// for the session timeout, its lease still alive in etcd) leads again what the
    /// metadata says it leads: nobody moved it, and it accepted nothing while fenced.
    async fn lease_refreshed(self: &Arc<Self>) {
        self.last_refresh_ms
            .store(self.started.elapsed().as_millis() as i64, Ordering::Release);
        if !self.leaving.load(Ordering::Acquire) && self.fenced.swap(false, Ordering::AcqRel) {
            tracing::info!(
                node_id = self.me(),
                "etcd reachable again, lease alive: fence lifted"
            );
            self.reconcile().await;
        }
    }

    /// Fences this broker when its lease was not refreshed for the session timeout, whatever
    /// the keep-alive is waiting for.
    async fn watchdog(self: Arc<Self>) {
        let timeout = self.cfg.session_timeout.as_millis() as i64;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.started.elapsed().as_millis() as i64;
            if now - self.last_refresh_ms.load(Ordering::Acquire) >= timeout {
                self.fence("etcd unreachable for the session timeout").await;
            }
        }
    }

    async fn fence(self: &Arc<Self>, why: &str) {
        if !self.fenced.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                node_id = self.me(),
                reason = why,
                "fenced: leading no partition until registered again"
            );
            self.reconcile().await;
        }
    }

    async fn rejoin(self: &Arc<Self>) -> Result<(), ClusterError> {
        // The old lease may have outlived the outage (etcd restarted, or reachable again
        // before it expired): revoke it, so that its registration does not block the new one.
        let old = self.lease.load(Ordering::Acquire);
        if let Err(e) = self.etcd.lease_revoke(old).await {
            tracing::debug!(error = %e, "old lease not revoked");
        }
        let lease = self
            .etcd
            .lease_grant(ttl_secs(self.cfg.session_timeout))
            .await?;
        self.register(lease).await?;
        self.lease.store(lease, Ordering::Release);
        self.last_refresh_ms
            .store(self.started.elapsed().as_millis() as i64, Ordering::Release);
        self.fenced.store(false, Ordering::Release);
        tracing::info!(node_id = self.me(), "registered again");
        self.reconcile().await;
        Ok(())
    }

    /// Campaigns for the controller's role; once elected, keeps every partition led.
    async fn campaign(self: Arc<Self>) {
        let name = self.keys.controller();
        loop {
            let lease = self.lease.load(Ordering::Acquire);
            if self.leaving.load(Ordering::Acquire) {
                return;
            }
            if self.fenced.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let key = match self
                .etcd
                .campaign(name.as_bytes(), lease, self.me().to_string().as_bytes())
                .await
            {
                Ok(k) => k,
                Err(e) => {
                    tracing::debug!(error = %e, "campaign failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            tracing::info!(node_id = self.me(), "elected controller");
            let mut applied = self.applied.subscribe();
            while self.lease.load(Ordering::Acquire) == lease
                && !self.fenced.load(Ordering::Acquire)
            {
                if let Err(e) = self.elect_leaders(&key).await {
                    tracing::warn!(error = %e, "leader election pass failed");
                }
                let _ = tokio::time::timeout(Duration::from_millis(500), applied.changed()).await;
            }
            let _ = self.etcd.resign(&key).await;
            tracing::info!(node_id = self.me(), "no longer controller");
        }
    }

    /// The controller's pass: every partition whose leader is not live gets the first live
    /// in-sync replica (in replica order) as leader in the next epoch, the dead leaving the
    /// ISR; with none live it stays without a leader (no unclean election), and gets one as
    /// soon as an in-sync replica is back. Dead brokers leave the ISR of live leaders too.
    async fn elect_leaders(self: &Arc<Self>, fence: &LeaderKey) -> Result<(), EtcdError> {
        let raw = self.raw.read().clone();
        let live: HashSet<i32> = raw.brokers.keys().copied().collect();
        for (name, (rec, rev)) in &raw.topics {
            let mut next = rec.clone();
            let mut changed = false;
            let unclean = unclean_election(rec);
            for (i, p) in next.partitions.iter_mut().enumerate() {
                changed |= elect(p, &live, unclean);
                let before = &rec.partitions[i];
                if p.leader >= 0 && p.leader != before.leader && !before.isr.contains(&p.leader) {
                    tracing::warn!(
                        topic = %name,
                        partition = i,
                        leader = p.leader,
                        "unclean leader election (unclean.leader.election.enable): records only the old ISR had may be lost"
                    );
                }
            }
            if !changed {
                continue;
            }
            if self
                .put_topic(name, &next, *rev, Some(fence))
                .await?
                .is_some()
            {
                tracing::info!(topic = %name, "partition leaders elected");
            }
        }
        Ok(())
    }

    /// Compare-and-put of a topic record: written only if it is still at `rev` (and, with a
    /// fence, the controller's election key still exists). Returns the revision it was
    /// written at (what a caller waits for this broker to apply), `None` if it was not.
    async fn put_topic(
        &self,
        name: &str,
        rec: &TopicRecord,
        rev: i64,
        fence: Option<&LeaderKey>,
    ) -> Result<Option<i64>, EtcdError> {
        let key = self.keys.topic(name);
        let value = serde_json::to_vec(rec).map_err(|e| EtcdError::Status {
            code: tonic::Code::Internal,
            message: e.to_string(),
        })?;
        let mut compares = vec![Compare::mod_revision(key.as_bytes(), CmpOp::Equal, rev)];
        if let Some(f) = fence {
            compares.push(Compare::create_revision(f.key.clone(), CmpOp::Equal, f.rev));
        }
        let r = self
            .etcd
            .txn(compares, vec![TxnOp::put(key.as_bytes(), value, 0)], vec![])
            .await?;
        Ok(r.succeeded.then_some(r.revision))
    }

    /// Takes blocks of producer ids from the cluster's counter (`producer-id-next`,
    /// compare-and-put) until this broker holds two.
    async fn refill_producer_ids(&self) -> Result<(), EtcdError> {
        let key = self.keys.producer_ids();
        while self.broker.producer_id_blocks() < 2 {
            let current = self.etcd.get(key.as_bytes()).await?;
            let (next, compare) = match &current {
                Some(kv) => (
                    String::from_utf8_lossy(&kv.value)
                        .parse::<i64>()
                        .unwrap_or(0),
                    Compare::mod_revision(key.as_bytes(), CmpOp::Equal, kv.mod_revision),
                ),
                None => (0, Compare::create_revision(key.as_bytes(), CmpOp::Equal, 0)),
            };
            let end = next + PRODUCER_ID_BLOCK;
            let r = self
                .etcd
                .txn(
                    vec![compare],
                    vec![TxnOp::put(key.as_bytes(), end.to_string(), 0)],
                    vec![],
                )
                .await?;
            if r.succeeded {
                self.broker.add_producer_id_block(next, end);
            }
        }
        Ok(())
    }

    async fn keep_producer_ids(self: Arc<Self>) {
        loop {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), self.broker.producer_ids_low()).await;
            if let Err(e) = self.refill_producer_ids().await {
                tracing::warn!(error = %e, "could not take a block of producer ids");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// [`Etcd::txn`] for an admin request: tried again for up to [`ADMIN_RETRY`] while etcd
    /// is unreachable (restarting, electing), so that a client's request waits it out.
    async fn txn_retrying(
        &self,
        compares: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    ) -> Result<crate::etcd::TxnResult, EtcdError> {
        retrying(|| {
            self.etcd
                .txn(compares.clone(), success.clone(), failure.clone())
        })
        .await
    }

    /// Leaders' ISR proposals, twice a second.
    async fn propose_isr(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if self.fenced.load(Ordering::Acquire) {
                continue;
            }
            for c in self.broker.isr_changes(self.cfg.replica_lag) {
                let current = self.raw.read().topics.get(&c.topic).cloned();
                let Some((mut rec, rev)) = current else {
                    continue;
                };
                let Some(p) = rec.partitions.get_mut(c.partition as usize) else {
                    continue;
                };
                if p.leader != self.me() || p.leader_epoch != c.leader_epoch {
                    continue;
                }
                let (before, after) = (p.isr.clone(), c.isr.clone());
                p.isr = c.isr;
                match self.put_topic(&c.topic, &rec, rev, None).await {
                    Ok(Some(_)) => tracing::info!(topic = %c.topic, partition = c.partition,
                        ?before, ?after, "ISR changed"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "ISR change not written"),
                }
            }
        }
    }

    /// Waits until this broker applied the metadata at `revision` (an admin change's).
    async fn wait_applied(&self, revision: i64) -> Result<(), BrokerError> {
        let mut rx = self.applied.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if *rx.borrow_and_update() >= revision {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        waited.map_err(|_| cluster_err("the change was not applied on this broker in 15 s"))
    }

    /// The live brokers with their racks, read from etcd itself (an admin request must
    /// not place replicas from a view the watch has not caught up with yet).
    async fn live_brokers(&self) -> Result<Vec<(i32, Option<String>)>, BrokerError> {
        let prefix = self.keys.brokers();
        let (kvs, _) = retrying(|| self.etcd.get_prefix(prefix.as_bytes()))
            .await
            .map_err(cluster_err)?;
        let mut out: Vec<(i32, Option<String>)> = kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<BrokerRecord>(&kv.value).ok())
            .map(|b| (b.id, b.rack))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    async fn create_topic(&self, t: NewTopic, validate_only: bool) -> Result<(), BrokerError> {
        strom_broker::topic::validate_topic_name(&t.name)?;
        let config =
            TopicConfig::from_overrides(t.configs.clone()).map_err(BrokerError::InvalidConfig)?;
        let max = self.broker.config().max_partitions_per_topic;
        let live = self.live_brokers().await?;
        let replicas: Vec<Vec<i32>> = if t.assignments.is_empty() {
            let partitions = if t.partitions == -1 {
                self.broker.config().num_partitions
            } else {
                t.partitions
            };
            if partitions < 1 || partitions > max {
                return Err(BrokerError::InvalidPartitions(format!(
                    "a topic needs between 1 and {max} partitions, not {partitions}"
                )));
            }
            let rf = if t.replication_factor == -1 {
                self.cfg.default_replication_factor
            } else {
                t.replication_factor
            };
            if rf < 1 || rf as usize > live.len() {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "replication factor {rf} with {} live brokers",
                    live.len()
                )));
            }
            let start = (hash(&t.name) % live.len() as u64) as usize;
            meta::place(&live, start, partitions as usize, rf as usize)
        } else {
            for (i, r) in t.assignments.iter().enumerate() {
                let distinct: HashSet<i32> = r.iter().copied().collect();
                if r.is_empty() || distinct.len() != r.len() {
                    return Err(BrokerError::InvalidReplicationFactor(format!(
                        "partition {i}: replicas {r:?} must be distinct and not empty"
                    )));
                }
                if let Some(b) = r.iter().find(|b| !live.iter().any(|l| l.0 == **b)) {
                    return Err(BrokerError::InvalidReplicationFactor(format!(
                        "partition {i}: broker {b} is not live"
                    )));
                }
            }
            t.assignments.clone()
        };
        if validate_only {
            return Ok(());
        }
        let rec = TopicRecord {
            id: meta::hex(&random_id()),
            partitions: replicas.into_iter().map(new_partition).collect(),
            configs: config.overrides().clone(),
        };
        let key = self.keys.topic(&t.name);
        let value = serde_json::to_vec(&rec).map_err(cluster_err)?;
        let r = self
            .txn_retrying(
                vec![Compare::create_revision(key.as_bytes(), CmpOp::Equal, 0)],
                vec![TxnOp::put(key.as_bytes(), value, 0)],
                vec![],
            )
            .await
            .map_err(cluster_err)?;
        if !r.succeeded {
            return Err(BrokerError::TopicAlreadyExists(t.name));
        }
        tracing::info!(topic = %t.name, partitions = rec.partitions.len(), "topic created in the cluster");
        self.wait_applied(r.revision).await
    }

    /// A compare-and-put of one partition's record, changed by `change` (which may refuse),
    /// tried again if the record moved meanwhile.
    async fn change_partition<T>(
        &self,
        topic: &str,
        partition: i32,
        mut change: impl FnMut(&mut PartitionRecord, &HashSet<i32>) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        self.change_topic(topic, |rec, live| {
            let p = rec.partitions.get_mut(partition as usize).ok_or_else(|| {
                BrokerError::UnknownTopicOrPartition {
                    topic: topic.to_string(),
                    partition,
                }
            })?;
            change(p, live)
        })
        .await
    }

    /// Changes a topic's record by compare-and-put (read again and retried when another
    /// write came first) and waits until this broker applied it; `change` gets the record
    /// and the live brokers. A change that leaves the record as it was writes nothing.
    async fn change_topic<T>(
        &self,
        topic: &str,
        mut change: impl FnMut(&mut TopicRecord, &HashSet<i32>) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        for _ in 0..10 {
            let (current, live) = {
                let raw = self.raw.read();
                let live: HashSet<i32> = raw.brokers.keys().copied().collect();
                (raw.topics.get(topic).cloned(), live)
            };
            let Some((mut rec, rev)) = current else {
                return Err(BrokerError::UnknownTopicOrPartition {
                    topic: topic.to_string(),
                    partition: -1,
                });
            };
            let before = rec.clone();
            let out = change(&mut rec, &live)?;
            if rec == before {
                return Ok(out);
            }
            let written = self.put_topic(topic, &rec, rev, None).await;
            if let Some(revision) = written.map_err(cluster_err)? {
                self.wait_applied(revision).await?;
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(cluster_err("the topic kept changing; try again"))
    }

    async fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> Result<(), BrokerError> {
        if let Some(t) = &target {
            let distinct: HashSet<i32> = t.iter().copied().collect();
            if t.is_empty() || distinct.len() != t.len() {
                return Err(BrokerError::InvalidReplicaAssignment(format!(
                    "replicas {t:?} must be distinct and not empty"
                )));
            }
        }
        self.change_partition(topic, partition, |p, live| {
            match &target {
                Some(t) => {
                    if let Some(b) = t.iter().find(|b| !live.contains(b)) {
                        return Err(BrokerError::InvalidReplicaAssignment(format!(
                            "broker {b} is not live"
                        )));
                    }
                    if *t == p.replicas && p.target.is_none() {
                        return Ok(());
                    }
                    if p.origin.is_none() {
                        p.origin = Some(p.replicas.clone());
                    }
                    p.target = Some(t.clone());
                }
                None => {
                    let Some(origin) = p.origin.take() else {
                        return Err(BrokerError::NoReassignmentInProgress {
                            topic: topic.to_string(),
                            partition,
                        });
                    };
                    p.target = None;
                    p.isr.retain(|r| origin.contains(r));
                    if !origin.contains(&p.leader) {
                        p.leader = origin
                            .iter()
                            .copied()
                            .find(|r| p.isr.contains(r) && live.contains(r))
                            .unwrap_or(-1);
                        p.leader_epoch += 1;
                    }
                    p.replicas = origin;
                }
            }
            Ok(())
        })
        .await
    }

    async fn elect_one(
        &self,
        topic: &str,
        partition: i32,
        how: Election,
    ) -> Result<bool, BrokerError> {
        self.change_partition(topic, partition, |p, live| match how {
            Election::Preferred => {
                let preferred = p.replicas.first().copied().unwrap_or(-1);
                if p.leader == preferred {
                    return Ok(false);
                }
                if !(p.isr.contains(&preferred) && live.contains(&preferred)) {
                    return Err(BrokerError::ElectionNotPossible {
                        preferred: true,
                        reason: format!("preferred replica {preferred} is not live and in sync"),
                    });
                }
                p.leader = preferred;
                p.leader_epoch += 1;
                Ok(true)
            }
            Election::Unclean => {
                if p.leader >= 0 && live.contains(&p.leader) {
                    return Ok(false);
                }
                let Some(l) = lead_uncleanly(p, live) else {
                    return Err(BrokerError::ElectionNotPossible {
                        preferred: false,
                        reason: "no replica is live".into(),
                    });
                };
                tracing::warn!(
                    topic,
                    partition,
                    leader = l,
                    "unclean leader election: records only the old ISR had may be lost"
                );
                Ok(true)
            }
        })
        .await
    }

    async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let key = self.keys.topic(name);
        let r = self
            .txn_retrying(
                vec![Compare::create_revision(key.as_bytes(), CmpOp::Greater, 0)],
                vec![TxnOp::delete(key.as_bytes())],
                vec![],
            )
            .await
            .map_err(cluster_err)?;
        if !r.succeeded {
            return Err(BrokerError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            });
        }
        self.wait_applied(r.revision).await
    }

    /// IncrementalAlterConfigs / AlterConfigs of a topic in cluster mode: the changes apply
    /// to the overrides in the topic's record (compare-and-put), which every broker then
    /// applies to its copy in `reconcile`.
    async fn alter_configs(
        &self,
        name: &str,
        ops: &[ConfigOp],
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        self.change_topic(name, |rec, _| {
            let mut config = TopicConfig::from_overrides(rec.configs.clone())
                .map_err(BrokerError::InvalidConfig)?;
            config.apply(ops).map_err(BrokerError::InvalidConfig)?;
            if !validate_only {
                rec.configs = config.overrides().clone();
            }
            Ok(())
        })
        .await
    }

    async fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        for _ in 0..5 {
            let current = self.raw.read().topics.get(name).cloned();
            let Some((mut rec, rev)) = current else {
                return Err(BrokerError::UnknownTopicOrPartition {
                    topic: name.to_string(),
                    partition: -1,
                });
            };
            let n = rec.partitions.len() as i32;
            if total <= n {
                return Err(BrokerError::InvalidPartitions(format!(
                    "topic {name} has {n} partitions; the new count must be larger, not {total}"
                )));
            }
            let max = self.broker.config().max_partitions_per_topic;
            if total > max {
                return Err(BrokerError::InvalidPartitions(format!(
                    "at most {max} partitions per topic"
                )));
            }
            let rf = rec.partitions.first().map_or(1, |p| p.replicas.len());
            let live = self.live_brokers().await?;
            if rf > live.len() {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "replication factor {rf} with {} live brokers",
                    live.len()
                )));
            }
            if validate_only {
                return Ok(());
            }
            let start = (hash(name) % live.len() as u64) as usize;
            let added = meta::place(&live, start + n as usize, (total - n) as usize, rf);
            rec.partitions.extend(added.into_iter().map(new_partition));
            let written = self.put_topic(name, &rec, rev, None).await;
            if let Some(revision) = written.map_err(cluster_err)? {
                return self.wait_applied(revision).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(cluster_err("the topic kept changing; try again"))
    }
}

/// Runs an etcd request for an admin request, again for up to [`ADMIN_RETRY`] while etcd is
/// unreachable (restarting, electing), so that the client's request waits it out.
async fn retrying<T, F, Fut>(mut call: F) -> Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    let deadline = Instant::now() + ADMIN_RETRY;
    loop {
        match call().await {
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => return r,
        }
    }
}

/// The controller's rule for one partition (see [`Inner::elect_leaders`]); whether it
/// changed.
fn elect(p: &mut PartitionRecord, live: &HashSet<i32>, unclean: bool) -> bool {
    let moved = advance_reassignment(p, live);
    moved | elect_leader(p, live, unclean)
}

/// The topic's `unclean.leader.election.enable` (off unless set to true, as Kafka's default).
fn unclean_election(rec: &TopicRecord) -> bool {
    rec.configs
        .get("unclean.leader.election.enable")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A reassignment's steps: the target's new replicas join `replicas` (they start copying);
/// once every target replica is in sync, `replicas` becomes the target, the others leave
/// the ISR, and a leader outside the target hands over to the first in-sync target replica
/// in the next epoch.
fn advance_reassignment(p: &mut PartitionRecord, live: &HashSet<i32>) -> bool {
    let Some(target) = p.target.clone() else {
        return false;
    };
    let missing: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !p.replicas.contains(r))
        .collect();
    if !missing.is_empty() {
        p.replicas.extend(missing);
        return true;
    }
    if !target.iter().all(|r| p.isr.contains(r)) {
        return false;
    }
    p.isr.retain(|r| target.contains(r));
    if !target.contains(&p.leader) {
        if let Some(l) = target
            .iter()
            .copied()
            .find(|r| p.isr.contains(r) && live.contains(r))
        {
            p.leader = l;
            p.leader_epoch += 1;
        }
    }
    p.replicas = target;
    p.target = None;
    p.origin = None;
    true
}

/// Elects a leader from the live in-sync replicas; with none, and `unclean`, from any live
/// replica (its log becomes the partition's: the ISR restarts with it alone).
fn elect_leader(p: &mut PartitionRecord, live: &HashSet<i32>, unclean: bool) -> bool {
    if p.leader >= 0 && live.contains(&p.leader) {
        let before = p.isr.len();
        p.isr.retain(|r| live.contains(r) || *r == p.leader);
        return p.isr.len() != before;
    }
    let candidate = p
        .replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && live.contains(r));
    if let Some(new) = candidate {
        p.leader = new;
        p.leader_epoch += 1;
        p.isr.retain(|r| live.contains(r));
        return true;
    }
    if unclean && lead_uncleanly(p, live).is_some() {
        return true;
    }
    if p.leader == -1 {
        return false;
    }
    // Every in-sync replica is dead: offline, the ISR kept for when one returns.
    p.leader = -1;
    p.leader_epoch += 1;
    true
}

/// An unclean election: the first live replica leads, in the next epoch, with an ISR of
/// itself (its log becomes the partition's). `None`, and nothing changed, if none is live.
fn lead_uncleanly(p: &mut PartitionRecord, live: &HashSet<i32>) -> Option<i32> {
    let l = p.replicas.iter().copied().find(|r| live.contains(r))?;
    p.leader = l;
    p.leader_epoch += 1;
    p.isr = vec![l];
    Some(l)
}

fn new_partition(replicas: Vec<i32>) -> PartitionRecord {
    PartitionRecord {
        leader: replicas[0],
        leader_epoch: 0,
        isr: replicas.clone(),
        replicas,
        target: None,
        origin: None,
    }
}

fn hash(s: &str) -> u64 {
    // FNV-1a: stable across runs and brokers.
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut id).is_ok() {
            return id;
        }
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    id.copy_from_slice(&t.to_le_bytes());
    id
}

impl ClusterHandle for Node {
    fn metadata(&self) -> Arc<ClusterMetadata> {
        self.inner.meta.read().clone()
    }

    fn create_topic(&self, topic: NewTopic, validate_only: bool) -> AdminFuture<'_> {
        Box::pin(async move { self.inner.create_topic(topic, validate_only).await })
    }

    fn delete_topic(&self, name: String) -> AdminFuture<'_> {
        Box::pin(async move { self.inner.delete_topic(&name).await })
    }

    fn create_partitions(&self, name: String, total: i32, validate_only: bool) -> AdminFuture<'_> {
        Box::pin(async move {
            self.inner
                .create_partitions(&name, total, validate_only)
                .await
        })
    }

    fn reassign(&self, topic: String, partition: i32, target: Option<Vec<i32>>) -> AdminFuture<'_> {
        Box::pin(async move { self.inner.reassign(&topic, partition, target).await })
    }

    fn alter_topic_config(
        &self,
        topic: String,
        ops: Vec<ConfigOp>,
        validate_only: bool,
    ) -> AdminFuture<'_> {
        Box::pin(async move { self.inner.alter_configs(&topic, &ops, validate_only).await })
    }

    fn elect(&self, topic: String, partition: i32, how: Election) -> AdminFutureOf<'_, bool> {
        Box::pin(async move { self.inner.elect_one(&topic, partition, how).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionRecord {
        PartitionRecord {
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 3,
            isr: isr.to_vec(),
            target: None,
            origin: None,
        }
    }

    #[test]
    fn a_reassignment_adds_the_new_replicas_then_drops_the_old_once_in_sync() {
        let live: HashSet<i32> = [1, 2, 3, 4].into();
        let mut p = part(&[1, 2], 1, &[1, 2]);
        p.target = Some(vec![3, 4]);
        p.origin = Some(vec![1, 2]);
        assert!(elect(&mut p, &live, false));
        assert_eq!(p.replicas, vec![1, 2, 3, 4], "new replicas copy first");
        assert_eq!(p.leader, 1);
        assert!(!elect(&mut p, &live, false), "waits for them to be in sync");
        p.isr = vec![1, 2, 3, 4];
        assert!(elect(&mut p, &live, false));
        assert_eq!(
            (p.replicas.clone(), p.isr.clone()),
            (vec![3, 4], vec![3, 4])
        );
        assert_eq!(
            (p.leader, p.leader_epoch),
            (3, 4),
            "leadership moved in a new epoch"
        );
        assert_eq!(p.target, None);
    }

    #[test]
    fn with_unclean_election_a_live_out_of_sync_replica_leads() {
        // Only 2 is live, and it is not in sync: offline without unclean election...
        let live: HashSet<i32> = [2].into();
        let mut p = part(&[1, 2, 3], 1, &[1, 3]);
        assert!(elect(&mut p, &live, false));
        assert_eq!((p.leader, p.leader_epoch), (-1, 4));
        // ...and led by 2 with it, in a new epoch, the ISR restarting with it alone.
        assert!(elect(&mut p, &live, true));
        assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (2, 5, vec![2]));
        assert!(!elect(&mut p, &live, true), "stable");
        // A live in-sync replica is still preferred.
        let live: HashSet<i32> = [2, 3].into();
        let mut p = part(&[1, 2, 3], 1, &[1, 3]);
        assert!(elect(&mut p, &live, true));
        assert_eq!((p.leader, p.isr.clone()), (3, vec![3]));
        // No live replica at all: offline.
        let live: HashSet<i32> = [4].into();
        let mut p = part(&[1, 2, 3], 1, &[1, 3]);
        assert!(elect(&mut p, &live, true));
        assert_eq!(p.leader, -1);
        let rec = |configs: &[(&str, &str)]| TopicRecord {
            id: String::new(),
            partitions: Vec::new(),
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let key = "unclean.leader.election.enable";
        assert!(unclean_election(&rec(&[(key, "true")])));
        assert!(!unclean_election(&rec(&[(key, "false")])));
        assert!(!unclean_election(&rec(&[])));
    }

    #[test]
    fn a_dead_leader_is_replaced_by_the_first_live_in_sync_replica() {
        let live: HashSet<i32> = [2, 3].into();
        let mut p = part(&[1, 2, 3], 1, &[1, 3]);
        assert!(elect(&mut p, &live, false));
        assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (3, 4, vec![3]));
        // No live in-sync replica: offline, no unclean election of 2.
        let live: HashSet<i32> = [2].into();
        let mut p = part(&[1, 2, 3], 1, &[1, 3]);
        assert!(elect(&mut p, &live, false));
        assert_eq!((p.leader, p.leader_epoch), (-1, 4));
        assert!(!elect(&mut p, &live, false), "stays offline");
        let live: HashSet<i32> = [2, 3].into();
        assert!(elect(&mut p, &live, false), "3 came back");
        assert_eq!(p.leader, 3);
        // A live leader keeps leading; dead followers leave its ISR.
        let live: HashSet<i32> = [1, 2].into();
        let mut p = part(&[1, 2, 3], 1, &[1, 2, 3]);
        assert!(elect(&mut p, &live, false));
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (1, 3, vec![1, 2])
        );
        assert!(!elect(&mut p, &live, false));
    }

    #[test]
    fn lease_ttls_are_whole_seconds_of_at_least_two() {
        assert_eq!(ttl_secs(Duration::from_millis(3000)), 3);
        assert_eq!(ttl_secs(Duration::from_millis(2500)), 3);
        assert_eq!(ttl_secs(Duration::from_millis(100)), 2);
    }

    #[test]
    fn topic_hashes_are_stable() {
        assert_eq!(hash("orders"), hash("orders"));
        assert_ne!(hash("orders"), hash("orderz"));
    }
}
