//! Helpers shared by the log's integration tests.

use strom_log::{batch_headers, Log};

/// Every stored batch from the log start to its end, byte for byte.
pub(crate) fn all_batches(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20).unwrap();
        for (pos, h) in batch_headers(&r.data) {
            out.push(r.data[pos..pos + h.total_len()].to_vec());
            offset = h.last_offset() + 1;
        }
    }
    out
}
