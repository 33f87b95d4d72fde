//! TLS listeners and per-connection plumbing shared by both mocks: accept, TLS with ALPN,
//! hyper (HTTP/2 only for APNs), GOAWAY on demand, abrupt close on demand, shutdown on drop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::record::Environment;

/// Response type of every handler.
pub(crate) type Resp = Response<Full<Bytes>>;

/// Far above any legitimate push (APNs caps at 5 KiB, FCM at 4 KiB of data); only protects
/// the mock from a runaway client.
const MAX_BODY: usize = 1 << 20;

/// A request with its body already collected.
pub(crate) struct IncomingRequest {
    pub(crate) parts: hyper::http::request::Parts,
    pub(crate) body: Bytes,
}

/// The provider token a connection last authenticated with (APNs tracks token updates per
/// connection).
#[derive(Debug, Clone)]
pub(crate) struct ConnToken {
    pub(crate) token: String,
    pub(crate) iat: u64,
}

/// A verified TLS client certificate.
#[derive(Debug, Clone)]
pub(crate) struct PeerCert {
    /// The subject's `UID` (the bundle id of an Apple push certificate).
    pub(crate) uid: Option<String>,
}

/// What a handler knows about, and can do to, the connection its request came on.
pub(crate) struct ConnState {
    pub(crate) id: u64,
    pub(crate) environment: Option<Environment>,
    pub(crate) token: Mutex<Option<ConnToken>>,
    /// The verified TLS client certificate the connection presented, if any.
    pub(crate) client_cert: Option<PeerCert>,
    go_away: Notify,
    kill: Notify,
    closed: watch::Receiver<()>,
}

impl ConnState {
    /// Asks the connection task to start a graceful shutdown (GOAWAY); requests already in
    /// flight, including the caller's, still get their answers. Returns after a moment, so that
    /// the GOAWAY goes out before the caller's answer, as a server that decided to close says
    /// so first (otherwise a fast client may already have sent its next request when the GOAWAY
    /// arrives, and which connection that lands on becomes a race).
    pub(crate) async fn go_away(&self) {
        self.go_away.notify_one();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    /// Drops the connection without further answers, then resolves once it is gone.
    pub(crate) async fn disconnect(&self) {
        let mut closed = self.closed.clone();
        self.kill.notify_one();
        // Err means the connection task dropped its sender: the connection is closed.
        while closed.changed().await.is_ok() {}
    }
}

/// A mock's request handler.
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: IncomingRequest,
        conn: Arc<ConnState>,
    ) -> impl Future<Output = Resp> + Send;
}

/// Binds `127.0.0.1:0` and serves TLS connections with `handler` until `shutdown` flips.
pub(crate) async fn spawn_tls_listener<H: Handler>(
    tls: Arc<ServerConfig>,
    http2_only: bool,
    environment: Option<Environment>,
    handler: Arc<H>,
    connections: Arc<AtomicU64>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(_) => continue,
                },
                _ = shutdown.changed() => break,
            };
            // As Apple's and Google's front ends do: with Nagle on, a response written while
            // the client's ACK is delayed waits up to 40 ms, a tail neither provider has.
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            let connections = connections.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                // A failed handshake (no common ALPN, untrusted CA on the client side) is the
                // client's problem; it never becomes a connection.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let id = connections.fetch_add(1, Ordering::SeqCst) + 1;
                // The verifier already checked the chain; only the leaf's subject matters here.
                let client_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| PeerCert {
                        uid: crate::tls::subject_uid(leaf),
                    });
                serve_connection(
                    TokioIo::new(tls),
                    id,
                    client_cert,
                    http2_only,
                    environment,
                    handler,
                    shutdown,
                )
                .await;
            });
        }
    });
    Ok(addr)
}

async fn serve_connection<H, I>(
    io: I,
    id: u64,
    client_cert: Option<PeerCert>,
    http2_only: bool,
    environment: Option<Environment>,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Handler,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (closed_tx, closed_rx) = watch::channel(());
    let state = Arc::new(ConnState {
        id,
        environment,
        token: Mutex::new(None),
        client_cert,
        go_away: Notify::new(),
        kill: Notify::new(),
        closed: closed_rx,
    });
    let svc_state = state.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let state = svc_state.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = match Limited::new(body, MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return Ok::<_, Infallible>(plain(StatusCode::PAYLOAD_TOO_LARGE, ""));
                }
            };
            Ok(handler.handle(IncomingRequest { parts, body }, state).await)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if http2_only {
        builder = builder.http2_only();
    }
    builder.http2().max_concurrent_streams(1000);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut going_away = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = state.go_away.notified(), if !going_away => {
                going_away = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = state.kill.notified() => break,
            _ = shutdown.changed() => break,
        }
    }
    drop(closed_tx);
}

/// A response with a plain body (used for transport-level refusals).
pub(crate) fn plain(status: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r
}

/// A JSON response with extra headers.
pub(crate) fn json_response(status: u16, body: &str, headers: &[(String, String)]) -> Resp {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    if !body.is_empty() {
        b = b.header("content-type", "application/json; charset=UTF-8");
    }
    for (n, v) in headers {
        b = b.header(n.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::from(body.to_owned())))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad response"))
}

/// Request headers as recorded: lowercase names, arrival order, repeats kept.
pub(crate) fn header_list(parts: &hyper::http::request::Parts) -> Vec<(String, String)> {
    parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// `HTTP/2.0` / `HTTP/1.1`.
pub(crate) fn version_text(parts: &hyper::http::request::Parts) -> String {
    format!("{:?}", parts.version)
}

/// `:authority` for HTTP/2, `Host` for HTTP/1.1.
pub(crate) fn authority(parts: &hyper::http::request::Parts) -> Option<String> {
    parts.uri.authority().map(|a| a.to_string()).or_else(|| {
        parts
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    })
}
