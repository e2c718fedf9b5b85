//! Bounded streaming decompression of a batch's records.
//!
//! A compressed batch's records are decompressed through a fixed [`WINDOW_BYTES`] window
//! and walked as they come out: the validator keeps no record, so memory is the window plus
//! the codec's own state, whatever the batch decompresses to. The bytes produced are counted
//! and refused past [`decompressed_bytes_max`] (no zip bombs).
//!
//! The codecs' own state is bounded by their formats: gzip (deflate) a 32 KiB window; lz4
//! frames at most a 4 MiB block plus a 64 KiB window; zstd the window its frame header
//! declares, which is refused above [`ZSTD_WINDOW_LOG_MAX`]; snappy decodes one block at a
//! time (Kafka's xerial framing: blocks of 32 KiB as Java writes them; raw snappy, as
//! librdkafka writes it: the whole batch is one block), into a buffer whose size the block
//! declares, checked against the bound and against what the block's bytes can expand to
//! before it is allocated.

use std::io::{self, Read};

use crate::walk::Source;
use crate::BatchError;

/// Bytes of decompressed data held at once while walking a compressed batch: every read of
/// the decompressor fills it, so it is at least an lz4 frame's default 64 KiB block (which
/// lz4 then decodes straight into it, with no copy through its own buffer).
pub const WINDOW_BYTES: usize = 64 * 1024;

/// A compressed batch may decompress to at most this many times its own size (or
/// [`DECOMPRESSION_FLOOR_BYTES`], when larger). Kafka bounds only the compressed size
/// (`max.message.bytes`); its producers bound batches before compression (librdkafka's
/// `batch.size`, 1 MB) or after an estimate of it (Java's `batch.size`, 16 KiB by default),
/// so a bound of the decompressed size alone would refuse legitimate batches of compressible
/// data. Ratios of real data are 2-20; 64 leaves room and still stops a zip bomb after
/// 64 MiB of work for a 1 MiB batch. The bound depends on the batch alone, so readers
/// apply the same one the log applied when it stored the batch.
pub const DECOMPRESSION_RATIO_MAX: u64 = 64;

/// The decompressed bound is never below [`DECOMPRESSION_RATIO_MAX`] times this (64 MiB):
/// a small batch of very compressible records (a librdkafka batch of up to 1 MB of zeros
/// compresses to a few KiB) is not refused for its ratio.
pub const DECOMPRESSION_FLOOR_BYTES: u64 = 1 << 20;

/// Largest zstd window (as a power of two, 16 MiB) a batch's frame may declare: zstd
/// allocates the declared window. zstd's levels up to 19 use at most 8 MiB (2 MiB at level
/// 3, Kafka's default), and a producer that knows the batch's size (librdkafka) declares at
/// most that size.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// A snappy element of `n` bytes produces at most 64 bytes per 3 of them (a 3-byte copy of
/// 64 bytes); a block declaring more output than `SNAPPY_EXPANSION_MAX` times its length is
/// corrupt, and is refused before anything is allocated for it.
const SNAPPY_EXPANSION_MAX: usize = 22;

/// The decompressed-size bound of a compressed batch of `batch_bytes` bytes (log overhead
/// included): [`DECOMPRESSION_RATIO_MAX`] × max(`batch_bytes`, [`DECOMPRESSION_FLOOR_BYTES`]).
pub fn decompressed_bytes_max(batch_bytes: usize) -> u64 {
    DECOMPRESSION_RATIO_MAX * (batch_bytes as u64).max(DECOMPRESSION_FLOOR_BYTES)
}

/// A batch's compression codec (attributes bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Records in place.
    None,
    /// gzip (RFC 1952; concatenated members are read as one stream, as Java does).
    Gzip,
    /// snappy: Kafka's xerial framing, or raw snappy.
    Snappy,
    /// The lz4 frame format.
    Lz4,
    /// zstd frames.
    Zstd,
}

