//! ShareFetch and ShareAcknowledge v2 (Kafka 4.2) on top of the crate's v1.
//!
//! The `kafka-protocol` crate (0.18) knows v1 of both. Each v2 adds one fixed-size field and
//! nothing else to its request, and ShareAcknowledge v2 adds one to its response:
//! - ShareFetchRequest v2: `ShareAcquireMode` (int8) after `BatchSize` (KIP-1206);
//! - ShareAcknowledgeRequest v2: `IsRenewAck` (bool) after `ShareSessionEpoch` (KIP-1222);
//! - ShareAcknowledgeResponse v2: `AcquisitionLockTimeoutMs` (int32) after `ErrorMessage`;
//! - ShareFetchResponse v2: as v1 (v2 only announces the RENEW acknowledge type, 4).
//!
//! So a v2 request body is the v1 body with that byte cut out ([`split_v2`]), and a v2
//! response is the v1 body with the four bytes put in ([`ack_response_v2`]). Bodies reach
//! here only after `bounds` walked them with the v2 schema, so the offsets read exist; they
//! are checked again anyway (a short body is an error, never a panic).

use bytes::{BufMut, Bytes, BytesMut};

/// Where the v2-only byte of a request body is: after `group_id`, `member_id` (compact
/// nullable strings) and `fixed` bytes of int32 fields.
fn v2_field_at(body: &[u8], fixed: usize) -> Option<usize> {
    let mut pos = 0;
    for _ in 0..2 {
        let (len, n) = uvarint(body.get(pos..)?)?;
        pos += n + (len as usize).saturating_sub(1);
    }
    let at = pos + fixed;
    (at < body.len()).then_some(at)
}

/// Int32 fields between `member_id` and the v2 byte.
fn fixed_before(api_key: i16) -> usize {
    match api_key {
        // ShareSessionEpoch, MaxWaitMs, MinBytes, MaxBytes, MaxRecords, BatchSize.
        78 => 6 * 4,
        // ShareSessionEpoch.
        _ => 4,
    }
}

/// A v2 body of ShareFetch (78) or ShareAcknowledge (79) as the v1 body and the v2 field's
/// byte; `None` if the body is too short to hold it.
pub(crate) fn split_v2(api_key: i16, body: &[u8]) -> Option<(Bytes, u8)> {
    let at = v2_field_at(body, fixed_before(api_key))?;
    let mut v1 = BytesMut::with_capacity(body.len() - 1);
    v1.extend_from_slice(&body[..at]);
    v1.extend_from_slice(&body[at + 1..]);
    Some((v1.freeze(), body[at]))
}

/// The inverse of [`split_v2`] (tests: the crate's v1 encoding back to v2).
#[cfg(test)]
pub(crate) fn join_v2(api_key: i16, v1: &[u8], extra: u8) -> Option<Vec<u8>> {
    let mut pos = 0;
    for _ in 0..2 {
        let (len, n) = uvarint(v1.get(pos..)?)?;
        pos += n + (len as usize).saturating_sub(1);
    }
    let at = pos + fixed_before(api_key);
    if at > v1.len() {
        return None;
    }
    let mut out = Vec::with_capacity(v1.len() + 1);
    out.extend_from_slice(&v1[..at]);
    out.push(extra);
    out.extend_from_slice(&v1[at..]);
    Some(out)
}

/// A ShareAcknowledge v1 response body as v2: `acquisition_lock_timeout_ms` after the
/// top-level error message.
pub(crate) fn ack_response_v2(v1: &[u8], acquisition_lock_timeout_ms: i32) -> Option<BytesMut> {
    // ThrottleTimeMs (4), ErrorCode (2), ErrorMessage (compact nullable string).
    let (len, n) = uvarint(v1.get(6..)?)?;
    let at = 6 + n + (len as usize).saturating_sub(1);
    if at > v1.len() {
        return None;
    }
    let mut out = BytesMut::with_capacity(v1.len() + 4);
    out.extend_from_slice(&v1[..at]);
    out.put_i32(acquisition_lock_timeout_ms);
    out.extend_from_slice(&v1[at..]);
    Some(out)
}

/// An unsigned varint of at most 5 bytes: its value and length.
fn uvarint(b: &[u8]) -> Option<(u32, usize)> {
    let mut v = 0u32;
    for (i, &byte) in b.iter().take(5).enumerate() {
        v |= u32::from(byte & 0x7f).wrapping_shl(7 * i as u32);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_are_inverse_and_find_the_field() {
        // group "g", member null, then the int32s, the v2 byte 0xAB, then the rest.
        let mut body = vec![2, b'g', 0];
        body.extend_from_slice(&[0; 24]);
        body.push(0xab);
        body.extend_from_slice(&[1, 1, 0]);
        let (v1, extra) = split_v2(78, &body).expect("split");
        assert_eq!(extra, 0xab);
        assert_eq!(v1.len(), body.len() - 1);
        assert_eq!(join_v2(78, &v1, extra).expect("join"), body);
        assert!(split_v2(78, &body[..27]).is_none());
        assert!(split_v2(79, &[0x80]).is_none());
    }

    #[test]
    fn the_ack_response_gets_its_lock_timeout_after_the_message() {
        let v1 = [0, 0, 0, 0, 0, 0, 3, b'h', b'i', 1, 1, 0];
        let v2 = ack_response_v2(&v1, 30_000).expect("v2");
        assert_eq!(&v2[..9], &v1[..9]);
        assert_eq!(&v2[9..13], &30_000i32.to_be_bytes());
        assert_eq!(&v2[13..], &v1[9..]);
    }
}
