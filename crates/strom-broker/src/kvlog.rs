//! Key/value records of the core's internal logs (`.strom/groups/`, `.strom/share/`): the
//! byte encoding of keys and values (big-endian integers, u16-length strings, i16-length
//! nullable strings, u32-length bytes), the batch that carries them, and the replay of a log
//! into decoded entries. Each store owns its own key and value layouts.

use bytes::Bytes;
use strom_log::{batch_headers, Log};
use strom_records::NewRecord;

/// A string with a u16 length, cut at a character boundary to fit.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// A nullable string with an i16 length (-1 = null), cut at a character boundary to fit.
pub(crate) fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
        Some(s) => {
            let mut end = s.len().min(i16::MAX as usize);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            out.extend_from_slice(&(end as i16).to_be_bytes());
            out.extend_from_slice(&s.as_bytes()[..end]);
        }
    }
}

/// Bytes with a u32 length.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// Reads what the `put_*` functions wrote; `None` once the input is short or malformed.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes)
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_be_bytes)
    }
    pub(crate) fn str(&mut self) -> Option<String> {
        let n = self.u16()?;
        String::from_utf8(self.take(n as usize)?.to_vec()).ok()
    }
    pub(crate) fn opt_str(&mut self) -> Option<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Some(None);
        }
        Some(Some(
            String::from_utf8(self.take(n as usize)?.to_vec()).ok()?,
        ))
    }
    pub(crate) fn bytes(&mut self) -> Option<Bytes> {
        let n = self.i32()? as u32 as usize;
        Some(Bytes::copy_from_slice(self.take(n)?))
    }
}

/// One uncompressed batch of `(key, value)` records (a `None` value is a tombstone).
pub(crate) fn batch(timestamp: i64, records: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
    let records: Vec<NewRecord<'_>> = records
        .iter()
        .map(|(k, v)| NewRecord {
            key: Some(k),
            value: v.as_deref(),
            headers: Vec::new(),
        })
        .collect();
    strom_records::build_records(timestamp, &records)
}

/// Every record of `log` from its start, decoded by `decode(key, value)` (records it
/// returns `None` for are left out), oldest first. An unreadable batch is skipped and logged
/// (`what` names the store).
pub(crate) fn replay<T>(
    log: &Log,
    what: &str,
    decode: impl Fn(&[u8], Option<&[u8]>) -> Option<T>,
) -> std::io::Result<Vec<T>> {
    let mut out = Vec::new();
    let mut from = log.log_start_offset();
    while from < log.log_end_offset() {
        let read = log
            .read(from, 1 << 20)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if read.data.is_empty() {
            break;
        }
        for (pos, h) in batch_headers(&read.data) {
            if h.last_offset() >= from {
                let batch = read.data.slice(pos..pos + h.total_len());
                let records =
                    strom_records::records(&batch).and_then(|rs| rs.collect::<Result<Vec<_>, _>>());
                match records {
                    Ok(records) => out.extend(records.iter().filter_map(|r| {
                        decode(r.key.as_deref().unwrap_or_default(), r.value.as_deref())
                    })),
                    Err(e) => tracing::error!(
                        offset = h.base_offset,
                        error = %e,
                        "{what}: an unreadable batch is skipped"
                    ),
                }
            }
            from = from.max(h.last_offset() + 1);
        }
    }
    Ok(out)
}
