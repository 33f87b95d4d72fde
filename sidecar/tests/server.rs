//! Drives a real server in-process over a Unix socket in a temporary directory, speaking the raw
//! protocol the way `res_push.so` does.

use std::{
    collections::BTreeSet,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use res_push_proto::{
    ClientFrame, Job, MAX_FRAME_LEN, Outcome, PROTOCOL_VERSION, ServerFrame, decode_body,
    encode_body,
};
use res_push_sidecar::{BindError, Config, SocketOptions, Stats, bind, run};
use tempfile::TempDir;
use tokio::{io::AsyncWriteExt, net::UnixStream, sync::oneshot, task::JoinHandle};
use tokio_util::{
    bytes::Bytes,
    codec::{Framed, LengthDelimitedCodec},
};

/// Long enough for a loaded CI machine, short enough that a hang fails rather than stalls.
const PATIENCE: Duration = Duration::from_secs(10);

struct Server {
    _dir: TempDir,
    path: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Stats>,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    async fn start_with(config: Config) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sidecar.sock");
        let listener = bind(&SocketOptions::new(&path)).await.expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, config, async {
            let _ = stopped.await;
        }));
        Self {
            _dir: dir,
            path,
            stop,
            task,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(&self.path).await
    }

    /// Signals shutdown and waits for `run` to return.
    async fn stop(self) -> (Stats, PathBuf, TempDir) {
        let _ = self.stop.send(());
        let stats = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic");
        (stats, self.path, self._dir)
    }
}

struct Client {
    framed: Framed<UnixStream, LengthDelimitedCodec>,
}

impl Client {
    async fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).await.expect("connect");
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME_LEN)
            .new_codec();
        Self {
            framed: Framed::new(stream, codec),
        }
    }

    async fn send(&mut self, frame: &ClientFrame) {
        self.send_body(&encode_body(frame).expect("encode")).await;
    }

    async fn send_body(&mut self, body: &[u8]) {
        self.framed
            .send(Bytes::copy_from_slice(body))
            .await
            .expect("send");
    }

    async fn write_raw(&mut self, bytes: &[u8]) {
        let stream = self.framed.get_mut();
        stream.write_all(bytes).await.expect("write");
        stream.flush().await.expect("flush");
    }

    async fn recv(&mut self) -> ServerFrame {
        let body = tokio::time::timeout(PATIENCE, self.framed.next())
            .await
            .expect("an answer in time")
            .expect("a frame, not end of stream")
            .expect("a readable frame");
        decode_body(&body).expect("a valid server frame")
    }

    /// Whether the server closed the connection (rather than sending another frame) in time.
    async fn is_closed(&mut self) -> bool {
        match tokio::time::timeout(PATIENCE, self.framed.next()).await {
            Ok(None) | Ok(Some(Err(_))) => true,
            Ok(Some(Ok(body))) => {
                panic!(
                    "expected the connection closed, got {:?}",
                    String::from_utf8_lossy(&body)
                )
            }
            Err(_) => false,
        }
    }

    /// Whether nothing arrives within `wait` (the connection stays open and silent).
    async fn is_silent_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.framed.next())
            .await
            .is_err()
    }

    async fn handshake(&mut self) -> ServerFrame {
        self.send(&hello(1, 1)).await;
        self.recv().await
    }

    async fn submit(&mut self, id: u64, deadline_ms: u64, job: Job) {
        self.send(&ClientFrame::Submit {
            id,
            deadline_ms,
            job,
        })
        .await;
    }

    /// Sends a ping and returns its answer; the connection must have no other job in flight.
    async fn ping(&mut self, id: u64) -> ServerFrame {
        self.submit(id, 5_000, Job::Ping).await;
        self.recv().await
    }
}

fn hello(min_version: u32, max_version: u32) -> ClientFrame {
    ClientFrame::Hello {
        min_version,
        max_version,
        client: "res_push-test".into(),
        client_version: "0.0.0".into(),
        node: "test-pbx".into(),
    }
}

