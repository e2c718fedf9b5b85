//! What the doors see of the cluster in cluster mode: the metadata as last read from the
//! cluster's store (brokers, controller, every topic's partition assignments) and the admin
//! operations that change it. `strom-cluster` implements [`ClusterHandle`] over etcd and
//! installs it with [`Broker::set_cluster`]; a standalone broker has none, and its doors
//! describe it as a one-broker cluster.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::broker::{Broker, ConfigOp};
use crate::error::{BrokerError, Result};
use crate::replica::Assignment;

/// A boxed future of an admin operation.
pub type AdminFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A boxed future of an admin operation that answers a value.
pub type AdminFutureOf<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Which leader ElectLeaders asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Election {
    /// The preferred replica (the first), if it is live and in sync.
    Preferred,
    /// Any live replica, in sync or not, for a partition without a leader (may lose
    /// acknowledged records: an explicit operator decision).
    Unclean,
}

/// A live broker of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its `--node-id`.
    pub id: i32,
    /// The Kafka host it advertises.
    pub host: String,
    /// The Kafka port it advertises.
    pub port: i32,
    /// Its `--rack`, if any.
    pub rack: Option<String>,
}

/// A topic as the cluster's metadata holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicAssignment {
    /// The topic id (the same on every broker).
    pub id: [u8; 16],
    /// Each partition's replicas, leader, epoch and ISR, by index.
    pub partitions: Vec<Assignment>,
    /// Each partition's reassignment in progress (the replicas asked for), by index.
    pub targets: Vec<Option<Vec<i32>>>,
    /// The topic's config overrides.
    pub configs: BTreeMap<String, String>,
}

/// A snapshot of the cluster's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// The cluster's id.
    pub cluster_id: String,
    /// The controller's broker id (-1: none elected).
    pub controller: i32,
    /// The live brokers, by id.
    pub brokers: Vec<NodeInfo>,
    /// Every topic, by name.
    pub topics: BTreeMap<String, TopicAssignment>,
    /// The store's revision this snapshot was read at.
    pub revision: i64,
}

impl ClusterMetadata {
    /// A live broker by id.
    pub fn node(&self, id: i32) -> Option<&NodeInfo> {
        self.brokers.iter().find(|b| b.id == id)
    }
}

/// A new topic for [`ClusterHandle::create_topic`].
#[derive(Clone, Debug)]
pub struct NewTopic {
    /// Its name.
    pub name: String,
    /// Partitions (-1: the broker's default).
    pub partitions: i32,
    /// Replicas per partition (-1: the broker's default).
    pub replication_factor: i16,
    /// Explicit replicas per partition (CreateTopics' assignments), instead of the two above.
    pub assignments: Vec<Vec<i32>>,
    /// Config overrides.
    pub configs: Vec<(String, String)>,
}

/// The cluster's admin operations and metadata, as the doors call them.
pub trait ClusterHandle: Send + Sync {
    /// The metadata as last seen.
    fn metadata(&self) -> Arc<ClusterMetadata>;
    /// Creates a topic in the cluster's metadata and waits until this broker has it.
    fn create_topic(&self, topic: NewTopic, validate_only: bool) -> AdminFuture<'_>;
    /// Deletes a topic from the cluster's metadata and waits until this broker dropped it.
    fn delete_topic(&self, name: String) -> AdminFuture<'_>;
    /// Grows a topic to `total` partitions.
    fn create_partitions(&self, name: String, total: i32, validate_only: bool) -> AdminFuture<'_>;
    /// Starts moving a partition to `target` replicas (`None`: cancels the reassignment in
    /// progress, back to the replicas before it).
    fn reassign(&self, topic: String, partition: i32, target: Option<Vec<i32>>) -> AdminFuture<'_>;
    /// Elects a leader; whether one was elected (`false`: not needed).
    fn elect(&self, topic: String, partition: i32, how: Election) -> AdminFutureOf<'_, bool>;
    /// Changes a topic's configs in the cluster's metadata (all or nothing, checked against
    /// the overrides stored there) and waits until this broker applied them.
    fn alter_topic_config(
        &self,
        topic: String,
        ops: Vec<ConfigOp>,
        validate_only: bool,
    ) -> AdminFuture<'_>;
}

/// Producer ids in cluster mode: blocks the cluster's metadata store hands out (unique across
/// the cluster, never given twice), used in order; the cluster refills when one is left.
#[derive(Default)]
pub struct IdBlocks {
    blocks: parking_lot::Mutex<std::collections::VecDeque<(i64, i64)>>,
    /// Woken when a block is taken into use (the cluster then fetches another).
    low: tokio::sync::Notify,
}

