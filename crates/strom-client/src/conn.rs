//! One broker connection with pipelined requests.
//!
//! Requests are framed and queued to a writer task; a reader task matches responses to
//! waiters by correlation id, so many requests can be in flight on one socket (Kafka
//! answers in order per connection, but we don't rely on it).
//!
//! Record batches handed to [`Connection::start_sharing`] travel as chunks of their own
//! (`strom_wire::Chunked`): the writer sends the queued chunks with vectored writes, so a
//! batch is copied once, into the socket. Response frames are read into one reused buffer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use parking_lot::Mutex;
use strom_wire::{Chunk, Chunked, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};

/// Largest response frame we accept (guards against garbage lengths).
const MAX_FRAME: usize = 512 * 1024 * 1024;

type Waiters = Arc<Mutex<Option<HashMap<i32, oneshot::Sender<Bytes>>>>>;

/// A pipelined connection to one broker.
pub struct Connection {
    addr: String,
    client_id: StrBytes,
    next_id: AtomicI32,
    tx: mpsc::Sender<Frame>,
    waiters: Waiters,
}

impl Connection {
    /// Connects to `addr` ("host:port"), secured as [`crate::security::set_security`] says
    /// (TLS, then SASL, before anything else is sent).
    pub async fn connect(addr: &str, client_id: &str) -> Result<Self> {
        let connect_err = |source| Error::Connect {
            addr: addr.to_string(),
            source,
        };
        let mut stream = TcpStream::connect(addr).await.map_err(connect_err)?;
        stream.set_nodelay(true)?;
        let security = crate::security::security();
        let Some(tls) = &security.tls else {
            if let Some(sasl) = &security.sasl {
                crate::security::authenticate(&mut stream, sasl, client_id, addr).await?;
            }
            let (rd, wr) = stream.into_split();
            return Ok(Self::start_io(addr, client_id, rd, wr));
        };
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = strom_tls::rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| Error::Invalid(format!("{addr}: {e}")))?;
        let mut stream = strom_tls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .map_err(connect_err)?;
        if let Some(sasl) = &security.sasl {
            crate::security::authenticate(&mut stream, sasl, client_id, addr).await?;
        }
        let (rd, wr) = tokio::io::split(stream);
        Ok(Self::start_io(addr, client_id, rd, wr))
    }

    /// Starts the writer and reader tasks of a connected (and authenticated) socket.
    fn start_io<R, W>(addr: &str, client_id: &str, rd: R, mut wr: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Frame>(1024);
        let waiters: Waiters = Arc::new(Mutex::new(Some(HashMap::new())));

        // Writer: whatever is queued (up to 4 MiB, 256 chunks) goes out in vectored writes.
        tokio::spawn(async move {
            let mut chunks: Vec<Bytes> = Vec::new();
            while let Some(frame) = rx.recv().await {
                let mut queued = frame.len();
                chunks.extend(frame.0.into_iter().map(in_memory));
                while queued < (4 << 20) && chunks.len() < 256 {
                    match rx.try_recv() {
                        Ok(f) => {
                            queued += f.len();
                            chunks.extend(f.0.into_iter().map(in_memory));
                        }
                        Err(_) => break,
                    }
                }
                // The flush matters for TLS: a write may leave records in the session's
                // buffer (a no-op on a TCP socket).
                if write_all_chunks(&mut wr, &mut chunks).await.is_err()
                    || wr.flush().await.is_err()
                {
                    break;
                }
            }
        });

        // Reader: frames -> waiters.
        let w = waiters.clone();
        tokio::spawn(async move {
            let mut rd = BufReader::with_capacity(1 << 20, rd);
            let mut frames = BytesMut::new();
            loop {
                let len = match rd.read_i32().await {
                    Ok(n) if n >= 4 && (n as usize) <= MAX_FRAME => n as usize,
                    _ => break,
                };
                let Ok(frame) = read_frame(&mut rd, &mut frames, len).await else {
                    break;
                };
                let frame = frame.freeze();
                let id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                let waiter = w.lock().as_mut().and_then(|m| m.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(frame);
                }
            }
            // Dropping the senders wakes every waiter with `Closed`.
            w.lock().take();
        });

        Self {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            next_id: AtomicI32::new(1),
            tx,
            waiters,
        }
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn frame<R: Request>(
        &self,
        req: &R,
        version: i16,
        id: i32,
        shared: Vec<Bytes>,
    ) -> Result<Frame> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(self.client_id.clone()));
        let hv = R::header_version(version);
        let size = header
            .compute_size(hv)
            .and_then(|h| req.compute_size(version).map(|b| h + b))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let shared_len: usize = shared.iter().map(Bytes::len).sum();
        let mut buf = Chunked::new((4 + size).saturating_sub(shared_len), shared);
        buf.put_i32(size as i32);
        header
            .encode(&mut buf, hv)
            .and_then(|_| req.encode(&mut buf, version))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        Ok(buf.finish())
    }

    /// Queues a request and returns a receiver for its raw response frame. Lets callers keep
    /// many requests in flight (pipelining) and decode later with [`Connection::decode`].
    pub async fn start<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<oneshot::Receiver<Bytes>> {
        self.start_sharing(req, version, Vec::new()).await
    }

    /// [`Connection::start`] where the `shared` byte fields of `req` (record batches) are
    /// sent as they are instead of being copied into the request's buffer.
    pub async fn start_sharing<R: Request>(
        &self,
        req: &R,
        version: i16,
        shared: Vec<Bytes>,
    ) -> Result<oneshot::Receiver<Bytes>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let frame = self.frame(req, version, id, shared)?;
        let (tx, rx) = oneshot::channel();
        match self.waiters.lock().as_mut() {
            Some(m) => {
                m.insert(id, tx);
            }
            None => return Err(Error::Closed),
        }
        self.tx.send(frame).await.map_err(|_| Error::Closed)?;
        Ok(rx)
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub async fn send_no_response<R: Request>(
        &self,
        req: &R,
        version: i16,
        shared: Vec<Bytes>,
    ) -> Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let frame = self.frame(req, version, id, shared)?;
        self.tx.send(frame).await.map_err(|_| Error::Closed)
    }

    /// Decodes a response frame of request type `R` at `version`.
    pub fn decode<R: Request>(frame: Bytes, version: i16) -> Result<R::Response> {
        let mut buf = frame;
        let key =
            ApiKey::try_from(R::KEY).map_err(|_| Error::Protocol("unknown api key".into()))?;
        let hv = key.response_header_version(version);
        ResponseHeader::decode(&mut buf, hv).map_err(|e| Error::Protocol(e.to_string()))?;
        let resp =
            R::Response::decode(&mut buf, version).map_err(|e| Error::Protocol(e.to_string()))?;
        if buf.has_remaining() {
            tracing::debug!(left = buf.remaining(), "trailing bytes in response");
        }
        Ok(resp)
    }

    /// Sends a request and waits for its decoded response.
    pub async fn call<R: Request>(&self, req: &R, version: i16) -> Result<R::Response> {
        let rx = self.start(req, version).await?;
        let frame = rx.await.map_err(|_| Error::Closed)?;
        Self::decode::<R>(frame, version)
    }
}

/// Writes every chunk (vectored writes, resumed after partial ones) and empties `chunks`.
async fn write_all_chunks<W: AsyncWriteExt + Unpin>(
    wr: &mut W,
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[first..]
            .iter()
            .take(64)
            .map(|c| IoSlice::new(c))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let c = &mut chunks[first];
            if n >= c.len() {
                n -= c.len();
                first += 1;
            } else {
                c.advance(n);
                n = 0;
            }
        }
        while first < chunks.len() && chunks[first].is_empty() {
            first += 1;
        }
    }
    chunks.clear();
    Ok(())
}

/// Reads a frame of `len` bytes into `buf` (not zeroed first) and splits it off; the
/// buffer's memory is reused once the previous frame is dropped.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    len: usize,
) -> std::io::Result<BytesMut> {
    buf.clear();
    buf.reserve(len);
    let mut rest = rd.take(len as u64);
    while buf.len() < len {
        if rest.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf.split())
}

/// A request's chunk: always in memory (only [`Chunked::new`] builds requests here; file
/// chunks are the broker's).
fn in_memory(c: Chunk) -> Bytes {
    match c {
        Chunk::Mem(b) => b,
        Chunk::File { .. } => unreachable!("requests are built from memory only"),
    }
}
