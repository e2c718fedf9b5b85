//! Strom's cluster mode. Brokers share their membership, the controller's election and the
//! cluster's metadata through etcd ([`etcd`]: our own client of its v3 gRPC API); partition
//! data replicates broker to broker with Kafka's follower fetch ([`fetcher`]); [`node`] is
//! one broker's membership, applying the metadata to the core (`strom_broker::replica`). A
//! standalone broker uses none of this.

pub mod etcd;
mod fetcher;
pub mod meta;
pub mod node;

pub use etcd::{
    prefix_end, CmpOp, Compare, Etcd, EtcdError, EventKind, Kv, LeaderKey, LeaseKeeper, Result,
    TxnOp, TxnResult, WatchEvent, Watcher,
};
pub use node::{ClusterConfig, ClusterError, Node};
