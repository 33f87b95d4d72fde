//! One connection from `res_push.so`: handshake, then jobs run concurrently with their outcomes
//! funnelled through a single writer.

use std::{io, panic::AssertUnwindSafe, sync::Arc};

use futures::{FutureExt, SinkExt, StreamExt};
use res_push_proto::{
    ClientFrame, Job, MAX_FRAME_LEN, MIN_PROTOCOL_VERSION, Outcome, PROTOCOL_VERSION, ServerFrame,
    decode_client_frame, encode_body, negotiate,
};
use tokio::{
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::mpsc,
    task::JoinSet,
    time::Instant,
};
use tokio_util::{
    bytes::Bytes,
    codec::{FramedRead, FramedWrite, LengthDelimitedCodec, length_delimited},
    sync::CancellationToken,
};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::{
    Config,
    jobs::{Dispatcher, Session, Ticket, deadline_from},
    metrics::GaugeGuard,
    stats::Counters,
};

/// Frames queued for the writer. Small: when the peer stops reading, jobs should stall on a full
/// queue (and the reader on the job limit) rather than buffer without bound.
const OUTBOX: usize = 64;
/// Most frames written with one flush, so one busy stretch cannot delay the first of them long.
const WRITE_BATCH: usize = 64;

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) counters: Counters,
}

/// How a connection's read side ended, which decides the fate of jobs still running.
enum End {
    /// Peer half-closed or we are shutting down: finish the jobs so their outcomes get out.
    Drain,
    /// The peer can no longer be written to: nobody will read the outcomes.
    Abort,
    /// The peer broke the protocol: it gets this message in an `Error` frame, and no outcomes.
    Violation(String),
}

