//! Bounded decoding: a pre-pass over every request frame that proves the frame holds what its
//! counts and lengths announce before the `kafka-protocol` crate decodes it.
//!
//! The crate sizes vectors from counts read off the wire (`Vec::with_capacity(count)` for every
//! array), and in Rust an allocation failure aborts the process: one 23-byte Metadata request
//! announcing 2^31-1 topics stopped the whole broker. This module walks the frame with the
//! request's schema ([`crate::schema`]) exactly as the crate will decode it, and checks on the
//! way that
//! - every fixed-size field, string, byte field and tagged field has its bytes in the frame;
//! - every array count fits in the bytes left (each element costs at least its minimum
//!   encoded size, at least one byte) and all arrays of a request together hold at most
//!   [`ELEMENTS_MAX`] elements;
//! - varints are read as the crate reads them (at most 5 bytes);
//! - a known tagged field's value takes exactly the size its header announces (the crate
//!   decodes known tags from the stream without looking at the size, so a lying size would
//!   make the crate read something else than what was checked).
//!
//! A frame that passes can only make the crate allocate in proportion to the frame's bytes and
//! the element cap. One that fails closes its connection (as any undecodable frame does).
//! The walk reads nothing into memory and costs a few nanoseconds per field; record batches
//! are skipped as opaque byte fields.

use crate::schema::{self, Field, Schema, Ty};

/// Array elements one request may hold, all arrays together: no client sends more (a Fetch
/// of every partition of a 100,000-partition cluster holds ~100,000), and decoded elements
/// cost up to ~100 bytes each, so this bounds a decoded request to ~100 MiB whatever its
/// frame size.
pub(crate) const ELEMENTS_MAX: usize = 1 << 20;

/// Why a frame was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a successful check learned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Checked {
    /// Bytes of the request header (where the body starts).
    pub(crate) header_len: usize,
    /// Bytes of the header and body the crate will read; any after it are ignored.
    pub(crate) used: usize,
    /// Array elements over all arrays.
    pub(crate) elements: usize,
}

/// Checks a request frame (without its length prefix: api key, version, correlation id,
/// client id, [tagged fields], body) of `version` of the API `schema` describes.
pub(crate) fn check(schema: &Schema, version: i16, frame: &[u8]) -> Result<Checked, Malformed> {
    let flexible = version >= schema.flexible;
    let mut w = Walk {
        buf: frame,
        pos: 0,
        version,
        flexible: false,
        elements: 0,
    };
    // Request header v1 (v2 in flexible versions: the client id stays a non-compact string,
    // tagged fields follow it).
    w.need(8, "request header")?;
    w.pos = 8;
    w.string_legacy("client id")?;
    if flexible {
        w.tagged_fields(&[], "request header")?;
    }
    let header_len = w.pos;
    w.flexible = flexible;
    w.fields(schema.fields, schema.name)?;
    Ok(Checked {
        header_len,
        used: w.pos,
        elements: w.elements,
    })
}

/// The check for the frame of a supported API, if the API has a schema.
pub(crate) fn check_request(api: i16, version: i16, frame: &[u8]) -> Result<Checked, Malformed> {
    let s = schema::for_api(api)
        .ok_or_else(|| Malformed(format!("api key {api} has no request schema")))?;
    if version < s.min || version > s.max {
        return Err(Malformed(format!(
            "{} v{version} is outside the schema's range {}-{}",
            s.name, s.min, s.max
        )));
    }
    check(s, version, frame)
}

struct Walk<'a> {
    buf: &'a [u8],
    pos: usize,
    version: i16,
    flexible: bool,
    elements: usize,
}

impl Walk<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn need(&self, n: usize, what: &str) -> Result<(), Malformed> {
        if self.left() < n {
            return Err(Malformed(format!(
                "{what}: {n} bytes announced, {} left in the frame",
                self.left()
            )));
        }
        Ok(())
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<(), Malformed> {
        self.need(n, what)?;
        self.pos += n;
        Ok(())
    }

    fn i16(&mut self, what: &str) -> Result<i16, Malformed> {
        self.need(2, what)?;
        let v = i16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }

