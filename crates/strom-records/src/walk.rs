//! The record framing walker: one implementation of Kafka's record layout, used by the
//! validator (over the batch's bytes in place, or over a decompressing stream) and by the
//! readers.
//!
//! A record (`DefaultRecord`) is
//!
//! ```text
//! length: varint            bytes after this field, >= 0
//! attributes: int8          unused
//! timestampDelta: varlong   from the batch's base timestamp
//! offsetDelta: varint       == the record's index in the batch
//! keyLength: varint         -1 = null
//! key: byte[keyLength]
//! valueLength: varint       -1 = null
//! value: byte[valueLength]
//! headersCount: varint      >= 0
//! headers: [headerKeyLength: varint (>= 0: a null header key is invalid),
//!           headerKey: byte[], headerValueLength: varint (-1 = null), value: byte[]]
//! ```
//!
//! Every length is checked against the bytes the record has left before anything is
//! skipped or taken, and the header count against the fewest bytes that many headers need
//! (two each), so no count or length read here sizes an allocation.

use crate::varint::{decode_raw, read_with, unzigzag32, unzigzag64, VarintError};
use crate::varint::{VARINT_BYTES_MAX, VARLONG_BYTES_MAX};
use crate::BatchError;

/// Where record bytes come from: a slice in place, or a decompressing stream.
pub(crate) trait Source {
    /// What a taken field becomes: `()` when validating (skipped), a byte range for readers.
    type Field;
    /// The next byte; `None` at the end of the data.
    fn byte(&mut self) -> Result<Option<u8>, BatchError>;
    /// Takes (or skips) the next `n` bytes; `None` if the data ends first.
    fn take(&mut self, n: usize) -> Result<Option<Self::Field>, BatchError>;
    /// Bytes consumed so far.
    fn consumed(&self) -> u64;
    /// The bytes at hand without reading further (may be fewer than remain, or none).
    fn buffered(&self) -> &[u8];
    /// Consumes `n` of the [`Source::buffered`] bytes.
    fn advance(&mut self, n: usize);
}

/// Records in place in a slice. `R` says whether fields are kept as ranges (readers) or
/// skipped (the validator).
pub(crate) struct Slice<'a, R> {
    buf: &'a [u8],
    pos: usize,
    _field: std::marker::PhantomData<R>,
}

impl<'a, R> Slice<'a, R> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Slice {
            buf,
            pos: 0,
            _field: std::marker::PhantomData,
        }
    }
}

/// A field kind for [`Slice`]: how `take` reports the bytes it passed over.
pub(crate) trait FieldKind {
    type Field;
    fn field(start: usize, end: usize) -> Self::Field;
}

/// Fields are skipped.
pub(crate) struct Skip;
impl FieldKind for Skip {
    type Field = ();
    #[inline]
    fn field(_: usize, _: usize) {}
}

/// Fields are byte ranges of the slice.
pub(crate) struct Ranges;
impl FieldKind for Ranges {
    type Field = std::ops::Range<usize>;
    #[inline]
    fn field(start: usize, end: usize) -> std::ops::Range<usize> {
        start..end
    }
}

impl<K: FieldKind> Source for Slice<'_, K> {
    type Field = K::Field;

    #[inline]
    fn byte(&mut self) -> Result<Option<u8>, BatchError> {
        let b = self.buf.get(self.pos).copied();
        self.pos += usize::from(b.is_some());
        Ok(b)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<Option<K::Field>, BatchError> {
        if n > self.buf.len() - self.pos {
            return Ok(None);
        }
        let start = self.pos;
        self.pos += n;
        Ok(Some(K::field(start, self.pos)))
    }

    #[inline]
    fn consumed(&self) -> u64 {
        self.pos as u64
    }

    #[inline]
    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    #[inline]
    fn advance(&mut self, n: usize) {
        self.pos += n;
    }
}

/// The fields of one record; key, value and headers as the source's fields.
#[derive(Debug)]
pub(crate) struct Parts<F> {
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
    pub(crate) key: Option<F>,
    pub(crate) value: Option<F>,
    /// `(key, value)`; grown as headers are read (never sized by the count on the wire);
    /// for `F = ()` a `Vec` of a zero-sized type, which never allocates.
    pub(crate) headers: Vec<(F, Option<F>)>,
    /// Whether a header key may start with [`crate::RESERVED_HEADER_PREFIX`]: exact over
    /// bytes in place; over a decompressing stream a key whose first bytes straddle the
    /// window's end counts as reserved (the caller then reads the records to be sure).
    pub(crate) reserved: bool,
}

/// The record being read: its index, where it ends, its length.
#[derive(Clone, Copy)]
struct Rec {
    index: i32,
    end: u64,
    len: u64,
}

impl Rec {
    fn err(self, message: String) -> BatchError {
        record_err(self.index, message)
    }

