//! The accept loop, plain or TLS: every socket counts against the connection limit from the
//! moment it is accepted, a socket that has not sent a complete HTTP request is *pending*
//! (at most `max_pending_per_ip` per address), and a TLS handshake or request header that
//! does not arrive in time closes the socket (slow-loris clients hold nothing for long).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::RelayError;
use crate::metrics::Metrics;

/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's limits (from the relay's `Config`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ListenLimits {
    /// Sockets and WebSocket connections together.
    pub(crate) max_connections: usize,
    /// Sockets per IP address that have not sent a complete request yet.
    pub(crate) max_pending_per_ip: usize,
    /// Time allowed for a TLS handshake.
    pub(crate) handshake_timeout: Duration,
    /// Time allowed for a request's header, from the socket's accept or the previous
    /// response.
    pub(crate) header_read_timeout: Duration,
}

/// What decides whether a socket is taken: the limits, the sockets open, and the WebSocket
/// connections (counted in the metrics).
pub(crate) struct Gate {
    pub(crate) limits: ListenLimits,
    pub(crate) sockets: Arc<Sockets>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Sockets not (yet) handed over as WebSocket connections.
#[derive(Default)]
pub(crate) struct Sockets {
    open: AtomicU64,
    pending: Mutex<HashMap<IpAddr, usize>>,
}

impl Sockets {
    /// Open sockets that are not WebSocket connections (pending ones included).
    pub(crate) fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// An accepted socket: counted while it lives.
struct Open(Arc<Sockets>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that has not sent a complete request yet.
struct Pending(Arc<Sockets>, IpAddr);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(mut p) = self.0.pending.lock()
            && let Some(n) = p.get_mut(&self.1)
        {
            *n -= 1;
            if *n == 0 {
                p.remove(&self.1);
            }
        }
    }
}

/// Counts a new socket from `ip`, or refuses it (and says why) when over a limit.
fn admit(
    sockets: &Arc<Sockets>,
    metrics: &Metrics,
    limits: &ListenLimits,
    ip: IpAddr,
) -> Result<(Open, Pending), &'static str> {
    if sockets.open() + metrics.connections() >= limits.max_connections as u64 {
        return Err("too_many_connections");
    }
    let Ok(mut pending) = sockets.pending.lock() else {
        return Err("internal");
    };
    let n = pending.entry(ip).or_default();
    if *n >= limits.max_pending_per_ip {
        return Err("too_many_pending");
    }
    *n += 1;
    drop(pending);
    sockets.open.fetch_add(1, Ordering::Relaxed);
    Ok((Open(sockets.clone()), Pending(sockets.clone(), ip)))
}

/// Serves `app` on `listener` (through TLS if `tls`) until `shutdown`, then tells open
/// connections to finish and waits for them (at most [`DRAIN_TIMEOUT`]).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    gate: Gate,
    shutdown: impl std::future::Future<Output = ()> + Send,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), RelayError> {
    let Gate {
        limits,
        sockets,
        metrics,
    } = gate;
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let (open, pending) = match admit(&sockets, &metrics, &limits, peer.ip()) {
                    Ok(guards) => guards,
                    Err(reason) => {
                        metrics.reject(reason);
                        continue;
                    }
                };
                let tls = tls.clone();
                let app = app.clone();
                let stop = stopped.clone();
                connections.spawn(async move {
                    let _open = open;
                    match tls {
                        None => serve_socket(tcp, peer, app, limits, pending, stop).await,
                        Some(acceptor) => {
                            let handshake = acceptor.accept(tcp);
                            let Ok(Ok(stream)) =
                                tokio::time::timeout(limits.handshake_timeout, handshake).await
                            else {
                                return;
                            };
                            serve_socket(stream, peer, app, limits, pending, stop).await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stopped.borrow_and_update();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// HTTP/1.1 on one socket, WebSocket upgrades included. The socket stops being pending with
/// its first complete request.
async fn serve_socket<IO>(
    io: IO,
    peer: SocketAddr,
    app: Router,
    limits: ListenLimits,
    pending: Pending,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let pending = Arc::new(Mutex::new(Some(pending)));
    let waiting = pending.clone();
    let app = app
        .layer(axum::Extension(ConnectInfo::<SocketAddr>(peer)))
        .layer(axum::middleware::map_request(
            move |request: axum::extract::Request| {
                if let Ok(mut p) = pending.lock() {
                    p.take();
                }
                std::future::ready(request)
            },
        ));
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    // hyper times a header out only once its first byte has come: a silent socket, or one
    // whose first request is unfinished, is closed here when the same time is up.
    let first_request = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(first_request);
    let mut armed = true;
    loop {
        tokio::select! {
            _ = &mut conn => return,
            () = &mut first_request, if armed => {
                if waiting.lock().map_or(true, |p| p.is_some()) {
                    return;
                }
                armed = false;
            }
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_sockets_are_capped_per_address_and_released() {
        let sockets = Arc::new(Sockets::default());
        let metrics = Metrics::default();
        let limits = ListenLimits {
            max_connections: 3,
            max_pending_per_ip: 2,
            handshake_timeout: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(1),
        };
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let first = admit(&sockets, &metrics, &limits, a).unwrap();
        let second = admit(&sockets, &metrics, &limits, a).unwrap();
        assert_eq!(
            admit(&sockets, &metrics, &limits, a).err(),
            Some("too_many_pending")
        );
        // Another address has its own allowance, but the total is capped.
        let third = admit(&sockets, &metrics, &limits, b).unwrap();
        assert_eq!(
            admit(&sockets, &metrics, &limits, b).err(),
            Some("too_many_connections")
        );
        // A request arrived on the first (no longer pending), then it closed.
        drop(first.1);
        drop(first.0);
        let again = admit(&sockets, &metrics, &limits, a).unwrap();
        assert_eq!(sockets.open(), 3);
        drop((second, third, again));
        assert_eq!(sockets.open(), 0);
        assert!(sockets.pending.lock().unwrap().is_empty());
    }
}