impl Codec {
    /// The codec of id `id`; ids 5-7 are unknown (corrupt).
    pub fn from_id(id: i16) -> Result<Codec, BatchError> {
        Ok(match id {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            other => {
                return Err(BatchError::Corrupt(format!(
                    "unknown compression codec id {other}"
                )))
            }
        })
    }

    /// The codec's id in a batch's attributes.
    pub fn id(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    /// Kafka's name of the codec.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// A decompressor of one codec over a batch's compressed record bytes.
enum Inflate<'a> {
    Gzip(flate2::bufread::MultiGzDecoder<&'a [u8]>),
    Snappy(Snappy<'a>),
    Lz4(Lz4<'a>),
    Zstd(Zstd<'a>),
}

impl Read for Inflate<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Inflate::Gzip(d) => d.read(buf),
            Inflate::Snappy(d) => d.read(buf),
            Inflate::Lz4(d) => d.read(buf),
            Inflate::Zstd(d) => d.read(buf),
        }
    }
}

/// Marks an `io::Error` raised for the decompressed bound (not for corrupt data).
#[derive(Debug)]
struct OverBound;

impl std::fmt::Display for OverBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("over the decompressed-size bound")
    }
}

impl std::error::Error for OverBound {}

/// Snappy, one block at a time: Kafka's xerial framing (a 16-byte header, then blocks of
/// `[length: u32 BE][raw snappy block]`), or one raw block when the header is absent (as
/// Java's `SnappyInputStream` falls back).
struct Snappy<'a> {
    input: &'a [u8],
    xerial: bool,
    block: Vec<u8>,
    pos: usize,
    /// Bytes the blocks may still declare.
    budget: u64,
    decoder: snap::raw::Decoder,
}

/// The xerial header's first 8 bytes (`SnappyCodec.MAGIC_HEADER`), then version and
/// compatible version (4 bytes each).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

impl<'a> Snappy<'a> {
    fn new(input: &'a [u8], budget: u64) -> io::Result<Snappy<'a>> {
        let xerial = input.starts_with(XERIAL_MAGIC);
        let input = if xerial {
            input.get(XERIAL_HEADER_BYTES..).ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "truncated xerial header")
            })?
        } else {
            input
        };
        Ok(Snappy {
            input,
            xerial,
            block: Vec::new(),
            pos: 0,
            budget,
            decoder: snap::raw::Decoder::new(),
        })
    }

    /// Decodes the next block; `false` at the end of the input.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.input.is_empty() {
            return Ok(false);
        }
        let raw = if self.xerial {
            let Some((len, rest)) = self.input.split_first_chunk::<4>() else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated xerial block length",
                ));
            };
            let len = u32::from_be_bytes(*len) as usize;
            if len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("xerial block of {len} bytes, {} bytes left", rest.len()),
                ));
            }
            let (raw, rest) = rest.split_at(len);
            self.input = rest;
            raw
        } else {
            std::mem::take(&mut self.input)
        };
        let n = snap::raw::decompress_len(raw).map_err(io::Error::other)?;
        if n as u64 > self.budget {
            return Err(io::Error::other(OverBound));
        }
        if n > raw.len().saturating_mul(SNAPPY_EXPANSION_MAX) {
            return Err(io::Error::other(format!(
                "snappy block of {} bytes declares {n} bytes of output",
                raw.len()
            )));
        }
        self.budget -= n as u64;
        self.block.clear();
        self.block.resize(n, 0);
        let got = self
            .decoder
            .decompress(raw, &mut self.block)
            .map_err(io::Error::other)?;
        self.block.truncate(got);
        self.pos = 0;
        Ok(true)
    }
}

impl Read for Snappy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// An lz4 frame decompression context (lz4's `LZ4F_dctx`), freed on drop.
struct Lz4Ctx(lz4_sys::LZ4FDecompressionContext);

