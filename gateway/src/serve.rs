//! Serving HTTP/1.1 so that slow or hostile clients cannot hold the gateway's resources:
//! a client that does not finish its headers within `header_read_timeout` is disconnected,
//! a body that does not arrive within `body_read_timeout` gets 408, and at most
//! `max_connections` connections are open at once (further ones wait in the kernel's
//! backlog). `axum::serve` sets none of these, hence this accept loop.
//! Shutdown stops accepting, lets in-flight requests finish, and gives up after a deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use order_core::runtime::shutdown::ShutdownListener;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::error::ApiError;

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub header_read_timeout_ms: u64,
    /// The request line and headers together; beyond it the client gets 431.
    pub max_header_bytes: usize,
    /// More header fields than this: 431.
    pub max_headers: usize,
    pub body_read_timeout_ms: u64,
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
}

/// Serve `router` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpSettings,
    mut shutdown: ShutdownListener,
) -> anyhow::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(settings.header_read_timeout_ms))
        .max_header_size(settings.max_header_bytes)
        .max_headers(settings.max_headers);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit?,
            _ = shutdown.recv() => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            router.clone().oneshot(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout, garbage): nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_millis(settings.shutdown_grace_ms)) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
    Ok(())
}

/// Read the whole body (at most `limit` bytes) within the deadline before the handler runs:
/// 408 `body_timeout` for a body that trickles in, 413 `body_too_large` beyond the limit.
pub async fn read_body_within_deadline(
    State((deadline, limit)): State<(Duration, usize)>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await {
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time",
        )
        .into_response(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            ApiError::body_too_large().into_response()
        }
        Ok(Err(_)) => {
            ApiError::bad_request("unreadable_body", "the request body could not be read").into_response()
        }
        Ok(Ok(collected)) => {
            next.run(Request::from_parts(parts, Body::from(collected.to_bytes())))
                .await
        }
    }
}