    /// The data (the batch, or the decompressed stream) ended inside the record.
    fn data_ended(self) -> BatchError {
        data_ended(self.index, self.len)
    }
}

/// The error for a record of `len` bytes that the data ends inside.
pub(crate) fn data_ended(index: i32, len: u64) -> BatchError {
    record_err(
        index,
        format!("the data ends inside the record ({len} bytes)"),
    )
}

/// The record's timestamp: `base` + `delta`, refused when it overflows.
pub(crate) fn timestamp(index: i32, base: i64, delta: i64) -> Result<i64, BatchError> {
    base.checked_add(delta).ok_or_else(|| {
        record_err(
            index,
            format!("timestamp delta {delta} overflows the base timestamp {base}"),
        )
    })
}

/// Reads a varint or varlong, naming `what` in the error.
#[inline]
fn varint<S: Source>(src: &mut S, rec: Rec, long: bool, what: &str) -> Result<i64, BatchError> {
    let (max, bits) = if long {
        (VARLONG_BYTES_MAX, 64)
    } else {
        (VARINT_BYTES_MAX, 32)
    };
    // Fast path: the varint lies whole in the bytes at hand, within the record.
    let within = (rec.end - src.consumed()).min(src.buffered().len() as u64) as usize;
    match decode_raw(&src.buffered()[..within], max, bits) {
        Ok((raw, n)) => {
            src.advance(n);
            return Ok(if long {
                unzigzag64(raw)
            } else {
                i64::from(unzigzag32(raw))
            });
        }
        Err(VarintError::Malformed) => {
            return Err(rec.err(format!(
                "malformed {what}: a {} longer than {max} bytes",
                if long { "varlong" } else { "varint" }
            )))
        }
        Err(VarintError::Truncated) => {} // maybe only the bytes at hand end: byte by byte
    }
    let mut data_ended = false;
    let raw = read_with(
        || {
            if src.consumed() >= rec.end {
                return Ok(None);
            }
            let b = src.byte()?;
            data_ended = b.is_none();
            Ok(b)
        },
        max,
        bits,
    )?;
    match raw {
        Ok(raw) if long => Ok(unzigzag64(raw)),
        Ok(raw) => Ok(i64::from(unzigzag32(raw))),
        Err(VarintError::Truncated) if data_ended => Err(rec.data_ended()),
        Err(VarintError::Truncated) => Err(rec.err(format!("the record ends inside its {what}"))),
        Err(VarintError::Malformed) => Err(rec.err(format!(
            "malformed {what}: a {} longer than {max} bytes",
            if long { "varlong" } else { "varint" }
        ))),
    }
}

fn record_err(index: i32, message: String) -> BatchError {
    BatchError::InvalidRecord { index, message }
}

/// A length-prefixed field of the record: `None` for null (when `nullable`).
#[inline]
fn field<S: Source>(
    src: &mut S,
    rec: Rec,
    nullable: bool,
    (what, what_length): (&str, &str),
) -> Result<Option<S::Field>, BatchError> {
    let len = varint(src, rec, false, what_length)?;
    if len == -1 && nullable {
        return Ok(None);
    }
    if len < 0 {
        return Err(rec.err(format!(
            "{what} length {len} (must be >= {})",
            if nullable { -1 } else { 0 }
        )));
    }
    let left = rec.end - src.consumed();
    if len as u64 > left {
        return Err(rec.err(format!(
            "{what} length {len} runs past the record's end ({left} bytes left)"
        )));
    }
    match src.take(len as usize)? {
        Some(f) => Ok(Some(f)),
        None => Err(rec.data_ended()),
    }
}

/// Reads the record `index` whose length field (already read, `len` >= 0) says it has
/// `len` bytes: every field is checked to lie within them, and the record to end exactly
/// there.
pub(crate) fn record<S: Source>(
    src: &mut S,
    index: i32,
    len: u64,
) -> Result<Parts<S::Field>, BatchError> {
    let rec = Rec {
        index,
        end: src.consumed() + len,
        len,
    };
    if len == 0 {
        return Err(rec.err("the record ends before its attributes".into()));
    }
    if src.byte()?.is_none() {
        return Err(rec.data_ended());
    }
    let timestamp_delta = varint(src, rec, true, "timestamp delta")?;
    let offset_delta = varint(src, rec, false, "offset delta")? as i32;
    if offset_delta != index {
        return Err(rec.err(format!(
            "offset delta {offset_delta} (must be the record's index, {index})"
        )));
    }
    let key = field(src, rec, true, ("key", "key length"))?;
    let value = field(src, rec, true, ("value", "value length"))?;
    let count = varint(src, rec, false, "header count")?;
    let left = rec.end - src.consumed();
    if count < 0 || count as u64 > left / 2 {
        return Err(rec.err(format!(
            "header count {count} (must be >= 0 and fit in the {left} bytes left, 2 per header)"
        )));
    }
    let mut headers = Vec::new();
    let mut reserved = false;
    for _ in 0..count {
        reserved |= may_be_reserved(src.buffered(), rec, src.consumed());
        // Not nullable: a length of -1 is refused inside, so `None` cannot come back.
        let Some(k) = field(src, rec, false, ("header key", "header key length"))? else {
            return Err(rec.err("null header key".into()));
        };
        let v = field(src, rec, true, ("header value", "header value length"))?;
        headers.push((k, v));
    }
    let consumed = src.consumed();
    if consumed != rec.end {
        return Err(rec.err(format!(
            "{} bytes after the record's last header",
            rec.end.saturating_sub(consumed)
        )));
    }
    Ok(Parts {
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers,
        reserved,
    })
}

