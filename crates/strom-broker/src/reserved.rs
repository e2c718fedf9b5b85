//! The record headers the broker acts on, and what one record asks for.
//!
//! - `strom.delay.ms` (a relative delay, decimal ASCII milliseconds) or `strom.deliver.at`
//!   (epoch milliseconds): the record is acknowledged now and appended to its partition when
//!   due (see [`crate::delay`]). A value that does not parse, a negative delay, both headers
//!   on one record, or a due time more than `strom.delay.max.ms` ahead refuse the produce. A
//!   delay of 0 or a `strom.deliver.at` in the past is no delay.
//! - `strom.msg.id` (1 to [`MSG_ID_BYTES_MAX`] bytes): dedup within `strom.dedup.window.ms`
//!   (see [`crate::dedup`]). A null or empty id, or a longer one, refuses the produce.
//!
//! When a header appears more than once on a record, the last one counts (as Kafka's
//! `Headers.lastHeader`). Other `strom.` keys are kept and mean nothing (yet); they only
//! make the broker read the batch's records.

use bytes::Bytes;
use strom_records::{BatchError, Record};

/// Relative delay header.
pub const DELAY_MS_HEADER: &[u8] = b"strom.delay.ms";
/// Absolute due time header.
pub const DELIVER_AT_HEADER: &[u8] = b"strom.deliver.at";
/// Message id header.
pub const MSG_ID_HEADER: &[u8] = b"strom.msg.id";
/// Put on a delivered delayed record by the broker: its offset in the delay log, so that a
/// delivery interrupted by a crash is recognised (never delivered twice).
pub const DELAY_ID_HEADER: &[u8] = b"strom.delay.id";
/// Longest message id accepted: bounds the dedup window's memory per id.
pub const MSG_ID_BYTES_MAX: usize = 256;

/// What one record asks of the broker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Asks {
    /// Append when this time (epoch ms) comes; `None` = now.
    pub(crate) due_ms: Option<i64>,
    /// Its message id, for dedup.
    pub(crate) msg_id: Option<Bytes>,
}

fn last<'a>(r: &'a Record, key: &[u8]) -> Option<&'a Option<Bytes>> {
    r.headers
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == key)
        .map(|(_, v)| v)
}

