//! Kafka's zig-zag varints (`ByteUtils.readVarint` / `readVarlong`), the one implementation
//! of them in Strom.
//!
//! A varint is a 32-bit value in at most [`VARINT_BYTES_MAX`] bytes, a varlong a 64-bit value
//! in at most [`VARLONG_BYTES_MAX`]; 7 bits per byte, least significant group first, the top
//! bit set on every byte but the last, then zig-zag (`(n << 1) ^ (n >> 63)`) so that small
//! negative numbers stay short. Anything longer, or with bits above the type's width, is
//! malformed.

/// Longest encoding of a 32-bit varint.
pub const VARINT_BYTES_MAX: usize = 5;
/// Longest encoding of a 64-bit varlong.
pub const VARLONG_BYTES_MAX: usize = 10;

/// Why a varint could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarintError {
    /// The data ended inside it (or before it).
    Truncated,
    /// Longer than its type allows, or bits above the type's width.
    Malformed,
}

/// Reads a varint of at most `max_bytes` bytes whose value fits in `bits` bits from `next`
/// (which yields the following byte, or `None` at the end of the data).
#[inline]
pub(crate) fn read_with<E>(
    mut next: impl FnMut() -> Result<Option<u8>, E>,
    max_bytes: usize,
    bits: u32,
) -> Result<Result<u64, VarintError>, E> {
    let mut raw = 0u64;
    for i in 0..max_bytes {
        let Some(b) = next()? else {
            return Ok(Err(VarintError::Truncated));
        };
        let shift = 7 * i as u32;
        let group = u64::from(b & 0x7f);
        if shift + 7 > bits && group >> (bits - shift) != 0 {
            return Ok(Err(VarintError::Malformed));
        }
        raw |= group << shift;
        if b & 0x80 == 0 {
            return Ok(Ok(raw));
        }
    }
    Ok(Err(VarintError::Malformed))
}

/// Decodes a raw (not yet zig-zagged) varint from the front of `buf`: `(raw, bytes used)`.
/// `Truncated` when `buf` ends inside it, which may mean only that more bytes are needed.
#[inline]
pub(crate) fn decode_raw(
    buf: &[u8],
    max_bytes: usize,
    bits: u32,
) -> Result<(u64, usize), VarintError> {
    // One byte (values -64..63) is the common case: lengths of small fields, deltas.
    if let Some(&b) = buf.first() {
        if b & 0x80 == 0 {
            return Ok((u64::from(b), 1));
        }
    }
    let mut raw = 0u64;
    for (i, &b) in buf.iter().take(max_bytes).enumerate() {
        let shift = 7 * i as u32;
        let group = u64::from(b & 0x7f);
        if shift + 7 > bits && group >> (bits - shift) != 0 {
            return Err(VarintError::Malformed);
        }
        raw |= group << shift;
        if b & 0x80 == 0 {
            return Ok((raw, i + 1));
        }
    }
    if buf.len() >= max_bytes {
        Err(VarintError::Malformed)
    } else {
        Err(VarintError::Truncated)
    }
}

#[inline]
fn unzigzag(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

/// Reads a varint from the front of `buf`: `(value, bytes used)`.
pub fn read_varint(buf: &[u8]) -> Result<(i32, usize), VarintError> {
    let (raw, n) = decode_raw(buf, VARINT_BYTES_MAX, 32)?;
    Ok((unzigzag32(raw), n))
}

/// Reads a varlong from the front of `buf`: `(value, bytes used)`.
pub fn read_varlong(buf: &[u8]) -> Result<(i64, usize), VarintError> {
    let (raw, n) = decode_raw(buf, VARLONG_BYTES_MAX, 64)?;
    Ok((unzigzag(raw), n))
}

#[inline]
pub(crate) fn unzigzag32(raw: u64) -> i32 {
    let raw = raw as u32;
    ((raw >> 1) as i32) ^ -((raw & 1) as i32)
}

#[inline]
pub(crate) fn unzigzag64(raw: u64) -> i64 {
    unzigzag(raw)
}

/// Appends `v` as a varint (`v` in `i32`'s range) or varlong.
#[inline]
pub fn put_varint(out: &mut impl bytes::BufMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// Bytes [`put_varint`] writes for `v`.
pub fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.leading_zeros() as usize).max(1).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lengths() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i32::MIN as i64,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            assert_eq!(read_varint(&b), Ok((v as i32, b.len())), "{v}");
            assert_eq!(read_varlong(&b), Ok((v, b.len())), "{v}");
        }
        for v in [i64::MAX, i64::MIN, 1 << 40] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(read_varlong(&b), Ok((v, b.len())));
            assert_eq!(read_varint(&b), Err(VarintError::Malformed));
        }
    }

    #[test]
    fn malformed_and_truncated() {
        // 2^31-1 is the longest valid varint: FE FF FF FF 0F.
        assert_eq!(
            read_varint(&[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            Ok((i32::MAX, 5))
        );
        // A fifth byte with bits above 32, a sixth byte: malformed.
        assert_eq!(
            read_varint(&[0xfe, 0xff, 0xff, 0xff, 0x1f]),
            Err(VarintError::Malformed)
        );
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(VarintError::Malformed)
        );
        assert_eq!(read_varlong(&[0x80; 11]), Err(VarintError::Malformed));
        let mut ten = [0xffu8; 10];
        ten[9] = 0x02;
        assert_eq!(read_varlong(&ten), Err(VarintError::Malformed));
        ten[9] = 0x01;
        assert_eq!(read_varlong(&ten), Ok((i64::MIN, 10)));
        assert_eq!(read_varint(&[0x80, 0x80]), Err(VarintError::Truncated));
        assert_eq!(read_varint(&[]), Err(VarintError::Truncated));
    }
}
