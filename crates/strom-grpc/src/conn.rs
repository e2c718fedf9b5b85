//! The door's accept loop: a connection cap and a per-address cap (a connection over either is
//! closed at once), recovery when the process is out of descriptors, the TLS handshake off the
//! accept loop (bounded in time), and the peer address handed to every request.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use strom_broker::limits::{out_of_descriptors, IpSlot, PerIp, SpareFd};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use strom_broker::Broker;

use crate::GrpcConfig;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection (in every request's extensions).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<strom_tls::TlsStream<TcpStream>>),
}

/// One accepted connection, counted against the caps until dropped.
pub(crate) struct Conn {
    io: Io,
    peer: Peer,
    _slot: (Counted, IpSlot),
}

/// A connection counted in the door's total (and in the broker's connection gauge).
struct Counted(Arc<AtomicUsize>, Arc<Broker>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.metrics().connection(DOOR, -1);
    }
}

/// The door's name in metrics.
const DOOR: &str = "grpc";

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener` until `shutdown` (or until the server stops taking
/// them) and yields them to tonic.
pub(crate) fn incoming(
    listener: TcpListener,
    config: Arc<GrpcConfig>,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    tokio::spawn(async move {
        let open = Arc::new(AtomicUsize::new(0));
        let per_ip = PerIp::new(config.max_connections_per_ip);
        let mut spare = SpareFd::open();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.changed() => return,
            };
            let (stream, addr) = match accepted {
                Ok(a) => a,
                Err(e) if out_of_descriptors(&e) => {
                    // Give the spare descriptor back to accept and close the connection at
                    // once, so that the client is told instead of waiting in the backlog.
                    if spare.release() {
                        if let Ok((s, _)) = listener.accept().await {
                            drop(s);
                        }
                        spare.reopen();
                    }
                    broker.metrics().connection_refused(DOOR);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if open.load(Ordering::Acquire) >= config.max_connections {
                broker.metrics().connection_refused(DOOR);
                continue;
            }
            let Some(ip_slot) = per_ip.admit(addr.ip()) else {
                broker.metrics().connection_refused("grpc_per_ip");
                continue;
            };
            open.fetch_add(1, Ordering::AcqRel);
            broker.metrics().connection(DOOR, 1);
            let slot = (Counted(open.clone(), broker.clone()), ip_slot);
            let _ = stream.set_nodelay(true);
            let peer = Peer { addr };
            match config.tls.clone() {
                None => {
                    let conn = Conn {
                        io: Io::Plain(stream),
                        peer,
                        _slot: slot,
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tls.accept(stream, HANDSHAKE_TIMEOUT).await {
                            Ok(s) => {
                                let conn = Conn {
                                    io: Io::Tls(Box::new(s)),
                                    peer,
                                    _slot: slot,
                                };
                                let _ = tx.send(Ok(conn)).await;
                            }
                            Err(e) => {
                                tracing::debug!(%addr, error = %e, "gRPC TLS handshake failed")
                            }
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
