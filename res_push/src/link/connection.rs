//! One connection to the sidecar: handshake, then the serve loop of the link thread.

use std::collections::HashMap;
use std::io::{BufReader, ErrorKind, Write as _};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select, unbounded};
use res_push_proto::{
    ClientFrame, FrameError, Job, MAX_BATCH_BYTES, MAX_BATCH_FRAMES, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION, ServerFrame, encode_frame_into, read_frame, write_frame,
};

use std::sync::Arc;

use super::{Control, Done, End, LinkError, Request, Shared};
use crate::ast::thread;

/// Bound on the handshake and on each write: a wedged sidecar must not wedge the link thread
/// (or `module unload`, which waits for it).
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often deadlines and heartbeats are checked.
const TICK: Duration = Duration::from_millis(250);
/// Extra time granted after a job's deadline before the link stops waiting for its outcome:
/// the sidecar enforces the deadline itself and should answer `expired` first.
const GRACE: Duration = Duration::from_secs(1);
/// Time the sidecar gets to set up the apps (reading key files, building clients).
const CONFIGURE_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) struct Connection {
    stream: UnixStream,
    pub(crate) version: u32,
    pub(crate) server_version: String,
}

struct Pending {
    deadline: Instant,
    done: Done,
}

impl Connection {
    /// Connects and performs the handshake.
    pub(crate) fn open(path: &Path) -> Result<Connection, String> {
        let mut stream = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let hello = ClientFrame::Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            client: "res_push".into(),
            client_version: env!("CARGO_PKG_VERSION").into(),
            node: crate::ast::system_name(),
        };
        write_frame(&mut stream, &hello).map_err(|e| format!("handshake: {e}"))?;
        match read_frame::<_, ServerFrame>(&mut stream) {
            Ok(ServerFrame::Welcome {
                version,
                server_version,
            }) => {
                stream.set_read_timeout(None).map_err(|e| e.to_string())?;
                Ok(Connection {
                    stream,
                    version,
                    server_version,
                })
            }
            Ok(ServerFrame::Reject { reason }) => {
                Err(format!("sidecar refused the handshake: {reason}"))
            }
            Ok(other) => Err(format!("unexpected handshake answer: {other:?}")),
            Err(e) => Err(format!("handshake: {e}")),
        }
    }

    /// Runs until shutdown, a reconnect request, or the connection fails.
    pub(crate) fn serve(
        mut self,
        shared: &Arc<Shared>,
        jobs: &Receiver<Request>,
        control: &Receiver<Control>,
    ) -> End {
        let reader_stream = match self.stream.try_clone() {
            Ok(s) => s,
            Err(e) => return End::Lost(format!("cannot clone socket: {e}")),
        };
        let (frames_tx, frames) = unbounded();
        // A separate reader keeps the link thread free to write jobs while outcomes arrive.
        let reader = match thread::spawn(c"res_push reader", move || {
            // Buffered: the sidecar writes the outcomes it has ready in one go, and unbuffered
            // each would cost two system calls (header, then body).
            let mut reader_stream = BufReader::with_capacity(64 * 1024, reader_stream);
            loop {
                let frame = read_frame::<_, ServerFrame>(&mut reader_stream);
                let last = frame.is_err();
                if frames_tx.send(frame).is_err() || last {
                    break;
                }
            }
        }) {
            Ok(t) => t,
            Err(e) => return End::Lost(format!("cannot start reader thread: {e}")),
        };

        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let mut next_id: u64 = 1;
        // The sidecar learns our apps before any push can reach it (frames are handled in order).
        let configure = ClientFrame::Submit {
            id: next_id,
            deadline_ms: CONFIGURE_DEADLINE.as_millis() as u64,
            job: shared.configure_job(),
        };
        pending.insert(
            next_id,
            Pending {
                deadline: Instant::now() + CONFIGURE_DEADLINE,
                done: shared.configure_done(),
            },
        );
        next_id += 1;
        let early_end = write_frame(&mut self.stream, &configure)
            .err()
            .map(|e| End::Lost(format!("write: {e}")));
        let heartbeat_every = shared.config().heartbeat_interval;
        // The outstanding heartbeat, if any: (job id, when sent).
        let mut heartbeat: Option<(u64, Instant)> = None;
        let mut last_traffic = Instant::now();
        let ticker = crossbeam_channel::tick(TICK);
        let mut batch = Vec::new();

        let end = if let Some(end) = early_end {
            end
        } else {
            loop {
                shared.in_flight.store(pending.len(), Ordering::Relaxed);
                select! {
                    recv(jobs) -> req => {
                        let Ok(req) = req else { break End::Shutdown };
                        let now = Instant::now();
                        // The jobs queued behind this one go out in the same write: under a burst
                        // (a ring group, a reload's refresh pushes) one system call and one
                        // wake-up of the sidecar per batch, not per job.
                        batch.clear();
                        let mut next = Some(req);
                        let mut taken = 0;
                        while let Some(req) = next.take() {
                            taken += 1;
                            if req.deadline <= now {
                                shared.finish(req.done, Err(LinkError::TimedOut));
                            } else {
                                let frame = ClientFrame::Submit {
                                    id: next_id,
                                    deadline_ms: (req.deadline - now).as_millis() as u64,
                                    job: req.job,
                                };
                                match encode_frame_into(&mut batch, &frame) {
                                    Ok(()) => {
                                        pending.insert(next_id, Pending { deadline: req.deadline, done: req.done });
                                        next_id += 1;
                                    }
                                    // Nothing of it went on the wire; the link stays up.
                                    Err(e) => shared.finish(req.done, Err(LinkError::Unsendable(e.to_string()))),
                                }
                            }
                            if taken < MAX_BATCH_FRAMES && batch.len() < MAX_BATCH_BYTES {
                                next = jobs.try_recv().ok();
                            }
                        }
                        if batch.is_empty() {
                            continue;
                        }
                        if let Err(e) = self.stream.write_all(&batch) {
                            break End::Lost(format!("write: {e}"));
                        }
                        last_traffic = now;
                    }
                    recv(frames) -> frame => {
                        last_traffic = Instant::now();
                        match frame {
                            Ok(Ok(ServerFrame::Outcome { id, outcome })) => {
                                if heartbeat.is_some_and(|(hb, _)| hb == id) {
                                    heartbeat = None;
                                } else if let Some(p) = pending.remove(&id) {
                                    shared.finish(p.done, Ok(outcome));
                                } else {
                                    tracing::debug!("outcome for job {id} arrived after it was given up");
                                }
                            }
                            Ok(Ok(ServerFrame::Error { message })) => {
                                break End::Lost(format!("sidecar reported a protocol error: {message}"));
                            }
                            Ok(Ok(other)) => break End::Lost(format!("unexpected frame from sidecar: {other:?}")),
                            Ok(Err(FrameError::Closed)) => break End::Lost("sidecar closed the connection".into()),
                            Ok(Err(FrameError::Io(e))) if e.kind() == ErrorKind::UnexpectedEof => {
                                break End::Lost("sidecar closed the connection mid-frame".into());
                            }
                            Ok(Err(e)) => break End::Lost(e.to_string()),
                            Err(_) => break End::Lost("reader thread ended".into()),
                        }
                    }
                    recv(control) -> msg => match msg {
                        Ok(Control::Reconnect) => break End::Reconnect,
                        Err(_) => break End::Shutdown,
                    },
                    recv(ticker) -> _ => {
                        let now = Instant::now();
                        let late: Vec<u64> =
                            pending.iter().filter(|(_, p)| p.deadline + GRACE <= now).map(|(id, _)| *id).collect();
                        for id in late {
                            if let Some(p) = pending.remove(&id) {
                                shared.finish(p.done, Err(LinkError::TimedOut));
                            }
                        }
                        if let Some(every) = heartbeat_every {
                            if let Some((_, sent)) = heartbeat {
                                if now.duration_since(sent) >= every {
                                    break End::Lost(format!("no heartbeat answer within {}s", every.as_secs()));
                                }
                            } else if now.duration_since(last_traffic) >= every {
                                let id = next_id;
                                next_id += 1;
                                let ping = ClientFrame::Submit { id, deadline_ms: every.as_millis() as u64, job: Job::Ping };
                                if let Err(e) = write_frame(&mut self.stream, &ping) {
                                    break End::Lost(format!("write: {e}"));
                                }
                                heartbeat = Some((id, now));
                                last_traffic = now;
                            }
                        }
                    }
                }
            }
        };

        // Unblocks the reader's read() so it can be joined.
        let _ = self.stream.shutdown(Shutdown::Both);
        drop(frames);
        reader.join();
        let why = match &end {
            End::Shutdown => LinkError::ShuttingDown,
            End::Reconnect => LinkError::Lost("reconnecting to a new socket".into()),
            End::Lost(why) => LinkError::Lost(why.clone()),
        };
        for (_, p) in pending.drain() {
            shared.finish(p.done, Err(why.clone()));
        }
        shared.in_flight.store(0, Ordering::Relaxed);
        end
    }
}
