//! Answers for the old Produce (v0-2) and Fetch (v0-3) versions that are advertised for old
//! librdkafka's feature checks but not served: every partition gets UNSUPPORTED_VERSION and
//! nothing is written. The request is parsed by hand (the crate cannot decode these
//! versions) only as far as needed to name the partitions in the answer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;

use crate::server::Fatal;

fn need(b: &Bytes, n: usize) -> Result<(), Fatal> {
    if b.remaining() < n {
        Err(Fatal("truncated request".into()))
    } else {
        Ok(())
    }
}

fn i16_(b: &mut Bytes) -> Result<i16, Fatal> {
    need(b, 2)?;
    Ok(b.get_i16())
}

fn i32_(b: &mut Bytes) -> Result<i32, Fatal> {
    need(b, 4)?;
    Ok(b.get_i32())
}

fn string(b: &mut Bytes) -> Result<Bytes, Fatal> {
    let n = i16_(b)?;
    if n < 0 {
        return Err(Fatal("null topic name".into()));
    }
    need(b, n as usize)?;
    Ok(b.split_to(n as usize))
}

fn skip(b: &mut Bytes, n: usize) -> Result<(), Fatal> {
    need(b, n)?;
    b.advance(n);
    Ok(())
}

fn count(b: &mut Bytes) -> Result<usize, Fatal> {
    let n = i32_(b)?;
    // Each element takes at least 4 bytes: a count beyond that is garbage.
    if n < 0 || n as usize > b.remaining() / 4 + 1 {
        return Err(Fatal(format!("invalid array length {n}")));
    }
    Ok(n as usize)
}

/// Topic names with their partition numbers.
type Topics = Vec<(Bytes, Vec<i32>)>;

/// `(topic, [partition])` of an old Produce or Fetch body, and Produce's acks.
fn topics(key: ApiKey, version: i16, mut b: Bytes) -> Result<(i16, Topics), Fatal> {
    let mut acks = -1;
    if key == ApiKey::Produce {
        acks = i16_(&mut b)?;
        skip(&mut b, 4)?; // timeout
    } else {
        skip(&mut b, 12)?; // replica id, max wait, min bytes
        if version >= 3 {
            skip(&mut b, 4)?; // max bytes
        }
    }
    let mut out = Vec::new();
    for _ in 0..count(&mut b)? {
        let name = string(&mut b)?;
        let mut parts = Vec::new();
        for _ in 0..count(&mut b)? {
            parts.push(i32_(&mut b)?);
            if key == ApiKey::Produce {
                let n = i32_(&mut b)?;
                if n > 0 {
                    skip(&mut b, n as usize)?;
                }
            } else {
                skip(&mut b, 12)?; // fetch offset, partition max bytes
            }
        }
        out.push((name, parts));
    }
    Ok((acks, out))
}

/// The UNSUPPORTED_VERSION response body for an old Produce or Fetch; `None` for acks=0.
pub(crate) fn unsupported(
    key: ApiKey,
    version: i16,
    body: Bytes,
) -> Result<Option<BytesMut>, Fatal> {
    let (acks, topics) = topics(key, version, body)?;
    tracing::info!(api = ?key, version, "old request version answered with UNSUPPORTED_VERSION");
    if key == ApiKey::Produce && acks == 0 {
        return Ok(None);
    }
    let code = ResponseError::UnsupportedVersion.code();
    let mut out = BytesMut::new();
    if key == ApiKey::Fetch && version >= 1 {
        out.put_i32(0); // throttle time
    }
    out.put_i32(topics.len() as i32);
    for (name, parts) in topics {
        out.put_i16(name.len() as i16);
        out.extend_from_slice(&name);
        out.put_i32(parts.len() as i32);
        for p in parts {
            out.put_i32(p);
            out.put_i16(code);
            if key == ApiKey::Produce {
                out.put_i64(-1); // base offset
                if version >= 2 {
                    out.put_i64(-1); // log append time
                }
            } else {
                out.put_i64(-1); // high watermark
                out.put_i32(0); // empty record set
            }
        }
    }
    if key == ApiKey::Produce && version >= 1 {
        out.put_i32(0); // throttle time
    }
    Ok(Some(out))
}
