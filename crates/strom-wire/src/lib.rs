//! # strom-wire: Kafka messages as byte chunks
//!
//! Requests and responses as a list of byte chunks, so that record batches (read from the
//! log by the broker, built by a producer) reach the socket without being copied into the
//! message's buffer. Used by `strom-kafka` (Fetch responses) and `strom-client` (Produce
//! requests).
//!
//! kafka-protocol encodes a `records` field with one `put_slice` of the `Bytes` it holds.
//! [`Chunked`] is the buffer it encodes into: the small fields accumulate in a `BytesMut`,
//! and a `put_slice` of one of the registered `Bytes` (by identity: same pointer and length)
//! closes the current chunk and keeps that `Bytes` itself as the next one.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// One piece of a framed message.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Bytes in memory.
    Mem(Bytes),
    /// A range of a file (whole record batches of a log segment), sent with `sendfile`.
    File {
        /// The open file (it stays readable if the segment is deleted meanwhile).
        file: Arc<File>,
        /// Start of the range.
        pos: u64,
        /// Length of the range.
        len: usize,
    },
}

impl Chunk {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Mem(b) => b.len(),
            Chunk::File { len, .. } => *len,
        }
    }

    /// Whether the chunk holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A framed message: its chunks, in order.
#[derive(Debug, Clone, Default)]
pub struct Frame(pub Vec<Chunk>);

impl From<BytesMut> for Frame {
    fn from(b: BytesMut) -> Frame {
        Frame(vec![Chunk::Mem(b.freeze())])
    }
}

impl Frame {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.0.iter().map(Chunk::len).sum()
    }

    /// Whether the frame holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Chunk::is_empty)
    }
}

/// Largest file range that can stand in a message (see [`placeholder`]).
pub const PLACEHOLDER_MAX: usize = 4 << 20;

static ZEROS: [u8; PLACEHOLDER_MAX] = [0; PLACEHOLDER_MAX];

/// A `Bytes` of `len` bytes that is never read: it stands in a message for a file range
/// registered with [`Chunked::with_chunks`] (kafka-protocol computes the field's length from
/// it; `Chunked` replaces its `put_slice` by the file chunk). `None` above [`PLACEHOLDER_MAX`].
pub fn placeholder(len: usize) -> Option<Bytes> {
    ZEROS.get(..len).map(Bytes::from_static)
}

/// The encoder's buffer; see the crate documentation.
pub struct Chunked {
    done: Vec<Chunk>,
    done_len: usize,
    cur: BytesMut,
    /// Byte fields to replace, in encoding order: the field's `Bytes`, and its chunk.
    shared: Vec<(Bytes, Chunk)>,
}

impl Chunked {
    /// `capacity`: bytes expected outside of `shared`; `shared`: the `Bytes` to pass through.
    pub fn new(capacity: usize, shared: Vec<Bytes>) -> Chunked {
        let shared = shared
            .into_iter()
            .map(|b| (b.clone(), Chunk::Mem(b)))
            .collect();
        Chunked::with_chunks(capacity, shared)
    }

    /// Like [`Chunked::new`], each field's `Bytes` (e.g. a [`placeholder`]) given with the
    /// chunk that replaces it, in the order the fields are encoded.
    pub fn with_chunks(capacity: usize, shared: Vec<(Bytes, Chunk)>) -> Chunked {
        Chunked {
            done: Vec::with_capacity(2 * shared.len() + 1),
            done_len: 0,
            cur: BytesMut::with_capacity(capacity),
            shared,
        }
    }

    /// The encoded bytes as chunks.
    pub fn finish(mut self) -> Frame {
        if !self.cur.is_empty() {
            self.done.push(Chunk::Mem(self.cur.freeze()));
        }
        Frame(self.done)
    }
}

