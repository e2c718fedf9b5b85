//! The aborted-transaction index: `<base>.txnindex` beside each segment, in Kafka's layout —
//! fixed entries of `version: i16 = 0, producer_id: i64, first_offset: i64,
//! last_offset: i64, last_stable_offset: i64`, big-endian, in the order they were added.
//!
//! The log knows no transactions: its owner tells it that the records of one producer from
//! `first_offset` to `last_offset` (the offset of the ABORT marker) are an aborted range
//! ([`crate::Log::add_aborted`]); the entry goes to the file of the segment holding
//! `last_offset`, synced before the call returns, and is kept in memory for reads
//! ([`crate::Log::aborted_ranges`]). Retention deletes the file with its segment. At open, a
//! torn last entry is cut and entries naming offsets past the recovered end are dropped; an
//! entry that never reached the disk is the owner's to add again from its replay of the log
//! (adding a range twice is a no-op).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::segment::segment_path;

/// Bytes of one entry.
pub const TXN_ENTRY_LEN: usize = 34;
const VERSION: i16 = 0;

/// One aborted range of a producer's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedRange {
    /// The producer.
    pub producer_id: i64,
    /// First offset of the range (its first record).
    pub first_offset: i64,
    /// Last offset of the range (the marker that closed it).
    pub last_offset: i64,
    /// The owner's stable offset once the range was closed.
    pub last_stable_offset: i64,
}

/// An entry and the segment whose file holds it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) segment: i64,
    pub(crate) range: AbortedRange,
}

pub(crate) fn encode(r: &AbortedRange) -> [u8; TXN_ENTRY_LEN] {
    let mut b = [0u8; TXN_ENTRY_LEN];
    b[..2].copy_from_slice(&VERSION.to_be_bytes());
    b[2..10].copy_from_slice(&r.producer_id.to_be_bytes());
    b[10..18].copy_from_slice(&r.first_offset.to_be_bytes());
    b[18..26].copy_from_slice(&r.last_offset.to_be_bytes());
    b[26..34].copy_from_slice(&r.last_stable_offset.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> Option<AbortedRange> {
    let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    if i16::from_be_bytes([b[0], b[1]]) != VERSION {
        return None;
    }
    let r = AbortedRange {
        producer_id: i64_at(2),
        first_offset: i64_at(10),
        last_offset: i64_at(18),
        last_stable_offset: i64_at(26),
    };
    (r.first_offset <= r.last_offset).then_some(r)
}

/// Appends one entry to the segment's file and syncs it.
pub(crate) fn append(dir: &Path, segment: i64, r: &AbortedRange) -> io::Result<()> {
    let path = segment_path(dir, segment, "txnindex");
    let mut f = OpenOptions::new().append(true).create(true).open(&path)?;
    let len = f.metadata()?.len();
    if let Err(e) = f.write_all(&encode(r)).and_then(|()| f.sync_data()) {
        let _ = f.set_len(len);
        return Err(e);
    }
    if len == 0 {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Loads the files of the segments `bases` (sorted) of a log ending at `end`: cuts a torn
/// tail, drops entries at or past `end` (records a recovery truncated), removes files of
/// segments that no longer exist. Entries come back in file order, segment by segment.
pub(crate) fn load(dir: &Path, bases: &[i64], end: i64) -> io::Result<Vec<Entry>> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".txnindex")) else {
            continue;
        };
        match stem.parse::<i64>() {
            Ok(base) if stem.len() == 20 && bases.binary_search(&base).is_ok() => {}
            _ => {
                let path = dir.join(&name);
                tracing::info!(path = %path.display(), "removed the aborted-transaction index of a segment that is gone");
                fs::remove_file(path)?;
            }
        }
    }
    let mut out = Vec::new();
    for &base in bases {
        let path = segment_path(dir, base, "txnindex");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut kept = 0usize;
        for chunk in bytes.chunks_exact(TXN_ENTRY_LEN) {
            match decode(chunk) {
                Some(range) if range.last_offset < end => {
                    out.push(Entry {
                        segment: base,
                        range,
                    });
                    kept += TXN_ENTRY_LEN;
                }
                _ => break,
            }
        }
        if kept < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                kept_bytes = kept,
                file_bytes = bytes.len(),
                "aborted-transaction index cut after its last whole entry within the log"
            );
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(kept as u64)?;
            f.sync_all()?;
        }
    }
    Ok(out)
}