fn welcome() -> ServerFrame {
    ServerFrame::Welcome {
        version: PROTOCOL_VERSION,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

fn pong(id: u64) -> ServerFrame {
    ServerFrame::Outcome {
        id,
        outcome: Outcome::Pong,
    }
}

fn is_error_containing(frame: &ServerFrame, needle: &str) -> bool {
    matches!(frame, ServerFrame::Error { message } if message.contains(needle))
}

#[tokio::test]
async fn handshake_welcomes_with_the_negotiated_version() {
    let server = Server::start().await;
    let mut client = server.client().await;
    client.send(&hello(1, PROTOCOL_VERSION + 5)).await;
    assert_eq!(client.recv().await, welcome());
    server.stop().await;
}

#[tokio::test]
async fn ping_is_answered_pong_with_the_same_id() {
    let server = Server::start().await;
    let mut client = server.client().await;
    assert_eq!(client.handshake().await, welcome());
    assert_eq!(client.ping(42).await, pong(42));
    assert_eq!(client.ping(u64::MAX).await, pong(u64::MAX));
    let (stats, ..) = server.stop().await;
    assert_eq!(stats.jobs, 2);
}

#[tokio::test]
async fn pipelined_jobs_on_one_connection_each_get_one_outcome() {
    let server = Server::start().await;
    let mut client = server.client().await;
    assert_eq!(client.handshake().await, welcome());
    for id in 1..=200 {
        client.submit(id, 5_000, Job::Ping).await;
    }
    let mut answered = BTreeSet::new();
    for _ in 1..=200 {
        match client.recv().await {
            ServerFrame::Outcome {
                id,
                outcome: Outcome::Pong,
            } => {
                assert!(answered.insert(id), "id {id} answered twice");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answered, (1..=200).collect());
    assert!(
        client.is_silent_for(Duration::from_millis(100)).await,
        "no extra outcome"
    );
}

#[tokio::test]
async fn several_clients_are_served_concurrently() {
    let server = Server::start().await;
    // All handshakes first, so every connection is open at the same time.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut client = server.client().await;
        assert_eq!(client.handshake().await, welcome());
        clients.push(client);
    }
    let rounds = clients
        .into_iter()
        .enumerate()
        .map(|(n, mut client)| async move {
            let base = n as u64 * 1000;
            for id in base..base + 20 {
                client.submit(id, 5_000, Job::Ping).await;
            }
            let mut ids = BTreeSet::new();
            for _ in 0..20 {
                match client.recv().await {
                    ServerFrame::Outcome {
                        id,
                        outcome: Outcome::Pong,
                    } => ids.insert(id),
                    other => panic!("client {n}: unexpected {other:?}"),
                };
            }
            assert_eq!(ids, (base..base + 20).collect(), "client {n}");
        });
    let rounds: Vec<_> = rounds.map(tokio::spawn).collect();
    for round in rounds {
        round.await.expect("client task");
    }
    let (stats, ..) = server.stop().await;
    assert_eq!(stats.connections, 8);
    assert_eq!(stats.jobs, 160);
}

#[tokio::test]
async fn unknown_job_kind_is_unsupported_and_the_connection_goes_on() {
    let server = Server::start().await;
    let mut client = server.client().await;
    assert_eq!(client.handshake().await, welcome());
    client
        .send_body(br#"{"type":"submit","id":1,"deadline_ms":1000,"job":{"type":"teleport"}}"#)
        .await;
    match client.recv().await {
        ServerFrame::Outcome {
            id: 1,
            outcome: Outcome::Unsupported { detail },
        } => {
            assert!(detail.contains("not supported"), "{detail}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(client.ping(2).await, pong(2));
    let (stats, ..) = server.stop().await;
    assert_eq!(stats.jobs_unsupported, 1);
}

#[tokio::test]
async fn garbage_gets_an_error_then_eof_and_other_clients_are_unaffected() {
    let server = Server::start().await;
    let mut bystander = server.client().await;
    assert_eq!(bystander.handshake().await, welcome());

    let mut vandal = server.client().await;
    assert_eq!(vandal.handshake().await, welcome());
    vandal.send_body(b"\x00this is not json{").await;
    let frame = vandal.recv().await;
    assert!(is_error_containing(&frame, "malformed"), "{frame:?}");
    assert!(vandal.is_closed().await);

    assert_eq!(bystander.ping(7).await, pong(7));
    let mut newcomer = server.client().await;
    assert_eq!(newcomer.handshake().await, welcome());
    assert_eq!(newcomer.ping(8).await, pong(8));
    let (stats, ..) = server.stop().await;
    assert_eq!(stats.protocol_errors, 1);
}

#[tokio::test]
async fn garbage_as_first_frame_is_an_error() {
    let server = Server::start().await;
    let mut client = server.client().await;
    client.send_body(b"null").await;
    let frame = client.recv().await;
    assert!(is_error_containing(&frame, "malformed"), "{frame:?}");
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn oversized_length_closes_the_connection_and_the_server_lives_on() {
    let server = Server::start().await;
    let mut client = server.client().await;
    assert_eq!(client.handshake().await, welcome());
    client.write_raw(&u32::MAX.to_be_bytes()).await;
    let frame = client.recv().await;
    assert!(is_error_containing(&frame, "limit"), "{frame:?}");
    assert!(client.is_closed().await);

    let mut next = server.client().await;
    assert_eq!(next.handshake().await, welcome());
    assert_eq!(next.ping(1).await, pong(1));
}

#[tokio::test]
async fn submit_before_hello_is_an_error() {
    let server = Server::start().await;
    let mut client = server.client().await;
    client.submit(5, 1_000, Job::Ping).await;
    let frame = client.recv().await;
    assert!(is_error_containing(&frame, "before hello"), "{frame:?}");
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn version_mismatch_is_rejected() {
    let server = Server::start().await;
    let mut client = server.client().await;
    client.send(&hello(99, 99)).await;
    match client.recv().await {
        ServerFrame::Reject { reason } => assert!(reason.contains("99"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn second_hello_is_an_error() {
    let server = Server::start().await;
    let mut client = server.client().await;
    assert_eq!(client.handshake().await, welcome());
    client.send(&hello(1, 1)).await;
    let frame = client.recv().await;
    assert!(is_error_containing(&frame, "hello after"), "{frame:?}");
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn zero_deadline_expires_and_is_counted() {
    let server = Server::start().await;
    let mut client = server.client().await;
    assert_eq!(client.handshake().await, welcome());
    client.submit(9, 0, Job::Ping).await;
    assert_eq!(
        client.recv().await,
        ServerFrame::Outcome {
            id: 9,
            outcome: Outcome::Expired
        }
    );
    assert_eq!(client.ping(10).await, pong(10));
    let (stats, ..) = server.stop().await;
    assert_eq!(stats.jobs_expired, 1);
    assert_eq!(stats.jobs, 2);
}

#[tokio::test]
async fn silent_client_is_dropped_after_the_handshake_timeout() {
    let config = Config {
        handshake_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let server = Server::start_with(config).await;
    let mut client = server.client().await;
    let frame = client.recv().await;
    assert!(is_error_containing(&frame, "no hello"), "{frame:?}");
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn half_closed_client_still_gets_its_outcomes() {
    let server = Server::start().await;
    let mut client = server.client().await;
    assert_eq!(client.handshake().await, welcome());
    for id in 0..10 {
        client.submit(id, 5_000, Job::Ping).await;
    }
    client
        .framed
        .get_mut()
        .shutdown()
        .await
        .expect("shutdown write half");
    let mut ids = BTreeSet::new();
    for _ in 0..10 {
        match client.recv().await {
            ServerFrame::Outcome {
                id,
                outcome: Outcome::Pong,
            } => ids.insert(id),
            other => panic!("unexpected {other:?}"),
        };
    }
    assert_eq!(ids, (0..10).collect());
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let config = Config {
        max_connections: 1,
        ..Config::default()
    };
    let server = Server::start_with(config).await;
    let mut first = server.client().await;
    assert_eq!(first.handshake().await, welcome());

    let mut second = server.client().await;
    second.send(&hello(1, 1)).await;
    assert!(
        second.is_silent_for(Duration::from_millis(300)).await,
        "served over the limit"
    );

    drop(first);
    assert_eq!(second.recv().await, welcome());
    assert_eq!(second.ping(3).await, pong(3));
}

#[tokio::test]
async fn shutdown_closes_connections_removes_the_socket_and_returns() {
    let server = Server::start().await;
    let mut client = server.client().await;
    assert_eq!(client.handshake().await, welcome());
    assert!(server.path.exists());
    let (stats, path, _dir) = server.stop().await;
    assert!(!path.exists(), "socket file left behind");
    assert!(client.is_closed().await);
    assert_eq!(stats.connections, 1);
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sidecar.sock");
    // Bound and dropped: the file stays with nobody behind it, as after a crash.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    let listener = bind(&SocketOptions::new(&path))
        .await
        .expect("stale socket is replaced");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, Config::default(), stopped));
    let mut client = Client::connect(&path).await;
    assert_eq!(client.handshake().await, welcome());
    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("run returns")
        .expect("no panic");
}

#[tokio::test]
async fn live_socket_is_not_taken_over() {
    let server = Server::start().await;
    let err = bind(&SocketOptions::new(&server.path))
        .await
        .expect_err("must refuse");
    assert!(matches!(err, BindError::AlreadyListening(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("another sidecar is already listening on"),
        "{err}"
    );
    // The running server keeps its socket and keeps answering.
    let mut client = server.client().await;
    assert_eq!(client.handshake().await, welcome());
}

#[tokio::test]
async fn path_that_is_not_a_socket_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sidecar.sock");
    std::fs::write(&path, "precious").expect("write");
    let err = bind(&SocketOptions::new(&path))
        .await
        .expect_err("must refuse");
    assert!(matches!(err, BindError::NotASocket(_)), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("still there"),
        "precious"
    );
}

#[tokio::test]
async fn socket_mode_is_set_explicitly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("default.sock");
    let _listener = bind(&SocketOptions::new(&path)).await.expect("bind");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o7777, 0o660);

    let path = dir.path().join("private.sock");
    let opts = SocketOptions {
        mode: 0o600,
        ..SocketOptions::new(&path)
    };
    let _listener = bind(&opts).await.expect("bind");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o7777, 0o600);
}

#[tokio::test]
async fn missing_parent_directories_are_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run/res-push/sidecar.sock");
    let _listener = bind(&SocketOptions::new(&path)).await.expect("bind");
    assert!(path.exists());
}

#[tokio::test]
async fn socket_group_is_applied_and_unknown_groups_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gid = nix::unistd::getegid();
    let group = nix::unistd::Group::from_gid(gid)
        .expect("getgrgid")
        .expect("our group has a name");
    let path = dir.path().join("grouped.sock");
    let opts = SocketOptions {
        group: Some(group.name.clone()),
        ..SocketOptions::new(&path)
    };
    let _listener = bind(&opts).await.expect("bind");
    assert_eq!(std::fs::metadata(&path).expect("stat").gid(), gid.as_raw());

    let path = dir.path().join("nogroup.sock");
    let opts = SocketOptions {
        group: Some("no-such-group-res-push".into()),
        ..SocketOptions::new(&path)
    };
    let err = bind(&opts).await.expect_err("must refuse");
    assert!(matches!(err, BindError::Group { .. }), "{err:?}");
    assert!(!path.exists(), "nothing created for a bad group");
}
