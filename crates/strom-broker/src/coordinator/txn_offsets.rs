//! Offsets committed inside a transaction (TxnOffsetCommit): the transaction coordinator
//! keeps them pending in its own log (`.strom/txn/`, see [`crate::txn`]) and hands them here
//! when the transaction commits; they then become the group's committed offsets, written to
//! the group store like an OffsetCommit (without its generation check: the transaction, not
//! the group's membership, decides). An abort drops them without a trace here.

use super::store::{Committed, Entry};
use super::{GroupCoordinator, GroupError};

impl GroupCoordinator {
    /// Makes a committed transaction's offsets of `group_id` its committed offsets (durably).
    pub async fn commit_transactional(
        &self,
        group_id: &str,
        offsets: Vec<(String, i32, Committed)>,
    ) -> Result<(), GroupError> {
        let entries: Vec<Entry> = offsets
            .into_iter()
            .map(|(topic, partition, c)| Entry::Offset {
                group: group_id.to_string(),
                topic,
                partition,
                value: Some(c),
            })
            .collect();
        self.store_offsets(group_id, entries).await
    }
}
