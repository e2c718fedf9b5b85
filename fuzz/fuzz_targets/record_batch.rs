//! The record batch validator (`strom_records::validate`, run on every append) and the
//! readers (`strom_records::decode_batches`, used by the HTTP door and the CLI). Input: one or
//! more v2 batches, as in `fuzz/corpus/record_batch/`. The first batch's length is cut to
//! the bytes there are when it claims more, and its CRC-32C is set to match its bytes, so that
//! the fuzzer gets past the header into the records and compressed payloads (a wrong CRC is
//! refused before anything else, and unit tests cover that).
//!
//! Checked: nothing panics or allocates beyond the cap; a batch the validator accepts is one
//! every reader reads whole, with as many records as its header says.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strom_records::{decode_batches, validate, BatchHeader, HEADER_LEN, LOG_OVERHEAD};

strom_fuzz::capped_allocator!();

/// Start of the CRC-32C field and of the bytes it covers.
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    if buf.len() >= HEADER_LEN {
        let claimed = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let there = (buf.len() - LOG_OVERHEAD) as i32;
        let len = if (0..=there).contains(&claimed) && claimed as usize + LOG_OVERHEAD >= HEADER_LEN
        {
            claimed
        } else {
            there
        };
        buf[8..12].copy_from_slice(&len.to_be_bytes());
        let end = LOG_OVERHEAD + len as usize;
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..end]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    let verdict = validate(&buf, 1 << 20);
    let bytes = Bytes::from(buf);
    let mut batches = 0usize;
    let mut records = 0u64;
    for (header, read) in decode_batches(&bytes) {
        batches += 1;
        match read {
            Ok(rs) => records += rs.len() as u64,
            Err(bad) => assert!(
                verdict.is_err(),
                "validated, but a reader refuses the batch at {}: {}",
                bad.offset,
                bad.error
            ),
        }
        let _: BatchHeader = header;
    }
    if let Ok(summary) = verdict {
        assert_eq!(summary.batches, batches, "every validated batch is read");
        assert_eq!(summary.records, records, "with its records");
    }
});