/// Whether the header key whose length varint starts `at` hand (`buf`, the source's
/// buffered bytes at position `consumed`) may start with the reserved prefix. Reads ahead
/// without consuming; a key that the bytes at hand do not hold entirely is judged by the
/// part they hold (an error in the key is left to the reader proper).
fn may_be_reserved(buf: &[u8], rec: Rec, consumed: u64) -> bool {
    let within = (rec.end.saturating_sub(consumed)).min(buf.len() as u64) as usize;
    let buf = &buf[..within];
    let Ok((raw, n)) = decode_raw(buf, VARINT_BYTES_MAX, 32) else {
        return true; // the length itself straddles the window: look closer
    };
    let len = unzigzag32(raw);
    let prefix = crate::RESERVED_HEADER_PREFIX;
    if len < prefix.len() as i32 {
        return false;
    }
    let key = &buf[n..];
    let seen = key.len().min(prefix.len());
    key[..seen] == prefix[..seen]
}

/// Reads the length field of the record `index` of a batch that claims `count`: `None` at
/// the end of the data (fewer records than claimed is the caller's error to report).
/// `left` is what the data has left, when known (uncompressed batches).
pub(crate) fn record_length<S: Source>(
    src: &mut S,
    index: i32,
    left: Option<u64>,
) -> Result<Option<u64>, BatchError> {
    let fast = decode_raw(src.buffered(), VARINT_BYTES_MAX, 32);
    if let Ok((_, n)) = fast {
        src.advance(n);
    }
    let raw = match fast {
        Ok((raw, _)) => Ok(raw),
        Err(VarintError::Malformed) => Err(VarintError::Malformed),
        Err(VarintError::Truncated) => match slow_record_length(src)? {
            None => return Ok(None),
            Some(raw) => raw,
        },
    };
    let len = length_value(raw, index)?;
    if let Some(left) = left {
        let left = left.saturating_sub(src.consumed());
        if len > left {
            return Err(record_err(
                index,
                format!("record length {len} runs past the batch's end ({left} bytes left)"),
            ));
        }
    }
    Ok(Some(len))
}

/// A record length read byte by byte (the bytes at hand end inside it): `None` at the end
/// of the data.
fn slow_record_length<S: Source>(
    src: &mut S,
) -> Result<Option<Result<u64, VarintError>>, BatchError> {
    let Some(first) = src.byte()? else {
        return Ok(None);
    };
    let mut first = Some(first);
    let raw = read_with(
        || match first.take() {
            Some(b) => Ok(Some(b)),
            None => src.byte(),
        },
        VARINT_BYTES_MAX,
        32,
    )?;
    Ok(Some(raw))
}

/// A record length's value from its raw varint: >= 0.
fn length_value(raw: Result<u64, VarintError>, index: i32) -> Result<u64, BatchError> {
    let len = match raw {
        Ok(raw) => unzigzag32(raw),
        Err(VarintError::Truncated) => {
            return Err(record_err(
                index,
                "the data ends inside the record's length".into(),
            ))
        }
        Err(VarintError::Malformed) => {
            return Err(record_err(
                index,
                "malformed record length: a varint longer than 5 bytes".into(),
            ))
        }
    };
    if len < 0 {
        return Err(record_err(index, format!("record length {len}")));
    }
    Ok(len as u64)
}

/// Walks the `count` records of a batch from `src` (all of the batch's record bytes, `len`
/// of them when known), calling `each` with every record, and checks that the data holds
/// exactly `count` records: no fewer, no byte after the last.
pub(crate) fn walk<S: Source>(
    src: &mut S,
    count: i32,
    len: Option<u64>,
    mut each: impl FnMut(i32, Parts<S::Field>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    for index in 0..count {
        let Some(n) = record_length(src, index, len)? else {
            return Err(BatchError::Invalid(format!(
                "the batch claims {count} records but holds {index}"
            )));
        };
        let parts = record(src, index, n)?;
        each(index, parts)?;
    }
    if src.byte()?.is_some() {
        return Err(BatchError::Invalid(format!(
            "bytes after the batch's {count} records"
        )));
    }
    Ok(())
}
