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
//! Transactions will extend [`ProducerEntry`] (ongoing transaction's first offset) and the
//! snapshot (a version field exists for that); the check/record split stays.

mod ids;
mod state;

pub use ids::{ProducerIds, RESET_IDS_PER_MS};
pub use state::{
    BatchCheck, PartitionProducers, ProducerEntry, ProducerStateError, SequenceRange, BATCHES_KEPT,
    PRODUCER_ID_EXPIRATION_MS_DEFAULT,
};