// SAFETY: every method delegates to the inner `BytesMut`, whose implementation upholds the
// trait's contract; `put_slice` only appends whole chunks in addition.
unsafe impl BufMut for Chunked {
    fn remaining_mut(&self) -> usize {
        self.cur.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is `cur`'s.
        unsafe { self.cur.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.cur.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        let found = (!src.is_empty())
            .then(|| {
                // The first match: placeholders of equal length are told apart by order.
                self.shared
                    .iter()
                    .position(|(b, _)| b.as_ptr() == src.as_ptr() && b.len() == src.len())
            })
            .flatten();
        match found {
            Some(i) => {
                let (_, chunk) = self.shared.remove(i);
                if !self.cur.is_empty() {
                    let head = self.cur.split().freeze();
                    self.done_len += head.len();
                    self.done.push(Chunk::Mem(head));
                }
                self.done_len += chunk.len();
                self.done.push(chunk);
            }
            None => self.cur.extend_from_slice(src),
        }
    }
}

impl ByteBufMut for Chunked {
    fn offset(&self) -> usize {
        self.done_len + self.cur.len()
    }

    // Message encoders never seek or read back (only record batch encoding does, which
    // does not use this buffer); positions before the current chunk are out of reach.
    fn seek(&mut self, offset: usize) {
        self.cur.resize(offset.saturating_sub(self.done_len), 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let base = self.done_len;
        &mut self.cur[r.start.saturating_sub(base)..r.end.saturating_sub(base)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        FetchResponse, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn same_bytes_as_the_plain_encoder_without_copying_records() {
        let a = Bytes::from(vec![7u8; 5000]);
        let b = Bytes::from(vec![9u8; 3000]);
        let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(StrBytes::from_static_str("t").into())
            .with_partitions(vec![
                PartitionData::default().with_records(Some(a.clone())),
                PartitionData::default()
                    .with_partition_index(1)
                    .with_records(Some(b.clone())),
            ])]);
        for version in [4, 11, 12, 13, 16] {
            let mut plain = BytesMut::new();
            resp.encode(&mut plain, version).unwrap();
            let mut chunked = Chunked::new(64, vec![a.clone(), b.clone()]);
            resp.encode(&mut chunked, version).unwrap();
            let out = chunked.finish();
            let mems: Vec<&Bytes> = out
                .0
                .iter()
                .map(|c| match c {
                    Chunk::Mem(b) => b,
                    Chunk::File { .. } => panic!("no file chunk was registered"),
                })
                .collect();
            let joined: Vec<u8> = mems.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(joined, plain.to_vec(), "v{version}");
            assert!(
                mems.iter().any(|c| c.as_ptr() == a.as_ptr()),
                "records passed through"
            );
            assert!(mems.iter().any(|c| c.as_ptr() == b.as_ptr()));
        }
    }

    #[test]
    fn placeholders_become_file_chunks_in_order() {
        let file = Arc::new(File::open("/dev/null").unwrap());
        let (p1, p2) = (placeholder(700).unwrap(), placeholder(700).unwrap());
        let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(StrBytes::from_static_str("t").into())
            .with_partitions(vec![
                PartitionData::default().with_records(Some(p1.clone())),
                PartitionData::default()
                    .with_partition_index(1)
                    .with_records(Some(p2.clone())),
            ])]);
        let mut plain = BytesMut::new();
        resp.encode(&mut plain, 12).unwrap();
        let chunk = |pos| Chunk::File {
            file: file.clone(),
            pos,
            len: 700,
        };
        let mut chunked = Chunked::with_chunks(64, vec![(p1, chunk(1)), (p2, chunk(2))]);
        resp.encode(&mut chunked, 12).unwrap();
        let out = chunked.finish();
        assert_eq!(out.len(), plain.len());
        let files: Vec<u64> = out
            .0
            .iter()
            .filter_map(|c| match c {
                Chunk::File { pos, .. } => Some(*pos),
                Chunk::Mem(_) => None,
            })
            .collect();
        assert_eq!(files, vec![1, 2], "in encoding order");
        assert!(placeholder(PLACEHOLDER_MAX + 1).is_none());
    }
}
