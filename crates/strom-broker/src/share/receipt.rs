//! Receipts: what a door hands out with each record a share-group member acquired, and takes
//! back to acknowledge it. A receipt names its group, topic, partition, offset and delivery
//! count, so that an acknowledgement of an older delivery (the lock expired, the record went
//! to someone else) is told apart and refused. The same text on every door (HTTP, WebSocket,
//! gRPC).

use base64::Engine;

/// What a receipt names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The share group.
    pub group: String,
    /// The record's topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The delivery it was handed out with (1 = first).
    pub delivery_count: u16,
}

impl Receipt {
    /// URL-safe base64 of `1|partition|offset|delivery count|topic|group` (topic names have
    /// no `|`; the group is the rest).
    pub fn encode(&self) -> String {
        let text = format!(
            "1|{}|{}|{}|{}|{}",
            self.partition, self.offset, self.delivery_count, self.topic, self.group
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// The receipt `s` is, or `None` when it is not one this broker hands out.
    pub fn decode(s: &str) -> Option<Receipt> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let mut it = text.splitn(6, '|');
        if it.next()? != "1" {
            return None;
        }
        Some(Receipt {
            partition: it.next()?.parse().ok()?,
            offset: it.next()?.parse().ok().filter(|o: &i64| *o >= 0)?,
            delivery_count: it.next()?.parse().ok()?,
            topic: it.next().filter(|t| !t.is_empty())?.to_string(),
            group: it.next()?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_garbage_is_refused() {
        let r = Receipt {
            group: "g|with|bars".into(),
            topic: "orders.eu".into(),
            partition: 3,
            offset: 42,
            delivery_count: 2,
        };
        assert_eq!(Receipt::decode(&r.encode()), Some(r));
        for bad in [
            "",
            "zz",
            "!!!",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("2|0|0|1|t|g"),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1|0|-1|1|t|g"),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1|0|5|1||g"),
        ] {
            assert_eq!(Receipt::decode(bad), None, "{bad}");
        }
    }
}