    fn i32(&mut self, what: &str) -> Result<i32, Malformed> {
        self.need(4, what)?;
        let b = &self.buf[self.pos..self.pos + 4];
        self.pos += 4;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned varint exactly as the crate reads it: at most 5 bytes (a fifth byte ends
    /// it whatever its top bit), bits beyond 32 dropped.
    fn uvarint(&mut self, what: &str) -> Result<u32, Malformed> {
        let mut value = 0u32;
        for i in 0..5 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| Malformed(format!("{what}: truncated varint")))?;
            self.pos += 1;
            value |= u32::from(b & 0x7f).wrapping_shl(7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        Ok(value)
    }

    /// A non-compact string: i16 length, -1 = null.
    fn string_legacy(&mut self, what: &str) -> Result<(), Malformed> {
        let n = self.i16(what)?;
        if n < -1 {
            return Err(Malformed(format!("{what}: string length {n}")));
        }
        self.skip(n.max(0) as usize, what)
    }

    /// A string or byte field's payload length (`None` = null).
    fn length(&mut self, wide: bool, what: &str) -> Result<Option<usize>, Malformed> {
        if self.flexible {
            let n = self.uvarint(what)?;
            return Ok(n.checked_sub(1).map(|n| n as usize));
        }
        let n = if wide {
            self.i32(what)?
        } else {
            i32::from(self.i16(what)?)
        };
        match n {
            -1 => Ok(None),
            n if n < -1 => Err(Malformed(format!("{what}: length {n}"))),
            n => Ok(Some(n as usize)),
        }
    }

    fn fields(&mut self, fields: &[Field], what: &str) -> Result<(), Malformed> {
        for f in fields {
            if f.tag.is_none() && f.present(self.version) {
                self.value(&f.ty, f.name)?;
            }
        }
        if self.flexible {
            self.tagged_fields(fields, what)?;
        }
        Ok(())
    }

    /// A tagged-field section: count, then (tag, size, value) each. A known tag's value is
    /// walked within its announced size and must fill it exactly.
    fn tagged_fields(&mut self, fields: &[Field], what: &str) -> Result<(), Malformed> {
        let count = self.uvarint(what)? as usize;
        // Each tagged field takes at least two bytes (tag and size).
        if count > self.left() / 2 {
            return Err(Malformed(format!(
                "{what}: {count} tagged fields in {} bytes",
                self.left()
            )));
        }
        for _ in 0..count {
            let tag = self.uvarint(what)?;
            let size = self.uvarint(what)? as usize;
            self.need(size, &format!("{what}: tagged field {tag}"))?;
            match fields.iter().find(|f| f.tag == Some(tag)) {
                None => self.pos += size,
                Some(f) if !f.present(self.version) => {
                    return Err(Malformed(format!(
                        "{what}: tag {tag} ({}) is not valid in v{}",
                        f.name, self.version
                    )))
                }
                Some(f) => {
                    let end = self.pos + size;
                    let mut inner = Walk {
                        buf: &self.buf[..end],
                        pos: self.pos,
                        version: self.version,
                        flexible: self.flexible,
                        elements: self.elements,
                    };
                    inner
                        .value(&f.ty, f.name)
                        .map_err(|e| Malformed(format!("{what}: tagged field {tag}: {e}")))?;
                    if inner.pos != end {
                        return Err(Malformed(format!(
                            "{what}: tagged field {} announces {size} bytes, its value takes {}",
                            f.name,
                            inner.pos - self.pos
                        )));
                    }
                    self.elements = inner.elements;
                    self.pos = end;
                }
            }
        }
        Ok(())
    }

    fn value(&mut self, ty: &Ty, what: &str) -> Result<(), Malformed> {
        match ty {
            Ty::Int8 | Ty::Bool => self.skip(1, what),
            Ty::Int16 => self.skip(2, what),
            Ty::Int32 => self.skip(4, what),
            Ty::Int64 => self.skip(8, what),
            Ty::Uuid => self.skip(16, what),
            Ty::Str => {
                let n = self.length(false, what)?;
                self.skip(n.unwrap_or(0), what)
            }
            Ty::Bytes => {
                let n = self.length(true, what)?;
                self.skip(n.unwrap_or(0), what)
            }
            Ty::Array(elem) => self.array(what, min_size(elem, self.version, self.flexible), |w| {
                w.value(elem, what)
            }),
            Ty::Structs(fields) => {
                let min = min_struct_size(fields, self.version, self.flexible);
                self.array(what, min, |w| w.fields(fields, what))
            }
            Ty::Struct(fields) => self.fields(fields, what),
            Ty::OptStruct(fields) => {
                self.need(1, what)?;
                let present = self.buf[self.pos] == 1;
                self.pos += 1;
                if present {
                    self.fields(fields, what)?;
                }
                Ok(())
            }
        }
    }

    fn array(
        &mut self,
        what: &str,
        min_elem: usize,
        mut elem: impl FnMut(&mut Self) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        let count = if self.flexible {
            match self.uvarint(what)?.checked_sub(1) {
                None => return Ok(()),
                Some(n) => n as usize,
            }
        } else {
            match self.i32(what)? {
                -1 => return Ok(()),
                n if n < -1 => return Err(Malformed(format!("{what}: array length {n}"))),
                n => n as usize,
            }
        };
        if count > self.left() / min_elem.max(1) {
            return Err(Malformed(format!(
                "{what}: {count} elements of at least {} bytes announced, {} bytes left",
                min_elem.max(1),
                self.left()
            )));
        }
        self.elements += count;
        if self.elements > ELEMENTS_MAX {
            return Err(Malformed(format!(
                "{what}: more than {ELEMENTS_MAX} array elements in one request"
            )));
        }
        for _ in 0..count {
            elem(self)?;
        }
        Ok(())
    }
}

/// The fewest bytes a value of `ty` takes.
fn min_size(ty: &Ty, version: i16, flexible: bool) -> usize {
    match ty {
        Ty::Int8 | Ty::Bool => 1,
        Ty::Int16 => 2,
        Ty::Int32 => 4,
        Ty::Int64 => 8,
        Ty::Uuid => 16,
        // Null or empty: a one-byte varint, or the fixed-size length.
        Ty::Str if flexible => 1,
        Ty::Str => 2,
        Ty::Bytes | Ty::Array(_) | Ty::Structs(_) if flexible => 1,
        Ty::Bytes | Ty::Array(_) | Ty::Structs(_) => 4,
        Ty::Struct(fields) => min_struct_size(fields, version, flexible),
        Ty::OptStruct(_) => 1,
    }
}

fn min_struct_size(fields: &[Field], version: i16, flexible: bool) -> usize {
    let own: usize = fields
        .iter()
        .filter(|f| f.tag.is_none() && f.present(version))
        .map(|f| min_size(&f.ty, version, flexible))
        .sum();
    own + usize::from(flexible)
}

#[cfg(test)]
mod tests;