impl Drop for Lz4Ctx {
    fn drop(&mut self) {
        // SAFETY: the context was created by LZ4F_createDecompressionContext and is freed
        // once, here (the pointer is owned by this value alone).
        unsafe {
            lz4_sys::LZ4F_freeDecompressionContext(lz4_sys::LZ4FDecompressionContext((self.0).0));
        }
    }
}

thread_local! {
    /// One lz4 frame context per thread, reused after a frame that decoded whole (lz4
    /// allows that; a context left in the middle of a frame is freed instead).
    static LZ4_DCTX: std::cell::Cell<Option<Lz4Ctx>> = const { std::cell::Cell::new(None) };
}

/// One lz4 frame (the format Kafka's producers write since magic 1) decoded with lz4's own
/// frame decoder. The frame's optional xxHash32 checksums are not verified: the batch's
/// CRC-32C, checked before, already covers every compressed byte (and librdkafka and Java
/// write none), while verifying them cost three quarters of the decompression time.
struct Lz4<'a> {
    ctx: Option<Lz4Ctx>,
    input: &'a [u8],
    pos: usize,
    /// The frame ended (the decoder said so).
    done: bool,
}

fn lz4_error(code: usize) -> io::Error {
    // SAFETY: LZ4F_getErrorName returns a pointer to a static NUL-terminated string for
    // any code.
    let name = unsafe { std::ffi::CStr::from_ptr(lz4_sys::LZ4F_getErrorName(code)) };
    io::Error::other(name.to_string_lossy().into_owned())
}

fn lz4_check(code: usize) -> io::Result<usize> {
    // SAFETY: LZ4F_isError only inspects the value.
    if unsafe { lz4_sys::LZ4F_isError(code) } != 0 {
        return Err(lz4_error(code));
    }
    Ok(code)
}

impl<'a> Lz4<'a> {
    fn new(input: &'a [u8]) -> io::Result<Lz4<'a>> {
        let ctx = match LZ4_DCTX.with(|c| c.take()) {
            Some(c) => c,
            None => {
                let mut raw = lz4_sys::LZ4FDecompressionContext(std::ptr::null_mut());
                // SAFETY: `raw` is written by the call; on success it owns a new context.
                lz4_check(unsafe {
                    lz4_sys::LZ4F_createDecompressionContext(&mut raw, lz4_sys::LZ4F_VERSION)
                })?;
                Lz4Ctx(raw)
            }
        };
        Ok(Lz4 {
            ctx: Some(ctx),
            input,
            pos: 0,
            done: false,
        })
    }
}

impl Drop for Lz4<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.ctx.take() {
            if self.done {
                LZ4_DCTX.with(|slot| slot.set(Some(c)));
            }
        }
    }
}

impl Read for Lz4<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(ctx) = self.ctx.as_ref() else {
            return Ok(0);
        };
        // lz4 1.10's LZ4F_decompressOptions_t: stableDst, skipChecksums, two reserved.
        let options = lz4_sys::LZ4FDecompressOptions {
            stable_dst: 0,
            reserved: [1, 0, 0],
        };
        while !self.done && !buf.is_empty() {
            let src = &self.input[self.pos..];
            let mut src_size = src.len();
            let mut dst_size = buf.len();
            // SAFETY: the pointers and sizes describe `src` (read) and `buf` (written), both
            // valid for the call; lz4 writes at most `dst_size` bytes and reads at most
            // `src_size`, and reports how many of each it used.
            let hint = lz4_check(unsafe {
                lz4_sys::LZ4F_decompress(
                    lz4_sys::LZ4FDecompressionContext((ctx.0).0),
                    buf.as_mut_ptr(),
                    &mut dst_size,
                    src.as_ptr(),
                    &mut src_size,
                    &options,
                )
            })?;
            self.pos += src_size;
            self.done = hint == 0;
            if dst_size > 0 {
                return Ok(dst_size);
            }
            if src_size == 0 && !self.done {
                // No input left and nothing more to flush: the frame is cut short. (`finish`
                // reports it; here the stream just ends.)
                return Ok(0);
            }
        }
        Ok(0)
    }
}

