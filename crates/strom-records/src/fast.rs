//! The validator's fast path for uncompressed batches: a tight loop over the records in place
//! that says only "valid" or "look closer". It accepts a subset of what the generic walker
//! (`walk`) accepts — varints of at most 4 bytes (lengths below 2^27), timestamp deltas of at
//! most 8 bytes — and checks everything else the walker checks; on anything it does not
//! accept, the batch goes through `walk`, which gives the exact verdict and the error.
//!
//! **Invariant:** `records_ok` true implies `walk` accepts the batch (tested against it on
//! built and mutated batches in `tests.rs`).

/// A zig-zag varint of at most `max` bytes at `*pos`, within `end`.
#[inline(always)]
fn varint(b: &[u8], pos: &mut usize, end: usize, max: usize) -> Option<i64> {
    let mut raw = 0u64;
    for i in 0..max {
        let byte = *b.get(*pos + i).filter(|_| *pos + i < end)?;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *pos += i + 1;
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

/// A length-prefixed field (`-1` = null when `nullable`) within `end`.
#[inline(always)]
fn field(b: &[u8], pos: &mut usize, end: usize, nullable: bool) -> Option<()> {
    let len = varint(b, pos, end, 4)?;
    if len == -1 && nullable {
        return Some(());
    }
    let len = usize::try_from(len).ok()?;
    if len > end - *pos {
        return None;
    }
    *pos += len;
    Some(())
}

/// Whether the `count` records in `records` (an uncompressed batch's record bytes) are
/// certainly valid for a batch whose base timestamp is `base_timestamp`: `Some(reserved)`
/// if they are, `reserved` telling whether a header key starts with
/// [`crate::RESERVED_HEADER_PREFIX`]; `None` to look closer.
pub(crate) fn records_ok(records: &[u8], count: i32, base_timestamp: i64) -> Option<bool> {
    walk(records, count, base_timestamp)
}

fn walk(b: &[u8], count: i32, base_timestamp: i64) -> Option<bool> {
    let mut pos = 0usize;
    let mut reserved = false;
    for index in 0..count {
        let len = usize::try_from(varint(b, &mut pos, b.len(), 4)?).ok()?;
        let end = pos.checked_add(len).filter(|&e| e <= b.len())?;
        if len == 0 {
            return None;
        }
        pos += 1; // attributes
        let ts_delta = varint(b, &mut pos, end, 8)?;
        base_timestamp.checked_add(ts_delta)?;
        if varint(b, &mut pos, end, 4)? != i64::from(index) {
            return None;
        }
        field(b, &mut pos, end, true)?; // key
        field(b, &mut pos, end, true)?; // value
        let headers = usize::try_from(varint(b, &mut pos, end, 4)?).ok()?;
        if headers > (end - pos) / 2 {
            return None;
        }
        for _ in 0..headers {
            // The key (never null), and whether it is one of Strom's: one compare of a
            // prefix the loop has in cache anyway.
            let len = usize::try_from(varint(b, &mut pos, end, 4)?).ok()?;
            if len > end - pos {
                return None;
            }
            reserved |= is_reserved(&b[pos..pos + len]);
            pos += len;
            field(b, &mut pos, end, true)?;
        }
        if pos != end {
            return None;
        }
    }
    (pos == b.len()).then_some(reserved)
}

/// Whether a header key is one of Strom's (`strom.`…).
#[inline(always)]
pub(crate) fn is_reserved(key: &[u8]) -> bool {
    key.len() >= crate::RESERVED_HEADER_PREFIX.len()
        && key[..crate::RESERVED_HEADER_PREFIX.len()] == *crate::RESERVED_HEADER_PREFIX
}
