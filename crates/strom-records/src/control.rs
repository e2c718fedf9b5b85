//! Control batches (transaction markers), in Kafka's layout: a batch with the control and
//! transactional attributes and one record whose key is `version: i16 = 0, type: i16`
//! (0 ABORT, 1 COMMIT) and whose value is `version: i16 = 0, coordinator_epoch: i32`.
//! Only the broker writes them (a client's produce is refused by [`crate::validate`]).

use crate::batch::{
    check_header, ATTRIBUTES_AT, ATTR_CONTROL, ATTR_TRANSACTIONAL, BASE_SEQUENCE_AT, CRC_AT,
    HEADER_LEN, PRODUCER_EPOCH_AT, PRODUCER_ID_AT,
};
use crate::build::{encode_records, wrap_records, NewRecord};
use crate::varint::{read_varint, read_varlong};

/// Control record type of an ABORT marker.
pub const CONTROL_ABORT: i16 = 0;
/// Control record type of a COMMIT marker.
pub const CONTROL_COMMIT: i16 = 1;

/// What a transaction marker says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlMarker {
    /// COMMIT (`true`) or ABORT.
    pub commit: bool,
    /// The transaction coordinator's epoch that wrote it.
    pub coordinator_epoch: i32,
}

/// A control batch (one marker record) of producer `producer_id`/`producer_epoch`, base
/// offset 0 until the log assigns it, base sequence -1, CreateTime `timestamp`.
pub fn build_control(
    timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    marker: ControlMarker,
) -> Vec<u8> {
    let kind = if marker.commit {
        CONTROL_COMMIT
    } else {
        CONTROL_ABORT
    };
    let mut key = [0u8; 4];
    key[2..].copy_from_slice(&kind.to_be_bytes());
    let mut value = [0u8; 6];
    value[2..].copy_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let body = encode_records(&[NewRecord {
        key: Some(&key),
        value: Some(&value),
        headers: Vec::new(),
    }]);
    let mut out = wrap_records(timestamp, ATTR_TRANSACTIONAL | ATTR_CONTROL, 1, &body);
    out[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    out[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    out[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
    set_crc(&mut out);
    out
}

/// Sets the transactional attribute of every batch in `batches` (and their CRCs): for
/// tests and tools that build a transactional producer's batches.
pub fn set_transactional(batches: &mut [u8]) {
    let mut pos = 0;
    while let Some(h) = crate::BatchHeader::parse(&batches[pos..]) {
        let total = h.total_len();
        if total < HEADER_LEN || pos + total > batches.len() {
            break;
        }
        let b = &mut batches[pos..pos + total];
        let attrs = h.attributes | ATTR_TRANSACTIONAL;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
        set_crc(b);
        pos += total;
    }
}

fn set_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The marker of the whole stored control batch `batch`; `None` if it is not a control
/// batch, or its record is not a marker Strom knows (an unknown version or type).
pub fn control_marker(batch: &[u8]) -> Option<ControlMarker> {
    let h = check_header(batch, 0, usize::MAX).ok()?;
    if !h.is_control() || h.compression() != 0 {
        return None;
    }
    let mut rest = &batch[HEADER_LEN..h.total_len()];
    let skip = |n: usize, rest: &mut &[u8]| -> Option<()> {
        *rest = rest.get(n..)?;
        Some(())
    };
    let (_len, n) = read_varint(rest).ok()?;
    skip(n, &mut rest)?;
    skip(1, &mut rest)?; // attributes
    let (_, n) = read_varlong(rest).ok()?; // timestamp delta
    skip(n, &mut rest)?;
    let (_, n) = read_varint(rest).ok()?; // offset delta
    skip(n, &mut rest)?;
    let (key_len, n) = read_varint(rest).ok()?;
    skip(n, &mut rest)?;
    let key = rest.get(..usize::try_from(key_len).ok()?)?;
    if key.len() < 4 || key[..2] != [0, 0] {
        return None;
    }
    let kind = i16::from_be_bytes([key[2], key[3]]);
    skip(key.len(), &mut rest)?;
    let (value_len, n) = read_varint(rest).ok()?;
    skip(n, &mut rest)?;
    let coordinator_epoch = match usize::try_from(value_len).ok() {
        Some(len) if len >= 6 => {
            let v = rest.get(..len)?;
            i32::from_be_bytes([v[2], v[3], v[4], v[5]])
        }
        _ => -1,
    };
    match kind {
        CONTROL_ABORT => Some(ControlMarker {
            commit: false,
            coordinator_epoch,
        }),
        CONTROL_COMMIT => Some(ControlMarker {
            commit: true,
            coordinator_epoch,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip_and_client_produce_refuses_it() {
        for commit in [true, false] {
            let m = ControlMarker {
                commit,
                coordinator_epoch: 7,
            };
            let b = build_control(1_000, 42, 3, m);
            let h = crate::BatchHeader::parse(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(control_marker(&b), Some(m));
            assert!(crate::validate(&b, 1 << 20).is_err());
            assert!(crate::validate_control(&b, 1 << 20).is_ok());
        }
        let mut data = crate::build(1, &[b"a"]);
        assert_eq!(control_marker(&data), None);
        set_transactional(&mut data);
        let h = crate::BatchHeader::parse(&data).unwrap();
        assert!(h.is_transactional() && !h.is_control());
        assert!(crate::validate(&data, 1 << 20).is_ok());
    }
}