thread_local! {
    /// One zstd decompression context per thread, reused from batch to batch: creating one
    /// costs about as much as decompressing a small batch.
    static ZSTD_DCTX: std::cell::Cell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::Cell::new(None) };
}

/// zstd frames (one after another, as the format allows) through a reused context, its
/// window refused above [`ZSTD_WINDOW_LOG_MAX`].
struct Zstd<'a> {
    dctx: Option<zstd::zstd_safe::DCtx<'static>>,
    input: &'a [u8],
    pos: usize,
    /// Inside a frame (the decoder wants more input or has output to flush).
    in_frame: bool,
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(zstd::zstd_safe::get_error_name(code))
}

impl<'a> Zstd<'a> {
    fn new(input: &'a [u8]) -> io::Result<Zstd<'a>> {
        use zstd::zstd_safe::{DCtx, DParameter, ResetDirective};
        let mut dctx = match ZSTD_DCTX.with(|c| c.take()) {
            Some(d) => d,
            None => {
                let mut d = DCtx::create();
                d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
                    .map_err(zstd_error)?;
                d
            }
        };
        // Parameters (the window bound) survive a session reset.
        dctx.reset(ResetDirective::SessionOnly)
            .map_err(zstd_error)?;
        Ok(Zstd {
            dctx: Some(dctx),
            input,
            pos: 0,
            in_frame: false,
        })
    }
}

/// A zstd context kept for reuse holds at most this much (the window of the frames it
/// decoded stays allocated): enough for the 2 MiB window of Kafka's default level, so that
/// each thread does not keep a 16 MiB window after one large frame.
const ZSTD_KEPT_CONTEXT_BYTES_MAX: usize = 4 << 20;

impl Drop for Zstd<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.dctx.take() {
            if d.sizeof() <= ZSTD_KEPT_CONTEXT_BYTES_MAX {
                ZSTD_DCTX.with(|c| c.set(Some(d)));
            }
        }
    }
}

impl Read for Zstd<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use zstd::zstd_safe::{InBuffer, OutBuffer};
        let Some(dctx) = self.dctx.as_mut() else {
            return Ok(0);
        };
        loop {
            if self.pos == self.input.len() && !self.in_frame {
                return Ok(0);
            }
            let mut inb = InBuffer::around(&self.input[self.pos..]);
            let mut out = OutBuffer::around(&mut *buf);
            let hint = dctx
                .decompress_stream(&mut out, &mut inb)
                .map_err(zstd_error)?;
            let consumed = inb.pos();
            self.pos += consumed;
            self.in_frame = hint != 0;
            if out.pos() > 0 {
                return Ok(out.pos());
            }
            if consumed == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "incomplete zstd frame",
                ));
            }
        }
    }
}

/// A batch's decompressed records as a [`Source`]: read through a fixed window, counted
/// against the bound. Fields are skipped (validation); [`Stream::take_into`] copies them
/// out for readers.
pub(crate) struct Stream<'a> {
    inner: Option<Inflate<'a>>,
    codec: Codec,
    window: Box<[u8]>,
    pos: usize,
    len: usize,
    consumed: u64,
    produced: u64,
    max: u64,
}

