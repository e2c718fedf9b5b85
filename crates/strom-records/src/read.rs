//! Reading stored batches: a bounded record iterator for readers (the HTTP door, the CLI).
//!
//! A stored batch passed [`crate::validate`] when it was appended, but a reader must not
//! trust that (a segment can be written by hand, recovery checks headers and CRCs only):
//! every batch is checked again as it is read (header, CRC-32C, every record's framing, the
//! decompressed bound), and a bad one is an error naming it, for the reader to skip. No
//! count or length read from the batch sizes an allocation: a compressed record is copied
//! out of the decompression window as its bytes arrive, headers are collected as they are
//! read.

use bytes::Bytes;

use crate::batch::{check_header, headers, BatchHeader, HEADER_LEN};
use crate::codec::{decompressed_bytes_max, Codec, Stream};
use crate::walk::{data_ended, record, record_length, timestamp, Parts, Ranges, Slice, Source};
use crate::BatchError;

/// A record read from a stored batch. The fields are slices of the batch (uncompressed) or
/// of the record's own decompressed bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The record's offset.
    pub offset: i64,
    /// Its timestamp: the batch's base timestamp plus its delta, or for `LogAppendTime`
    /// batches the batch's max timestamp.
    pub timestamp: i64,
    /// Key (`None` = null).
    pub key: Option<Bytes>,
    /// Value (`None` = null).
    pub value: Option<Bytes>,
    /// Headers in order, duplicates kept: `(key, value)`.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

enum Inner<'a> {
    Plain(Slice<'a, Ranges>),
    Stream(Box<Stream<'a>>),
    Done,
}

/// The records of one stored batch, in order. Yields an error (and then nothing) at the
/// first thing wrong; a well-formed batch ends with its last record.
pub struct Records<'a> {
    batch: &'a Bytes,
    header: BatchHeader,
    inner: Inner<'a>,
    index: i32,
}

/// Iterates the records of `batch`, one whole stored batch (a slice of a fetch). Checks the
/// header and CRC first; a control batch (a transaction marker) yields no records.
pub fn records(batch: &Bytes) -> Result<Records<'_>, BatchError> {
    let header = check_header(batch, 0, usize::MAX)?;
    let total = header.total_len();
    let body = &batch[HEADER_LEN..total];
    let inner = if header.is_control() {
        Inner::Done
    } else {
        match Codec::from_id(header.compression())? {
            Codec::None => Inner::Plain(Slice::new(body)),
            codec => Inner::Stream(Box::new(Stream::new(
                codec,
                body,
                decompressed_bytes_max(total),
            )?)),
        }
    };
    Ok(Records {
        batch,
        header,
        inner,
        index: 0,
    })
}

impl Records<'_> {
    /// The batch's header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    fn make(
        &self,
        parts: Parts<std::ops::Range<usize>>,
        buf: &Bytes,
    ) -> Result<Record, BatchError> {
        let h = &self.header;
        let timestamp = if h.is_log_append_time() {
            h.max_timestamp
        } else {
            timestamp(self.index, h.base_timestamp, parts.timestamp_delta)?
        };
        let slice = |r: std::ops::Range<usize>| buf.slice(r);
        Ok(Record {
            offset: h.base_offset + i64::from(parts.offset_delta),
            timestamp,
            key: parts.key.map(slice),
            value: parts.value.map(slice),
            headers: parts
                .headers
                .into_iter()
                .map(|(k, v)| (slice(k), v.map(slice)))
                .collect(),
        })
    }

    fn next_record(&mut self) -> Result<Option<Record>, BatchError> {
        let count = self.header.records_count;
        let index = self.index;
        let total = self.header.total_len();
        let parts = match &mut self.inner {
            Inner::Done => return Ok(None),
            Inner::Plain(src) => {
                if index == count {
                    if src.byte()?.is_some() {
                        return Err(trailing(count));
                    }
                    return Ok(None);
                }
                let left = (total - HEADER_LEN) as u64;
                let Some(len) = record_length(src, index, Some(left))? else {
                    return Err(fewer(count, index));
                };
                let parts = record(src, index, len)?;
                let body = self.batch.slice(HEADER_LEN..total);
                return self.make(parts, &body).map(Some);
            }
            Inner::Stream(src) => {
                if index == count {
                    if src.byte()?.is_some() {
                        return Err(trailing(count));
                    }
                    return Ok(None);
                }
                let Some(len) = record_length(&mut **src, index, None)? else {
                    return Err(fewer(count, index));
                };
                let mut buf = Vec::new();
                if !src.take_into(len as usize, &mut buf)? {
                    return Err(data_ended(index, len));
                }
                let buf = Bytes::from(buf);
                let parts = record(&mut Slice::<Ranges>::new(&buf), index, len)?;
                (parts, buf)
            }
        };
        let (parts, buf) = parts;
        self.make(parts, &buf).map(Some)
    }
}

fn trailing(count: i32) -> BatchError {
    BatchError::Invalid(format!("bytes after the batch's {count} records"))
}

fn fewer(count: i32, index: i32) -> BatchError {
    BatchError::Invalid(format!(
        "the batch claims {count} records but holds {index}"
    ))
}

impl Iterator for Records<'_> {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_record() {
            Ok(Some(r)) => {
                self.index += 1;
                Some(Ok(r))
            }
            Ok(None) => {
                self.inner = Inner::Done;
                None
            }
            Err(e) => {
                self.inner = Inner::Done;
                Some(Err(e))
            }
        }
    }
}

/// A stored batch that could not be read, and so was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadBatch {
    /// The batch's base offset.
    pub offset: i64,
    /// The offset after the batch (where reading goes on).
    pub next_offset: i64,
    /// What is wrong with it.
    pub error: BatchError,
}

/// Every whole batch of a fetched buffer `data`, in order: its header and its records
/// (all of them, or why the batch is bad: a bad batch yields none of its records).
/// A partial batch at the end (allowed in a fetch) is left out.
pub fn decode_batches(
    data: &Bytes,
) -> impl Iterator<Item = (BatchHeader, Result<Vec<Record>, BadBatch>)> + '_ {
    headers(data).map(move |(pos, h)| {
        let whole = data.slice(pos..pos + h.total_len());
        let result = records(&whole)
            .and_then(|rs| rs.collect::<Result<Vec<Record>, BatchError>>())
            .map_err(|error| BadBatch {
                offset: h.base_offset,
                next_offset: h.last_offset() + 1,
                error,
            });
        (h, result)
    })
}