/// Why the next frame could not be had.
enum ReadError {
    /// The peer broke the protocol; it gets an `Error` frame with this message.
    Protocol(String),
    /// The transport failed; there is nobody left to tell.
    Transport(io::Error),
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

/// Serves one connection until the peer leaves, breaks the protocol, or `shutdown` fires.
pub(crate) async fn serve(stream: UnixStream, shared: Arc<Shared>, shutdown: CancellationToken) {
    let _open = GaugeGuard::inc(shared.dispatcher.metrics().module_connections());
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(OUTBOX);
    // Cancelled by the writer when the peer can no longer be written to.
    let peer_gone = CancellationToken::new();
    tokio::join!(
        read_side(
            FramedRead::new(rd, codec()),
            tx,
            &shared,
            &shutdown,
            &peer_gone
        ),
        write_side(FramedWrite::new(wr, codec()), rx, &peer_gone),
    );
}

/// The single writer: frames go out whole and in the order queued, whichever task queued them.
async fn write_side(
    mut sink: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<ServerFrame>,
    peer_gone: &CancellationToken,
) {
    while let Some(first) = rx.recv().await {
        // Frames already queued behind this one go out in the same write: under load that is
        // one system call (and one wake-up of the module's reader) for many outcomes.
        let mut frame = Some(first);
        let mut batched = 0;
        while let Some(next) = frame.take() {
            let body = match encode_body(&next) {
                Ok(body) => body,
                Err(e) => {
                    error!("cannot encode {next:?}: {e}");
                    frame = rx.try_recv().ok();
                    continue;
                }
            };
            if let Err(e) = sink.feed(Bytes::from(body)).await {
                debug!("write failed: {e}");
                peer_gone.cancel();
                return;
            }
            batched += 1;
            if batched < WRITE_BATCH {
                frame = rx.try_recv().ok();
            }
        }
        if let Err(e) = SinkExt::<Bytes>::flush(&mut sink).await {
            debug!("write failed: {e}");
            peer_gone.cancel();
            return;
        }
    }
    // Every sender is gone, so nothing more will be said: shut the write half down so the peer
    // sees end-of-stream right after the last frame.
    if let Err(e) = SinkExt::<Bytes>::close(&mut sink).await {
        debug!("closing: {e}");
    }
}

async fn next_frame(
    reader: &mut FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
) -> Result<Option<ClientFrame>, ReadError> {
    let body = match reader.next().await {
        None => return Ok(None),
        Some(Ok(body)) => body,
        Some(Err(e)) => {
            let oversized = e
                .get_ref()
                .is_some_and(|inner| inner.is::<length_delimited::LengthDelimitedCodecError>());
            return Err(if oversized {
                ReadError::Protocol(format!("frame exceeds the {MAX_FRAME_LEN}-byte limit"))
            } else {
                ReadError::Transport(e)
            });
        }
    };
    decode_client_frame(&body)
        .map(Some)
        .map_err(|e| ReadError::Protocol(e.to_string()))
}

/// Sends an `Error` frame (best-effort: if the writer is gone, so is the peer) before closing.
async fn refuse(shared: &Shared, tx: &mpsc::Sender<ServerFrame>, message: String) {
    shared.counters.protocol_error();
    warn!("closing connection: {message}");
    let _ = tx.send(ServerFrame::Error { message }).await;
}

/// Reads the `Hello` and answers it; `false` means the connection is to be closed.
async fn handshake(
    reader: &mut FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    tx: &mpsc::Sender<ServerFrame>,
    shared: &Shared,
) -> bool {
    let limit = shared.config.handshake_timeout;
    let Ok(first) = tokio::time::timeout(limit, next_frame(reader)).await else {
        refuse(shared, tx, format!("no hello within {limit:?}")).await;
        return false;
    };
    let (min_version, max_version, client, client_version, node) = match first {
        Ok(Some(ClientFrame::Hello {
            min_version,
            max_version,
            client,
            client_version,
            node,
        })) => (min_version, max_version, client, client_version, node),
        Ok(Some(ClientFrame::Submit { id, .. })) => {
            refuse(shared, tx, format!("submit {id} before hello")).await;
            return false;
        }
        Ok(None) => {
            debug!("peer left before the handshake");
            return false;
        }
        Err(ReadError::Protocol(message)) => {
            refuse(shared, tx, message).await;
            return false;
        }
        Err(ReadError::Transport(e)) => {
            debug!("read failed: {e}");
            return false;
        }
    };
    let Some(version) = negotiate(min_version, max_version) else {
        let reason = format!(
            "no common protocol version: client speaks {min_version}..={max_version}, \
             sidecar speaks {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}"
        );
        warn!(%client, %client_version, %node, "{reason}");
        let _ = tx.send(ServerFrame::Reject { reason }).await;
        return false;
    };
    info!(%client, %client_version, %node, version, "handshake done");
    let server_version = env!("CARGO_PKG_VERSION").to_owned();
    let _ = tx
        .send(ServerFrame::Welcome {
            version,
            server_version,
        })
        .await;
    true
}

async fn read_side(
    mut reader: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    tx: mpsc::Sender<ServerFrame>,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    peer_gone: &CancellationToken,
) {
    let greeted = tokio::select! {
        () = shutdown.cancelled() => false,
        () = peer_gone.cancelled() => false,
        greeted = handshake(&mut reader, &tx, shared) => greeted,
    };
    if !greeted {
        return;
    }

    let session = Arc::new(Session::new());
    let mut jobs = JoinSet::new();
    let end = loop {
        let room = jobs.len() < shared.config.max_jobs_per_connection;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break End::Drain,
            () = peer_gone.cancelled() => break End::Abort,
            Some(joined) = jobs.join_next(), if !jobs.is_empty() => {
                if let Err(e) = joined {
                    error!("job task failed: {e}");
                }
            }
            // When full, stop reading: the peer's writes back up instead of our memory.
            frame = next_frame(&mut reader), if room => match frame {
                Ok(Some(ClientFrame::Submit { id, deadline_ms, job })) => {
                    // The deadline counts from receipt, not from when a busy connection gets
                    // round to the job.
                    let deadline = deadline_from(Instant::now(), deadline_ms);
                    // In frame order, so a push sees the configuration sent before it.
                    let ticket = shared.dispatcher.admit(&session, &job).await;
                    spawn_job(&mut jobs, shared, &session, &tx, id, deadline, job, ticket);
                }
                Ok(Some(ClientFrame::Hello { .. })) => {
                    break End::Violation("hello after the handshake".to_owned());
                }
                Ok(None) => {
                    debug!("peer finished sending");
                    break End::Drain;
                }
                Err(ReadError::Protocol(message)) => break End::Violation(message),
                Err(ReadError::Transport(e)) => {
                    debug!("read failed: {e}");
                    break End::Abort;
                }
            },
        }
    };
    match end {
        End::Drain => {
            while let Some(joined) = jobs.join_next().await {
                if let Err(e) = joined {
                    error!("job task failed: {e}");
                }
            }
        }
        End::Abort => jobs.shutdown().await,
        End::Violation(message) => {
            // Abort first, so that the Error frame is the last thing the peer reads.
            jobs.shutdown().await;
            refuse(shared, &tx, message).await;
        }
    }
}

/// Starts one job; its outcome goes to the writer whenever it is ready, in whatever order.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
fn spawn_job(
    jobs: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    tx: &mpsc::Sender<ServerFrame>,
    id: u64,
    deadline: Instant,
    job: Job,
    ticket: Ticket,
) {
    let shared = Arc::clone(shared);
    let session = Arc::clone(session);
    let tx = tx.clone();
    let task = async move {
        // Boxed: tokio copies a task's future when it is spawned and when it finishes, and a
        // job's future is kilobytes (that copying was a tenth of the sidecar's CPU per push).
        let run = Box::pin(shared.dispatcher.run(&session, job, ticket, deadline));
        // Exactly one outcome per submit, even when a job has a bug.
        let outcome = AssertUnwindSafe(run)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                error!("job panicked");
                Outcome::Failed {
                    class: res_push_proto::FailureClass::Other,
                    reason: "internal error in the sidecar".to_owned(),
                }
            });
        debug!(?outcome, "job done");
        shared.counters.job_finished(&outcome);
        let _ = tx.send(ServerFrame::Outcome { id, outcome }).await;
    };
    jobs.spawn(task.instrument(info_span!("job", id)));
}
