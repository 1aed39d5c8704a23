//! Accepting connections with bounds: at most `max_connections` open at once (more wait
//! in the kernel's listen queue, and the log says so), request headers must arrive within
//! `header_timeout`, and a failed `accept` (no file descriptors left) is logged and
//! retried instead of spinning. Bodies are bounded in `read_body` (size and time).
//! axum's own `serve` has neither a connection limit nor a header timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// Connections the kernel holds for `accept` (Linux caps it at `net.core.somaxconn`).
/// Tokio's `bind` asks for 1,024: when a fleet reconnects at once (a restart, 1,000 bench
/// clients) the queue overflows, the kernel drops handshakes (retried after a second) and
/// answers some with SYN cookies.
const LISTEN_BACKLOG: u32 = 4096;

/// Bind `addr` for serving, with a listen queue of [`LISTEN_BACKLOG`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restarted server can bind while old connections
    // linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How often a repeated condition (connection limit reached, accept failing) is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Serve `app` on `listener` until `shutdown`; then stop accepting, let the requests in
/// flight finish and return when every connection is closed.
pub(super) async fn serve_bounded(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut limit_logged: Option<Instant> = None;
    let mut accept_logged: Option<Instant> = None;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if limit_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    tracing::warn!(
                        max_connections,
                        "connection limit reached: {max_connections} connections are open; new ones wait in the \
                         listen queue until one closes (raise --max-connections if the clients are real)"
                    );
                    limit_logged = Some(Instant::now());
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE/ENFILE: the process or system is out of file descriptors.
                    if accept_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        tracing::warn!(error = %e, "cannot accept a connection; retrying (out of file descriptors? \
                                       raise the open-file limit or lower --max-connections)");
                        accept_logged = Some(Instant::now());
                    }
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.map(Body::new)
        });
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            // The header timer also runs while a keep-alive connection is idle, so an idle
            // connection is closed after the same time and frees its slot.
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            let mut connection = std::pin::pin!(connection);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stop.wait_for(|s| *s), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    // Every open connection holds a slot: all slots back means all connections closed.
    let _ = slots.acquire_many(max_connections.max(1) as u32).await;
}

/// The peer of a request served by [`serve_bounded`] (None in router-only tests).
pub(super) fn peer(request_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    request_extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// Raise this process's open-file limit to its hard limit, so many agents can hold
/// connections at once; logs what it did. Returns the limit in force.
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!(limit, "open-file limit");
            Some(limit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit; the management point keeps the current one");
            None
        }
    }
}
