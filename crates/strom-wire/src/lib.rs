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

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// A framed message: its bytes, in order.
#[derive(Debug, Clone, Default)]
pub struct Frame(pub Vec<Bytes>);

impl From<BytesMut> for Frame {
    fn from(b: BytesMut) -> Frame {
        Frame(vec![b.freeze()])
    }
}

impl Frame {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// Whether the frame holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Bytes::is_empty)
    }
}

/// The encoder's buffer; see the crate documentation.
pub struct Chunked {
    done: Vec<Bytes>,
    done_len: usize,
    cur: BytesMut,
    shared: Vec<Bytes>,
}

impl Chunked {
    /// `capacity`: bytes expected outside of `shared`; `shared`: the `Bytes` to pass through.
    pub fn new(capacity: usize, shared: Vec<Bytes>) -> Chunked {
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
            self.done.push(self.cur.freeze());
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
                self.shared
                    .iter()
                    .position(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())
            })
            .flatten();
        match found {
            Some(i) => {
                let b = self.shared.swap_remove(i);
                if !self.cur.is_empty() {
                    let head = self.cur.split().freeze();
                    self.done_len += head.len();
                    self.done.push(head);
                }
                self.done_len += b.len();
                self.done.push(b);
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
            let joined: Vec<u8> = out.0.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(joined, plain.to_vec(), "v{version}");
            assert!(
                out.0.iter().any(|c| c.as_ptr() == a.as_ptr()),
                "records passed through"
            );
            assert!(out.0.iter().any(|c| c.as_ptr() == b.as_ptr()));
        }
    }
}