impl Broker {
    /// Cluster mode: adds a block `start..end` of producer ids this broker may hand out.
    pub fn add_producer_id_block(&self, start: i64, end: i64) {
        if start < end {
            self.id_blocks.blocks.lock().push_back((start, end));
        }
    }

    /// Cluster mode: how many blocks of producer ids are left (the cluster keeps two).
    pub fn producer_id_blocks(&self) -> usize {
        self.id_blocks.blocks.lock().len()
    }

    /// Cluster mode: waits until a block of producer ids was used up.
    pub async fn producer_ids_low(&self) {
        self.id_blocks.low.notified().await;
    }

    pub(crate) fn cluster_producer_id(&self) -> Result<i64> {
        let mut blocks = self.id_blocks.blocks.lock();
        let Some((start, end)) = blocks.front_mut() else {
            return Err(crate::error::BrokerError::Cluster(
                "no producer id block from the cluster yet; retry".into(),
            ));
        };
        let id = *start;
        *start += 1;
        if *start >= *end {
            blocks.pop_front();
            self.id_blocks.low.notify_one();
        }
        Ok(id)
    }

    /// Whether a producer id may be in use: any in cluster mode (other brokers hand them
    /// out), else one this broker issued.
    pub(crate) fn producer_id_issued(&self, id: i64) -> bool {
        if self.is_clustered() {
            return id >= 0;
        }
        self.producer_ids.was_issued(id)
    }

    /// Creates a topic the way the broker's mode says: in the cluster's metadata (with
    /// `replication_factor` replicas, -1 the cluster's default) or locally. For the doors
    /// that have no replica assignments of their own (HTTP, gRPC).
    pub async fn admin_create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: Vec<(String, String)>,
    ) -> Result<()> {
        match self.cluster() {
            Some(c) => {
                let topic = NewTopic {
                    name: name.to_string(),
                    partitions,
                    replication_factor,
                    assignments: Vec::new(),
                    configs,
                };
                c.create_topic(topic, false).await
            }
            None => self.create_topic(name, partitions, configs, false),
        }
    }

    /// The topic, auto-created when `auto.create.topics.enable` is on (Kafka does this for
    /// Metadata requests) with the default partition count: locally, or in cluster mode in
    /// the cluster's metadata with the default replication factor.
    pub async fn admin_topic_or_create(&self, name: &str) -> Result<Arc<crate::topic::Topic>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        if !self.config().auto_create_topics {
            return Err(BrokerError::unknown(name, -1));
        }
        match self.admin_create_topic(name, -1, -1, Vec::new()).await {
            Ok(()) | Err(BrokerError::TopicAlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        self.topic(name)
            .ok_or_else(|| BrokerError::unknown(name, -1))
    }

    /// Changes a topic's configs in the cluster's metadata, which every broker applies, or
    /// locally (see [`Broker::admin_create_topic`]). For every door.
    pub async fn admin_alter_topic_config(
        &self,
        name: &str,
        ops: &[ConfigOp],
        validate_only: bool,
    ) -> Result<()> {
        match self.cluster() {
            Some(c) => {
                c.alter_topic_config(name.to_string(), ops.to_vec(), validate_only)
                    .await
            }
            None => self.alter_topic_config(name, ops, validate_only),
        }
    }

    /// Deletes a topic in the cluster's metadata or locally (see [`Broker::admin_create_topic`]).
    pub async fn admin_delete_topic(&self, name: &str) -> Result<()> {
        match self.cluster() {
            Some(c) => c.delete_topic(name.to_string()).await,
            None => self.delete_topic(name),
        }
    }

    /// Grows a topic in the cluster's metadata or locally (see [`Broker::admin_create_topic`]).
    pub async fn admin_create_partitions(&self, name: &str, total: i32) -> Result<()> {
        match self.cluster() {
            Some(c) => c.create_partitions(name.to_string(), total, false).await,
            None => self.create_partitions(name, total, false),
        }
    }

    /// Installs the cluster (once), and enters cluster mode.
    pub fn set_cluster(&self, handle: Arc<dyn ClusterHandle>) {
        self.enable_cluster();
        let _ = self.cluster.set(handle);
    }

    /// The cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<dyn ClusterHandle>> {
        self.cluster.get()
    }
}