/// Decimal ASCII, an optional `-` then 1 to 19 digits.
fn parse_ms(v: &[u8]) -> Option<i64> {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Reads what record `index` (its index in its batch) asks, at `now_ms`, for a topic whose
/// `strom.delay.max.ms` is `delay_max_ms`. The error is the record's (KIP-467).
pub(crate) fn asks(
    r: &Record,
    index: i32,
    now_ms: i64,
    delay_max_ms: i64,
) -> Result<Asks, BatchError> {
    let err = |message: String| BatchError::InvalidRecord { index, message };
    let shown = |v: &Option<Bytes>| match v {
        None => "null".to_string(),
        Some(b) => format!("{:?}", String::from_utf8_lossy(&b[..b.len().min(40)])),
    };
    let value = |key: &[u8], v: &Option<Bytes>| -> Result<i64, BatchError> {
        v.as_deref().and_then(parse_ms).ok_or_else(|| {
            err(format!(
                "header {}: {} is not a decimal number of milliseconds",
                String::from_utf8_lossy(key),
                shown(v)
            ))
        })
    };
    let due_ms = match (last(r, DELAY_MS_HEADER), last(r, DELIVER_AT_HEADER)) {
        (Some(_), Some(_)) => {
            return Err(err(
                "both strom.delay.ms and strom.deliver.at: give one of them".into(),
            ))
        }
        (Some(v), None) => {
            let ms = value(DELAY_MS_HEADER, v)?;
            if ms < 0 {
                return Err(err(format!("strom.delay.ms {ms} is negative")));
            }
            if ms > delay_max_ms {
                return Err(err(format!(
                    "strom.delay.ms {ms} is over strom.delay.max.ms ({delay_max_ms})"
                )));
            }
            (ms > 0).then(|| now_ms.saturating_add(ms))
        }
        (None, Some(v)) => {
            let at = value(DELIVER_AT_HEADER, v)?;
            if at < 0 {
                return Err(err(format!("strom.deliver.at {at} is negative")));
            }
            if at.saturating_sub(now_ms) > delay_max_ms {
                return Err(err(format!(
                    "strom.deliver.at {at} is {} ms ahead, over strom.delay.max.ms ({delay_max_ms})",
                    at - now_ms
                )));
            }
            (at > now_ms).then_some(at)
        }
        (None, None) => None,
    };
    let msg_id = match last(r, MSG_ID_HEADER) {
        None => None,
        Some(Some(id)) if !id.is_empty() && id.len() <= MSG_ID_BYTES_MAX => Some(id.clone()),
        Some(v) => {
            return Err(err(format!(
                "strom.msg.id must be 1 to {MSG_ID_BYTES_MAX} bytes, got {}",
                v.as_ref()
                    .map_or("null".to_string(), |b| format!("{} bytes", b.len()))
            )))
        }
    };
    Ok(Asks { due_ms, msg_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(headers: &[(&[u8], Option<&[u8]>)]) -> Record {
        Record {
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers: headers
                .iter()
                .map(|(k, v)| (Bytes::copy_from_slice(k), v.map(Bytes::copy_from_slice)))
                .collect(),
        }
    }

    fn check(headers: &[(&[u8], Option<&[u8]>)]) -> Result<Asks, String> {
        asks(&rec(headers), 3, 1_000, 10_000).map_err(|e| match e {
            BatchError::InvalidRecord { index: 3, message } => message,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn delays_and_ids() {
        assert_eq!(check(&[]).unwrap(), Asks::default());
        assert_eq!(
            check(&[(DELAY_MS_HEADER, Some(b"250"))]).unwrap().due_ms,
            Some(1_250)
        );
        assert_eq!(
            check(&[(DELAY_MS_HEADER, Some(b"0"))]).unwrap().due_ms,
            None
        );
        assert_eq!(
            check(&[(DELIVER_AT_HEADER, Some(b"5000"))]).unwrap().due_ms,
            Some(5_000)
        );
        assert_eq!(
            check(&[(DELIVER_AT_HEADER, Some(b"999"))]).unwrap().due_ms,
            None
        );
        assert_eq!(
            check(&[
                (DELAY_MS_HEADER, Some(b"x")),
                (DELAY_MS_HEADER, Some(b"10"))
            ])
            .unwrap()
            .due_ms,
            Some(1_010),
            "the last header counts"
        );
        assert_eq!(
            check(&[(MSG_ID_HEADER, Some(b"a-1"))]).unwrap().msg_id,
            Some(Bytes::from_static(b"a-1"))
        );
        assert_eq!(
            check(&[(b"strom.other", Some(b"1"))]).unwrap(),
            Asks::default()
        );
    }

    #[test]
    fn bad_headers_are_the_records_error() {
        for (headers, says) in [
            (vec![(DELAY_MS_HEADER, Some(&b"soon"[..]))], "not a decimal"),
            (vec![(DELAY_MS_HEADER, None)], "null"),
            (vec![(DELAY_MS_HEADER, Some(&b""[..]))], "not a decimal"),
            (vec![(DELAY_MS_HEADER, Some(&b" 10"[..]))], "not a decimal"),
            (vec![(DELAY_MS_HEADER, Some(&b"1e3"[..]))], "not a decimal"),
            (vec![(DELAY_MS_HEADER, Some(&b"-5"[..]))], "negative"),
            (
                vec![(DELAY_MS_HEADER, Some(&b"10001"[..]))],
                "over strom.delay.max.ms",
            ),
            (
                vec![(DELAY_MS_HEADER, Some(&b"99999999999999999999"[..]))],
                "not a decimal",
            ),
            (
                vec![(DELIVER_AT_HEADER, Some(&b"11001"[..]))],
                "over strom.delay.max.ms",
            ),
            (vec![(DELIVER_AT_HEADER, Some(&b"-1"[..]))], "negative"),
            (
                vec![
                    (DELAY_MS_HEADER, Some(&b"1"[..])),
                    (DELIVER_AT_HEADER, Some(&b"2000"[..])),
                ],
                "both",
            ),
            (vec![(MSG_ID_HEADER, None)], "strom.msg.id"),
            (vec![(MSG_ID_HEADER, Some(&b""[..]))], "strom.msg.id"),
            (vec![(MSG_ID_HEADER, Some(&[b'x'; 257][..]))], "257 bytes"),
        ] {
            let e = check(&headers).unwrap_err();
            assert!(e.contains(says), "{headers:?}: {e}");
        }
    }
}
