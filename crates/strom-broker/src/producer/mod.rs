//! Idempotent producers: a retried batch is never stored twice.
//!
//! Two parts:
//! - [`ProducerIds`] hands out producer ids (InitProducerId). Ids are reserved in blocks whose
//!   end is made durable before any id of the block is given out, so an id is never reused,
//!   across restarts and crashes alike.
//! - [`PartitionProducers`] is one partition's view of its producers: per producer id, the
//!   epoch and the sequence ranges and offsets of its last [`BATCHES_KEPT`] batches, as Kafka
//!   keeps them. Before an append, [`PartitionProducers::check`] classifies each batch as new,
//!   a duplicate (acknowledged again with its original offsets, not written), or an error
//!   (out-of-order sequence, stale epoch, unknown producer). After the append,
//!   [`PartitionProducers::record`] remembers it.
//!
//! The state is rebuilt at start from the newest snapshot (`<offset>.snapshot` in the
//! partition directory, written when a segment rolls and at clean shutdown) plus the batch
//! headers of the log tail after it: producer id, epoch and base sequence live in every batch
//! header, so the log itself is the journal.
//!
//! **Invariant:** check, append and record of one partition happen under one lock, so two
//! batches of one producer can never both pass the check as "new" with the same sequence.
//!
//! Transactions: a transactional data batch of producer P starts (or continues) P's ongoing
//! transaction at its first offset ([`ProducerEntry::txn_first_offset`]); a marker written
//! by [`crate::Broker::write_txn_marker`] ends it ([`PartitionProducers::end_txn`]), and an
//! ABORT marker adds the aborted range to the log's `.txnindex`. The last stable offset is
//! the first offset of the earliest ongoing transaction, else the high watermark. Snapshot
//! version 2 keeps both (version 1 is still read); replay of the tail re-applies the
//! markers after the snapshot and re-adds their aborted ranges if a crash lost them.

mod aborted;
mod ids;
mod state;

pub use aborted::AbortedFilter;
pub use ids::{ProducerIds, RESET_IDS_PER_MS};
pub use state::{
    BatchCheck, PartitionProducers, ProducerEntry, ProducerInfo, ProducerStateError, SequenceRange,
    BATCHES_KEPT, PRODUCER_ID_EXPIRATION_MS_DEFAULT,
};
