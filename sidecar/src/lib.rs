//! `res-push-sidecar`: the daemon `res_push.so` hands push jobs to over a Unix socket.
//!
//! The binary is a thin wrapper: it parses options, calls [`bind`], and hands the listener to
//! [`run`] together with a future that completes on SIGTERM/SIGINT. Everything else lives here so
//! the tests can drive a real server in-process.
//!
//! The protocol is [`res_push_proto`]'s; job kinds are executed by [`jobs::Dispatcher`]. Pushes
//! go out through per-app clients ([`apps`]): APNs over HTTP/2 with token or certificate auth,
//! FCM HTTP v1 with a service account. Metrics can be served for Prometheus ([`run_with`]).

use std::{future::Future, io, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

mod apns;
pub mod apps;
mod classify;
pub mod clock;
mod conn;
mod credential;
mod fcm;
mod h2;
pub mod jobs;
pub mod metrics;
pub mod payload;
pub mod retry;
mod socket;
mod stats;
mod tls;

pub use apns::{PRODUCTION_URL as APNS_PRODUCTION_URL, SANDBOX_URL as APNS_SANDBOX_URL};
pub use clock::{Clock, ManualClock, TimeSource};
pub use fcm::FCM_URL;
pub use metrics::Metrics;
pub use retry::RetryPolicy;
pub use socket::{BindError, SocketOptions, bind};
pub use stats::Stats;

/// How the server behaves, independent of where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Most connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Most jobs running at once on one connection; past it the connection is not read until a
    /// job finishes, which pushes back on the client instead of growing memory.
    pub max_jobs_per_connection: usize,
    /// How long a new connection may take to send its `Hello` before it is dropped, so that idle
    /// connections cannot hold every connection slot.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for connections to finish their jobs before aborting them.
    pub shutdown_grace: Duration,
    /// Most pushes out to providers at once, across all connections (`--max-inflight`). Pushes
    /// beyond it wait; one still waiting at its deadline is answered `Expired`, never sent.
    pub max_inflight: usize,
    /// How passing provider failures are retried.
    pub retry: RetryPolicy,
    /// The clocks credentials are stamped and aged by (tests inject a [`ManualClock`]).
    pub clock: Clock,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_connections: 16,
            max_jobs_per_connection: 1024,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            max_inflight: 256,
            retry: RetryPolicy::default(),
            clock: Clock::system(),
        }
    }
}

/// Serves connections on `listener` until `shutdown` completes, then stops gracefully.
///
/// On shutdown: stop accepting, let each connection finish the jobs it has (no new ones are
/// read), wait up to [`Config::shutdown_grace`] for that, abort whatever is left, and remove the
/// socket file. Returns what was done.
pub async fn run(listener: UnixListener, config: Config, shutdown: impl Future) -> Stats {
    run_with(listener, config, None, shutdown).await
}

/// Like [`run`], and also serves Prometheus metrics (`GET /metrics`) on `metrics` when given.
pub async fn run_with(
    listener: UnixListener,
    config: Config,
    metrics: Option<TcpListener>,
    shutdown: impl Future,
) -> Stats {
    let socket = socket::SocketFile::of(&listener);
    let grace = config.shutdown_grace;
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let dispatcher = jobs::Dispatcher::new(&config, Arc::new(Metrics::new()));
    let stopping = CancellationToken::new();
    if let Some(metrics) = metrics {
        let task = metrics::serve(metrics, Arc::clone(dispatcher.metrics()), stopping.clone());
        tokio::spawn(task.instrument(info_span!("metrics")));
    }
    let shared = Arc::new(conn::Shared {
        config,
        dispatcher,
        counters: Default::default(),
    });
    let mut connections = JoinSet::new();
    let mut next_id: u64 = 0;
    match &socket {
        Some(socket) => info!(path = %socket.path().display(), "listening"),
        None => info!("listening"),
    }

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                report(joined);
            }
            accepted = accept(&listener, &slots) => match accepted {
                Ok((stream, slot)) => {
                    next_id += 1;
                    shared.counters.connection_opened();
                    let span = info_span!("conn", id = next_id);
                    let task = serve(stream, slot, Arc::clone(&shared), stopping.child_token());
                    connections.spawn(task.instrument(span));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning, and keep serving the
                    // connections we have.
                    error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }

    info!(connections = connections.len(), "shutting down");
    drop(listener);
    stopping.cancel();
    let drained = tokio::time::timeout(grace, async {
        while let Some(joined) = connections.join_next().await {
            report(joined);
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            connections = connections.len(),
            "grace period of {grace:?} over; aborting the remaining connections"
        );
        connections.shutdown().await;
    }
    if let Some(socket) = socket {
        socket.remove();
    }
    let stats = shared.counters.snapshot();
    info!(?stats, "stopped");
    stats
}

async fn accept(
    listener: &UnixListener,
    slots: &Arc<Semaphore>,
) -> io::Result<(UnixStream, OwnedSemaphorePermit)> {
    // Take the slot before accepting, so that over the limit clients wait in the kernel's
    // backlog rather than in a task of ours.
    let slot = Arc::clone(slots)
        .acquire_owned()
        .await
        .map_err(|_| io::Error::other("connection limiter closed"))?;
    let (stream, _addr) = listener.accept().await?;
    Ok((stream, slot))
}

async fn serve(
    stream: UnixStream,
    slot: OwnedSemaphorePermit,
    shared: Arc<conn::Shared>,
    stopping: CancellationToken,
) {
    match stream.peer_cred() {
        Ok(cred) => info!(pid = cred.pid(), uid = cred.uid(), "connection opened"),
        Err(_) => info!("connection opened"),
    }
    conn::serve(stream, shared, stopping).await;
    info!("connection closed");
    drop(slot);
}

fn report(joined: Result<(), tokio::task::JoinError>) {
    match joined {
        Ok(()) => {}
        Err(e) if e.is_cancelled() => debug!("connection task aborted"),
        Err(e) => error!("connection task failed: {e}"),
    }
}