impl<'a> Stream<'a> {
    /// Starts decompressing `input` (a batch's record bytes) of `codec` (not `None`),
    /// refusing more than `max` bytes of output.
    pub(crate) fn new(codec: Codec, input: &'a [u8], max: u64) -> Result<Stream<'a>, BatchError> {
        let corrupt = |e: io::Error| corrupt(codec, &e);
        let inner = match codec {
            Codec::None => None,
            Codec::Gzip => Some(Inflate::Gzip(flate2::bufread::MultiGzDecoder::new(input))),
            Codec::Snappy => Some(Inflate::Snappy(Snappy::new(input, max).map_err(corrupt)?)),
            Codec::Lz4 => Some(Inflate::Lz4(Lz4::new(input).map_err(corrupt)?)),
            Codec::Zstd => Some(Inflate::Zstd(Zstd::new(input).map_err(corrupt)?)),
        };
        Ok(Stream {
            inner,
            codec,
            window: vec![0u8; WINDOW_BYTES].into_boxed_slice(),
            pos: 0,
            len: 0,
            consumed: 0,
            produced: 0,
            max,
        })
    }

    /// Refills the window; `false` at the end of the stream.
    fn refill(&mut self) -> Result<bool, BatchError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(false);
        };
        loop {
            match inner.read(&mut self.window) {
                Ok(0) => {
                    self.finish()?;
                    return Ok(false);
                }
                Ok(n) => {
                    self.produced += n as u64;
                    if self.produced > self.max {
                        return Err(BatchError::DecompressedTooLarge { max: self.max });
                    }
                    self.pos = 0;
                    self.len = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.get_ref().is_some_and(|i| i.is::<OverBound>()) {
                        return Err(BatchError::DecompressedTooLarge { max: self.max });
                    }
                    return Err(corrupt(self.codec, &e));
                }
            }
        }
    }

    /// At the end of the decompressed data: an lz4 frame must have ended (its decoder
    /// reports the end of input, not a truncated frame) with no bytes after it.
    fn finish(&mut self) -> Result<(), BatchError> {
        if let Some(Inflate::Lz4(d)) = &self.inner {
            if !d.done {
                return Err(BatchError::Corrupt(
                    "undecodable lz4 data: the frame is truncated".into(),
                ));
            }
            let rest = d.input.len() - d.pos;
            if rest > 0 {
                return Err(BatchError::Corrupt(format!(
                    "undecodable lz4 data: {rest} bytes after the frame"
                )));
            }
        }
        self.inner = None;
        Ok(())
    }

    /// Appends the next `n` bytes to `out` (grown as bytes arrive, never sized by `n` up
    /// front); `false` if the stream ends first.
    pub(crate) fn take_into(
        &mut self,
        mut n: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, BatchError> {
        while n > 0 {
            if self.pos == self.len && !self.refill()? {
                return Ok(false);
            }
            let k = n.min(self.len - self.pos);
            out.extend_from_slice(&self.window[self.pos..self.pos + k]);
            self.pos += k;
            self.consumed += k as u64;
            n -= k;
        }
        Ok(true)
    }
}

fn corrupt(codec: Codec, e: &io::Error) -> BatchError {
    let text = e.to_string();
    let why = if codec == Codec::Zstd && text.contains("too much memory") {
        format!(" (the frame's window is above 2^{ZSTD_WINDOW_LOG_MAX} bytes, ZSTD_WINDOW_LOG_MAX)")
    } else {
        String::new()
    };
    BatchError::Corrupt(format!("undecodable {} data: {text}{why}", codec.name()))
}

impl Source for Stream<'_> {
    type Field = ();

    #[inline]
    fn byte(&mut self) -> Result<Option<u8>, BatchError> {
        if self.pos == self.len && !self.refill()? {
            return Ok(None);
        }
        let b = self.window[self.pos];
        self.pos += 1;
        self.consumed += 1;
        Ok(Some(b))
    }

    fn take(&mut self, mut n: usize) -> Result<Option<()>, BatchError> {
        while n > 0 {
            if self.pos == self.len && !self.refill()? {
                return Ok(None);
            }
            let k = n.min(self.len - self.pos);
            self.pos += k;
            self.consumed += k as u64;
            n -= k;
        }
        Ok(Some(()))
    }

    #[inline]
    fn consumed(&self) -> u64 {
        self.consumed
    }

    #[inline]
    fn buffered(&self) -> &[u8] {
        &self.window[self.pos..self.len]
    }

    #[inline]
    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.consumed += n as u64;
    }
}
