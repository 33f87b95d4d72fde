//! The HTTP/2 client of one origin (an APNs environment, the FCM endpoint), on hyper directly.
//!
//! reqwest used to sit here. Its layers around hyper (redirect policy re-parsing the URL, pool
//! checkout keyed by origin, per-request service clones and header maps) were most of the
//! sidecar's CPU time per push, and it could only open a connection by sending a request. A
//! provider endpoint needs none of that: one origin, one long-lived HTTP/2 connection whose
//! streams every push shares.
//!
//! - **One connection, shared.** Each request clones the connection's sender (a channel
//!   handle) and opens a stream on it; hyper queues streams beyond the server's
//!   `SETTINGS_MAX_CONCURRENT_STREAMS`.
//! - **Connected once, by whoever needs it first.** A single-flight lock: a prewarm and the
//!   pushes arriving during it share the one handshake.
//! - **Replaced when closed.** A connection that received GOAWAY or failed is closed for new
//!   streams; the next request dials a new one. A request that the closing connection never
//!   sent is sent on the new connection right away (as hyper-util's pool does); one caught in
//!   flight fails, and the retry loop in [`jobs`](crate::jobs) covers it.
//! - **PINGs** every minute, also while idle, find a connection that died silently before a
//!   call push has to.

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http::{
    HeaderValue, Request, Response, Uri,
    header::USER_AGENT,
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body_util::Full;
use hyper::{body::Incoming, client::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use reqwest::Url;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::bytes::Bytes;
use tracing::debug;

/// Longest the TCP connect, TLS and HTTP/2 handshakes may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// PING interval; Apple asks providers to keep connections open rather than reconnect per
/// burst.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// A PING unanswered this long closes the connection.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A request body: the whole payload, sent in one DATA frame.
pub(crate) type Body = Full<Bytes>;

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum Error {
    /// No connection could be opened.
    Connect(String),
    /// The connection failed or closed with the request on it, or the stream was reset.
    Request(hyper::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(text) => write!(f, "cannot connect: {text}"),
            Self::Request(e) => f.write_str(&crate::classify::describe(e)),
        }
    }
}

/// An open connection: its sender, and a number to tell it from its successor.
#[derive(Clone)]
struct Conn {
    id: u64,
    sender: http2::SendRequest<Body>,
}

/// The HTTP/2 client of one origin.
pub(crate) struct Origin {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    /// `None` for `http://`: HTTP/2 with prior knowledge (h2c), for test endpoints.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    user_agent: HeaderValue,
    current: Mutex<Option<Conn>>,
    /// Held while a connection is being opened.
    connecting: tokio::sync::Mutex<()>,
    opened: AtomicU64,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Origin {
    /// The client of `url`'s origin (its path is the caller's business). `tls` must offer
    /// ALPN `h2`.
    pub(crate) fn new(url: &Url, tls: rustls::ClientConfig) -> Result<Self, String> {
        let host = url
            .host_str()
            .ok_or_else(|| format!("{url}: no host"))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{url}: no port"))?;
        let (scheme, tls) = match url.scheme() {
            "https" => {
                // `Url` keeps IPv6 literals in brackets; a server name has none.
                let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
                    .map_err(|e| format!("{url}: {e}"))?
                    .to_owned();
                (
                    Scheme::HTTPS,
                    Some((TlsConnector::from(Arc::new(tls)), name)),
                )
            }
            "http" => (Scheme::HTTP, None),
            other => return Err(format!("{url}: scheme {other} is not http(s)")),
        };
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        Ok(Self {
            scheme,
            authority: Authority::try_from(authority.as_str())
                .map_err(|e| format!("{url}: {e}"))?,
            host,
            port,
            tls,
            user_agent: HeaderValue::from_static(concat!(
                "res-push-sidecar/",
                env!("CARGO_PKG_VERSION")
            )),
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            opened: AtomicU64::new(0),
        })
    }

    /// The absolute URI of `path` (with any query) on this origin.
    pub(crate) fn uri(&self, path: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::try_from(path)?)
            .build()
    }

    fn open_conn(&self) -> Option<Conn> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|c| !c.sender.is_closed())
            .cloned()
    }

    /// Forgets connection `id` if it is still the current one.
    fn forget(&self, id: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| c.id == id) {
            *current = None;
        }
    }

    /// The open connection, opening one if there is none. Returns whether it was opened here.
    async fn conn(&self) -> Result<(Conn, bool), Error> {
        if let Some(conn) = self.open_conn() {
            return Ok((conn, false));
        }
        let _connecting = self.connecting.lock().await;
        // Whoever held the lock before may have opened it.
        if let Some(conn) = self.open_conn() {
            return Ok((conn, false));
        }
        // Boxed: dialing (DNS, TCP, TLS, handshake) is a large future, and inline it would make
        // every push's future that size, copied whole each time a task is spawned or finishes.
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, Box::pin(self.dial()))
            .await
            .map_err(|_| Error::Connect(format!("no connection within {CONNECT_TIMEOUT:?}")))??;
        let conn = Conn {
            id: self.opened.fetch_add(1, Ordering::Relaxed) + 1,
            sender,
        };
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok((conn, true))
    }

    /// Opens the connection if none is open; returns whether one was opened.
    pub(crate) async fn connect(&self) -> Result<bool, Error> {
        self.conn().await.map(|(_, opened)| opened)
    }

    async fn dial(&self) -> Result<http2::SendRequest<Body>, Error> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| Error::Connect(format!("{}: {e}", self.host)))?
            .collect();
        let mut last = format!("{}: no address", self.host);
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        let tcp = tcp.ok_or(Error::Connect(last))?;
        // Pushes are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let builder = || {
            let mut b = http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .keep_alive_interval(KEEP_ALIVE_INTERVAL)
                .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
                .keep_alive_while_idle(true);
            b
        };
        let handshake_failed = |e: hyper::Error| Error::Connect(crate::classify::describe(&e));
        match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Error::Connect(format!("TLS: {e}")))?;
                if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(Error::Connect(
                        "the server did not agree to HTTP/2 (ALPN h2)".to_owned(),
                    ));
                }
                let (sender, conn) = builder()
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(handshake_failed)?;
                tokio::spawn(drive(conn));
                Ok(sender)
            }
            None => {
                let (sender, conn) = builder()
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(handshake_failed)?;
                tokio::spawn(drive(conn));
                Ok(sender)
            }
        }
    }

    /// Sends `req` (an absolute URI from [`uri`](Self::uri)) and returns the response head;
    /// the body is still to be read.
    pub(crate) async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, Error> {
        req.headers_mut()
            .insert(USER_AGENT, self.user_agent.clone());
        let mut fresh_retry = true;
        loop {
            let (mut conn, _) = self.conn().await?;
            match conn.sender.try_send_request(req).await {
                Ok(response) => return Ok(response),
                Err(mut e) => {
                    if conn.sender.is_closed() {
                        self.forget(conn.id);
                    }
                    match e.take_message() {
                        // Never sent: the connection was closing. Once more on a new one.
                        Some(unsent) if fresh_retry => {
                            debug!("request not sent on a closing connection; retrying");
                            self.forget(conn.id);
                            fresh_retry = false;
                            req = unsent;
                        }
                        _ => return Err(Error::Request(e.into_error())),
                    }
                }
            }
        }
    }
}

/// Drives a connection until it ends.
async fn drive<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), hyper::Error>>,
{
    if let Err(e) = conn.await {
        debug!("HTTP/2 connection ended: {}", crate::classify::describe(&e));
    }
}
