//! Sparse offset and time indexes, Kafka's file formats.
//!
//! `<base>.index`: 8-byte entries, big-endian `(relative offset: u32, position: u32)`; the
//! offset is the base offset of the batch that starts at `position`.
//! `<base>.timeindex`: 12-byte entries `(timestamp: i64, relative offset: u32)`; the timestamp
//! is the largest timestamp of all batches up to and including the batch at that offset.
//! Both are strictly increasing. Entries are appended, never rewritten, except by recovery.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// One offset index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) rel_offset: u32,
    pub(crate) position: u32,
}

/// One time index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp: i64,
    pub(crate) rel_offset: u32,
}

pub(crate) const INDEX_ENTRY_LEN: usize = 8;
pub(crate) const TIME_ENTRY_LEN: usize = 12;

impl IndexEntry {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
}

impl TimeEntry {
    /// Appends an entry for `timestamp` at `rel_offset` to `times` if it is newer than the
    /// last one (a time index's timestamps only grow).
    pub(crate) fn push_newer(times: &mut Vec<TimeEntry>, timestamp: i64, rel_offset: u32) {
        if times.last().is_none_or(|t| timestamp > t.timestamp) {
            times.push(TimeEntry {
                timestamp,
                rel_offset,
            });
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
    }
}

fn read_all(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match File::open(path) {
        Ok(mut f) => {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Loads an offset index, keeping the longest valid prefix: strictly increasing offsets and
/// positions, positions below `data_len`. `None` if the file is missing.
pub(crate) fn load_offset_index(path: &Path, data_len: u64) -> io::Result<Option<Vec<IndexEntry>>> {
    let Some(buf) = read_all(path)? else {
        return Ok(None);
    };
    let mut out: Vec<IndexEntry> = Vec::with_capacity(buf.len() / INDEX_ENTRY_LEN);
    for chunk in buf.chunks_exact(INDEX_ENTRY_LEN) {
        let e = IndexEntry {
            rel_offset: u32::from_be_bytes(chunk[0..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(chunk[4..8].try_into().expect("4 bytes")),
        };
        let increasing = out
            .last()
            .is_none_or(|p| e.rel_offset > p.rel_offset && e.position > p.position);
        if !increasing || u64::from(e.position) >= data_len {
            break;
        }
        out.push(e);
    }
    Ok(Some(out))
}

/// The last `n` whole entries of an offset index file (oldest first), read without loading
/// the rest; empty if the file is missing. Not validated: the caller checks each against
/// the data.
pub(crate) fn load_offset_tail(path: &Path, n: usize) -> io::Result<Vec<IndexEntry>> {
    use std::os::unix::fs::FileExt;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let whole = f.metadata()?.len() / INDEX_ENTRY_LEN as u64;
    let take = whole.min(n as u64);
    let mut buf = vec![0u8; take as usize * INDEX_ENTRY_LEN];
    f.read_exact_at(&mut buf, (whole - take) * INDEX_ENTRY_LEN as u64)?;
    Ok(buf
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(|c| IndexEntry {
            rel_offset: u32::from_be_bytes(c[0..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(c[4..8].try_into().expect("4 bytes")),
        })
        .collect())
}

/// Loads a time index, keeping the longest strictly increasing prefix. `None` if missing.
pub(crate) fn load_time_index(path: &Path) -> io::Result<Option<Vec<TimeEntry>>> {
    let Some(buf) = read_all(path)? else {
        return Ok(None);
    };
    let mut out: Vec<TimeEntry> = Vec::with_capacity(buf.len() / TIME_ENTRY_LEN);
    for chunk in buf.chunks_exact(TIME_ENTRY_LEN) {
        let e = TimeEntry {
            timestamp: i64::from_be_bytes(chunk[0..8].try_into().expect("8 bytes")),
            rel_offset: u32::from_be_bytes(chunk[8..12].try_into().expect("4 bytes")),
        };
        if out
            .last()
            .is_some_and(|p| e.timestamp <= p.timestamp || e.rel_offset < p.rel_offset)
        {
            break;
        }
        out.push(e);
    }
    Ok(Some(out))
}

/// The last entry whose offset is at most `rel_offset`.
pub(crate) fn lookup_offset(entries: &[IndexEntry], rel_offset: u32) -> Option<IndexEntry> {
    let n = entries.partition_point(|e| e.rel_offset <= rel_offset);
    n.checked_sub(1).map(|i| entries[i])
}

/// The last entry whose timestamp is below `timestamp`: every batch up to it is older.
pub(crate) fn lookup_time_before(entries: &[TimeEntry], timestamp: i64) -> Option<TimeEntry> {
    let n = entries.partition_point(|e| e.timestamp < timestamp);
    n.checked_sub(1).map(|i| entries[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let idx = [
            IndexEntry {
                rel_offset: 10,
                position: 100,
            },
            IndexEntry {
                rel_offset: 20,
                position: 200,
            },
        ];
        assert_eq!(lookup_offset(&idx, 5), None);
        assert_eq!(lookup_offset(&idx, 10).unwrap().position, 100);
        assert_eq!(lookup_offset(&idx, 19).unwrap().position, 100);
        assert_eq!(lookup_offset(&idx, 25).unwrap().position, 200);
        let t = [
            TimeEntry {
                timestamp: 5,
                rel_offset: 1,
            },
            TimeEntry {
                timestamp: 9,
                rel_offset: 4,
            },
        ];
        assert_eq!(lookup_time_before(&t, 5), None);
        assert_eq!(lookup_time_before(&t, 6).unwrap().rel_offset, 1);
        assert_eq!(lookup_time_before(&t, 100).unwrap().rel_offset, 4);
    }

    #[test]
    fn load_keeps_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.index");
        let mut buf = Vec::new();
        IndexEntry {
            rel_offset: 1,
            position: 10,
        }
        .encode(&mut buf);
        IndexEntry {
            rel_offset: 2,
            position: 20,
        }
        .encode(&mut buf);
        IndexEntry {
            rel_offset: 3,
            position: 5000,
        }
        .encode(&mut buf); // past the data
        buf.push(7); // torn entry
        std::fs::write(&p, &buf).unwrap();
        let got = load_offset_index(&p, 100).unwrap().unwrap();
        assert_eq!(got.len(), 2);
        assert!(load_offset_index(&dir.path().join("missing"), 1)
            .unwrap()
            .is_none());
    }
}
